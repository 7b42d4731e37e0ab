use super::*;

fn leaves(n: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
        .collect()
}

/// The recursive definition of RFC 6962 §2.1, to check the frontier against.
fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => empty_root(),
        1 => leaf_hash(&d[0]),
        n => {
            let k = split(n);
            node_hash(&mth(&d[..k]), &mth(&d[k..]))
        }
    }
}

#[test]
fn frontier_root_matches_the_rfc_definition() {
    for n in 0..70 {
        let l = leaves(n);
        assert_eq!(root_of(&l), mth(&l), "n={n}");
    }
}

#[test]
fn rfc6962_empty_tree_hash() {
    assert_eq!(
        hex::encode(empty_root()),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn frontier_round_trips_through_bytes() {
    let mut f = Frontier::default();
    for (i, l) in leaves(37).iter().enumerate() {
        f.push(l);
        let g = Frontier::from_bytes(f.size(), &f.to_bytes()).unwrap();
        assert_eq!(g, f, "size {}", i + 1);
    }
    assert!(Frontier::from_bytes(3, &[0; 32]).is_none());
}

#[test]
fn every_inclusion_proof_verifies_and_a_wrong_one_does_not() {
    for n in 1..40 {
        let l = leaves(n);
        let root = root_of(&l);
        for m in 0..n {
            let p = inclusion_proof(m, &l);
            assert!(
                verify_inclusion(m as u64, n as u64, &l[m], &p, &root),
                "m={m} n={n}"
            );
            let other = (m + 1) % n;
            if other != m {
                assert!(!verify_inclusion(other as u64, n as u64, &l[m], &p, &root));
            }
            assert!(!verify_inclusion(n as u64, n as u64, &l[m], &p, &root));
        }
    }
}

#[test]
fn every_consistency_proof_verifies_and_a_forked_log_does_not() {
    for n in 1..40 {
        let l = leaves(n);
        let root_n = root_of(&l);
        for m in 1..=n {
            let root_m = root_of(&l[..m]);
            let p = consistency_proof(m, &l);
            assert!(
                verify_consistency(m as u64, n as u64, &root_m, &root_n, &p),
                "m={m} n={n}"
            );
            if m < n {
                // A log whose first m entries were rewritten is not consistent.
                let mut forked = l.clone();
                forked[m - 1] = leaf_hash(b"forged");
                let forked_root_m = root_of(&forked[..m]);
                assert!(!verify_consistency(
                    m as u64,
                    n as u64,
                    &forked_root_m,
                    &root_n,
                    &p
                ));
            }
        }
    }
}
