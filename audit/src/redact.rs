//! Values that must be recorded but never stored in clear (sensitive headers, tokens) are
//! stored as HMAC-SHA256 under a per-installation key, as Vault's audit devices do: equal
//! values can still be matched, but not read back.

use std::path::Path;

use ring::hmac;

use crate::error::{Error, Result};

pub struct Redactor {
    key: hmac::Key,
}

impl Redactor {
    pub fn from_secret(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// Loads `dir/hmac.key`, making it (32 random bytes, 0600) on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        Self::open(dir, true)
    }

    /// Loads `dir/hmac.key` of a log that already holds events. A new key there would
    /// silently stop equal values matching across the change, so a missing key is an error
    /// to be fixed by restoring it, not a key to make.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::open(dir, false)
    }

    fn open(dir: &Path, create: bool) -> Result<Self> {
        let path = dir.join("hmac.key");
        match std::fs::read(&path) {
            Ok(secret) if secret.len() >= 32 => Ok(Self::from_secret(&secret)),
            Ok(_) => Err(Error::Config(format!("{} is too short", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => {
                Err(Error::Config(format!(
                    "{} is missing but the audit log holds events redacted under it: restore \
                     the key from a backup",
                    path.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
                    .map_err(|_| Error::Bug("random number generator failed".into()))?;
                crate::key_dir::create_private_dir(dir)?;
                crate::durable_file::create_new(&path, &secret, 0o600).map_err(Error::io(&path))?;
                Ok(Self::from_secret(&secret))
            }
            Err(e) => Err(Error::io(&path)(e)),
        }
    }

    /// `hmac-sha256:<hex>` of `value`.
    pub fn redact(&self, value: &str) -> String {
        let tag = hmac::sign(&self.key, value.as_bytes());
        format!("hmac-sha256:{}", hex::encode(tag.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_match_and_the_value_is_not_in_the_output() {
        let r = Redactor::from_secret(b"0123456789abcdef0123456789abcdef");
        let a = r.redact("Bearer secret-token");
        assert_eq!(a, r.redact("Bearer secret-token"));
        assert_ne!(a, r.redact("Bearer other"));
        assert!(a.starts_with("hmac-sha256:") && !a.contains("secret-token"));
        let other = Redactor::from_secret(b"another key, another installation");
        assert_ne!(a, other.redact("Bearer secret-token"));
    }

    #[test]
    fn a_missing_key_of_a_log_with_events_is_not_remade() {
        let dir = tempfile::tempdir().unwrap();
        let err = Redactor::load(dir.path()).err().unwrap();
        assert!(err.to_string().contains("restore the key"), "{err}");
        assert!(!dir.path().join("hmac.key").exists());
        let made = Redactor::load_or_create(dir.path()).unwrap().redact("x");
        assert_eq!(Redactor::load(dir.path()).unwrap().redact("x"), made);
    }

    #[test]
    fn key_file_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = Redactor::load_or_create(dir.path()).unwrap().redact("x");
        let b = Redactor::load_or_create(dir.path()).unwrap().redact("x");
        assert_eq!(a, b);
    }
}
