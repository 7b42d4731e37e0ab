//! Who is on the other end of the admin socket, as the kernel tells it (SO_PEERCRED at
//! connect), never as the client says: that is the audit log's actor for every change made
//! through the admin API. What the client claims is kept only as a note beside it.

use tokio::net::UnixStream;

/// The most of /etc/passwd read to put a name to a uid.
const MAX_PASSWD: u64 = 4 << 20;

/// The admin socket peer's credentials; `None` when the kernel could not tell them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminPeer(pub Option<PeerCred>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl AdminPeer {
    /// The credentials of the process on the other end of `stream`.
    pub fn of(stream: &UnixStream) -> Self {
        match stream.peer_cred() {
            Ok(c) => Self(Some(PeerCred {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            })),
            Err(e) => {
                tracing::warn!(error = %e, "admin socket: no peer credentials");
                Self(None)
            }
        }
    }
}

impl PeerCred {
    /// `admin-socket:uid:0(root)`: the uid, and its name when `passwd` has one.
    pub fn actor(&self, passwd: Option<&str>) -> String {
        match passwd.and_then(|p| user_name(p, self.uid)) {
            Some(name) => format!("admin-socket:uid:{}({name})", self.uid),
            None => format!("admin-socket:uid:{}", self.uid),
        }
    }
}

/// The name of `uid` in passwd(5) text: the first line whose third field is `uid`. Names
/// with anything but printable ASCII are not used (the uid alone is still exact).
pub fn user_name(passwd: &str, uid: u32) -> Option<&str> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let found: u32 = fields.nth(1)?.parse().ok()?;
        let printable =
            !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_graphic());
        (found == uid && printable).then_some(name)
    })
}

/// /etc/passwd, read now (users come and go while esm serves); `None` if unreadable.
pub fn read_passwd() -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open("/etc/passwd")
        .and_then(|f| f.take(MAX_PASSWD).read_to_string(&mut text))
        .ok()?;
    Some(text)
}

/// What the client said about itself (the `x-esm-actor` header), cut to printable ASCII:
/// a note for the record, never the actor.
pub fn claimed_actor(headers: &axum::http::HeaderMap) -> Option<String> {
    let v = headers.get("x-esm-actor")?.to_str().ok()?;
    Some(
        v.chars()
            .filter(|c| c.is_ascii_graphic())
            .take(128)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                          broken line\n\
                          nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
                          bad\x1bname:x:1234:1234::/:/bin/sh\n";

    #[test]
    fn the_actor_is_the_peer_uid_with_its_passwd_name() {
        let root = PeerCred {
            uid: 0,
            gid: 0,
            pid: Some(1),
        };
        assert_eq!(root.actor(Some(PASSWD)), "admin-socket:uid:0(root)");
        let nobody = PeerCred {
            uid: 65534,
            gid: 65534,
            pid: None,
        };
        assert_eq!(nobody.actor(Some(PASSWD)), "admin-socket:uid:65534(nobody)");
        assert_eq!(nobody.actor(None), "admin-socket:uid:65534");
        let unnamed = PeerCred {
            uid: 4242,
            gid: 0,
            pid: None,
        };
        assert_eq!(unnamed.actor(Some(PASSWD)), "admin-socket:uid:4242");
    }

    #[test]
    fn a_passwd_name_with_control_characters_is_not_used() {
        assert_eq!(user_name(PASSWD, 1234), None);
        assert_eq!(user_name(PASSWD, 1), Some("daemon"));
    }

    #[test]
    fn the_claimed_actor_is_cut_to_printable_ascii() {
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(claimed_actor(&h), None);
        h.insert("x-esm-actor", "cli:uid:0 \tx".parse().unwrap());
        assert_eq!(claimed_actor(&h).unwrap(), "cli:uid:0x");
        h.insert("x-esm-actor", "a".repeat(500).parse().unwrap());
        assert_eq!(claimed_actor(&h).unwrap().len(), 128);
    }
}
