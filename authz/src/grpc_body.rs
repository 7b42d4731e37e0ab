//! gRPC request bodies in `parsed_body`, as OPA-Envoy decodes them with its protoset: the
//! first message of the body, decoded by the input type of the method its path names
//! (`/package.Service/Method`), in protobuf's JSON mapping (lowerCamelCase names, 64-bit
//! integers as strings, enums by name, default values left out).
//!
//! Why the same outcomes as OPA-Envoy, case by case: a policy written against OPA-Envoy reads
//! `parsed_body` and `truncated_body` and must decide the same way here.
//! - no descriptors configured, no `raw_body` (Envoy's `pack_as_bytes` is off), a
//!   compressed frame, an unknown service or method, or a client-streaming method: `null`;
//! - a frame whose length says more bytes than the body holds: `null`, truncated;
//! - a path that is not two segments, fewer than 5 bytes, or a message that does not decode:
//!   an error, which denies (the peer sent something its content type says it is not).

use std::sync::Arc;

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use regorus::Value;

use crate::error::{Error, Result};
use crate::parsed;

/// A descriptor set larger than this is a wrong path, not a protoset.
pub const MAX_DESCRIPTOR_SET: u64 = 64 << 20;

/// The gRPC frame header: one flag byte (1 = compressed) and a 4-byte big-endian length.
const FRAME_HEADER: usize = 5;

/// The services and messages of `authz.proto_descriptor`: a `FileDescriptorSet` as
/// `protoc --include_imports --descriptor_set_out` writes it.
#[derive(Clone)]
pub struct ProtoDescriptors {
    pool: Arc<DescriptorPool>,
    /// SHA-256 of the file: a config reload compares descriptors by what they were read from.
    digest: [u8; 32],
}

impl std::fmt::Debug for ProtoDescriptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtoDescriptors")
            .field("files", &self.pool.files().len())
            .field("services", &self.pool.services().len())
            .finish()
    }
}

impl PartialEq for ProtoDescriptors {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl Eq for ProtoDescriptors {}

impl ProtoDescriptors {
    /// Reads an encoded `FileDescriptorSet`. A set that does not decode, or whose files do not
    /// link (a missing import: `protoc` was run without `--include_imports`), is refused.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let pool = DescriptorPool::decode(bytes).map_err(|e| {
            Error::Config(format!(
                "not a FileDescriptorSet (protoc --include_imports --descriptor_set_out): {e}"
            ))
        })?;
        if pool.services().len() == 0 {
            return Err(Error::Config(
                "the FileDescriptorSet defines no service: gRPC bodies could never be decoded"
                    .into(),
            ));
        }
        let mut digest = [0; 32];
        digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
        Ok(Self {
            pool: Arc::new(pool),
            digest,
        })
    }

    /// The input message of `method` on `service`; `None` for an unknown one and for a
    /// client-streaming method (only its first message would be seen).
    fn input_of(&self, service: &str, method: &str) -> Option<MessageDescriptor> {
        let svc = self.pool.get_service_by_name(service)?;
        let m = svc.methods().find(|m| m.name() == method)?;
        (!m.is_client_streaming()).then(|| m.input())
    }
}

/// `parsed_body` and `truncated_body` for a body sent as `application/grpc`. `path` is the
/// request's `:path`, `raw` its `raw_body`.
pub fn parsed_grpc_body(
    descriptors: Option<&ProtoDescriptors>,
    path: &str,
    raw: &[u8],
) -> Result<(Value, bool)> {
    let Some(descriptors) = descriptors else {
        return Ok((Value::Null, false));
    };
    if raw.is_empty() {
        return Ok((Value::Null, false));
    }
    let decoded = parsed::percent_decode(parsed::path_part(path), false)?;
    let mut parts = decoded.trim_start_matches('/').split('/');
    let (Some(service), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Error::Request(format!(
            "gRPC path {path:?} is not /package.Service/Method"
        )));
    };
    let Some(header) = raw.get(..FRAME_HEADER) else {
        return Err(Error::Request(format!(
            "gRPC body of {} bytes is shorter than a frame header",
            raw.len()
        )));
    };
    if header[0] != 0 {
        return Ok((Value::Null, false));
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let Some(message) = raw.get(FRAME_HEADER..FRAME_HEADER.saturating_add(len)) else {
        return Ok((Value::Null, true));
    };
    if message.len() > parsed::MAX_PARSED_BODY {
        return Ok((Value::Null, true));
    }
    let Some(input) = descriptors.input_of(service, method) else {
        return Ok((Value::Null, false));
    };
    let msg = DynamicMessage::decode(input, message)
        .map_err(|e| Error::Request(format!("gRPC body of {service}/{method}: {e}")))?;
    let json = msg
        .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
        .map_err(|e| Error::Request(format!("gRPC body of {service}/{method}: {e}")))?;
    Ok((Value::from(json), false))
}

#[cfg(test)]
#[path = "grpc_body_tests.rs"]
mod tests;
