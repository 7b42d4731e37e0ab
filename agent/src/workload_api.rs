//! The SPIFFE Workload API (X.509 profile) on the agent socket, for SPIFFE libraries:
//! FetchX509SVID streams every SVID the caller's entries grant (with the bundle), and
//! FetchX509Bundles the bundles; both send again on every refresh and CA change. As the
//! specification requires, a call without the `workload.spiffe.io: true` header is refused.

use std::pin::Pin;

use esm_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApi;
use esm_proto::workload::{
    X509BundlesRequest, X509BundlesResponse, X509svid, X509svidRequest, X509svidResponse,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use esm_ca::material::CaMaterial;

use super::context::{AgentContext, Caller};
use super::render::{specs_for, svids_for};
use super::secrets::Refusal;
use super::subscriptions::Subscriptions;
use super::wake::{responses, Follow, Responder, Wake};

const HEADER: &str = "workload.spiffe.io";

fn check_header<T>(req: &Request<T>) -> Result<(), Status> {
    match req.metadata().get(HEADER).and_then(|v| v.to_str().ok()) {
        Some("true") => Ok(()),
        _ => Err(Status::invalid_argument(format!(
            "security header missing: {HEADER}: true"
        ))),
    }
}

fn concat(ders: &[&[u8]]) -> Vec<u8> {
    ders.concat()
}

fn td_id(ca: &CaMaterial) -> String {
    format!("spiffe://{}", ca.trust_domain)
}

/// How long the first answer waits for SVIDs being issued before the stream is returned
/// (a refusal of the CA then still comes back as the call's status).
const FIRST_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The caller's SVIDs and bundle now; `None` while they are not ready (being issued, or the
/// CA cannot issue now: the stream waits).
fn svid_response(
    ctx: &AgentContext,
    caller: &Caller,
    subs: &mut Subscriptions,
) -> Result<Option<X509svidResponse>, Refusal> {
    let ca = ctx.ca.borrow().clone();
    let all = ctx.entries.borrow().clone();
    let entries = caller.entries(&all);
    if entries.is_empty() {
        return Err(Refusal::NotEntitled(
            "no registration entry matches this workload".into(),
        ));
    }
    let ids = super::entry::granted_ids(entries.iter().copied());
    let specs = specs_for(&ids, &entries);
    let Ok(svids) = svids_for(ctx, caller, &specs, subs, "workload-api")? else {
        return Ok(None);
    };
    let roots: Vec<&[u8]> = ca.bundle_der().iter().map(Vec::as_slice).collect();
    let bundle = concat(&roots);
    let mut out = Vec::with_capacity(ids.len());
    for id in &ids {
        let svid = svids
            .iter()
            .map(|(_, s)| s)
            .find(|s| &s.spiffe_id == id)
            .ok_or_else(|| Refusal::NotEntitled(format!("no SVID for {id}")))?;
        out.push(X509svid {
            spiffe_id: id.to_string(),
            x509_svid: concat(&[&svid.cert_der, &svid.intermediate_der]),
            x509_svid_key: svid
                .private_key
                .as_ref()
                .map(|k| k.pkcs8_der().to_vec())
                .unwrap_or_default(),
            bundle: bundle.clone(),
            hint: String::new(),
        });
    }
    Ok(Some(X509svidResponse {
        svids: out,
        ..Default::default()
    }))
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[derive(Clone)]
pub struct WorkloadApi {
    ctx: AgentContext,
}

impl WorkloadApi {
    pub fn new(ctx: AgentContext) -> Self {
        Self { ctx }
    }
}

/// One FetchX509SVID stream (a [`Responder`]).
struct SvidSession {
    ctx: AgentContext,
    caller: Caller,
    follow: Follow,
    subs: Subscriptions,
    /// The answer made before the stream was returned, sent first.
    first: Option<X509svidResponse>,
    ended: bool,
}

impl Responder for SvidSession {
    type Item = Result<X509svidResponse, Status>;

    async fn next(&mut self) -> Option<Result<X509svidResponse, Status>> {
        if self.ended {
            return None;
        }
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        loop {
            if let Wake::Closed = self.follow.change_only(self.subs.changed()).await {
                return None;
            }
            let answer = self.caller.recheck().and_then(|()| {
                svid_response(&self.ctx, &self.caller, &mut self.subs).map_err(|r| r.status())
            });
            match answer {
                Ok(Some(resp)) => return Some(Ok(resp)),
                Ok(None) => continue,
                Err(status) => {
                    self.ended = true;
                    return Some(Err(status));
                }
            }
        }
    }
}

/// One FetchX509Bundles stream: the bundle now, then again on every CA change.
struct BundleSession {
    follow: Follow,
    first: bool,
}

impl Responder for BundleSession {
    type Item = Result<X509BundlesResponse, Status>;

    async fn next(&mut self) -> Option<Result<X509BundlesResponse, Status>> {
        if !std::mem::take(&mut self.first) {
            if let Wake::Closed = self.follow.change_only(std::future::pending()).await {
                return None;
            }
        }
        let m = self.follow.ca();
        let roots: Vec<&[u8]> = m.bundle_der().iter().map(Vec::as_slice).collect();
        Some(Ok(X509BundlesResponse {
            bundles: [(td_id(&m), concat(&roots))].into(),
            ..Default::default()
        }))
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = BoxStream<X509svidResponse>;
    type FetchX509BundlesStream = BoxStream<X509BundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        check_header(&request)?;
        let caller = super::server::caller_of(&request)?;
        let ctx = self.ctx.clone();
        let mut subs = Subscriptions::default();
        let follow = Follow::all(&ctx);
        // The first answer (or refusal) is made before the stream is returned, so a caller
        // that is not entitled gets PermissionDenied at once.
        let mut first = svid_response(&ctx, &caller, &mut subs).map_err(|r| r.status())?;
        if first.is_none() {
            let _ = tokio::time::timeout(FIRST_WAIT, subs.changed()).await;
            first = svid_response(&ctx, &caller, &mut subs).map_err(|r| r.status())?;
        }
        let session = SvidSession {
            ctx,
            caller,
            follow,
            subs,
            first,
            ended: false,
        };
        Ok(Response::new(responses(session)))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        check_header(&request)?;
        let _caller = super::server::caller_of(&request)?;
        // The bundle now, then again on every CA change.
        let follow = Follow::ca_only(&self.ctx);
        Ok(Response::new(responses(BundleSession {
            follow,
            first: true,
        })))
    }
}
