//! The admin API on the admin socket (mode 0600): registration entries. Every change is
//! written to the audit log before it is answered, then published to the agent's streams,
//! with the socket peer's uid (from the kernel) as its actor.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use esm_agent::entry::{Entry, ImportedEntry, NewEntry};
use esm_agent::entry_import::{self, ImportPlan};
use esm_agent::entry_index::EntrySet;
use esm_agent::entry_store::{random_id, EntryStore};
use esm_audit::writer::AuditSink;
use esm_audit::{kind, Event, Outcome};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::admin_peer::{claimed_actor, read_passwd, AdminPeer};

pub struct AdminState {
    pub store: EntryStore,
    pub entries: watch::Sender<Arc<EntrySet>>,
    pub audit: AuditSink,
    /// Wakes the CA rotator to re-read the CA state now.
    pub ca_changed: Arc<tokio::sync::Notify>,
    /// Held by each change from its check to its write (an import's until its last
    /// transaction): two imports planned side by side would each find the other's entries
    /// missing and write them twice.
    pub changes: Arc<tokio::sync::Mutex<()>>,
}

type Shared = Arc<AdminState>;

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    (status, format!("{msg}\n")).into_response()
}

fn entry_error(e: esm_agent::Error) -> Response {
    match e {
        esm_agent::Error::Refused(_) | esm_agent::Error::InvalidSpiffeId(_) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, e)
        }
        esm_agent::Error::Reserved(_) => {
            tracing::warn!(error = %e, "admin API: refused an entry for esm's own identity");
            error(StatusCode::FORBIDDEN, e)
        }
        other => {
            tracing::error!(error = %other, "admin API failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, other)
        }
    }
}

/// Who asked, for the record: the actor is the socket peer's uid as the kernel tells it
/// (anyone who can open the 0600 socket could send any header); the client's own claim is
/// kept only as `claimed_actor` in the details. A change whose caller the kernel cannot
/// name is refused rather than recorded without one.
struct Who {
    actor: String,
    details: serde_json::Value,
}

struct UnknownPeer;

impl From<UnknownPeer> for Response {
    fn from(_: UnknownPeer) -> Self {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the admin socket peer's credentials are unknown; nothing changed",
        )
    }
}

fn who(peer: AdminPeer, headers: &HeaderMap) -> Result<Who, UnknownPeer> {
    let cred = peer.0.ok_or(UnknownPeer)?;
    let mut details = serde_json::json!({
        "peer.uid": cred.uid,
        "peer.gid": cred.gid,
        "peer.pid": cred.pid,
    });
    if let Some(claim) = claimed_actor(headers) {
        details["claimed_actor"] = claim.into();
    }
    Ok(Who {
        actor: cred.actor(read_passwd().as_deref()),
        details,
    })
}

async fn publish(s: &AdminState) -> Result<(), Response> {
    let all = s.store.list().await.map_err(entry_error)?;
    s.entries.send_replace(Arc::new(EntrySet::new(all)));
    Ok(())
}

fn entry_event(kind: &str, action: &str, who: &Who, e: &Entry) -> Event {
    let mut ev = Event::new(kind, Outcome::Success);
    ev.actor = who.actor.clone();
    ev.subject = e.spiffe_id.to_string();
    ev.action = action.into();
    let mut details = serde_json::json!({
        "entry.id": e.id,
        "selectors": e.selectors,
        "ttl_secs": e.ttl_secs,
        "dns_names": e.dns_names,
    });
    if let (Some(d), Some(w)) = (details.as_object_mut(), who.details.as_object()) {
        d.extend(w.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    ev.details = details.into();
    ev
}

async fn record(s: &AdminState, ev: Event) -> Result<(), Response> {
    s.audit.record(ev).await.map(|_| ()).map_err(|e| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not recorded: {e}"),
        )
    })
}

/// The answer to a refused change. An attempt at esm's own identity is also recorded (a
/// failed `entry.created` under the peer's uid): it is worth more than a log line.
async fn refused(s: &AdminState, action: &str, who: &Who, e: esm_agent::Error) -> Response {
    if let esm_agent::Error::Reserved(id) = &e {
        let mut ev = Event::new(kind::ENTRY_CREATED, Outcome::Failure);
        ev.actor = who.actor.clone();
        ev.subject = id.to_string();
        ev.action = action.into();
        ev.reason = e.to_string();
        ev.details = who.details.clone().into();
        if let Err(r) = record(s, ev).await {
            return r;
        }
    }
    entry_error(e)
}

async fn create(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<AdminPeer>,
    headers: HeaderMap,
    Json(new): Json<NewEntry>,
) -> Response {
    let result = async {
        let who = who(peer, &headers)?;
        let now = time::OffsetDateTime::now_utc();
        let _change = s.changes.lock().await;
        let entry = match s.store.create(new, now).await {
            Ok(entry) => entry,
            Err(e) => return Err(refused(&s, "create", &who, e).await),
        };
        tracing::info!(entry.id = %entry.id, spiffe.id = %entry.spiffe_id, actor = %who.actor, "registration entry created");
        record(&s, entry_event(kind::ENTRY_CREATED, "create", &who, &entry)).await?;
        publish(&s).await?;
        Ok::<_, Response>((StatusCode::CREATED, Json(entry)).into_response())
    }
    .await;
    result.unwrap_or_else(|r| r)
}

/// `esm entry import`: JSON lines, read and checked whole before anything is written (a
/// bad line changes nothing and is answered 422 naming it). The entries then go in by
/// transactions of [`entry_import::BATCH`], each recorded as created once it committed;
/// the answer streams one JSON line per transaction (`written`, `of`) and a last line,
/// `imported` and `present`, or `error` when the database or the audit log failed midway
/// (what was written stays, and importing the file again adds only the rest).
async fn import(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<AdminPeer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let who = who(peer, &headers)?;
        let items = match read_import(body).await {
            Ok(items) => items,
            Err(e) => return Err(refused(&s, "import", &who, e).await),
        };
        let change = s.changes.clone().lock_owned().await;
        let existing = s.store.list().await.map_err(entry_error)?;
        let now = esm_ca::rfc3339(time::OffsetDateTime::now_utc());
        let plan = match entry_import::plan(&existing, items, &now, random_id) {
            Ok(plan) => plan,
            Err(e) => return Err(refused(&s, "import", &who, e).await),
        };
        drop(existing);
        let (tx, rx) = mpsc::channel::<String>(4);
        tokio::spawn(async move {
            write_import(s.clone(), who, plan, tx).await;
            drop(change);
        });
        Ok(json_lines(rx))
    }
    .await;
    result.unwrap_or_else(|r| r)
}

/// Every line of an import body, parsed and checked; blank lines skipped.
async fn read_import(body: Body) -> Result<Vec<(usize, ImportedEntry)>, esm_agent::Error> {
    let mut lines = entry_import::Lines::default();
    let mut items = Vec::new();
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk =
            chunk.map_err(|e| esm_agent::Error::Refused(format!("reading the import: {e}")))?;
        for (n, raw) in lines.push(&chunk)? {
            items.extend(entry_import::parse_line(n, &raw)?.map(|i| (n, i)));
        }
    }
    if let Some((n, raw)) = lines.finish() {
        items.extend(entry_import::parse_line(n, &raw)?.map(|i| (n, i)));
    }
    if items.is_empty() {
        return Err(esm_agent::Error::Refused("no entries to import".into()));
    }
    Ok(items)
}

async fn write_import(s: Shared, who: Who, plan: ImportPlan, tx: mpsc::Sender<String>) {
    let of = plan.added.len();
    let mut written = 0;
    let outcome = async {
        for batch in plan.added.chunks(entry_import::BATCH) {
            s.store.insert(batch).await.map_err(|e| e.to_string())?;
            written += batch.len();
            let mut receipts = Vec::with_capacity(batch.len());
            for entry in batch {
                let ev = entry_event(kind::ENTRY_CREATED, "import", &who, entry);
                receipts.push(
                    s.audit
                        .append(ev)
                        .await
                        .map_err(|e| format!("not recorded: {e}"))?,
                );
            }
            for r in receipts {
                r.committed()
                    .await
                    .map_err(|e| format!("not recorded: {e}"))?;
            }
            // A client gone away does not stop the import: it runs to the end.
            let _ = tx
                .send(json!({"written": written, "of": of}).to_string())
                .await;
        }
        Ok::<_, String>(())
    }
    .await;
    // Freed before the store is read back for the agent: the two need not coexist.
    let present = plan.present;
    drop(plan);
    if written > 0 {
        if let Err(r) = publish(&s).await {
            tracing::error!(status = %r.status(), "imported entries not published to the agent");
        }
    }
    let last = match outcome {
        Ok(()) => {
            tracing::info!(entries = of, present, actor = %who.actor, "registration entries imported");
            json!({"imported": of, "present": present})
        }
        Err(e) => {
            tracing::error!(error = %e, written, of, "registration entry import failed midway");
            json!({"error": e, "written": written, "of": of})
        }
    };
    let _ = tx.send(last.to_string()).await;
}

/// A 200 whose body is the lines `rx` gives, each ended by a newline, sent as they come.
fn json_lines(rx: mpsc::Receiver<String>) -> Response {
    let lines = ReceiverStream::new(rx).map(|mut l| {
        l.push('\n');
        Ok::<_, std::convert::Infallible>(l)
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

/// Every entry, one JSON line each, streamed from the database as it reads them; a row
/// that cannot be read ends the answer with an `error` line.
async fn list(State(s): State<Shared>) -> Response {
    let (rows_tx, mut rows) = mpsc::channel(256);
    let (tx, rx) = mpsc::channel::<String>(256);
    tokio::spawn(async move {
        let read = s.store.stream(rows_tx);
        let forward = async {
            while let Some(row) = rows.recv().await {
                let line = match row {
                    Ok(e) => serde_json::to_string(&e)
                        .unwrap_or_else(|e| json!({"error": e.to_string()}).to_string()),
                    Err(e) => {
                        tracing::error!(error = %e, "admin API: listing entries failed");
                        json!({"error": e.to_string()}).to_string()
                    }
                };
                if tx.send(line).await.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::join!(read, forward);
    });
    json_lines(rx)
}

async fn show(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    match s.store.get(&id).await {
        Ok(Some(e)) => Json(e).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no entry {id}")),
        Err(e) => entry_error(e),
    }
}

async fn delete(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<AdminPeer>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let who = who(peer, &headers)?;
        let _change = s.changes.lock().await;
        let Some(entry) = s.store.delete(&id).await.map_err(entry_error)? else {
            return Err(error(StatusCode::NOT_FOUND, format!("no entry {id}")));
        };
        tracing::info!(entry.id = %entry.id, spiffe.id = %entry.spiffe_id, "registration entry deleted");
        record(&s, entry_event(kind::ENTRY_DELETED, "delete", &who, &entry)).await?;
        publish(&s).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    result.unwrap_or_else(|r| r)
}

/// `esm ca rotate` changed the CA state on disk: re-read it now rather than at the next
/// poll, so open streams get the new bundle at once. Changes nothing by itself (the
/// rotator reads what is on disk and records nothing new), so it is not audited.
async fn ca_changed(State(s): State<Shared>) -> Response {
    s.ca_changed.notify_one();
    StatusCode::NO_CONTENT.into_response()
}

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/v1/ca/changed", axum::routing::post(ca_changed))
        .route("/v1/entries", get(list).post(create))
        .route("/v1/entries/import", axum::routing::post(import))
        .route("/v1/entries/{id}", get(show).delete(delete))
        .with_state(state)
}
