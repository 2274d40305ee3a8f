//! See the crate README.
#![doc = include_str!("../README.md")]

pub mod api;
pub mod compute;
pub mod feed;
pub mod figures;
pub mod milestones;
pub mod model;
pub mod poller;
pub mod sources;
pub mod store;

pub use model::{ALL_BRANCHES, Observation, Outcome, Pairing, Side};
pub use poller::{LegacyMasters, PollReport, PollSettings};
pub use store::ingest;

use bbb_auth::Authenticator;
use bbb_queue::db::Db;
use bbb_queue::{Mount, Mounted, Queue, Shared};
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

/// The queue's feed the record takes resolved tasks from.
pub const FEED: &str = "migration";

/// The exchanges (after the queue's prefix) whose messages make observations.
pub const EXCHANGES: [&str; 3] = ["task-completed", "task-failed", "task-exception"];

/// How many revisions a branch's figures cover when a request does not say.
pub const DEFAULT_REVISIONS: i64 = 10;

/// The bridge's task queue unless configured otherwise.
pub const BRIDGE_TASK_QUEUE: &str = "buildbot-bridge/buildbot-bridge";

/// The record's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationConfig {
    /// The task queues whose tasks are bridged (the bridge's `task_queue_id`).
    pub bridge_task_queues: Vec<String>,
    /// Mapping entries from the configuration, written to the table when the
    /// record opens (entries made through the API with the same branch and
    /// label are replaced by them).
    pub mapping: Vec<Pairing>,
    /// How many revisions a branch's figures cover when a request does not
    /// say (1 to [`api::MAX_REVISIONS`]).
    pub revisions: i64,
    /// Polling the legacy masters' finished builds, or `None` for none.
    pub poll: Option<PollSettings>,
    /// Milestones from the configuration (name and definition), written to
    /// the table when the record opens (replacing ones of the same name made
    /// through the API).
    pub milestones: Vec<(String, milestones::MilestoneDef)>,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        MigrationConfig {
            bridge_task_queues: vec![BRIDGE_TASK_QUEUE.to_string()],
            mapping: Vec::new(),
            revisions: DEFAULT_REVISIONS,
            poll: Some(PollSettings::default()),
            milestones: Vec::new(),
        }
    }
}

impl Default for PollSettings {
    fn default() -> Self {
        PollSettings {
            interval_ms: 60_000,
            max_backoff_ms: 15 * 60_000,
            first_lookback_s: 7 * 24 * 3600,
        }
    }
}

/// A mapping file: `[[pair]]` tables of `label`, `builder` and an optional
/// `branch` (default `*`, every branch).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    #[serde(default)]
    pair: Vec<Pairing>,
}

/// The pairings of the mapping file at `path`.
pub fn read_mapping_file(path: &Path) -> anyhow::Result<Vec<Pairing>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading the mapping file {}: {e}", path.display()))?;
    parse_mapping(&text).map_err(|e| anyhow::anyhow!("the mapping file {}: {e}", path.display()))
}

/// The pairings of a mapping file's text.
pub fn parse_mapping(text: &str) -> Result<Vec<Pairing>, toml::de::Error> {
    Ok(toml::from_str::<MappingFile>(text)?.pair)
}

/// The migration record beside the queue: the queue (whose database holds its
/// tables), the shared authenticator and its configuration.
#[derive(Clone)]
pub struct Migration {
    /// The queue: its database, clock, configuration and feeds.
    pub queue: Queue,
    /// Who may call what.
    pub auth: Arc<Authenticator>,
    /// The record's configuration.
    pub cfg: Arc<MigrationConfig>,
}

impl Migration {
    /// The record beside the queue of `shared`: its migrations applied, its
    /// feed bound (so the queue's commits from now on feed it) and the
    /// configured mapping and milestones written.
    pub async fn open(shared: &Shared, cfg: MigrationConfig) -> anyhow::Result<Migration> {
        migrate(&shared.queue.db).await?;
        bind(&shared.queue);
        let now = shared.queue.clock.now_ms();
        for p in &cfg.mapping {
            store::put_mapping(&shared.queue.db, p, "file", "configuration", now).await?;
        }
        for (name, def) in &cfg.milestones {
            if !milestones::valid_name(name) {
                anyhow::bail!("milestone name {name:?}: 1 to 100 letters, digits, _, . or -");
            }
            def.check()
                .map_err(|e| anyhow::anyhow!("milestone {name}: {e}"))?;
            milestones::put(&shared.queue.db, name, def, "file", "configuration", now).await?;
        }
        Ok(Migration {
            queue: shared.queue.clone(),
            auth: shared.auth.clone(),
            cfg: Arc::new(cfg),
        })
    }
}

/// Bind the record's feed on `queue`: every resolution it commits from now on.
pub fn bind(queue: &Queue) {
    for exchange in EXCHANGES {
        queue.bind_feed_all(FEED, exchange);
    }
}

/// Apply the record's migrations (versions 5001 and up) to the queue's database.
pub async fn migrate(db: &Db) -> anyhow::Result<()> {
    bbb_sqlstore::migrate_shared(
        &db.pool,
        db.backend,
        sqlx::migrate!("./migrations/sqlite"),
        sqlx::migrate!("./migrations/postgres"),
    )
    .await
    .map_err(|e| anyhow::anyhow!("migration record migrations: {e}"))
}

/// The record as a service served beside the queue: its API and the feed
/// consumer (no legacy master polled).
pub fn mount(cfg: MigrationConfig) -> Mount {
    mount_with_masters(cfg, LegacyMasters::default())
}

/// The record as a service served beside the queue: its API, the feed
/// consumer and, when `cfg.poll` is set, the poller of `masters`' finished
/// builds (masters may be added to the list later).
pub fn mount_with_masters(cfg: MigrationConfig, masters: LegacyMasters) -> Mount {
    Box::new(|shared: Shared| {
        Box::pin(async move {
            let poll = cfg.poll.clone();
            let migration = Migration::open(&shared, cfg).await?;
            let mut tasks = vec![tokio::spawn(
                migration.clone().run_feed(shared.stop.clone()),
            )];
            if let Some(settings) = poll {
                tasks.push(tokio::spawn(migration.clone().run_poller(
                    masters,
                    settings,
                    shared.stop.clone(),
                )));
            }
            Ok(Mounted {
                routes: api::service(migration).routes_only(),
                tasks,
            })
        })
    })
}
