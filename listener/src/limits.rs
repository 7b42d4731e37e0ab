//! How many connections one listener holds, in total and per peer. Every connection costs a
//! file descriptor, an HTTP/2 connection's buffers (about 32 KiB when idle) and a task; a
//! local process that opened them without end would exhaust esm's descriptors, and with them
//! the audit store's files and every other socket. Slots are counted per peer as well as in
//! total, because an idle HTTP/2 connection is exactly what an Envoy's ext_authz connection
//! looks like between requests: no timeout can tell a hoarder from a sidecar, but a cap per
//! peer means that what one peer hoards it takes only from itself.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections held at once.
    pub max_connections: usize,
    /// Connections held at once by one peer (see [`Peer`]).
    pub max_per_peer: usize,
    /// How long a new connection may take to send its first `first_bytes` bytes: an HTTP/2
    /// client writes its 24-byte preface and a SETTINGS frame at once, an HTTP/1 client its
    /// request line. One that has not after this long is stuck or holding a slot on purpose.
    pub first_bytes_within: Duration,
    /// See `first_bytes_within`.
    pub first_bytes: usize,
}

impl Limits {
    /// For a gRPC (HTTP/2) listener such as ext_authz: the preface (24 bytes) and a frame
    /// header (9) within 10 s. 2048 connections: an Envoy opens one per worker thread to its
    /// ext_authz cluster, so a node's sidecars hold tens to a few hundred; 512 per peer
    /// leaves any one peer a quarter.
    pub fn grpc() -> Self {
        Self {
            max_connections: 2048,
            max_per_peer: 512,
            first_bytes_within: Duration::from_secs(10),
            first_bytes: 33,
        }
    }

    /// For an HTTP/1 admin listener (metrics scrapes, `esm entry` calls): a handful of
    /// clients at a time, each writing a request line at once.
    pub fn admin() -> Self {
        Self {
            max_connections: 128,
            max_per_peer: 64,
            first_bytes_within: Duration::from_secs(10),
            first_bytes: 16,
        }
    }
}

/// Whom a connection is counted against. On a Unix socket and on loopback TCP the kernel
/// says which uid owns the other end, which is what separates a hostile local user from
/// the sidecars; from another host (a pod's address) only its address is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    Uid(u32),
    Addr(IpAddr),
    /// The kernel did not say: all such connections share one count.
    Unknown,
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Listener,
    Peer,
}

/// Connections held, in total and by peer.
#[derive(Debug, Default)]
pub struct Slots {
    total: usize,
    by_peer: HashMap<Peer, usize>,
}

impl Slots {
    /// Counts a new connection from `peer`, unless the listener already holds
    /// `max_connections` or the peer `max_per_peer`.
    pub fn take(
        &mut self,
        peer: Peer,
        max_connections: usize,
        max_per_peer: usize,
    ) -> Result<(), Full> {
        if self.total >= max_connections {
            return Err(Full::Listener);
        }
        let held = self.by_peer.entry(peer).or_default();
        if *held >= max_per_peer {
            return Err(Full::Peer);
        }
        *held += 1;
        self.total += 1;
        Ok(())
    }

    /// Uncounts a connection from `peer` that has closed.
    pub fn give_back(&mut self, peer: Peer) {
        if let Some(held) = self.by_peer.get_mut(&peer) {
            *held -= 1;
            if *held == 0 {
                self.by_peer.remove(&peer);
            }
            self.total -= 1;
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn held_by(&self, peer: Peer) -> usize {
        self.by_peer.get(&peer).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_at_its_cap_is_refused_while_others_still_get_slots() {
        let mut s = Slots::default();
        for _ in 0..3 {
            s.take(Peer::Uid(1000), 8, 3).unwrap();
        }
        assert_eq!(s.take(Peer::Uid(1000), 8, 3), Err(Full::Peer));
        assert_eq!(s.take(Peer::Uid(1001), 8, 3), Ok(()));
        assert_eq!(s.take(Peer::Unknown, 8, 3), Ok(()));
        s.give_back(Peer::Uid(1000));
        assert_eq!(s.take(Peer::Uid(1000), 8, 3), Ok(()));
        assert_eq!(s.total(), 5);
    }

    #[test]
    fn the_listener_cap_holds_across_peers() {
        let mut s = Slots::default();
        s.take(Peer::Uid(1), 2, 2).unwrap();
        s.take(Peer::Unknown, 2, 2).unwrap();
        assert_eq!(s.take(Peer::Uid(2), 2, 2), Err(Full::Listener));
    }

    #[test]
    fn giving_back_frees_the_slot_and_forgets_empty_peers() {
        let mut s = Slots::default();
        let ip = Peer::Addr("10.0.0.7".parse().unwrap());
        s.take(ip, 2, 1).unwrap();
        assert_eq!(s.take(ip, 2, 1), Err(Full::Peer));
        s.give_back(ip);
        assert_eq!(s.held_by(ip), 0);
        assert_eq!(s.total(), 0);
        s.take(ip, 2, 1).unwrap();
    }

    #[test]
    fn giving_back_a_slot_never_taken_changes_nothing() {
        let mut s = Slots::default();
        s.give_back(Peer::Uid(7));
        assert_eq!(s.total(), 0);
    }
}
