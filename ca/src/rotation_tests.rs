use super::*;
use crate::key_backend::KeyAlgorithm;
use crate::state::{Authority, AuthorityKind, Status, STATE_VERSION};
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2026-01-01 0:00 UTC);

fn authority(id: &str, kind: AuthorityKind, status: Status, days: i64) -> Authority {
    Authority {
        id: id.into(),
        kind,
        status,
        parent: (kind == AuthorityKind::Intermediate).then(|| "r1".to_string()),
        key_backend: "file".into(),
        key_id: id.into(),
        algorithm: KeyAlgorithm::EcP256,
        cert_pem: String::new(),
        not_before: T0,
        not_after: T0 + Duration::days(days),
        activated_at: None,
        retired_at: None,
        upstream: false,
    }
}

fn state() -> CaState {
    CaState {
        version: STATE_VERSION,
        trust_domain: "example.org".into(),
        algorithm: KeyAlgorithm::EcP256,
        bundle_sequence: 1,
        authorities: vec![
            authority("r1", AuthorityKind::Root, Status::Active, 600),
            authority("i1", AuthorityKind::Intermediate, Status::Active, 6),
        ],
        published: vec![],
    }
}

#[test]
fn nothing_is_due_before_half_life() {
    let p = RotationPolicy::default();
    assert_eq!(due_step(&state(), T0 + Duration::hours(71), &p), None);
    assert_eq!(next_due_at(&state(), &p), Some(T0 + Duration::days(3)));
}

#[test]
fn prepares_intermediate_at_half_life_and_activates_at_five_sixths() {
    let p = RotationPolicy::default();
    let mut s = state();
    assert_eq!(
        due_step(&s, T0 + Duration::days(3), &p),
        Some(Step::PrepareIntermediate)
    );
    s.authorities.push(authority(
        "i2",
        AuthorityKind::Intermediate,
        Status::Prepared,
        8,
    ));
    assert_eq!(due_step(&s, T0 + Duration::days(4), &p), None);
    assert_eq!(next_due_at(&s, &p), Some(T0 + Duration::days(5)));
    assert_eq!(
        due_step(&s, T0 + Duration::days(5), &p),
        Some(Step::ActivateIntermediate)
    );
}

#[test]
fn root_rotation_prepares_then_activates() {
    let p = RotationPolicy::default();
    let mut s = state();
    s.authorities[1].not_after = T0 + Duration::days(1000); // keep the intermediate quiet
    assert_eq!(
        due_step(&s, T0 + Duration::days(300), &p),
        Some(Step::PrepareRoot)
    );
    s.authorities
        .push(authority("r2", AuthorityKind::Root, Status::Prepared, 2000));
    assert_eq!(due_step(&s, T0 + Duration::days(499), &p), None);
    assert_eq!(
        due_step(&s, T0 + Duration::days(500), &p),
        Some(Step::ActivateRoot)
    );
}

#[test]
fn upstream_root_is_never_rotated_by_esm() {
    let p = RotationPolicy::default();
    let mut s = state();
    s.authorities[0].upstream = true;
    s.authorities[1].not_after = T0 + Duration::days(2000);
    assert_eq!(due_step(&s, T0 + Duration::days(590), &p), None);
}

#[test]
fn earliest_due_step_comes_first() {
    let p = RotationPolicy::default();
    let s = state();
    // Both the root (half of 600 days) and the intermediate are overdue; the intermediate's
    // deadline came first.
    assert_eq!(
        due_step(&s, T0 + Duration::days(400), &p),
        Some(Step::PrepareIntermediate)
    );
}

#[test]
fn published_roots_keep_a_retired_root_while_its_intermediates_live() {
    let mut s = state();
    s.authorities[0].status = Status::Retired;
    s.authorities
        .push(authority("r2", AuthorityKind::Root, Status::Active, 2000));
    let ids = |s: &CaState, now| {
        s.published_roots(now)
            .iter()
            .map(|a| a.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&s, T0 + Duration::days(1)), ["r1", "r2"]);
    assert_eq!(ids(&s, T0 + Duration::days(7)), ["r2"]);
}
