//! Issuance throughput on one core, against the bare cost of an ECDSA P-256 key generation +
//! signature measured in the same run (the floor any CA that makes workload keys pays).
//!
//! `cargo bench -p esm-ca --bench issuance`; criterion prints elements/s = SVIDs/s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use esm_ca::issuer::{issue, IssuancePolicy, LeafKey, SvidRequest};
use esm_ca::key_backend::file::FileKeyStore;
use esm_ca::key_backend::KeyAlgorithm;
use esm_ca::rotation::RotationPolicy;
use esm_ca::store::{CaStore, InitOptions};
use esm_identity::{SpiffeId, TrustDomain};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use time::OffsetDateTime;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = CaStore::new(
        dir.path().join("ca"),
        Arc::new(FileKeyStore::new(dir.path().join("ca/keys"), None)),
    );
    let now = OffsetDateTime::now_utc();
    store
        .init(
            InitOptions {
                trust_domain: TrustDomain::parse("example.org").unwrap(),
                algorithm: KeyAlgorithm::EcP256,
                upstream: None,
            },
            &RotationPolicy::default(),
            now,
        )
        .unwrap();
    let state = store.load().unwrap();
    let ca = store.signing_ca(&state).unwrap();
    let policy = IssuancePolicy::default();
    let id = SpiffeId::parse("spiffe://example.org/ns/prod/sa/web").unwrap();
    let csr = {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .der()
            .to_vec()
    };
    let tbs = vec![0x5a_u8; 400]; // about the size of a leaf's TBSCertificate

    let mut g = c.benchmark_group("issuance");
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline_p256_keygen_and_sign", |b| {
        let rng = SystemRandom::new();
        b.iter(|| {
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
            let kp =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap();
            kp.sign(&rng, &tbs).unwrap()
        })
    });
    g.bench_function("svid_esm_generated_key", |b| {
        b.iter(|| {
            let req = SvidRequest {
                spiffe_id: &id,
                ttl: None,
                dns_names: &[],
                key: LeafKey::Generate,
            };
            issue(&ca, &policy, req, now).unwrap()
        })
    });
    g.bench_function("svid_from_csr", |b| {
        b.iter(|| {
            let v = esm_ca::csr::validate(&csr, &id).unwrap();
            let req = SvidRequest {
                spiffe_id: &id,
                ttl: None,
                dns_names: &[],
                key: LeafKey::Csr(v),
            };
            issue(&ca, &policy, req, now).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
