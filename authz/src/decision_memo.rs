//! A memo of a policy set's results, keyed by the parts of the input the set can read
//! ([`crate::input_reads`]). Requests between the same workloads on the same route differ
//! only in what the policy never looks at (request ids, timestamps, other headers), so the
//! interpreter runs once per distinct key instead of once per request.
//!
//! Exact, not probabilistic: the key is the read values themselves, encoded without loss,
//! and compared whole. Bounded: keys over [`MAX_KEY`] bytes are not memoized, and the memo
//! holds at most `capacity` entries in two generations (a full current generation becomes
//! the previous one and the oldest is dropped), so what stays is what is used. It belongs to
//! one compiled set: a reload starts an empty memo with the new policy.

use std::collections::HashMap;
use std::sync::Mutex;

use regorus::Value;

use crate::input_reads::InputReads;
use crate::memo_key::KeyPlan;

/// The first byte of a key made from an input value, and of one read from a request.
pub(crate) const VALUE_KEY: u8 = b'V';
pub(crate) const REQUEST_KEY: u8 = b'R';

/// Larger keys (a policy that reads a whole body, say) are evaluated every time.
pub const MAX_KEY: usize = 2048;

/// Entries per set unless configured.
pub const DEFAULT_CAPACITY: usize = 4096;

/// Keys are hashed with a per-memo random seed (foldhash): a client that picks its paths
/// cannot aim them at one bucket, and hashing a key costs a fraction of SipHash.
type Map = HashMap<Box<[u8]>, Value, foldhash::fast::RandomState>;

#[derive(Default)]
struct Generations {
    current: Map,
    previous: Map,
}

pub struct DecisionMemo {
    paths: Vec<Vec<Value>>,
    /// How to read the key from the request itself; None: from the built input.
    plan: Option<KeyPlan>,
    capacity: usize,
    gens: Mutex<Generations>,
}

impl std::fmt::Debug for DecisionMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionMemo")
            .field("paths", &self.paths.len())
            .field("keyed_from_request", &self.plan.is_some())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl DecisionMemo {
    /// A memo for a set that reads `reads`; none when the set's result can change for the
    /// same input (clock, randomness, network), when it reads the whole input (every
    /// request would be its own key), or when `capacity` is 0.
    pub fn new(reads: &InputReads, capacity: usize) -> Option<Self> {
        if !reads.deterministic || reads.reads_everything() || capacity == 0 {
            return None;
        }
        let paths = reads
            .paths
            .iter()
            .map(|p| p.iter().map(|s| Value::from(s.as_str())).collect())
            .collect();
        Some(Self {
            paths,
            plan: KeyPlan::of(reads),
            capacity,
            gens: Mutex::new(Generations::default()),
        })
    }

    /// How to key a request without building its input, when every read path is mapped.
    pub fn plan(&self) -> Option<&KeyPlan> {
        self.plan.as_ref()
    }

    /// The key of `input`: each read path's value (or its absence), tagged and
    /// length-prefixed so different values never encode alike. None when over [`MAX_KEY`].
    pub fn key(&self, input: &Value) -> Option<Box<[u8]>> {
        let mut out = Vec::with_capacity(128);
        // Apart from the keys read from requests ([`KeyPlan`]): the two never meet.
        out.push(VALUE_KEY);
        for path in &self.paths {
            let mut v = input;
            for step in path {
                v = match v {
                    Value::Object(o) => o.get(step).unwrap_or(&Value::Undefined),
                    _ => &Value::Undefined,
                };
            }
            encode(v, &mut out)?;
        }
        Some(out.into_boxed_slice())
    }

    pub fn get(&self, key: &[u8]) -> Option<Value> {
        let mut g = self.gens.lock().ok()?;
        if let Some(v) = g.current.get(key) {
            return Some(v.clone());
        }
        // Used again: move it to the current generation so it outlives the next turnover.
        let (k, v) = g.previous.remove_entry(key)?;
        let hit = v.clone();
        Self::insert(&mut g, self.capacity, k, v);
        Some(hit)
    }

    pub fn put(&self, key: Box<[u8]>, result: Value) {
        if let Ok(mut g) = self.gens.lock() {
            Self::insert(&mut g, self.capacity, key, result);
        }
    }

    fn insert(g: &mut Generations, capacity: usize, key: Box<[u8]>, result: Value) {
        // Two generations of half the capacity each.
        if g.current.len() >= capacity.div_ceil(2) {
            g.previous = std::mem::take(&mut g.current);
        }
        g.current.insert(key, result);
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.gens
            .lock()
            .map_or(0, |g| g.current.len() + g.previous.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

/// Appends `v`; None once the key would exceed [`MAX_KEY`].
fn encode(v: &Value, out: &mut Vec<u8>) -> Option<()> {
    match v {
        Value::Undefined => out.push(0),
        Value::Null => out.push(1),
        Value::Bool(b) => out.extend_from_slice(&[2, u8::from(*b)]),
        Value::Number(_) => {
            // Display is the number's exact text (what the policy compares).
            let text = v.to_string();
            out.push(3);
            put_len(out, text.len());
            out.extend_from_slice(text.as_bytes());
        }
        Value::String(s) => {
            if s.len() > MAX_KEY {
                return None;
            }
            out.push(4);
            put_len(out, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Array(a) => {
            out.push(5);
            put_len(out, a.len());
            for x in a.iter() {
                encode(x, out)?;
            }
        }
        Value::Set(s) => {
            out.push(6);
            put_len(out, s.len());
            for x in s.iter() {
                encode(x, out)?;
            }
        }
        Value::Object(o) => {
            out.push(7);
            put_len(out, o.len());
            for (k, x) in o.iter() {
                encode(k, out)?;
                encode(x, out)?;
            }
        }
    }
    (out.len() <= MAX_KEY).then_some(())
}

#[cfg(test)]
#[path = "decision_memo_tests.rs"]
mod tests;
