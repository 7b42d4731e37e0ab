//! Ed25519 keys in the token (`CKM_EC_EDWARDS_KEY_PAIR_GEN`, `CKM_EDDSA`, PKCS#11 3.0), for the
//! audit checkpoint key where the token has them; the CA's own keys stay ECDSA or RSA, what
//! X.509 peers expect. The token signs the message itself (pure Ed25519 has no pre-hash), and
//! its 64-byte signature is the RFC 8032 one.

use std::sync::Arc;

use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::Session;

use super::encoding::{ed25519_point, ED25519_PARAMS};
use super::handle::PrivateKeyRef;
use super::token::{Failure, BACKEND};
use super::Pkcs11KeyStore;
use crate::error::{Error, Result};

/// An Ed25519 key in the token: its public half in memory, the private half behind a handle.
pub struct Pkcs11Ed25519Key {
    private: PrivateKeyRef,
    public: Vec<u8>,
}

fn read_public(s: &Session, pubkey: ObjectHandle) -> Result<Vec<u8>, Failure> {
    let attrs = s.get_attributes(pubkey, &[AttributeType::EcPoint])?;
    attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => ed25519_point(&p),
            _ => None,
        })
        .ok_or_else(|| {
            Failure::Esm(Error::KeyBackend {
                backend: BACKEND,
                reason: "CKA_EC_POINT is not a 32-byte Ed25519 key".into(),
            })
        })
}

impl Pkcs11KeyStore {
    /// Whether the token makes Ed25519 keys and signs with them.
    pub fn supports_ed25519(&self) -> Result<bool> {
        Ok(self
            .token
            .offers(MechanismType::ECC_EDWARDS_KEY_PAIR_GEN, true)?
            && self.token.offers(MechanismType::EDDSA, false)?)
    }

    /// Makes an Ed25519 key that never existed under `key_id`, with the same protection as
    /// the CA's keys (sensitive, not extractable, made in the token).
    pub fn generate_ed25519(&self, key_id: &str) -> Result<Arc<Pkcs11Ed25519Key>> {
        let spec = (
            Mechanism::EccEdwardsKeyPairGen,
            vec![Attribute::EcParams(ED25519_PARAMS.to_vec())],
        );
        let public = self.generate_pair(key_id, spec, &read_public)?;
        Ok(self.ed25519_key(key_id, public))
    }

    /// Finds the Ed25519 key made under `key_id`.
    pub fn load_ed25519(&self, key_id: &str) -> Result<Arc<Pkcs11Ed25519Key>> {
        let public = self.find_pair(key_id, &read_public)?;
        Ok(self.ed25519_key(key_id, public))
    }

    fn ed25519_key(&self, key_id: &str, public: Vec<u8>) -> Arc<Pkcs11Ed25519Key> {
        Arc::new(Pkcs11Ed25519Key {
            private: PrivateKeyRef::new(self.token.clone(), key_id),
            public,
        })
    }
}

impl Pkcs11Ed25519Key {
    pub fn key_id(&self) -> &str {
        &self.private.key_id
    }

    /// The 32-byte public key.
    pub fn public_key_raw(&self) -> &[u8] {
        &self.public
    }

    /// The Ed25519 signature of `msg`, made in the token.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let mech = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        self.private.token.with_session("signing", |s, conn| {
            let h = self.private.handle(s, conn.generation)?;
            let sig = s.sign(&mech, h, msg)?;
            if sig.len() != 64 {
                return Err(Failure::Esm(Error::KeyBackend {
                    backend: BACKEND,
                    reason: format!("token returned a {}-byte Ed25519 signature", sig.len()),
                }));
            }
            Ok(sig)
        })
    }
}
