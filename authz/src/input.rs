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

use crate::error::{Error, Result};
use crate::parsed;
use crate::projection::Projection;

/// More headers than this is not a request Envoy forwards (its own default limit is 100):
/// the request is denied rather than building a huge input.
pub const MAX_HEADERS: usize = 1024;

/// How to find the caller's SPIFFE ID.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputOptions {
    /// Also read the caller's SPIFFE ID from `x-forwarded-client-cert` (the `URI` of its last
    /// element, see [`crate::xfcc::caller_uri`]) when the source principal has none: for
    /// Envoys behind a proxy that terminated mTLS.
    pub xfcc: bool,
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
                self.map.insert(Value::from(k), v);
            }
        }
        self
    }

    /// Adds `k` even when empty.
    fn set(&mut self, k: &str, v: impl FnOnce(&Projection) -> Value) -> &mut Self {
        if let Some(need) = self.need.get(k) {
            self.map.insert(Value::from(k), v(need));
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

fn string_map<'a>(
    m: impl IntoIterator<Item = (&'a String, &'a String)>,
    need: &Projection,
) -> Value {
    let o: BTreeMap<Value, Value> = m
        .into_iter()
        .filter(|(k, _)| need.wants(k))
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

/// The request's headers: `headers` as sent, or — when Envoy sends raw header bytes
/// (`encode_raw_headers`) — `header_map`, decoded lossily and joined with `,` like Envoy.
enum Headers<'a> {
    Map(&'a HashMap<String, String>),
    Raw(HashMap<String, String>),
}

impl Headers<'_> {
    fn of(h: &HttpRequest) -> Result<Headers<'_>> {
        let count = h.headers.len() + h.header_map.as_ref().map_or(0, |m| m.headers.len());
        if count > MAX_HEADERS {
            return Err(Error::Request(format!(
                "{count} headers (more than {MAX_HEADERS})"
            )));
        }
        if !h.headers.is_empty() {
            return Ok(Headers::Map(&h.headers));
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
        Ok(Headers::Raw(out))
    }

    fn map(&self) -> &HashMap<String, String> {
        match self {
            Headers::Map(m) => m,
            Headers::Raw(m) => m,
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.map().get(name).map(String::as_str)
    }
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

/// A principal that is a SPIFFE ID, checked as the CA and the agent check one (esm-identity),
/// so a policy never sees as `spiffe_id` a string esm would refuse to issue to.
pub fn spiffe_id_of(principal: &str) -> Option<&str> {
    esm_identity::SpiffeId::check(principal)
        .is_ok()
        .then_some(principal)
}

fn principal_of(p: Option<&Peer>) -> &str {
    p.map_or("", |p| p.principal.as_str())
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
pub fn build(req: &CheckRequest, opts: InputOptions) -> Result<Value> {
    build_projected(req, opts, Projection::everything())
}

/// Builds the parts of the input document for `req` that `need` reaches. Whatever is left
/// out, a request is refused exactly when the whole document would refuse it (too many
/// headers, a path with a bad escape, a body that is not what its content-type says).
pub fn build_projected(req: &CheckRequest, opts: InputOptions, need: &Projection) -> Result<Value> {
    let empty = Default::default();
    let attrs = req.attributes.as_ref().unwrap_or(&empty);
    let http_req = attrs.request.as_ref().and_then(|r| r.http.as_ref());
    let headers = http_req.map(Headers::of).transpose()?;
    let header = |name: &str| headers.as_ref().and_then(|h| h.get(name));

    let mut input = Obj::new(need);
    input.set("attributes", |need| {
        attributes(attrs, headers.as_ref(), need)
    });
    let path = http_req.map_or("", |h| h.path.as_str());
    // Only an escape can make the path or query fail to parse: check those even unread.
    let validate = path.contains('%');
    if validate || need.wants("parsed_path") {
        let v = parsed::parsed_path(path)?;
        input.set("parsed_path", |_| v);
    }
    if validate || need.wants("parsed_query") {
        let v = parsed::parsed_query(path)?;
        input.set("parsed_query", |_| v);
    }
    let body = http_req.map_or(std::borrow::Cow::Borrowed(""), |h| {
        if h.body.is_empty() {
            String::from_utf8_lossy(&h.raw_body)
        } else {
            std::borrow::Cow::Borrowed(h.body.as_str())
        }
    });
    let partial =
        header("x-envoy-auth-partial-body").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let (parsed_body, truncated) = parsed::parsed_body(
        header("content-type"),
        header("content-length"),
        partial,
        &body,
    )?;
    input.set("parsed_body", |_| parsed_body);
    input.set("truncated_body", |_| Value::from(truncated));
    input.set("version", |need| {
        let mut version = Obj::new(need);
        version
            .set("ext_authz", |_| Value::from("v3"))
            .set("encoding", |_| Value::from("protojson"));
        version.done()
    });

    let source_principal = principal_of(attrs.source.as_ref());
    input.put("source_principal", text(source_principal));
    // The SPIFFE IDs are parsed (and XFCC read) only for a policy that reads them.
    input.set("source", |need| {
        let mut src = Obj::new(need);
        src.put("spiffe_id", |_| {
            if let Some(id) = spiffe_id_of(source_principal) {
                return Value::from(id);
            }
            if !opts.xfcc {
                return Value::Undefined;
            }
            header("x-forwarded-client-cert")
                .and_then(crate::xfcc::caller_uri)
                .filter(|uri| spiffe_id_of(uri).is_some())
                .map_or(Value::Undefined, Value::from)
        });
        src.done()
    });
    input.set("destination", |need| {
        let mut dst = Obj::new(need);
        dst.put("spiffe_id", |_| {
            spiffe_id_of(principal_of(attrs.destination.as_ref()))
                .map_or(Value::Undefined, Value::from)
        });
        dst.done()
    });
    Ok(input.done())
}

#[cfg(test)]
#[path = "input_tests.rs"]
pub(crate) mod tests_support;
