//! Where a program's values come from, for the two differences between the VM and the
//! interpreter that depend on them:
//!
//! - `some … in` over a string or a number fails the interpreter's evaluation; the VM
//!   iterates nothing. Every such loop must be over a collection (or nothing).
//! - `data…[k]` with a number `k` finds the interpreter a string key of that number; the
//!   VM finds nothing. Every key into data that may be an object must be a string.
//!
//! Each register is traced to a path into the set's data (checked against the data
//! itself), a path into the input (checked against the shape esm builds,
//! [`crate::input`]), a constant, a collection the program makes, or unknown. A function's
//! parameters come from every call of it. The trace is per body and ignores order (every
//! write to a register counts), so it can only be too cautious.

use std::collections::HashMap;

use regorus::rvm::instructions::{LiteralOrRegister, LoopMode};
use regorus::rvm::program::{Program, RuleType};
use regorus::rvm::Instruction;
use regorus::Value;

/// One step of a path: a constant key, or any key.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(Value),
    Any,
}

/// What a path starts from.
#[derive(Debug, Clone, PartialEq)]
enum Root {
    Data,
    Input,
    /// A rule or literal whose value is this constant.
    Const(Value),
}

#[derive(Debug, Clone, PartialEq)]
enum Source {
    Path(Root, Vec<Step>),
    Collection,
    Unknown,
}

impl Source {
    fn constant(v: Value) -> Source {
        Source::Path(Root::Const(v), Vec::new())
    }

    fn join(self, other: &Source) -> Source {
        match (self, other) {
            (a, b) if a == *b => a,
            (Source::Path(r, a), Source::Path(q, b)) if r == *q && a.len() == b.len() => {
                Source::Path(r, merge(a, b))
            }
            _ => Source::Unknown,
        }
    }

    fn then(&self, step: Step) -> Source {
        match self {
            Source::Path(r, p) => {
                Source::Path(r.clone(), p.iter().cloned().chain([step]).collect())
            }
            Source::Collection | Source::Unknown => Source::Unknown,
        }
    }
}

fn merge(a: Vec<Step>, b: &[Step]) -> Vec<Step> {
    a.into_iter()
        .zip(b)
        .map(|(x, y)| if x == *y { x } else { Step::Any })
        .collect()
}

/// The program and what its data paths are checked against.
struct Ctx<'a> {
    program: &'a Program,
    data: &'a Value,
}

/// The first loop or data key that may behave differently on the two engines, described;
/// None when there is none.
pub(crate) fn refusal(program: &Program, data: &Value) -> Option<String> {
    let cx = Ctx { program, data };
    let params = cx.parameters()?;
    for (index, rule) in program.rule_infos.iter().enumerate() {
        for (def, bodies) in rule.definitions.iter().enumerate() {
            for start in bodies {
                let unit = cx.unit(index, def, *start as usize);
                let p = params.get(index).map_or(&[][..], Vec::as_slice);
                let regs = cx.trace(&unit, p);
                for ins in &unit {
                    if let Some(why) = cx.check(ins, &regs) {
                        return Some(format!("{}: {why}", rule.name));
                    }
                }
            }
        }
    }
    None
}

fn describe(s: &Source) -> String {
    let path = |root: &str, p: &[Step]| {
        let mut out = root.to_owned();
        for step in p {
            match step {
                Step::Key(Value::String(k)) => {
                    out.push('.');
                    out.push_str(k);
                }
                Step::Key(k) => out.push_str(&format!("[{k}]")),
                Step::Any => out.push_str("[_]"),
            }
        }
        out
    };
    match s {
        Source::Path(Root::Data, p) => path("data", p),
        Source::Path(Root::Input, p) => path("input", p),
        Source::Path(Root::Const(v), p) => path(&v.to_string(), p),
        Source::Collection => "a collection".into(),
        Source::Unknown => "a computed value".into(),
    }
}

impl Ctx<'_> {
    fn literal(&self, i: u16) -> Value {
        self.program
            .literals
            .get(usize::from(i))
            .cloned()
            .unwrap_or(Value::Undefined)
    }

    /// A body with its definition's parameter checks before it.
    fn unit(&self, rule: usize, def: usize, start: usize) -> Vec<&Instruction> {
        let from = |pc: usize, end: fn(&Instruction) -> bool| {
            let rest = self.program.instructions.get(pc..).unwrap_or_default();
            let n = rest.iter().position(end).map_or(rest.len(), |i| i + 1);
            rest.iter().take(n)
        };
        let checks = self
            .program
            .rule_infos
            .get(rule)
            .and_then(|r| r.destructuring_blocks.get(def).copied().flatten())
            .map(|pc| {
                from(pc as usize, |i| {
                    matches!(i, Instruction::DestructuringSuccess {})
                })
            });
        checks
            .into_iter()
            .flatten()
            .chain(from(start, |i| matches!(i, Instruction::RuleReturn {})))
            .collect()
    }

    /// Where each function's parameters come from, joined over every call; None when the
    /// calls do not settle (bounded; the compiler's programs settle in a few rounds).
    fn parameters(&self) -> Option<Vec<Vec<Source>>> {
        let program = self.program;
        let mut params: Vec<Vec<Source>> = vec![Vec::new(); program.rule_infos.len()];
        for _ in 0..64 {
            let before = params.clone();
            for (index, rule) in program.rule_infos.iter().enumerate() {
                for (def, bodies) in rule.definitions.iter().enumerate() {
                    for start in bodies {
                        let unit = self.unit(index, def, *start as usize);
                        let p = before.get(index).map_or(&[][..], Vec::as_slice);
                        let regs = self.trace(&unit, p);
                        for ins in &unit {
                            let Instruction::FunctionCall { params_index } = ins else {
                                continue;
                            };
                            let call = program
                                .instruction_data
                                .function_call_params
                                .get(usize::from(*params_index))?;
                            let callee = params.get_mut(usize::from(call.func_rule_index))?;
                            let args = call.args.iter().take(usize::from(call.num_args));
                            for (i, arg) in args.enumerate() {
                                let src = regs.get(arg).cloned().unwrap_or(Source::Unknown);
                                match callee.get_mut(i) {
                                    Some(p) => *p = p.clone().join(&src),
                                    None => callee.push(src),
                                }
                            }
                        }
                    }
                }
            }
            if params == before {
                return Some(params);
            }
        }
        None
    }

    /// Where each register of `unit` gets its value from; a function's argument `i`
    /// arrives in register `i + 1`.
    fn trace(&self, unit: &[&Instruction], params: &[Source]) -> HashMap<u8, Source> {
        let mut regs: HashMap<u8, Source> = params
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((u8::try_from(i + 1).ok()?, s.clone())))
            .collect();
        for _ in 0..64 {
            let before = regs.clone();
            for ins in unit {
                for (reg, src) in self.writes(ins, &regs) {
                    let joined = match regs.get(&reg) {
                        Some(old) => old.clone().join(&src),
                        None => src,
                    };
                    regs.insert(reg, joined);
                }
            }
            if regs == before {
                break;
            }
        }
        regs
    }

    fn key_step(&self, c: &LiteralOrRegister, regs: &HashMap<u8, Source>) -> Step {
        match c {
            LiteralOrRegister::Literal(i) => Step::Key(self.literal(*i)),
            LiteralOrRegister::Register(r) => match regs.get(r) {
                Some(Source::Path(Root::Const(v), p)) if p.is_empty() => Step::Key(v.clone()),
                _ => Step::Any,
            },
        }
    }

    fn writes(&self, ins: &Instruction, regs: &HashMap<u8, Source>) -> Vec<(u8, Source)> {
        let get = |r: &u8| regs.get(r).cloned().unwrap_or(Source::Unknown);
        let data = &self.program.instruction_data;
        let collection =
            |dest: Option<u8>| dest.map(|d| (d, Source::Collection)).into_iter().collect();
        match ins {
            Instruction::LoadData { dest } => vec![(*dest, Source::Path(Root::Data, Vec::new()))],
            Instruction::LoadInput { dest } => vec![(*dest, Source::Path(Root::Input, Vec::new()))],
            Instruction::Load { dest, literal_idx } => {
                vec![(*dest, Source::constant(self.literal(*literal_idx)))]
            }
            Instruction::Move { dest, src } => vec![(*dest, get(src))],
            Instruction::IndexLiteral {
                dest,
                container,
                literal_idx,
            } => vec![(
                *dest,
                get(container).then(Step::Key(self.literal(*literal_idx))),
            )],
            Instruction::Index {
                dest,
                container,
                key,
            } => {
                let step = self.key_step(&LiteralOrRegister::Register(*key), regs);
                vec![(*dest, get(container).then(step))]
            }
            Instruction::ChainedIndex { params_index } => {
                match data.chained_index_params.get(usize::from(*params_index)) {
                    Some(p) => {
                        let mut s = get(&p.root);
                        for c in &p.path_components {
                            s = s.then(self.key_step(c, regs));
                        }
                        vec![(p.dest, s)]
                    }
                    None => Vec::new(),
                }
            }
            Instruction::LoopStart { params_index } => {
                match data.loop_params.get(usize::from(*params_index)) {
                    Some(p) => vec![
                        (p.value_reg, get(&p.collection).then(Step::Any)),
                        (p.key_reg, Source::Unknown),
                        (p.result_reg, Source::Unknown),
                    ],
                    None => Vec::new(),
                }
            }
            Instruction::CallRule { dest, rule_index } => {
                vec![(*dest, self.rule_value(usize::from(*rule_index)))]
            }
            Instruction::ArrayNew { dest } | Instruction::SetNew { dest } => {
                vec![(*dest, Source::Collection)]
            }
            Instruction::ArrayCreate { params_index } => collection(
                data.array_create_params
                    .get(usize::from(*params_index))
                    .map(|p| p.dest),
            ),
            Instruction::SetCreate { params_index } => collection(
                data.set_create_params
                    .get(usize::from(*params_index))
                    .map(|p| p.dest),
            ),
            Instruction::ObjectCreate { params_index } => collection(
                data.object_create_params
                    .get(usize::from(*params_index))
                    .map(|p| p.dest),
            ),
            Instruction::ComprehensionBegin { params_index } => {
                match data
                    .comprehension_begin_params
                    .get(usize::from(*params_index))
                {
                    Some(p) => vec![
                        (p.result_reg, Source::Collection),
                        (p.key_reg, Source::Unknown),
                        (p.value_reg, Source::Unknown),
                    ],
                    None => Vec::new(),
                }
            }
            other => crate::bytecode_check::written(self.program, other)
                .into_iter()
                .map(|r| (r, Source::Unknown))
                .collect(),
        }
    }

    /// Why `ins` may behave differently on the two engines, given the sources.
    fn check(&self, ins: &Instruction, regs: &HashMap<u8, Source>) -> Option<String> {
        let get = |r: &u8| regs.get(r).cloned().unwrap_or(Source::Unknown);
        let data = &self.program.instruction_data;
        match ins {
            Instruction::LoopStart { params_index } => {
                let p = data.loop_params.get(usize::from(*params_index))?;
                let source = get(&p.collection);
                let ok = matches!(p.mode, LoopMode::Every) || self.iterable(&source);
                (!ok).then(|| format!("a loop over {} (maybe not a collection)", describe(&source)))
            }
            Instruction::IndexLiteral {
                container,
                literal_idx,
                ..
            } => self.data_key(
                &get(container),
                &Source::constant(self.literal(*literal_idx)),
            ),
            Instruction::Index { container, key, .. } => self.data_key(&get(container), &get(key)),
            Instruction::ChainedIndex { params_index } => {
                let p = data.chained_index_params.get(usize::from(*params_index))?;
                let mut container = get(&p.root);
                for c in &p.path_components {
                    let key = match c {
                        LiteralOrRegister::Literal(i) => Source::constant(self.literal(*i)),
                        LiteralOrRegister::Register(r) => get(r),
                    };
                    if let Some(why) = self.data_key(&container, &key) {
                        return Some(why);
                    }
                    container = container.then(self.key_step(c, regs));
                }
                None
            }
            Instruction::VirtualDataDocumentLookup { params_index } => {
                let p = data
                    .virtual_data_document_lookup_params
                    .get(usize::from(*params_index))?;
                p.path_components.iter().find_map(|c| match c {
                    LiteralOrRegister::Register(r) if !self.string(&get(r)) => Some(format!(
                        "a data lookup by {} (maybe a number)",
                        describe(&get(r))
                    )),
                    _ => None,
                })
            }
            _ => None,
        }
    }

    /// What a rule gives: a collection for a partial rule, the constant of a complete rule
    /// with one body and no default that only ever gives that constant.
    fn rule_value(&self, index: usize) -> Source {
        let Some(rule) = self.program.rule_infos.get(index) else {
            return Source::Unknown;
        };
        if matches!(
            rule.rule_type,
            RuleType::PartialSet | RuleType::PartialObject
        ) {
            return Source::Collection;
        }
        let single = rule.function_info.is_none()
            && rule.default_literal_index.is_none()
            && rule.definitions.iter().map(Vec::len).sum::<usize>() == 1;
        let start = rule.definitions.iter().flatten().next();
        match start.filter(|_| single) {
            Some(pc) => {
                crate::bytecode_check::constant_result(self.program, *pc as usize, rule.result_reg)
                    .map_or(Source::Unknown, Source::constant)
            }
            None => Source::Unknown,
        }
    }

    /// A key into data that may be an object must be a string.
    fn data_key(&self, container: &Source, key: &Source) -> Option<String> {
        let Source::Path(Root::Data, path) = container else {
            return None;
        };
        if self.string(key) || !self.reaches(&Root::Data, path, &|v| matches!(v, Value::Object(_)))
        {
            return None;
        }
        Some(format!(
            "{} indexed by {} (maybe a number)",
            describe(container),
            describe(key)
        ))
    }

    /// Whether some value the path reaches from `root` (not counting absent ones) may be
    /// `bad`; a data path that may reach a rule's value may be anything.
    fn reaches(&self, root: &Root, path: &[Step], bad: &dyn Fn(&Value) -> bool) -> bool {
        match root {
            Root::Data => {
                reaches_rule(&self.program.rule_tree, path) || value_reaches(self.data, path, bad)
            }
            Root::Const(v) => value_reaches(v, path, bad),
            Root::Input => true,
        }
    }

    /// Whether every value from `s` is a string (or undefined).
    fn string(&self, s: &Source) -> bool {
        match s {
            Source::Path(Root::Input, p) => input_string(p),
            Source::Path(root, p) => !self.reaches(root, p, &|v| !matches!(v, Value::String(_))),
            Source::Collection | Source::Unknown => false,
        }
    }

    /// Whether every value from `s` is a collection (or undefined).
    fn iterable(&self, s: &Source) -> bool {
        let collection =
            |v: &Value| matches!(v, Value::Array(_) | Value::Set(_) | Value::Object(_));
        match s {
            Source::Collection => true,
            Source::Unknown => false,
            Source::Path(Root::Input, p) => input_iterable(p),
            Source::Path(root, p) => !self.reaches(root, p, &|v| !collection(v)),
        }
    }
}

/// Whether the path may lead into a rule's value rather than base data.
fn reaches_rule(tree: &Value, path: &[Step]) -> bool {
    let Value::Object(children) = tree else {
        return true;
    };
    let Some((step, rest)) = path.split_first() else {
        return !children.is_empty();
    };
    match step {
        Step::Key(k) => children.get(k).is_some_and(|t| reaches_rule(t, rest)),
        Step::Any => children.values().any(|t| reaches_rule(t, rest)),
    }
}

/// Whether some value the path reaches in `v` (not counting absent ones) is `bad`.
fn value_reaches(v: &Value, path: &[Step], bad: &dyn Fn(&Value) -> bool) -> bool {
    let Some((step, rest)) = path.split_first() else {
        return !matches!(v, Value::Undefined) && bad(v);
    };
    let children: Vec<&Value> = match (v, step) {
        (Value::Object(o), Step::Key(k)) => o.get(k).into_iter().collect(),
        (Value::Array(a), Step::Key(k)) => k
            .as_u64()
            .ok()
            .and_then(|i| a.get(usize::try_from(i).ok()?))
            .into_iter()
            .collect(),
        (Value::Object(o), Step::Any) => o.values().collect(),
        (Value::Array(a), Step::Any) => a.iter().collect(),
        (Value::Set(s), Step::Any) => s.iter().collect(),
        // A set indexed by a member gives `true`.
        (Value::Set(_), Step::Key(_)) => return rest.is_empty() && bad(&Value::from(true)),
        // Anything else indexed gives undefined.
        _ => Vec::new(),
    };
    children.into_iter().any(|c| value_reaches(c, rest, bad))
}

fn keys(path: &[Step]) -> Vec<Option<&str>> {
    path.iter()
        .map(|s| match s {
            Step::Key(Value::String(k)) => Some(&**k),
            _ => None,
        })
        .collect()
}

fn side(k: &Option<&str>) -> bool {
    matches!(k, Some("source" | "destination"))
}

/// Whether the input esm builds has a collection (or nothing) at the path: the objects of
/// the CheckRequest, `parsed_path`, `parsed_query` and its values, `version`, `source` and
/// `destination`. Not `parsed_body`, whose shape is the client's.
fn input_iterable(path: &[Step]) -> bool {
    match keys(path).as_slice() {
        []
        | [Some("attributes")]
        | [Some("attributes"), Some("request" | "contextExtensions" | "tlsSession")]
        | [Some("attributes"), Some("request"), Some("http")]
        | [Some("attributes"), Some("request"), Some("http"), Some("headers")]
        | [Some("attributes"), Some("metadataContext" | "routeMetadataContext")]
        | [Some("attributes"), Some("metadataContext" | "routeMetadataContext"), Some("filterMetadata")]
        | [Some("parsed_path" | "parsed_query" | "version")]
        | [Some("parsed_query"), _] => true,
        [Some("attributes"), s] | [s] => side(s),
        [Some("attributes"), s, Some("address" | "labels")] => side(s),
        [Some("attributes"), s, Some("address"), Some("socketAddress" | "pipe")] => side(s),
        _ => false,
    }
}

/// Whether the input esm builds has a string (or nothing) at the path.
fn input_string(path: &[Step]) -> bool {
    const HTTP: [&str; 11] = [
        "id", "method", "path", "host", "scheme", "query", "fragment", "protocol", "body", "size",
        "rawBody",
    ];
    match keys(path).as_slice() {
        [Some("attributes"), Some("request"), Some("http"), Some(f)] => HTTP.contains(f),
        [Some("attributes"), Some("request"), Some("http"), Some("headers"), _]
        | [Some("attributes"), Some("request"), Some("time")]
        | [Some("attributes"), Some("contextExtensions"), _]
        | [Some("attributes"), Some("tlsSession"), Some("sni")]
        | [Some("parsed_path"), _]
        | [Some("parsed_query"), _, _]
        | [Some("source_principal")]
        | [Some("version"), _] => true,
        [s, Some("spiffe_id")] => side(s),
        [Some("attributes"), s, Some("principal" | "service" | "certificate")] => side(s),
        [Some("attributes"), s, Some("labels"), _] => side(s),
        [Some("attributes"), s, Some("address"), Some("socketAddress"), Some("address")] => side(s),
        [Some("attributes"), s, Some("address"), Some("pipe"), Some("path")] => side(s),
        _ => false,
    }
}
