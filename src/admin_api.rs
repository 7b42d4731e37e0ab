//! The admin API on the admin socket (mode 0600): registration entries. Every change is
//! written to the audit log before it is answered, then published to the agent's streams.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use esm_audit::writer::AuditSink;
use esm_audit::{kind, Event, Outcome};
use esm_ca::agent::entry::{Entry, NewEntry};
use esm_ca::agent::entry_store::EntryStore;
use tokio::sync::watch;

pub struct AdminState {
    pub store: EntryStore,
    pub entries: watch::Sender<Arc<Vec<Entry>>>,
    pub audit: AuditSink,
}

type Shared = Arc<AdminState>;

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    (status, format!("{msg}\n")).into_response()
}

fn ca_error(e: esm_ca::Error) -> Response {
    match e {
        esm_ca::Error::Refused(_) | esm_ca::Error::InvalidSpiffeId(_) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, e)
        }
        other => {
            tracing::error!(error = %other, "admin API failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, other)
        }
    }
}

/// Who asked: the CLI names its uid; the socket's mode limits who can ask at all.
fn actor(headers: &HeaderMap) -> String {
    let named: String = headers
        .get("x-esm-actor")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(128)
        .collect();
    format!("admin-socket:{named}")
}

async fn publish(s: &AdminState) -> Result<(), Response> {
    let all = s.store.list().await.map_err(ca_error)?;
    s.entries.send_replace(Arc::new(all));
    Ok(())
}

fn entry_event(kind: &str, action: &str, actor: String, e: &Entry) -> Event {
    let mut ev = Event::new(kind, Outcome::Success);
    ev.actor = actor;
    ev.subject = e.spiffe_id.to_string();
    ev.action = action.into();
    ev.details = serde_json::json!({
        "entry.id": e.id,
        "selectors": e.selectors,
        "ttl_secs": e.ttl_secs,
        "dns_names": e.dns_names,
    })
    .into();
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

async fn create(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(new): Json<NewEntry>,
) -> Response {
    let result = async {
        let entry = s.store.create(new, time::OffsetDateTime::now_utc()).await.map_err(ca_error)?;
        tracing::info!(entry.id = %entry.id, spiffe.id = %entry.spiffe_id, "registration entry created");
        record(&s, entry_event(kind::ENTRY_CREATED, "create", actor(&headers), &entry)).await?;
        publish(&s).await?;
        Ok::<_, Response>((StatusCode::CREATED, Json(entry)).into_response())
    }
    .await;
    result.unwrap_or_else(|r| r)
}

async fn list(State(s): State<Shared>) -> Response {
    match s.store.list().await {
        Ok(all) => Json(all).into_response(),
        Err(e) => ca_error(e),
    }
}

async fn show(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    match s.store.list().await {
        Ok(all) => match all.into_iter().find(|e| e.id == id) {
            Some(e) => Json(e).into_response(),
            None => error(StatusCode::NOT_FOUND, format!("no entry {id}")),
        },
        Err(e) => ca_error(e),
    }
}

async fn delete(State(s): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let result = async {
        let Some(entry) = s.store.delete(&id).await.map_err(ca_error)? else {
            return Err(error(StatusCode::NOT_FOUND, format!("no entry {id}")));
        };
        tracing::info!(entry.id = %entry.id, spiffe.id = %entry.spiffe_id, "registration entry deleted");
        record(&s, entry_event(kind::ENTRY_DELETED, "delete", actor(&headers), &entry)).await?;
        publish(&s).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    result.unwrap_or_else(|r| r)
}

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/v1/entries", get(list).post(create))
        .route("/v1/entries/{id}", get(show).delete(delete))
        .with_state(state)
}
