//! The `[ca.azure_key_vault]` table of esm.toml: which vault holds the CA keys and how esm
//! authenticates to it. Credentials are not in the file: they come from the same environment
//! variables the Azure SDKs read, or from the managed identity.

use std::path::Path;

use esm_ca::key_backend::azure_key_vault::{
    vault_host, AuthMethod, AzureKeyVaultConfig, DEFAULT_IMDS_ENDPOINT,
};
use serde::Deserialize;

use crate::Error;

/// The table `esm init --key-backend azure-key-vault` appends to esm.toml.
pub fn toml_table(vault_url: &str) -> String {
    format!(
        r#"
[ca.azure_key_vault]
# The vault that makes and holds the CA keys; they never leave it. https only.
vault_url = "{vault_url}"
# Vault key names are this prefix followed by the CA's key id (letters, digits and '-').
key_prefix = "esm-"
# "auto": a service principal when AZURE_CLIENT_SECRET is set (with AZURE_TENANT_ID and
# AZURE_CLIENT_ID), else the managed identity. Or "client-secret" / "managed-identity".
auth = "auto"
# A PEM file of CAs to trust for the vault and the token endpoint instead of the public web
# roots (a private endpoint behind a TLS-inspecting proxy). Empty: the public roots.
ca_file = ""
# Entra ID login host (empty: AZURE_AUTHORITY_HOST, or https://login.microsoftonline.com).
authority_host = ""
# The managed identity's token endpoint.
imds_endpoint = "{DEFAULT_IMDS_ENDPOINT}"
# Refuse a 401 challenge that asks for a token of another service than the vault's domain.
verify_challenge_resource = true
"#
    )
}

/// `ESM_CA_AZURE_KEY_VAULT_CA_FILE` and the like set `[ca.azure_key_vault] ca_file`.
pub(crate) const ENV_PREFIX: &str = "ca_azure_key_vault_";

pub(crate) fn apply_env(table: &mut toml::Table, key: &str, value: &str) -> crate::Result<()> {
    let ca = table
        .entry("ca")
        .or_insert_with(|| toml::Value::Table(Default::default()));
    let toml::Value::Table(ca) = ca else {
        return Err(Error::NotATable {
            section: "ca".into(),
        });
    };
    let akv = ca
        .entry("azure_key_vault")
        .or_insert_with(|| toml::Value::Table(Default::default()));
    let toml::Value::Table(akv) = akv else {
        return Err(Error::NotATable {
            section: "ca.azure_key_vault".into(),
        });
    };
    akv.insert(key.to_owned(), toml::Value::String(value.to_owned()));
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAzureKeyVault {
    vault_url: String,
    key_prefix: String,
    auth: String,
    ca_file: String,
    authority_host: String,
    imds_endpoint: String,
    #[serde(deserialize_with = "crate::values::bool_or_string")]
    verify_challenge_resource: bool,
}

impl Default for RawAzureKeyVault {
    fn default() -> Self {
        Self {
            vault_url: String::new(),
            key_prefix: "esm-".into(),
            auth: "auto".into(),
            ca_file: String::new(),
            authority_host: String::new(),
            imds_endpoint: DEFAULT_IMDS_ENDPOINT.into(),
            verify_challenge_resource: true,
        }
    }
}

pub(crate) fn parse(raw: RawAzureKeyVault, data_dir: &Path) -> crate::Result<AzureKeyVaultConfig> {
    if raw.vault_url.is_empty() {
        return Err(Error::rule(
            "ca.azure_key_vault.vault_url",
            "ca.key_backend = \"azure-key-vault\" needs [ca.azure_key_vault] vault_url",
        ));
    }
    vault_host(&raw.vault_url).map_err(|e| Error::content("ca.azure_key_vault.vault_url", e))?;
    let auth = AuthMethod::parse(&raw.auth).ok_or_else(|| {
        Error::expected(
            "ca.azure_key_vault.auth",
            format!("{:?}", raw.auth),
            "auto, client-secret or managed-identity",
        )
    })?;
    Ok(AzureKeyVaultConfig {
        vault_url: raw.vault_url,
        key_prefix: raw.key_prefix,
        ca_file: (!raw.ca_file.is_empty()).then(|| data_dir.join(&raw.ca_file)),
        auth,
        authority_host: (!raw.authority_host.is_empty()).then_some(raw.authority_host),
        imds_endpoint: raw.imds_endpoint,
        verify_challenge_resource: raw.verify_challenge_resource,
    })
}
