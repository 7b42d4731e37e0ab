//! The SVIDs one stream holds, and when each is due again: at half of its lifetime, like
//! SPIRE's agent, so a workload always has a certificate with time left even if esm is
//! briefly away. Keys are made here and live only in memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use esm_ca::issuer::{IssuedSvid, LeafKey, SvidRequest};
use esm_ca::material::CaMaterial;
use esm_identity::SpiffeId;

use super::context::AgentContext;
use super::entry::Entry;
use crate::error::Result;

/// When an SVID valid from `not_before` to `not_after` should be replaced.
pub fn refresh_at(not_before: OffsetDateTime, not_after: OffsetDateTime) -> OffsetDateTime {
    not_before + (not_after - not_before) / 2
}

struct Held {
    svid: Arc<IssuedSvid>,
    /// When it was issued; `not_before` is back-dated for clock skew, so the refresh time
    /// counts from here.
    issued_at: OffsetDateTime,
    /// The signing CA it was issued under: a CA rotation re-issues under the new one.
    signer: String,
}

impl Held {
    fn due(&self) -> OffsetDateTime {
        refresh_at(self.issued_at, self.svid.not_after)
    }
}

#[derive(Default)]
pub struct SvidSet {
    held: BTreeMap<SpiffeId, Held>,
}

impl SvidSet {
    pub fn get(&self, id: &SpiffeId) -> Option<&Arc<IssuedSvid>> {
        self.held.get(id).map(|h| &h.svid)
    }

    /// The earliest refresh among the SVIDs held.
    pub fn next_refresh(&self) -> Option<OffsetDateTime> {
        self.held.values().map(Held::due).min()
    }

    /// Makes sure an SVID is held for each of `ids` that is not due at `now` and was signed
    /// by the current CA; issues the rest. Forgets SVIDs no longer wanted. Returns the
    /// SVIDs issued, for the audit log.
    pub fn ensure(
        &mut self,
        ids: &[SpiffeId],
        entries: &[Entry],
        ca: &CaMaterial,
        ctx: &AgentContext,
        now: OffsetDateTime,
    ) -> Result<Vec<Arc<IssuedSvid>>> {
        self.held.retain(|id, _| ids.contains(id));
        let mut issued = Vec::new();
        for id in ids {
            let fresh = self
                .held
                .get(id)
                .is_some_and(|h| now < h.due() && h.signer == ca.signing.id);
            if fresh {
                continue;
            }
            let entry = entries.iter().find(|e| &e.spiffe_id == id);
            let ttl = entry
                .and_then(|e| e.ttl_secs)
                .map(|s| Duration::seconds(s.min(i64::MAX as u64) as i64));
            let dns: Vec<String> = entry.map(|e| e.dns_names.clone()).unwrap_or_default();
            let svid = Arc::new(ca.issue(
                &ctx.policy,
                SvidRequest {
                    spiffe_id: id,
                    ttl,
                    dns_names: &dns,
                    key: LeafKey::Generate,
                },
                now,
            )?);
            self.held.insert(
                id.clone(),
                Held {
                    svid: svid.clone(),
                    issued_at: now,
                    signer: ca.signing.id.clone(),
                },
            );
            issued.push(svid);
        }
        Ok(issued)
    }
}

/// Sleeps until the next SVID refresh of `svids`, or forever when none is held.
pub async fn until_refresh(svids: &SvidSet) {
    match svids.next_refresh() {
        Some(at) => {
            let left = at - OffsetDateTime::now_utc();
            let d = std::time::Duration::try_from(left).unwrap_or_default();
            tokio::time::sleep(d).await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
