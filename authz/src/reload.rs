//! Hot reload: the policy directory or bundle is re-read every second; a changed set is compiled and
//! its own Rego tests run; only a set that passes replaces the serving one (atomically, on a
//! `watch` channel). A refused set is logged and audited once, and the old one keeps serving.

use std::sync::Arc;
use std::time::Duration;

use esm_audit::writer::AuditSink;
use esm_audit::{kind, Event, Outcome};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::policy_set::{PolicySet, SourceFile};
use crate::source::SetSpec;

pub const POLL: Duration = Duration::from_secs(1);

/// Loads, compiles and tests a set: what `esm policy check` and `serve` run.
pub fn validate(spec: &SetSpec) -> Result<PolicySet> {
    validate_files(spec, spec.source.read()?)
}

/// Compiles and tests files already read from the spec's source.
/// OPA's output-argument calls are rewritten first ([`crate::rego_compat`]); a set that still
/// does not compile has its error explained when the scanner finds why.
fn validate_files(spec: &SetSpec, files: Vec<SourceFile>) -> Result<PolicySet> {
    let files = crate::rego_compat::rewrite_files(files);
    crate::rego_compat::refuse_output_arguments(&files)?;
    let set = PolicySet::compile_with(files.clone(), &spec.rule, &spec.jwt_keys)
        .map_err(|e| crate::rego_compat::explain(&files, e))?
        .with_memo_capacity(spec.memo_capacity);
    let failed: Vec<String> = set
        .run_tests(&files)
        .into_iter()
        .filter(|t| !t.passed)
        .map(|t| t.name)
        .collect();
    if !failed.is_empty() {
        return Err(Error::policy(
            spec.source.path().display().to_string(),
            format!("Rego tests fail: {}", failed.join(", ")),
        ));
    }
    Ok(set)
}

/// Says, once for each set that starts serving, when it evaluates on the interpreter (the
/// bytecode VM would not decide it as the interpreter does, or cannot compile it): its
/// first-seen decisions then cost a few times more.
pub fn log_engine(set_name: &str, set: &PolicySet) {
    if let Some(reason) = set.interpreted_because() {
        tracing::warn!(policy.set = %set_name, policy.hash = %set.hash, reason = %reason, "policy set evaluates on regorus' interpreter, not its bytecode VM");
    }
}

/// The audit record of a policy change: accepted (success) or refused (failure).
pub fn policy_event(
    spec: &SetSpec,
    result: std::result::Result<&PolicySet, &Error>,
    previous: &str,
) -> Event {
    let (outcome, reason, hash) = match result {
        Ok(set) => (Outcome::Success, String::new(), set.hash.clone()),
        Err(e) => (Outcome::Failure, e.to_string(), String::new()),
    };
    let mut e = Event::new(kind::POLICY_CHANGED, outcome);
    e.actor = "esm:policy-reload".into();
    e.subject = spec.source.path().display().to_string();
    e.action = if outcome == Outcome::Success {
        "reload"
    } else {
        "refuse"
    }
    .into();
    e.reason = reason;
    e.details = serde_json::json!({
        "policy.hash": hash,
        "previous.hash": previous,
        "policy.set": spec.name,
    })
    .into();
    e
}

/// Watches the spec's source until `stop` fires, sending each accepted set on `tx`.
pub async fn run(
    spec: Arc<SetSpec>,
    tx: watch::Sender<Arc<PolicySet>>,
    audit: Option<AuditSink>,
    mut stop: watch::Receiver<bool>,
) {
    let mut refused: Option<String> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => return,
        }
        let current = tx.borrow().hash.clone();
        let (s, c) = (spec.clone(), current.clone());
        // The source is read once per poll; an unchanged set is not compiled again.
        let Ok(polled) = tokio::task::spawn_blocking(move || -> Result<Option<PolicySet>> {
            let files = s.source.read()?;
            if PolicySet::hash_of(&files) == c {
                return Ok(None);
            }
            validate_files(&s, files).map(Some)
        })
        .await
        else {
            continue;
        };
        let result = match polled {
            Ok(None) => {
                refused = None;
                continue;
            }
            Ok(Some(set)) => Ok(set),
            Err(e) => Err(e),
        };
        let key = match &result {
            Ok(set) => set.hash.clone(),
            Err(e) => e.to_string(),
        };
        if result.is_err() && refused.as_deref() == Some(key.as_str()) {
            continue;
        }
        let event = policy_event(&spec, result.as_ref(), &current);
        crate::reload_counts::count(&spec.name, result.is_ok());
        match result {
            Ok(set) => {
                tracing::info!(policy.set = %spec.name, policy.hash = %set.hash, previous.hash = %current, "policy reloaded");
                log_engine(&spec.name, &set);
                tx.send_replace(Arc::new(set));
                refused = None;
            }
            Err(e) => {
                tracing::error!(policy.set = %spec.name, error = %e, policy.hash = %current, "new policy refused; the old one keeps serving");
                refused = Some(key);
            }
        }
        if let Some(sink) = &audit {
            if let Err(e) = sink.append(event).await {
                tracing::error!(error = %e, "policy change not recorded");
            }
        }
    }
}
