//! See the crate README.
#![doc = include_str!("../README.md")]

pub mod api;
pub mod feed;
pub mod namespace;
pub mod store;

use bbb_auth::Authenticator;
use bbb_queue::db::Db;
use bbb_queue::{Mount, Mounted, Queue, Shared};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The queue's feed the index takes completed tasks from.
pub const FEED: &str = "index";

/// Routes `<ROUTE_PREFIX>.<namespace>` make entries (upstream's `routePrefix`).
pub const ROUTE_PREFIX: &str = "index";

/// The exchange (after the queue's prefix) whose messages make entries.
pub const EXCHANGE: &str = "task-completed";

/// The index service: the queue it is served beside (whose database holds its
/// tables), the queue's artifact downloads, the shared authenticator and the
/// public root URL.
#[derive(Clone)]
pub struct Index {
    /// The queue: its database, clock, configuration and feeds.
    pub queue: Queue,
    /// The queue's artifact endpoints, for `findArtifactFromTask`.
    pub artifacts: bbb_queue::api::Api,
    /// Who may call what (and the anonymous role's scopes).
    pub auth: Arc<Authenticator>,
    /// The root URL every service is served under.
    pub root_url: String,
}

impl Index {
    /// The index beside the queue of `shared`: its migrations applied and its
    /// feed bound, so the queue's commits from now on feed it.
    pub async fn open(shared: &Shared) -> anyhow::Result<Index> {
        migrate(&shared.queue.db).await?;
        bind(&shared.queue);
        Ok(Index {
            queue: shared.queue.clone(),
            artifacts: bbb_queue::api::Api {
                queue: shared.queue.clone(),
                blobs: shared.blobs.clone(),
            },
            auth: shared.auth.clone(),
            root_url: shared.root_url.clone(),
        })
    }

    /// Delete what expired, every `expire_interval_s` of the queue's
    /// configuration, until `stop` turns true.
    pub async fn run_expiry(self, mut stop: watch::Receiver<bool>) {
        let every = Duration::from_secs(self.queue.cfg.expire_interval_s.max(1));
        loop {
            match store::expire(&self.queue.db, self.queue.clock.now_ms()).await {
                Ok((0, 0)) => {}
                Ok((entries, namespaces)) => {
                    tracing::info!(entries, namespaces, "expired index entries deleted")
                }
                Err(e) => tracing::error!(error = %e, "index expiry failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

/// Bind the index's feed on `queue`: from now on, its commits of completed
/// tasks with index routes feed the index.
pub fn bind(queue: &Queue) {
    queue.bind_feed(FEED, EXCHANGE, &format!("{ROUTE_PREFIX}."));
}

/// Apply the index's migrations (versions 1001 and up) to the queue's database.
pub async fn migrate(db: &Db) -> anyhow::Result<()> {
    bbb_sqlstore::migrate_shared(
        &db.pool,
        db.backend,
        sqlx::migrate!("./migrations/sqlite"),
        sqlx::migrate!("./migrations/postgres"),
    )
    .await
    .map_err(|e| anyhow::anyhow!("index migrations: {e}"))
}

/// The index as a service served beside the queue: its API, the feed
/// consumer and the expiry of old entries.
pub fn mount() -> Mount {
    Box::new(|shared: Shared| {
        Box::pin(async move {
            let index = Index::open(&shared).await?;
            let tasks = vec![
                tokio::spawn(index.clone().run_feed(shared.stop.clone())),
                tokio::spawn(index.clone().run_expiry(shared.stop.clone())),
            ];
            Ok(Mounted {
                routes: api::service(index).routes_only(),
                tasks,
            })
        })
    })
}
