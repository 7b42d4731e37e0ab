//! Where a policy set comes from (a directory or an OPA bundle) and how it is served: its
//! name, decision rule, dry-run switch and the JWKS its `io.jwt.*` builtins fall back to.

use std::path::PathBuf;
use std::sync::Arc;

use crate::bundle_download::RemoteBundle;

use crate::error::Result;
use crate::jwt::NamedKey;
use crate::jwt_builtins::JwtKeys;
use crate::policy_set::{read_dir, SourceFile};

#[derive(Debug, Clone)]
pub enum PolicySource {
    /// `.rego` files and `data.json` / `data.yaml` under a directory.
    Dir(PathBuf),
    /// An OPA `.tar.gz` bundle; with keys, only a bundle signed by one of them is accepted.
    Bundle {
        path: PathBuf,
        keys: Option<Vec<NamedKey>>,
    },
}

impl PolicySource {
    /// A path ending in `.tar.gz` or `.tgz` is a bundle, anything else a directory.
    pub fn from_path(path: PathBuf, keys: Option<Vec<NamedKey>>) -> Self {
        let name = path.to_string_lossy();
        if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Self::Bundle { path, keys }
        } else {
            Self::Dir(path)
        }
    }

    pub fn read(&self) -> Result<Vec<SourceFile>> {
        Ok(self.read_revision()?.0)
    }

    /// The files and the revision a bundle's `.manifest` names (empty for a directory).
    pub fn read_revision(&self) -> Result<(Vec<SourceFile>, String)> {
        match self {
            Self::Dir(dir) => Ok((read_dir(dir)?, String::new())),
            Self::Bundle { path, keys } => {
                let b = crate::bundle::read(path, keys.as_deref())?;
                Ok((b.files, b.manifest.revision))
            }
        }
    }

    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Dir(p) | Self::Bundle { path: p, .. } => p,
        }
    }
}

/// One policy set as `serve` runs it.
#[derive(Debug, Clone)]
pub struct SetSpec {
    /// Chosen per request by Envoy's `context_extensions` key `policy_set`; the first set
    /// serves requests that name none.
    pub name: String,
    pub source: PolicySource,
    pub rule: String,
    /// Allow everything in this set; the policy's own decision is only logged and counted.
    pub dry_run: bool,
    pub jwt_keys: JwtKeys,
    /// Entries of the set's decision memo (0: every request is evaluated).
    pub memo_capacity: usize,
    /// The bundle server the set polls; its source is then the persisted copy.
    pub remote: Option<Arc<RemoteBundle>>,
}

impl SetSpec {
    /// A set with defaults: enforcing, no JWKS.
    pub fn new(name: &str, source: PolicySource, rule: &str) -> Self {
        Self {
            name: name.to_owned(),
            source,
            rule: rule.to_owned(),
            dry_run: false,
            jwt_keys: JwtKeys::default(),
            memo_capacity: crate::decision_memo::DEFAULT_CAPACITY,
            remote: None,
        }
    }
}
