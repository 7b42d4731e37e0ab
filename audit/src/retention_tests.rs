use super::*;
use crate::merkle::Frontier;

/// A signed checkpoint over `n` made-up event hashes, with its frontier.
fn anchor(key: &SigningKey, n: u8) -> StoredCheckpoint {
    let mut f = Frontier::default();
    for i in 1..=n {
        f.push(&[i; 32]);
    }
    StoredCheckpoint {
        checkpoint: key.sign(u64::from(n), f.root(), [n; 32], 7).unwrap(),
        frontier: f.to_bytes(),
    }
}

#[tokio::test]
async fn a_signed_statement_verifies_and_any_change_breaks_it() {
    let key = SigningKey::ephemeral().unwrap();
    let st = Statement::sign(&key, &anchor(&key, 5), 99, "cli:uid:0")
        .await
        .unwrap();
    assert_eq!(st.first_kept, 6);
    assert_eq!(st.check(&key.public()), Ok(()));
    let other = anchor(&key, 6);
    for tamper in [
        |s: &mut Statement| s.first_kept += 1,
        |s: &mut Statement| s.time_ns += 1,
        |s: &mut Statement| s.actor.push('x'),
        |s: &mut Statement| s.signature[0] ^= 1,
        |s: &mut Statement| s.anchor.root[0] ^= 1,
        |s: &mut Statement| s.frontier[0] ^= 1,
    ] {
        let mut s = st.clone();
        tamper(&mut s);
        assert!(s.check(&key.public()).is_err(), "{s:?}");
    }
    // Moved to another (genuinely signed) checkpoint, the statement's signature no longer holds.
    let mut moved = st.clone();
    moved.anchor = other.checkpoint.clone();
    moved.frontier = other.frontier.clone();
    moved.first_kept = 7;
    assert!(moved.check(&key.public()).is_err());
    let stranger = SigningKey::ephemeral().unwrap();
    assert!(st.check(&stranger.public()).is_err());
}

#[tokio::test]
async fn a_checkpoint_signature_does_not_pass_as_a_statement_signature() {
    let key = SigningKey::ephemeral().unwrap();
    let a = anchor(&key, 3);
    let mut st = Statement::sign(&key, &a, 7, "x").await.unwrap();
    st.signature = a.checkpoint.signature.clone();
    assert!(st.check(&key.public()).is_err());
}

#[tokio::test]
async fn a_statement_covers_only_its_own_checkpoint() {
    let key = SigningKey::ephemeral().unwrap();
    let a = anchor(&key, 4);
    let st = Statement::sign(&key, &a, 1, "x").await.unwrap();
    assert!(st.covers(&a.checkpoint));
    assert!(!st.covers(&anchor(&key, 5).checkpoint));
    let mut same_size = a.checkpoint.clone();
    same_size.last_hash[0] ^= 1;
    assert!(!st.covers(&same_size));
}

#[tokio::test]
async fn a_retention_record_without_a_signed_statement_is_tampering_at_its_seq() {
    let key = SigningKey::ephemeral().unwrap();
    let st = Statement::sign(&key, &anchor(&key, 2), 1, "x")
        .await
        .unwrap();
    let e = crate::event::prepare(st.event("test").unwrap(), &|v| v.to_owned()).unwrap();
    let r = crate::hash_chain::link(e, 9, [0; 32]);
    assert_eq!(check_record(&r, &key.public()), Ok(st));
    let mut legacy = r.clone();
    legacy.details = r#"{"removed":2,"up_to_seq":2}"#.into();
    let t = check_record(&legacy, &key.public()).unwrap_err();
    assert_eq!(t.seq, 10);
}

#[test]
fn the_gap_message_names_the_missing_events() {
    assert_eq!(
        gap(4, None).to_string(),
        "sequence 1: events 1..3 missing: no signed retention statement covers them"
    );
}
