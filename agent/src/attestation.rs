//! Workload attestation on the agent socket, the decision part: from what the kernel said
//! when the peer connected (`SO_PEERCRED`), what `/proc` showed when esm accepted the
//! connection, and what it shows now, to the caller's selectors or a refusal. No I/O here:
//! [`super::peer_process`] gathers the facts. Nothing the caller sends is trusted.
//!
//! The rule. A connection speaks for the process that connected (the `SO_PEERCRED` pid,
//! which the kernel fixes at `connect()` and never changes, whoever holds the socket
//! later). A request on it is attested only while that process
//! - is still alive, and is the same process (same start time: the pid was not reused),
//! - still executes the file it executed at accept (same `st_dev`/`st_ino` of
//!   `/proc/<pid>/exe`: an `exec` changes it), and
//! - has the effective uid and gid it connected with (an `exec` of a set-uid or set-gid
//!   file, or a `setuid()` call, changes them).
//!
//! Any process sharing the socket (a forked child, a descriptor passed over `SCM_RIGHTS`)
//! is served as the connecting process while those hold: handing the descriptor over is
//! that process's own choice, like handing over a private key. A child that outlives the
//! connecting process, or whose parent then `exec`s, gets nothing more.
//!
//! `unix:path:P` is granted when the executable is the very file that `P` names in esm's own
//! mount namespace (same device and inode), not when `/proc/<pid>/exe` merely reads `P`:
//! a process in another mount namespace can have any file at `P`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::entry::Selector;

/// What the kernel says about a Unix-socket peer, fixed when it connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
    /// `None` when the peer's pid is not visible from esm's pid namespace.
    pub pid: Option<i32>,
}

/// A file's identity: what `stat` says, not what a path says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// A process's executable: the file (`stat` through `/proc/<pid>/exe`) and the path the
/// kernel prints for it (`readlink`), which is only a hint of where to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exe {
    pub file: FileId,
    pub path: PathBuf,
}

/// One look at a process through `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Field 22 of `/proc/<pid>/stat`: clock ticks after boot at which it was forked.
    pub start_time: u64,
    pub euid: u32,
    pub egid: u32,
    /// `None` when it cannot be read (a kernel thread, another user's process when esm
    /// is not root): such a process gets no `unix:path` selector.
    pub exe: Option<Exe>,
}

/// What was recorded when the connection was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtAccept {
    pub cred: PeerCred,
    /// `None` when the process was already gone (or its pid could not be pinned).
    pub seen: Option<Observed>,
}

/// What is seen when a request arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtRequest {
    /// The pinned process has not exited (its pidfd is not readable), checked after
    /// `seen` was read, so `seen` is about that process and not one that reused its pid.
    pub alive: bool,
    pub seen: Option<Observed>,
    /// `stat` of `seen.exe.path` in esm's mount namespace.
    pub path_file: Option<FileId>,
}

/// Why a caller is not attested. Every one is the caller's doing, answered with
/// PermissionDenied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unattested {
    /// The process that connected was gone before esm accepted the connection.
    GoneAtAccept,
    /// The process that connected has exited since.
    Exited,
    /// The pid now names another process (different start time).
    PidReused,
    /// The process that connected executes another file than at accept.
    Execd,
    /// Its effective uid or gid is not what it connected with.
    CredsChanged,
}

impl std::fmt::Display for Unattested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::GoneAtAccept => "the process that connected was gone before it was accepted",
            Self::Exited => "the process that connected has exited",
            Self::PidReused => "the pid that connected is now another process",
            Self::Execd => "the process that connected has executed another program since",
            Self::CredsChanged => "the process that connected has changed its uid or gid",
        })
    }
}

impl Unattested {
    pub fn status(&self) -> tonic::Status {
        tonic::Status::permission_denied(format!("caller cannot be attested: {self}"))
    }
}

/// The caller's selectors, or why it has none. `now` is `None` for a peer without a pid.
pub fn decide(
    accept: &AtAccept,
    now: Option<&AtRequest>,
) -> Result<BTreeSet<Selector>, Unattested> {
    let cred = &accept.cred;
    let mut out = BTreeSet::new();
    let mut add = |s: String| {
        if let Ok(sel) = Selector::parse(&s) {
            out.insert(sel);
        }
    };
    add(format!("unix:uid:{}", cred.uid));
    add(format!("unix:gid:{}", cred.gid));
    if cred.pid.is_none() {
        // Nothing to pin: the connect-time uid and gid are all the kernel vouches for.
        return Ok(out);
    }
    let then = accept.seen.as_ref().ok_or(Unattested::GoneAtAccept)?;
    let now = now.ok_or(Unattested::Exited)?;
    let seen = now.seen.as_ref().filter(|_| now.alive);
    let seen = seen.ok_or(Unattested::Exited)?;
    if seen.start_time != then.start_time {
        return Err(Unattested::PidReused);
    }
    let exe_file = |o: &Observed| o.exe.as_ref().map(|e| e.file);
    if exe_file(seen) != exe_file(then) {
        return Err(Unattested::Execd);
    }
    for o in [then, seen] {
        if (o.euid, o.egid) != (cred.uid, cred.gid) {
            return Err(Unattested::CredsChanged);
        }
    }
    if let (Some(exe), Some(at_path)) = (&seen.exe, now.path_file) {
        if exe.file == at_path {
            if let Some(p) = exe.path.to_str() {
                add(format!("unix:path:{p}"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "attestation_tests.rs"]
mod tests;
