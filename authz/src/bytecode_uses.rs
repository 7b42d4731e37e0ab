//! What a program does with its values ([`crate::bytecode_sources`]), for the two
//! differences between the VM and the interpreter that depend on them:
//!
//! - `some … in` over a string or a number fails the interpreter's evaluation; the VM
//!   iterates nothing. Every such loop must be over a collection (or nothing).
//! - `data…[k]` with a number `k` finds the interpreter a string key of that number; the
//!   VM finds nothing. Every key into data that may be an object must be a string.
//!
//! A path into data is checked against the set's data itself, a path into the input against
//! the shape esm builds ([`crate::input_shape`]).

use std::collections::HashMap;

use regorus::rvm::instructions::{LiteralOrRegister, LoopMode};
use regorus::rvm::program::Program;
use regorus::rvm::Instruction;
use regorus::Value;

use crate::bytecode_sources::{Ctx, Root, Source, Step};
use crate::input_shape;

/// The first loop or data key that may behave differently on the two engines, described;
/// None when there is none.
pub(crate) fn refusal(program: &Program, data: &Value) -> Option<String> {
    let cx = Ctx { program, data };
    let params = cx.parameters()?;
    for (index, unit, regs) in cx.traced(&params) {
        for ins in &unit {
            if let Some(why) = cx.check(ins, &regs) {
                let rule = program
                    .rule_infos
                    .get(index)
                    .map_or("", |r| r.name.as_str());
                return Some(format!("{rule}: {why}"));
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
            Source::Path(Root::Input, p) => input_shape::string(&keys(p)),
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
            Source::Path(Root::Input, p) => input_shape::collection(&keys(p)),
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

/// A path's constant string keys (None for any other step), as the input's shape reads them.
fn keys(path: &[Step]) -> Vec<Option<&str>> {
    path.iter()
        .map(|s| match s {
            Step::Key(Value::String(k)) => Some(&**k),
            _ => None,
        })
        .collect()
}
