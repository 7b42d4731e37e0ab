//! The writer with checkpoint keys other than the file key: a P-256 key (as in Key Vault),
//! and a key whose backend fails for a while (an HSM pulled, a vault down). Events are
//! stored regardless; checkpoints resume, backing off meanwhile, and the log verifies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::{append_n, writer, Backend};
use esm_audit::checkpoint::{Algorithm, CheckpointSigner, PublicKey, SigningKey};
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
);

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
