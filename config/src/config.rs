//! The whole of esm.toml: the top-level keys, `[ca]` and `[admin]`, and the sections each
//! parsed in their own module.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use esm_ca::key_backend::KeyAlgorithm;
use esm_identity::TrustDomain;
use serde::Deserialize;

use crate::env::apply_env;
use crate::values::duration;
use crate::Error;

/// The file `esm init` writes; the defaults in it are part of esm's interface.
pub fn default_toml(
    trust_domain: &TrustDomain,
    algorithm: KeyAlgorithm,
    backend: &str,
    audit_key_backend: &str,
) -> String {
    format!(
        r#"# esm configuration, written by `esm init`.
# Every key can be overridden by an environment variable named ESM_<SECTION>_<KEY>,
# e.g. ESM_CA_SVID_MAX_TTL=12h or ESM_ADMIN_LISTEN=127.0.0.1:9290.
# Durations: 90s, 10m, 1h, 7d. Relative paths are relative to this file's directory.

# The SPIFFE trust domain this CA issues for. Changing it needs a new CA (`esm init`).
trust_domain = "{trust_domain}"

[ca]
# Where CA keys live: "file" (PKCS#8 files in ca/keys, mode 0600) or "pkcs11" (an HSM
# token, see [ca.pkcs11]).
key_backend = "{backend}"
# Where the short-lived signing CA keys live, if not with the root: "file" keeps them local
# (fast issuance) while the root stays in the HSM. Empty: same as key_backend.
signing_key_backend = ""
# Key algorithm of new roots and intermediates: ec-p256, ec-p384 or rsa-3072.
key_algorithm = "{algorithm}"
# Algorithm of the keys esm makes for workloads.
svid_key_algorithm = "ec-p256"
# Lifetime of a new self-made root and of each intermediate signing CA. A successor is
# prepared at half of the active one's life and takes over at five sixths.
root_ttl = "1825d"
intermediate_ttl = "7d"
# SVID lifetime when none is asked for, and the most any SVID gets.
svid_default_ttl = "1h"
svid_max_ttl = "24h"
# If this environment variable is set when keys are made, key files are encrypted with it,
# and it must be set to use them.
key_passphrase_env = "ESM_CA_KEY_PASSPHRASE"

[admin]
# /healthz, /readyz and /metrics (Prometheus).
listen = "127.0.0.1:9190"

[telemetry]
# Log lines as "text", or "json": one object per line, fields under their dotted names
# (spiffe.id, policy.set). ESM_LOG still picks the levels.
log_format = "text"
# Export spans (Check, SDS pushes, issuance, audit commits) over OTLP/gRPC to a collector,
# "http://host:port" (plain HTTP/2: a collector on the node). Empty: no export. Restart-only.
otlp_endpoint = ""

[audit]
# Where the tamper-evident audit log lives: sqlite://PATH (relative to this directory) or
# postgres://user@host:5432/db.
url = "sqlite://audit.db"
# PostgreSQL only: the schema for esm's tables (empty: the connection's default).
schema = ""
# When producers outrun the disk: "block" (they wait; fail closed) or "drop" (drop, count,
# and record an audit.gap event).
queue_full = "block"
queue_capacity = 65536
# A signed Merkle checkpoint after this many events or this much time, whichever first.
checkpoint_every = 10000
checkpoint_interval = "60s"
# The audit writer's nice value (0-19): above 0 it yields the CPU to the request path.
writer_nice = 10
# This node's id in every event (empty: the host name).
node = ""
# Where the key that signs checkpoints lives: "file" (Ed25519, audit/checkpoint.key, 0600),
# "pkcs11" (the token of [ca.pkcs11]; Ed25519 if the token has CKM_EDDSA, else ECDSA P-256)
# or "azure-key-vault" (the vault of [ca.azure_key_vault]; ECDSA P-256). Outside a file,
# nobody on this host can copy the key to re-sign a rewritten log. Chosen when the log is
# made (`esm init --audit-key-backend`); the public key is always audit/checkpoint.pub.
key_backend = "{audit_key_backend}"
"#
    ) + crate::authz::DEFAULT_TOML
        + crate::agent::DEFAULT_TOML
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    trust_domain: String,
    #[serde(default)]
    ca: RawCa,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    audit: crate::audit::RawAudit,
    #[serde(default)]
    authz: crate::authz::RawAuthz,
    #[serde(default)]
    agent: crate::agent::RawAgent,
    #[serde(default)]
    telemetry: crate::telemetry::RawTelemetry,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCa {
    key_backend: String,
    signing_key_backend: String,
    pkcs11: Option<crate::key_backends::RawPkcs11>,
    key_algorithm: String,
    svid_key_algorithm: String,
    root_ttl: String,
    intermediate_ttl: String,
    svid_default_ttl: String,
    svid_max_ttl: String,
    key_passphrase_env: String,
    azure_key_vault: Option<crate::azure_key_vault::RawAzureKeyVault>,
}

impl Default for RawCa {
    fn default() -> Self {
        Self {
            key_backend: "file".into(),
            signing_key_backend: String::new(),
            pkcs11: None,
            key_algorithm: "ec-p256".into(),
            svid_key_algorithm: "ec-p256".into(),
            root_ttl: "1825d".into(),
            intermediate_ttl: "7d".into(),
            svid_default_ttl: "1h".into(),
            svid_max_ttl: "24h".into(),
            key_passphrase_env: "ESM_CA_KEY_PASSPHRASE".into(),
            azure_key_vault: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAdmin {
    listen: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9190".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CaConfig {
    pub key_backends: crate::key_backends::KeyBackends,
    pub key_algorithm: KeyAlgorithm,
    pub svid_key_algorithm: KeyAlgorithm,
    pub root_ttl: time::Duration,
    pub intermediate_ttl: time::Duration,
    pub svid_default_ttl: time::Duration,
    pub svid_max_ttl: time::Duration,
    pub key_passphrase_env: String,
    /// `[ca.azure_key_vault]`, checked; present when that backend is configured.
    pub azure_key_vault: Option<esm_ca::key_backend::azure_key_vault::AzureKeyVaultConfig>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub trust_domain: TrustDomain,
    pub ca: CaConfig,
    pub admin_listen: SocketAddr,
    pub audit: crate::AuditConfig,
    pub authz: crate::authz::AuthzConfig,
    pub agent: crate::agent::AgentConfig,
    pub telemetry: crate::telemetry::TelemetryConfig,
}

impl Config {
    pub fn ca_dir(&self) -> PathBuf {
        self.data_dir.join("ca")
    }

    pub fn rotation_policy(&self) -> esm_ca::rotation::RotationPolicy {
        esm_ca::rotation::RotationPolicy {
            root_ttl: self.ca.root_ttl,
            intermediate_ttl: self.ca.intermediate_ttl,
            key_algorithm: self.ca.key_algorithm,
            ..Default::default()
        }
    }

    /// Audit keys (checkpoint signing key, HMAC key) live here.
    pub fn audit_dir(&self) -> PathBuf {
        self.data_dir.join("audit")
    }

    pub fn issuance_policy(&self) -> esm_ca::issuer::IssuancePolicy {
        esm_ca::issuer::IssuancePolicy {
            default_ttl: self.ca.svid_default_ttl,
            max_ttl: self.ca.svid_max_ttl,
            leaf_algorithm: self.ca.svid_key_algorithm,
        }
    }

    /// Reads `path` and applies the `ESM_…` overrides found in `env`.
    pub fn load(path: &Path, env: &BTreeMap<String, String>) -> crate::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        let data_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let data_dir = if data_dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            data_dir
        };
        Self::parse(&text, data_dir, env).map_err(|e| Error::InFile {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }

    pub fn parse(
        text: &str,
        data_dir: PathBuf,
        env: &BTreeMap<String, String>,
    ) -> crate::Result<Self> {
        let mut table: toml::Table = text.parse().map_err(Error::Syntax)?;
        apply_env(&mut table, env)?;
        let raw: RawConfig = table.try_into().map_err(Error::Shape)?;
        let alg = |what: &str, v: &str| {
            KeyAlgorithm::parse(v).ok_or_else(|| {
                Error::expected(what, format!("{v:?}"), "one of ec-p256, ec-p384, rsa-3072")
            })
        };
        let key_backends = crate::key_backends::parse(
            &raw.ca.key_backend,
            &raw.ca.signing_key_backend,
            &raw.audit.key_backend,
            raw.ca.pkcs11,
            &data_dir,
        )?;
        let azure_key_vault =
            if key_backends.uses(crate::key_backends::KeyBackendKind::AzureKeyVault) {
                Some(crate::azure_key_vault::parse(
                    raw.ca.azure_key_vault.unwrap_or_default(),
                    &data_dir,
                )?)
            } else {
                None
            };
        let ca = CaConfig {
            azure_key_vault,
            key_backends,
            key_algorithm: alg("ca.key_algorithm", &raw.ca.key_algorithm)?,
            svid_key_algorithm: alg("ca.svid_key_algorithm", &raw.ca.svid_key_algorithm)?,
            root_ttl: duration("ca.root_ttl", &raw.ca.root_ttl)?,
            intermediate_ttl: duration("ca.intermediate_ttl", &raw.ca.intermediate_ttl)?,
            svid_default_ttl: duration("ca.svid_default_ttl", &raw.ca.svid_default_ttl)?,
            svid_max_ttl: duration("ca.svid_max_ttl", &raw.ca.svid_max_ttl)?,
            key_passphrase_env: raw.ca.key_passphrase_env,
        };
        if ca.svid_default_ttl > ca.svid_max_ttl {
            return Err(Error::rule(
                "ca.svid_default_ttl",
                "ca.svid_default_ttl is longer than ca.svid_max_ttl",
            ));
        }
        if ca.intermediate_ttl >= ca.root_ttl {
            return Err(Error::rule(
                "ca.intermediate_ttl",
                "ca.intermediate_ttl must be shorter than ca.root_ttl",
            ));
        }
        let audit = crate::audit::parse(raw.audit, &data_dir)?;
        let authz = crate::authz::parse(raw.authz, &data_dir)?;
        let agent = crate::agent::parse(raw.agent, &data_dir)?;
        let telemetry = crate::telemetry::parse(raw.telemetry)?;
        let trust_domain = TrustDomain::parse(&raw.trust_domain)
            .map_err(|e| Error::bad_value("trust_domain", format!("{:?}", raw.trust_domain), e))?;
        crate::authz_tls::check_trust_domain(authz.tls.as_ref(), &trust_domain)?;
        Ok(Self {
            telemetry,
            audit,
            authz,
            agent,
            data_dir,
            trust_domain,
            ca,
            admin_listen: raw.admin.listen.parse().map_err(|e| {
                Error::bad_value("admin.listen", format!("{:?}", raw.admin.listen), e)
            })?,
        })
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
