#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use esm_ca::key_backend::file::FileKeyStore;
use esm_ca::key_backend::KeyAlgorithm;
use esm_ca::rotation::{RotationPolicy, Step};
use esm_ca::store::{CaStore, InitOptions};
use esm_identity::TrustDomain;

struct Fixture {
    _dir: tempfile::TempDir,
    store: CaStore,
    ca_tx: watch::Sender<Arc<CaMaterial>>,
    cache: Arc<SvidCache>,
    metrics: Arc<AgentMetrics>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = CaStore::new(
        dir.path().join("ca"),
        Arc::new(FileKeyStore::new(dir.path().join("ca/keys"), None)),
    );
    let init = InitOptions {
        trust_domain: TrustDomain::parse("example.org").unwrap(),
        algorithm: KeyAlgorithm::EcP256,
        upstream: None,
    };
    let state = store
        .init(init, &RotationPolicy::default(), OffsetDateTime::now_utc())
        .unwrap();
    let m = CaMaterial::load(&store, &state, OffsetDateTime::now_utc()).unwrap();
    let (ca_tx, ca_rx) = watch::channel(Arc::new(m));
    let metrics = Arc::new(AgentMetrics::default());
    let cache = SvidCache::new(ca_rx, IssuancePolicy::default(), None, metrics.clone());
    Fixture {
        _dir: dir,
        store,
        ca_tx,
        cache,
        metrics,
    }
}

fn spec(id: &str, ttl_secs: Option<u64>) -> SvidSpec {
    SvidSpec::Workload {
        spiffe_id: SpiffeId::parse(id).unwrap(),
        ttl_secs,
        dns_names: vec![],
    }
}

fn opener() -> Opener {
    Opener {
        actor: "unix:uid:1000".into(),
        via: "sds",
    }
}

/// The next value of `rx` that is not `Pending`.
async fn settled(rx: &mut watch::Receiver<Current>) -> Current {
    let wait = rx.wait_for(|c| !matches!(c, Current::Pending));
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), wait)
        .await
        .expect("settled in time")
        .expect("holder alive");
    got.clone()
}

fn ready(c: Current) -> Arc<IssuedSvid> {
    match c {
        Current::Ready(s) => s,
        Current::Pending => panic!("pending"),
        Current::Refused(m) => panic!("refused: {m}"),
        Current::Unavailable(m) => panic!("unavailable: {m}"),
    }
}

#[tokio::test]
async fn holders_of_one_identity_share_one_svid() {
    let f = fixture();
    let web = spec("spiffe://example.org/web", None);
    let mut streams: Vec<_> = (0..50)
        .map(|_| f.cache.subscribe(&web, &opener()))
        .collect();
    let first = ready(settled(&mut streams[0]).await);
    for rx in &mut streams {
        assert!(Arc::ptr_eq(&first, &ready(settled(rx).await)));
    }
    assert_eq!(f.metrics.svids_issued.load(Ordering::Relaxed), 1);
    assert_eq!(f.cache.len(), 1);
}

#[tokio::test]
async fn another_ttl_or_identity_is_another_svid() {
    let f = fixture();
    let mut a = f
        .cache
        .subscribe(&spec("spiffe://example.org/web", None), &opener());
    let mut b = f
        .cache
        .subscribe(&spec("spiffe://example.org/web", Some(600)), &opener());
    let mut c = f
        .cache
        .subscribe(&spec("spiffe://example.org/db", None), &opener());
    let (a, b, c) = (
        ready(settled(&mut a).await),
        ready(settled(&mut b).await),
        ready(settled(&mut c).await),
    );
    assert_ne!(a.serial_hex, b.serial_hex);
    assert!(b.not_after < a.not_after);
    assert_eq!(c.spiffe_id.as_str(), "spiffe://example.org/db");
    assert_eq!(f.cache.len(), 3);
}

#[tokio::test]
async fn a_new_signing_ca_renews_and_a_new_bundle_alone_does_not() {
    let f = fixture();
    let mut rx = f
        .cache
        .subscribe(&spec("spiffe://example.org/web", None), &opener());
    let first = ready(settled(&mut rx).await);
    let policy = RotationPolicy::default();
    let now = OffsetDateTime::now_utc();

    // A prepared root changes the bundle, not the signer: the SVID held stays.
    let (state, _) = f
        .store
        .rotate(&policy, now, Some(Step::PrepareRoot))
        .unwrap();
    let prev = f.ca_tx.borrow().clone();
    f.ca_tx.send_replace(Arc::new(
        CaMaterial::next(&f.store, &state, now, &prev).unwrap(),
    ));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!rx.has_changed().unwrap());

    // The new root takes over with a new intermediate: renewed under it.
    let (state, _) = f
        .store
        .rotate(&policy, now, Some(Step::ActivateRoot))
        .unwrap();
    let prev = f.ca_tx.borrow().clone();
    let next = CaMaterial::next(&f.store, &state, now, &prev).unwrap();
    let signer = next.signing.id.clone();
    f.ca_tx.send_replace(Arc::new(next));
    rx.changed().await.unwrap();
    let renewed = ready(rx.borrow_and_update().clone());
    assert_ne!(renewed.serial_hex, first.serial_hex);
    assert_eq!(renewed.signed_by, signer);
    assert_eq!(f.metrics.svids_issued.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn renews_at_half_of_the_lifetime() {
    let f = fixture();
    let mut rx = f
        .cache
        .subscribe(&spec("spiffe://example.org/web", Some(2)), &opener());
    let first = ready(settled(&mut rx).await);
    tokio::time::timeout(std::time::Duration::from_secs(5), rx.changed())
        .await
        .unwrap()
        .unwrap();
    let second = ready(rx.borrow_and_update().clone());
    assert_ne!(first.serial_hex, second.serial_hex);
}

#[tokio::test]
async fn a_reserved_identity_is_refused_on_principle() {
    let f = fixture();
    let mut rx = f
        .cache
        .subscribe(&spec("spiffe://example.org/esm/agent", None), &opener());
    match settled(&mut rx).await {
        Current::Refused(m) => assert!(m.contains("reserved"), "{m}"),
        _ => panic!("not refused"),
    }
    assert_eq!(f.metrics.svids_issued.load(Ordering::Relaxed), 0);
    assert_eq!(f.metrics.issuance_failures.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn the_agents_own_svid_is_held_like_any_other_but_not_counted() {
    let f = fixture();
    let mut rx = f.cache.subscribe(
        &SvidSpec::Own(esm_ca::issuer::OwnIdentity::Agent),
        &opener(),
    );
    let svid = ready(settled(&mut rx).await);
    assert_eq!(svid.spiffe_id.as_str(), "spiffe://example.org/esm/agent");
    assert_eq!(f.metrics.svids_issued.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn an_identity_nobody_holds_is_dropped_once_it_would_be_renewed() {
    let f = fixture();
    let web = spec("spiffe://example.org/web", Some(2));
    let mut rx = f.cache.subscribe(&web, &opener());
    let first = ready(settled(&mut rx).await);
    drop(rx);
    // Kept while valid: a holder coming back gets the same one.
    let mut again = f.cache.subscribe(&web, &opener());
    assert!(Arc::ptr_eq(&first, &ready(settled(&mut again).await)));
    drop(again);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(f.cache.is_empty());
    assert_eq!(f.metrics.svids_issued.load(Ordering::Relaxed), 1);
}

/// The first SVID of a holder is `svid.issued`; each re-issue is `svid.rotated`, naming the
/// SVID it replaced, when that one expired and why: what the report's renewal check reads.
#[tokio::test]
async fn a_renewal_is_recorded_as_a_rotation_of_the_svid_it_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let db = esm_audit::store::Db::open(&url, None).await.unwrap();
    let key = esm_audit::checkpoint::SigningKey::load_or_create(dir.path()).unwrap();
    let (sink, writer) = esm_audit::writer::start(
        db.clone(),
        key,
        esm_audit::redact::Redactor::from_secret(&[7; 32]),
        esm_audit::writer::WriterOptions::default(),
    )
    .await
    .unwrap();
    let f = fixture();
    let cache = SvidCache::new(
        f.ca_tx.subscribe(),
        IssuancePolicy::default(),
        Some(sink),
        f.metrics.clone(),
    );
    let mut rx = cache.subscribe(&spec("spiffe://example.org/web", Some(2)), &opener());
    let first = ready(settled(&mut rx).await);
    tokio::time::timeout(std::time::Duration::from_secs(5), rx.changed())
        .await
        .unwrap()
        .unwrap();
    let second = ready(rx.borrow_and_update().clone());
    drop((rx, cache));
    writer.shutdown().await.unwrap();

    let mut out = Vec::new();
    esm_audit::export::export(&db, &Default::default(), &mut out)
        .await
        .unwrap();
    let events: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v.get("kind").is_some())
        .collect();
    let of = |k: &str| events.iter().filter(|e| e["kind"] == k).collect::<Vec<_>>();
    let issued = of("svid.issued");
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0]["details"]["serial"], first.serial_hex.as_str());
    let rotated = of("svid.rotated");
    assert!(!rotated.is_empty());
    let r = rotated[0];
    assert_eq!(r["actor"], "unix:uid:1000");
    assert_eq!(r["action"], "rotate");
    assert_eq!(r["details"]["serial"], second.serial_hex.as_str());
    assert_eq!(r["details"]["previous.serial"], first.serial_hex.as_str());
    assert_eq!(r["details"]["rotation.reason"], "half_life");
    assert_eq!(r["details"]["via"], "sds");
    assert!(r["details"]["previous.not_after"].is_string());
}

/// A key that takes `SLOW_SIGN` for every signature: what an HSM or a vault behind a slow
/// network looks like to the thread that asks it to sign.
struct SlowKey(Arc<dyn esm_ca::key_backend::KeyBackend>);

const SLOW_SIGN: std::time::Duration = std::time::Duration::from_secs(2);

impl esm_ca::key_backend::KeyBackend for SlowKey {
    fn key_id(&self) -> &str {
        self.0.key_id()
    }
    fn algorithm(&self) -> KeyAlgorithm {
        self.0.algorithm()
    }
    fn public_key_raw(&self) -> &[u8] {
        self.0.public_key_raw()
    }
    fn sign(&self, msg: &[u8]) -> esm_ca::Result<Vec<u8>> {
        std::thread::sleep(SLOW_SIGN);
        self.0.sign(msg)
    }
}

/// The file key store whose keys are [`SlowKey`]s.
struct SlowKeys(FileKeyStore);

impl esm_ca::key_backend::KeyStore for SlowKeys {
    fn backend_name(&self) -> &'static str {
        self.0.backend_name()
    }
    fn generate(
        &self,
        key_id: &str,
        alg: KeyAlgorithm,
    ) -> esm_ca::Result<Arc<dyn esm_ca::key_backend::KeyBackend>> {
        Ok(Arc::new(SlowKey(self.0.generate(key_id, alg)?)))
    }
    fn load(
        &self,
        key_id: &str,
        alg: KeyAlgorithm,
    ) -> esm_ca::Result<Arc<dyn esm_ca::key_backend::KeyBackend>> {
        Ok(Arc::new(SlowKey(self.0.load(key_id, alg)?)))
    }
    fn import_pkcs8(
        &self,
        key_id: &str,
        pkcs8_der: &[u8],
    ) -> esm_ca::Result<Arc<dyn esm_ca::key_backend::KeyBackend>> {
        Ok(Arc::new(SlowKey(self.0.import_pkcs8(key_id, pkcs8_der)?)))
    }
}

/// Signing that blocks its thread (an HSM, a vault) does not stall the runtime: on a single
/// thread, while one identity's issuance waits on the key, timers still fire on time and
/// another task keeps running. Issued inline on the async worker, the whole runtime would
/// stop for the signature's 2 s.
#[tokio::test(flavor = "current_thread")]
async fn a_key_backend_that_blocks_does_not_stall_the_async_workers() {
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration as StdDuration, Instant};

    let f = fixture();
    // The same CA, its signing key read through a backend whose every signature blocks.
    let slow = CaStore::new(
        f._dir.path().join("ca"),
        Arc::new(SlowKeys(FileKeyStore::new(
            f._dir.path().join("ca/keys"),
            None,
        ))),
    );
    let state = slow.load().unwrap();
    let m = CaMaterial::load(&slow, &state, OffsetDateTime::now_utc()).unwrap();
    let (_ca_tx, ca_rx) = watch::channel(Arc::new(m));
    let cache = SvidCache::new(ca_rx, IssuancePolicy::default(), None, f.metrics.clone());

    // Another task on the same (only) thread: a 20 ms tick.
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            let mut every = tokio::time::interval(StdDuration::from_millis(20));
            loop {
                every.tick().await;
                ticks.fetch_add(1, Ordering::Relaxed);
            }
        }
    });

    let started = Instant::now();
    let mut rx = cache.subscribe(&spec("spiffe://example.org/hsm-backed", None), &opener());
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    let slept = started.elapsed();
    let ticked = ticks.load(Ordering::Relaxed);
    // The issuance is under way (its signature takes 2 s), yet the runtime answered.
    assert!(
        matches!(*rx.borrow(), Current::Pending),
        "issued before its key signed"
    );
    assert!(
        slept < StdDuration::from_millis(1500),
        "a 500 ms timer fired after {slept:?}: the signature blocked the runtime"
    );
    assert!(
        ticked >= 10,
        "{ticked} ticks of 20 ms in {slept:?}: the signature blocked the runtime"
    );

    // And the blocked issuance completes, through the slow key.
    let svid = ready(settled(&mut rx).await);
    assert_eq!(svid.spiffe_id.as_str(), "spiffe://example.org/hsm-backed");
    assert!(started.elapsed() >= SLOW_SIGN, "the slow key was not used");
    ticker.abort();
}
