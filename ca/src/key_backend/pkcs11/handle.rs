//! A private key in the token as the signers hold it: its token, label and `CKA_ID`, and its
//! object handle on the current connection, found again after a reconnect.

use std::sync::{Arc, Mutex};

use cryptoki::object::{ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::encoding::{key_cka_id, key_label};
use super::token::{Failure, Token};
use super::Pkcs11KeyStore;
use crate::error::Error;

pub(super) struct PrivateKeyRef {
    pub(super) token: Arc<Token>,
    pub(super) key_id: String,
    cka_id: Vec<u8>,
    /// The handle on connection `.0`.
    cached: Mutex<Option<(u64, ObjectHandle)>>,
}

impl PrivateKeyRef {
    pub(super) fn new(token: Arc<Token>, key_id: &str) -> Self {
        Self {
            token,
            key_id: key_id.to_owned(),
            cka_id: key_cka_id(key_id),
            cached: Mutex::new(None),
        }
    }

    /// The key's handle in session `s` of connection `generation`.
    pub(super) fn handle(&self, s: &Session, generation: u64) -> Result<ObjectHandle, Failure> {
        if let Some((g, h)) = self.cached.lock().ok().and_then(|g| *g) {
            if g == generation {
                return Ok(h);
            }
        }
        let h =
            Pkcs11KeyStore::find(s, ObjectClass::PRIVATE_KEY, &self.cka_id)?.ok_or_else(|| {
                // The key was found when the CA loaded it: its loss since is the token's
                // (or its administrator's) doing at run time, not esm's configuration.
                Failure::Esm(Error::KeyBackend {
                    backend: super::token::BACKEND,
                    reason: format!(
                        "PKCS#11 token {:?} no longer holds key {}",
                        self.token.label,
                        key_label(&self.key_id)
                    ),
                })
            })?;
        if let Ok(mut g) = self.cached.lock() {
            *g = Some((generation, h));
        }
        Ok(h)
    }
}
