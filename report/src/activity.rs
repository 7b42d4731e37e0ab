//! What the HTML charts draw, accumulated in the same pass: counts per UTC day and the
//! distribution of SVID lifetimes.

use std::collections::{BTreeMap, HashSet};

use crate::checks::Ev;
use crate::model::{Activity, Bucket, Day, Edge};
use crate::period::{day_of, day_text, NS_PER_SEC};

/// Upper bounds (seconds) of the lifetime buckets; the last bucket is open.
const BUCKETS: &[(i64, &str)] = &[
    (300, "≤ 5 min"),
    (900, "≤ 15 min"),
    (3600, "≤ 1 h"),
    (6 * 3600, "≤ 6 h"),
    (24 * 3600, "≤ 24 h"),
    (7 * 24 * 3600, "≤ 7 d"),
];

/// Distinct (SPIFFE ID, caller) pairs remembered to tell a renewal from a first issuance.
const MAX_HOLDERS: usize = 200_000;

#[derive(Default)]
pub struct ActivityAcc {
    days: BTreeMap<i64, Day>,
    lifetimes: [u64; 7],
    holders: HashSet<(String, String)>,
}

impl ActivityAcc {
    fn day(&mut self, ns: i64) -> &mut Day {
        self.days.entry(day_of(ns)).or_default()
    }

    pub fn observe(&mut self, e: &Ev<'_>) {
        match e.kind {
            esm_audit::kind::AUTHZ_DECISION => {
                let d = self.day(e.time_ns);
                if e.outcome == "allow" {
                    d.allow += 1;
                } else {
                    d.deny += 1;
                }
            }
            esm_audit::kind::SVID_ISSUED | esm_audit::kind::SVID_ROTATED
                if e.outcome == "success" =>
            {
                let key = (e.subject.to_owned(), e.actor.to_owned());
                let renewal =
                    e.kind == esm_audit::kind::SVID_ROTATED || self.holders.contains(&key);
                if !renewal && self.holders.len() < MAX_HOLDERS {
                    self.holders.insert(key);
                }
                let d = self.day(e.time_ns);
                if renewal {
                    d.renewed += 1;
                } else {
                    d.issued += 1;
                }
                if let Some((not_after, _)) = crate::checks::svid::not_after_ns(e.details) {
                    let secs = (not_after - e.time_ns) / NS_PER_SEC;
                    let i = BUCKETS
                        .iter()
                        .position(|(max, _)| secs <= *max)
                        .unwrap_or(BUCKETS.len());
                    self.lifetimes[i] += 1;
                }
            }
            esm_audit::kind::CA_ROTATED if e.outcome == "success" => {
                self.day(e.time_ns).ca_rotations += 1;
            }
            _ => {}
        }
    }

    pub fn finish(self, edges: Vec<Edge>) -> Activity {
        let days = self
            .days
            .into_iter()
            .map(|(n, mut d)| {
                d.date = day_text(n);
                d
            })
            .collect();
        let lifetimes = self
            .lifetimes
            .iter()
            .enumerate()
            .map(|(i, count)| Bucket {
                label: BUCKETS
                    .get(i)
                    .map_or("> 7 d".to_owned(), |(_, l)| (*l).to_owned()),
                count: *count,
            })
            .collect();
        Activity {
            days,
            lifetimes,
            edges,
        }
    }
}
