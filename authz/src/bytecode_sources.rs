//! Where a program's values come from: each register traced to a path into the set's data,
//! a path into the input, a constant, a collection the program makes, or unknown. A
//! function's parameters come from every call of it. The trace is per body and ignores order
//! (every write to a register counts), so what it says holds for every run, only less
//! precisely than it could. [`crate::bytecode_uses`] checks what the traced values are used
//! for.

use std::collections::HashMap;

use regorus::rvm::instructions::LiteralOrRegister;
use regorus::rvm::program::{Program, RuleType};
use regorus::rvm::Instruction;
use regorus::Value;

/// One step of a path: a constant key, or any key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    Key(Value),
    Any,
}

/// What a path starts from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Root {
    Data,
    Input,
    /// A rule or literal whose value is this constant.
    Const(Value),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Source {
    Path(Root, Vec<Step>),
    Collection,
    Unknown,
}

impl Source {
    pub(crate) fn constant(v: Value) -> Source {
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

    pub(crate) fn then(&self, step: Step) -> Source {
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

/// A traced body: its rule's index, its instructions, where each register's value comes from.
pub(crate) type Traced<'p> = (usize, Vec<&'p Instruction>, HashMap<u8, Source>);

/// The program and what its data paths are checked against.
pub(crate) struct Ctx<'a> {
    pub(crate) program: &'a Program,
    pub(crate) data: &'a Value,
}

impl Ctx<'_> {
    pub(crate) fn literal(&self, i: u16) -> Value {
        self.program
            .literals
            .get(usize::from(i))
            .cloned()
            .unwrap_or(Value::Undefined)
    }

    /// A body with its definition's parameter checks before it.
    pub(crate) fn unit(&self, rule: usize, def: usize, start: usize) -> Vec<&Instruction> {
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
    pub(crate) fn parameters(&self) -> Option<Vec<Vec<Source>>> {
        let program = self.program;
        let mut params: Vec<Vec<Source>> = vec![Vec::new(); program.rule_infos.len()];
        for _ in 0..64 {
            let before = params.clone();
            for (_, unit, regs) in self.traced(&before) {
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
            if params == before {
                return Some(params);
            }
        }
        None
    }

    /// Every body of every rule, traced with the rule's parameters as `params` says.
    pub(crate) fn traced(&self, params: &[Vec<Source>]) -> Vec<Traced<'_>> {
        let mut out = Vec::new();
        for (index, rule) in self.program.rule_infos.iter().enumerate() {
            for (def, bodies) in rule.definitions.iter().enumerate() {
                for start in bodies {
                    let unit = self.unit(index, def, *start as usize);
                    let p = params.get(index).map_or(&[][..], Vec::as_slice);
                    let regs = self.trace(&unit, p);
                    out.push((index, unit, regs));
                }
            }
        }
        out
    }

    /// Where each register of `unit` gets its value from; a function's argument `i`
    /// arrives in register `i + 1`.
    pub(crate) fn trace(&self, unit: &[&Instruction], params: &[Source]) -> HashMap<u8, Source> {
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

    pub(crate) fn key_step(&self, c: &LiteralOrRegister, regs: &HashMap<u8, Source>) -> Step {
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
}
