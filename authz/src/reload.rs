//! Hot reload: the policy directory or bundle is re-read every second; a changed set is compiled and
//! its own Rego tests run; only a set that passes replaces the serving one (atomically, on a
//! `watch` channel). A refused set is logged and audited once, and the old one keeps serving.
//! Each change is attributed to the owner of the files it wrote ([`crate::change_author`]).
//! A SIGHUP wakes the task at once; a config reload may replace its spec ([`Control`]).

use std::sync::Arc;
use std::time::Duration;

use esm_audit::writer::AuditSink;
use esm_audit::{kind, Event, Outcome};
use tokio::sync::{watch, Notify};

use crate::change_author::{self, Diff};
use crate::error::{Error, Result};
use crate::policy_set::{PolicySet, SourceFile};
use crate::source::{PolicySource, SetSpec};

pub const POLL: Duration = Duration::from_secs(1);

/// Loads, compiles and tests a set: what `esm policy check` and `serve` run.
pub fn validate(spec: &SetSpec) -> Result<PolicySet> {
    let (files, revision) = spec.source.read_revision()?;
    validate_files(spec, files, revision)
}

/// [`validate`], also returning the files read: the baseline later changes are diffed
/// against to name who made them.
pub fn validate_read(spec: &SetSpec) -> Result<(PolicySet, Vec<SourceFile>)> {
    let (files, revision) = spec.source.read_revision()?;
    let set = validate_files(spec, files.clone(), revision)?;
    Ok((set, files))
}

/// Compiles and tests files already read from the spec's source.
/// OPA's output-argument calls are rewritten first ([`crate::rego_compat`]); a set that still
/// does not compile has its error explained when the scanner finds why.
pub(crate) fn validate_files(
    spec: &SetSpec,
    files: Vec<SourceFile>,
    revision: String,
) -> Result<PolicySet> {
    let (set, files) = compile_as_served(files, &spec.rule, &spec.jwt_keys)?;
    let set = set
        .with_memo_capacity(spec.memo_capacity)
        .with_revision(revision);
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

/// Compiles `files` for `rule` as `serve` does: OPA's output-argument calls rewritten
/// first ([`crate::rego_compat`]), and an error the scanner can explain explained. Returns
/// the files as compiled (line numbers unchanged), which is what their tests run on.
pub fn compile_as_served(
    files: Vec<SourceFile>,
    rule: &str,
    keys: &crate::jwt_builtins::JwtKeys,
) -> Result<(PolicySet, Vec<SourceFile>)> {
    let files = crate::rego_compat::rewrite_files(files);
    crate::rego_compat::refuse_output_arguments(&files)?;
    let set = PolicySet::compile_with(files.clone(), rule, keys)
        .map_err(|e| crate::rego_compat::explain(&files, e))?;
    Ok((set, files))
}

/// Says, once for each set that starts serving, when it evaluates on the interpreter (the
/// bytecode VM would not decide it as the interpreter does, or cannot compile it): its
/// first-seen decisions then cost a few times more.
pub fn log_engine(set_name: &str, set: &PolicySet) {
    if let Some(reason) = set.interpreted_because() {
        tracing::warn!(policy.set = %set_name, policy.hash = %set.hash, reason = %reason, "policy set evaluates on regorus' interpreter, not its bytecode VM");
    }
}

/// Who made a change and what it touched, for its audit record
/// ([`crate::change_author`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    /// `uid:N` of the written files' owners, or `uid:unknown`.
    pub actor: String,
    /// What noticed the change: `esm:policy-reload` (the watcher) or `esm:config-reload`.
    pub via: &'static str,
    pub diff: Diff,
}

impl Author {
    /// The author of the change from `before` (the files in force, when known) to `after`.
    pub fn of(source: &PolicySource, before: Option<&[SourceFile]>, after: &[SourceFile]) -> Self {
        let diff = change_author::diff(before, after);
        let owners = change_author::owners(source, &diff);
        Self {
            actor: change_author::actor(&owners),
            via: change_author::WATCHER,
            diff,
        }
    }
}

/// The audit record of a policy change: accepted (success) or refused (failure), named for
/// the user who wrote the files (`author`); the watcher that noticed it is in the details.
pub fn policy_event(
    spec: &SetSpec,
    result: std::result::Result<&PolicySet, &Error>,
    previous: &str,
    author: &Author,
) -> Event {
    let (outcome, reason, hash) = match result {
        Ok(set) => (Outcome::Success, String::new(), set.hash.clone()),
        Err(e) => (Outcome::Failure, e.to_string(), String::new()),
    };
    let mut e = Event::new(kind::POLICY_CHANGED, outcome);
    e.actor = author.actor.clone();
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
        "policy.revision": result.ok().map(|s| s.revision.as_str()),
        "previous.hash": previous,
        "policy.set": spec.name,
        "policy.rule": spec.rule,
        "dry_run": spec.dry_run,
        "changed.via": author.via,
        "changed.written": change_author::named(&author.diff.written),
        "changed.removed": change_author::named(&author.diff.removed),
        "changed.files": author.diff.written.len() + author.diff.removed.len(),
    })
    .into();
    e
}

/// What a reload task follows besides the files: the spec in force (replaced when esm.toml
/// is reloaded) and a wake-up that makes it read the source at once instead of at the next
/// poll (SIGHUP).
#[derive(Clone)]
pub struct Control {
    pub spec: watch::Receiver<Arc<SetSpec>>,
    pub wake: Arc<Notify>,
}

/// Watches the spec's source until `stop` fires, sending each accepted set on `tx`.
/// `baseline`: the files of the set `tx` holds, as read when it was loaded, so the first
/// change is attributed to the files it wrote only.
pub async fn run(
    mut control: Control,
    tx: watch::Sender<Arc<PolicySet>>,
    baseline: Option<Vec<SourceFile>>,
    audit: Option<AuditSink>,
    mut stop: watch::Receiver<bool>,
) {
    let mut refused: Option<String> = None;
    let mut before: Option<Arc<Vec<SourceFile>>> = baseline.map(Arc::new);
    // A spec nobody will replace (its sender gone) is simply kept.
    let mut replaceable = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = control.wake.notified() => {}
            r = control.spec.changed(), if replaceable => {
                if r.is_err() {
                    replaceable = false;
                    continue;
                }
                // A config reload installed a new spec and its set (already validated
                // and audited by it); the files in force are those it read.
                before = None;
                refused = None;
            }
            _ = stop.changed() => return,
        }
        let spec = control.spec.borrow_and_update().clone();
        let (current, current_revision) = {
            let set = tx.borrow();
            (set.hash.clone(), set.revision.clone())
        };
        let (s, c) = (spec.clone(), current.clone());
        // The source is read once per poll; an unchanged set is not compiled again.
        let Ok(polled) = tokio::task::spawn_blocking(move || -> Result<Polled> {
            let (files, revision) = s.source.read_revision()?;
            if PolicySet::hash_of(&files) == c && revision == current_revision {
                return Ok(Polled::Same(files));
            }
            let set = validate_files(&s, files.clone(), revision);
            Ok(Polled::Changed(files, Box::new(set)))
        })
        .await
        else {
            continue;
        };
        // A config reload replaced the spec (and its set) while this poll read the old
        // source: what it read is stale and must not replace what the reload installed.
        if control.spec.has_changed().unwrap_or(false) {
            continue;
        }
        let (files, result) = match polled {
            Ok(Polled::Same(files)) => {
                before.get_or_insert_with(|| Arc::new(files));
                refused = None;
                continue;
            }
            Ok(Polled::Changed(files, set)) => (Some(files), *set),
            Err(e) => (None, Err(e)),
        };
        let key = match &result {
            Ok(set) => set.hash.clone(),
            Err(e) => e.to_string(),
        };
        if result.is_err() && refused.as_deref() == Some(key.as_str()) {
            continue;
        }
        let mut author = match &files {
            Some(f) => Author::of(&spec.source, before.as_deref().map(Vec::as_slice), f),
            None => Author {
                actor: change_author::UNKNOWN.into(),
                via: change_author::WATCHER,
                diff: change_author::Diff::default(),
            },
        };
        // A bundle the bundle service wrote is the server's change, not esm's own user's.
        if let Some(remote) = &spec.remote {
            author.actor = remote.url_for_log();
            author.via = change_author::BUNDLE_SERVICE;
        }
        let event = policy_event(&spec, result.as_ref(), &current, &author);
        crate::reload_counts::count(&spec.name, result.is_ok());
        match result {
            Ok(set) => {
                tracing::info!(policy.set = %spec.name, policy.hash = %set.hash, previous.hash = %current, actor = %author.actor, "policy reloaded");
                log_engine(&spec.name, &set);
                crate::reload_counts::serving(&spec.name, &set.hash, &set.revision);
                tx.send_replace(Arc::new(set));
                before = files.map(Arc::new);
                refused = None;
            }
            Err(e) => {
                tracing::error!(policy.set = %spec.name, error = %e, policy.hash = %current, actor = %author.actor, "new policy refused; the old one keeps serving");
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

/// One poll's reading of the source.
enum Polled {
    /// The set in force, read again.
    Same(Vec<SourceFile>),
    /// Other files, and whether they make a set that passes.
    Changed(Vec<SourceFile>, Box<Result<PolicySet>>),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec(dir: &std::path::Path) -> SetSpec {
        SetSpec {
            name: "default".into(),
            source: PolicySource::Dir(dir.into()),
            rule: "data.t.allow".into(),
            dry_run: false,
            jwt_keys: Default::default(),
            memo_capacity: 0,
            remote: None,
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_reload_is_attributed_to_the_owner_of_the_files_it_wrote() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.rego"),
            "package t\ndefault allow := false\n",
        )
        .unwrap();
        let spec = spec(dir.path());
        let (old, before) = validate_read(&spec).unwrap();
        std::fs::write(dir.path().join("b.rego"), "package t\nallow if input.x\n").unwrap();
        let (new, after) = validate_read(&spec).unwrap();
        let author = Author::of(&spec.source, Some(&before), &after);
        let e = policy_event(&spec, Ok(&new), &old.hash, &author);
        let me = std::fs::metadata(dir.path().join("b.rego")).unwrap().uid();
        assert_eq!(e.actor, format!("uid:{me}"));
        let d = e.details.to_value();
        assert_eq!(d["changed.via"], "esm:policy-reload");
        assert_eq!(d["changed.written"], serde_json::json!(["b.rego"]));
        assert_eq!(d["policy.hash"], new.hash.as_str());
        assert_eq!(d["previous.hash"], old.hash.as_str());
    }

    #[test]
    fn a_reload_that_only_removed_files_is_unattributed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.rego"),
            "package t\ndefault allow := false\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("b.rego"), "package t\nallow if input.x\n").unwrap();
        let spec = spec(dir.path());
        let (_, before) = validate_read(&spec).unwrap();
        std::fs::remove_file(dir.path().join("b.rego")).unwrap();
        let (new, after) = validate_read(&spec).unwrap();
        let author = Author::of(&spec.source, Some(&before), &after);
        let e = policy_event(&spec, Ok(&new), "old", &author);
        assert_eq!(e.actor, change_author::UNKNOWN);
        let d = e.details.to_value();
        assert_eq!(d["changed.removed"], serde_json::json!(["b.rego"]));
    }

    /// SIGHUP's wake-up: a change is read at once, not at the next one-second poll.
    #[tokio::test]
    async fn a_wake_reads_the_source_at_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.rego"),
            "package t\ndefault allow := false\n",
        )
        .unwrap();
        let spec = spec(dir.path());
        let (set, files) = validate_read(&spec).unwrap();
        let (tx, mut rx) = watch::channel(Arc::new(set));
        let (_spec_tx, spec_rx) = watch::channel(Arc::new(spec));
        let wake = Arc::new(Notify::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let control = Control {
            spec: spec_rx,
            wake: wake.clone(),
        };
        let task = tokio::spawn(run(control, tx, Some(files), None, stop_rx));
        std::fs::write(dir.path().join("b.rego"), "package t\nallow if input.x\n").unwrap();
        wake.notify_one();
        let started = std::time::Instant::now();
        tokio::time::timeout(POLL, rx.changed())
            .await
            .expect("reloaded before the poll")
            .unwrap();
        assert!(started.elapsed() < POLL);
        assert_eq!(rx.borrow().files.len(), 2);
        let _ = stop_tx.send(true);
        task.await.unwrap();
    }

    /// A config reload installs a new spec and its set: the task follows the new source
    /// and does not put the old one back.
    #[tokio::test]
    async fn a_replaced_spec_is_followed_and_not_reverted() {
        let old_dir = tempfile::tempdir().unwrap();
        let new_dir = tempfile::tempdir().unwrap();
        std::fs::write(
            old_dir.path().join("a.rego"),
            "package t\ndefault allow := false\n",
        )
        .unwrap();
        std::fs::write(
            new_dir.path().join("n.rego"),
            "package t\ndefault allow := true\n",
        )
        .unwrap();
        let old_spec = spec(old_dir.path());
        let (set, files) = validate_read(&old_spec).unwrap();
        let (tx, rx) = watch::channel(Arc::new(set));
        let installer = tx.clone();
        let (spec_tx, spec_rx) = watch::channel(Arc::new(old_spec));
        let wake = Arc::new(Notify::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let control = Control {
            spec: spec_rx,
            wake: wake.clone(),
        };
        let task = tokio::spawn(run(control, tx, Some(files), None, stop_rx));
        let new_spec = spec(new_dir.path());
        let (new_set, _) = validate_read(&new_spec).unwrap();
        let new_hash = new_set.hash.clone();
        installer.send_replace(Arc::new(new_set));
        spec_tx.send_replace(Arc::new(new_spec));
        for _ in 0..3 {
            wake.notify_one();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(rx.borrow().hash, new_hash);
        let _ = stop_tx.send(true);
        task.await.unwrap();
    }
}
