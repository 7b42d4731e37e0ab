//! Which local user holds the other end of a loopback TCP connection. TCP has no
//! SO_PEERCRED, but both ends of a connection made on this host are sockets in the same
//! network namespace, and the kernel lists each with its owner's uid in `/proc/net/tcp`
//! (`tcp6` for IPv6). The peer's socket is the line whose local address is the peer's and
//! whose remote address is ours.

use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest line read from the table; the kernel's lines are about 150 bytes.
const MAX_LINE: usize = 512;

/// The uid owning the socket at `peer` connected to `local`, looked up in the kernel's
/// table; `None` when the peer is not a socket on this host (or the table is unreadable).
pub fn lookup(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    if !(peer.ip().is_loopback() || peer.ip() == local.ip()) {
        return None;
    }
    let path = match peer {
        SocketAddr::V4(_) => "/proc/net/tcp",
        SocketAddr::V6(_) => "/proc/net/tcp6",
    };
    let file = std::fs::File::open(path).ok()?;
    find(std::io::BufReader::new(file), peer, local)
}

/// [`lookup`] over any table in the kernel's format; stops at the first match.
pub fn find(table: impl BufRead, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    table
        .lines()
        .skip(1)
        .map_while(Result::ok)
        .filter(|line| line.len() <= MAX_LINE)
        .find_map(|line| owner(&line, peer, local))
}

/// The uid on `line` when it is the socket `peer` connected to `local`.
fn owner(line: &str, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let mut fields = line.split_whitespace();
    let _slot = fields.next()?;
    let here = parse_addr(fields.next()?)?;
    let there = parse_addr(fields.next()?)?;
    if here != peer || there != local {
        return None;
    }
    // state, tx:rx queues, timer, retransmits, then the uid.
    fields.nth(4)?.parse().ok()
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit word is printed
/// as the kernel holds it in memory, so its bytes come back in native order.
fn parse_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex4(a: SocketAddr) -> String {
        let SocketAddr::V4(v4) = a else {
            unreachable!("test helper for IPv4")
        };
        format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        )
    }

    fn line(local: SocketAddr, remote: SocketAddr, uid: u32) -> String {
        format!(
            "   3: {} {} 01 00000000:00000000 00:00000000 00000000  {uid}        0 4242 1 0 20 4 30 10 -1",
            hex4(local),
            hex4(remote)
        )
    }

    const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";

    #[test]
    fn finds_the_uid_of_the_peers_end_not_ours() {
        let server: SocketAddr = "127.0.0.1:9191".parse().unwrap();
        let client: SocketAddr = "127.0.0.1:51000".parse().unwrap();
        let table = [
            HEADER.to_string(),
            line(server, "0.0.0.0:0".parse().unwrap(), 999),
            line(server, client, 999),
            line(client, server, 1000),
        ]
        .join("\n");
        assert_eq!(find(table.as_bytes(), client, server), Some(1000));
    }

    #[test]
    fn reads_the_kernels_ipv6_words() {
        // ::1 as the kernel prints it on a little-endian machine.
        let (local, peer): (SocketAddr, SocketAddr) = (
            "[::1]:9191".parse().unwrap(),
            "[::1]:40000".parse().unwrap(),
        );
        let one = u32::from_ne_bytes([0, 0, 0, 1]);
        let addr = format!("000000000000000000000000{one:08X}");
        let table = format!(
            "{HEADER}\n   0: {addr}:9C40 {addr}:23E7 01 00000000:00000000 00:00000000 00000000    77        0 1 1"
        );
        assert_eq!(find(table.as_bytes(), peer, local), Some(77));
    }

    #[test]
    fn hostile_or_malformed_lines_find_nothing() {
        let server: SocketAddr = "127.0.0.1:9191".parse().unwrap();
        let client: SocketAddr = "127.0.0.1:51000".parse().unwrap();
        let good = line(client, server, 5);
        let cases = [
            String::new(),
            format!("{HEADER}\n"),
            format!("{HEADER}\n   0: zz:1 yy:2 01"),
            format!("{HEADER}\n   0: {}", hex4(client)),
            format!("{HEADER}\n{}", good.replace(" 5 ", " notauid ")),
            format!("{HEADER}\n{}", good.replace(":C738", ":FFFFFFFFF")),
            format!("{HEADER}\n{}{}", good, " x".repeat(MAX_LINE)),
            // Only a header: the table's first line is never read as a socket.
            good.clone(),
        ];
        for table in cases {
            assert_eq!(find(table.as_bytes(), client, server), None, "{table:?}");
        }
    }

    #[test]
    fn remote_peers_are_not_looked_up() {
        let local: SocketAddr = "127.0.0.1:9191".parse().unwrap();
        assert_eq!(lookup("192.0.2.4:5000".parse().unwrap(), local), None);
    }

    #[test]
    fn finds_this_processes_own_loopback_connection() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let (_conn, peer) = server.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let uid = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|euid| euid.parse().ok());
        assert_eq!(lookup(peer, server.local_addr().unwrap()), uid);
    }
}
