//! SVIDs/s with the signing CA key in SoftHSM2 (PKCS#11, P-256) next to the file backend,
//! at 1 and 8 concurrent issuers, in one run. Issuance from a CSR, so the CA's signature is
//! the cost that differs, not the workload key generation.
//!
//! `cargo bench -p esm-ca --bench key_backends`; needs softhsm2 (tests/run installs it).
//! criterion prints elements/s = SVIDs/s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use esm_ca::issuer::{issue, IssuancePolicy, LeafKey, SigningCa, SvidRequest};
use esm_ca::key_backend::file::FileKeyStore;
use esm_ca::key_backend::pkcs11::{Pin, Pkcs11Config, Pkcs11KeyStore};
use esm_ca::key_backend::{KeyAlgorithm, KeyStore};
use esm_ca::rotation::RotationPolicy;
use esm_ca::store::{CaStore, InitOptions};
use esm_identity::{SpiffeId, TrustDomain};
use time::OffsetDateTime;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn softhsm_store(dir: &std::path::Path) -> Arc<dyn KeyStore> {
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.join("tokens").display()
        ),
    )
    .unwrap();
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let ok = std::process::Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--pin",
            "1234",
        ])
        .args(["--so-pin", "12345678"])
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok, "softhsm2-util --init-token failed");
    Arc::new(Pkcs11KeyStore::new(Pkcs11Config {
        module: MODULE.into(),
        token_label: "bench".into(),
        pin: Pin::new("1234").unwrap(),
    }))
}

fn signing_ca(dir: &std::path::Path, keys: Arc<dyn KeyStore>) -> Arc<SigningCa> {
    let store = CaStore::new(dir.join("ca"), keys);
    store
        .init(
            InitOptions {
                trust_domain: TrustDomain::parse("example.org").unwrap(),
                algorithm: KeyAlgorithm::EcP256,
                upstream: None,
            },
            &RotationPolicy::default(),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
    Arc::new(store.signing_ca(&store.load().unwrap()).unwrap())
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let file_ca = signing_ca(
        &dir.path().join("file"),
        Arc::new(FileKeyStore::new(dir.path().join("file/ca/keys"), None)),
    );
    let hsm_ca = signing_ca(
        &dir.path().join("hsm"),
        softhsm_store(&dir.path().join("softhsm")),
    );
    let csr = {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Arc::new(
            rcgen::CertificateParams::default()
                .serialize_request(&key)
                .unwrap()
                .der()
                .to_vec(),
        )
    };

    let mut g = c.benchmark_group("key_backends");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(5));
    for (backend, ca) in [("file", &file_ca), ("pkcs11_softhsm2", &hsm_ca)] {
        for issuers in [1_u64, 8] {
            g.bench_function(format!("{backend}/{issuers}_issuers"), |b| {
                b.iter_custom(|iters| {
                    let per = iters.div_ceil(issuers);
                    let start = Instant::now();
                    let threads: Vec<_> = (0..issuers)
                        .map(|_| {
                            let (ca, csr) = (ca.clone(), csr.clone());
                            std::thread::spawn(move || {
                                let id =
                                    SpiffeId::parse("spiffe://example.org/ns/prod/sa/web").unwrap();
                                let policy = IssuancePolicy::default();
                                for _ in 0..per {
                                    let v = esm_ca::csr::validate(&csr, &id).unwrap();
                                    let req = SvidRequest {
                                        spiffe_id: &id,
                                        ttl: None,
                                        dns_names: &[],
                                        key: LeafKey::Csr(v),
                                    };
                                    issue(&ca, &policy, req, OffsetDateTime::now_utc()).unwrap();
                                }
                            })
                        })
                        .collect();
                    for t in threads {
                        t.join().unwrap();
                    }
                    // Scaled back to `iters` when rounding up made extra SVIDs.
                    start
                        .elapsed()
                        .mul_f64(iters as f64 / (per * issuers) as f64)
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
