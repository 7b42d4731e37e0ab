//! A [`Decision`] → Envoy's CheckResponse, as OPA-Envoy builds it: OK with headers to add
//! upstream, headers/query parameters to remove or set, response headers; or Denied with the
//! status (403 by default), headers to the client and body. `dynamic_metadata` goes on the
//! response either way, with a `decision_id`.

use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderValue, HeaderValueOption, HttpResponse, HttpStatus,
    OkHttpResponse, QueryParameter,
};
use envoy_types::pb::google::protobuf::{value::Kind, ListValue, Struct, Value as PbValue};
use envoy_types::pb::google::rpc::Status;

use crate::decision::Decision;

/// gRPC status codes Envoy reads in `CheckResponse.status`.
const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;

fn header_options(pairs: &[(String, String)]) -> Vec<HeaderValueOption> {
    pairs
        .iter()
        .map(|(k, v)| HeaderValueOption {
            header: Some(HeaderValue {
                key: k.clone(),
                value: v.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}

fn pb_value(v: &serde_json::Value) -> PbValue {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(pb_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(pb_struct(o)),
    };
    PbValue { kind: Some(kind) }
}

fn pb_struct(o: &serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: o
            .iter()
            .map(|(k, v)| (k.clone(), pb_value(v)))
            .collect::<HashMap<_, _>>(),
    }
}

/// Envoy's response for `d`; `decision_id` is added to the dynamic metadata.
pub fn check_response(d: &Decision, decision_id: &str) -> CheckResponse {
    let id = PbValue {
        kind: Some(Kind::StringValue(decision_id.to_owned())),
    };
    let dynamic_metadata = Some(match &d.dynamic_metadata {
        Some(serde_json::Value::Object(o)) => {
            let mut meta = pb_struct(o);
            meta.fields.insert("decision_id".into(), id);
            meta
        }
        // The common case: only the decision id, without a JSON map in between.
        _ => Struct {
            fields: HashMap::from([("decision_id".to_owned(), id)]),
        },
    });
    if d.allowed {
        CheckResponse {
            status: Some(Status {
                code: OK,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: header_options(&d.headers),
                headers_to_remove: d.request_headers_to_remove.clone(),
                response_headers_to_add: header_options(&d.response_headers_to_add),
                query_parameters_to_set: d
                    .query_parameters_to_set
                    .iter()
                    .map(|(k, v)| QueryParameter {
                        key: k.clone(),
                        value: v.clone(),
                    })
                    .collect(),
                query_parameters_to_remove: d.query_parameters_to_remove.clone(),
                ..Default::default()
            })),
            dynamic_metadata,
        }
    } else {
        deny(d, dynamic_metadata)
    }
}

fn deny(d: &Decision, dynamic_metadata: Option<Struct>) -> CheckResponse {
    CheckResponse {
        status: Some(Status {
            code: PERMISSION_DENIED,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(d.http_status.unwrap_or(403)),
            }),
            headers: header_options(&d.headers),
            body: d.body.clone().unwrap_or_default(),
        })),
        dynamic_metadata,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn allow_carries_upstream_headers_and_decision_id() {
        let d = Decision {
            allowed: true,
            headers: vec![("x-user".into(), "alice".into())],
            request_headers_to_remove: vec!["cookie".into()],
            ..Decision::default()
        };
        let r = check_response(&d, "d-1");
        assert_eq!(r.status.unwrap().code, OK);
        let Some(HttpResponse::OkResponse(ok)) = r.http_response else {
            panic!("not OK")
        };
        assert_eq!(ok.headers[0].header.as_ref().unwrap().key, "x-user");
        assert_eq!(ok.headers_to_remove, vec!["cookie".to_string()]);
        let meta = r.dynamic_metadata.unwrap();
        assert!(matches!(
            meta.fields["decision_id"].kind,
            Some(Kind::StringValue(ref s)) if s == "d-1"
        ));
    }

    #[test]
    fn deny_defaults_to_403_and_carries_body() {
        let d = Decision {
            allowed: false,
            body: Some("no".into()),
            ..Decision::default()
        };
        let r = check_response(&d, "d-2");
        assert_eq!(r.status.unwrap().code, PERMISSION_DENIED);
        let Some(HttpResponse::DeniedResponse(den)) = r.http_response else {
            panic!("not denied")
        };
        assert_eq!(den.status.unwrap().code, 403);
        assert_eq!(den.body, "no");
    }
}
