//! The audit checkpoint key in a real SoftHSM2 token: Ed25519 where the token has CKM_EDDSA
//! (SoftHSM2 does), P-256 otherwise; made sensitive and never extractable; the log it signs
//! verifies with the public key alone, and a log rewritten and re-signed with any other key
//! (what root on the host can do without the token's key) does not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod softhsm;

use std::sync::Arc;

use esm_audit::checkpoint::{Algorithm, SigningKey};
use esm_audit::redact::Redactor;
use esm_audit::store::Db;
use esm_audit::verify::verify;
use esm_audit::writer::{self, WriterOptions};
use esm_audit::{kind, Event, Outcome};
use esm_ca::key_backend::checkpoint_key::CheckpointKeys;
use esm_ca::key_backend::{KeyAlgorithm, KeyStore};
use softhsm::{assert_held_by_the_token, softhsm, store, unique};

fn keys() -> Arc<CheckpointKeys> {
    Arc::new(CheckpointKeys::Pkcs11(store("esm-test")))
}

fn event(i: u32, subject: &str) -> Event {
    let mut e = Event::new(kind::SVID_ISSUED, Outcome::Success);
    e.actor = "cli:uid:0".into();
    e.subject = subject.into();
    e.action = "issue".into();
    e.reason = format!("issuance {i}");
    e
}

/// A SQLite log of `subjects` (one event each, a checkpoint every two) signed by `key`.
async fn log(dir: &std::path::Path, key: SigningKey, subjects: &[&str]) -> Db {
    let url = format!("sqlite://{}", dir.join("audit.db").display());
    let db = Db::open(&url, None).await.unwrap();
    let opts = WriterOptions {
        checkpoint_every: 2,
        ..WriterOptions::default()
    };
    let (sink, handle) = writer::start(db.clone(), key, Redactor::from_secret(&[1; 32]), opts)
        .await
        .unwrap();
    for (i, s) in subjects.iter().enumerate() {
        sink.record(event(i as u32, s)).await.unwrap();
    }
    drop(sink);
    handle.shutdown().await.unwrap();
    db
}

#[test]
fn the_checkpoint_key_is_an_ed25519_key_made_in_the_token_and_never_extractable() {
    let _t = softhsm();
    let token = keys();
    assert_eq!(token.algorithm().unwrap(), Algorithm::Ed25519);
    let name = unique("audit-checkpoint");
    let key = token.generate(&name).unwrap();
    assert_eq!(key.backend_key_id(), name);
    let key = SigningKey::new(Arc::new(key));
    assert!(key.id().starts_with("ed25519:"));
    let cp = key.sign(3, [1; 32], [2; 32], 4).unwrap();
    assert!(cp.verify(&key.public()));
    assert_eq!(cp.signature.len(), 64);

    let c = key.custody();
    assert_held_by_the_token(&c);
    assert_eq!(c["algorithm"], "ed25519");
    assert_eq!(c["key_id"], key.id());
    assert_eq!(c["backend_key_id"], name.as_str());
    assert_eq!(c["key_type"], "ec-edwards");

    // Another process finds the same key by its name.
    let again = SigningKey::new(Arc::new(keys().load(&name, Algorithm::Ed25519).unwrap()));
    assert_eq!(again.public(), key.public());
    assert!(again
        .sign(5, [3; 32], [4; 32], 6)
        .unwrap()
        .verify(&key.public()));
    // Asked for as the other algorithm, the key is refused rather than misread.
    assert!(keys().load(&name, Algorithm::EcdsaP256).is_err());
    assert!(keys().load("no-such-key", Algorithm::Ed25519).is_err());
}

#[test]
fn a_p256_checkpoint_key_in_the_token_signs_der_that_verifies() {
    // Tokens without CKM_EDDSA get a P-256 key; SoftHSM2 has both, so the P-256 key is made
    // through the CA interface and found again as a checkpoint key.
    let _t = softhsm();
    let name = unique("audit-p256");
    store("esm-test")
        .generate(&name, KeyAlgorithm::EcP256)
        .unwrap();
    let key = SigningKey::new(Arc::new(keys().load(&name, Algorithm::EcdsaP256).unwrap()));
    assert!(key.id().starts_with("p256:"));
    let cp = key.sign(7, [5; 32], [6; 32], 8).unwrap();
    assert!(cp.verify(&key.public()));
    assert_eq!(cp.signature[0], 0x30, "DER SEQUENCE");
    assert_eq!(key.custody()["algorithm"], "ecdsa-p256-sha256");
}

#[tokio::test]
async fn a_log_rewritten_and_resigned_with_another_key_does_not_verify() {
    let name = unique("audit-log");
    let hsm_key = {
        let _t = softhsm();
        SigningKey::new(Arc::new(keys().generate(&name).unwrap()))
    };
    let public = hsm_key.public();
    let subjects = [
        "spiffe://example.org/a",
        "spiffe://example.org/b",
        "spiffe://example.org/c",
    ];
    let genuine = tempfile::tempdir().unwrap();
    let db = log(genuine.path(), hsm_key, &subjects).await;
    let r = verify(&db, &public, None).await.unwrap();
    assert_eq!((r.events, r.checkpoints), (3, 2));
    db.close().await;

    // The attacker's version: the same events with one changed, every hash recomputed and
    // every checkpoint signed — by a key of their own, since the token's cannot be read.
    let forged_dir = tempfile::tempdir().unwrap();
    let attacker = SigningKey::ephemeral().unwrap();
    let forged = [
        "spiffe://example.org/a",
        "spiffe://example.org/EVIL",
        "spiffe://example.org/c",
    ];
    let db = log(forged_dir.path(), attacker.clone(), &forged).await;
    // Internally consistent: it verifies under the attacker's own key...
    assert!(verify(&db, &attacker.public(), None).await.is_ok());
    // ...but not under the checkpoint key's public half.
    match verify(&db, &public, None).await {
        Err(esm_audit::Error::Tampered(t)) => {
            assert_eq!(t.seq, 2, "{t}");
            assert!(t.reason.contains("signature does not verify"), "{t}");
        }
        other => panic!("the re-signed log verified: {other:?}"),
    }
    db.close().await;
}
