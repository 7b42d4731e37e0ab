//! Repairs the HTTP/2 `:authority` that gRPC C-core clients (Python, Java, C++; so
//! py-spiffe) send on Unix sockets: the %-encoded socket path, which the `h2` crate under
//! tonic rejects as malformed and answers with PROTOCOL_ERROR (hyperium/h2#487). go-spiffe
//! and Envoy send a valid authority and pass through unchanged in meaning.
//!
//! The client-to-server byte stream is re-framed: every header block is decoded (HPACK, with
//! the client's dynamic table) and re-encoded as literals without indexing, so the server's
//! decoder never needs a dynamic table; an `:authority` that is not a valid authority becomes
//! `localhost`. All other frames pass through untouched. Pure: bytes in, bytes out.

use fluke_hpack::encoder::encode_integer_into;
use fluke_hpack::Decoder;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Every HTTP/2 peer accepts frames this large (SETTINGS_MAX_FRAME_SIZE's minimum).
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is refused (the server would refuse it too).
const MAX_BLOCK: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

struct Pending {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

pub struct Rewriter {
    decoder: Decoder<'static>,
    buf: Vec<u8>,
    preface_left: usize,
    pending: Option<Pending>,
}

impl Default for Rewriter {
    fn default() -> Self {
        Self {
            decoder: Decoder::new(),
            buf: Vec::new(),
            preface_left: PREFACE.len(),
            pending: None,
        }
    }
}

fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    // Literal Header Field without Indexing, new name (RFC 7541 §6.2.2), no Huffman.
    out.push(0);
    let _ = encode_integer_into(name.len(), 7, 0, &mut *out);
    out.extend_from_slice(name);
    let _ = encode_integer_into(value.len(), 7, 0, &mut *out);
    out.extend_from_slice(value);
}

fn valid_authority(v: &[u8]) -> bool {
    http::uri::Authority::try_from(v).is_ok()
}

impl Rewriter {
    /// Consumes `input`, appending what the server should read to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Malformed> {
        let mut input = input;
        if self.preface_left > 0 {
            let n = self.preface_left.min(input.len());
            let at = PREFACE.len() - self.preface_left;
            if input[..n] != PREFACE[at..at + n] {
                return Err(Malformed("not an HTTP/2 connection preface".into()));
            }
            out.extend_from_slice(&input[..n]);
            self.preface_left -= n;
            input = &input[n..];
        }
        self.buf.extend_from_slice(input);
        let mut at = 0;
        while self.buf.len() - at >= 9 {
            let h = &self.buf[at..at + 9];
            let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
            if self.buf.len() - at < 9 + len {
                break;
            }
            let (kind, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            // Only header frames are copied out of the buffer; everything else is relayed as is.
            let payload = || self.buf[at + 9..at + 9 + len].to_vec();
            match kind {
                HEADERS => {
                    let p = payload();
                    self.headers(flags, stream, &p, out)?
                }
                CONTINUATION => {
                    let p = payload();
                    self.continuation(flags, stream, &p, out)?
                }
                _ if self.pending.is_some() => {
                    return Err(Malformed("frame interleaved with a header block".into()))
                }
                _ => out.extend_from_slice(&self.buf[at..at + 9 + len]),
            }
            at += 9 + len;
        }
        self.buf.drain(..at);
        Ok(())
    }

    fn headers(
        &mut self,
        flags: u8,
        stream: u32,
        p: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Malformed> {
        if self.pending.is_some() {
            return Err(Malformed("HEADERS inside a header block".into()));
        }
        if p.len() > MAX_BLOCK {
            return Err(Malformed("header block too large".into()));
        }
        let bad = || Malformed("HEADERS frame too short".into());
        let mut p = p;
        if flags & PADDED != 0 {
            let pad = *p.first().ok_or_else(bad)? as usize;
            p = p
                .get(1..p.len().checked_sub(pad).ok_or_else(bad)?)
                .ok_or_else(bad)?;
        }
        let priority = if flags & PRIORITY != 0 {
            let prio: [u8; 5] = p.get(..5).ok_or_else(bad)?.try_into().map_err(|_| bad())?;
            p = &p[5..];
            Some(prio)
        } else {
            None
        };
        self.pending = Some(Pending {
            stream,
            end_stream: flags & END_STREAM != 0,
            priority,
            block: p.to_vec(),
        });
        if flags & END_HEADERS != 0 {
            self.finish(out)?;
        }
        Ok(())
    }

    fn continuation(
        &mut self,
        flags: u8,
        stream: u32,
        p: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Malformed> {
        let pending = self
            .pending
            .as_mut()
            .filter(|h| h.stream == stream)
            .ok_or_else(|| Malformed("CONTINUATION without its HEADERS".into()))?;
        if pending.block.len() + p.len() > MAX_BLOCK {
            return Err(Malformed("header block too large".into()));
        }
        pending.block.extend_from_slice(p);
        if flags & END_HEADERS != 0 {
            self.finish(out)?;
        }
        Ok(())
    }

    /// Decodes the complete block, re-encodes it and writes HEADERS (+ CONTINUATION).
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), Malformed> {
        let Some(h) = self.pending.take() else {
            return Ok(());
        };
        let mut block = Vec::with_capacity(h.block.len() + 64);
        if let Some(prio) = h.priority {
            block.extend_from_slice(&prio);
        }
        self.decoder
            .decode_with_cb(&h.block, |name, value| {
                if name.as_ref() == b":authority" && !valid_authority(&value) {
                    literal(&mut block, &name, b"localhost");
                } else {
                    literal(&mut block, &name, &value);
                }
            })
            .map_err(|e| Malformed(format!("HPACK: {e:?}")))?;
        let mut flags = if h.end_stream { END_STREAM } else { 0 };
        if h.priority.is_some() {
            flags |= PRIORITY;
        }
        let mut chunks = block.chunks(MAX_FRAME).peekable();
        let mut kind = HEADERS;
        if chunks.peek().is_none() {
            frame_header(out, 0, HEADERS, flags | END_HEADERS, h.stream);
        }
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let f = if last { flags | END_HEADERS } else { flags };
            frame_header(out, chunk.len(), kind, f, h.stream);
            out.extend_from_slice(chunk);
            kind = CONTINUATION;
            flags = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "h2_authority_tests.rs"]
mod tests;
