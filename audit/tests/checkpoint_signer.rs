//! Checkpoint keys other than the file key: a P-256 key (as in Key Vault), keys presented
//! under another algorithm's id, a backend that signs with another key, one that may block
//! (signed off the async runtime), and one that fails for a while (an HSM pulled, a vault
//! down): events are stored regardless, checkpoints resume after a pause, the log verifies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::{append_n, writer, Backend};
use esm_audit::checkpoint::{Algorithm, CheckpointSigner, PublicKey, SigningKey};
use esm_audit::file_key::FileKey;
use esm_audit::verify::verify;
use esm_audit::writer::WriterOptions;
use esm_audit::{Error, Result};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

/// A P-256 key in memory whose backend can be switched off; counts the signing calls.
struct FlakyP256 {
    pair: EcdsaKeyPair,
    public: PublicKey,
    down: AtomicBool,
    calls: AtomicU64,
}

impl FlakyP256 {
    fn new() -> Arc<Self> {
        let rng = ring::rand::SystemRandom::new();
        let alg = &ECDSA_P256_SHA256_ASN1_SIGNING;
        let doc = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, doc.as_ref(), &rng).unwrap();
        let public =
            PublicKey::new(Algorithm::EcdsaP256, pair.public_key().as_ref().to_vec()).unwrap();
        Arc::new(Self {
            pair,
            public,
            down: AtomicBool::new(false),
            calls: AtomicU64::new(0),
        })
    }
}

impl CheckpointSigner for FlakyP256 {
    fn public(&self) -> &PublicKey {
        &self.public
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.down.load(Ordering::Relaxed) {
            return Err(Error::KeyBackend("token not present".into()));
        }
        let rng = ring::rand::SystemRandom::new();
        Ok(self.pair.sign(&rng, message).unwrap().as_ref().to_vec())
    }
    fn custody(&self) -> serde_json::Value {
        serde_json::json!({"backend": "test"})
    }
}

/// A backend that answers with another key's signatures (a swapped HSM object, a vault that
/// is not the one configured).
struct Impostor {
    claimed: PublicKey,
    real: FileKey,
}

impl CheckpointSigner for Impostor {
    fn public(&self) -> &PublicKey {
        &self.claimed
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        self.real.sign(message)
    }
    fn custody(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

#[test]
fn p256_checkpoints_verify_and_any_change_breaks_them() {
    let k = SigningKey::new(FlakyP256::new());
    let cp = k.sign(10, [1; 32], [2; 32], 5).unwrap();
    assert!(cp.key_id.starts_with("p256:"));
    assert!(cp.verify(&k.public()));
    assert_eq!(cp.signature[0], 0x30, "DER SEQUENCE");
    let mut c = cp.clone();
    c.root[0] ^= 1;
    assert!(!c.verify(&k.public()));
    assert!(!cp.verify(&SigningKey::ephemeral().unwrap().public()));
}

#[test]
fn algorithm_confused_checkpoints_are_refused() {
    let ec = SigningKey::new(FlakyP256::new());
    let ed = SigningKey::ephemeral().unwrap();
    let by_ec = ec.sign(4, [1; 32], [2; 32], 5).unwrap();
    let by_ed = ed.sign(4, [1; 32], [2; 32], 5).unwrap();
    // An Ed25519 signature presented under the P-256 key's id, to either verifier.
    let mut c = by_ed.clone();
    c.key_id = ec.id().to_owned();
    assert!(!c.verify(&ec.public()) && !c.verify(&ed.public()));
    // A P-256 signature presented under the Ed25519 key's id (and its legacy bare form).
    let mut c = by_ec.clone();
    c.key_id = ed.id().to_owned();
    assert!(!c.verify(&ed.public()) && !c.verify(&ec.public()));
    c.key_id = ed.id().trim_start_matches("ed25519:").to_owned();
    assert!(!c.verify(&ed.public()) && !c.verify(&ec.public()));
    // Each verifies only as itself.
    assert!(by_ec.verify(&ec.public()) && !by_ec.verify(&ed.public()));
    assert!(by_ed.verify(&ed.public()) && !by_ed.verify(&ec.public()));
}

#[test]
fn a_backend_signing_with_another_key_is_caught_before_anything_is_stored() {
    let impostor = Impostor {
        claimed: SigningKey::ephemeral().unwrap().public(),
        real: FileKey::ephemeral().unwrap(),
    };
    let k = SigningKey::new(Arc::new(impostor));
    assert!(matches!(
        k.sign(1, [0; 32], [0; 32], 0),
        Err(Error::KeyBackend(_))
    ));
}

#[tokio::test]
async fn a_blocking_backend_signs_off_the_async_runtime() {
    struct Where(
        std::sync::Mutex<Option<std::thread::ThreadId>>,
        Arc<FlakyP256>,
    );
    impl CheckpointSigner for Where {
        fn public(&self) -> &PublicKey {
            self.1.public()
        }
        fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
            *self.0.lock().unwrap() = Some(std::thread::current().id());
            self.1.sign(message)
        }
        fn custody(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
    }
    let signer = Arc::new(Where(Default::default(), FlakyP256::new()));
    let k = SigningKey::new(signer.clone());
    let cp = k.sign_checkpoint(2, [3; 32], [4; 32], 5).await.unwrap();
    assert!(cp.verify(&k.public()));
    let signed_on = *signer.0.lock().unwrap();
    assert!(signed_on.is_some() && signed_on != Some(std::thread::current().id()));
}

fn opts(every: u64) -> WriterOptions {
    WriterOptions {
        checkpoint_every: every,
        linger: std::time::Duration::ZERO,
        ..Default::default()
    }
}

both_backends!(
    a_p256_key_signs_checkpoints_that_verify,
    events_are_stored_while_the_key_cannot_sign_and_checkpoints_resume,
    a_writer_with_another_key_than_the_logs_is_refused_before_writing,
);

/// The attack: the log's key file deleted (esm would once make a new one) or another key
/// swapped in; the writer must refuse to append checkpoints the log's key did not sign.
async fn a_writer_with_another_key_than_the_logs_is_refused_before_writing(b: Backend) {
    let (sink, handle) = writer(b.open().await, SigningKey::ephemeral().unwrap(), opts(2)).await;
    append_n(&sink, 0, 4).await;
    drop(sink);
    handle.shutdown().await.unwrap();
    let db = b.open().await;
    let before = db.last_seq().await.unwrap();
    let err = esm_audit::writer::start(
        db.clone(),
        SigningKey::ephemeral().unwrap(),
        esm_audit::redact::Redactor::from_secret(&[7; 32]),
        opts(2),
    )
    .await
    .err()
    .expect("a writer with another key must be refused");
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(
        err.to_string().contains("a log cannot change keys"),
        "{err}"
    );
    assert_eq!(db.last_seq().await.unwrap(), before, "nothing was appended");
}

async fn a_p256_key_signs_checkpoints_that_verify(b: Backend) {
    let signer = FlakyP256::new();
    let public = signer.public.clone();
    let (sink, handle) = writer(b.open().await, SigningKey::new(signer), opts(5)).await;
    for chunk in 0..4 {
        append_n(&sink, chunk * 5, 5).await;
    }
    handle.shutdown().await.unwrap();
    let db = b.open().await;
    let cps = db.checkpoints().await.unwrap();
    assert!(cps.len() >= 4);
    assert!(cps.iter().all(|c| c.checkpoint.key_id == public.id));
    let r = verify(&db, &public, None).await.unwrap();
    assert_eq!((r.events, r.checkpoints), (20, cps.len() as u64));
    // The same log under an Ed25519 key of the same bytes' hash does not verify.
    let stranger = SigningKey::ephemeral().unwrap().public();
    assert!(matches!(
        verify(&db, &stranger, None).await,
        Err(Error::Tampered(_))
    ));
}

async fn events_are_stored_while_the_key_cannot_sign_and_checkpoints_resume(b: Backend) {
    let signer = FlakyP256::new();
    signer.down.store(true, Ordering::Relaxed);
    let public = signer.public.clone();
    let (sink, handle) = writer(b.open().await, SigningKey::new(signer.clone()), opts(1)).await;
    // Every batch is due a checkpoint; the first try fails, and the next second's batches
    // do not try again (no call per commit while the backend is down).
    for i in 0..5 {
        append_n(&sink, i * 2, 2).await;
    }
    assert_eq!(signer.calls.load(Ordering::Relaxed), 1);
    assert_eq!(
        sink.metrics().checkpoint_failures.load(Ordering::Relaxed),
        1
    );
    assert_eq!(sink.metrics().appended.load(Ordering::Relaxed), 10);
    // Back up: after the pause, the next batch's checkpoint covers everything stored.
    signer.down.store(false, Ordering::Relaxed);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    append_n(&sink, 10, 2).await;
    handle.shutdown().await.unwrap();
    let db = b.open().await;
    let cps = db.checkpoints().await.unwrap();
    // None while it was down; the first one after covers the events stored meanwhile.
    assert!(cps.first().unwrap().checkpoint.tree_size > 10);
    assert_eq!(cps.last().unwrap().checkpoint.tree_size, 12);
    let r = verify(&db, &public, None).await.unwrap();
    assert_eq!(r.events, 12);
}
