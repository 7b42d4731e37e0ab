//! Opens the configured key backends and the CA store over them.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use esm_ca::key_backend::file::{FileKeyStore, Passphrase};
use esm_ca::key_backend::pkcs11::{Pin, Pkcs11Config, Pkcs11KeyStore};
use esm_ca::key_backend::KeyStore;
use esm_ca::store::CaStore;

use crate::exit::usage;
use esm_config::key_backends::{KeyBackendKind, Pkcs11Settings, PKCS11_PIN_ENV};
use esm_config::Config;

/// The PIN from `ESM_PKCS11_PIN`, else from the PIN file's first line.
fn pkcs11_pin(p: &Pkcs11Settings, env: &BTreeMap<String, String>) -> anyhow::Result<Pin> {
    if let Some(pin) = env.get(PKCS11_PIN_ENV).and_then(|v| Pin::new(v)) {
        return Ok(pin);
    }
    let Some(file) = &p.pin_file else {
        return Err(usage(format!(
            "PKCS#11 token {:?}: no PIN: set {PKCS11_PIN_ENV} or ca.pkcs11.pin_file",
            p.token_label
        )));
    };
    let text = super::read_text("ca.pkcs11.pin_file ", file, 1024)?;
    Pin::new(text.lines().next().unwrap_or_default())
        .ok_or_else(|| usage(format!("ca.pkcs11.pin_file {}: empty", file.display())))
}

/// The token of `[ca.pkcs11]` (nothing loaded yet), with the PIN from the environment or
/// the PIN file.
pub fn pkcs11_store(
    cfg: &Config,
    env: &BTreeMap<String, String>,
) -> anyhow::Result<Pkcs11KeyStore> {
    let p = cfg
        .ca
        .key_backends
        .pkcs11
        .as_ref()
        .context("no [ca.pkcs11] settings")?;
    Ok(Pkcs11KeyStore::new(Pkcs11Config {
        module: p.module.clone(),
        token_label: p.token_label.clone(),
        pin: pkcs11_pin(p, env)?,
    }))
}

fn open(
    kind: KeyBackendKind,
    cfg: &Config,
    env: &BTreeMap<String, String>,
) -> anyhow::Result<Arc<dyn KeyStore>> {
    Ok(match kind {
        KeyBackendKind::File => {
            let passphrase = env
                .get(&cfg.ca.key_passphrase_env)
                .and_then(|p| Passphrase::new(p.as_bytes()));
            Arc::new(FileKeyStore::new(cfg.ca_dir().join("keys"), passphrase))
        }
        KeyBackendKind::Pkcs11 => Arc::new(pkcs11_store(cfg, env)?),
        KeyBackendKind::AzureKeyVault => Arc::new(super::azure_key_vault(cfg, env)?),
    })
}

/// The CA store with its root and signing key backends (one store when they are the same).
pub fn ca_store(cfg: &Config, env: &BTreeMap<String, String>) -> anyhow::Result<CaStore> {
    let b = &cfg.ca.key_backends;
    let root = open(b.root, cfg, env)?;
    let store = CaStore::new(cfg.ca_dir(), root);
    Ok(if b.signing == b.root {
        store
    } else {
        store.with_signing_keys(open(b.signing, cfg, env)?)
    })
}

/// One line per key role for `esm ca show`: which backend, and where in it; the audit
/// checkpoint key's line too.
pub fn describe(cfg: &Config) -> Vec<String> {
    let b = &cfg.ca.key_backends;
    let place = |kind: KeyBackendKind| match (kind, &b.pkcs11) {
        (KeyBackendKind::File, _) => format!("file ({})", cfg.ca_dir().join("keys").display()),
        (KeyBackendKind::Pkcs11, Some(p)) => format!(
            "pkcs11 (token {:?}, module {})",
            p.token_label,
            p.module.display()
        ),
        (KeyBackendKind::Pkcs11, None) => "pkcs11".into(),
        (KeyBackendKind::AzureKeyVault, _) => match &cfg.ca.azure_key_vault {
            Some(a) => format!("azure-key-vault ({})", a.vault_url),
            None => "azure-key-vault".into(),
        },
    };
    vec![
        format!("root keys     {}", place(b.root)),
        format!("signing keys  {}", place(b.signing)),
        crate::audit_key::describe(cfg),
    ]
}
