//! Anomalies (SOC 2 CC7.2, ISO 8.16): hours with denials far above the period's baseline,
//! and caller→service pairs first seen after the baseline window.

use std::collections::{BTreeMap, HashMap};

use super::{Ev, Params, Tally, MAX_KEYS};
use crate::model::{CheckResult, Edge, Status};
use crate::period::{rfc3339, Period, NS_PER_HOUR};

pub struct Pair {
    pub first_seq: u64,
    pub first_ns: i64,
    pub allow: u64,
    pub deny: u64,
}

pub struct AnomalyChecks {
    period: Period,
    baseline_end_ns: i64,
    decisions: u64,
    denials: u64,
    /// Hour index since the period's start → (denials, first denial's seq).
    hourly: BTreeMap<i64, (u64, u64)>,
    /// caller → service → pair: looked up by the event's own strings, no allocation.
    pairs: HashMap<String, HashMap<String, Pair>>,
    pair_count: usize,
    overflow: bool,
}

impl AnomalyChecks {
    pub fn new(params: &Params, period: Period) -> Self {
        Self {
            period,
            baseline_end_ns: period
                .from_ns
                .saturating_add((params.baseline_hours as i64).saturating_mul(NS_PER_HOUR)),
            decisions: 0,
            denials: 0,
            hourly: BTreeMap::new(),
            pairs: HashMap::new(),
            pair_count: 0,
            overflow: false,
        }
    }

    pub fn decision(&mut self, e: &Ev<'_>) {
        self.decisions += 1;
        let deny = e.outcome != "allow";
        if deny {
            self.denials += 1;
            let hour = (e.time_ns - self.period.from_ns).div_euclid(NS_PER_HOUR);
            if let Some(h) = self.hourly.get_mut(&hour) {
                h.0 += 1;
            } else if self.hourly.len() < MAX_KEYS {
                self.hourly.insert(hour, (1, e.seq));
            }
        }
        if let Some(p) = self
            .pairs
            .get_mut(e.actor)
            .and_then(|m| m.get_mut(e.subject))
        {
            p.allow += u64::from(!deny);
            p.deny += u64::from(deny);
            return;
        }
        if self.pair_count >= MAX_KEYS {
            self.overflow = true;
            return;
        }
        self.pair_count += 1;
        self.pairs.entry(e.actor.to_owned()).or_default().insert(
            e.subject.to_owned(),
            Pair {
                first_seq: e.seq,
                first_ns: e.time_ns,
                allow: u64::from(!deny),
                deny: u64::from(deny),
            },
        );
    }

    fn all_pairs(&self) -> impl Iterator<Item = (&str, &str, &Pair)> {
        self.pairs
            .iter()
            .flat_map(|(c, m)| m.iter().map(move |(s, p)| (c.as_str(), s.as_str(), p)))
    }

    /// The busiest edges (allow + deny), for the service graph.
    pub fn top_edges(&self, n: usize) -> Vec<Edge> {
        let mut all: Vec<Edge> = self
            .all_pairs()
            .map(|(c, s, p)| Edge {
                caller: c.to_owned(),
                service: s.to_owned(),
                allow: p.allow,
                deny: p.deny,
            })
            .collect();
        all.sort_by(|a, b| {
            (b.allow + b.deny)
                .cmp(&(a.allow + a.deny))
                .then_with(|| (&a.caller, &a.service).cmp(&(&b.caller, &b.service)))
        });
        all.truncate(n);
        all
    }

    pub fn finish(self, params: &Params) -> Vec<CheckResult> {
        let mut spikes = Tally::default();
        let hours = self.period.hours() as u64;
        let baseline = self.denials.div_ceil(hours);
        let threshold = params
            .spike_min_denials
            .max(params.spike_factor.saturating_mul(baseline));
        for (hour, (n, seq)) in &self.hourly {
            if *n >= threshold {
                spikes.except_with(
                    Some(*seq),
                    || format!(
                        "{n} denials in the hour from {} (baseline {baseline}/hour, threshold {threshold})",
                        rfc3339(self.period.from_ns + hour * NS_PER_HOUR)
                    ),
                );
            } else {
                spikes.support(*seq);
            }
        }
        spikes.add("decisions", self.decisions);
        spikes.add("denials", self.denials);
        spikes.add("baseline_per_hour", baseline);
        spikes.add("threshold", threshold);
        let spikes = spikes.judged("anomaly.denial_spikes", self.decisions);

        let mut fresh = Tally::default();
        let mut new: Vec<(&str, &str, &Pair)> = self
            .all_pairs()
            .filter(|(_, _, p)| p.first_ns >= self.baseline_end_ns)
            .collect();
        new.sort_by_key(|(_, _, p)| p.first_seq);
        for (caller, service, p) in &new {
            fresh.except_with(Some(p.first_seq), || {
                format!(
                    "{caller} → {service} first seen {}: {} allowed, {} denied",
                    rfc3339(p.first_ns),
                    p.allow,
                    p.deny
                )
            });
        }
        fresh.add("pairs", self.pair_count as u64);
        fresh.add("new_after_baseline", new.len() as u64);
        let status = if self.overflow {
            fresh.except_with(None, || {
                format!("more than {MAX_KEYS} pairs: the rest not tracked")
            });
            Status::InsufficientEvidence
        } else if !new.is_empty() {
            Status::Manual
        } else if self.decisions == 0 {
            Status::NotApplicable
        } else {
            Status::Passed
        };
        vec![spikes, fresh.result("anomaly.new_pairs", status)]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::checks::test_events::ev;

    fn period() -> Period {
        Period {
            from_ns: 0,
            to_ns: 48 * NS_PER_HOUR,
        }
    }

    fn decide(a: &mut AnomalyChecks, seq: u64, t: i64, caller: &str, outcome: &str) {
        let mut e = ev(seq, t, "authz.decision", "{}");
        e.actor = caller;
        e.subject = "spiffe://t/api";
        e.outcome = outcome;
        a.decision(&e);
    }

    #[test]
    fn burst_of_denials_over_baseline_is_a_spike() {
        let p = Params::default();
        let mut a = AnomalyChecks::new(&p, period());
        for i in 0..48 {
            decide(&mut a, i, i as i64 * 3600, "spiffe://t/web", "deny");
        }
        for i in 0..60 {
            decide(
                &mut a,
                100 + i,
                30 * 3600 + i as i64,
                "spiffe://t/web",
                "deny",
            );
        }
        let r = a.finish(&p);
        assert_eq!(r[0].status, Status::Failed);
        assert_eq!(r[0].exceptions.len(), 1);
        assert_eq!(r[0].exceptions[0].seq, Some(30));
    }

    #[test]
    fn steady_denials_are_not_a_spike() {
        let p = Params::default();
        let mut a = AnomalyChecks::new(&p, period());
        for i in 0..480 {
            decide(&mut a, i, i as i64 * 360, "spiffe://t/web", "deny");
        }
        assert_eq!(a.finish(&p)[0].status, Status::Passed);
    }

    #[test]
    fn pair_first_seen_after_baseline_needs_review() {
        let p = Params::default();
        let mut a = AnomalyChecks::new(&p, period());
        decide(&mut a, 1, 10, "spiffe://t/web", "allow");
        decide(&mut a, 2, 30 * 3600, "spiffe://t/new", "deny");
        decide(&mut a, 3, 31 * 3600, "spiffe://t/web", "allow");
        let edges = a.top_edges(1);
        assert_eq!(edges[0].caller, "spiffe://t/web");
        let r = a.finish(&p);
        assert_eq!(r[1].status, Status::Manual);
        assert_eq!(r[1].exceptions.len(), 1);
        assert_eq!(r[1].exceptions[0].seq, Some(2));
    }
}
