//! What evaluates a policy set's decision rule: regorus' bytecode VM (RVM) where its compiler
//! takes the set, else regorus' interpreter.
//!
//! The interpreter starts an engine for every evaluation and walks the policy's syntax tree;
//! the VM runs the rule compiled once to register bytecode, on a VM that stays loaded with the
//! program and the set's data. A VM is not shared between threads, so each worker thread keeps
//! its own, made on its first decision for the set and dropped with the set (on the thread's
//! next decision after a reload).
//!
//! The VM does not decide every policy as the interpreter does ([`crate::bytecode_check`]
//! says where it differs); a set that could meet a difference, or that the bytecode compiler
//! refuses (a construct it lacks, esm's `io.jwt.*` builtins, which only the interpreter can
//! call), keeps the interpreter and says so once when it is loaded. An undefined answer or
//! an error other than the time budget from the VM is evaluated again by the interpreter,
//! whose answer counts. `engine_agrees_tests.rs` runs both on the shipped policies, the
//! example policies and generated inputs.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::vm::VmError;
use regorus::rvm::{Program, RegoVM};
use regorus::{CompiledPolicy, Value};

use crate::error::{Error, Result};

/// Which evaluator a set runs on: what `/metrics` counts decisions by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bytecode,
    Interpreter,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bytecode => "rvm",
            Self::Interpreter => "interpreter",
        }
    }
}

/// A set's decision rule compiled to RVM bytecode, with the data its VMs are loaded with.
pub struct Bytecode {
    program: Arc<Program>,
    data: Value,
    /// What answers when the VM's answer is undefined or an error.
    policy: CompiledPolicy,
    /// Tells this set's VMs apart from other sets' in a thread's cache.
    id: u64,
    /// Dropped with the set: a thread's VM for it is then dropped too.
    alive: Arc<()>,
}

impl std::fmt::Debug for Bytecode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bytecode")
            .field("instructions", &self.program.instructions.len())
            .field("id", &self.id)
            .finish()
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// VM answers the interpreter evaluated again (undefined, or a VM error), process-wide.
static RECHECKED: AtomicU64 = AtomicU64::new(0);

/// How many VM answers the interpreter has evaluated again since the process started.
pub fn rechecked_total() -> u64 {
    RECHECKED.load(Ordering::Relaxed)
}

/// A thread's VM for one set.
struct Loaded {
    id: u64,
    alive: Weak<()>,
    vm: RegoVM,
}

thread_local! {
    static VMS: RefCell<Vec<Loaded>> = const { RefCell::new(Vec::new()) };
}

impl Bytecode {
    /// Compiles `rule` of `policy`; the reason when the bytecode compiler refuses it, or when
    /// the set's data collides with its rules in a way the VM rejects.
    pub fn compile(policy: &CompiledPolicy, rule: &str, data: Value) -> Result<Self, String> {
        let compiled = Self::compile_unchecked(policy, rule, data)?;
        match crate::bytecode_check::refusal(&compiled.program, rule, &compiled.data) {
            Some(why) => Err(why),
            None => Ok(compiled),
        }
    }

    /// As [`Bytecode::compile`], whether or not the VM decides the program as the
    /// interpreter would (to compare the two).
    pub(crate) fn compile_unchecked(
        policy: &CompiledPolicy,
        rule: &str,
        data: Value,
    ) -> Result<Self, String> {
        let program =
            Compiler::compile_from_policy(policy, &[rule]).map_err(|e| one_line(&e.to_string()))?;
        let compiled = Self {
            program,
            data,
            policy: policy.clone(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            alive: Arc::new(()),
        };
        // Loading checks the data against the rules once, here rather than on a request.
        compiled.load().map_err(|e| e.to_string())?;
        Ok(compiled)
    }

    fn load(&self) -> std::result::Result<RegoVM, VmError> {
        let mut vm = RegoVM::new();
        vm.load_program(self.program.clone());
        vm.set_data(self.data.clone())?;
        // As the interpreter (and OPA): a failing builtin call is undefined, and values of
        // different types compare by type instead of failing.
        vm.set_strict_builtin_errors(false);
        // The interpreter counts no instructions; the decision budget (time) bounds both.
        vm.set_max_instructions(usize::MAX);
        Ok(vm)
    }

    /// Evaluates the rule for `input` on this thread's VM; the interpreter answers instead
    /// when the VM's answer is undefined or an error other than a limit (the time budget).
    pub fn eval(&self, input: Value) -> Result<Value> {
        let recheck = |input| {
            RECHECKED.fetch_add(1, Ordering::Relaxed);
            interpret(&self.policy, input)
        };
        match self.run(&input) {
            Ok(Value::Undefined) => recheck(input),
            Ok(v) => Ok(v),
            Err(
                e @ (VmError::TimeLimitExceeded { .. }
                | VmError::MemoryLimitExceeded { .. }
                | VmError::MemoryBudgetExceeded { .. }
                | VmError::RegexSizeLimitExceeded { .. }),
            ) => Err(Error::Evaluation(e.to_string())),
            Err(_) => recheck(input),
        }
    }

    pub(crate) fn run(&self, input: &Value) -> std::result::Result<Value, VmError> {
        let run = |vm: &mut RegoVM| {
            vm.set_input(input.clone());
            let out = vm.execute();
            // The input is the request's: not kept until the next one.
            vm.set_input(Value::Null);
            out
        };
        VMS.with(|cell| {
            let Ok(mut vms) = cell.try_borrow_mut() else {
                // Only re-entry could hold it (nothing does today): a VM of its own.
                return run(&mut self.load()?);
            };
            if let Some(l) = vms.iter_mut().find(|l| l.id == self.id) {
                return run(&mut l.vm);
            }
            // A set this thread has not decided for yet: drop the VMs of sets gone since.
            vms.retain(|l| l.alive.strong_count() > 0);
            let mut vm = self.load()?;
            let out = run(&mut vm);
            vms.push(Loaded {
                id: self.id,
                alive: Arc::downgrade(&self.alive),
                vm,
            });
            out
        })
    }
}

/// A compiler error as one line: its innermost `error:` with the file and position it
/// points at (regorus draws the source around each).
fn one_line(e: &str) -> String {
    let at = e
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("--> "))
        .unwrap_or("");
    let what = e
        .lines()
        .rev()
        .filter_map(|l| l.trim().strip_prefix("error: "))
        .find(|l| !l.trim().is_empty() && !l.trim_end().ends_with(':'))
        .unwrap_or(e.trim());
    if at.is_empty() {
        what.to_owned()
    } else {
        format!("{at}: {what}")
    }
}

/// Evaluates with the interpreter: an engine per call, as regorus' compiled policy does.
pub fn interpret(policy: &CompiledPolicy, input: Value) -> Result<Value> {
    policy
        .eval_with_input(input)
        .map_err(|e| Error::Evaluation(e.to_string()))
}

#[cfg(test)]
#[path = "engine_agrees_tests.rs"]
mod tests;
