//! A policy set: every `.rego` file under a directory plus its `data.json` / `data.yaml`
//! files (placed at the data path of their folder, as OPA does), compiled once for the
//! decision rule, and to bytecode where regorus' bytecode compiler takes it ([`crate::engine`]),
//! so a request never parses or compiles anything and any number of requests evaluate at once.

use std::path::Path;

use envoy_types::ext_authz::v3::pb::CheckRequest;
use regorus::{CompiledPolicy, Engine, Value};

use crate::decision_memo::{self, DecisionMemo};
use crate::engine::{self, Bytecode};
use crate::error::{Error, Result};
use crate::input::{build_view, InputOptions};
use crate::input_reads::{self, InputReads};
use crate::jwt_builtins::JwtKeys;
use crate::projection::Projection;
use crate::view::View;

pub use crate::policy_files::{read_dir, SourceFile, MAX_FILES, MAX_FILE_LEN};

/// Bounds every evaluation in this process: over budget, evaluation fails and the request
/// is denied. Process-wide because regorus reads it when a compiled policy starts an engine.
pub fn set_decision_budget(budget: std::time::Duration) {
    regorus::utils::limits::set_fallback_execution_timer_config(Some(
        regorus::utils::limits::ExecutionTimerConfig {
            limit: budget,
            check_interval: std::num::NonZeroU32::MIN.saturating_add(31),
        },
    ));
}

thread_local! {
    /// The memo key of this thread's current request, kept for the next one's.
    static KEY: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The outcome of one `test_*` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    pub name: String,
    pub passed: bool,
    pub error: Option<String>,
}

pub struct PolicySet {
    /// The decision rule, e.g. `data.envoy.authz.allow`.
    pub rule: String,
    /// SHA-256 over every file's path and content: what the audit log names.
    pub hash: String,
    /// The `.manifest` revision of the bundle it came from (empty for a directory or a
    /// bundle without one): what a bundle server calls this version, in every decision record.
    pub revision: String,
    pub files: Vec<String>,
    /// What the set's policies can read of the input, and whether they are deterministic.
    pub reads: InputReads,
    /// The same, as the tree the input builder walks.
    projection: Projection,
    engine: Engine,
    compiled: CompiledPolicy,
    /// None: the interpreter evaluates, for the reason in `interpreted_because`.
    bytecode: Option<Bytecode>,
    interpreted_because: Option<String>,
    memo: Option<DecisionMemo>,
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field("rule", &self.rule)
            .field("hash", &self.hash)
            .field("revision", &self.revision)
            .field("files", &self.files)
            .field("reads", &self.reads)
            .field("engine", &self.engine_kind())
            .field("memo", &self.memo)
            .finish()
    }
}

fn hash_files(files: &[SourceFile]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for f in files {
        ctx.update(&(f.path.len() as u64).to_be_bytes());
        ctx.update(f.path.as_bytes());
        ctx.update(&(f.text.len() as u64).to_be_bytes());
        ctx.update(f.text.as_bytes());
    }
    hex::encode(ctx.finish().as_ref())
}

/// `a/b/data.json` holding `{"x": 1}` → `{"a": {"b": {"x": 1}}}`.
fn nest(path: &str, v: Value) -> Value {
    let dirs: Vec<&str> = path.split('/').collect();
    let mut v = v;
    for d in dirs[..dirs.len().saturating_sub(1)].iter().rev() {
        let mut m = std::collections::BTreeMap::new();
        m.insert(Value::from(*d), v);
        v = Value::from(m);
    }
    v
}

fn engine_for(files: &[SourceFile], v0: bool, keys: &JwtKeys) -> Result<Engine> {
    let mut engine = Engine::new();
    engine.set_policy_length_config(crate::rego_compat::length_limits());
    engine.set_rego_v0(v0);
    engine.set_strict_builtin_errors(false);
    // regorus copies every extension into each evaluation, so a set that never calls
    // io.jwt.* does not pay for them.
    if files.iter().any(|f| f.text.contains("io.jwt.")) {
        crate::jwt_builtins::register(&mut engine, keys)?;
    }
    for f in files {
        if f.path.ends_with(".rego") {
            engine
                .add_policy(f.path.clone(), f.text.clone())
                .map_err(|e| Error::policy(&f.path, e))?;
        } else {
            let v = if f.path.ends_with(".json") {
                Value::from_json_str(&f.text)
            } else {
                Value::from_yaml_str(&f.text)
            }
            .map_err(|e| Error::policy(&f.path, e))?;
            if !matches!(v, Value::Object(_)) {
                return Err(Error::policy(&f.path, "data must be an object"));
            }
            engine
                .add_data(nest(&f.path, v))
                .map_err(|e| Error::policy(&f.path, e))?;
        }
    }
    Ok(engine)
}

impl PolicySet {
    /// Parses and compiles `files` for `rule`. Rego v1 is tried first, then v0 (the syntax
    /// most OPA-Envoy policies were written in); the v1 error is reported if both fail.
    pub fn compile(files: Vec<SourceFile>, rule: &str) -> Result<Self> {
        Self::compile_with(files, rule, &JwtKeys::default())
    }

    /// As [`Self::compile`], with the JWKS the `io.jwt.*` builtins fall back to.
    pub fn compile_with(files: Vec<SourceFile>, rule: &str, keys: &JwtKeys) -> Result<Self> {
        if !files.iter().any(|f| f.path.ends_with(".rego")) {
            return Err(Error::policy(".", "no .rego files"));
        }
        let mut engine = match engine_for(&files, false, keys) {
            Ok(e) => e,
            Err(v1) => engine_for(&files, true, keys).map_err(|_| v1)?,
        };
        let entry: regorus::Rc<str> = rule.into();
        let compiled = engine
            .compile_with_entrypoint(&entry)
            .map_err(|e| Error::policy(rule, e))?;
        let reads = input_reads::analyze(&files);
        let (bytecode, interpreted_because) =
            match Bytecode::compile(&compiled, rule, engine.get_data()) {
                Ok(b) => (Some(b), None),
                // Said once when the set starts serving ([`crate::reload::log_engine`]).
                Err(reason) => (None, Some(reason)),
            };
        Ok(Self {
            rule: rule.to_owned(),
            hash: hash_files(&files),
            revision: String::new(),
            files: files.iter().map(|f| f.path.clone()).collect(),
            memo: DecisionMemo::new(&reads, decision_memo::DEFAULT_CAPACITY),
            projection: Projection::of(&reads),
            reads,
            engine,
            compiled,
            bytecode,
            interpreted_because,
        })
    }

    /// The same set evaluated by the interpreter alone (to compare the two).
    pub fn interpreted(mut self) -> Self {
        self.bytecode = None;
        self.interpreted_because = Some("asked for".into());
        self
    }

    /// Why the interpreter evaluates the set (None: the bytecode VM does).
    pub fn interpreted_because(&self) -> Option<&str> {
        self.interpreted_because.as_deref()
    }

    /// The set's rule on the VM, whether or not [`Bytecode::compile`] would let the VM
    /// decide it.
    #[cfg(test)]
    pub(crate) fn bytecode_unchecked(&self) -> Result<Bytecode, String> {
        Bytecode::compile_unchecked(&self.compiled, &self.rule, self.engine.get_data())
    }

    /// What evaluates the decision rule.
    pub fn engine_kind(&self) -> engine::Kind {
        if self.bytecode.is_some() {
            engine::Kind::Bytecode
        } else {
            engine::Kind::Interpreter
        }
    }

    /// The set as read from a bundle whose manifest names `revision`.
    pub fn with_revision(mut self, revision: String) -> Self {
        self.revision = revision;
        self
    }

    /// Memoizes up to `capacity` results (0: none). See [`crate::decision_memo`].
    pub fn with_memo_capacity(mut self, capacity: usize) -> Self {
        self.memo = DecisionMemo::new(&self.reads, capacity);
        self
    }

    /// The part of the input its policies can read: all a request needs built.
    pub fn projection(&self) -> &Projection {
        &self.projection
    }

    /// Whether results are memoized (the set is deterministic and reads part of the input).
    pub fn memoized(&self) -> bool {
        self.memo.is_some()
    }

    /// The hash a set of these files would have.
    pub fn hash_of(files: &[SourceFile]) -> String {
        hash_files(files)
    }

    pub fn load(root: &Path, rule: &str) -> Result<Self> {
        Self::compile(read_dir(root)?, rule)
    }

    /// Evaluates the decision rule for an input written by hand (`esm policy eval`, a
    /// report's probes, tests): on the interpreter, which assumes nothing of the input's
    /// shape (the bytecode VM is only faithful on inputs esm builds, [`crate::engine`]).
    pub fn eval(&self, input: Value) -> Result<Value> {
        self.memoized_or(input, |i| engine::interpret(&self.compiled, i))
            .map(|(v, _)| v)
    }

    /// Decides an input esm built from a request, or takes the memoized result of an input
    /// that agrees on everything the set reads; says which. Errors (a timeout among them)
    /// are never memoized.
    pub fn decide(&self, input: Value) -> Result<(Value, bool)> {
        self.memoized_or(input, |i| self.evaluate(i))
    }

    fn memoized_or(
        &self,
        input: Value,
        evaluate: impl FnOnce(Value) -> Result<Value>,
    ) -> Result<(Value, bool)> {
        let memo = self.memo.as_ref().and_then(|m| Some((m, m.key(&input)?)));
        if let Some((m, key)) = &memo {
            if let Some(v) = m.get(key) {
                return Ok((v, true));
            }
        }
        let v = evaluate(input)?;
        if let Some((m, key)) = memo {
            m.put(key, v.clone());
        }
        Ok((v, false))
    }

    /// Decides `req`: from the memo when a request that agrees on everything the set reads
    /// was decided before (keyed from the request itself where the set's reads allow, so a
    /// hit builds no input), else by building the input the set reads and evaluating it.
    /// Says which. An input refusal is [`Error::Request`]; errors are never memoized.
    pub fn decide_request(&self, req: &CheckRequest, opts: &InputOptions) -> Result<(Value, bool)> {
        let view = View::of(req)?;
        let Some((memo, plan)) = self.memo.as_ref().and_then(|m| Some((m, m.plan()?))) else {
            let input = build_view(&view, opts, &self.projection)?;
            return self.decide(input);
        };
        KEY.with(|cell| {
            let mut key = cell.take();
            let out = (|| {
                let keyed = plan.write(&view, opts, &mut key);
                if keyed {
                    if let Some(v) = memo.get(&key) {
                        // The key leaves out what the set does not read, so the checks that
                        // refuse a request whatever it reads are made here.
                        view.check_refusals(opts)?;
                        return Ok((v, true));
                    }
                }
                let v = self.evaluate(build_view(&view, opts, &self.projection)?)?;
                if keyed {
                    memo.put(key.as_slice().into(), v.clone());
                }
                Ok((v, false))
            })();
            cell.set(key);
            out
        })
    }

    /// Evaluates the decision rule for an input esm built, never from the memo.
    pub fn evaluate(&self, input: Value) -> Result<Value> {
        match &self.bytecode {
            Some(b) => b.eval(input),
            None => engine::interpret(&self.compiled, input),
        }
    }

    /// Evaluates any rule (for `esm policy eval --rule`).
    pub fn eval_rule(&self, rule: &str, input: Value) -> Result<Value> {
        let mut e = self.engine.clone();
        e.set_input(input);
        e.eval_rule(rule.to_owned())
            .map_err(|e| Error::Evaluation(e.to_string()))
    }

    /// Runs every `test_*` rule of every package, like `opa test`.
    pub fn run_tests(&self, sources: &[SourceFile]) -> Vec<TestResult> {
        let mut out = Vec::new();
        for f in sources.iter().filter(|f| f.path.ends_with(".rego")) {
            let Some(pkg) = package_of(&f.text) else {
                continue;
            };
            for name in test_rules(&f.text) {
                let full = format!("data.{pkg}.{name}");
                if out.iter().any(|t: &TestResult| t.name == full) {
                    continue;
                }
                let mut e = self.engine.clone();
                let (passed, error) = match e.eval_rule(full.clone()) {
                    Ok(Value::Bool(true)) => (true, None),
                    Ok(Value::Undefined) => (false, None),
                    Ok(other) => (false, Some(format!("result {other}"))),
                    Err(err) => (false, Some(err.to_string())),
                };
                out.push(TestResult {
                    name: full,
                    passed,
                    error,
                });
            }
        }
        out
    }
}

/// A rule every set with tests has — its first `test_*` rule — so a set that lacks the
/// decision rule (a library, an example package) still compiles for `esm policy test`.
pub fn test_entrypoint(files: &[SourceFile]) -> Option<String> {
    files
        .iter()
        .filter(|f| f.path.ends_with(".rego"))
        .find_map(|f| {
            let pkg = package_of(&f.text)?;
            let name = test_rules(&f.text).into_iter().next()?;
            Some(format!("data.{pkg}.{name}"))
        })
}

pub(crate) fn package_of(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("package ")?;
        Some(rest.split_whitespace().next()?.to_owned())
    })
}

/// Names of rules whose head starts a line with `test_`.
fn test_rules(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            if !l.starts_with("test_") || l.len() != l.trim_start().len() {
                return None;
            }
            let name: String = l
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (l.len() > name.len()).then_some(name)
        })
        .collect();
    names.dedup();
    names
}

#[cfg(test)]
#[path = "policy_set_tests.rs"]
mod tests;
