//! Workload attestation on the agent socket: the kernel's word on who connected (peer
//! credentials, `SO_PEERCRED`) becomes selectors. Nothing the caller sends is trusted.

use std::collections::BTreeSet;
use std::path::Path;

use super::entry::Selector;

/// What the kernel says about a Unix-socket peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// The selectors of a peer: `unix:uid:N`, `unix:gid:N`, and `unix:path:P` when the
/// executable of its pid can be read. `exe` is passed in so this stays pure.
pub fn selectors(peer: &PeerCred, exe: Option<&Path>) -> BTreeSet<Selector> {
    let mut out = BTreeSet::new();
    let mut add = |s: String| {
        if let Ok(sel) = Selector::parse(&s) {
            out.insert(sel);
        }
    };
    add(format!("unix:uid:{}", peer.uid));
    add(format!("unix:gid:{}", peer.gid));
    if let Some(exe) = exe.and_then(Path::to_str) {
        add(format!("unix:path:{exe}"));
    }
    out
}

/// The executable of `pid`, from `/proc`; `None` when it is gone or not readable (another
/// user's process when esm is not root). A path ending in " (deleted)" is refused: the
/// binary was replaced since it started, and the old one is no longer what the path names.
pub fn exe_of(pid: i32) -> Option<std::path::PathBuf> {
    let p = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    if p.to_string_lossy().ends_with(" (deleted)") {
        return None;
    }
    Some(p)
}

/// A peer's selectors from its `SO_PEERCRED` credentials.
pub fn attest(cred: &tokio::net::unix::UCred) -> BTreeSet<Selector> {
    let peer = PeerCred {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
    };
    let exe = peer.pid.and_then(exe_of);
    selectors(&peer, exe.as_deref())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn uid_gid_and_path_become_selectors() {
        let peer = PeerCred {
            uid: 1000,
            gid: 100,
            pid: Some(42),
        };
        let s: Vec<String> = selectors(&peer, Some(Path::new("/usr/bin/envoy")))
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(
            s,
            ["unix:gid:100", "unix:path:/usr/bin/envoy", "unix:uid:1000"]
        );
        assert_eq!(selectors(&peer, None).len(), 2);
    }

    #[test]
    fn this_process_can_read_its_own_executable() {
        let exe = exe_of(std::process::id() as i32).unwrap();
        assert!(exe.is_absolute());
        assert!(exe_of(i32::MAX).is_none());
    }
}
