//! Serves the admin routers (the admin endpoints on TCP, the admin API on its socket) over
//! HTTP/1 within bounds: the listener's connection caps and first-bytes deadline
//! ([`esm_listener`]), a deadline for each request's headers, and a bounded drain. A plain
//! `axum::serve` waits for a half-sent request without end, so a neighbour trickling
//! headers over a few hundred connections would hold them all.

use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use esm_listener::{Accept, Guarded, GuardedListener};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt;

/// How long a client may take to send a request's headers, counted from the moment the
/// connection waits for them: a scrape or an `esm entry` call sends them at once.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown`; then lets open requests finish.
/// `extension` gives each connection's value for the handlers (such as the peer's
/// credentials), from its socket.
pub async fn serve<L, E>(
    listener: GuardedListener<L>,
    router: Router,
    extension: impl Fn(&Guarded<L::Io>) -> E + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send,
) where
    L: Accept,
    L::Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    E: Clone + Send + Sync + 'static,
{
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            conn = listener.accept() => conn,
            () = &mut shutdown => break,
        };
        let value = extension(&conn);
        let app = router.clone().layer(axum::Extension(value));
        let service = TowerToHyperService::new(
            app.map_request(|r: Request<hyper::body::Incoming>| r.map(axum::body::Body::new)),
        );
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        let served = graceful.watch(http.serve_connection(TokioIo::new(conn), service));
        tokio::spawn(async move {
            if let Err(e) = served.await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
    // Open requests finish; a connection that sends nothing more is closed at once.
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("admin connections still open after 5 s; closed");
    }
}
