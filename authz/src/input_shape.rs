//! The shape of the input document esm builds ([`crate::input`]): where it has a collection
//! (or nothing) and where a string (or nothing), whatever the request. A path is given as
//! its keys, None standing for any key. What [`crate::bytecode_uses`] relies on to run a
//! policy on the VM.

fn side(k: &Option<&str>) -> bool {
    matches!(k, Some("source" | "destination"))
}

/// Whether the input esm builds has a collection (or nothing) at the path: the objects of
/// the CheckRequest, `parsed_path`, `parsed_query` and its values, `version`, `source` and
/// `destination`. Not `parsed_body`, whose shape is the client's.
pub(crate) fn collection(keys: &[Option<&str>]) -> bool {
    match keys {
        []
        | [Some("attributes")]
        | [Some("attributes"), Some("request" | "contextExtensions" | "tlsSession")]
        | [Some("attributes"), Some("request"), Some("http")]
        | [Some("attributes"), Some("request"), Some("http"), Some("headers")]
        | [Some("attributes"), Some("metadataContext" | "routeMetadataContext")]
        | [Some("attributes"), Some("metadataContext" | "routeMetadataContext"), Some("filterMetadata")]
        | [Some("parsed_path" | "parsed_query" | "version")]
        | [Some("parsed_query"), _] => true,
        [Some("attributes"), s] | [s] => side(s),
        [Some("attributes"), s, Some("address" | "labels")] => side(s),
        [Some("attributes"), s, Some("address"), Some("socketAddress" | "pipe")] => side(s),
        _ => false,
    }
}

/// Whether the input esm builds has a string (or nothing) at the path.
pub(crate) fn string(keys: &[Option<&str>]) -> bool {
    const HTTP: [&str; 11] = [
        "id", "method", "path", "host", "scheme", "query", "fragment", "protocol", "body", "size",
        "rawBody",
    ];
    match keys {
        [Some("attributes"), Some("request"), Some("http"), Some(f)] => HTTP.contains(f),
        [Some("attributes"), Some("request"), Some("http"), Some("headers"), _]
        | [Some("attributes"), Some("request"), Some("time")]
        | [Some("attributes"), Some("contextExtensions"), _]
        | [Some("attributes"), Some("tlsSession"), Some("sni")]
        | [Some("parsed_path"), _]
        | [Some("parsed_query"), _, _]
        | [Some("source_principal")]
        | [Some("version"), _] => true,
        [s, Some("spiffe_id")] => side(s),
        [Some("attributes"), s, Some("principal" | "service" | "certificate")] => side(s),
        [Some("attributes"), s, Some("labels"), _] => side(s),
        [Some("attributes"), s, Some("address"), Some("socketAddress"), Some("address")] => side(s),
        [Some("attributes"), s, Some("address"), Some("pipe"), Some("path")] => side(s),
        _ => false,
    }
}

#[cfg(test)]
#[path = "input_shape_tests.rs"]
mod tests;
