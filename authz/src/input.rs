//! CheckRequest → the policy input document, in the shape OPA-Envoy builds: the request
//! rendered with protobuf JSON names (`attributes.source.address.socketAddress.portValue`,
//! `contextExtensions`, `metadataContext`), default values left out as protojson leaves them,
//! plus `parsed_path`, `parsed_query`, `parsed_body`, `truncated_body` and `version`. esm
//! adds `source.spiffe_id` / `destination.spiffe_id`. The regorus value is built directly.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use envoy_types::pb::envoy::config::core::v3::{address, Address, Metadata};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer};
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value as PbValue};
use regorus::Value;

use crate::error::{Error, Result};
use crate::parsed;

/// More headers than this is not a request Envoy forwards (its own default limit is 100):
/// the request is denied rather than building a huge input.
pub const MAX_HEADERS: usize = 1024;

/// How to find the caller's SPIFFE ID.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputOptions {
    /// Also read the caller's SPIFFE ID from `x-forwarded-client-cert` (`URI=` of the first
    /// element) when the source principal has none: for Envoys that terminate mTLS upstream.
    pub xfcc: bool,
}

/// A JSON object under construction; empty values are left out, as protojson does.
#[derive(Default)]
struct Obj(BTreeMap<Value, Value>);

impl Obj {
    fn put(&mut self, k: &str, v: Value) -> &mut Self {
        let empty = match &v {
            Value::String(s) => s.is_empty(),
            Value::Object(o) => o.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Undefined => true,
            _ => false,
        };
        if !empty {
            self.0.insert(Value::from(k), v);
        }
        self
    }

    fn set(&mut self, k: &str, v: Value) -> &mut Self {
        self.0.insert(Value::from(k), v);
        self
    }

    fn done(self) -> Value {
        Value::from(self.0)
    }
}

fn string_map(m: &HashMap<String, String>) -> Value {
    let o: BTreeMap<Value, Value> = m
        .iter()
        .map(|(k, v)| (Value::from(k.as_str()), Value::from(v.as_str())))
        .collect();
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

fn metadata(m: &Metadata) -> Value {
    let fm: BTreeMap<Value, Value> = m
        .filter_metadata
        .iter()
        .map(|(k, s)| (Value::from(k.as_str()), pb_struct(s, 0)))
        .collect();
    let mut o = Obj::default();
    o.put("filterMetadata", Value::from(fm));
    o.done()
}

fn address(a: &Address) -> Value {
    let mut o = Obj::default();
    match &a.address {
        Some(address::Address::SocketAddress(sa)) => {
            let mut s = Obj::default();
            s.put("address", Value::from(sa.address.as_str()));
            if let Some(
                envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(
                    p,
                ),
            ) = sa.port_specifier
            {
                if p != 0 {
                    s.set("portValue", Value::from(p));
                }
            }
            o.put("socketAddress", s.done());
        }
        Some(address::Address::Pipe(p)) => {
            let mut s = Obj::default();
            s.put("path", Value::from(p.path.as_str()));
            o.put("pipe", s.done());
        }
        Some(address::Address::EnvoyInternalAddress(_)) | None => {}
    }
    o.done()
}

fn peer(p: &Peer) -> Value {
    let mut o = Obj::default();
    if let Some(a) = &p.address {
        o.put("address", address(a));
    }
    o.put("service", Value::from(p.service.as_str()))
        .put("labels", string_map(&p.labels))
        .put("principal", Value::from(p.principal.as_str()))
        .put("certificate", Value::from(p.certificate.as_str()));
    o.done()
}

/// The request's headers: `headers`, or — when Envoy sends raw header bytes
/// (`encode_raw_headers`) — `header_map`, decoded lossily and joined with `,` like Envoy.
fn headers_of(h: &HttpRequest) -> Result<HashMap<String, String>> {
    let count = h.headers.len() + h.header_map.as_ref().map_or(0, |m| m.headers.len());
    if count > MAX_HEADERS {
        return Err(Error::Request(format!(
            "{count} headers (more than {MAX_HEADERS})"
        )));
    }
    if !h.headers.is_empty() {
        return Ok(h.headers.clone());
    }
    let mut out: HashMap<String, String> = HashMap::new();
    for hv in h.header_map.iter().flat_map(|m| &m.headers) {
        let value = if hv.raw_value.is_empty() {
            hv.value.clone()
        } else {
            String::from_utf8_lossy(&hv.raw_value).into_owned()
        };
        out.entry(hv.key.to_ascii_lowercase())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    Ok(out)
}

fn http(h: &HttpRequest, headers: &HashMap<String, String>) -> Value {
    let mut o = Obj::default();
    o.put("id", Value::from(h.id.as_str()))
        .put("method", Value::from(h.method.as_str()))
        .put("headers", string_map(headers))
        .put("path", Value::from(h.path.as_str()))
        .put("host", Value::from(h.host.as_str()))
        .put("scheme", Value::from(h.scheme.as_str()))
        .put("query", Value::from(h.query.as_str()))
        .put("fragment", Value::from(h.fragment.as_str()))
        .put("protocol", Value::from(h.protocol.as_str()))
        .put("body", Value::from(h.body.as_str()));
    if h.size != 0 {
        // protojson writes int64 as a string.
        o.set("size", Value::from(h.size.to_string()));
    }
    if !h.raw_body.is_empty() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&h.raw_body);
        o.set("rawBody", Value::from(b64));
    }
    o.done()
}

/// A principal that is a SPIFFE ID, lightly checked: authz does not depend on the CA crate,
/// and the principal already passed Envoy's certificate validation.
pub fn spiffe_id_of(principal: &str) -> Option<&str> {
    let rest = principal.strip_prefix("spiffe://")?;
    let ok = principal.len() <= 2048
        && !rest.is_empty()
        && !rest.starts_with('/')
        && !principal
            .chars()
            .any(|c| c.is_whitespace() || c.is_control());
    ok.then_some(principal)
}

/// The `URI=` of the first element of an `x-forwarded-client-cert` header.
pub fn xfcc_uri(xfcc: &str) -> Option<&str> {
    let first = xfcc.split(',').next()?;
    first.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("uri")
            .then(|| v.trim().trim_matches('"'))
    })
}

fn principal_of(p: Option<&Peer>) -> &str {
    p.map_or("", |p| p.principal.as_str())
}

/// Builds the input document for `req`.
pub fn build(req: &CheckRequest, opts: InputOptions) -> Result<Value> {
    let empty = Default::default();
    let attrs = req.attributes.as_ref().unwrap_or(&empty);
    let http_req = attrs.request.as_ref().and_then(|r| r.http.as_ref());
    let headers = http_req.map(headers_of).transpose()?.unwrap_or_default();

    let mut a = Obj::default();
    if let Some(s) = &attrs.source {
        a.put("source", peer(s));
    }
    if let Some(d) = &attrs.destination {
        a.put("destination", peer(d));
    }
    if let Some(r) = &attrs.request {
        let mut ro = Obj::default();
        if let Some(t) = &r.time {
            let ts = time::OffsetDateTime::from_unix_timestamp(t.seconds)
                .ok()
                .and_then(|d| {
                    d.replace_nanosecond(t.nanos.clamp(0, 999_999_999) as u32)
                        .ok()
                })
                .and_then(|d| {
                    d.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                });
            ro.put("time", ts.map(Value::from).unwrap_or(Value::Undefined));
        }
        if let Some(h) = &r.http {
            ro.put("http", http(h, &headers));
        }
        a.put("request", ro.done());
    }
    a.put("contextExtensions", string_map(&attrs.context_extensions));
    if let Some(m) = &attrs.metadata_context {
        a.put("metadataContext", metadata(m));
    }
    if let Some(m) = &attrs.route_metadata_context {
        a.put("routeMetadataContext", metadata(m));
    }
    if let Some(t) = &attrs.tls_session {
        let mut to = Obj::default();
        to.put("sni", Value::from(t.sni.as_str()));
        a.put("tlsSession", to.done());
    }

    let mut input = Obj::default();
    input.set("attributes", a.done());
    let path = http_req.map_or("", |h| h.path.as_str());
    input.set("parsed_path", parsed::parsed_path(path)?);
    input.set("parsed_query", parsed::parsed_query(path)?);
    let body = http_req.map_or(std::borrow::Cow::Borrowed(""), |h| {
        if h.body.is_empty() {
            String::from_utf8_lossy(&h.raw_body)
        } else {
            std::borrow::Cow::Borrowed(h.body.as_str())
        }
    });
    let partial = headers
        .get("x-envoy-auth-partial-body")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let (parsed_body, truncated) = parsed::parsed_body(
        headers.get("content-type").map(String::as_str),
        headers.get("content-length").map(String::as_str),
        partial,
        &body,
    )?;
    input.set("parsed_body", parsed_body);
    input.set("truncated_body", Value::from(truncated));
    let mut version = Obj::default();
    version
        .set("ext_authz", Value::from("v3"))
        .set("encoding", Value::from("protojson"));
    input.set("version", version.done());

    let source_principal = principal_of(attrs.source.as_ref());
    input.put("source_principal", Value::from(source_principal));
    let mut source_id = spiffe_id_of(source_principal);
    if source_id.is_none() && opts.xfcc {
        source_id = headers
            .get("x-forwarded-client-cert")
            .and_then(|x| xfcc_uri(x))
            .and_then(spiffe_id_of);
    }
    let mut src = Obj::default();
    src.put(
        "spiffe_id",
        source_id.map(Value::from).unwrap_or(Value::Undefined),
    );
    input.set("source", src.done());
    let mut dst = Obj::default();
    let dest_id = spiffe_id_of(principal_of(attrs.destination.as_ref()));
    dst.put(
        "spiffe_id",
        dest_id.map(Value::from).unwrap_or(Value::Undefined),
    );
    input.set("destination", dst.done());
    Ok(input.done())
}

#[cfg(test)]
#[path = "input_tests.rs"]
pub(crate) mod tests_support;
