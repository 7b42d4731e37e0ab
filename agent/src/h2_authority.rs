//! Repairs the HTTP/2 `:authority` that gRPC C-core clients (Python, Java, C++; so
//! py-spiffe) send on Unix sockets: the %-encoded socket path, which the `h2` crate under
//! tonic rejects as malformed and answers with PROTOCOL_ERROR (hyperium/h2#487). go-spiffe
//! and Envoy send a valid authority and pass through unchanged in meaning.
//!
//! The client-to-server byte stream is re-framed: every header block is decoded (HPACK, with
//! the client's dynamic table) and re-encoded as literals without indexing, so the server's
//! decoder never needs a dynamic table; an `:authority` that is not a valid authority becomes
//! `localhost`. All other frames pass through untouched. Pure: bytes in, bytes out.
//!
//! Decoding is where a client can make the relay spend memory it did not send: one byte
//! naming a dynamic-table entry decodes to the whole entry. So the relay holds the client to
//! the limits the server advertises (see the constants) *before* the server sees anything:
//! the header list is counted while it is decoded and nothing past [`MAX_HEADER_LIST`] is
//! written, the dynamic table cannot grow past [`MAX_TABLE`], and no frame or block is
//! buffered beyond its limit. A client over a limit gets its connection closed.

use fluke_hpack::encoder::encode_integer_into;
use fluke_hpack::Decoder;

use super::hpack_check::check_block;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Largest frame a client may send: SETTINGS_MAX_FRAME_SIZE's initial value, which the
/// server keeps (server.rs sets it from here). A longer frame is a FRAME_SIZE_ERROR
/// (RFC 9113 §4.2), so it is refused from its 9-byte header, before its payload is buffered.
pub const MAX_FRAME: usize = 16_384;
/// Largest decoded header list, counted as RFC 9113 §6.5.2 says (name + value + 32 per
/// field). 16 KiB is hyper's default SETTINGS_MAX_HEADER_LIST_SIZE and what the server
/// advertises (server.rs sets it from here), so nothing the server would take is refused;
/// a SPIFFE or SDS request's headers are a few hundred bytes.
pub const MAX_HEADER_LIST: usize = 16 << 10;
/// Largest HPACK dynamic table a client may use: SETTINGS_HEADER_TABLE_SIZE's initial
/// value. The server never advertises another, so a table size update above it is a
/// COMPRESSION_ERROR (RFC 7541 §4.2, §6.3). It bounds what one table reference expands to.
pub const MAX_TABLE: usize = 4_096;
/// Largest header block before decoding. Even Huffman's longest codes (30 bits for one
/// octet) cannot make a list within [`MAX_HEADER_LIST`] take four times its size.
const MAX_BLOCK: usize = 4 * MAX_HEADER_LIST;
/// Output after which [`Rewriter::feed`] stops and leaves the rest for the next call: a few
/// bytes of HEADERS frames can each decode to [`MAX_HEADER_LIST`], and without a stop one
/// read's worth of them would all be re-encoded at once.
const OUT_BUDGET: usize = 64 << 10;

/// The client broke HTTP/2 or one of the limits above: its connection is closed.
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
    /// Whether a whole frame has come after the preface (the client's SETTINGS).
    framed: bool,
    pending: Option<Pending>,
    /// The re-encoded block being built; kept to be reused.
    scratch: Vec<u8>,
}

impl Default for Rewriter {
    fn default() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(MAX_TABLE);
        Self {
            decoder,
            buf: Vec::new(),
            preface_left: PREFACE.len(),
            framed: false,
            pending: None,
            scratch: Vec::new(),
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

/// The payload length of the frame whose header starts `b`, once the header is all there.
fn frame_len(b: &[u8]) -> Option<usize> {
    let h = b.get(..9)?;
    Some(u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize)
}

impl Rewriter {
    /// Consumes `input`, appending what the server should read to `out`. Stops once `out`
    /// holds [`OUT_BUDGET`] bytes; then [`Self::backlog`] is true and `feed(&[], out)` goes on.
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
        while out.len() < OUT_BUDGET {
            let Some(len) = frame_len(&self.buf[at..]) else {
                break;
            };
            if len > MAX_FRAME {
                return Err(Malformed(format!("frame of {len} bytes, over {MAX_FRAME}")));
            }
            if self.buf.len() - at < 9 + len {
                break;
            }
            self.framed = true;
            let h = &self.buf[at..at + 9];
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

    /// Whole frames are buffered that the last [`Self::feed`] left for lack of budget.
    pub fn backlog(&self) -> bool {
        frame_len(&self.buf).is_some_and(|len| self.buf.len() >= 9 + len)
    }

    /// The client owes nothing: its preface and first frame are in, and no frame or header
    /// block is half-sent. Only then may a connection stay silent for long.
    pub fn at_rest(&self) -> bool {
        self.framed && self.buf.is_empty() && self.pending.is_none()
    }

    /// Gives back buffer space over `keep` bytes that a burst of frames left allocated.
    pub fn shrink_to(&mut self, keep: usize) {
        self.buf.shrink_to(keep);
        self.scratch.shrink_to(keep);
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
            return Err(Malformed(format!("header block over {MAX_BLOCK} bytes")));
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
        check_block(&h.block, MAX_TABLE)?;
        let block = &mut self.scratch;
        block.clear();
        if let Some(prio) = h.priority {
            block.extend_from_slice(&prio);
        }
        // Counted field by field as the decoder yields them: once the list is over the
        // limit nothing more is written, and the rest of the block (at most MAX_BLOCK bytes)
        // is only walked so the error can be returned.
        let mut list = 0usize;
        let mut over = false;
        self.decoder
            .decode_with_cb(&h.block, |name, value| {
                list = list.saturating_add(name.len() + value.len() + 32);
                over |= list > MAX_HEADER_LIST;
                if over {
                    return;
                }
                if name.as_ref() == b":authority" && !valid_authority(&value) {
                    literal(block, &name, b"localhost");
                } else {
                    literal(block, &name, &value);
                }
            })
            .map_err(|e| Malformed(format!("HPACK: {e:?}")))?;
        if over {
            return Err(Malformed(format!(
                "header list over {MAX_HEADER_LIST} bytes once decoded"
            )));
        }
        let mut flags = if h.end_stream { END_STREAM } else { 0 };
        if h.priority.is_some() {
            flags |= PRIORITY;
        }
        let mut chunks = self.scratch.chunks(MAX_FRAME).peekable();
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
