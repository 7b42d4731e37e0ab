//! The shared SVIDs one stream follows: subscribed as its names and entries say, read when
//! it answers, and waited on between answers (a new SVID is a reason to push).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use esm_ca::issuer::IssuedSvid;
use tokio::sync::watch;

use super::svid_cache::{Current, Opener, SvidCache, SvidSpec};

/// Why a stream cannot answer with its SVIDs yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// An SVID is being issued for the first time.
    Pending,
    /// The CA cannot issue now; the stream waits (the reason, for a unary call to return).
    Unavailable(String),
    /// The CA refuses an identity the caller's entry grants: the caller is refused.
    Refused(String),
}

/// The SVIDs a stream follows, each with what it is.
pub type Svids = Vec<(SvidSpec, Arc<IssuedSvid>)>;

#[derive(Default)]
pub struct Subscriptions {
    subs: Vec<(SvidSpec, watch::Receiver<Current>)>,
}

impl Subscriptions {
    /// Follows exactly `specs`: subscribes to the new ones (for `opener`), drops the rest.
    pub fn keep(&mut self, cache: &Arc<SvidCache>, specs: &[SvidSpec], opener: &Opener) {
        self.subs.retain(|(s, _)| specs.contains(s));
        for spec in specs {
            if !self.subs.iter().any(|(s, _)| s == spec) {
                self.subs
                    .push((spec.clone(), cache.subscribe(spec, opener)));
            }
        }
    }

    /// The current SVID of every spec followed, in order, all marked seen; or the first
    /// reason there is not one for each (a refusal before anything else).
    /// Whether an SVID followed was signed by a CA other than `signing_ca`: right after a
    /// signing CA change, the SVIDs renewed under the new one are still to come.
    pub fn any_signed_by_other_than(&self, signing_ca: &str) -> bool {
        self.subs.iter().any(
            |(_, rx)| matches!(&*rx.borrow(), Current::Ready(svid) if svid.signed_by != signing_ca),
        )
    }

    pub fn current(&mut self) -> Result<Svids, NotReady> {
        let mut out = Vec::with_capacity(self.subs.len());
        let mut not_ready = None;
        for (spec, rx) in &mut self.subs {
            match &*rx.borrow_and_update() {
                Current::Ready(svid) => out.push((spec.clone(), svid.clone())),
                Current::Refused(m) => return Err(NotReady::Refused(m.clone())),
                Current::Pending => {
                    not_ready.get_or_insert(NotReady::Pending);
                }
                Current::Unavailable(m) => {
                    not_ready = Some(NotReady::Unavailable(m.clone()));
                }
            }
        }
        match not_ready {
            Some(n) => Err(n),
            None => Ok(out),
        }
    }

    /// Resolves when any SVID followed changes; never when none is followed.
    pub async fn changed(&mut self) {
        let mut waits: Vec<Option<Pin<Box<dyn Future<Output = bool> + Send + '_>>>> = self
            .subs
            .iter_mut()
            .map(|(_, rx)| {
                let f: Pin<Box<dyn Future<Output = bool> + Send + '_>> =
                    Box::pin(async move { rx.changed().await.is_ok() });
                Some(f)
            })
            .collect();
        std::future::poll_fn(|cx| {
            for slot in &mut waits {
                if let Some(f) = slot {
                    if let Poll::Ready(open) = f.as_mut().poll(cx) {
                        if open {
                            return Poll::Ready(());
                        }
                        // Its holder is gone (only if it panicked): wait on the others.
                        *slot = None;
                    }
                }
            }
            Poll::Pending
        })
        .await
    }
}
