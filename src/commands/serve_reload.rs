//! SIGHUP: esm.toml read again. A config that does not parse, or whose changed policy sets
//! do not compile or pass their Rego tests, is refused as a whole: the config in force stays,
//! the error (file, key, what was expected) is logged, and `config.changed` is audited with
//! outcome failure. A valid one is applied as far as [`esm_config::reload::plan`] says it
//! can be live; the rest is logged as taking effect at restart and listed in the event.
//! Either way every policy set is re-read at once, as if its poll had come. Each SIGHUP is
//! counted by what it did (`esm_config_reloads_total{result}`).
//!
//! The change is attributed like a policy reload: to the owner of esm.toml (`uid:N`), with
//! `changed.via = "esm:config-reload"` in the details, since the signal itself names no one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use anyhow::Context;
use esm_audit::writer::AuditSink;
use esm_audit::{kind, Event, Outcome};
use esm_authz::check::CheckOptions;
use esm_authz::policy_set::PolicySet;
use esm_authz::reload::Author;
use esm_authz::service::{AuthzService, Settings};
use esm_authz::source::SetSpec;
use tokio::sync::{watch, Notify};

use esm_config::reload::{plan, Plan};
use esm_config::Config;

use crate::metrics_services::CONFIG_RELOADS;

/// What marks a change made by a config reload, in its events' details.
const VIA: &str = "esm:config-reload";

/// One served policy set, as a reload reaches it.
pub struct SetHandle {
    pub name: String,
    pub spec: watch::Sender<Arc<SetSpec>>,
    pub policies: watch::Sender<Arc<PolicySet>>,
    pub wake: Arc<Notify>,
}

/// The ext_authz server's live parts.
pub struct AuthzHandles {
    pub service: AuthzService,
    pub sets: Vec<SetHandle>,
}

pub struct Reloader {
    path: PathBuf,
    env: BTreeMap<String, String>,
    /// The config in force (keys that wait for a restart keep their old values here, so
    /// every reload lists them again until then).
    cfg: Config,
    /// SHA-256 of the esm.toml text in force.
    hash: String,
    authz: Option<AuthzHandles>,
    audit: AuditSink,
}

fn sha256_hex(text: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref())
}

/// `uid:N` of the file's owner: who wrote the config.
fn owner(path: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or_else(
        |_| esm_authz::change_author::UNKNOWN.to_owned(),
        |m| format!("uid:{}", m.uid()),
    )
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        env: &BTreeMap<String, String>,
        cfg: Config,
        authz: Option<AuthzHandles>,
        audit: AuditSink,
    ) -> Self {
        let hash = std::fs::read_to_string(&path)
            .map(|t| sha256_hex(&t))
            .unwrap_or_default();
        Self {
            path,
            env: env.clone(),
            cfg,
            hash,
            authz,
            audit,
        }
    }

    /// Handles one SIGHUP.
    pub async fn hangup(&mut self) {
        let actor = owner(&self.path);
        let read = std::fs::read_to_string(&self.path)
            .with_context(|| format!("cannot read {}", self.path.display()));
        let text_hash = read.as_ref().map(|t| sha256_hex(t)).unwrap_or_default();
        let parsed = read.and_then(|text| {
            Config::parse(&text, self.cfg.data_dir.clone(), &self.env)
                .with_context(|| format!("in {}", self.path.display()))
        });
        let result = match parsed {
            Ok(new) => self.apply(new, &actor, &text_hash).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(None) => {
                CONFIG_RELOADS.unchanged.fetch_add(1, Relaxed);
                tracing::info!(config.file = %self.path.display(), "SIGHUP: esm.toml unchanged; policies re-read");
            }
            Ok(Some(plan)) => {
                CONFIG_RELOADS.applied.fetch_add(1, Relaxed);
                for key in &plan.restart {
                    tracing::warn!(config.file = %self.path.display(), config.key = %key, "SIGHUP: changed; takes effect at restart");
                }
                tracing::info!(config.file = %self.path.display(), config.hash = %text_hash, applied = ?plan.live, restart = ?plan.restart, "SIGHUP: esm.toml reloaded");
                let e = self.event(Outcome::Success, &actor, &text_hash, "", Some(&plan));
                self.hash = text_hash;
                self.record(e).await;
            }
            Err(err) => {
                CONFIG_RELOADS.refused.fetch_add(1, Relaxed);
                let why = format!("{err:#}");
                tracing::error!(config.file = %self.path.display(), error = %why, "SIGHUP: esm.toml refused; the config in force stays");
                let e = self.event(Outcome::Failure, &actor, &text_hash, &why, None);
                self.record(e).await;
            }
        }
        // Whatever the config did, the policies are read now, not at the next poll.
        for set in self.authz.iter().flat_map(|a| &a.sets) {
            set.wake.notify_one();
        }
    }

    /// Applies `new` as far as it can be live; `Ok(None)` when nothing changed. Every
    /// changed set is compiled and tested first: one that fails refuses the whole config.
    async fn apply(
        &mut self,
        new: Config,
        actor: &str,
        text_hash: &str,
    ) -> anyhow::Result<Option<Plan>> {
        let plan = plan(&self.cfg, &new);
        if plan.is_empty() && text_hash == self.hash {
            return Ok(None);
        }
        let mut compiled = Vec::new();
        for name in &plan.sets {
            let Some(spec) = new.authz.sets.iter().find(|s| &s.name == name).cloned() else {
                continue;
            };
            let s = spec.clone();
            let set = tokio::task::spawn_blocking(move || {
                esm_authz::bundle_service::first_download(&s)?;
                esm_authz::reload::validate(&s)
            })
            .await
            .context("policy compilation task")?
            .with_context(|| format!("policy set {name}"))?;
            compiled.push((spec, set));
        }
        let live = &new.authz;
        let mut in_force = self.cfg.clone();
        in_force.authz.deny_status = live.deny_status;
        in_force.authz.decision_budget = live.decision_budget;
        in_force.authz.input = live.input.clone();
        in_force.authz.decision_log = live.decision_log;
        in_force.authz.decision_log_mode = live.decision_log_mode;
        esm_authz::policy_set::set_decision_budget(live.decision_budget);
        let mut events = Vec::new();
        for (spec, set) in compiled {
            if let Some(slot) = in_force.authz.sets.iter_mut().find(|s| s.name == spec.name) {
                *slot = spec.clone();
            }
            let Some(h) = self
                .authz
                .iter()
                .flat_map(|a| &a.sets)
                .find(|h| h.name == spec.name)
            else {
                continue;
            };
            let previous = h.policies.borrow().hash.clone();
            let author = Author {
                actor: actor.to_owned(),
                via: VIA,
                diff: Default::default(),
            };
            events.push(esm_authz::reload::policy_event(
                &spec,
                Ok(&set),
                &previous,
                &author,
            ));
            tracing::info!(policy.set = %spec.name, policy.hash = %set.hash, previous.hash = %previous, dry_run = spec.dry_run, "policy set replaced by the config reload");
            esm_authz::reload::log_engine(&spec.name, &set);
            // A new version of the set, audited as policy.changed like the watcher's.
            esm_authz::reload_counts::count(&spec.name, true);
            esm_authz::reload_counts::serving(&spec.name, &set.hash, &set.revision);
            h.policies.send_replace(Arc::new(set));
            h.spec.send_replace(Arc::new(spec));
        }
        if let Some(a) = &self.authz {
            let dry_run = a.sets.iter().map(|h| h.spec.borrow().dry_run).collect();
            a.service.reconfigure(Settings {
                opts: CheckOptions {
                    input: live.input.clone(),
                    dry_run: false,
                    deny_status: live.deny_status,
                },
                log: live.decision_log,
                mode: live.decision_log_mode,
                dry_run,
            });
        }
        self.cfg = in_force;
        for e in events {
            self.record(e).await;
        }
        Ok(Some(plan))
    }

    fn event(
        &self,
        outcome: Outcome,
        actor: &str,
        text_hash: &str,
        reason: &str,
        plan: Option<&Plan>,
    ) -> Event {
        let mut e = Event::new(kind::CONFIG_CHANGED, outcome);
        e.actor = actor.to_owned();
        e.subject = self.path.display().to_string();
        e.action = if outcome == Outcome::Success {
            "reload"
        } else {
            "refuse"
        }
        .into();
        e.reason = reason.to_owned();
        let mut d = serde_json::json!({
            "config.hash": text_hash,
            "previous.hash": self.hash,
            "changed.via": VIA,
        });
        if let (Some(p), Some(o)) = (plan, d.as_object_mut()) {
            o.insert("changed".into(), serde_json::json!(p.changed()));
            o.insert("applied".into(), serde_json::json!(p.live));
            o.insert("restart".into(), serde_json::json!(p.restart));
            o.insert("policy.sets".into(), serde_json::json!(p.sets));
        }
        e.details = d.into();
        e
    }

    async fn record(&self, e: Event) {
        if let Err(err) = self.audit.append(e).await {
            tracing::error!(error = %err, "config change not recorded");
        }
    }
}
