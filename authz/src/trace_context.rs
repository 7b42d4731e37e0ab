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

/// Lower-case hex only: the W3C format forbids upper case, and B3 ids are lower case.
fn hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn nonzero(s: &str) -> bool {
    s.bytes().any(|b| b != b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_the_trace_id_of_a_w3c_traceparent() {
        assert_eq!(
            from_traceparent(TP),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let future = format!("01-{}-extra", &TP[3..]);
        assert_eq!(
            from_traceparent(&future),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn rejects_malformed_traceparents() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e47\u{e9}-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736\n-00f067aa0ba902b7-01",
        ] {
            assert_eq!(from_traceparent(bad), None, "{bad:?}");
        }
        let huge = format!("00-{}-00f067aa0ba902b7-01", "a".repeat(1 << 20));
        assert_eq!(from_traceparent(&huge), None);
    }

    #[test]
    fn reads_b3_ids_of_64_and_128_bits_and_the_single_header() {
        assert_eq!(from_b3("a3ce929d0e0e4736"), Some("a3ce929d0e0e4736"));
        assert_eq!(
            from_b3("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
            Some("80f198ee56343ba864fe8b2a57d3eff7")
        );
        for bad in [
            "",
            "0000000000000000",
            "a3ce929d0e0e473",
            "A3CE929D0E0E4736",
            "1-2-3",
            "x",
        ] {
            assert_eq!(from_b3(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn prefers_traceparent_then_b3() {
        let headers = [("traceparent", TP), ("x-b3-traceid", "a3ce929d0e0e4736")];
        let get = |n: &str| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        assert_eq!(trace_id(get), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        let b3_only = [
            ("traceparent", "garbage"),
            ("x-b3-traceid", "a3ce929d0e0e4736"),
        ];
        let get = |n: &str| b3_only.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        assert_eq!(trace_id(get), Some("a3ce929d0e0e4736"));
        let none: [(&str, &str); 0] = [];
        let get = |n: &str| none.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        assert_eq!(trace_id(get), None);
    }
}
