//! The trace id Envoy propagates with a request, read from the CheckRequest's headers, so
//! that a Check's span and log lines carry the id the rest of the mesh logs under: W3C
//! `traceparent` first, then B3 (`x-b3-traceid`, or the single `b3` header), as Envoy's
//! tracers send them. The headers are the client's: anything not exactly of the format
//! is ignored, never echoed.

/// The 32-hex-digit trace id of `traceparent`
/// (`version-traceid-parentid-flags`, <https://www.w3.org/TR/trace-context/>).
pub fn from_traceparent(v: &str) -> Option<&str> {
    let mut parts = v.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    // Version 00 has exactly four parts; a later version may append more.
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let ok = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && nonzero(trace)
        && hex(parent, 16)
        && nonzero(parent)
        && hex(flags, 2);
    ok.then_some(trace)
}

/// A B3 trace id: 16 or 32 hex digits (`x-b3-traceid`, or the first part of `b3`).
pub fn from_b3(v: &str) -> Option<&str> {
    let id = v.trim().split('-').next()?;
    ((hex(id, 32) || hex(id, 16)) && nonzero(id)).then_some(id)
}

/// The trace id of a request with these headers (`get` looks one up by lower-case name).
pub fn trace_id<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<&'a str> {
    get("traceparent")
        .and_then(from_traceparent)
        .or_else(|| get("x-b3-traceid").and_then(from_b3))
        .or_else(|| get("b3").and_then(from_b3))
}

/// The span of Envoy's that a Check continues: the trace it belongs to and Envoy's own span
/// id, which becomes the parent of `authz.check` when traces are exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    /// 128 bits; a 64-bit B3 id is widened with leading zeros, as B3 specifies.
    pub trace_id: u128,
    pub span_id: u64,
    /// Envoy's sampling decision; a B3 context without one (deferred) counts as sampled.
    pub sampled: bool,
}

impl Parent {
    /// The OpenTelemetry context whose (remote) span is this one.
    pub fn otel_context(self) -> opentelemetry::Context {
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
        };
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let span = SpanContext::new(
            TraceId::from(self.trace_id),
            SpanId::from(self.span_id),
            flags,
            true,
            TraceState::default(),
        );
        opentelemetry::Context::new().with_remote_span_context(span)
    }
}

/// The whole context of a `traceparent`: trace id, parent span id, sampled flag.
pub fn parent_from_traceparent(v: &str) -> Option<Parent> {
    let trace = from_traceparent(v)?;
    // from_traceparent checked every part's format; only the values are left to read.
    let mut parts = v.trim().split('-').skip(2);
    let span = parts.next()?;
    let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
    Some(Parent {
        trace_id: u128::from_str_radix(trace, 16).ok()?,
        span_id: u64::from_str_radix(span, 16).ok()?,
        sampled: flags & 1 == 1,
    })
}

/// A B3 span id: 16 hex digits, not all zero.
fn b3_span(v: &str) -> Option<u64> {
    let v = v.trim();
    (hex(v, 16) && nonzero(v))
        .then(|| u64::from_str_radix(v, 16).ok())
        .flatten()
}

/// B3 sampling state: `1` or `d` (debug) sample, `0` does not; absent defers to us (sampled).
fn b3_sampled(v: Option<&str>) -> Option<bool> {
    match v.map(str::trim) {
        None | Some("1") | Some("d") | Some("true") => Some(true),
        Some("0") | Some("false") => Some(false),
        Some(_) => None,
    }
}

/// The multi-header B3 context (`x-b3-traceid`, `x-b3-spanid`, optional `x-b3-sampled`).
pub fn parent_from_b3_headers(trace: &str, span: &str, sampled: Option<&str>) -> Option<Parent> {
    let trace = from_b3(trace)?;
    Some(Parent {
        trace_id: u128::from_str_radix(trace, 16).ok()?,
        span_id: b3_span(span)?,
        sampled: b3_sampled(sampled)?,
    })
}

/// The single `b3` header: `traceid-spanid[-sampling[-parentspanid]]`. A bare sampling
/// state (`0`, `1`, `d`) carries no span to continue.
pub fn parent_from_b3_single(v: &str) -> Option<Parent> {
    let mut parts = v.trim().split('-');
    let trace = parts.next()?;
    let span = parts.next()?;
    let sampled = parts.next();
    if let Some(grandparent) = parts.next() {
        b3_span(grandparent)?;
    }
    if parts.next().is_some() {
        return None;
    }
    parent_from_b3_headers(trace, span, sampled)
}

/// The span to continue for a request with these headers, in the order of [`trace_id`].
pub fn parent<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<Parent> {
    if let Some(p) = get("traceparent").and_then(parent_from_traceparent) {
        return Some(p);
    }
    if let (Some(t), Some(s)) = (get("x-b3-traceid"), get("x-b3-spanid")) {
        if let Some(p) = parent_from_b3_headers(t, s, get("x-b3-sampled")) {
            return Some(p);
        }
    }
    get("b3").and_then(parent_from_b3_single)
}

/// Lower-case hex only: the W3C format forbids upper case, and B3 ids are lower case.
fn hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn nonzero(s: &str) -> bool {
    s.bytes().any(|b| b != b'0')
}

#[cfg(test)]
#[path = "trace_context_tests.rs"]
mod tests;
