//! The `[migration]` section: the migration record's mapping file, default
//! window and the polling of the legacy masters' finished builds, and the
//! record's mount with the masters it polls.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bbb_bridge::{BridgeConfig, BuildbotKind};
use bbb_buildbot::LegacyMaster;
use bbb_envlayer::Var;
use bbb_migration::milestones::{self, MilestoneDef};
use bbb_migration::{LegacyMasters, MigrationConfig, PollSettings};
use bbb_secret::{Secret, SecretUrl};
use serde::{Deserialize, Serialize};

/// `[migration]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MigrationSection {
    /// A TOML file of `[[pair]]` tables (`label`, `builder`, optional
    /// `branch`) written to the mapping when the service starts.
    pub mapping_file: Option<PathBuf>,
    /// How many revisions a branch's figures cover when a request does not
    /// say (1 to 1000).
    pub revisions: i64,
    /// Whether the legacy masters' finished builds are polled.
    pub poll: bool,
    /// Between two polls of a master, ms.
    pub poll_interval_ms: u64,
    /// The longest wait after failed polls, ms (the wait doubles from
    /// `poll_interval_ms` up to this).
    pub max_backoff_ms: u64,
    /// How far back a master's first poll reads, seconds.
    pub first_lookback_s: i64,
    /// Whether the bridge's own master (the `[bridge]` section's; in `bbb up`
    /// the sandbox master) is polled.
    pub bridge_master: bool,
    /// Other masters to poll.
    pub masters: Vec<MasterSection>,
    /// Milestones, written to the record when the service starts.
    pub milestones: Vec<MilestoneSection>,
}

/// One `[[migration.milestones]]` table: a date and the jobs of a branch that
/// must run natively by then.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MilestoneSection {
    /// Its name (1 to 100 letters, digits, `_`, `.`, `-`).
    pub name: String,
    /// The branch.
    pub branch: String,
    /// The date, `YYYY-MM-DD`.
    pub due: String,
    /// The jobs: task labels or builders.
    pub jobs: Vec<String>,
    /// What it is about.
    #[serde(default)]
    pub description: String,
}

impl Default for MigrationSection {
    fn default() -> Self {
        let poll = PollSettings::default();
        MigrationSection {
            mapping_file: None,
            revisions: bbb_migration::DEFAULT_REVISIONS,
            poll: true,
            poll_interval_ms: poll.interval_ms,
            max_backoff_ms: poll.max_backoff_ms,
            first_lookback_s: poll.first_lookback_s,
            bridge_master: true,
            masters: Vec::new(),
            milestones: Vec::new(),
        }
    }
}

/// One `[[migration.masters]]` table: a legacy master polled besides the
/// bridge's, with the `[bridge]` section's keys for reaching it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterSection {
    /// Its name: the key of its cursor and of its builds' source ids.
    pub name: String,
    /// `schedulerdb` (a 0.8 scheduler database) or `rest` (Buildbot 4).
    pub buildbot_kind: BuildbotKind,
    /// The scheduler database (`schedulerdb`).
    #[serde(default)]
    pub schedulerdb_url: Option<SecretUrl>,
    /// The REST API (`rest`).
    #[serde(default)]
    pub buildbot_url: Option<SecretUrl>,
    /// Basic auth user of the REST API.
    #[serde(default)]
    pub buildbot_user: Option<String>,
    /// Basic auth password of the REST API.
    #[serde(default)]
    pub buildbot_password: Option<Secret<String>>,
}

impl MigrationSection {
    /// The `BBB_MIGRATION_*` variables.
    pub const ENV: &'static [Var<MigrationSection>] = &[
        Var::new(
            "BBB_MIGRATION_MAPPING_FILE",
            "the migration record's mapping file of [[pair]] tables (mapping_file)",
            |c, v| {
                c.mapping_file = Some(PathBuf::from(v));
                Ok(())
            },
        ),
        Var::new(
            "BBB_MIGRATION_REVISIONS",
            "revisions the migration figures cover by default, 1 to 1000 (revisions)",
            |c, v| bbb_envlayer::set_number(&mut c.revisions, v),
        ),
        Var::new(
            "BBB_MIGRATION_POLL",
            "whether the legacy masters' finished builds are polled, true or false (poll)",
            |c, v| bbb_envlayer::set_flag(&mut c.poll, v),
        ),
        Var::new(
            "BBB_MIGRATION_POLL_INTERVAL_MS",
            "between two polls of a legacy master's builds, ms (poll_interval_ms)",
            |c, v| bbb_envlayer::set_number(&mut c.poll_interval_ms, v),
        ),
    ];

    /// Applies the environment.
    pub fn apply_env(&mut self) -> anyhow::Result<()> {
        self.apply_vars(bbb_envlayer::from_env)
    }

    /// Applies the variables `lookup` finds.
    pub fn apply_vars(&mut self, lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        bbb_envlayer::apply(Self::ENV, self, lookup)?;
        Ok(())
    }

    /// The record's configuration: the mapping file read, the values checked;
    /// tasks on the bridge's task queue count as bridged.
    pub fn record_config(&self, bridge: &BridgeConfig) -> anyhow::Result<MigrationConfig> {
        if !(1..=bbb_migration::api::MAX_REVISIONS).contains(&self.revisions) {
            anyhow::bail!(
                "[migration] revisions must be from 1 to {}, not {}",
                bbb_migration::api::MAX_REVISIONS,
                self.revisions
            );
        }
        if self.poll_interval_ms == 0 {
            anyhow::bail!("[migration] poll_interval_ms must be positive");
        }
        let mut names: Vec<&str> = Vec::new();
        for m in &self.masters {
            if m.name.is_empty() || names.contains(&m.name.as_str()) || m.name == bridge.master_name
            {
                anyhow::bail!(
                    "[[migration.masters]] names must be set and unique (and not the bridge's master {:?}): {:?}",
                    bridge.master_name,
                    m.name
                );
            }
            if m.buildbot_kind == BuildbotKind::Sandbox {
                anyhow::bail!(
                    "[[migration.masters]] {:?}: a sandbox master exists only in bbb up, as the bridge's",
                    m.name
                );
            }
            names.push(&m.name);
        }
        let mapping = match &self.mapping_file {
            Some(path) => bbb_migration::read_mapping_file(path)?,
            None => Vec::new(),
        };
        Ok(MigrationConfig {
            bridge_task_queues: vec![bridge.task_queue_id.clone()],
            mapping,
            revisions: self.revisions,
            poll: self.poll.then(|| PollSettings {
                interval_ms: self.poll_interval_ms,
                max_backoff_ms: self.max_backoff_ms.max(self.poll_interval_ms),
                first_lookback_s: self.first_lookback_s.max(0),
            }),
            milestones: self.milestones()?,
        })
    }

    /// The `[[migration.milestones]]`, their names and definitions checked.
    fn milestones(&self) -> anyhow::Result<Vec<(String, MilestoneDef)>> {
        let mut out: Vec<(String, MilestoneDef)> = Vec::new();
        for m in &self.milestones {
            if !milestones::valid_name(&m.name) || out.iter().any(|(n, _)| *n == m.name) {
                anyhow::bail!(
                    "[[migration.milestones]] names must be unique, 1 to 100 letters, digits, _, . or -: {:?}",
                    m.name
                );
            }
            let def = MilestoneDef {
                branch: m.branch.clone(),
                due: m.due.clone(),
                jobs: m.jobs.clone(),
                description: m.description.clone(),
            };
            def.check()
                .map_err(|e| anyhow::anyhow!("[[migration.milestones]] {:?}: {e}", m.name))?;
            out.push((m.name.clone(), def));
        }
        Ok(out)
    }
}

/// The bridge's configuration with a polled master's keys in place of its own.
fn master_config(bridge: &BridgeConfig, m: &MasterSection) -> BridgeConfig {
    let mut cfg = bridge.clone();
    cfg.master_name = m.name.clone();
    cfg.buildbot_kind = m.buildbot_kind;
    cfg.schedulerdb_url = m.schedulerdb_url.clone();
    cfg.buildbot_url = m.buildbot_url.clone();
    cfg.buildbot_user = m.buildbot_user.clone();
    cfg.buildbot_password = m.buildbot_password.clone();
    cfg
}

/// Whether the bridge's configuration names a master this process can reach
/// (a scheduler database or a REST API; the sandbox is `bbb up`'s own).
fn bridge_master_reachable(bridge: &BridgeConfig) -> bool {
    match bridge.buildbot_kind {
        BuildbotKind::Schedulerdb => bridge.schedulerdb_url.is_some(),
        BuildbotKind::Rest => bridge.buildbot_url.is_some(),
        BuildbotKind::Sandbox => false,
    }
}

/// The record mounted beside the queue, polling the configured masters:
/// the `[[migration.masters]]`, and the bridge's own unless `bridge_later`
/// (`bbb up` adds its running master with [`add_bridge_master`]).
pub fn mount(
    section: &MigrationSection,
    bridge: &BridgeConfig,
    masters: LegacyMasters,
    bridge_later: bool,
) -> anyhow::Result<bbb_queue::Mount> {
    let cfg = section.record_config(bridge)?;
    let mut configs: Vec<BridgeConfig> = section
        .masters
        .iter()
        .map(|m| master_config(bridge, m))
        .collect();
    if cfg.poll.is_some() && section.bridge_master && !bridge_later {
        if bridge_master_reachable(bridge) {
            configs.insert(0, bridge.clone());
        } else {
            tracing::info!(
                "the migration record polls no bridge master: the [bridge] section names no scheduler database or REST API"
            );
        }
    }
    if cfg.poll.is_none() {
        configs.clear();
    }
    let inner = bbb_migration::mount_with_masters(cfg, masters.clone());
    Ok(Box::new(move |shared: bbb_queue::Shared| {
        Box::pin(async move {
            for c in &configs {
                let master = crate::roles::legacy_master(c, &shared.bus)
                    .await
                    .with_context(|| format!("the legacy master {:?}", c.master_name))?;
                masters.add(c.master_name.clone(), master);
            }
            inner(shared).await
        })
    }))
}

/// Adds the bridge's running master to the polled ones (`bbb up`), when the
/// section polls it. A sandbox master keeps nothing across restarts (its build
/// ids start again from 1), so each start is a master of its own, named
/// `<master_name>@<start time in ms>`.
pub fn add_bridge_master(
    section: &MigrationSection,
    bridge: &BridgeConfig,
    masters: &LegacyMasters,
    master: Arc<dyn LegacyMaster>,
) {
    if !(section.poll && section.bridge_master) {
        return;
    }
    let name = match bridge.buildbot_kind {
        BuildbotKind::Sandbox => format!(
            "{}@{}",
            bridge.master_name,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        ),
        _ => bridge.master_name.clone(),
    };
    masters.add(name, master);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_reads_and_the_environment_overrides() {
        let mut s: MigrationSection = toml::from_str(
            "revisions = 20\npoll_interval_ms = 5000\n[[masters]]\nname = \"old\"\nbuildbot_kind = \"rest\"\nbuildbot_url = \"http://old:8010/\"\n",
        )
        .unwrap();
        s.apply_vars(|n| (n == "BBB_MIGRATION_POLL").then(|| "false".to_string()))
            .unwrap();
        let cfg = s.record_config(&BridgeConfig::default()).unwrap();
        assert_eq!(cfg.revisions, 20);
        assert_eq!(cfg.poll, None);
        assert_eq!(s.masters[0].name, "old");
        s.revisions = 0;
        assert!(s.record_config(&BridgeConfig::default()).is_err());
        let e = s
            .apply_vars(|n| (n == "BBB_MIGRATION_REVISIONS").then(|| "x".to_string()))
            .unwrap_err();
        assert!(e.to_string().contains("BBB_MIGRATION_REVISIONS"), "{e}");
    }
}
