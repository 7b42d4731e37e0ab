use super::*;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2026-01-01 0:00 UTC);

fn held(ttl: Duration, signer: &str) -> Held {
    Held {
        issued_at: T0,
        not_after: T0 + ttl,
        signer: signer.into(),
    }
}

#[test]
fn refreshes_at_half_of_the_lifetime() {
    let nb = OffsetDateTime::UNIX_EPOCH;
    assert_eq!(
        refresh_at(nb, nb + Duration::hours(1)),
        nb + Duration::minutes(30)
    );
    assert_eq!(
        refresh_at(nb, nb + Duration::seconds(9)),
        nb + Duration::milliseconds(4500)
    );
}

#[test]
fn nothing_held_is_issued_at_once() {
    assert_eq!(next_refresh(None, None, "int-1", T0), Next::Issue);
}

#[test]
fn a_held_svid_waits_for_half_its_life_then_is_issued_again() {
    let h = held(Duration::hours(1), "int-1");
    let half = T0 + Duration::minutes(30);
    assert_eq!(next_refresh(Some(&h), None, "int-1", T0), Next::Wait(half));
    assert_eq!(
        next_refresh(Some(&h), None, "int-1", half - Duration::seconds(1)),
        Next::Wait(half)
    );
    assert_eq!(next_refresh(Some(&h), None, "int-1", half), Next::Issue);
}

#[test]
fn a_new_signing_ca_reissues_at_once() {
    let h = held(Duration::hours(1), "int-1");
    assert_eq!(next_refresh(Some(&h), None, "int-2", T0), Next::Issue);
}

#[test]
fn failures_are_retried_after_a_growing_pause_capped() {
    assert_eq!(retry_after(1), Duration::seconds(1));
    assert_eq!(retry_after(2), Duration::seconds(2));
    assert_eq!(retry_after(3), Duration::seconds(4));
    assert_eq!(retry_after(6), MAX_RETRY);
    assert_eq!(retry_after(u32::MAX), MAX_RETRY);
    let f = Failing {
        last_at: T0,
        count: 3,
    };
    let h = held(Duration::hours(1), "int-1");
    // The held SVID is not due, but a failed refresh is retried on its own schedule.
    assert_eq!(
        next_refresh(Some(&h), Some(&f), "int-1", T0 + Duration::seconds(1)),
        Next::Wait(T0 + Duration::seconds(4))
    );
    assert_eq!(
        next_refresh(None, Some(&f), "int-1", T0 + Duration::seconds(4)),
        Next::Issue
    );
}

#[test]
fn an_expired_svid_is_no_longer_valid() {
    let h = held(Duration::seconds(10), "int-1");
    assert!(h.valid_at(T0 + Duration::seconds(9)));
    assert!(!h.valid_at(T0 + Duration::seconds(10)));
}

#[test]
fn rotation_reason_says_why_an_svid_was_replaced() {
    let h = held(Duration::hours(1), "int-1");
    let half = T0 + Duration::minutes(30);
    assert_eq!(rotation_reason(&h, false, "int-1", half), "half_life");
    assert_eq!(
        rotation_reason(&h, false, "int-2", T0 + Duration::minutes(5)),
        "ca_changed"
    );
    assert_eq!(
        rotation_reason(&h, true, "int-1", T0 + Duration::minutes(40)),
        "retry"
    );
    // Ran out before the new one came: whatever the cause, the holders went without.
    assert_eq!(
        rotation_reason(&h, true, "int-2", T0 + Duration::hours(2)),
        "expired"
    );
    assert_eq!(
        rotation_reason(&h, false, "int-1", T0 + Duration::hours(1)),
        "expired"
    );
}
