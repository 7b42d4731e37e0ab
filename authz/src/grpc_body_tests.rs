#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use crate::input::tests_support::http_request;
use crate::input::{build, InputOptions};
use prost::Message;
use prost_reflect::{DynamicMessage, Value as PValue};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
    FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto,
};

fn field(
    name: &str,
    number: i32,
    ty: Type,
    type_name: &str,
    repeated: bool,
) -> FieldDescriptorProto {
    FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        label: Some(if repeated {
            Label::Repeated
        } else {
            Label::Optional
        } as i32),
        r#type: Some(ty as i32),
        type_name: (!type_name.is_empty()).then(|| type_name.into()),
        ..Default::default()
    }
}

fn method(name: &str, client_streaming: bool) -> MethodDescriptorProto {
    MethodDescriptorProto {
        name: Some(name.into()),
        input_type: Some(".things.v1.Point".into()),
        output_type: Some(".things.v1.Point".into()),
        client_streaming: Some(client_streaming),
        ..Default::default()
    }
}

/// `package things.v1; service Things { rpc Get(Point); rpc Upload(stream Point); }` with a
/// Point of every JSON mapping that differs from the field's plain text, and a recursive
/// Inner for nesting.
fn descriptor_set() -> Vec<u8> {
    let point = DescriptorProto {
        name: Some("Point".into()),
        field: vec![
            field("id", 1, Type::Int64, "", false),
            field("user_name", 2, Type::String, "", false),
            field("tags", 3, Type::String, "", true),
            field("kind", 4, Type::Enum, ".things.v1.Kind", false),
            field("inner", 5, Type::Message, ".things.v1.Inner", false),
            field("blob", 6, Type::Bytes, "", false),
            field("count", 7, Type::Int32, "", false),
        ],
        ..Default::default()
    };
    let inner = DescriptorProto {
        name: Some("Inner".into()),
        field: vec![
            field("on", 1, Type::Bool, "", false),
            field("next", 2, Type::Message, ".things.v1.Inner", false),
        ],
        ..Default::default()
    };
    let kind = EnumDescriptorProto {
        name: Some("Kind".into()),
        value: ["KIND_UNSPECIFIED", "KIND_A"]
            .iter()
            .enumerate()
            .map(|(i, n)| EnumValueDescriptorProto {
                name: Some((*n).into()),
                number: Some(i as i32),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let file = FileDescriptorProto {
        name: Some("things.proto".into()),
        package: Some("things.v1".into()),
        message_type: vec![point, inner],
        enum_type: vec![kind],
        service: vec![ServiceDescriptorProto {
            name: Some("Things".into()),
            method: vec![method("Get", false), method("Upload", true)],
            ..Default::default()
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    };
    FileDescriptorSet { file: vec![file] }.encode_to_vec()
}

fn descriptors() -> ProtoDescriptors {
    ProtoDescriptors::from_bytes(&descriptor_set()).unwrap()
}

fn point_bytes(d: &ProtoDescriptors) -> Vec<u8> {
    let desc = d.pool.get_message_by_name("things.v1.Point").unwrap();
    let mut m = DynamicMessage::new(desc);
    m.set_field_by_name("id", PValue::I64(7));
    m.set_field_by_name("user_name", PValue::String("ana".into()));
    m.set_field_by_name(
        "tags",
        PValue::List(vec![PValue::String("x".into()), PValue::String("y".into())]),
    );
    m.set_field_by_name("kind", PValue::EnumNumber(1));
    m.set_field_by_name("blob", PValue::Bytes(vec![1, 2].into()));
    m.encode_to_vec()
}

fn frame(flag: u8, message: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

fn json(v: &Value) -> serde_json::Value {
    serde_json::from_str(&v.to_json_str().unwrap()).unwrap()
}

#[test]
fn decodes_the_first_message_by_its_methods_input_type_in_protobuf_json() {
    let d = descriptors();
    let (v, truncated) = parsed_grpc_body(
        Some(&d),
        "/things.v1.Things/Get",
        &frame(0, &point_bytes(&d)),
    )
    .unwrap();
    assert!(!truncated);
    assert_eq!(
        json(&v),
        serde_json::json!({"id": "7", "userName": "ana", "tags": ["x", "y"], "kind": "KIND_A", "blob": "AQI="})
    );
}

#[test]
fn reads_only_the_first_of_several_frames() {
    let d = descriptors();
    let mut body = frame(0, &point_bytes(&d));
    body.extend(frame(0, b"\xff\xff\xff"));
    let (v, truncated) = parsed_grpc_body(Some(&d), "/things.v1.Things/Get", &body).unwrap();
    assert!(!truncated);
    assert_eq!(json(&v)["userName"], "ana");
}

#[test]
fn an_empty_message_is_an_empty_object() {
    let d = descriptors();
    let (v, _) = parsed_grpc_body(Some(&d), "/things.v1.Things/Get", &frame(0, b"")).unwrap();
    assert_eq!(json(&v), serde_json::json!({}));
}

#[test]
fn gives_null_without_descriptors_raw_body_or_a_known_method() {
    let d = descriptors();
    let body = frame(0, &point_bytes(&d));
    for (descs, path, raw) in [
        (None, "/things.v1.Things/Get", body.as_slice()),
        (Some(&d), "/things.v1.Things/Get", &[][..]),
        (Some(&d), "/things.v1.Other/Get", body.as_slice()),
        (Some(&d), "/things.v1.Things/Missing", body.as_slice()),
        // Only the first message of a client stream would be seen: not decoded.
        (Some(&d), "/things.v1.Things/Upload", body.as_slice()),
    ] {
        assert_eq!(
            parsed_grpc_body(descs, path, raw).unwrap(),
            (Value::Null, false),
            "{path}"
        );
    }
}

#[test]
fn a_compressed_frame_is_null_not_an_error() {
    let d = descriptors();
    let got = parsed_grpc_body(Some(&d), "/things.v1.Things/Get", &frame(1, b"\x1f\x8b")).unwrap();
    assert_eq!(got, (Value::Null, false));
}

#[test]
fn a_frame_longer_than_the_body_is_truncated() {
    let d = descriptors();
    let mut body = frame(0, &point_bytes(&d));
    body.truncate(body.len() - 1);
    let got = parsed_grpc_body(Some(&d), "/things.v1.Things/Get", &body).unwrap();
    assert_eq!(got, (Value::Null, true));
    // A length near u32::MAX does not overflow the bounds check.
    let got = parsed_grpc_body(
        Some(&d),
        "/things.v1.Things/Get",
        &[0, 0xff, 0xff, 0xff, 0xff, 1],
    )
    .unwrap();
    assert_eq!(got, (Value::Null, true));
}

#[test]
fn refuses_a_path_that_is_not_service_and_method() {
    let d = descriptors();
    let body = frame(0, &point_bytes(&d));
    for path in [
        "/things.v1.Things",
        "/things.v1.Things/Get/extra",
        "/",
        "/a%zz/b",
    ] {
        let e = parsed_grpc_body(Some(&d), path, &body).unwrap_err();
        assert!(matches!(e, Error::Request(_)), "{path}: {e}");
    }
}

#[test]
fn a_percent_encoded_path_names_the_same_method() {
    let d = descriptors();
    let body = frame(0, &point_bytes(&d));
    let (v, _) = parsed_grpc_body(Some(&d), "/things.v1.Things/G%65t?x=1", &body).unwrap();
    assert_eq!(json(&v)["id"], "7");
}

#[test]
fn refuses_a_body_shorter_than_a_frame_header() {
    let d = descriptors();
    let e = parsed_grpc_body(Some(&d), "/things.v1.Things/Get", &[0, 0, 0]).unwrap_err();
    assert!(e.to_string().contains("shorter than a frame header"), "{e}");
}

#[test]
fn refuses_a_message_that_does_not_decode() {
    let d = descriptors();
    // Field 2 (a string) says 100 bytes follow; 1 does. Then a wire type that does not exist.
    for message in [&b"\x12\x64a"[..], b"\x0f", b"\x12\x02\xff\xfe"] {
        let e =
            parsed_grpc_body(Some(&d), "/things.v1.Things/Get", &frame(0, message)).unwrap_err();
        assert!(e.to_string().contains("things.v1.Things/Get"), "{e}");
    }
}

#[test]
fn refuses_nesting_past_the_decoders_recursion_limit_without_overflowing_the_stack() {
    let d = descriptors();
    // Inner.next nested 10,000 deep, built from the inside out.
    let mut inner: Vec<u8> = b"\x08\x01".to_vec();
    for _ in 0..10_000 {
        let mut outer = vec![0x12];
        let mut len = inner.len() as u64;
        loop {
            let b = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                outer.push(b);
                break;
            }
            outer.push(b | 0x80);
        }
        outer.extend_from_slice(&inner);
        inner = outer;
    }
    let mut point = vec![0x2a];
    prost::encoding::encode_varint(inner.len() as u64, &mut point);
    point.extend(inner);
    let got = parsed_grpc_body(Some(&d), "/things.v1.Things/Get", &frame(0, &point));
    assert!(
        got.is_err() || got.unwrap().1,
        "a 10,000-deep message is refused or truncated"
    );
}

#[test]
fn refuses_descriptor_sets_that_are_not_one_or_define_no_service() {
    for bytes in [&b"not a descriptor set"[..], b"\x0a\x05\x0a\x03x.p\x12"] {
        let e = ProtoDescriptors::from_bytes(bytes).unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e}");
    }
    let no_service = FileDescriptorSet {
        file: vec![FileDescriptorProto {
            name: Some("empty.proto".into()),
            ..Default::default()
        }],
    };
    let e = ProtoDescriptors::from_bytes(&no_service.encode_to_vec()).unwrap_err();
    assert!(e.to_string().contains("no service"), "{e}");
    // A file whose import was left out (protoc without --include_imports) does not link.
    let mut set = FileDescriptorSet::decode(descriptor_set().as_slice()).unwrap();
    set.file[0]
        .dependency
        .push("google/protobuf/timestamp.proto".into());
    assert!(ProtoDescriptors::from_bytes(&set.encode_to_vec()).is_err());
}

fn grpc_request(body: &[u8]) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    let mut req = http_request(
        "POST",
        "/things.v1.Things/Get",
        &[("content-type", "application/grpc")],
        "",
    );
    if let Some(h) = req
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        h.raw_body = body.to_vec();
    }
    req
}

#[test]
fn the_input_carries_the_decoded_grpc_body_when_descriptors_are_configured() {
    let d = descriptors();
    let req = grpc_request(&frame(0, &point_bytes(&d)));
    let opts = InputOptions {
        proto_descriptor: Some(d),
        ..Default::default()
    };
    let v = json(&build(&req, &opts).unwrap());
    assert_eq!(v["parsed_body"]["userName"], "ana");
    assert_eq!(v["truncated_body"], false);
    let v = json(&build(&req, &InputOptions::default()).unwrap());
    assert_eq!(v["parsed_body"], serde_json::Value::Null);
}

#[test]
fn skip_request_body_parse_leaves_the_body_fields_out_and_refuses_nothing_for_the_body() {
    let req = http_request(
        "POST",
        "/x",
        &[("content-type", "application/json")],
        "{not json",
    );
    assert!(build(&req, &InputOptions::default()).is_err());
    let opts = InputOptions {
        skip_request_body_parse: true,
        ..Default::default()
    };
    let v = json(&build(&req, &opts).unwrap());
    assert!(
        v.get("parsed_body").is_none() && v.get("truncated_body").is_none(),
        "{v}"
    );
    assert_eq!(v["attributes"]["request"]["http"]["body"], "{not json");
}

#[test]
fn gives_envoys_partial_body_as_truncated_before_reading_the_frame() {
    let mut req = grpc_request(&[0, 0, 0]);
    if let Some(h) = req
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        h.headers
            .insert("x-envoy-auth-partial-body".into(), "true".into());
    }
    let opts = InputOptions {
        proto_descriptor: Some(descriptors()),
        ..Default::default()
    };
    let v = json(&build(&req, &opts).unwrap());
    assert_eq!(v["truncated_body"], true);
}
