#![doc = include_str!("../README.md")]

pub mod actions;
pub mod api;
pub mod config;
pub mod cron;
pub mod decide;
pub mod decision;
pub mod git;
pub mod hg;
pub mod hgpulse;
pub mod hooks_sync;
pub mod poller;
pub mod pushlog;
pub mod store;
pub mod webhook;

pub use config::{CiConfig, Kind, Mode};
pub use decision::{DecisionContext, RenderError, render_decision};

use bbb_clock::{Clock, Millis};
use bbb_queue::{Mount, Mounted, Shared};
use std::sync::Arc;
use store::{NewPush, Repository, Store};
use tokio::sync::Notify;

/// Who the configuration file's changes are recorded as.
pub const CONFIG_AUTHOR: &str = "configuration file";

/// What every handler and background loop of the CI service shares.
#[derive(Clone)]
pub struct Ci {
    /// The CI tables.
    pub store: Store,
    /// The configuration.
    pub cfg: Arc<CiConfig>,
    /// The queue served beside this service.
    pub queue: bbb_queue::Queue,
    /// The clock.
    pub clock: Clock,
    /// Creates decision tasks.
    pub creator: decide::Creator,
    /// Wakes this process's decision loop when a push was recorded.
    pub pushed: Arc<Notify>,
    /// One fetch into the cache at a time in this process.
    fetching: Arc<tokio::sync::Mutex<()>>,
    /// Wakes this process's pass over the action and cron hooks.
    pub hooks_changed: Arc<Notify>,
    /// Manages the action and cron hooks and their roles.
    pub admin: hooks_sync::Admin,
}

impl Ci {
    /// The service on `shared` (its database, clock and root URL).
    pub fn new(cfg: CiConfig, shared: &Shared) -> Ci {
        let queue = shared.queue.clone();
        Ci {
            store: Store::new(queue.db.pool.clone(), queue.db.backend),
            creator: decide::Creator::new(
                &shared.root_url,
                queue.issuer.clone(),
                queue.clock.clone(),
            ),
            clock: queue.clock.clone(),
            queue,
            admin: hooks_sync::Admin::new(
                &shared.root_url,
                shared.queue.issuer.clone(),
                shared.queue.clock.clone(),
            ),
            cfg: Arc::new(cfg),
            pushed: Arc::default(),
            fetching: Arc::default(),
            hooks_changed: Arc::default(),
        }
    }

    /// Record `push` in the ledger (once) and wake the decision loop.
    /// Returns its id when it is new.
    pub async fn record(&self, push: &NewPush) -> store::Result<Option<i64>> {
        let id = self.store.record_push(push, self.clock.now_ms()).await?;
        if let Some(id) = id {
            tracing::info!(
                ci.project = %push.project, ci.branch = %push.branch, push.id = id,
                revision = %push.revision, source = push.source, "push recorded"
            );
            self.pushed.notify_one();
        }
        Ok(id)
    }

    /// Fetch `revision` of `repo` into this process's clone of it.
    pub async fn fetch(&self, repo: &Repository, revision: &str) -> Result<git::Clone, String> {
        let clone = git::Clone::new(&self.cfg.cache_dir(), &repo.project);
        let _one = self.fetching.lock().await;
        clone.fetch(repo.fetch_url(), revision).await?;
        Ok(clone)
    }

    /// How long to wait after `failures` failures in a row: the poll
    /// interval doubled per failure, at most `max_backoff_ms`.
    pub fn backoff(&self, failures: i64) -> Millis {
        let base = self.cfg.poll_interval_ms.max(1);
        let shift = failures.clamp(0, 20) as u32;
        base.saturating_mul(1 << shift)
            .min(self.cfg.max_backoff_ms.max(base)) as Millis
    }

    /// Write the configuration file's repositories to the database: new
    /// ones and new branches are added; what exists is left as it is.
    pub async fn seed(&self) -> anyhow::Result<()> {
        for r in &self.cfg.repositories {
            let repo = Repository::from_config(r);
            self.store
                .put_repository(&repo, false, CONFIG_AUTHOR, self.clock.now_ms())
                .await
                .map_err(|e| anyhow::anyhow!("repository {}: {e}", r.project))?;
        }
        Ok(())
    }
}

/// Serve the CI service beside the queue (see [`bbb_queue::start_with`]).
pub fn mount(cfg: CiConfig) -> Mount {
    Box::new(move |shared: Shared| Box::pin(start(cfg, shared)))
}

/// What [`mount`] runs once the queue's database, bus and authenticator
/// exist: the tables migrated, the configured repositories written, the API
/// and webhook served, the poller, the Mercurial push messages' consumer
/// (when configured), the decision loop and the pass over the action and
/// cron hooks started.
pub async fn start(cfg: CiConfig, shared: Shared) -> anyhow::Result<Mounted> {
    let ci = Ci::new(cfg, &shared);
    ci.store.migrate().await?;
    ci.seed().await?;
    let routes = api::service(ci.clone(), shared.auth.clone())
        .routes(webhook::routes(ci.clone()))
        .routes_only();
    let tasks = vec![
        tokio::spawn(poller::run(ci.clone(), shared.stop.clone())),
        tokio::spawn(hooks_sync::run(ci.clone(), shared.stop.clone())),
        tokio::spawn(hgpulse::run(ci.clone(), shared.stop.clone())),
        tokio::spawn(decide::run(ci, shared.stop.clone())),
    ];
    Ok(Mounted { routes, tasks })
}
