//! A CheckRequest as the input builder ([`crate::input`]) and the decision memo's key
//! ([`crate::memo_key`]) both read it: its parts, its headers, the callers' SPIFFE IDs, and
//! the checks that refuse a request whatever its policy reads. One reading for both is what
//! makes a memo hit answer exactly the requests a fresh evaluation would.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};

use crate::error::{Error, Result};
use crate::input::InputOptions;
use crate::parsed;

/// More headers than this is not a request Envoy forwards (its own default limit is 100):
/// the request is denied rather than building a huge input.
pub const MAX_HEADERS: usize = 1024;

/// The request's headers: `headers` as sent, or — when Envoy sends raw header bytes
/// (`encode_raw_headers`) — `header_map`, decoded lossily and joined with `,` like Envoy.
pub(crate) enum Headers<'a> {
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

    pub(crate) fn map(&self) -> &HashMap<String, String> {
        match self {
            Headers::Map(m) => m,
            Headers::Raw(m) => m,
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.map().get(name).map(String::as_str)
    }
}

static NO_ATTRIBUTES: std::sync::LazyLock<AttributeContext> =
    std::sync::LazyLock::new(AttributeContext::default);

/// The parts of one CheckRequest.
pub(crate) struct View<'r> {
    pub(crate) attrs: &'r AttributeContext,
    pub(crate) http: Option<&'r HttpRequest>,
    pub(crate) headers: Option<Headers<'r>>,
    /// The callers' SPIFFE IDs, found once for the key and the input both.
    source_id: OnceCell<Option<Cow<'r, str>>>,
    destination_id: OnceCell<Option<&'r str>>,
}

impl<'r> View<'r> {
    /// The request's parts; refused when it has more than [`MAX_HEADERS`] headers.
    pub(crate) fn of(req: &'r CheckRequest) -> Result<Self> {
        let attrs = req.attributes.as_ref().unwrap_or(&NO_ATTRIBUTES);
        let http = attrs.request.as_ref().and_then(|r| r.http.as_ref());
        let headers = http.map(Headers::of).transpose()?;
        Ok(Self {
            attrs,
            http,
            headers,
            source_id: OnceCell::new(),
            destination_id: OnceCell::new(),
        })
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.as_ref().and_then(|h| h.get(name))
    }

    /// The HTTP path with its query (empty for the network filter).
    pub(crate) fn path(&self) -> &'r str {
        self.http.map_or("", |h| h.path.as_str())
    }

    /// Only an escape can make the path or query fail to parse.
    pub(crate) fn path_has_escapes(&self) -> bool {
        self.path().contains('%')
    }

    /// Whether the request has a body (only a body can be refused for what it holds).
    pub(crate) fn has_body(&self) -> bool {
        self.http
            .is_some_and(|h| !h.body.is_empty() || !h.raw_body.is_empty())
    }

    /// The body as text: `body`, else `raw_body` decoded lossily.
    pub(crate) fn body(&self) -> Cow<'r, str> {
        self.http.map_or(Cow::Borrowed(""), |h| {
            if h.body.is_empty() {
                String::from_utf8_lossy(&h.raw_body)
            } else {
                Cow::Borrowed(h.body.as_str())
            }
        })
    }

    /// Envoy sent only part of the body (`x-envoy-auth-partial-body: true`).
    pub(crate) fn partial_body(&self) -> bool {
        self.header("x-envoy-auth-partial-body")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// Whether the body is a gRPC message (`application/grpc`, `application/grpc+proto`).
    pub(crate) fn is_grpc(&self) -> bool {
        self.header("content-type")
            .is_some_and(|ct| ct.contains("application/grpc"))
    }

    /// The body's bytes as Envoy sent them: `raw_body`, else `body`.
    pub(crate) fn body_bytes(&self) -> &'r [u8] {
        self.http.map_or(&[], |h| {
            if h.raw_body.is_empty() {
                h.body.as_bytes()
            } else {
                &h.raw_body
            }
        })
    }

    /// `parsed_body` and `truncated_body`; an error refuses the request.
    pub(crate) fn parsed_body(&self, opts: &InputOptions) -> Result<(regorus::Value, bool)> {
        if self.is_grpc() {
            if self.partial_body() {
                return Ok((regorus::Value::Null, true));
            }
            return crate::grpc_body::parsed_grpc_body(
                opts.proto_descriptor.as_ref(),
                self.path(),
                self.http.map_or(&[], |h| &h.raw_body),
            );
        }
        parsed::parsed_body(
            self.header("content-type"),
            self.header("content-length"),
            self.partial_body(),
            &self.body(),
        )
    }

    /// Refuses the body exactly when [`View::parsed_body`] would, building as little as
    /// it can: what a policy that never reads `parsed_body` pays for the body.
    pub(crate) fn check_body(&self, opts: &InputOptions) -> Result<()> {
        if self.is_grpc() {
            return self.parsed_body(opts).map(drop);
        }
        parsed::check_body(
            self.header("content-type"),
            self.header("content-length"),
            self.partial_body(),
            &self.body(),
        )
    }

    /// What refuses the request whatever its policy reads (beyond [`View::of`]'s header
    /// count): a path or query with a bad escape, a body that is not what its content-type
    /// says. The input builder refuses exactly these.
    pub(crate) fn check_refusals(&self, opts: &InputOptions) -> Result<()> {
        if self.path_has_escapes() {
            parsed::parsed_path(self.path())?;
            parsed::parsed_query(self.path())?;
        }
        if self.has_body() && !opts.skip_request_body_parse {
            self.check_body(opts)?;
        }
        Ok(())
    }

    /// The caller's SPIFFE ID: its principal, or (with `xfcc`) the URI of the last
    /// `x-forwarded-client-cert` element.
    /// `opts` must be the same for every call on one view.
    pub(crate) fn source_spiffe_id(&self, opts: &InputOptions) -> Option<&str> {
        self.source_id
            .get_or_init(|| {
                if let Some(id) = spiffe_id_of(principal_of(self.attrs.source.as_ref())) {
                    return Some(Cow::Borrowed(id));
                }
                if !opts.xfcc {
                    return None;
                }
                self.header("x-forwarded-client-cert")
                    .and_then(crate::xfcc::caller_uri)
                    .filter(|uri| spiffe_id_of(uri).is_some())
                    .map(Cow::Owned)
            })
            .as_deref()
    }

    pub(crate) fn destination_spiffe_id(&self) -> Option<&'r str> {
        *self
            .destination_id
            .get_or_init(|| spiffe_id_of(principal_of(self.attrs.destination.as_ref())))
    }
}

pub(crate) fn principal_of(p: Option<&Peer>) -> &str {
    p.map_or("", |p| p.principal.as_str())
}

/// A principal that is a SPIFFE ID, checked as the CA and the agent check one (esm-identity),
/// so a policy never sees as `spiffe_id` a string esm would refuse to issue to.
pub fn spiffe_id_of(principal: &str) -> Option<&str> {
    esm_identity::SpiffeId::check(principal)
        .is_ok()
        .then_some(principal)
}
