//! The decision memo's key read straight from the CheckRequest: for each input path a set
//! reads, the request fields that path's value is made of. A memo hit then builds no input
//! at all. Sound because the input builder ([`crate::input`]) makes every such value from
//! exactly those fields (through the same [`View`]): two requests with equal fields get equal
//! values, so a deterministic policy decides them alike.
//!
//! A key may be finer than the values (an absent and an empty method are two keys, one
//! value): that costs a hit, never a wrong answer. A read path this module does not map
//! (the whole `attributes.request.http`, `metadataContext`, …) leaves the set without a
//! plan, and the memo keys the built input instead ([`crate::decision_memo`]).

use envoy_types::pb::envoy::config::core::v3::{address, socket_address::PortSpecifier};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer};

use crate::decision_memo::{MAX_KEY, REQUEST_KEY};
use crate::input::InputOptions;
use crate::input_reads::InputReads;
use crate::parsed;
use crate::view::{principal_of, View};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Destination,
}

/// A string field of `attributes.request.http`, by its protobuf JSON name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HttpField {
    Id,
    Method,
    Path,
    Host,
    Scheme,
    Query,
    Fragment,
    Protocol,
    Body,
    RawBody,
    Size,
}

const HTTP_FIELDS: [(&str, HttpField); 11] = [
    ("id", HttpField::Id),
    ("method", HttpField::Method),
    ("path", HttpField::Path),
    ("host", HttpField::Host),
    ("scheme", HttpField::Scheme),
    ("query", HttpField::Query),
    ("fragment", HttpField::Fragment),
    ("protocol", HttpField::Protocol),
    ("body", HttpField::Body),
    ("rawBody", HttpField::RawBody),
    ("size", HttpField::Size),
];

/// What one read path's value is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Http(HttpField),
    Header(String),
    Principal(Side),
    Address(Side),
    ContextExtension(String),
    SpiffeId(Side),
    SourcePrincipal,
    /// `parsed_path`: the path before its query.
    ParsedPath,
    /// `parsed_query`: the query.
    ParsedQuery,
    /// `parsed_body` and `truncated_body`: the body and the headers that say how to read it.
    Body,
}

/// A set's key: the parts of the request its read paths are made of, in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPlan {
    parts: Vec<Part>,
}

fn side(name: &str) -> Option<Side> {
    match name {
        "source" => Some(Side::Source),
        "destination" => Some(Side::Destination),
        _ => None,
    }
}

/// The part a read path's value is made of: `Some(None)` for a value that is the same for
/// every request, `None` for a path not mapped here.
fn part_of(path: &[&str]) -> Option<Option<Part>> {
    let part = match path {
        ["attributes", "request", "http", "headers", name, ..] => Part::Header((*name).to_owned()),
        ["attributes", "request", "http", field, ..] => {
            let (_, f) = HTTP_FIELDS.iter().find(|(n, _)| n == field)?;
            Part::Http(*f)
        }
        ["attributes", s, "principal", ..] => Part::Principal(side(s)?),
        ["attributes", s, "address", ..] => Part::Address(side(s)?),
        ["attributes", "contextExtensions", name, ..] => Part::ContextExtension((*name).to_owned()),
        // `input.source` is `{"spiffe_id": …}` and nothing else.
        [s] | [s, "spiffe_id", ..] if side(s).is_some() => Part::SpiffeId(side(s)?),
        [s, _, ..] if side(s).is_some() => return Some(None),
        ["source_principal", ..] => Part::SourcePrincipal,
        ["parsed_path", ..] => Part::ParsedPath,
        ["parsed_query", ..] => Part::ParsedQuery,
        ["parsed_body", ..] | ["truncated_body", ..] => Part::Body,
        ["version", ..] => return Some(None),
        _ => return None,
    };
    Some(Some(part))
}

impl KeyPlan {
    /// The plan for a set reading `reads`; None when one of its paths is not mapped.
    pub fn of(reads: &InputReads) -> Option<Self> {
        let mut parts = Vec::new();
        for path in &reads.paths {
            let steps: Vec<&str> = path.iter().map(String::as_str).collect();
            if let Some(p) = part_of(&steps)? {
                if !parts.contains(&p) {
                    parts.push(p);
                }
            }
        }
        Some(Self { parts })
    }

    /// Writes the key of the request `view` into `out` (cleared first); false when it would
    /// be longer than [`MAX_KEY`] (such a request is evaluated, not memoized).
    pub(crate) fn write(&self, view: &View<'_>, opts: &InputOptions, out: &mut Vec<u8>) -> bool {
        out.clear();
        out.push(REQUEST_KEY);
        for part in &self.parts {
            write_part(part, view, opts, out);
            if out.len() > MAX_KEY {
                return false;
            }
        }
        true
    }
}

/// Absent, or present with its bytes: self-delimiting, so no two sequences of values write
/// the same bytes.
fn opt_bytes(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
    }
}

fn opt_str(out: &mut Vec<u8>, v: Option<&str>) {
    opt_bytes(out, v.map(str::as_bytes));
}

fn http_field(h: &HttpRequest, f: HttpField, out: &mut Vec<u8>) {
    let text = match f {
        HttpField::Id => &h.id,
        HttpField::Method => &h.method,
        HttpField::Path => &h.path,
        HttpField::Host => &h.host,
        HttpField::Scheme => &h.scheme,
        HttpField::Query => &h.query,
        HttpField::Fragment => &h.fragment,
        HttpField::Protocol => &h.protocol,
        HttpField::Body => &h.body,
        HttpField::RawBody => return opt_bytes(out, Some(&h.raw_body)),
        HttpField::Size => return opt_bytes(out, Some(&h.size.to_le_bytes())),
    };
    opt_str(out, Some(text));
}

/// The address as the input shows it: a socket address and its port, or a pipe's path.
fn address(p: Option<&Peer>, out: &mut Vec<u8>) {
    match p.and_then(|p| p.address.as_ref()?.address.as_ref()) {
        Some(address::Address::SocketAddress(sa)) => {
            out.push(1);
            opt_str(out, Some(&sa.address));
            let port = match sa.port_specifier {
                Some(PortSpecifier::PortValue(p)) => p,
                _ => 0,
            };
            out.extend_from_slice(&port.to_le_bytes());
        }
        Some(address::Address::Pipe(pipe)) => {
            out.push(2);
            opt_str(out, Some(&pipe.path));
        }
        Some(address::Address::EnvoyInternalAddress(_)) | None => out.push(0),
    }
}

fn write_part(part: &Part, view: &View<'_>, opts: &InputOptions, out: &mut Vec<u8>) {
    let peer = |s: Side| match s {
        Side::Source => view.attrs.source.as_ref(),
        Side::Destination => view.attrs.destination.as_ref(),
    };
    match part {
        Part::Http(f) => match view.http {
            Some(h) => {
                out.push(1);
                http_field(h, *f, out);
            }
            None => out.push(0),
        },
        Part::Header(name) => opt_str(out, view.header(name)),
        Part::Principal(s) => opt_str(out, peer(*s).map(|p| p.principal.as_str())),
        Part::Address(s) => address(peer(*s), out),
        Part::ContextExtension(name) => opt_str(
            out,
            view.attrs.context_extensions.get(name).map(String::as_str),
        ),
        Part::SpiffeId(Side::Source) => opt_str(out, view.source_spiffe_id(opts)),
        Part::SpiffeId(Side::Destination) => opt_str(out, view.destination_spiffe_id()),
        Part::SourcePrincipal => opt_str(out, Some(principal_of(view.attrs.source.as_ref()))),
        Part::ParsedPath => opt_str(out, Some(parsed::path_part(view.path()))),
        Part::ParsedQuery => opt_str(out, Some(parsed::query_part(view.path()))),
        Part::Body => {
            opt_str(out, view.header("content-type"));
            opt_str(out, view.header("content-length"));
            out.push(u8::from(view.partial_body()));
            // The bytes, not their lossy text: two gRPC bodies that differ only in bytes
            // that are not UTF-8 must not share a key.
            opt_bytes(out, Some(view.body_bytes()));
            // A gRPC body is decoded by the method its path names.
            if view.is_grpc() {
                opt_str(out, Some(view.path()));
            }
        }
    }
}

#[cfg(test)]
#[path = "memo_key_tests.rs"]
mod tests;
