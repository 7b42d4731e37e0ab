#![allow(clippy::unwrap_used)]
use super::*;

const ENVOY: FileId = FileId { dev: 8, ino: 1001 };
const PYTHON: FileId = FileId { dev: 8, ino: 2002 };

fn cred() -> PeerCred {
    PeerCred {
        uid: 1000,
        gid: 100,
        pid: Some(42),
    }
}

fn observed(file: FileId, path: &str) -> Observed {
    Observed {
        start_time: 5_000,
        euid: 1000,
        egid: 100,
        exe: Some(Exe {
            file,
            path: path.into(),
        }),
    }
}

fn accepted(seen: Observed) -> AtAccept {
    AtAccept {
        cred: cred(),
        seen: Some(seen),
    }
}

/// Now: alive, the same look, and the path naming the same file in esm's namespace.
fn now(seen: Observed) -> AtRequest {
    let path_file = seen.exe.as_ref().map(|e| e.file);
    AtRequest {
        alive: true,
        seen: Some(seen),
        path_file,
    }
}

fn names(s: BTreeSet<Selector>) -> Vec<String> {
    s.into_iter().map(String::from).collect()
}

#[test]
fn unchanged_process_gets_uid_gid_and_path() {
    let seen = observed(ENVOY, "/usr/bin/envoy");
    let s = decide(&accepted(seen.clone()), Some(&now(seen))).unwrap();
    assert_eq!(
        names(s),
        ["unix:gid:100", "unix:path:/usr/bin/envoy", "unix:uid:1000"]
    );
}

#[test]
fn refuses_peer_that_execd_after_connect() {
    // Connected as python, exec'd envoy before the request: the fork-and-exec attack.
    let at_accept = accepted(observed(PYTHON, "/usr/bin/python3.11"));
    let later = now(observed(ENVOY, "/usr/bin/envoy"));
    assert_eq!(decide(&at_accept, Some(&later)), Err(Unattested::Execd));
}

#[test]
fn refuses_peer_that_exited_after_connect() {
    let seen = observed(ENVOY, "/usr/bin/envoy");
    let mut later = now(seen.clone());
    later.alive = false; // its pidfd is readable: a child holding the socket asks
    assert_eq!(
        decide(&accepted(seen.clone()), Some(&later)),
        Err(Unattested::Exited)
    );
    let gone = AtRequest {
        alive: true,
        seen: None,
        path_file: None,
    };
    assert_eq!(
        decide(&accepted(seen), Some(&gone)),
        Err(Unattested::Exited)
    );
}

#[test]
fn refuses_pid_reused_by_another_process() {
    let seen = observed(ENVOY, "/usr/bin/envoy");
    let mut other = seen.clone();
    other.start_time += 1;
    assert_eq!(
        decide(&accepted(seen), Some(&now(other))),
        Err(Unattested::PidReused)
    );
}

#[test]
fn refuses_peer_gone_before_accept() {
    let at_accept = AtAccept {
        cred: cred(),
        seen: None,
    };
    let later = now(observed(ENVOY, "/usr/bin/envoy"));
    assert_eq!(
        decide(&at_accept, Some(&later)),
        Err(Unattested::GoneAtAccept)
    );
}

#[test]
fn refuses_peer_whose_euid_is_not_the_connecting_one() {
    // Exec of a set-uid file before accept: the exe is the same at accept and now, but the
    // kernel's connect-time credentials (uid 1000) are not the process's any more.
    let mut setuid = observed(ENVOY, "/usr/bin/envoy");
    setuid.euid = 0;
    assert_eq!(
        decide(&accepted(setuid.clone()), Some(&now(setuid))),
        Err(Unattested::CredsChanged)
    );
    let mut later = observed(ENVOY, "/usr/bin/envoy");
    later.egid = 0;
    assert_eq!(
        decide(
            &accepted(observed(ENVOY, "/usr/bin/envoy")),
            Some(&now(later))
        ),
        Err(Unattested::CredsChanged)
    );
}

#[test]
fn same_path_text_but_another_inode_grants_no_path() {
    // A bind mount over /usr/bin/envoy in the peer's own mount namespace: /proc says
    // "/usr/bin/envoy", but that path in esm's namespace is another file.
    let seen = observed(PYTHON, "/usr/bin/envoy");
    let mut later = now(seen.clone());
    later.path_file = Some(ENVOY);
    let s = decide(&accepted(seen.clone()), Some(&later)).unwrap();
    assert_eq!(names(s), ["unix:gid:100", "unix:uid:1000"]);
    later.path_file = None; // nothing at that path here
    assert_eq!(decide(&accepted(seen), Some(&later)).unwrap().len(), 2);
}

#[test]
fn same_inode_on_another_device_grants_no_path() {
    let seen = observed(ENVOY, "/usr/bin/envoy");
    let mut later = now(seen.clone());
    later.path_file = Some(FileId { dev: 9, ..ENVOY });
    assert_eq!(decide(&accepted(seen), Some(&later)).unwrap().len(), 2);
}

#[test]
fn unreadable_exe_keeps_uid_and_gid_only() {
    let mut seen = observed(ENVOY, "/usr/bin/envoy");
    seen.exe = None;
    let s = decide(&accepted(seen.clone()), Some(&now(seen))).unwrap();
    assert_eq!(names(s), ["unix:gid:100", "unix:uid:1000"]);
}

#[test]
fn exe_becoming_unreadable_counts_as_exec() {
    let then = observed(ENVOY, "/usr/bin/envoy");
    let mut later = then.clone();
    later.exe = None;
    assert_eq!(
        decide(&accepted(then), Some(&now(later))),
        Err(Unattested::Execd)
    );
}

#[test]
fn peer_without_pid_gets_uid_and_gid_only() {
    let at_accept = AtAccept {
        cred: PeerCred {
            pid: None,
            ..cred()
        },
        seen: None,
    };
    let s = decide(&at_accept, None).unwrap();
    assert_eq!(names(s), ["unix:gid:100", "unix:uid:1000"]);
}

#[test]
fn refusal_is_permission_denied() {
    let st = Unattested::Execd.status();
    assert_eq!(st.code(), tonic::Code::PermissionDenied);
    assert!(st.message().contains("executed another program"));
}
