//! The configuration file: one TOML document with a section per role, plus the
//! `BBB_*` environment overrides each role documents.

use anyhow::Context;
use bbb_bridge::BridgeConfig;
use bbb_queue::QueueConfig;
use bbb_workers::WorkerConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Help for `bbb up`.
pub const UP_HELP: &str = "\
`bbb up` also runs the bridge (TC listener, Buildbot listener, reflector) on the task
queue buildbot-bridge/buildbot-bridge against an in-memory sandbox Buildbot master with
the builders linux.build, linux.test, win.build and win.test, and submits one demo task
(skip it with --no-demo). A [bridge] section in --config may point it at a real master.

Environment:
  BBB_DATA_DIR            data directory (default ./bbb-data)
  BBB_LISTEN              address:port of the queue API (default 127.0.0.1:8080)
  BBB_ROOT_ACCESS_TOKEN   access token of the client `root` (default: generated once, kept in the data directory)
  and every variable `bbb queue --help` lists.";

/// The file as read: sections kept as TOML values so defaults apply per key.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[queue]`.
    pub queue: Option<toml::Table>,
    /// `[auth]`: clients and roles of the queue (same as `[queue.auth]`).
    pub auth: Option<toml::Table>,
    /// `[worker]`.
    pub worker: Option<toml::Table>,
    /// `[bridge]`.
    pub bridge: Option<toml::Table>,
}

/// What `bbb config --print` shows.
#[derive(Serialize)]
pub struct Printable {
    /// The queue section.
    pub queue: QueueConfig,
    /// The worker section.
    pub worker: WorkerConfig,
    /// The bridge section.
    pub bridge: BridgeConfig,
}

impl FileConfig {
    /// Read `path`, or nothing.
    pub fn load(path: Option<&Path>) -> anyhow::Result<FileConfig> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// The queue's configuration: file, then environment.
    pub fn queue_config(&self) -> anyhow::Result<QueueConfig> {
        let mut table = self.queue.clone().unwrap_or_default();
        if let Some(auth) = &self.auth {
            table.insert("auth".into(), toml::Value::Table(auth.clone()));
        }
        let mut cfg: QueueConfig = toml::Value::Table(table)
            .try_into()
            .context("the [queue] section")?;
        cfg.apply_env().map_err(anyhow::Error::msg)?;
        Ok(cfg)
    }

    /// The worker's configuration: file, then environment, checked.
    pub fn worker_config(&self) -> anyhow::Result<WorkerConfig> {
        let cfg = self.worker_config_unchecked()?;
        cfg.validate()
            .map_err(|e| anyhow::anyhow!("worker configuration: {e}"))?;
        Ok(cfg)
    }

    /// The bridge's configuration: file, then environment (not yet validated:
    /// `bbb up` fills in the queue and the master).
    pub fn bridge_config(&self) -> anyhow::Result<BridgeConfig> {
        let table = self.bridge.clone().unwrap_or_default();
        let mut cfg: BridgeConfig = toml::Value::Table(table)
            .try_into()
            .context("the [bridge] section")?;
        cfg.apply_env().map_err(anyhow::Error::msg)?;
        Ok(cfg)
    }

    /// Whether the file or the environment names the bridge's mapping database.
    pub fn bridge_state_configured(&self) -> bool {
        std::env::var_os("BBB_STATE_DATABASE_URL").is_some()
            || self
                .bridge
                .as_ref()
                .is_some_and(|b| b.get("state_database_url").is_some())
    }

    /// The worker's configuration without the completeness check (`bbb up` fills in the rest).
    pub fn worker_config_unchecked(&self) -> anyhow::Result<WorkerConfig> {
        let table = self.worker.clone().unwrap_or_default();
        let mut cfg: WorkerConfig = toml::Value::Table(table)
            .try_into()
            .context("the [worker] section")?;
        cfg.apply_env()?;
        Ok(cfg)
    }
}
