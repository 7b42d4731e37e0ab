//! The I/O around [`super::attestation`]: pins the process that connected to the agent
//! socket when the connection is accepted (a pidfd, its start time, the identity of its
//! executable and its effective uid/gid), and looks at it again for every request.
//!
//! Reading `/proc/<pid>/exe` only when a request arrives let a process connect, hand the
//! socket to a child and `exec` an entitled program: the child was then attested as that
//! program. What is recorded here at accept is compared with what is seen at each request,
//! and [`decide`] refuses any difference.
//!
//! The pid is pinned with `pidfd_open` right after `accept` (rustix 1.1 has no
//! `SO_PEERPIDFD`, which would pin it at `connect`): the process cannot be mistaken for a
//! later one with the same pid, since the pidfd reports its exit, and the start time is
//! compared besides. What no kernel interface shows is an `exec` between `connect` and
//! `accept`; see SECURITY.md for why that window grants nothing the peer's uid could not
//! already get.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fd::OwnedFd;
use rustix::process::{pidfd_open, Pid, PidfdFlags};

use super::attestation::{
    decide, AtAccept, AtRequest, Exe, FileId, Observed, PeerCred, Unattested,
};
use super::entry::Selector;

/// The process at the other end of one accepted connection, as recorded at accept.
#[derive(Debug)]
pub struct PeerBinding {
    accept: AtAccept,
    /// `None` for a peer without a pid, one gone before accept, or a kernel without pidfds
    /// (then the start time alone tells a reused pid).
    pidfd: Option<OwnedFd>,
}

impl PeerBinding {
    /// Records the peer of `stream`; called on the accepting task before anything else,
    /// so the window in which the peer can `exec` unseen is as short as it can be.
    pub fn at_accept(stream: &tokio::net::UnixStream) -> std::io::Result<Self> {
        let c = stream.peer_cred()?;
        let cred = PeerCred {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid().filter(|p| *p > 0),
        };
        Ok(Self::pin(cred))
    }

    fn pin(cred: PeerCred) -> Self {
        let Some(pid) = cred.pid else {
            return Self {
                accept: AtAccept { cred, seen: None },
                pidfd: None,
            };
        };
        let pidfd = match Pid::from_raw(pid).map(|p| pidfd_open(p, PidfdFlags::empty())) {
            Some(Ok(fd)) => Some(fd),
            Some(Err(rustix::io::Errno::NOSYS)) => None,
            _ => {
                // Gone already: nothing that connected is left to attest.
                return Self {
                    accept: AtAccept { cred, seen: None },
                    pidfd: None,
                };
            }
        };
        let seen = observe(pid);
        let seen = seen.filter(|_| alive(pidfd.as_ref()));
        Self {
            accept: AtAccept { cred, seen },
            pidfd,
        }
    }

    pub fn cred(&self) -> &PeerCred {
        &self.accept.cred
    }

    /// The caller's selectors now, or why it has none.
    pub fn attest(&self) -> Result<BTreeSet<Selector>, Unattested> {
        let now = self.accept.cred.pid.map(|pid| {
            let seen = observe(pid);
            let path_file = seen
                .as_ref()
                .and_then(|s| s.exe.as_ref())
                .and_then(|e| file_id(&e.path));
            // After the reads: when it is still alive they were about this process.
            let alive = alive(self.pidfd.as_ref());
            AtRequest {
                alive,
                seen,
                path_file,
            }
        });
        decide(&self.accept, now.as_ref())
    }

    /// [`Self::attest`], a refusal logged and turned into PermissionDenied.
    pub fn check(&self) -> Result<BTreeSet<Selector>, tonic::Status> {
        self.attest().map_err(|why| {
            let c = &self.accept.cred;
            tracing::warn!(
                peer.pid = c.pid,
                peer.uid = c.uid,
                peer.gid = c.gid,
                peer.exe_at_accept = ?self.accept.seen.as_ref().and_then(|s| s.exe.as_ref()).map(|e| &e.path),
                reason = %why,
                "agent socket: caller refused"
            );
            why.status()
        })
    }
}

/// False once the process behind `pidfd` has exited (its pidfd polls readable).
fn alive(pidfd: Option<&OwnedFd>) -> bool {
    let Some(fd) = pidfd else { return true };
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&zero)), Ok(0))
}

fn file_id(path: &Path) -> Option<FileId> {
    let m = std::fs::metadata(path).ok()?;
    Some(FileId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// What `/proc` shows of `pid` now; `None` when it is gone.
pub fn observe(pid: i32) -> Option<Observed> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let start_time = start_time(&stat)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let euid = effective_id(&status, "Uid:")?;
    let egid = effective_id(&status, "Gid:")?;
    // `metadata` follows the magic link to the file itself, wherever it is mounted;
    // the link's text is what the kernel prints for it, read only as a place to look.
    let link = format!("/proc/{pid}/exe");
    let exe = match (file_id(Path::new(&link)), std::fs::read_link(&link)) {
        (Some(file), Ok(path)) => Some(Exe { file, path }),
        _ => None,
    };
    Some(Observed {
        start_time,
        euid,
        egid,
        exe,
    })
}

/// Field 22 of `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may
/// hold spaces and parentheses, so fields are counted after the last `)`.
pub fn start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_ascii_whitespace().nth(22 - 3)?.parse().ok()
}

/// The effective id (second number) of a `Uid:` or `Gid:` line of `/proc/<pid>/status`.
fn effective_id(status: &str, key: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix(key))?;
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn start_time_is_counted_after_the_command_name() {
        let stat = "77 (a) b (c) S 1 77 77 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 \
                    1000 10 18446744073709551615";
        assert_eq!(start_time(stat), Some(123_456));
        assert_eq!(start_time("77 (x) S 1"), None);
    }

    #[test]
    fn effective_ids_are_the_second_column() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t100\t5\t5\t5\n";
        assert_eq!(effective_id(status, "Uid:"), Some(0));
        assert_eq!(effective_id(status, "Gid:"), Some(5));
    }

    #[test]
    fn this_process_attests_with_its_own_executable() {
        let pid = std::process::id() as i32;
        let seen = observe(pid).unwrap();
        assert_eq!(seen.euid, rustix::process::geteuid().as_raw());
        let exe = seen.exe.unwrap();
        assert!(exe.path.is_absolute());
        let cred = PeerCred {
            uid: seen.euid,
            gid: seen.egid,
            pid: Some(pid),
        };
        let binding = PeerBinding::pin(cred);
        assert!(binding.pidfd.is_some());
        let path = format!("unix:path:{}", exe.path.display());
        let sels: Vec<String> = binding
            .attest()
            .unwrap()
            .into_iter()
            .map(String::from)
            .collect();
        assert!(sels.contains(&path), "{sels:?}");
        assert!(observe(i32::MAX).is_none());
    }

    #[test]
    fn refuses_once_the_pinned_process_has_exited() {
        // A real process that is pinned and then exits: its pidfd reports it.
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "read x"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let cred = PeerCred {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            pid: Some(child.id() as i32),
        };
        let binding = PeerBinding::pin(cred);
        assert!(binding.attest().is_ok());
        drop(child.stdin.take());
        child.wait().unwrap();
        assert_eq!(binding.attest(), Err(Unattested::Exited));
    }

    #[test]
    fn refuses_once_the_pinned_process_has_execd() {
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "read x; exec sleep 30"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let cred = PeerCred {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            pid: Some(pid),
        };
        let binding = PeerBinding::pin(cred);
        let before = observe(pid).unwrap().exe.unwrap().file;
        assert!(binding.attest().is_ok());
        drop(child.stdin.take());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while observe(pid).and_then(|o| o.exe).map(|e| e.file) == Some(before) {
            assert!(
                std::time::Instant::now() < deadline,
                "sh never exec'd sleep"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let verdict = binding.attest();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(verdict, Err(Unattested::Execd));
    }
}
