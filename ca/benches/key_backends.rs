//! SVIDs/s with the signing CA key in SoftHSM2 (PKCS#11, P-256) next to the file backend,
//! at 1 and 8 concurrent issuers, in one run. Issuance from a CSR, so the CA's signature is
//! the cost that differs, not the workload key generation. Also the audit checkpoint
//! signature: the file Ed25519 key next to Ed25519 and P-256 keys in the token.
//!
//! `cargo bench -p esm-ca --bench key_backends`; needs softhsm2 (tests/run installs it); the
//! token is the tests' throwaway one (`tests/softhsm`).
//! criterion prints elements/s = SVIDs/s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use esm_ca::issuer::{issue, IssuancePolicy, LeafKey, SigningCa, SvidRequest};
use esm_ca::key_backend::file::FileKeyStore;
use esm_ca::key_backend::{KeyAlgorithm, KeyStore};
use esm_ca::rotation::RotationPolicy;
use esm_ca::store::{CaStore, InitOptions};
use esm_identity::{SpiffeId, TrustDomain};
use time::OffsetDateTime;

#[path = "../tests/softhsm/mod.rs"]
mod softhsm;

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
    let _token = softhsm::softhsm();
    let hsm_ca = signing_ca(
        &dir.path().join("hsm"),
        Arc::new(softhsm::store("esm-test")),
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
    checkpoint_keys(c);
}

/// One checkpoint signature (and its check against the public key, which every signature
/// gets before it is stored), per key backend.
fn checkpoint_keys(c: &mut Criterion) {
    use esm_audit::checkpoint::{Algorithm, SigningKey};
    use esm_ca::key_backend::checkpoint_key::CheckpointKeys;
    let keys = Arc::new(CheckpointKeys::Pkcs11(softhsm::store("esm-test")));
    let p256 = &softhsm::unique("bench-checkpoint-p256");
    softhsm::store("esm-test")
        .generate(p256, KeyAlgorithm::EcP256)
        .unwrap();
    let signers = [
        ("file_ed25519", SigningKey::ephemeral().unwrap()),
        (
            "pkcs11_softhsm2_ed25519",
            SigningKey::new(Arc::new(
                keys.generate(&softhsm::unique("bench-checkpoint-ed"))
                    .unwrap(),
            )),
        ),
        (
            "pkcs11_softhsm2_p256",
            SigningKey::new(Arc::new(keys.load(p256, Algorithm::EcdsaP256).unwrap())),
        ),
    ];
    let mut g = c.benchmark_group("checkpoint_sign");
    g.measurement_time(Duration::from_secs(5));
    for (name, key) in &signers {
        let mut n = 0_u64;
        g.bench_function(*name, |b| {
            b.iter(|| {
                n += 1;
                key.sign(n, [1; 32], [2; 32], 3).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
