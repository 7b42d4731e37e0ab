//! In-process decision time with request bodies: a policy that reads a field of a 1 KiB
//! multipart/form-data body, and one that reads a field of a 1 KiB gRPC message (decoded by
//! `authz.proto_descriptor`), next to the default policy, which reads no body, deciding the
//! same request with and without a 1 KiB body. Every decision is evaluated (no memo), so
//! the body is parsed each time a policy reads it; the last pair shows that a policy which
//! does not read `parsed_body` does not pay for parsing it.
//!
//! `cargo bench -p esm-authz --bench bodies`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/request.rs"]
#[allow(dead_code)]
mod request;

use std::path::Path;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion};
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use esm_authz::check::{check, CheckOptions};
use esm_authz::grpc_body::ProtoDescriptors;
use esm_authz::policy_set::{PolicySet, SourceFile};
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    MethodDescriptorProto, ServiceDescriptorProto,
};

fn policy(allow: &str) -> PolicySet {
    let text =
        format!("package envoy.authz\n\nimport rego.v1\n\ndefault allow := false\n\n{allow}\n");
    PolicySet::compile(
        vec![SourceFile {
            path: "policy.rego".into(),
            text,
        }],
        "data.envoy.authz.allow",
    )
    .unwrap()
    .with_memo_capacity(0)
}

/// `req` with `body` (as text and bytes), its content type and path.
fn with_body(path: &str, content_type: &str, body: Vec<u8>) -> CheckRequest {
    let mut req = request::granted();
    let http = req
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .unwrap();
    http.method = "POST".into();
    http.path = path.into();
    http.headers
        .insert("content-type".into(), content_type.into());
    http.size = body.len() as i64;
    http.body = String::from_utf8_lossy(&body).into_owned();
    http.raw_body = body;
    req
}

/// A form of text fields and one JSON part, about 1 KiB, with `role=admin` last.
fn multipart_1k() -> Vec<u8> {
    let mut b = String::new();
    for i in 0..12 {
        b.push_str(&format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"note{i}\"\r\n\r\n{}\r\n",
            "n".repeat(20)
        ));
    }
    b.push_str("--XyZ\r\nContent-Disposition: form-data; name=\"meta\"\r\nContent-Type: application/json\r\n\r\n{\"line\": 3, \"shift\": \"night\"}\r\n");
    b.push_str(
        "--XyZ\r\nContent-Disposition: form-data; name=\"role\"\r\n\r\nadmin\r\n--XyZ--\r\n",
    );
    while b.len() < 1000 {
        b.insert_str(
            0,
            "--XyZ\r\nContent-Disposition: form-data; name=\"pad\"\r\n\r\npad\r\n",
        );
    }
    b.into_bytes()
}

fn string_field(name: &str, number: i32, repeated: bool) -> FieldDescriptorProto {
    FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        label: Some(if repeated {
            Label::Repeated
        } else {
            Label::Optional
        } as i32),
        r#type: Some(Type::String as i32),
        ..Default::default()
    }
}

/// `package plant.v1; service Lines { rpc Report(Reading) }` with
/// `Reading { string user_name = 1; repeated string notes = 2; }`.
fn descriptors() -> ProtoDescriptors {
    let file = FileDescriptorProto {
        name: Some("plant.proto".into()),
        package: Some("plant.v1".into()),
        message_type: vec![DescriptorProto {
            name: Some("Reading".into()),
            field: vec![
                string_field("user_name", 1, false),
                string_field("notes", 2, true),
            ],
            ..Default::default()
        }],
        service: vec![ServiceDescriptorProto {
            name: Some("Lines".into()),
            method: vec![MethodDescriptorProto {
                name: Some("Report".into()),
                input_type: Some(".plant.v1.Reading".into()),
                output_type: Some(".plant.v1.Reading".into()),
                ..Default::default()
            }],
            ..Default::default()
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    };
    ProtoDescriptors::from_bytes(&FileDescriptorSet { file: vec![file] }.encode_to_vec()).unwrap()
}

/// One uncompressed gRPC frame of a Reading of about 1 KiB.
fn grpc_1k() -> Vec<u8> {
    let mut msg = Vec::new();
    let mut put = |number: u8, text: &str| {
        msg.push(number << 3 | 2);
        msg.push(text.len() as u8);
        msg.extend_from_slice(text.as_bytes());
    };
    put(1, "ana");
    for i in 0..16 {
        put(2, &format!("{i:02}{}", "x".repeat(58)));
    }
    let mut frame = vec![0];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    frame
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("authz_bodies");
    let form = policy(r#"allow if input.parsed_body.role[0] == "admin""#);
    let form_req = with_body(
        "/forms",
        "multipart/form-data; boundary=XyZ",
        multipart_1k(),
    );
    let opts = CheckOptions::default();
    assert!(check(&form, &form_req, &opts).decision.allowed);
    g.bench_function("multipart_1k_read_by_policy", |b| {
        b.iter(|| check(&form, &form_req, &opts))
    });

    let grpc = policy(r#"allow if input.parsed_body.userName == "ana""#);
    let grpc_req = with_body("/plant.v1.Lines/Report", "application/grpc", grpc_1k());
    let mut grpc_opts = CheckOptions::default();
    grpc_opts.input.proto_descriptor = Some(descriptors());
    assert!(check(&grpc, &grpc_req, &grpc_opts).decision.allowed);
    g.bench_function("grpc_1k_read_by_policy", |b| {
        b.iter(|| check(&grpc, &grpc_req, &grpc_opts))
    });

    // The default policy reads identities, method and path, never the body.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/default");
    let default = PolicySet::load(&dir, "data.envoy.authz.allow")
        .unwrap()
        .with_memo_capacity(0);
    let plain = request::granted();
    let mut json = request::granted();
    let body = format!("{{\"items\": [{}]}}", vec!["\"abcdefghij\""; 80].join(","));
    if let Some(h) = json
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        h.headers
            .insert("content-type".into(), "application/json".into());
        h.size = body.len() as i64;
        h.body = body;
    }
    g.bench_function("default_policy_no_body", |b| {
        b.iter(|| check(&default, &plain, &opts))
    });
    g.bench_function("default_policy_1k_json_body_unread", |b| {
        b.iter(|| check(&default, &json, &opts))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
