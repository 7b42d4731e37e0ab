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

fn lookup<'a>(headers: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
    move |n: &str| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
}

#[test]
fn continues_the_span_of_a_traceparent() {
    let p = parent_from_traceparent(TP).expect("valid");
    assert_eq!(p.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_eq!(p.span_id, 0x00f067aa0ba902b7);
    assert!(p.sampled);
    let unsampled = TP.replace("-01", "-00");
    assert!(!parent_from_traceparent(&unsampled).expect("valid").sampled);
}

#[test]
fn continues_the_span_of_b3_multi_headers() {
    let h = [
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-sampled", "1"),
    ];
    let p = parent(lookup(&h)).expect("valid");
    assert_eq!(p.trace_id, 0x80f198ee56343ba864fe8b2a57d3eff7);
    assert_eq!(p.span_id, 0xe457b5a2e4d86bd1);
    assert!(p.sampled);
}

#[test]
fn widens_a_64_bit_b3_trace_id_with_leading_zeros() {
    let p = parent_from_b3_headers("a3ce929d0e0e4736", "e457b5a2e4d86bd1", None).expect("valid");
    assert_eq!(p.trace_id, 0xa3ce929d0e0e4736);
    assert!(p.sampled, "an absent sampling state defers to us");
}

#[test]
fn continues_the_span_of_a_single_b3_header() {
    let p = parent_from_b3_single(
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0-05e3ac9a4f6e3b90",
    )
    .expect("valid");
    assert_eq!(p.span_id, 0xe457b5a2e4d86bd1);
    assert!(!p.sampled);
    let p =
        parent_from_b3_single("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1").expect("valid");
    assert!(p.sampled);
}

#[test]
fn rejects_hostile_b3_contexts() {
    let huge = "a".repeat(1 << 20);
    for bad in [
        "",
        "0",
        "1",
        "d",
        "00000000000000000000000000000000-e457b5a2e4d86bd1",
        "80f198ee56343ba864fe8b2a57d3eff7-0000000000000000",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1a",
        "80f198ee56343ba864fe8b2a57d3eff7-E457B5A2E4D86BD1",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bzz",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-2",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-xyz",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-x",
        "80f198ee56343ba864fe8b2a57d3eff7e-e457b5a2e4d86bd1",
        "80f198ee56343ba8-64fe8b2a57d3eff7-e457b5a2e4d86bd1",
        huge.as_str(),
    ] {
        assert_eq!(parent_from_b3_single(bad), None, "{bad:?}");
    }
    assert_eq!(
        parent_from_b3_headers("a3ce929d0e0e4736", "e457b5a2e4d86bd1", Some("yes")),
        None
    );
    assert_eq!(
        parent_from_b3_headers("a3ce929d0e0e4736", &huge, None),
        None
    );
}

#[test]
fn rejects_hostile_traceparents_as_parents() {
    let huge = format!("00-{}-00f067aa0ba902b7-01", "a".repeat(1 << 20));
    for bad in [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bg-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        huge.as_str(),
    ] {
        assert_eq!(parent_from_traceparent(bad), None, "{bad:?}");
    }
}

#[test]
fn a_malformed_traceparent_falls_back_to_b3_then_nothing() {
    let h = [
        ("traceparent", "00-zz-zz-01"),
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
    ];
    assert_eq!(
        parent(lookup(&h)).map(|p| p.span_id),
        Some(0xe457b5a2e4d86bd1)
    );
    let h = [("x-b3-traceid", "a3ce929d0e0e4736")];
    assert_eq!(parent(lookup(&h)), None, "a trace id alone names no span");
}

#[test]
fn the_otel_context_is_remote_with_envoys_ids() {
    use opentelemetry::trace::TraceContextExt;
    let p = parent_from_traceparent(TP).expect("valid");
    let cx = p.otel_context();
    let sc = cx.span().span_context().clone();
    assert!(sc.is_remote() && sc.is_valid() && sc.is_sampled());
    assert_eq!(
        sc.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
}
