//! The PKCS#11 key backend: CA keys made inside a token (an HSM, SoftHSM2, a smart card) and
//! never leaving it. esm keeps only each key's public half and its token label and `CKA_ID`.
//!
//! Keys are generated with `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE` true and
//! `CKA_EXTRACTABLE` false; the token then also reports them `ALWAYS_SENSITIVE`,
//! `NEVER_EXTRACTABLE` and `LOCAL` (made inside), which [`KeyStore::custody`] reads back for
//! the audit log. ECDSA signs with `CKM_ECDSA` over a digest computed here (portable across
//! tokens that lack `CKM_ECDSA_SHA256`); RSA with `CKM_SHA256_RSA_PKCS`, the PKCS#1 v1.5
//! signature the certificates announce, as the file backend does.

mod eddsa;
mod encoding;
mod handle;
mod token;

use std::path::PathBuf;
use std::sync::Arc;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use serde_json::json;

use super::{KeyAlgorithm, KeyBackend, KeyStore};
use crate::error::{Error, Result};
pub use eddsa::Pkcs11Ed25519Key;
use encoding::{ec_params, ec_point, ecdsa_raw_to_der, key_cka_id, key_label};
use handle::PrivateKeyRef;
pub use token::Pin;
use token::{Failure, Token, BACKEND};

/// Where the keys are: the module to load and the token's label, plus its user PIN.
#[derive(Debug)]
pub struct Pkcs11Config {
    pub module: PathBuf,
    pub token_label: String,
    pub pin: Pin,
}

/// Keys in one token. Cheap to share: all keys of a store use one session pool and login.
pub struct Pkcs11KeyStore {
    token: Arc<Token>,
}

impl Pkcs11KeyStore {
    /// Connects lazily; call [`KeyStore::check`] to fail early on a bad module, token or PIN.
    pub fn new(cfg: Pkcs11Config) -> Self {
        Self {
            token: Arc::new(Token::new(cfg.module, cfg.token_label, cfg.pin)),
        }
    }

    fn find(
        session: &Session,
        class: ObjectClass,
        id: &[u8],
    ) -> Result<Option<ObjectHandle>, Failure> {
        let found = session.find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])?;
        if found.len() > 1 {
            return Err(Failure::Esm(Error::Config(format!(
                "the token holds {} objects with one CKA_ID {}: remove the duplicates",
                found.len(),
                crate::issuer::hex(id)
            ))));
        }
        Ok(found.first().copied())
    }

    fn public_raw(
        session: &Session,
        pubkey: ObjectHandle,
        alg: KeyAlgorithm,
    ) -> Result<Vec<u8>, Failure> {
        let bad = |m: &str| {
            Failure::Esm(Error::KeyBackend {
                backend: BACKEND,
                reason: m.to_owned(),
            })
        };
        if alg.is_rsa() {
            let attrs = session.get_attributes(
                pubkey,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )?;
            let (mut n, mut e) = (None, None);
            for a in attrs {
                match a {
                    Attribute::Modulus(v) => n = Some(v),
                    Attribute::PublicExponent(v) => e = Some(v),
                    _ => {}
                }
            }
            let (n, e) = n
                .zip(e)
                .ok_or_else(|| bad("RSA public key without modulus or exponent"))?;
            if n.iter().skip_while(|b| **b == 0).count() * 8 != 3072 {
                return Err(bad("RSA key is not 3072 bits"));
            }
            use rsa::pkcs1::EncodeRsaPublicKey;
            let key = rsa::RsaPublicKey::new(
                rsa::BigUint::from_bytes_be(&n),
                rsa::BigUint::from_bytes_be(&e),
            )
            .map_err(|e| bad(&e.to_string()))?;
            Ok(key
                .to_pkcs1_der()
                .map_err(|e| bad(&e.to_string()))?
                .as_bytes()
                .to_vec())
        } else {
            let attrs = session.get_attributes(pubkey, &[AttributeType::EcPoint])?;
            let point = attrs.into_iter().find_map(|a| match a {
                Attribute::EcPoint(p) => Some(p),
                _ => None,
            });
            point
                .and_then(|p| ec_point(alg, &p))
                .ok_or_else(|| bad(&format!("CKA_EC_POINT is not an uncompressed {alg} point")))
        }
    }

    fn key(&self, key_id: &str, alg: KeyAlgorithm, public_raw: Vec<u8>) -> Arc<dyn KeyBackend> {
        Arc::new(Pkcs11Key {
            private: PrivateKeyRef::new(self.token.clone(), key_id),
            alg,
            public_raw,
        })
    }
}

/// The mechanism that makes a key pair of `alg` and the public key's attributes for it.
fn pair_spec(alg: KeyAlgorithm) -> (Mechanism<'static>, Vec<Attribute>) {
    match ec_params(alg) {
        Some(params) => (
            Mechanism::EccKeyPairGen,
            vec![Attribute::EcParams(params.to_vec())],
        ),
        None => (
            Mechanism::RsaPkcsKeyPairGen,
            vec![
                Attribute::ModulusBits(3072.into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
            ],
        ),
    }
}

/// The public and private templates of a new pair: a token object found by label and id,
/// whose private half signs and is sensitive and not extractable.
fn templates(
    label: &str,
    id: &[u8],
    algorithm: Vec<Attribute>,
) -> (Vec<Attribute>, Vec<Attribute>) {
    let common = |private: bool| {
        vec![
            Attribute::Token(true),
            Attribute::Private(private),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ]
    };
    let mut public = common(false);
    public.push(Attribute::Verify(true));
    public.extend(algorithm);
    let mut private = common(true);
    private.extend([
        Attribute::Sign(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
    ]);
    (public, private)
}

/// Reads a key's public half out of its public key object.
type ReadPublic<'a> = &'a dyn Fn(&Session, ObjectHandle) -> Result<Vec<u8>, Failure>;

impl Pkcs11KeyStore {
    /// Makes a key pair that never existed under `key_id`; returns its public half.
    fn generate_pair(
        &self,
        key_id: &str,
        (mech, algorithm): (Mechanism<'static>, Vec<Attribute>),
        read: ReadPublic<'_>,
    ) -> Result<Vec<u8>> {
        let (label, id) = (key_label(key_id), key_cka_id(key_id));
        let (public, private) = templates(&label, &id, algorithm);
        let raw = self.token.with_session("generating a key", |s, _| {
            if Self::find(s, ObjectClass::PRIVATE_KEY, &id)?.is_some() {
                return Err(Failure::Esm(Error::Bug(format!(
                    "a key {label} already exists in the token"
                ))));
            }
            let (pubkey, _) = s.generate_key_pair(&mech, &public, &private)?;
            read(s, pubkey)
        })?;
        tracing::info!(key.id = key_id, pkcs11.token = %self.token.label, pkcs11.label = %label, "key generated in the token");
        Ok(raw)
    }

    /// Finds the pair made under `key_id`; returns its public half.
    fn find_pair(&self, key_id: &str, read: ReadPublic<'_>) -> Result<Vec<u8>> {
        let id = key_cka_id(key_id);
        self.token.with_session("loading a key", |s, _| {
            let missing = || {
                Failure::Esm(Error::Config(format!(
                    "PKCS#11 token {:?} has no key {} (CKA_ID {})",
                    self.token.label,
                    key_label(key_id),
                    crate::issuer::hex(&id)
                )))
            };
            Self::find(s, ObjectClass::PRIVATE_KEY, &id)?.ok_or_else(missing)?;
            let pubkey = Self::find(s, ObjectClass::PUBLIC_KEY, &id)?.ok_or_else(missing)?;
            read(s, pubkey)
        })
    }
}

impl KeyStore for Pkcs11KeyStore {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    fn check(&self) -> Result<()> {
        self.token.check()
    }

    fn generate(&self, key_id: &str, alg: KeyAlgorithm) -> Result<Arc<dyn KeyBackend>> {
        let read = |s: &Session, h| Self::public_raw(s, h, alg);
        let raw = self.generate_pair(key_id, pair_spec(alg), &read)?;
        Ok(self.key(key_id, alg, raw))
    }

    fn load(&self, key_id: &str, alg: KeyAlgorithm) -> Result<Arc<dyn KeyBackend>> {
        let read = |s: &Session, h| Self::public_raw(s, h, alg);
        let raw = self.find_pair(key_id, &read)?;
        Ok(self.key(key_id, alg, raw))
    }

    fn import_pkcs8(&self, key_id: &str, _pkcs8_der: &[u8]) -> Result<Arc<dyn KeyBackend>> {
        // Unwrapping a plaintext key into the token would make a key that is not LOCAL and
        // was once extractable: the custody evidence could not vouch for it.
        Err(Error::Config(format!(
            "an upstream CA key ({key_id}) cannot be imported into a PKCS#11 token by esm; \
             use the file backend with --upstream-key, or import it with the HSM's own tooling"
        )))
    }

    fn custody(&self, key_id: &str) -> Result<serde_json::Value> {
        let id = key_cka_id(key_id);
        let attrs = self.token.with_session("reading key attributes", |s, _| {
            let h = Self::find(s, ObjectClass::PRIVATE_KEY, &id)?.ok_or_else(|| {
                Failure::Esm(Error::Config(format!(
                    "PKCS#11 token has no key {}",
                    key_label(key_id)
                )))
            })?;
            Ok(s.get_attributes(
                h,
                &[
                    AttributeType::Sensitive,
                    AttributeType::AlwaysSensitive,
                    AttributeType::Extractable,
                    AttributeType::NeverExtractable,
                    AttributeType::Local,
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::KeyType,
                ],
            )?)
        })?;
        let mut out = json!({
            "backend": BACKEND,
            "key_id": key_id,
            "module": self.token.module_path.display().to_string(),
            "token_label": self.token.label,
            "key_label": key_label(key_id),
            "cka_id": crate::issuer::hex(&id),
        });
        for a in attrs {
            let (k, v) = match a {
                Attribute::Sensitive(b) => ("sensitive", json!(b)),
                Attribute::AlwaysSensitive(b) => ("always_sensitive", json!(b)),
                Attribute::Extractable(b) => ("extractable", json!(b)),
                Attribute::NeverExtractable(b) => ("never_extractable", json!(b)),
                Attribute::Local(b) => ("local", json!(b)),
                Attribute::Token(b) => ("token_object", json!(b)),
                Attribute::Private(b) => ("private", json!(b)),
                Attribute::KeyType(t) => (
                    "key_type",
                    json!(if t == KeyType::EC {
                        "ec"
                    } else if t == KeyType::EC_EDWARDS {
                        "ec-edwards"
                    } else if t == KeyType::RSA {
                        "rsa"
                    } else {
                        "other"
                    }),
                ),
                _ => continue,
            };
            out[k] = v;
        }
        Ok(out)
    }
}

/// A CA key in the token: its public half in memory, the private half behind a handle.
pub struct Pkcs11Key {
    private: PrivateKeyRef,
    alg: KeyAlgorithm,
    public_raw: Vec<u8>,
}

impl KeyBackend for Pkcs11Key {
    fn key_id(&self) -> &str {
        &self.private.key_id
    }

    fn algorithm(&self) -> KeyAlgorithm {
        self.alg
    }

    fn public_key_raw(&self) -> &[u8] {
        &self.public_raw
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let alg = self.alg;
        let digest = match alg {
            KeyAlgorithm::EcP256 => Some(ring::digest::digest(&ring::digest::SHA256, msg)),
            KeyAlgorithm::EcP384 => Some(ring::digest::digest(&ring::digest::SHA384, msg)),
            KeyAlgorithm::Rsa3072 => None,
        };
        self.private.token.with_session("signing", |s, conn| {
            let h = self.private.handle(s, conn.generation)?;
            match &digest {
                Some(d) => {
                    let raw = s.sign(&Mechanism::Ecdsa, h, d.as_ref())?;
                    ecdsa_raw_to_der(alg, &raw).ok_or_else(|| {
                        Failure::Esm(Error::KeyBackend {
                            backend: BACKEND,
                            reason: format!("token returned a {}-byte ECDSA signature", raw.len()),
                        })
                    })
                }
                None => Ok(s.sign(&Mechanism::Sha256RsaPkcs, h, msg)?),
            }
        })
    }
}
