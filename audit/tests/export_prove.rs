//! Export and proofs: a full JSONL export verifies offline; any edit to it is caught; proofs
//! verify with only the public key and fail for a forked log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{append_n, writer, Backend};
use esm_audit::checkpoint::SigningKey;
use esm_audit::export::{export, verify_export};
use esm_audit::prove::{prove_consistency, prove_inclusion};
use esm_audit::store::Filter;
use esm_audit::writer::WriterOptions;
use esm_audit::Error;

async fn log_of(b: &Backend, rounds: u64) -> esm_audit::checkpoint::PublicKey {
    let key = SigningKey::ephemeral().unwrap();
    let public = key.public();
    let o = WriterOptions {
        checkpoint_every: 8,
        ..Default::default()
    };
    let (sink, handle) = writer(b.open().await, key, o).await;
    for r in 0..rounds {
        append_n(&sink, r * 8, 8).await;
    }
    handle.shutdown().await.unwrap();
    public
}

async fn exported(b: &Backend, filter: &Filter) -> String {
    let mut out = Vec::new();
    export(&b.open().await, filter, &mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn full_export_verifies_offline_and_edits_are_caught() {
    for b in [Backend::sqlite(), Backend::postgres()] {
        let key = log_of(&b, 5).await;
        let text = exported(&b, &Filter::default()).await;
        assert_eq!(
            text.lines().filter(|l| l.starts_with("{\"seq\"")).count(),
            40
        );
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("{\"checkpoint\""))
                .count(),
            5
        );
        let report = verify_export(&mut text.as_bytes(), &key).unwrap();
        assert_eq!((report.events, report.checkpoints), (40, 5));

        let edited = text.replacen("\"method\":\"GET\"", "\"method\":\"PUT\"", 1);
        assert!(
            matches!(verify_export(&mut edited.as_bytes(), &key), Err(Error::Tampered(t)) if t.seq == 1)
        );
        let dropped: String = text
            .lines()
            .filter(|l| !l.contains("\"seq\":17,"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(
            matches!(verify_export(&mut dropped.as_bytes(), &key), Err(Error::Tampered(t)) if t.seq == 17)
        );
        let garbage = format!("{text}not json\n");
        assert!(matches!(
            verify_export(&mut garbage.as_bytes(), &key),
            Err(Error::InvalidEvent(_))
        ));
    }
}

#[tokio::test]
async fn filters_select_by_kind_seq_and_time() {
    let b = Backend::sqlite();
    log_of(&b, 2).await;
    let by_seq = exported(
        &b,
        &Filter {
            from_seq: Some(3),
            to_seq: Some(5),
            ..Default::default()
        },
    )
    .await;
    let seqs: Vec<u64> = by_seq
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    let none = exported(
        &b,
        &Filter {
            kind: Some("svid.issued".into()),
            ..Default::default()
        },
    )
    .await;
    assert!(none.is_empty());
    let future = exported(
        &b,
        &Filter {
            from_time_ns: Some(i64::MAX - 1),
            ..Default::default()
        },
    )
    .await;
    assert!(future.is_empty());
}

#[tokio::test]
async fn inclusion_and_consistency_proofs_verify_with_the_public_key_only() {
    let b = Backend::sqlite();
    let key = log_of(&b, 6).await;
    let db = b.open().await;
    for seq in [1, 8, 9, 30, 48] {
        let p = prove_inclusion(&db, seq).await.unwrap();
        let json = serde_json::to_string(&p).unwrap();
        let back: esm_audit::prove::InclusionProof = serde_json::from_str(&json).unwrap();
        back.verify(&key).unwrap();
        let mut wrong = back.clone();
        wrong.event_hash[0] ^= 1;
        assert!(wrong.verify(&key).is_err());
    }
    assert!(prove_inclusion(&db, 49).await.is_err());
    assert!(prove_inclusion(&db, 0).await.is_err());

    for old in [8, 16, 24, 40] {
        let p = prove_consistency(&db, old, None).await.unwrap();
        assert_eq!(p.new.tree_size, 48);
        p.verify(&key).unwrap();
        let mut forked = p.clone();
        forked.old.root[0] ^= 1;
        assert!(forked.verify(&key).is_err(), "a changed old root must fail");
    }
    assert!(
        prove_consistency(&db, 9, None).await.is_err(),
        "no checkpoint at 9"
    );
}
