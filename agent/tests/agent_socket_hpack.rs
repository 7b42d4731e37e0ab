//! HPACK bombs on the agent's Unix socket, over raw HTTP/2 bytes: header blocks of a few
//! kilobytes that decode to hundreds of megabytes. Each is refused with its connection,
//! the process's memory does not grow, and a well-behaved client is served meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod agent_socket;

use std::time::Duration;

use agent_socket::*;
use esm_agent::connection_limits::Limits;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

/// A header block that puts one `value_len`-byte header in the client's dynamic table
/// (raising the table's size first when `table` is given) and then refers to it `refs`
/// times, one byte each: small on the wire, `refs * value_len` once decoded.
fn bomb(table: Option<usize>, value_len: usize, refs: usize) -> Vec<u8> {
    let mut block = Vec::new();
    if let Some(size) = table {
        block.extend(hpack_int(0x20, 5, size));
    }
    block.extend(hpack_int(0x40, 6, 0)); // literal with incremental indexing, new name
    block.extend(hpack_int(0, 7, 6));
    block.extend_from_slice(b"x-bomb");
    block.extend(hpack_int(0, 7, value_len));
    block.extend(std::iter::repeat_n(b'a', value_len));
    // Index 62 is the first entry of the dynamic table: the header just inserted.
    block.extend(std::iter::repeat_n(0x80 | 62, refs));
    block
}

/// The block as HEADERS and CONTINUATION frames on stream 1.
fn frames(block: &[u8]) -> Vec<Vec<u8>> {
    let chunks: Vec<&[u8]> = block.chunks(MAX_FRAME).collect();
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            let flags = if i + 1 == chunks.len() {
                END_HEADERS
            } else {
                0
            };
            frame(kind, flags, 1, c)
        })
        .collect()
}

/// Peak resident memory of this process, in KiB, since the last [`reset_peak`].
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap()
        .to_string();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Resets the peak to the current resident memory (Linux: `5` in clear_refs), so what was
/// allocated before the attack cannot hide a spike during it.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// Sends one bomb on a new connection: the first frame, then (while that header block is
/// open) a well-behaved client is served, then the rest. Returns whether the connection
/// was closed.
async fn send_bomb(sock: &std::path::Path, block: &[u8]) -> bool {
    let mut s = UnixStream::connect(sock).await.unwrap();
    let mut frames = frames(block).into_iter();
    let mut first = PREFACE.to_vec();
    first.extend(frame(SETTINGS, 0, 0, &[]));
    first.extend(frames.next().unwrap());
    s.write_all(&first).await.unwrap();
    served(sock).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        for f in frames {
            // The server may close mid-way: that is the expected outcome, not an error.
            if wr.write_all(&f).await.is_err() {
                break;
            }
        }
        wr
    });
    let closed = closed_within(&mut rd, Duration::from_secs(20)).await;
    writer.abort();
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpack_bombs_close_the_connection_without_memory_growth_and_others_are_served() {
    let a = agent(Limits::default()).await;
    served(&a.sock).await.unwrap();
    reset_peak();
    let before = peak_rss_kib();
    // As reproduced against `esm serve`: the table raised to 1 MiB, a 100 KB header in
    // it, 5,000 one-byte references (500 MB decoded from a 105 KB block).
    let raised = send_bomb(&a.sock, &bomb(Some(1 << 20), 100_000, 5_000)).await;
    // Within the default 4,096-byte table: a 4,000-byte header referred to 30,000 times
    // (120 MB decoded from a 34 KB block).
    let in_table = send_bomb(&a.sock, &bomb(None, 4_000, 30_000)).await;
    let grown_mib = peak_rss_kib().saturating_sub(before) / 1024;
    eprintln!("peak RSS grew by {grown_mib} MiB during the HPACK bombs");
    assert!(raised, "connection with the table-size bomb left open");
    assert!(in_table, "connection with the in-table bomb left open");
    assert!(grown_mib < 64, "peak RSS grew by {grown_mib} MiB");
    served(&a.sock).await.unwrap();
}
