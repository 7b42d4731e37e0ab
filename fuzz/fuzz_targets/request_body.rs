//! Any bytes as a request body, through every parser `parsed_body` has: JSON, form, multipart
//! (with a boundary taken from the input), and gRPC decoded by a descriptor set with every
//! field kind, a map, an enum and a recursive message. None may panic, overflow the stack or
//! take memory out of proportion to the body; a refusal is an `Err`, which denies.
#![no_main]

use std::sync::OnceLock;

use esm_authz::grpc_body::{parsed_grpc_body, ProtoDescriptors};
use esm_authz::parsed::parsed_body;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
    FileDescriptorProto, FileDescriptorSet, MessageOptions, MethodDescriptorProto,
    ServiceDescriptorProto,
};

fn field(name: &str, number: i32, ty: Type, type_name: &str, label: Label) -> FieldDescriptorProto {
    FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        label: Some(label as i32),
        r#type: Some(ty as i32),
        type_name: (!type_name.is_empty()).then(|| type_name.into()),
        ..Default::default()
    }
}

fn descriptors() -> &'static ProtoDescriptors {
    static D: OnceLock<ProtoDescriptors> = OnceLock::new();
    D.get_or_init(|| {
        use Label::{Optional, Repeated};
        let scalars = [
            ("d", Type::Double), ("f", Type::Float), ("i64", Type::Int64), ("u64", Type::Uint64),
            ("i32", Type::Int32), ("f64", Type::Fixed64), ("f32", Type::Fixed32), ("b", Type::Bool),
            ("s", Type::String), ("by", Type::Bytes), ("u32", Type::Uint32), ("sf32", Type::Sfixed32),
            ("sf64", Type::Sfixed64), ("s32", Type::Sint32), ("s64", Type::Sint64),
        ];
        let mut fields: Vec<_> = scalars
            .iter()
            .enumerate()
            .map(|(i, (n, t))| field(n, i as i32 + 1, *t, "", Optional))
            .collect();
        fields.push(field("rs", 20, Type::String, "", Repeated));
        fields.push(field("ri", 21, Type::Int64, "", Repeated));
        fields.push(field("e", 22, Type::Enum, ".fz.E", Optional));
        fields.push(field("next", 23, Type::Message, ".fz.All", Optional));
        fields.push(field("kids", 24, Type::Message, ".fz.All", Repeated));
        fields.push(field("m", 25, Type::Message, ".fz.All.MEntry", Repeated));
        let entry = DescriptorProto {
            name: Some("MEntry".into()),
            field: vec![
                field("key", 1, Type::String, "", Optional),
                field("value", 2, Type::Message, ".fz.All", Optional),
            ],
            options: Some(MessageOptions { map_entry: Some(true), ..Default::default() }),
            ..Default::default()
        };
        let all = DescriptorProto {
            name: Some("All".into()),
            field: fields,
            nested_type: vec![entry],
            ..Default::default()
        };
        let e = EnumDescriptorProto {
            name: Some("E".into()),
            value: vec![EnumValueDescriptorProto { name: Some("E_ZERO".into()), number: Some(0), ..Default::default() }],
            ..Default::default()
        };
        let file = FileDescriptorProto {
            name: Some("fz.proto".into()),
            package: Some("fz".into()),
            message_type: vec![all],
            enum_type: vec![e],
            service: vec![ServiceDescriptorProto {
                name: Some("S".into()),
                method: vec![MethodDescriptorProto {
                    name: Some("M".into()),
                    input_type: Some(".fz.All".into()),
                    output_type: Some(".fz.All".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            syntax: Some("proto3".into()),
            ..Default::default()
        };
        let bytes = FileDescriptorSet { file: vec![file] }.encode_to_vec();
        match ProtoDescriptors::from_bytes(&bytes) {
            Ok(d) => d,
            Err(e) => panic!("the fuzz target's own descriptor set: {e}"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    match shape % 4 {
        0 => {
            let _ = parsed_grpc_body(Some(descriptors()), "/fz.S/M", rest);
        }
        1 => {
            // A multipart body: the boundary is the input up to its first newline.
            let text = String::from_utf8_lossy(rest);
            let (boundary, body) = text.split_once('\n').unwrap_or(("b", &text));
            let ct = format!("multipart/form-data; boundary={boundary}");
            let _ = parsed_body(Some(&ct), None, false, body);
        }
        2 => {
            let _ = parsed_body(Some("application/json"), None, false, &String::from_utf8_lossy(rest));
        }
        _ => {
            let _ = parsed_body(
                Some("application/x-www-form-urlencoded"),
                None,
                false,
                &String::from_utf8_lossy(rest),
            );
        }
    }
});
