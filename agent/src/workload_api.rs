//! The SPIFFE Workload API (X.509 profile) on the agent socket, for SPIFFE libraries:
//! FetchX509SVID streams every SVID the caller's entries grant (with the bundle), and
//! FetchX509Bundles the bundles; both send again on every refresh and CA change. As the
//! specification requires, a call without the `workload.spiffe.io: true` header is refused.

use std::pin::Pin;

use esm_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApi;
use esm_proto::workload::{
    X509BundlesRequest, X509BundlesResponse, X509svid, X509svidRequest, X509svidResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use esm_ca::material::CaMaterial;

use super::context::{AgentContext, Caller};
use super::render::ensure_svids;
use super::secrets::Refusal;
use super::svid_set::{until_refresh, SvidSet};
use super::wake::{Follow, Wake};

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

/// The caller's SVIDs and bundle now, issuing what is due.
fn svid_response(
    ctx: &AgentContext,
    caller: &Caller,
    svids: &mut SvidSet,
) -> Result<X509svidResponse, Refusal> {
    let ca = ctx.ca.borrow().clone();
    let entries = caller.entries(&ctx.entries.borrow());
    if entries.is_empty() {
        return Err(Refusal::NotEntitled(
            "no registration entry matches this workload".into(),
        ));
    }
    let ids = super::entry::granted_ids(&entries);
    ensure_svids(ctx, caller, &ids, &entries, &ca, svids, "workload-api")?;
    let roots: Vec<&[u8]> = ca.bundle_der().iter().map(Vec::as_slice).collect();
    let bundle = concat(&roots);
    let mut out = Vec::with_capacity(ids.len());
    for id in &ids {
        let svid = svids
            .get(id)
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
    Ok(X509svidResponse {
        svids: out,
        ..Default::default()
    })
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

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = BoxStream<X509svidResponse>;
    type FetchX509BundlesStream = BoxStream<X509BundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        check_header(&request)?;
        let mut caller = super::server::caller_of(&request)?;
        let ctx = self.ctx.clone();
        let mut svids = SvidSet::default();
        // The first answer (or refusal) is made before the stream is returned, so a caller
        // that is not entitled gets PermissionDenied at once.
        let first = svid_response(&ctx, &caller, &mut svids).map_err(|r| r.status())?;
        let (tx, rx) = mpsc::channel(2);
        let mut follow = Follow::all(&ctx);
        tokio::spawn(async move {
            let mut next = Ok(first);
            loop {
                let failed = next.is_err();
                if tx
                    .send(next.map_err(|r: Refusal| r.status()))
                    .await
                    .is_err()
                    || failed
                {
                    return;
                }
                if let Wake::Closed = follow.change(&tx, until_refresh(&svids)).await {
                    return;
                }
                if let Err(status) = caller.recheck() {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                next = svid_response(&ctx, &caller, &mut svids);
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        check_header(&request)?;
        let _caller = super::server::caller_of(&request)?;
        let mut follow = Follow::ca_only(&self.ctx);
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            loop {
                let m = follow.ca();
                let roots: Vec<&[u8]> = m.bundle_der().iter().map(Vec::as_slice).collect();
                let resp = X509BundlesResponse {
                    bundles: [(td_id(&m), concat(&roots))].into(),
                    ..Default::default()
                };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
                if let Wake::Closed = follow.change(&tx, std::future::pending()).await {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
