//! CheckRequest → the policy input document, in the shape OPA-Envoy builds: the request
//! rendered with protobuf JSON names (`attributes.source.address.socketAddress.portValue`,
//! `contextExtensions`, `metadataContext`), default values left out as protojson leaves them,
//! plus `parsed_path`, `parsed_query`, `parsed_body`, `truncated_body` and `version`. esm
//! adds `source.spiffe_id` / `destination.spiffe_id`. The regorus value is built directly.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use envoy_types::pb::envoy::config::core::v3::{address, Address, Metadata};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value as PbValue};
use regorus::Value;

use crate::error::Result;
use crate::parsed;
use crate::projection::Projection;
use crate::view::{principal_of, Headers, View};

pub use crate::view::{spiffe_id_of, MAX_HEADERS};

/// How the input is built beyond the CheckRequest: where the caller's SPIFFE ID may come
/// from, and how the body is read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputOptions {
    /// Also read the caller's SPIFFE ID from `x-forwarded-client-cert` (the `URI` of its last
    /// element, see [`crate::xfcc::caller_uri`]) when the source principal has none: for
    /// Envoys behind a proxy that terminated mTLS.
    pub xfcc: bool,
    /// Leave `parsed_body` and `truncated_body` out of the input and never refuse a request
    /// for what its body holds (OPA-Envoy's `skip-request-body-parse`): for policies that
    /// read no body, or read `attributes.request.http.body` themselves.
    pub skip_request_body_parse: bool,
    /// The services whose gRPC request bodies are decoded into `parsed_body`
    /// (`authz.proto_descriptor`, OPA-Envoy's `proto-descriptor`); without it a gRPC body
    /// is `null`.
    pub proto_descriptor: Option<crate::grpc_body::ProtoDescriptors>,
}

/// A JSON object under construction: only the fields its projection wants are computed,
/// and empty values are left out, as protojson does.
struct Obj<'p> {
    need: &'p Projection,
    map: BTreeMap<Value, Value>,
}

impl<'p> Obj<'p> {
    fn new(need: &'p Projection) -> Self {
        Self {
            need,
            map: BTreeMap::new(),
        }
    }

    /// Adds `k` unless it is empty; `v` runs only when the policy can read `k`.
    fn put(&mut self, k: &str, v: impl FnOnce(&Projection) -> Value) -> &mut Self {
        if let Some(need) = self.need.get(k) {
            let v = v(need);
            let empty = match &v {
                Value::String(s) => s.is_empty(),
                Value::Object(o) => o.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Undefined => true,
                _ => false,
            };
            if !empty {
                self.map.insert(need.key(k), v);
            }
        }
        self
    }

    /// Adds `k` even when empty.
    fn set(&mut self, k: &str, v: impl FnOnce(&Projection) -> Value) -> &mut Self {
        if let Some(need) = self.need.get(k) {
            self.map.insert(need.key(k), v(need));
        }
        self
    }

    fn done(self) -> Value {
        Value::from(self.map)
    }
}

fn text(s: &str) -> impl FnOnce(&Projection) -> Value + '_ {
    move |_| Value::from(s)
}

/// The entries of `m` the policy can read: looked up by name when it reads some, all of
/// them when it reads the whole map.
fn string_map(m: &HashMap<String, String>, need: &Projection) -> Value {
    let o: BTreeMap<Value, Value> = match need.children() {
        Some(wanted) => wanted
            .filter_map(|(k, p)| Some((p.key(k), Value::from(m.get(k)?.as_str()))))
            .collect(),
        None => m
            .iter()
            .map(|(k, v)| (Value::from(k.as_str()), Value::from(v.as_str())))
            .collect(),
    };
    Value::from(o)
}

fn pb_value(v: &PbValue, depth: usize) -> Value {
    if depth > parsed::MAX_JSON_DEPTH {
        return Value::Null;
    }
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => Value::from(*n),
        Some(Kind::StringValue(s)) => Value::from(s.as_str()),
        Some(Kind::BoolValue(b)) => Value::from(*b),
        Some(Kind::StructValue(s)) => pb_struct(s, depth + 1),
        Some(Kind::ListValue(l)) => Value::from(
            l.values
                .iter()
                .map(|x| pb_value(x, depth + 1))
                .collect::<Vec<_>>(),
        ),
    }
}

fn pb_struct(s: &Struct, depth: usize) -> Value {
    let o: BTreeMap<Value, Value> = s
        .fields
        .iter()
        .map(|(k, v)| (Value::from(k.as_str()), pb_value(v, depth + 1)))
        .collect();
    Value::from(o)
}

fn metadata(m: &Metadata, need: &Projection) -> Value {
    let mut o = Obj::new(need);
    o.put("filterMetadata", |need| {
        let fm: BTreeMap<Value, Value> = m
            .filter_metadata
            .iter()
            .filter(|(k, _)| need.wants(k))
            .map(|(k, s)| (Value::from(k.as_str()), pb_struct(s, 0)))
            .collect();
        Value::from(fm)
    });
    o.done()
}

fn address(a: &Address, need: &Projection) -> Value {
    let mut o = Obj::new(need);
    match &a.address {
        Some(address::Address::SocketAddress(sa)) => {
            o.put("socketAddress", |need| {
                let mut s = Obj::new(need);
                s.put("address", text(&sa.address));
                if let Some(
                    envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(
                        p,
                    ),
                ) = sa.port_specifier
                {
                    if p != 0 {
                        s.set("portValue", |_| Value::from(p));
                    }
                }
                s.done()
            });
        }
        Some(address::Address::Pipe(p)) => {
            o.put("pipe", |need| {
                let mut s = Obj::new(need);
                s.put("path", text(&p.path));
                s.done()
            });
        }
        Some(address::Address::EnvoyInternalAddress(_)) | None => {}
    }
    o.done()
}

fn peer(p: &Peer, need: &Projection) -> Value {
    let mut o = Obj::new(need);
    if let Some(a) = &p.address {
        o.put("address", |need| address(a, need));
    }
    o.put("service", text(&p.service))
        .put("labels", |need| string_map(&p.labels, need))
        .put("principal", text(&p.principal))
        .put("certificate", text(&p.certificate));
    o.done()
}

fn http(h: &HttpRequest, headers: &Headers<'_>, need: &Projection) -> Value {
    let mut o = Obj::new(need);
    o.put("id", text(&h.id))
        .put("method", text(&h.method))
        .put("headers", |need| string_map(headers.map(), need))
        .put("path", text(&h.path))
        .put("host", text(&h.host))
        .put("scheme", text(&h.scheme))
        .put("query", text(&h.query))
        .put("fragment", text(&h.fragment))
        .put("protocol", text(&h.protocol))
        .put("body", text(&h.body));
    if h.size != 0 {
        // protojson writes int64 as a string.
        o.set("size", |_| Value::from(h.size.to_string()));
    }
    if !h.raw_body.is_empty() {
        o.set("rawBody", |_| {
            Value::from(base64::engine::general_purpose::STANDARD.encode(&h.raw_body))
        });
    }
    o.done()
}

fn request_time(t: &envoy_types::pb::google::protobuf::Timestamp) -> Value {
    time::OffsetDateTime::from_unix_timestamp(t.seconds)
        .ok()
        .and_then(|d| {
            d.replace_nanosecond(t.nanos.clamp(0, 999_999_999) as u32)
                .ok()
        })
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map_or(Value::Undefined, Value::from)
}

fn attributes(attrs: &AttributeContext, headers: Option<&Headers<'_>>, need: &Projection) -> Value {
    let mut a = Obj::new(need);
    if let Some(s) = &attrs.source {
        a.put("source", |need| peer(s, need));
    }
    if let Some(d) = &attrs.destination {
        a.put("destination", |need| peer(d, need));
    }
    if let Some(r) = &attrs.request {
        a.put("request", |need| {
            let mut ro = Obj::new(need);
            if let Some(t) = &r.time {
                ro.put("time", |_| request_time(t));
            }
            if let (Some(h), Some(headers)) = (&r.http, headers) {
                ro.put("http", |need| http(h, headers, need));
            }
            ro.done()
        });
    }
    a.put("contextExtensions", |need| {
        string_map(&attrs.context_extensions, need)
    });
    if let Some(m) = &attrs.metadata_context {
        a.put("metadataContext", |need| metadata(m, need));
    }
    if let Some(m) = &attrs.route_metadata_context {
        a.put("routeMetadataContext", |need| metadata(m, need));
    }
    if let Some(t) = &attrs.tls_session {
        a.put("tlsSession", |need| {
            let mut to = Obj::new(need);
            to.put("sni", text(&t.sni));
            to.done()
        });
    }
    a.done()
}

/// Builds the whole input document for `req`.
pub fn build(req: &CheckRequest, opts: &InputOptions) -> Result<Value> {
    build_projected(req, opts, Projection::everything())
}

/// Builds the parts of the input document for `req` that `need` reaches. Whatever is left
/// out, a request is refused exactly when the whole document would refuse it (too many
/// headers, a path with a bad escape, a body that is not what its content-type says).
pub fn build_projected(
    req: &CheckRequest,
    opts: &InputOptions,
    need: &Projection,
) -> Result<Value> {
    build_view(&View::of(req)?, opts, need)
}

pub(crate) fn build_view(view: &View<'_>, opts: &InputOptions, need: &Projection) -> Result<Value> {
    let attrs = view.attrs;
    let mut input = Obj::new(need);
    input.set("attributes", |need| {
        attributes(attrs, view.headers.as_ref(), need)
    });
    // Only an escape can make the path or query fail to parse: check those even unread.
    let validate = view.path_has_escapes();
    if validate || need.wants("parsed_path") {
        let v = parsed::parsed_path(view.path())?;
        input.set("parsed_path", |_| v);
    }
    if validate || need.wants("parsed_query") {
        let v = parsed::parsed_query(view.path())?;
        input.set("parsed_query", |_| v);
    }
    // Only a body can be refused for what it holds: it is parsed when the policy reads it,
    // and otherwise only checked.
    if !opts.skip_request_body_parse {
        if need.wants("parsed_body") || need.wants("truncated_body") {
            let (parsed_body, truncated) = view.parsed_body(opts)?;
            input.set("parsed_body", |_| parsed_body);
            input.set("truncated_body", |_| Value::from(truncated));
        } else if view.has_body() {
            view.check_body(opts)?;
        }
    }
    input.set("version", |need| {
        let mut version = Obj::new(need);
        version
            .set("ext_authz", |_| Value::from("v3"))
            .set("encoding", |_| Value::from("protojson"));
        version.done()
    });

    input.put(
        "source_principal",
        text(principal_of(attrs.source.as_ref())),
    );
    // The SPIFFE IDs are parsed (and XFCC read) only for a policy that reads them.
    input.set("source", |need| {
        let mut src = Obj::new(need);
        src.put("spiffe_id", |_| {
            view.source_spiffe_id(opts)
                .map_or(Value::Undefined, Value::from)
        });
        src.done()
    });
    input.set("destination", |need| {
        let mut dst = Obj::new(need);
        dst.put("spiffe_id", |_| {
            view.destination_spiffe_id()
                .map_or(Value::Undefined, Value::from)
        });
        dst.done()
    });
    Ok(input.done())
}

#[cfg(test)]
#[path = "input_tests.rs"]
pub(crate) mod tests_support;
