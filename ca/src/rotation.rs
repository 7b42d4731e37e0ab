//! When the signing CA rotates: a pure schedule over [`CaState`] and `now`.
//!
//! Like SPIRE, a successor is *prepared* when the active authority has lived half its life
//! and *activated* when five sixths have passed. A prepared root is published in the trust
//! bundle at once, so by the time it signs anything every relying party trusts it; the old
//! root stays published while anything it anchors is still valid. Intermediates under an
//! unchanged root are trusted through that root from the moment they exist.

use time::{Duration, OffsetDateTime};

use crate::state::CaState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    pub root_ttl: Duration,
    pub intermediate_ttl: Duration,
    /// Fraction of the active authority's life after which a successor is prepared.
    pub prepare_at: (i32, i32),
    /// Fraction of the active authority's life after which the successor takes over.
    pub activate_at: (i32, i32),
    /// Algorithm of the keys of new authorities: changing it migrates the CA at the next
    /// rotation.
    pub key_algorithm: crate::key_backend::KeyAlgorithm,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            root_ttl: Duration::days(5 * 365),
            intermediate_ttl: Duration::days(7),
            prepare_at: (1, 2),
            activate_at: (5, 6),
            key_algorithm: crate::key_backend::KeyAlgorithm::EcP256,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Make a new intermediate under the active root, not yet signing.
    PrepareIntermediate,
    /// The prepared intermediate starts signing; the old one retires.
    ActivateIntermediate,
    /// Make a new root and publish it in the trust bundle.
    PrepareRoot,
    /// The prepared root becomes the anchor: a new intermediate under it starts signing at
    /// once, the old root and intermediate retire (and stay published until they expire).
    ActivateRoot,
}

fn at(nb: OffsetDateTime, life: Duration, (num, den): (i32, i32)) -> OffsetDateTime {
    nb + life / den * num
}

/// Every step and the instant it becomes due, given the state as it is.
fn schedule(state: &CaState, policy: &RotationPolicy) -> Vec<(Step, OffsetDateTime)> {
    let mut out = Vec::new();
    if let Some(root) = state.active_root().filter(|r| !r.upstream) {
        let (step, frac) = match state.prepared_root() {
            None => (Step::PrepareRoot, policy.prepare_at),
            Some(_) => (Step::ActivateRoot, policy.activate_at),
        };
        out.push((step, at(root.not_before, root.lifetime(), frac)));
    }
    if let Some(int) = state.active_intermediate() {
        let (step, frac) = match state.prepared_intermediate() {
            None => (Step::PrepareIntermediate, policy.prepare_at),
            Some(_) => (Step::ActivateIntermediate, policy.activate_at),
        };
        out.push((step, at(int.not_before, int.lifetime(), frac)));
    }
    out
}

/// The first step due at `now`, if any. Callers apply it and ask again.
pub fn due_step(state: &CaState, now: OffsetDateTime, policy: &RotationPolicy) -> Option<Step> {
    schedule(state, policy)
        .into_iter()
        .filter(|(_, when)| *when <= now)
        .min_by_key(|(_, when)| *when)
        .map(|(step, _)| step)
}

/// When the next step becomes due: the refresh timer of `esm serve` sleeps until then.
pub fn next_due_at(state: &CaState, policy: &RotationPolicy) -> Option<OffsetDateTime> {
    schedule(state, policy).into_iter().map(|(_, w)| w).min()
}

#[cfg(test)]
#[path = "rotation_tests.rs"]
mod tests;
