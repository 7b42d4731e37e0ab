//! SDS at scale against a real `esm serve`: N concurrent StreamSecrets streams over I
//! identities (stream k asks for the SVID of `spiffe://example.org/bench/<k mod I>` and
//! ROOTCA), then a root CA rotation made with `esm ca rotate prepare --root`. Reports the
//! server's RSS per stream, and how long after the rotation the first and the last stream
//! received the new bundle (the fan-out is last − first), counted from the start of the CLI
//! command and from its end.
//!
//! `cargo bench --bench sds_streams` (N from ESM_BENCH_STREAMS, default 1000; I from
//! ESM_BENCH_IDENTITIES, default 100; streams per connection from ESM_BENCH_PER_CONNECTION,
//! default 4: an Envoy keeps its SDS streams on one connection, so 1,000 streams are about
//! 250 Envoys, and all of them run as this process's uid, which the agent socket admits
//! 256 connections of). ESM_BENCH_BIN runs another `esm` binary (a baseline build) instead of this
//! one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

fn esm_bin() -> String {
    std::env::var("ESM_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_esm").to_owned())
}
const TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// `esm`, without the bench's own settings: esm reads every `ESM_*` variable as a
/// configuration key, and refuses keys it does not know.
fn esm_command() -> Command {
    let mut c = Command::new(esm_bin());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ESM_BENCH_")) {
        c.env_remove(k);
    }
    c
}

fn esm(dir: &Path, args: &[&str]) {
    let out = esm_command()
        .args(args)
        .arg("--dir")
        .arg(dir)
        .env_remove("ESM_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "esm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn connect(sock: &Path) -> tonic::transport::Channel {
    esm_agent::server::connect(sock).await.unwrap()
}

fn main() {
    let n: usize = std::env::var("ESM_BENCH_STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let per_connection: usize = std::env::var("ESM_BENCH_PER_CONNECTION")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let identities: usize = std::env::var("ESM_BENCH_IDENTITIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .max(1);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    esm(d, &["init", "--trust-domain", "example.org"]);
    let mut server = esm_command()
        .args(["serve", "--dir"])
        .arg(d)
        .env("ESM_AUTHZ_LISTEN", "")
        .env("ESM_ADMIN_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("ESM_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let sock = d.join("agent.sock");
    let started = Instant::now();
    while !sock.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "agent socket never appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let id_of = |k: usize| format!("spiffe://example.org/bench/{}", k % identities);
    let entries: String = (0..identities)
        .map(|k| {
            format!(
                "{{\"spiffe_id\":\"{}\",\"selectors\":[\"unix:uid:{}\"]}}\n",
                id_of(k),
                uid()
            )
        })
        .collect();
    let import = d.join("entries.jsonl");
    std::fs::write(&import, entries).unwrap();
    esm(d, &["entry", "import", import.to_str().unwrap()]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = rss_kib(server.id());
        let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(usize, String, Instant)>();
        let mut keep = Vec::new();
        let t = Instant::now();
        for c in 0..n.div_ceil(per_connection) {
            let channel = connect(&sock).await;
            for s in 0..per_connection.min(n - c * per_connection) {
                let id = c * per_connection + s;
                let (tx, rx) = mpsc::channel::<DiscoveryRequest>(4);
                let names = vec![id_of(id), "ROOTCA".to_string()];
                tx.send(DiscoveryRequest {
                    resource_names: names.clone(),
                    type_url: TYPE.into(),
                    ..Default::default()
                })
                .await
                .unwrap();
                let mut client = SecretDiscoveryServiceClient::new(channel.clone());
                let mut inbound = client.stream_secrets(ReceiverStream::new(rx)).await.unwrap().into_inner();
                let seen = seen_tx.clone();
                keep.push(tx.clone());
                tokio::spawn(async move {
                    while let Some(Ok(r)) = inbound.next().await {
                        let r: DiscoveryResponse = r;
                        let roots = r.resources.iter().find(|a| a.value.windows(6).any(|w| w == b"ROOTCA")).map(|a| a.value.len()).unwrap_or(0);
                        // ACK, as Envoy does.
                        let _ = tx
                            .send(DiscoveryRequest {
                                version_info: r.version_info.clone(),
                                response_nonce: r.nonce.clone(),
                                resource_names: names.clone(),
                                type_url: TYPE.into(),
                                ..Default::default()
                            })
                            .await;
                        let _ = seen.send((id, format!("{roots}"), Instant::now()));
                    }
                });
            }
        }
        let mut first = std::collections::BTreeMap::new();
        while first.len() < n {
            let (id, roots, _) = tokio::time::timeout(Duration::from_secs(60), seen_rx.recv()).await.unwrap().unwrap();
            first.entry(id).or_insert(roots);
        }
        let setup = t.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = rss_kib(server.id());
        let old_len = first.values().next().unwrap().clone();
        let rotated_at = Instant::now();
        esm(d, &["ca", "rotate", "prepare", "--root"]);
        let cli_done = rotated_at.elapsed();
        let mut got = std::collections::BTreeMap::new();
        while got.len() < n {
            let (id, roots, at) = tokio::time::timeout(Duration::from_secs(30), seen_rx.recv()).await.unwrap().unwrap();
            if roots != old_len {
                got.entry(id).or_insert(at);
            }
        }
        let first_at = got.values().min().unwrap().duration_since(rotated_at);
        let last_at = got.values().max().unwrap().duration_since(rotated_at);
        println!("streams: {n} over {identities} identities on {} connections; opened and all first responses in {:.0} ms", n.div_ceil(per_connection), setup.as_secs_f64() * 1e3);
        println!("server RSS: {before} KiB idle, {after} KiB with {n} streams: {:.1} KiB per stream", (after.saturating_sub(before)) as f64 / n as f64);
        println!("root rotation (CLI took {:.0} ms): first stream updated after {:.0} ms, last after {:.0} ms; fan-out {:.0} ms; last {:.0} ms after the CLI ended",
            cli_done.as_secs_f64() * 1e3, first_at.as_secs_f64() * 1e3, last_at.as_secs_f64() * 1e3, (last_at - first_at).as_secs_f64() * 1e3,
            last_at.saturating_sub(cli_done).as_secs_f64() * 1e3);
        drop(keep);
    });
    let _ = Command::new("kill").arg(server.id().to_string()).status();
    let _ = server.wait();
}

fn uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}
