//! `ESM_…` environment variables laid over the file's table before it is parsed, so an
//! override is checked exactly as the same key in the file would be.

use std::collections::BTreeMap;

use crate::Error;

const SECTIONS: [&str; 6] = ["ca", "admin", "audit", "authz", "agent", "telemetry"];

/// `ESM_TRUST_DOMAIN` → `trust_domain`; `ESM_CA_SVID_MAX_TTL` → `[ca] svid_max_ttl`.
pub(crate) fn apply_env(
    table: &mut toml::Table,
    env: &BTreeMap<String, String>,
) -> crate::Result<()> {
    for (name, value) in env {
        let Some(key) = name.strip_prefix("ESM_") else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        // Variables that are not configuration keys (the passphrase, the PIN, ESM_LOG).
        if key == "ca_key_passphrase" || key == "log" || key == "pkcs11_pin" {
            continue;
        }
        if let Some(k) = key.strip_prefix(crate::azure_key_vault::ENV_PREFIX) {
            crate::azure_key_vault::apply_env(table, k, value)?;
            continue;
        }
        let section = SECTIONS.iter().find(|s| key.starts_with(&format!("{s}_")));
        match section {
            Some(s) => {
                let sub = table
                    .entry((*s).to_owned())
                    .or_insert_with(|| toml::Value::Table(Default::default()));
                let toml::Value::Table(sub) = sub else {
                    return Err(Error::NotATable {
                        section: (*s).to_owned(),
                    });
                };
                sub.insert(
                    key[s.len() + 1..].to_owned(),
                    toml::Value::String(value.clone()),
                );
            }
            None => {
                table.insert(key, toml::Value::String(value.clone()));
            }
        }
    }
    Ok(())
}
