//! SVID lifetimes and renewals, from `svid.issued` and `svid.rotated` events. A rotation
//! names the SVID it replaced and when that one expired (`previous.not_after`): renewed
//! before expiry is decided from it. For issuances that name nothing (CLI, older logs),
//! the newest SVID seen for the same SPIFFE ID and caller stands in.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use time::format_description::well_known::Rfc3339;

use super::{Ev, Tally, MAX_KEYS};
use crate::model::{CheckResult, Status};
use crate::period::{rfc3339, NS_PER_SEC};

/// Issuance stamps whole seconds; this much over the maximum is rounding, not a finding.
const TTL_SLACK_NS: i64 = 5 * NS_PER_SEC;

#[derive(Deserialize)]
struct Issued<'a> {
    #[serde(borrow)]
    not_after: Cow<'a, str>,
    #[serde(borrow, default)]
    via: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Rotated<'a> {
    #[serde(rename = "previous.not_after", borrow)]
    previous_not_after: Cow<'a, str>,
    #[serde(rename = "previous.serial", borrow, default)]
    previous_serial: Option<Cow<'a, str>>,
}

/// What a rotation says it replaced: the old SVID's serial and expiry (nanoseconds).
fn replaced(details: &str) -> Option<(String, i64)> {
    let d: Rotated<'_> = serde_json::from_str(details).ok()?;
    let t = time::OffsetDateTime::parse(&d.previous_not_after, &Rfc3339).ok()?;
    let ns = i64::try_from(t.unix_timestamp_nanos()).ok()?;
    Some((d.previous_serial.unwrap_or_default().into_owned(), ns))
}

/// A lifetime to the nearest minute (`36h0m`): issuance stamps whole seconds and its record
/// is written a moment later, so the seconds would differ from run to run.
fn minutes(ns: i64) -> String {
    let m = (ns + 30 * NS_PER_SEC) / (60 * NS_PER_SEC);
    format!("{}h{}m", m / 60, m % 60)
}

/// `not_after` of an issuance, as nanoseconds; `None` when the details do not say.
pub fn not_after_ns(details: &str) -> Option<(i64, bool)> {
    let d: Issued<'_> = serde_json::from_str(details).ok()?;
    let t = time::OffsetDateTime::parse(&d.not_after, &Rfc3339).ok()?;
    let ns = i64::try_from(t.unix_timestamp_nanos()).ok()?;
    Some((ns, d.via.as_deref() == Some("cli")))
}

struct Held {
    seq: u64,
    not_after_ns: i64,
}

pub struct SvidChecks {
    max_ttl_ns: Option<i64>,
    ttl: Tally,
    issued: u64,
    renew: Tally,
    renewals: u64,
    /// The newest SVID per (SPIFFE ID, caller) that esm renews itself (SDS, Workload API).
    holders: HashMap<(String, String), Held>,
    overflow: bool,
}

impl SvidChecks {
    pub fn new(max_ttl_secs: Option<u64>) -> Self {
        Self {
            max_ttl_ns: max_ttl_secs.map(|s| (s as i64).saturating_mul(NS_PER_SEC)),
            ttl: Tally::default(),
            issued: 0,
            renew: Tally::default(),
            renewals: 0,
            holders: HashMap::new(),
            overflow: false,
        }
    }

    pub fn issued(&mut self, e: &Ev<'_>) {
        if e.outcome != "success" {
            self.ttl.count("refused");
            return;
        }
        self.issued += 1;
        self.ttl.count("issued");
        let Some((not_after, by_cli)) = not_after_ns(e.details) else {
            self.ttl.except_with(Some(e.seq), || {
                format!("SVID for {}: no readable not_after", e.subject)
            });
            return;
        };
        let lifetime = not_after - e.time_ns;
        if let Some(max) = self.max_ttl_ns {
            if lifetime > max + TTL_SLACK_NS {
                self.ttl.except_with(Some(e.seq), || {
                    format!(
                        "SVID for {} lives {}, over the maximum of {}",
                        e.subject,
                        minutes(lifetime),
                        minutes(max)
                    )
                });
            } else {
                self.ttl.support(e.seq);
            }
        }
        if by_cli {
            // Issued to a person on the command line: esm does not renew these.
            self.renew.count("issued_by_cli");
            return;
        }
        self.renew.count("issued_for_workloads");
        let key = (e.subject.to_owned(), e.actor.to_owned());
        if e.kind == esm_audit::kind::SVID_ROTATED {
            self.rotated(e, &key);
        } else if let Some(prev) = self.holders.get(&key) {
            self.renewals += 1;
            if e.time_ns > prev.not_after_ns {
                self.renew.except_with(Some(e.seq), || {
                    format!(
                        "{} (caller {}) had no valid SVID from {} (seq {} expired) to {}",
                        e.subject,
                        e.actor,
                        rfc3339(prev.not_after_ns),
                        prev.seq,
                        rfc3339(e.time_ns)
                    )
                });
            } else {
                self.renew.count("renewed_in_time");
                self.renew.support(e.seq);
            }
        }
        if self.holders.len() < MAX_KEYS || self.holders.contains_key(&key) {
            self.holders.insert(
                key,
                Held {
                    seq: e.seq,
                    not_after_ns: not_after,
                },
            );
        } else {
            self.overflow = true;
        }
    }

    /// A rotation: in time when it came before the SVID it replaced expired.
    fn rotated(&mut self, e: &Ev<'_>, key: &(String, String)) {
        self.renewals += 1;
        self.renew.count("rotations");
        let Some((serial, prev_not_after)) = replaced(e.details) else {
            self.renew.except_with(Some(e.seq), || {
                format!(
                    "rotation of {}: names no readable previous.not_after",
                    e.subject
                )
            });
            return;
        };
        if e.time_ns > prev_not_after {
            let prev = self
                .holders
                .get(key)
                .map_or(String::new(), |h| format!(" (seq {})", h.seq));
            self.renew.except_with(Some(e.seq), || {
                format!(
                    "{} (caller {}) had no valid SVID from {} (serial {serial}{prev} expired) to {}",
                    e.subject,
                    e.actor,
                    rfc3339(prev_not_after),
                    rfc3339(e.time_ns)
                )
            });
        } else {
            self.renew.count("renewed_in_time");
            self.renew.support(e.seq);
        }
    }

    pub fn finish(mut self, end_ns: i64) -> Vec<CheckResult> {
        let ttl = if self.issued > 0 && self.max_ttl_ns.is_none() {
            self.ttl
                .except(None, "the configured SVID maximum lifetime is not known");
            self.ttl
                .result("svid.ttl_within_max", Status::InsufficientEvidence)
        } else {
            let n = self.issued;
            self.ttl.judged("svid.ttl_within_max", n)
        };
        // An SVID that simply ran out with no successor belongs to a workload that stopped.
        let lapsed = self
            .holders
            .values()
            .filter(|h| h.not_after_ns < end_ns)
            .count() as u64;
        self.renew.add("expired_without_successor", lapsed);
        self.renew.add("renewals", self.renewals);
        let renew = if self.overflow {
            self.renew.except_with(None, || {
                format!("more than {MAX_KEYS} SVID holders: renewals of the rest not tracked")
            });
            self.renew
                .result("svid.renewed_before_expiry", Status::InsufficientEvidence)
        } else {
            let n = self.renewals;
            self.renew.judged("svid.renewed_before_expiry", n)
        };
        vec![ttl, renew]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::checks::test_events::ev;

    fn issued(seq: u64, t: i64, not_after: i64, via: &str) -> String {
        let _ = seq;
        format!(
            r#"{{"not_after":"{}","not_before":"{}","via":"{via}"}}"#,
            rfc3339(not_after * NS_PER_SEC),
            rfc3339(t * NS_PER_SEC)
        )
    }

    #[test]
    fn svid_longer_than_the_maximum_is_an_exception() {
        let mut c = SvidChecks::new(Some(3600));
        let ok = issued(1, 0, 3600, "cli");
        let long = issued(2, 10, 10 + 7200, "cli");
        let mut a = ev(1, 0, "svid.issued", &ok);
        a.subject = "spiffe://t/a";
        c.issued(&a);
        c.issued(&ev(2, 10, "svid.issued", &long));
        let r = c.finish(100_000 * NS_PER_SEC);
        assert_eq!(r[0].status, Status::Failed);
        assert_eq!(r[0].exceptions.len(), 1);
        assert_eq!(r[0].exceptions[0].seq, Some(2));
        assert_eq!(r[0].sample, vec![1]);
    }

    #[test]
    fn unknown_maximum_is_insufficient_evidence() {
        let mut c = SvidChecks::new(None);
        let d = issued(1, 0, 3600, "cli");
        c.issued(&ev(1, 0, "svid.issued", &d));
        assert_eq!(c.finish(0)[0].status, Status::InsufficientEvidence);
    }

    #[test]
    fn renewal_after_expiry_is_an_exception_and_in_time_is_not() {
        let mut c = SvidChecks::new(Some(3600));
        let first = issued(1, 0, 600, "sds");
        let in_time = issued(2, 300, 900, "sds");
        let late = issued(3, 1000, 1600, "sds");
        for (seq, t, d) in [(1, 0, &first), (2, 300, &in_time), (3, 1000, &late)] {
            let mut e = ev(seq, t, "svid.issued", d);
            e.subject = "spiffe://t/web";
            e.actor = "uid:1000";
            c.issued(&e);
        }
        let r = c.finish(2000 * NS_PER_SEC);
        assert_eq!(r[1].status, Status::Failed);
        assert_eq!(r[1].exceptions.len(), 1);
        assert_eq!(r[1].exceptions[0].seq, Some(3));
        assert_eq!(r[1].counts["renewed_in_time"], 1);
        assert_eq!(r[1].counts["expired_without_successor"], 1);
    }

    fn rotated(t: i64, not_after: i64, prev_not_after: i64) -> String {
        format!(
            r#"{{"not_after":"{}","not_before":"{}","via":"sds","previous.serial":"01","previous.not_after":"{}"}}"#,
            rfc3339(not_after * NS_PER_SEC),
            rfc3339(t * NS_PER_SEC),
            rfc3339(prev_not_after * NS_PER_SEC)
        )
    }

    #[test]
    fn rotations_are_judged_by_the_expiry_of_the_svid_they_replaced() {
        let mut c = SvidChecks::new(Some(3600));
        let first = issued(1, 0, 600, "sds");
        let on_time = rotated(300, 900, 600);
        let late = rotated(1000, 1600, 900);
        let too_long = rotated(1200, 1200 + 7200, 1600);
        let events = [
            (1, 0, "svid.issued", &first),
            (2, 300, "svid.rotated", &on_time),
            (3, 1000, "svid.rotated", &late),
            (4, 1200, "svid.rotated", &too_long),
        ];
        for (seq, t, kind, d) in events {
            let mut e = ev(seq, t, kind, d);
            e.subject = "spiffe://t/web";
            e.actor = "uid:1000";
            c.issued(&e);
        }
        let r = c.finish(2000 * NS_PER_SEC);
        // The lifetime of a rotated SVID is held to the maximum like any issuance.
        assert_eq!(
            r[0].exceptions.iter().map(|x| x.seq).collect::<Vec<_>>(),
            vec![Some(4)]
        );
        assert_eq!(r[1].status, Status::Failed);
        assert_eq!(r[1].exceptions.len(), 1);
        assert_eq!(r[1].exceptions[0].seq, Some(3));
        assert!(r[1].exceptions[0].message.contains("serial 01"));
        assert_eq!(r[1].counts["rotations"], 3);
        assert_eq!(r[1].counts["renewed_in_time"], 2);
        assert_eq!(r[1].sample, vec![2, 4]);
    }

    #[test]
    fn a_rotation_without_a_readable_predecessor_is_an_exception() {
        let mut c = SvidChecks::new(Some(3600));
        let d = issued(1, 0, 600, "sds");
        let mut e = ev(1, 0, "svid.rotated", &d);
        e.subject = "spiffe://t/web";
        c.issued(&e);
        let r = c.finish(0);
        assert_eq!(r[1].status, Status::Failed);
        assert!(r[1].exceptions[0].message.contains("previous.not_after"));
    }

    #[test]
    fn no_issuance_is_not_applicable() {
        let r = SvidChecks::new(Some(1)).finish(0);
        assert_eq!(r[0].status, Status::NotApplicable);
        assert_eq!(r[1].status, Status::NotApplicable);
    }
}
