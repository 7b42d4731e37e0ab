//! The one pass over the store: walks the hash chain from the last checkpoint before the
//! period (verifying as it goes), feeds every event of the period to all accumulators, and
//! stops at the first checkpoint after the period that covers all of it. Memory is one
//! page of records plus the accumulators' bounded state, whatever the period holds.

use std::collections::BTreeSet;

use esm_audit::checkpoint::PublicKey;
use esm_audit::event::Record;
use esm_audit::store::{Db, Filter, RecordRef, ScanOptions, StoredCheckpoint};
use esm_audit::verify::Walker;

use crate::checks::{Accumulators, Ev, Params};
use crate::error::Result;
use crate::model::{Activity, CheckResult, CheckpointText, Integrity};
use crate::period::{rfc3339, Period};

/// Nodes and trust domains named in the scope.
const MAX_NAMES: usize = 20;
/// Kinds that carry state from before the period (registered entries, the CA's keys).
const STATE_KINDS: [&str; 4] = [
    esm_audit::kind::ENTRY_CREATED,
    esm_audit::kind::ENTRY_DELETED,
    esm_audit::kind::CA_INITIALIZED,
    esm_audit::kind::CA_ROTATED,
];

pub struct Outcome {
    pub checks: std::collections::BTreeMap<String, CheckResult>,
    pub activity: Activity,
    pub integrity: Integrity,
    pub events_in_period: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub nodes: Vec<String>,
    pub trust_domains: Vec<String>,
}

fn ev<'a>(r: &RecordRef<'a>) -> Ev<'a> {
    Ev {
        seq: r.seq,
        time_ns: r.time_ns,
        kind: r.kind,
        actor: r.actor,
        subject: r.subject,
        action: r.action,
        outcome: r.outcome,
        reason: r.reason,
        node: r.node,
        details: r.details,
    }
}

#[derive(Default)]
struct Names {
    nodes: BTreeSet<String>,
    domains: BTreeSet<String>,
}

impl Names {
    fn note(&mut self, r: &RecordRef<'_>) {
        if !r.node.is_empty() && self.nodes.len() < MAX_NAMES && !self.nodes.contains(r.node) {
            self.nodes.insert(r.node.to_owned());
        }
        if r.kind.starts_with("ca.") && self.domains.len() < MAX_NAMES {
            if let Some(td) = r.subject.strip_prefix("spiffe://") {
                self.domains.insert(td.to_owned());
            }
        }
    }
}

/// Replays the state-carrying events up to `to_seq`, in sequence order.
async fn prelude(db: &Db, to_seq: u64, acc: &mut Accumulators, names: &mut Names) -> Result<()> {
    if to_seq == 0 {
        return Ok(());
    }
    let mut state: Vec<Record> = Vec::new();
    for kind in STATE_KINDS {
        let f = Filter {
            to_seq: Some(to_seq),
            kind: Some(kind.to_owned()),
            ..Filter::default()
        };
        let mut after = 0;
        loop {
            let page = db.page(after, &f).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            state.extend(page);
        }
    }
    state.sort_by_key(|r| r.seq);
    for r in state.iter().map(Record::view) {
        names.note(&r);
        acc.prelude(&ev(&r));
    }
    Ok(())
}

/// The checkpoint to start from: the last signed before the period (or the retention anchor).
fn start_checkpoint(
    all: &[StoredCheckpoint],
    anchor: Option<u64>,
    from_ns: i64,
) -> Option<StoredCheckpoint> {
    let floor = anchor.unwrap_or(0);
    all.iter()
        .rfind(|c| {
            c.checkpoint.time_ns < from_ns
                && c.checkpoint.tree_size >= floor
                && c.checkpoint.tree_size > 0
        })
        .or_else(|| anchor.and_then(|a| all.iter().find(|c| c.checkpoint.tree_size == a)))
        .cloned()
}

pub async fn run(
    db: &Db,
    key: &PublicKey,
    period: Period,
    params: &Params,
    now_ns: i64,
) -> Result<Outcome> {
    let all = db.checkpoints().await?;
    // A log that no longer starts at 1 is whole only under a signed retention statement
    // covering exactly the missing events; its checkpoint is where the walk may start.
    let (anchor, retention_failure) = match db.first_seq().await? {
        Some(first) if first > 1 => {
            match esm_audit::retention::covering(db, key, first, &all).await {
                Ok((st, _)) => (Some(st.anchor.tree_size), None),
                Err(e) => (None, Some(e.to_string())),
            }
        }
        _ => (None, None),
    };
    let end = db.last_seq().await?.unwrap_or(0);
    let start = start_checkpoint(&all, anchor, period.from_ns);
    let start_size = start.as_ref().map_or(0, |s| s.checkpoint.tree_size);
    let mut acc = Accumulators::new(params, period);
    let mut names = Names::default();
    prelude(db, start_size, &mut acc, &mut names).await?;

    let mut failure: Option<String> = retention_failure;
    let mut walker = match Walker::new(
        key,
        start.as_ref(),
        all.iter().map(|c| c.checkpoint.clone()),
    ) {
        Ok(w) => Some(w),
        Err(t) => {
            failure = Some(t.to_string());
            None
        }
    };
    let mut upcoming = all
        .iter()
        .map(|c| &c.checkpoint)
        .filter(|c| c.tree_size > start_size)
        .peekable();
    let mut walked = start_size;
    let mut walked_events = 0u64;
    let (mut first_seq, mut last_seq, mut in_period) = (None, None, 0u64);
    let mut passed_cover = false;
    let stop_after_ns = period.to_ns.saturating_add(params.clock_tolerance_ns);
    let mut scan = db.scan(start_size, end, ScanOptions::default());
    let mut stopped = false;
    'pages: while let Some(page) = scan.next().await {
        let page = match page {
            Ok(p) => p,
            Err(esm_audit::Error::Tampered(t)) => {
                failure.get_or_insert_with(|| t.to_string());
                stopped = true;
                break;
            }
            Err(e) => return Err(e.into()),
        };
        for r in page.iter() {
            if let Some(w) = walker.as_mut() {
                if let Err(t) = w.push(&r) {
                    failure = Some(t.to_string());
                    walker = None;
                }
            }
            walked = r.seq;
            walked_events += 1;
            let e = ev(&r);
            if period.contains(r.time_ns) {
                in_period += 1;
                first_seq.get_or_insert(r.seq);
                last_seq = Some(r.seq);
                passed_cover = false;
                names.note(&r);
                acc.observe(&e);
            } else if r.time_ns < period.from_ns {
                names.note(&r);
                acc.prelude(&e);
            }
            while let Some(cp) = upcoming.next_if(|c| c.tree_size <= r.seq) {
                acc.audit.checkpoint(cp.tree_size, cp.time_ns);
                passed_cover = true;
            }
            // Past the period (and its clock tolerance) with its events signed: done.
            if r.time_ns >= stop_after_ns && passed_cover {
                stopped = true;
                break 'pages;
            }
        }
        scan.recycle(page);
    }
    drop(scan);
    if let (Some(w), false) = (walker.take(), stopped) {
        if let Err(t) = w.finish() {
            failure.get_or_insert_with(|| t.to_string());
        }
    }
    let covering = all
        .iter()
        .map(|c| &c.checkpoint)
        .filter(|c| c.tree_size <= walked)
        .filter(|c| match last_seq {
            Some(l) => c.tree_size >= l,
            None => true,
        })
        .min_by_key(|c| match last_seq {
            Some(_) => c.tree_size,
            None => u64::MAX - c.tree_size,
        })
        .or_else(|| {
            start
                .as_ref()
                .map(|s| &s.checkpoint)
                .filter(|_| last_seq.is_none())
        });
    if failure.is_none() && covering.is_none() {
        failure = Some(match last_seq {
            Some(l) => format!("event {l} of the period is covered by no signed checkpoint yet"),
            None => "the store has no signed checkpoint".into(),
        });
    }
    let verified = failure.is_none();
    let (mut checks, activity) = acc.finish(params, period.to_ns, now_ns);
    let sample = covering.map(|c| vec![c.tree_size]).unwrap_or_default();
    let chain =
        crate::checks::integrity::chain_result(verified, failure.as_deref(), walked_events, sample);
    checks.insert(chain.id.clone(), chain);
    Ok(Outcome {
        checks,
        activity,
        integrity: Integrity {
            verified,
            reason: failure,
            events_verified: if verified { walked_events } else { 0 },
            checkpoint: covering.map(|c| CheckpointText {
                tree_size: c.tree_size,
                root_hash: hex::encode(c.root),
                last_hash: hex::encode(c.last_hash),
                time: rfc3339(c.time_ns),
                time_ns: c.time_ns,
                key_id: c.key_id.clone(),
                signature: hex::encode(&c.signature),
            }),
        },
        events_in_period: in_period,
        first_seq,
        last_seq,
        nodes: names.nodes.into_iter().collect(),
        trust_domains: names.domains.into_iter().collect(),
    })
}
