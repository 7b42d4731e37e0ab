#![allow(clippy::unwrap_used)]
use super::*;
use crate::public_key::Algorithm;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

/// A P-256 key in memory, standing in for one in a vault: signs the way Key Vault's ES256
/// does, as esm stores it (DER).
struct P256 {
    pair: EcdsaKeyPair,
    public: PublicKey,
}

impl P256 {
    fn new() -> Self {
        let rng = ring::rand::SystemRandom::new();
        let alg = &ECDSA_P256_SHA256_ASN1_SIGNING;
        let doc = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, doc.as_ref(), &rng).unwrap();
        let public =
            PublicKey::new(Algorithm::EcdsaP256, pair.public_key().as_ref().to_vec()).unwrap();
        Self { pair, public }
    }
}

impl CheckpointSigner for P256 {
    fn public(&self) -> &PublicKey {
        &self.public
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let rng = ring::rand::SystemRandom::new();
        Ok(self.pair.sign(&rng, message).unwrap().as_ref().to_vec())
    }
    fn custody(&self) -> serde_json::Value {
        serde_json::json!({"backend": "test", "key_id": self.public.id})
    }
}

/// A backend that answers with another key's signatures (a swapped HSM object, a vault
/// that is not the one configured).
struct Impostor {
    claimed: PublicKey,
    real: SigningKey,
}

impl CheckpointSigner for Impostor {
    fn public(&self) -> &PublicKey {
        &self.claimed
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        self.real.sign_bytes(message)
    }
    fn custody(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

#[test]
fn p256_checkpoints_verify_and_any_change_breaks_them() {
    let k = SigningKey::new(Arc::new(P256::new()));
    let cp = k.sign(10, [1; 32], [2; 32], 5).unwrap();
    assert!(cp.key_id.starts_with("p256:"));
    assert!(cp.verify(&k.public()));
    let mut c = cp.clone();
    c.root[0] ^= 1;
    assert!(!c.verify(&k.public()));
    assert!(!cp.verify(&SigningKey::ephemeral().unwrap().public()));
}

#[test]
fn algorithm_confused_checkpoints_are_refused() {
    let ec = SigningKey::new(Arc::new(P256::new()));
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
    let claimed = SigningKey::ephemeral().unwrap().public();
    let impostor = Impostor {
        claimed,
        real: SigningKey::ephemeral().unwrap(),
    };
    let k = SigningKey::new(Arc::new(impostor));
    assert!(matches!(
        k.sign(1, [0; 32], [0; 32], 0),
        Err(Error::KeyBackend(_))
    ));
}

#[tokio::test]
async fn a_blocking_backend_signs_off_the_async_runtime() {
    struct Where(std::sync::Mutex<Option<String>>, P256);
    impl CheckpointSigner for Where {
        fn public(&self) -> &PublicKey {
            self.1.public()
        }
        fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
            let name = std::thread::current().name().map(str::to_owned);
            *self.0.lock().unwrap() = name;
            self.1.sign(message)
        }
        fn custody(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
    }
    let signer = Arc::new(Where(Default::default(), P256::new()));
    let k = SigningKey::new(signer.clone());
    let here = std::thread::current().name().map(str::to_owned);
    let cp = k.sign_checkpoint(2, [3; 32], [4; 32], 5).await.unwrap();
    assert!(cp.verify(&k.public()));
    let signed_on = signer.0.lock().unwrap().clone();
    assert!(
        signed_on.is_some() && signed_on != here,
        "{signed_on:?} vs {here:?}"
    );
}
