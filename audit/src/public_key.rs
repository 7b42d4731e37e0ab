//! The audit public key: what a verifier needs, and all it needs, to check checkpoints and
//! retention statements. Two algorithms: Ed25519 (the file key, and HSMs with `CKM_EDDSA`) and
//! ECDSA P-256 with SHA-256 (Key Vault and HSMs without Ed25519).
//!
//! The key id names the algorithm (`ed25519:…`, `p256:…`) followed by 16 hex digits of the
//! SHA-256 of the public key. Verification always uses the algorithm of the key the verifier
//! holds, never one a checkpoint claims: a checkpoint whose id names another key or another
//! algorithm is refused before any signature is checked. Checkpoints written before ids named
//! their algorithm carry the bare 16 hex digits; those are accepted for Ed25519 keys only,
//! the only kind there was.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ED25519};

use crate::error::{Error, Result};

/// How a checkpoint key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Ed25519 (RFC 8032) over the signed text; 64-byte signatures.
    Ed25519,
    /// ECDSA on P-256 over the SHA-256 of the signed text; the signature is ASN.1 DER
    /// (`ECDSA-Sig-Value`), as X.509 and `openssl dgst -verify` use it.
    EcdsaP256,
}

impl Algorithm {
    /// The prefix of key ids and of `checkpoint.pub` text.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Ed25519 => "ed25519",
            Self::EcdsaP256 => "p256",
        }
    }

    /// The name the audit log and `esm ca show` use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ed25519 => "ed25519",
            Self::EcdsaP256 => "ecdsa-p256-sha256",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [Self::Ed25519, Self::EcdsaP256]
            .into_iter()
            .find(|a| a.name() == name || a.prefix() == name)
    }

    /// Length of the raw public key: 32 bytes, or the 65-byte uncompressed point `04‖X‖Y`.
    fn key_len(self) -> usize {
        match self {
            Self::Ed25519 => 32,
            Self::EcdsaP256 => 65,
        }
    }

    /// The DER SubjectPublicKeyInfo up to the key bytes (RFC 8410, RFC 5480).
    fn spki_prefix(self) -> &'static [u8] {
        match self {
            Self::Ed25519 => &[
                0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
            ],
            Self::EcdsaP256 => &[
                0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
                0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
            ],
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub algorithm: Algorithm,
    /// The raw public key: 32 bytes (Ed25519) or the uncompressed point (P-256).
    pub bytes: Vec<u8>,
    /// `ed25519:…` or `p256:…`, recorded next to every signature.
    pub id: String,
}

/// The longest public key file esm reads (a PEM of a P-256 key is about 180 bytes).
const MAX_TEXT: usize = 4096;

impl PublicKey {
    /// A public key of `algorithm`; refused when the bytes cannot be one.
    pub fn new(algorithm: Algorithm, bytes: Vec<u8>) -> Result<Self> {
        let well_formed = bytes.len() == algorithm.key_len()
            && (algorithm == Algorithm::Ed25519 || bytes.first() == Some(&0x04));
        if !well_formed {
            return Err(Error::Config(format!(
                "audit public key is not an {algorithm} key ({} bytes)",
                bytes.len()
            )));
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let id = format!(
            "{}:{}",
            algorithm.prefix(),
            hex::encode(&digest.as_ref()[..8])
        );
        Ok(Self {
            algorithm,
            bytes,
            id,
        })
    }

    /// An Ed25519 key from its 32 bytes.
    pub fn ed25519(bytes: Vec<u8>) -> Result<Self> {
        Self::new(Algorithm::Ed25519, bytes)
    }

    /// Reads what `checkpoint.pub` and `esm audit key` hold: base64 of the 32 bytes of an
    /// Ed25519 key (the format esm always wrote), `ed25519:BASE64`, `p256:BASE64` of the
    /// uncompressed point, or a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) of either algorithm,
    /// as `openssl pkey -pubout`, `pkcs11-tool --read-object` and Key Vault's key download
    /// give it, so the verifier's copy can come from the HSM or vault rather than this host.
    pub fn from_text(text: &str) -> Result<Self> {
        if text.len() > MAX_TEXT {
            return Err(Error::Config(format!(
                "audit public key is longer than {MAX_TEXT} bytes"
            )));
        }
        let text = text.trim();
        let b64 = |s: &str| {
            STANDARD
                .decode(s.trim())
                .map_err(|e| Error::Config(format!("audit public key is not base64: {e}")))
        };
        if text.starts_with("-----BEGIN") {
            return Self::from_spki(&b64(&pem_body(text)?)?);
        }
        match text.split_once(':') {
            Some((prefix, rest)) => {
                let alg = Algorithm::parse(prefix).ok_or_else(|| {
                    Error::Config(format!(
                        "audit public key of unknown algorithm {prefix:?} (expected ed25519 or p256)"
                    ))
                })?;
                Self::new(alg, b64(rest)?)
            }
            None => Self::ed25519(b64(text)?),
        }
    }

    /// A DER SubjectPublicKeyInfo of an Ed25519 or P-256 key.
    pub fn from_spki(der: &[u8]) -> Result<Self> {
        for alg in [Algorithm::Ed25519, Algorithm::EcdsaP256] {
            if let Some(key) = der.strip_prefix(alg.spki_prefix()) {
                return Self::new(alg, key.to_vec());
            }
        }
        Err(Error::Config(
            "audit public key is neither an Ed25519 nor a P-256 SubjectPublicKeyInfo".into(),
        ))
    }

    /// The text `checkpoint.pub` holds: Ed25519 keys as bare base64, as esm always wrote them
    /// (older esm versions read them still); P-256 keys with their `p256:` prefix.
    pub fn to_text(&self) -> String {
        match self.algorithm {
            Algorithm::Ed25519 => format!("{}\n", STANDARD.encode(&self.bytes)),
            Algorithm::EcdsaP256 => format!("p256:{}\n", STANDARD.encode(&self.bytes)),
        }
    }

    /// The key as PEM SubjectPublicKeyInfo, for `openssl` and other tools.
    pub fn to_pem(&self) -> String {
        let mut der = self.algorithm.spki_prefix().to_vec();
        der.extend_from_slice(&self.bytes);
        let b64 = STANDARD.encode(der);
        let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END PUBLIC KEY-----\n");
        out
    }

    /// Whether `key_id`, as recorded next to a signature, names this key.
    pub fn names(&self, key_id: &str) -> bool {
        key_id == self.id
            || (self.algorithm == Algorithm::Ed25519
                && self.id.strip_prefix("ed25519:") == Some(key_id))
    }

    /// Whether `signature` over `message` was made by this key, named `key_id`.
    pub fn verifies(&self, key_id: &str, message: &[u8], signature: &[u8]) -> bool {
        let alg: &'static dyn ring::signature::VerificationAlgorithm = match self.algorithm {
            Algorithm::Ed25519 => &ED25519,
            Algorithm::EcdsaP256 => &ECDSA_P256_SHA256_ASN1,
        };
        self.names(key_id)
            && UnparsedPublicKey::new(alg, &self.bytes)
                .verify(message, signature)
                .is_ok()
    }
}

/// The base64 between the BEGIN and END lines of a PEM `PUBLIC KEY`.
fn pem_body(text: &str) -> Result<String> {
    let bad = |why: &str| Error::Config(format!("audit public key PEM: {why}"));
    let mut lines = text.lines().map(str::trim);
    if lines.next() != Some("-----BEGIN PUBLIC KEY-----") {
        return Err(bad("expected -----BEGIN PUBLIC KEY-----"));
    }
    let mut body = String::new();
    for line in lines {
        if line == "-----END PUBLIC KEY-----" {
            return Ok(body);
        }
        body.push_str(line);
    }
    Err(bad("no -----END PUBLIC KEY----- line"))
}

#[cfg(test)]
#[path = "public_key_tests.rs"]
mod tests;
