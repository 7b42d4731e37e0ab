//! Which RVM programs decide exactly as regorus' interpreter does.
//!
//! The VM differs from the interpreter in known ways (regorus 0.14.1, found by
//! `engine_agrees_tests.rs`): it turns an error inside a rule body into a failed body where
//! the interpreter fails the whole evaluation (a type error in arithmetic or `|`/`&`, two
//! bodies of a rule giving different values, a key given two values), and an `else` after a
//! body whose assignment is undefined gives undefined instead of the `else` value. A program
//! that could meet any of these stays on the interpreter: no arithmetic or set operators, no
//! `else`, no partial objects or object comprehensions, and no rule that could give two
//! values (two bodies the compiler cannot show give the same value, or a loop producing a
//! value that is not a constant). The one exception is the decision rule itself: two of its
//! bodies disagreeing makes the VM's answer undefined, and an undefined answer is always
//! evaluated again by the interpreter ([`crate::engine`]).
//!
//! A loop over something that is not a collection is an error to the interpreter and no
//! iterations to the VM: [`crate::bytecode_uses`] keeps a program whose loops it cannot
//! show are over collections on the interpreter. Builtin errors agree: both engines make
//! the failing call undefined (OPA's semantics).

use std::collections::HashMap;

use regorus::rvm::instructions::{ComprehensionMode, LoopMode};
use regorus::rvm::program::{Program, RuleInfo, RuleType};
use regorus::rvm::Instruction;
use regorus::Value;

/// Why `program` (with `data`) may decide differently from the interpreter; None when it
/// cannot.
pub(crate) fn refusal(program: &Program, entry: &str, data: &Value) -> Option<String> {
    for ins in &program.instructions {
        if let Some(what) = unsupported(program, ins) {
            return Some(format!(
                "{what} (the VM and the interpreter differ on its errors)"
            ));
        }
    }
    for rule in &program.rule_infos {
        if let Some(why) = rule_refusal(program, rule, rule.name == entry) {
            return Some(format!("{}: {why}", rule.name));
        }
    }
    crate::bytecode_uses::refusal(program, data)
}

fn unsupported(program: &Program, ins: &Instruction) -> Option<&'static str> {
    use Instruction as I;
    Some(match ins {
        I::Add { .. } | I::Sub { .. } | I::Mul { .. } | I::Div { .. } | I::Mod { .. } => {
            "arithmetic"
        }
        I::And { .. } | I::Or { .. } => "a set operator",
        I::BuiltinCall { params_index } => {
            let p = program
                .instruction_data
                .builtin_call_params
                .get(usize::from(*params_index))?;
            let name = &program
                .builtin_info_table
                .get(usize::from(p.builtin_index))?
                .name;
            // `|` and `&` are calls on the VM, operators (whose errors are errors) to the
            // interpreter.
            if !name.starts_with("__builtin_") {
                return None;
            }
            "a set operator"
        }
        I::ComprehensionBegin { params_index } => {
            let p = program
                .instruction_data
                .comprehension_begin_params
                .get(usize::from(*params_index))?;
            if !matches!(p.mode, ComprehensionMode::Object) {
                return None;
            }
            "an object comprehension"
        }
        // Not emitted for Rego (Azure Policy, host calls): nothing tested them here.
        I::HostAwait { .. }
        | I::LoadContext { .. }
        | I::LoadMetadata { .. }
        | I::Halt {}
        | I::ReturnUndefinedIfNotTrue { .. }
        | I::CoalesceUndefinedToNull { .. }
        | I::ArrayPushDefined { .. }
        | I::PolicyCondition { .. }
        | I::LogicalBlockStart { .. }
        | I::AllOfNext { .. }
        | I::AnyOfNext { .. }
        | I::LogicalBlockEnd { .. } => "an instruction Rego policies do not use",
        _ => return None,
    })
}

fn rule_refusal(program: &Program, rule: &RuleInfo, is_entry: bool) -> Option<&'static str> {
    if rule.else_bodies.iter().flatten().any(|e| *e) {
        return Some("`else`");
    }
    match rule.rule_type {
        RuleType::PartialObject => return Some("a partial object"),
        RuleType::PartialSet => return None,
        RuleType::Complete => {}
    }
    let bodies: usize = rule.definitions.iter().map(Vec::len).sum();
    if bodies > 1 && !rule.early_exit_on_first_success && !is_entry {
        return Some("bodies that may give different values");
    }
    let loop_without_constant = rule
        .definitions
        .iter()
        .flatten()
        .any(|start| !single_valued(program, *start as usize, rule.result_reg));
    loop_without_constant.then_some("a loop that may give several values")
}

/// Whether the body starting at `start` gives at most one value: it has no loop that binds
/// for the rest of the body, or the only value its result register ever gets is one constant.
fn single_valued(program: &Program, start: usize, result: u8) -> bool {
    let body = body(program, start);
    let mut binding_loop = false;
    let mut in_comprehension = 0usize;
    for ins in &body {
        match ins {
            Instruction::ComprehensionBegin { .. } => in_comprehension += 1,
            Instruction::ComprehensionEnd {} => {
                in_comprehension = in_comprehension.saturating_sub(1);
            }
            Instruction::LoopStart { params_index } if in_comprehension == 0 => {
                let every = program
                    .instruction_data
                    .loop_params
                    .get(usize::from(*params_index))
                    .is_some_and(|p| matches!(p.mode, LoopMode::Every));
                binding_loop |= !every;
            }
            _ => {}
        }
    }
    !binding_loop || !matches!(constants(program, &body).get(&result), Some(None))
}

/// The body starting at `start`, up to its end.
fn body(program: &Program, start: usize) -> Vec<&Instruction> {
    program
        .instructions
        .get(start..)
        .unwrap_or_default()
        .iter()
        .take_while(|i| !matches!(i, Instruction::RuleReturn {}))
        .collect()
}

/// The one constant the body starting at `start` can give, if it can give only one.
pub(crate) fn constant_result(program: &Program, start: usize, result: u8) -> Option<Value> {
    constants(program, &body(program, start))
        .remove(&result)
        .flatten()
}

/// For each register the body writes: the one constant every write gives it, or None.
/// Loops jump back, so writes are merged until nothing changes, whatever their order.
fn constants(program: &Program, body: &[&Instruction]) -> HashMap<u8, Option<Value>> {
    let written_in_body: Vec<u8> = body
        .iter()
        .filter(|i| !matches!(i, Instruction::RuleInit { .. }))
        .flat_map(|i| written(program, i))
        .collect();
    let mut known: HashMap<u8, Option<Value>> = HashMap::new();
    loop {
        let before = known.clone();
        for ins in body {
            if matches!(ins, Instruction::RuleInit { .. }) {
                continue;
            }
            for dest in written(program, ins) {
                let value = match ins {
                    Instruction::Load { literal_idx, .. } => {
                        program.literals.get(usize::from(*literal_idx)).cloned()
                    }
                    Instruction::LoadTrue { .. } => Some(Value::from(true)),
                    Instruction::LoadFalse { .. } => Some(Value::from(false)),
                    Instruction::LoadNull { .. } => Some(Value::Null),
                    Instruction::LoadBool { value, .. } => Some(Value::from(*value)),
                    Instruction::Move { src, .. } if written_in_body.contains(src) => {
                        match known.get(src) {
                            Some(v) => v.clone(),
                            // Its writes come later in the body: the next round.
                            None => continue,
                        }
                    }
                    _ => None,
                };
                let merged = match known.get(&dest) {
                    None => value,
                    Some(Some(a)) if value.as_ref() == Some(a) => value,
                    Some(_) => None,
                };
                known.insert(dest, merged);
            }
        }
        if known == before {
            return known;
        }
    }
}

/// The registers an instruction writes.
pub(crate) fn written(program: &Program, ins: &Instruction) -> Vec<u8> {
    use Instruction as I;
    let data = &program.instruction_data;
    let at = |i: &u16| usize::from(*i);
    match ins {
        I::Load { dest, .. }
        | I::LoadTrue { dest }
        | I::LoadFalse { dest }
        | I::LoadNull { dest }
        | I::LoadBool { dest, .. }
        | I::LoadData { dest }
        | I::LoadInput { dest }
        | I::LoadContext { dest }
        | I::LoadMetadata { dest }
        | I::Move { dest, .. }
        | I::Add { dest, .. }
        | I::Sub { dest, .. }
        | I::Mul { dest, .. }
        | I::Div { dest, .. }
        | I::Mod { dest, .. }
        | I::Eq { dest, .. }
        | I::Ne { dest, .. }
        | I::Lt { dest, .. }
        | I::Le { dest, .. }
        | I::Gt { dest, .. }
        | I::Ge { dest, .. }
        | I::And { dest, .. }
        | I::Or { dest, .. }
        | I::Not { dest, .. }
        | I::HostAwait { dest, .. }
        | I::Index { dest, .. }
        | I::IndexLiteral { dest, .. }
        | I::ArrayNew { dest }
        | I::SetNew { dest }
        | I::Contains { dest, .. }
        | I::Count { dest, .. }
        | I::CallRule { dest, .. }
        | I::PolicyCondition { dest, .. } => vec![*dest],
        I::ObjectSet { obj, .. } => vec![*obj],
        I::ArrayPush { arr, .. } | I::ArrayPushDefined { arr, .. } => vec![*arr],
        I::SetAdd { set, .. } => vec![*set],
        I::CoalesceUndefinedToNull { register } => vec![*register],
        I::RuleInit { result_reg, .. } => vec![*result_reg],
        I::BuiltinCall { params_index } => data
            .builtin_call_params
            .get(at(params_index))
            .map(|p| p.dest)
            .into_iter()
            .collect(),
        I::FunctionCall { params_index } => data
            .function_call_params
            .get(at(params_index))
            .map(|p| p.dest)
            .into_iter()
            .collect(),
        I::ObjectCreate { params_index } => data
            .object_create_params
            .get(at(params_index))
            .map(|p| p.dest)
            .into_iter()
            .collect(),
        I::ArrayCreate { params_index } => data
            .array_create_params
            .get(at(params_index))
            .map(|p| p.dest)
            .into_iter()
            .collect(),
        I::SetCreate { params_index } => data
            .set_create_params
            .get(at(params_index))
            .map(|p| p.dest)
            .into_iter()
            .collect(),
        I::ChainedIndex { params_index } => data
            .chained_index_params
            .get(at(params_index))
            .map(|p| p.dest)
            .into_iter()
            .collect(),
        I::VirtualDataDocumentLookup { params_index } => data
            .virtual_data_document_lookup_params
            .get(at(params_index))
            .map(|p| p.dest)
            .into_iter()
            .collect(),
        I::LoopStart { params_index } => data
            .loop_params
            .get(at(params_index))
            .map(|p| vec![p.key_reg, p.value_reg, p.result_reg])
            .unwrap_or_default(),
        I::ComprehensionBegin { params_index } => data
            .comprehension_begin_params
            .get(at(params_index))
            .map(|p| vec![p.key_reg, p.value_reg, p.result_reg])
            .unwrap_or_default(),
        I::LogicalBlockStart { result, .. }
        | I::AllOfNext { result, .. }
        | I::AnyOfNext { result, .. }
        | I::LogicalBlockEnd { result, .. } => vec![*result],
        I::Return { .. }
        | I::AssertEq { .. }
        | I::Guard { .. }
        | I::ReturnUndefinedIfNotTrue { .. }
        | I::LoopNext { .. }
        | I::DestructuringSuccess {}
        | I::RuleReturn {}
        | I::Halt {}
        | I::ComprehensionYield { .. }
        | I::ComprehensionEnd {} => Vec::new(),
    }
}
