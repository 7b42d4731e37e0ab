//! Which key backend holds which key: `ca.key_backend`, `ca.signing_key_backend`,
//! `audit.key_backend` (the audit checkpoint key) and each backend's own table
//! (`[ca.pkcs11]`, `[ca.azure_key_vault]`, shared by the CA and the audit key). A new backend
//! adds a [`KeyBackendKind`] variant, its table here, and one arm in
//! the binary's `commands::key_backends::open`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Error;

/// The environment variable the PKCS#11 user PIN is read from. Not a configuration key: the
/// PIN is never written to esm.toml or anywhere in the data dir.
pub const PKCS11_PIN_ENV: &str = "ESM_PKCS11_PIN";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyBackendKind {
    File,
    Pkcs11,
    AzureKeyVault,
}

impl KeyBackendKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Pkcs11 => "pkcs11",
            Self::AzureKeyVault => "azure-key-vault",
        }
    }

    fn parse(what: &str, s: &str) -> crate::Result<Self> {
        match s {
            "file" => Ok(Self::File),
            "pkcs11" => Ok(Self::Pkcs11),
            "azure-key-vault" => Ok(Self::AzureKeyVault),
            other => Err(Error::expected(
                what,
                format!("{other:?}"),
                "file, pkcs11 or azure-key-vault",
            )),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawPkcs11 {
    module: String,
    token_label: String,
    pin_file: String,
}

/// `[ca.pkcs11]`: the module and token; the PIN comes from [`PKCS11_PIN_ENV`] or `pin_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Settings {
    pub module: PathBuf,
    pub token_label: String,
    pub pin_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyBackends {
    /// Where roots live (and intermediates, unless `signing` says otherwise).
    pub root: KeyBackendKind,
    /// Where the signing (intermediate) CA keys live.
    ///
    /// `signing_key_backend = "file"` with `key_backend = "pkcs11"` is the trade-off of a
    /// busy CA: the root, which anchors the trust domain for years and signs only a few
    /// intermediates, never leaves the HSM; the short-lived (7-day) signing key is a local
    /// 0600 file, so SVID issuance runs at software speed and survives an HSM outage. A thief
    /// of the data dir gets a key that can mint SVIDs until that intermediate expires
    /// (bounded by `ca.intermediate_ttl`), not the root.
    pub signing: KeyBackendKind,
    /// Where the audit checkpoint key lives (`audit.key_backend`, default `file`). In the
    /// token or vault, nobody on the host can read it, so nobody can re-sign a rewritten log
    /// away from the token; the CA's keys may be elsewhere.
    pub audit: KeyBackendKind,
    pub pkcs11: Option<Pkcs11Settings>,
}

impl KeyBackends {
    pub fn uses(&self, kind: KeyBackendKind) -> bool {
        self.root == kind || self.signing == kind || self.audit == kind
    }
}

pub(crate) fn parse(
    key_backend: &str,
    signing_key_backend: &str,
    audit_key_backend: &str,
    pkcs11: Option<RawPkcs11>,
    data_dir: &Path,
) -> crate::Result<KeyBackends> {
    let root = KeyBackendKind::parse("ca.key_backend", key_backend)?;
    let signing = match signing_key_backend {
        "" => root,
        s => KeyBackendKind::parse("ca.signing_key_backend", s)?,
    };
    let audit = KeyBackendKind::parse("audit.key_backend", audit_key_backend)?;
    let mut out = KeyBackends {
        root,
        signing,
        audit,
        pkcs11: None,
    };
    if out.uses(KeyBackendKind::Pkcs11) {
        let raw = pkcs11.ok_or_else(|| {
            Error::rule(
                "ca.pkcs11",
                "key backend \"pkcs11\" needs a [ca.pkcs11] table",
            )
        })?;
        if raw.module.is_empty() || raw.token_label.is_empty() {
            return Err(Error::rule(
                "ca.pkcs11",
                "[ca.pkcs11] needs module and token_label",
            ));
        }
        let rel = |p: &str| data_dir.join(p);
        out.pkcs11 = Some(Pkcs11Settings {
            module: rel(&raw.module),
            token_label: raw.token_label,
            pin_file: (!raw.pin_file.is_empty()).then(|| rel(&raw.pin_file)),
        });
    }
    Ok(out)
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The `[ca.pkcs11]` table `esm init --key-backend pkcs11` appends to esm.toml.
pub fn pkcs11_toml(module: &Path, token_label: &str, pin_file: Option<&Path>) -> String {
    format!(
        r#"
[ca.pkcs11]
# The PKCS#11 module (shared library) and the label of the token holding the CA keys (and
# the audit checkpoint key, with audit.key_backend = "pkcs11").
module = {}
token_label = {}
# The user PIN is read from the environment variable {PKCS11_PIN_ENV}, else from this file
# (first line). It is never stored in this file or the data dir.
pin_file = {}
"#,
        toml_string(&module.display().to_string()),
        toml_string(token_label),
        toml_string(
            &pin_file
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn signing_backend_defaults_to_the_root_backend() {
        let raw = RawPkcs11 {
            module: "/m.so".into(),
            token_label: "t".into(),
            pin_file: "pin".into(),
        };
        let b = parse("pkcs11", "", "file", Some(raw), Path::new("/data")).unwrap();
        assert_eq!(b.signing, KeyBackendKind::Pkcs11);
        let p = b.pkcs11.unwrap();
        assert_eq!(p.pin_file.unwrap(), PathBuf::from("/data/pin"));
        assert_eq!(p.module, PathBuf::from("/m.so"));
    }

    #[test]
    fn pkcs11_without_its_table_is_refused() {
        let e = parse("pkcs11", "", "file", None, Path::new("/d")).unwrap_err();
        assert!(e.to_string().contains("[ca.pkcs11]"), "{e}");
        let e = parse("file", "pkcs11", "file", None, Path::new("/d")).unwrap_err();
        assert!(e.to_string().contains("[ca.pkcs11]"), "{e}");
        // The audit key in the token needs the same table, with the CA's keys in files.
        let e = parse("file", "", "pkcs11", None, Path::new("/d")).unwrap_err();
        assert!(e.to_string().contains("[ca.pkcs11]"), "{e}");
    }

    #[test]
    fn the_table_init_writes_parses_back() {
        let text = pkcs11_toml(Path::new("/usr/lib/x \"y\".so"), "tok", None);
        let t: toml::Table = text.parse().unwrap();
        let raw: RawPkcs11 = t["ca"]["pkcs11"].clone().try_into().unwrap();
        let b = parse("pkcs11", "file", "file", Some(raw), Path::new("/d")).unwrap();
        assert_eq!(b.signing, KeyBackendKind::File);
        let p = b.pkcs11.unwrap();
        assert_eq!(p.module, PathBuf::from("/usr/lib/x \"y\".so"));
        assert_eq!(p.pin_file, None);
    }

    #[test]
    fn the_audit_key_backend_is_its_own_choice() {
        let raw = || RawPkcs11 {
            module: "/m.so".into(),
            token_label: "t".into(),
            pin_file: String::new(),
        };
        let b = parse("file", "", "pkcs11", Some(raw()), Path::new("/d")).unwrap();
        assert_eq!(
            (b.root, b.audit),
            (KeyBackendKind::File, KeyBackendKind::Pkcs11)
        );
        assert!(b.pkcs11.is_some());
        let b = parse("pkcs11", "", "file", Some(raw()), Path::new("/d")).unwrap();
        assert_eq!(b.audit, KeyBackendKind::File);
        let e = parse("file", "", "hsm", None, Path::new("/d")).unwrap_err();
        assert!(e.to_string().contains("audit.key_backend"), "{e}");
    }
}
