//! Which key store holds which CA key: roots in one, signing CAs in the same or another
//! (`ca.signing_key_backend`), and what the audit log says about their custody.

use std::sync::Arc;

use super::CaStore;
use crate::error::{Error, Result};
use crate::key_backend::KeyStore;
use crate::state::{Authority, CaState};

impl CaStore {
    /// Keeps signing CA keys in `keys` instead (`ca.signing_key_backend`): e.g. the root in
    /// an HSM and the short-lived intermediate in a local file, so issuance runs at software
    /// speed while the key that anchors the trust domain never leaves the token.
    pub fn with_signing_keys(mut self, keys: Arc<dyn KeyStore>) -> Self {
        self.signing_keys = keys;
        self
    }

    /// The stores, root's first; the second only when it is another one.
    fn stores(&self) -> Vec<&Arc<dyn KeyStore>> {
        let mut v = vec![&self.keys];
        if !Arc::ptr_eq(&self.keys, &self.signing_keys) {
            v.push(&self.signing_keys);
        }
        v
    }

    /// Reaches every configured backend now (token login, …), before anything is written.
    pub fn check_keys(&self) -> Result<()> {
        self.stores().into_iter().try_for_each(|k| k.check())
    }

    /// Where each current key lives, for the audit log: `{"root": {...}, "signing": {...}}`
    /// for the active root and intermediate, plus `prepared_root`/`prepared_signing` while a
    /// rotation is under way. Each value is the backend's [`KeyStore::custody`].
    pub fn key_custody(&self, state: &CaState) -> Result<serde_json::Value> {
        let mut out = serde_json::Map::new();
        let slots = [
            ("root", state.active_root()),
            ("signing", state.active_intermediate()),
            ("prepared_root", state.prepared_root()),
            ("prepared_signing", state.prepared_intermediate()),
        ];
        for (name, a) in slots {
            if let Some(a) = a {
                out.insert(name.to_owned(), self.store_for(a)?.custody(&a.key_id)?);
            }
        }
        Ok(serde_json::Value::Object(out))
    }

    pub(super) fn store_for(&self, a: &Authority) -> Result<&Arc<dyn KeyStore>> {
        self.stores()
            .into_iter()
            .find(|k| k.backend_name() == a.key_backend)
            .ok_or_else(|| {
                Error::Config(format!(
                    "authority {} keeps its key in the {} backend, which is not configured",
                    a.id, a.key_backend
                ))
            })
    }
}
