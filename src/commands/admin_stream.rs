//! Answers of the admin API read as they arrive, line by line: `esm entry list` and
//! `esm entry import` get one JSON line per entry (or per written batch), so 100,000
//! entries never make one message on either side. The server sends such answers with
//! chunked transfer coding, decoded here.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::{anyhow, bail};

/// The longest line of a head or of a chunk size; longer is not the admin API.
const MAX_HEAD_LINE: usize = 8 << 10;
/// The longest answer line (an entry at every bound is under 25 KiB of JSON).
pub const MAX_LINE: usize = 64 << 10;

/// Reads a chunked body (RFC 9112 §7.1): sizes in hex, extensions ignored, trailers read
/// and dropped. Ends at the last chunk; a stream that ends before it is an error.
pub struct Chunked<R> {
    inner: R,
    /// Bytes left in the current chunk; `None` once the last chunk was read.
    left: Option<u64>,
}

impl<R: BufRead> Chunked<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            left: Some(0),
        }
    }

    fn line(&mut self) -> std::io::Result<String> {
        let mut buf = Vec::new();
        (&mut self.inner)
            .take(MAX_HEAD_LINE as u64)
            .read_until(b'\n', &mut buf)?;
        if buf.last() != Some(&b'\n') {
            return Err(bad("chunked answer cut short"));
        }
        String::from_utf8(buf).map_err(|_| bad("chunk size line is not text"))
    }
}

fn bad(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned())
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.left {
                None => return Ok(0),
                Some(0) => {
                    let line = self.line()?;
                    let size = line.trim_end().split(';').next().unwrap_or_default().trim();
                    let size =
                        u64::from_str_radix(size, 16).map_err(|_| bad("chunk size is not hex"))?;
                    if size == 0 {
                        while !self.line()?.trim_end().is_empty() {}
                        self.left = None;
                    } else {
                        self.left = Some(size);
                    }
                }
                Some(n) => {
                    let want = out.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                    let got = self.inner.read(&mut out[..want])?;
                    if got == 0 {
                        return Err(bad("chunked answer cut short"));
                    }
                    let rest = n - got as u64;
                    if rest == 0 {
                        if self.line()?.trim_end().is_empty() {
                            self.left = Some(0);
                        } else {
                            return Err(bad("chunk longer than its size"));
                        }
                    } else {
                        self.left = Some(rest);
                    }
                    return Ok(got);
                }
            }
        }
    }
}

/// Connects to the admin socket (a refused connection is the caller's: no `esm serve` for
/// this data dir) and sends a request's head, with the CLI user as the actor.
pub fn send_head(
    socket: &std::path::Path,
    method: &str,
    path: &str,
    content_type: &str,
    content_length: usize,
    timeout: Duration,
) -> anyhow::Result<UnixStream> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        crate::exit::usage(format!(
            "admin socket {}: {e} (is `esm serve` running for this data dir?)",
            socket.display()
        ))
    })?;
    s.set_read_timeout(Some(timeout))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: esm\r\nconnection: close\r\nx-esm-actor: {}\r\n\
         content-type: {content_type}\r\ncontent-length: {content_length}\r\n\r\n",
        crate::audit_store::cli_actor(),
    );
    s.write_all(head.as_bytes())?;
    Ok(s)
}

/// A 2xx answer's body, to read line by line.
pub type Lines = Box<dyn BufRead>;

/// Sends one request over the admin socket and returns the status and a reader of the
/// body (chunked, sized or up to the close). `timeout` bounds each wait for bytes.
pub fn exchange(
    socket: &std::path::Path,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> anyhow::Result<(u16, Lines)> {
    let mut s = send_head(
        socket,
        method,
        path,
        "application/x-ndjson",
        body.len(),
        timeout,
    )?;
    // The server may answer (a refusal) before taking the whole body: read its answer.
    if let Err(e) = s.write_all(body) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
    }
    let mut r = BufReader::new(s);
    let (status, chunked, length) = read_head(&mut r)?;
    let body: Lines = match (chunked, length) {
        (true, _) => Box::new(BufReader::new(Chunked::new(r))),
        (false, Some(n)) => Box::new(r.take(n)),
        (false, None) => Box::new(r),
    };
    Ok((status, body))
}

/// Status, whether the body is chunked, and its length when given.
fn read_head(r: &mut impl BufRead) -> anyhow::Result<(u16, bool, Option<u64>)> {
    let mut status = None;
    let (mut chunked, mut length) = (false, None);
    for n in 0.. {
        let mut line = Vec::new();
        r.take(MAX_HEAD_LINE as u64).read_until(b'\n', &mut line)?;
        if line.last() != Some(&b'\n') || n > 100 {
            bail!("admin API: malformed response");
        }
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end();
        if n == 0 {
            status = line.split_whitespace().nth(1).and_then(|c| c.parse().ok());
            continue;
        }
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            if k == "transfer-encoding" && v.contains("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = Some(
                    v.parse()
                        .map_err(|_| anyhow!("admin API: bad content-length"))?,
                );
            }
        }
    }
    let status = status.ok_or_else(|| anyhow!("admin API: malformed status line"))?;
    Ok((status, chunked, length))
}

/// The next line of an answer, without its newline; `None` at the end. A line longer
/// than [`MAX_LINE`] is not one the admin API sends.
pub fn next_line(r: &mut dyn BufRead) -> anyhow::Result<Option<String>> {
    let mut buf = Vec::new();
    r.take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf)?;
    if buf.is_empty() {
        return Ok(None);
    }
    if buf.len() > MAX_LINE {
        bail!("admin API: answer line longer than {MAX_LINE} bytes");
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(Some(
        String::from_utf8(buf).map_err(|_| anyhow!("admin API: answer is not UTF-8"))?,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn dechunk(raw: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Chunked::new(raw).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn decodes_chunks_with_extensions_and_trailers() {
        let raw = b"5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\nleftover";
        assert_eq!(dechunk(raw).unwrap(), b"hello, world");
    }

    #[test]
    fn rejects_malformed_chunked_bodies() {
        for raw in [
            &b"5\r\nhel"[..],
            b"zz\r\nhello\r\n0\r\n\r\n",
            b"3\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n",
            b"ffffffffffffffffff\r\n",
        ] {
            assert!(dechunk(raw).is_err(), "{raw:?}");
        }
        let long = vec![b'1'; MAX_HEAD_LINE + 10];
        assert!(dechunk(&long).is_err());
    }

    #[test]
    fn reads_status_and_framing_from_the_head() {
        let mut r: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\ncontent-type: x\r\n\r\n";
        assert_eq!(read_head(&mut r).unwrap(), (200, true, None));
        let mut r: &[u8] = b"HTTP/1.1 422 X\r\ncontent-length: 12\r\n\r\n";
        assert_eq!(read_head(&mut r).unwrap(), (422, false, Some(12)));
        for bad in [
            &b"HTTP/1.1 200"[..],
            b"garbage\r\n\r\n",
            b"HTTP/1.1 200\r\ncontent-length: x\r\n\r\n",
        ] {
            let mut r = bad;
            assert!(read_head(&mut r).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn answer_lines_are_bounded() {
        let mut ok: &[u8] = b"{\"a\":1}\r\n{}";
        assert_eq!(next_line(&mut ok).unwrap().unwrap(), "{\"a\":1}");
        assert_eq!(next_line(&mut ok).unwrap().unwrap(), "{}");
        assert!(next_line(&mut ok).unwrap().is_none());
        let long = vec![b'x'; MAX_LINE + 2];
        assert!(next_line(&mut &long[..]).is_err());
    }
}
