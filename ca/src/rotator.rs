//! Runs the rotation schedule while `esm serve` runs and publishes each new CA generation
//! ([`CaMaterial`]: state, signing CA, bundle) on one `watch` channel, so SDS streams and
//! the admin endpoints see rotations as they happen.

use std::sync::Arc;

use esm_audit::writer::AuditSink;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::audit_events;
use crate::material::CaMaterial;
use crate::rotation::{next_due_at, RotationPolicy};
use crate::state::CaState;
use crate::store::CaStore;

/// How often the loop re-reads the state even when nothing is due, to pick up changes made
/// by another process on the same data dir. `esm ca rotate` also tells a running server at
/// once (the `wake` of [`run`], through the admin socket); this poll covers a server it
/// could not reach. Reading the small state file is cheap.
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// After a failed rotation, the wait before the next try.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// The instant the loop should next wake: the next due step, but no later than a poll.
pub fn next_wake(
    state: &CaState,
    policy: &RotationPolicy,
    now: OffsetDateTime,
) -> std::time::Duration {
    let poll = POLL_INTERVAL;
    match next_due_at(state, policy) {
        Some(at) if at <= now => std::time::Duration::ZERO,
        Some(at) => std::time::Duration::try_from(at - now)
            .unwrap_or(poll)
            .min(poll),
        None => poll,
    }
}

/// Who the audit log names as the actor of scheduled rotations.
pub const ACTOR: &str = "esm:rotator";

/// Records `e`; a rotation already happened on disk, so a failure to record is logged, not
/// undone (the next `esm audit verify` and the CA state still tell the story).
async fn record(audit: Option<&AuditSink>, e: esm_audit::Event) {
    if let Some(sink) = audit {
        if let Err(err) = sink.record(e).await {
            tracing::error!(error = %err, "could not record CA rotation in the audit log");
        }
    }
}

/// The custody of the current keys for a `ca.rotated` event; reading it needs the backend
/// (a token round trip), and a failure is recorded in the event rather than dropping it.
async fn custody_of(store: &Arc<CaStore>, state: &CaState) -> serde_json::Value {
    let (store, state) = (store.clone(), state.clone());
    match tokio::task::spawn_blocking(move || store.key_custody(&state)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => serde_json::json!({ "error": e.to_string() }),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }
}

/// The material of `state`, built off the async workers (loading a key may talk to an
/// HSM); `previous`'s signing CA is kept when its intermediate is still active.
async fn material_of(
    store: &Arc<CaStore>,
    state: CaState,
    previous: Arc<CaMaterial>,
) -> crate::Result<CaMaterial> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        CaMaterial::next(&store, &state, OffsetDateTime::now_utc(), &previous)
    })
    .await
    .map_err(|e| crate::Error::Bug(format!("CA material task: {e}")))?
}

/// Rotates on schedule until `shutdown` fires, and re-reads the state at once when `wake`
/// is notified (another process changed it). Each state that differs from the last is
/// built into new material and sent on `tx` (which starts with the material of the state
/// the server started with); each applied step (and each failure) is an audit event on
/// `audit`.
pub async fn run(
    store: Arc<CaStore>,
    policy: RotationPolicy,
    tx: watch::Sender<Arc<CaMaterial>>,
    audit: Option<AuditSink>,
    wake: Arc<tokio::sync::Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    // A failure retried every few seconds is recorded once, not once per retry.
    let mut failing: Option<String> = None;
    loop {
        let now = OffsetDateTime::now_utc();
        let store2 = store.clone();
        let result = tokio::task::spawn_blocking(move || store2.rotate(&policy, now, None)).await;
        let wait = match result {
            Ok(Ok((state, done))) => {
                failing = None;
                let custody = if done.is_empty() {
                    serde_json::Value::Null
                } else {
                    custody_of(&store, &state).await
                };
                for step in &done {
                    tracing::info!(ca.step = ?step, "CA rotation step applied");
                    let e = audit_events::ca_rotated(*step, &state, &custody, ACTOR, now);
                    record(audit.as_ref(), e).await;
                }
                let wait = next_wake(&state, &policy, OffsetDateTime::now_utc());
                let previous = tx.borrow().clone();
                if previous.state == state {
                    wait
                } else {
                    match material_of(&store, state, previous).await {
                        Ok(m) => {
                            tx.send_replace(Arc::new(m));
                            wait
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "new CA state unusable; serving the old one, retrying");
                            RETRY_AFTER
                        }
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "CA rotation failed; retrying");
                let reason = e.to_string();
                if failing.as_ref() != Some(&reason) {
                    let td = tx.borrow().trust_domain.to_string();
                    let event = audit_events::ca_rotation_failed(&td, ACTOR, &reason);
                    record(audit.as_ref(), event).await;
                    failing = Some(reason);
                }
                RETRY_AFTER
            }
            Err(e) => {
                tracing::error!(error = %e, "CA rotation task panicked; retrying");
                RETRY_AFTER
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}
