//! The file modes of the data dir. The dir itself is 0711: any user may pass through it
//! (a workload running as its own uid, as Envoy does, must reach `agent.sock`) but not list
//! it. So everything in it that is not for workloads is owner-only on its own: CA keys, the
//! audit log and its keys, the config (it may hold a database password), the policies and
//! the admin socket. `esm init` makes it so; `esm serve` only says what is off, because a
//! mode on an operator's existing dir is the operator's to change.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What `esm init` gives a data dir it creates.
pub const DATA_DIR_MODE: u32 = 0o711;

/// A path and its mode, and the mode of the directory it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub path: PathBuf,
    pub mode: u32,
    pub parent_mode: u32,
}

/// Warnings for `esm serve`: the agent socket's directory shut to other users (`agent_dir`),
/// and each of `private` that users other than the owner can reach and read or enter.
pub fn findings(agent_dir: Option<&Seen>, private: &[Seen]) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(dir) = agent_dir {
        if dir.mode & 0o001 == 0 {
            out.push(format!(
                "{} is mode {:04o}: workloads of other users (Envoy runs as its own) cannot \
                 reach the agent socket in it; `chmod 0711 {}` lets them pass without listing it",
                dir.path.display(),
                dir.mode & 0o7777,
                dir.path.display()
            ));
        }
    }
    for p in private {
        let reachable = p.parent_mode & 0o011 != 0;
        if reachable && p.mode & 0o077 != 0 {
            out.push(format!(
                "{} is mode {:04o} in a directory other users can enter: it holds what only \
                 esm may read; `chmod go= {}`",
                p.path.display(),
                p.mode & 0o7777,
                p.path.display()
            ));
        }
    }
    out
}

/// The mode of `path` and of its directory; `None` when it does not exist.
pub fn seen(path: &Path) -> Option<Seen> {
    let mode = std::fs::symlink_metadata(path).ok()?.permissions().mode();
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    let parent_mode = std::fs::metadata(parent.unwrap_or(Path::new(".")))
        .ok()?
        .permissions()
        .mode();
    Some(Seen {
        path: path.to_owned(),
        mode,
        parent_mode,
    })
}

/// Looks at the data dir of `cfg` and logs a warning for each finding.
pub fn warn_if_loose(cfg: &esm_config::Config) {
    let dir = &cfg.data_dir;
    let mut private: Vec<PathBuf> = ["esm.toml", "ca", "ca/keys"]
        .iter()
        .map(|p| dir.join(p))
        .collect();
    private.push(cfg.audit_dir());
    if let Some(db) = cfg.audit.url.strip_prefix("sqlite://") {
        for suffix in ["", "-wal", "-shm"] {
            private.push(PathBuf::from(format!("{db}{suffix}")));
        }
    }
    for set in &cfg.authz.sets {
        if let esm_authz::source::PolicySource::Dir(p) = &set.source {
            private.push(p.clone());
        }
    }
    let private: Vec<Seen> = private.iter().filter_map(|p| seen(p)).collect();
    let agent_dir = cfg
        .agent
        .socket
        .as_deref()
        .and_then(Path::parent)
        .and_then(seen);
    for f in findings(agent_dir.as_ref(), &private) {
        tracing::warn!(data_dir = %dir.display(), "{f}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(path: &str, mode: u32, parent_mode: u32) -> Seen {
        Seen {
            path: path.into(),
            mode,
            parent_mode,
        }
    }

    #[test]
    fn an_agent_socket_dir_shut_to_other_users_is_reported() {
        let shut = s("/d", 0o40700, 0o40755);
        let f = findings(Some(&shut), &[]);
        assert_eq!(f.len(), 1);
        assert!(f[0].contains("chmod 0711 /d"), "{}", f[0]);
        assert!(findings(Some(&s("/d", 0o40711, 0o40755)), &[]).is_empty());
        assert!(findings(None, &[]).is_empty());
    }

    #[test]
    fn private_files_others_can_reach_and_read_are_reported() {
        let private = [
            s("/d/esm.toml", 0o100644, 0o40711),
            s("/d/audit.db", 0o100600, 0o40711),
            s("/d/ca/keys", 0o40755, 0o40700),
            s("/d/policies", 0o40750, 0o40711),
        ];
        let f = findings(None, &private);
        // esm.toml (world-readable) and policies (group can enter); not audit.db (0600),
        // not ca/keys (inside the owner-only ca/).
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f[0].starts_with("/d/esm.toml is mode 0644"));
        assert!(f[1].starts_with("/d/policies is mode 0750"));
    }

    #[test]
    fn loose_files_in_a_shut_data_dir_are_not_reported() {
        let private = [s("/d/esm.toml", 0o100644, 0o40700)];
        assert!(findings(None, &private).is_empty());
    }
}
