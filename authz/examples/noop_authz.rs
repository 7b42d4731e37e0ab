//! The benchmark's baseline ext_authz server: answers every Check with OK and does nothing
//! else, on the same tonic stack esm uses. `bench/ext_authz.sh` puts Envoy in front of it
//! and of esm in the same run, so the difference is esm's decision and logging.
//!
//! `cargo run --release -p esm-authz --example noop_authz -- 127.0.0.1:9292`
#![allow(clippy::print_stderr)]

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tonic::{Request, Response, Status};

struct Noop;

#[tonic::async_trait]
impl Authorization for Noop {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse {
            status: Some(RpcStatus {
                code: 0,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9292".into());
    let Ok(addr) = addr.parse() else {
        eprintln!("usage: noop_authz ADDR (e.g. 127.0.0.1:9292)");
        std::process::exit(2);
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(1);
        }
    };
    let served = rt.block_on(
        tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(Noop))
            .serve(addr),
    );
    if let Err(e) = served {
        eprintln!("noop_authz: {e}");
        std::process::exit(1);
    }
}
