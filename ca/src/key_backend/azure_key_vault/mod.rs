//! The Azure Key Vault key backend: CA keys are made in a vault and never leave it; each
//! certificate signature is one `sign` call of the keys REST API on the certificate's digest.
//!
//! A key id in the CA state is `NAME/VERSION`, so a CA always signs with the exact key version
//! its certificate holds, even when someone adds a version to the vault key later.

mod auth;
mod challenge;
mod client;
mod retry;
mod signature;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

pub use self::auth::{ClientSecret, Credential};
use self::client::{Call, VaultClient};
use super::{KeyAlgorithm, KeyBackend, KeyStore};
use crate::error::{Error, Result};

const BACKEND: &str = "azure-key-vault";
/// Where Entra ID issues tokens in Azure's public cloud.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// The instance metadata service's token endpoint (managed identity).
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// Which identity esm uses towards the vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// The client secret when `AZURE_CLIENT_SECRET` is set, otherwise the managed identity.
    Auto,
    ClientSecret,
    ManagedIdentity,
}

impl AuthMethod {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "client-secret" => Some(Self::ClientSecret),
            "managed-identity" => Some(Self::ManagedIdentity),
            _ => None,
        }
    }
}

/// `[ca.azure_key_vault]`.
#[derive(Debug, Clone)]
pub struct AzureKeyVaultConfig {
    /// `https://NAME.vault.azure.net`.
    pub vault_url: String,
    /// Put before the CA's own key ids to make vault key names (`esm-root-…`).
    pub key_prefix: String,
    /// A PEM bundle of CAs to trust instead of the public web roots (private endpoints).
    pub ca_file: Option<PathBuf>,
    pub auth: AuthMethod,
    /// Overrides `AZURE_AUTHORITY_HOST` and the public cloud's login host.
    pub authority_host: Option<String>,
    pub imds_endpoint: String,
    /// Refuse a challenge whose resource is not the vault's domain (off only for test stands
    /// whose host is not under `vault.azure.net`).
    pub verify_challenge_resource: bool,
}

/// The host of an `https://` vault URL; anything else is refused, since the vault gets a
/// bearer token with every request.
pub fn vault_host(url: &str) -> std::result::Result<String, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("vault URL {url:?} must start with https://"))?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "vault URL {url:?} must be https://HOST[:PORT] with no path"
        ));
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, rest)) => (h, rest.strip_prefix(':')),
            None => return Err(format!("vault URL {url:?} has a bad IPv6 address")),
        },
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if host.is_empty() || port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Err(format!("vault URL {url:?} has a bad host or port"));
    }
    Ok(host.to_ascii_lowercase())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 127
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn fail(reason: impl Into<String>) -> Error {
    Error::KeyBackend {
        backend: BACKEND,
        reason: reason.into(),
    }
}

/// CA keys in one vault.
#[derive(Debug)]
pub struct AzureKeyVaultStore {
    client: Arc<VaultClient>,
    key_prefix: String,
}

impl AzureKeyVaultStore {
    /// Checks the configuration and picks the credential from `env` (`AZURE_TENANT_ID`,
    /// `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`, `AZURE_AUTHORITY_HOST`). Sends nothing yet.
    pub fn new(cfg: &AzureKeyVaultConfig, env: &BTreeMap<String, String>) -> Result<Self> {
        let host = vault_host(&cfg.vault_url)
            .map_err(|e| Error::Config(format!("ca.azure_key_vault.{e}")))?;
        if !cfg.key_prefix.is_empty() && !valid_name(&cfg.key_prefix) {
            return Err(Error::Config(format!(
                "ca.azure_key_vault.key_prefix {:?}: only letters, digits and '-'",
                cfg.key_prefix
            )));
        }
        let roots = cfg.ca_file.as_deref().map(read_roots).transpose()?;
        let credential = credential(cfg, env)?;
        tracing::debug!(vault.url = %cfg.vault_url, auth = ?credential, "Key Vault backend configured");
        Ok(Self {
            client: Arc::new(VaultClient::new(
                &cfg.vault_url,
                host,
                credential,
                cfg.verify_challenge_resource,
                roots,
            )),
            key_prefix: cfg.key_prefix.clone(),
        })
    }

    /// Proves the vault is reachable and the identity may read keys, without making one:
    /// `esm init` calls this before it writes anything.
    pub fn check_access(&self) -> Result<()> {
        let name = format!("{}access-check", self.key_prefix);
        self.client
            .call_maybe(&Call {
                method: "GET",
                path: format!("/keys/{name}"),
                body: None,
                key: &name,
            })
            .map(|_| ())
    }

    fn fetch(&self, name: &str, version: &str, alg: KeyAlgorithm) -> Result<Arc<dyn KeyBackend>> {
        let bundle = self.client.call(&Call {
            method: "GET",
            path: format!("/keys/{name}/{version}"),
            body: None,
            key: name,
        })?;
        self.key_from_bundle(name, &bundle, alg)
    }

    fn key_from_bundle(
        &self,
        name: &str,
        bundle: &serde_json::Value,
        alg: KeyAlgorithm,
    ) -> Result<Arc<dyn KeyBackend>> {
        let jwk = bundle.get("key").ok_or_else(|| {
            fail(format!(
                "{}: key {name}: the reply holds no key",
                self.client.vault_url()
            ))
        })?;
        let kid = jwk.get("kid").and_then(|v| v.as_str()).unwrap_or("");
        let version = kid
            .strip_prefix(self.client.vault_url())
            .and_then(|p| p.strip_prefix(&format!("/keys/{name}/")))
            .filter(|v| valid_name(v))
            .ok_or_else(|| {
                fail(format!(
                    "{}: key {name}: the reply names another key ({kid:?})",
                    self.client.vault_url()
                ))
            })?;
        let public = signature::public_key_raw(jwk, alg)
            .map_err(|e| fail(format!("{}: key {name}: {e}", self.client.vault_url())))?;
        Ok(Arc::new(AzureKey {
            client: self.client.clone(),
            name: name.to_owned(),
            version: version.to_owned(),
            key_id: format!("{name}/{version}"),
            alg,
            public,
        }))
    }
}

fn read_roots(path: &std::path::Path) -> Result<Vec<ureq::tls::Certificate<'static>>> {
    let pem = std::fs::read(path).map_err(Error::io(path))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "ca.azure_key_vault.ca_file {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

fn credential(cfg: &AzureKeyVaultConfig, env: &BTreeMap<String, String>) -> Result<Credential> {
    let var = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
    let method = match cfg.auth {
        AuthMethod::Auto if var("AZURE_CLIENT_SECRET").is_some() => AuthMethod::ClientSecret,
        AuthMethod::Auto => AuthMethod::ManagedIdentity,
        m => m,
    };
    if method == AuthMethod::ManagedIdentity {
        return Ok(Credential::ManagedIdentity {
            endpoint: cfg.imds_endpoint.clone(),
            client_id: var("AZURE_CLIENT_ID"),
        });
    }
    let need = |k: &str| {
        var(k).ok_or_else(|| {
            Error::Config(format!("ca.azure_key_vault: client-secret auth needs {k}"))
        })
    };
    let authority_host = cfg
        .authority_host
        .clone()
        .or_else(|| var("AZURE_AUTHORITY_HOST"))
        .unwrap_or_else(|| DEFAULT_AUTHORITY_HOST.to_owned());
    if !authority_host.starts_with("https://") {
        return Err(Error::Config(format!(
            "authority host {authority_host:?} must be https:// (the client secret is sent to it)"
        )));
    }
    let secret = ClientSecret::new(need("AZURE_CLIENT_SECRET")?)
        .ok_or_else(|| Error::Config("AZURE_CLIENT_SECRET is empty".into()))?;
    Ok(Credential::ClientSecret {
        authority_host,
        tenant: need("AZURE_TENANT_ID")?,
        client_id: need("AZURE_CLIENT_ID")?,
        secret,
    })
}

impl KeyStore for AzureKeyVaultStore {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    /// A read-only probe that the vault answers and the identity may use it.
    fn check(&self) -> Result<()> {
        self.check_access()
    }

    fn generate(&self, key_id: &str, alg: KeyAlgorithm) -> Result<Arc<dyn KeyBackend>> {
        let name = format!("{}{key_id}", self.key_prefix);
        if !valid_name(&name) {
            return Err(Error::Bug(format!("unsafe Key Vault key name {name:?}")));
        }
        let existing = self.client.call_maybe(&Call {
            method: "GET",
            path: format!("/keys/{name}"),
            body: None,
            key: &name,
        })?;
        if existing.is_some() {
            return Err(fail(format!(
                "{}: key {name} already exists; esm only signs with keys it made",
                self.client.vault_url()
            )));
        }
        let bundle = self.client.call(&Call {
            method: "POST",
            path: format!("/keys/{name}/create"),
            body: Some(signature::create_body(alg)),
            key: &name,
        })?;
        let key = self.key_from_bundle(&name, &bundle, alg)?;
        tracing::info!(vault.url = %self.client.vault_url(), key.id = key.key_id(), key.algorithm = %alg, "CA key made in Key Vault");
        Ok(key)
    }

    fn load(&self, key_id: &str, alg: KeyAlgorithm) -> Result<Arc<dyn KeyBackend>> {
        let (name, version) = key_id
            .split_once('/')
            .filter(|(n, v)| valid_name(n) && valid_name(v))
            .ok_or_else(|| Error::CorruptState {
                path: PathBuf::from("state.json"),
                reason: format!("{key_id:?} is not a Key Vault key NAME/VERSION"),
            })?;
        self.fetch(name, version, alg)
    }

    fn import_pkcs8(&self, key_id: &str, _pkcs8_der: &[u8]) -> Result<Arc<dyn KeyBackend>> {
        Err(Error::Config(format!(
            "importing an upstream CA key ({key_id}) into Azure Key Vault is not supported: \
             use the file backend for an upstream CA"
        )))
    }
}

/// One key version in the vault. Holds its public key only.
pub struct AzureKey {
    client: Arc<VaultClient>,
    name: String,
    version: String,
    key_id: String,
    alg: KeyAlgorithm,
    public: Vec<u8>,
}

impl KeyBackend for AzureKey {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn algorithm(&self) -> KeyAlgorithm {
        self.alg
    }

    fn public_key_raw(&self) -> &[u8] {
        &self.public
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let started = std::time::Instant::now();
        let digest = signature::digest(self.alg, msg);
        let reply = self.client.call(&Call {
            method: "POST",
            path: format!("/keys/{}/{}/sign", self.name, self.version),
            body: Some(serde_json::json!({
                "alg": signature::jws_alg(self.alg),
                "value": URL_SAFE_NO_PAD.encode(digest),
            })),
            key: &self.name,
        })?;
        let raw = reply
            .get("value")
            .and_then(|v| v.as_str())
            .and_then(|v| URL_SAFE_NO_PAD.decode(v.trim_end_matches('=')).ok())
            .ok_or_else(|| {
                fail(format!(
                    "{}: key {}: the sign reply holds no signature",
                    self.client.vault_url(),
                    self.key_id
                ))
            })?;
        let sig = signature::signature_for_x509(self.alg, &raw).map_err(|e| {
            fail(format!(
                "{}: key {}: {e}",
                self.client.vault_url(),
                self.key_id
            ))
        })?;
        if !signature::verify(self.alg, &self.public, msg, &sig) {
            return Err(fail(format!(
                "{}: key {}: the vault's signature does not verify under the key's public key",
                self.client.vault_url(),
                self.key_id
            )));
        }
        tracing::debug!(key.id = %self.key_id, sign.us = started.elapsed().as_micros() as u64, "signed in Key Vault");
        Ok(sig)
    }
}

#[cfg(test)]
mod tests;
