//! The rotator inside `esm serve`: it publishes the CA material, and re-reads the state as
//! soon as another process (`esm ca rotate`) says it changed, without waiting for its poll.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use esm_ca::key_backend::file::FileKeyStore;
use esm_ca::key_backend::KeyAlgorithm;
use esm_ca::material::CaMaterial;
use esm_ca::rotation::{RotationPolicy, Step};
use esm_ca::rotator::{run, POLL_INTERVAL};
use esm_ca::store::{CaStore, InitOptions};
use esm_identity::TrustDomain;
use time::OffsetDateTime;
use tokio::sync::{watch, Notify};

fn store(dir: &std::path::Path) -> Arc<CaStore> {
    Arc::new(CaStore::new(
        dir.join("ca"),
        Arc::new(FileKeyStore::new(dir.join("ca/keys"), None)),
    ))
}

#[tokio::test]
async fn a_rotation_by_another_process_is_published_when_the_rotator_is_woken() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let policy = RotationPolicy::default();
    let init = InitOptions {
        trust_domain: TrustDomain::parse("example.org").unwrap(),
        algorithm: KeyAlgorithm::EcP256,
        upstream: None,
    };
    let state = s.init(init, &policy, OffsetDateTime::now_utc()).unwrap();
    let first = CaMaterial::load(&s, &state, OffsetDateTime::now_utc()).unwrap();
    let (tx, mut rx) = watch::channel(Arc::new(first));
    let wake = Arc::new(Notify::new());
    let (_stop, stop_rx) = watch::channel(false);
    tokio::spawn(run(s.clone(), policy, tx, None, wake.clone(), stop_rx));
    // The rotator has read the state and sleeps until its next poll.
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Another process (the CLI) rotates the same data dir, then says so.
    let other = store(dir.path());
    let (rotated, _) = other
        .rotate(&policy, OffsetDateTime::now_utc(), Some(Step::PrepareRoot))
        .unwrap();
    let told = Instant::now();
    wake.notify_one();
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .unwrap()
        .unwrap();
    let took = told.elapsed();
    assert!(
        took < POLL_INTERVAL / 4,
        "published {took:?} after being told; the poll is every {POLL_INTERVAL:?}"
    );
    let published = rx.borrow_and_update().clone();
    assert_eq!(published.state, rotated);
    assert_eq!(published.bundle_der().len(), 2);
}
