//! The bridge's configuration: the `[bridge]` section of the TOML file plus
//! `BBB_*` environment overrides (see [`BridgeConfig::ENV_HELP`]).

use std::collections::BTreeMap;

use bbb_secret::{Secret, SecretUrl};
use serde::{Deserialize, Serialize};

/// Which legacy master the bridge talks to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildbotKind {
    /// A Buildbot 0.8-style scheduler database on MySQL/MariaDB.
    #[default]
    Schedulerdb,
    /// A modern master (Buildbot 4) through its REST API and bbb's reporter plugin.
    Rest,
    /// The in-memory sandbox master (`bbb up`, demos, load tests).
    Sandbox,
}

/// Everything `bbb bridge` (and each of its roles) needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeConfig {
    /// Root URL of the queue (bbb's or an upstream TaskCluster deployment).
    pub queue_root_url: String,
    /// Client id the bridge calls the queue with.
    pub queue_client_id: String,
    /// Its access token. Masked when printed.
    pub queue_access_token: Secret<String>,
    /// AMQP URL of the broker carrying the queue's Pulse exchanges (and the
    /// masters' build events). Required for `bbb bridge`. Its password is
    /// masked when printed.
    pub amqp_url: Option<SecretUrl>,
    /// The mapping database: `sqlite://PATH` (one instance) or `postgres://...`
    /// (any number of instances). Its password is masked when printed.
    pub state_database_url: SecretUrl,
    /// The task queue whose tasks become build requests.
    pub task_queue_id: String,
    /// Worker group of the bridge's claims (shared by every instance).
    pub worker_group: String,
    /// Worker id of the bridge's claims (shared by every instance).
    pub worker_id: String,
    /// This instance's name (leases, logs). Default: `<hostname>-<pid>`.
    pub instance: Option<String>,
    /// Name of the master (or estate) stored on each mapping row.
    pub master_name: String,
    /// Which legacy master: `schedulerdb`, `rest` or `sandbox`.
    pub buildbot_kind: BuildbotKind,
    /// REST API base URL of a Buildbot 4 master (`rest`). Its password, if
    /// any, is masked when printed.
    pub buildbot_url: Option<SecretUrl>,
    /// The force scheduler bbb submits through (`rest`).
    pub buildbot_scheduler: String,
    /// User for the master's REST API (`rest`, optional).
    pub buildbot_user: Option<String>,
    /// Password for the master's REST API. Masked when printed.
    pub buildbot_password: Option<Secret<String>>,
    /// Exchange bbb's reporter plugin publishes to (`rest`; the plugin's default).
    /// The bridge consumes it from the durable queue `<queue_prefix>/buildbot-builds`.
    pub reporter_exchange: String,
    /// Scheduler DB URL, `mysql://user:password@host/db` (`schedulerdb`). Its
    /// password is masked when printed.
    pub schedulerdb_url: Option<SecretUrl>,
    /// Self-serve (buildapi) base URL for cancels and stops (`schedulerdb`,
    /// optional). Its password, if any, is masked when printed.
    pub selfserve_url: Option<SecretUrl>,
    /// The `X-Remote-User` self-serve requires.
    pub selfserve_user: String,
    /// Web URL of each master by the name it claims requests with, for stop URLs
    /// (`schedulerdb` without self-serve).
    pub master_urls: BTreeMap<String, String>,
    /// Web URL of masters not in `master_urls`.
    pub default_master_url: Option<String>,
    /// Exchange the masters publish build events to (`schedulerdb`), consumed from
    /// the durable queue `<queue_prefix>/buildbot-builds`.
    pub build_exchange: String,
    /// Accepted builders (`schedulerdb`); empty with no `builders_url`: any.
    pub builders: Vec<String>,
    /// URL of a builder list (a JSON list, or allthethings.json) (`schedulerdb`).
    /// Its password, if any, is masked when printed.
    pub builders_url: Option<SecretUrl>,
    /// Builders (whole-name regexes) that need a `buildbot-bridge:builder-name:` scope.
    pub restricted_builders: Vec<String>,
    /// Builders (whole-name regexes) the bridge leaves alone.
    pub ignored_builders: Vec<String>,
    /// Prefix of the queue's exchanges.
    pub exchange_prefix: String,
    /// Prefix of the bridge's durable queue names (shared by every instance).
    pub queue_prefix: String,
    /// Seconds between DB (or REST) polls for missed Buildbot events.
    pub poll_interval_s: f64,
    /// Seconds between reflector passes.
    pub reflector_interval_s: u64,
    /// Running runs whose claim expires within this many seconds are reclaimed.
    pub reclaim_window_s: u64,
    /// Every active row is compared with the master and the queue this often (seconds).
    pub recheck_interval_s: u64,
    /// Resolved rows are kept this many days.
    pub retention_days: u64,
    /// Address:port of `/metrics` (empty: none).
    pub metrics_listen: String,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            queue_root_url: "http://127.0.0.1:8080".to_owned(),
            queue_client_id: "buildbot-bridge".to_owned(),
            queue_access_token: Secret::default(),
            amqp_url: None,
            state_database_url: SecretUrl::new("sqlite://bbb-bridge-state.sqlite"),
            task_queue_id: crate::DEFAULT_TASK_QUEUE.to_owned(),
            worker_group: "buildbot-bridge".to_owned(),
            worker_id: "buildbot-bridge".to_owned(),
            instance: None,
            master_name: "buildbot".to_owned(),
            buildbot_kind: BuildbotKind::Schedulerdb,
            buildbot_url: None,
            buildbot_scheduler: "bbb".to_owned(),
            buildbot_user: None,
            buildbot_password: None,
            reporter_exchange: "exchange/build".to_owned(),
            schedulerdb_url: None,
            selfserve_url: None,
            selfserve_user: "buildbot-bridge".to_owned(),
            master_urls: BTreeMap::new(),
            default_master_url: None,
            build_exchange: "exchange/build".to_owned(),
            builders: vec![],
            builders_url: None,
            restricted_builders: vec![],
            ignored_builders: vec![],
            exchange_prefix: "exchange/taskcluster-queue/v1/".to_owned(),
            queue_prefix: "queue/bbb-bridge".to_owned(),
            poll_interval_s: 5.0,
            reflector_interval_s: 60,
            reclaim_window_s: 600,
            recheck_interval_s: 300,
            retention_days: 7,
            metrics_listen: "127.0.0.1:9464".to_owned(),
        }
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn num<T: std::str::FromStr>(name: &str) -> Result<Option<T>, String> {
    var(name)
        .map(|v| {
            v.parse::<T>()
                .map_err(|_| format!("{name}={v:?} is not a number"))
        })
        .transpose()
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl BridgeConfig {
    /// The environment overrides, for `--help`.
    pub const ENV_HELP: &'static str = "\
Environment (overrides the [bridge] section of --config):
  BBB_QUEUE_ROOT_URL        root URL of the queue (default http://127.0.0.1:8080)
  BBB_QUEUE_CLIENT_ID       client id for the queue (default buildbot-bridge)
  BBB_QUEUE_ACCESS_TOKEN    its access token
  BBB_AMQP_URL              AMQP URL of the broker with the queue's Pulse exchanges
  BBB_STATE_DATABASE_URL    mapping DB: sqlite://PATH (one instance) or postgres://... (several)
  BBB_BRIDGE_TASK_QUEUE     task queue served (default buildbot-bridge/buildbot-bridge)
  BBB_BRIDGE_INSTANCE       this instance's name (default <hostname>-<pid>)
  BBB_BRIDGE_MASTER         master name stored on mapping rows (default buildbot)
  BBB_BUILDBOT_KIND         schedulerdb (default), rest or sandbox
  BBB_BUILDBOT_URL          REST API base of a Buildbot 4 master (rest)
  BBB_BUILDBOT_SCHEDULER    force scheduler to submit through (rest; default bbb)
  BBB_BUILDBOT_USER, BBB_BUILDBOT_PASSWORD   basic auth for the REST API (rest)
  BBB_REPORTER_EXCHANGE     exchange of bbb's reporter plugin (rest; default exchange/build)
  BBB_SCHEDULERDB_URL       mysql://user:password@host/db of a 0.8 scheduler DB (schedulerdb)
  BBB_BUILD_EXCHANGE        exchange the masters publish build events to (schedulerdb; default exchange/build)
  BBB_SELFSERVE_URL         self-serve (buildapi) base URL for cancels and stops (schedulerdb)
  BBB_SELFSERVE_USER        X-Remote-User sent to self-serve (default buildbot-bridge)
  BBB_DEFAULT_MASTER_URL    web URL of the masters, for stop URLs without self-serve (schedulerdb)
  BBB_BUILDERS              comma-separated accepted builders (schedulerdb; default: any)
  BBB_BUILDERS_URL          URL of a builder list or allthethings.json (schedulerdb)
  BBB_RESTRICTED_BUILDERS   comma-separated regexes of builders needing a builder-name scope
  BBB_IGNORED_BUILDERS      comma-separated regexes of builders the bridge leaves alone
  BBB_BRIDGE_WORKER_GROUP, BBB_BRIDGE_WORKER_ID   claim identity shared by every instance
                            (default buildbot-bridge/buildbot-bridge)
  BBB_EXCHANGE_PREFIX       prefix of the queue's exchanges (default exchange/taskcluster-queue/v1/)
  BBB_QUEUE_PREFIX          prefix of the bridge's durable queues (default queue/bbb-bridge)
  BBB_POLL_INTERVAL_S       seconds between DB/REST polls for missed Buildbot events (default 5)
  BBB_REFLECTOR_INTERVAL_S  seconds between reflector passes (default 60)
  BBB_RECLAIM_WINDOW_S      reclaim runs whose claim expires within this (default 600)
  BBB_RECHECK_INTERVAL_S    compare each active row with master and queue this often (default 300)
  BBB_RETENTION_DAYS        keep resolved rows this long (default 7)
  BBB_METRICS_LISTEN        address:port of /metrics (default 127.0.0.1:9464; empty: off)";

    /// Applies the `BBB_*` environment overrides.
    pub fn apply_env(&mut self) -> Result<(), String> {
        let strings: [(&str, &mut String); 4] = [
            ("BBB_QUEUE_ROOT_URL", &mut self.queue_root_url),
            ("BBB_QUEUE_CLIENT_ID", &mut self.queue_client_id),
            ("BBB_BRIDGE_TASK_QUEUE", &mut self.task_queue_id),
            ("BBB_BRIDGE_MASTER", &mut self.master_name),
        ];
        for (name, slot) in strings {
            if let Some(v) = var(name) {
                *slot = v;
            }
        }
        if let Some(v) = var("BBB_QUEUE_ACCESS_TOKEN") {
            self.queue_access_token = v.into();
        }
        if let Some(v) = var("BBB_STATE_DATABASE_URL") {
            self.state_database_url = v.into();
        }
        let more: [(&str, &mut String); 8] = [
            ("BBB_BUILDBOT_SCHEDULER", &mut self.buildbot_scheduler),
            ("BBB_BRIDGE_WORKER_GROUP", &mut self.worker_group),
            ("BBB_BRIDGE_WORKER_ID", &mut self.worker_id),
            ("BBB_EXCHANGE_PREFIX", &mut self.exchange_prefix),
            ("BBB_QUEUE_PREFIX", &mut self.queue_prefix),
            ("BBB_BUILD_EXCHANGE", &mut self.build_exchange),
            ("BBB_REPORTER_EXCHANGE", &mut self.reporter_exchange),
            ("BBB_SELFSERVE_USER", &mut self.selfserve_user),
        ];
        for (name, slot) in more {
            if let Some(v) = var(name) {
                *slot = v;
            }
        }
        if let Some(v) = var("BBB_DEFAULT_MASTER_URL") {
            self.default_master_url = Some(v);
        }
        if let Some(v) = num("BBB_POLL_INTERVAL_S")? {
            self.poll_interval_s = v;
        }
        if let Some(v) = num("BBB_RECLAIM_WINDOW_S")? {
            self.reclaim_window_s = v;
        }
        if let Some(v) = num("BBB_RECHECK_INTERVAL_S")? {
            self.recheck_interval_s = v;
        }
        if let Some(v) = num("BBB_RETENTION_DAYS")? {
            self.retention_days = v;
        }
        let options: [(&str, &mut Option<String>); 2] = [
            ("BBB_BRIDGE_INSTANCE", &mut self.instance),
            ("BBB_BUILDBOT_USER", &mut self.buildbot_user),
        ];
        for (name, slot) in options {
            if let Some(v) = var(name) {
                *slot = Some(v);
            }
        }
        let urls: [(&str, &mut Option<SecretUrl>); 5] = [
            ("BBB_AMQP_URL", &mut self.amqp_url),
            ("BBB_BUILDBOT_URL", &mut self.buildbot_url),
            ("BBB_SCHEDULERDB_URL", &mut self.schedulerdb_url),
            ("BBB_SELFSERVE_URL", &mut self.selfserve_url),
            ("BBB_BUILDERS_URL", &mut self.builders_url),
        ];
        for (name, slot) in urls {
            if let Some(v) = var(name) {
                *slot = Some(v.into());
            }
        }
        if let Some(v) = var("BBB_BUILDBOT_PASSWORD") {
            self.buildbot_password = Some(v.into());
        }
        if let Some(v) = var("BBB_BUILDBOT_KIND") {
            self.buildbot_kind = match v.as_str() {
                "schedulerdb" => BuildbotKind::Schedulerdb,
                "rest" => BuildbotKind::Rest,
                "sandbox" => BuildbotKind::Sandbox,
                other => {
                    return Err(format!(
                        "BBB_BUILDBOT_KIND={other:?}: expected schedulerdb, rest or sandbox"
                    ));
                }
            };
        }
        if let Some(v) = var("BBB_BUILDERS") {
            self.builders = list(&v);
        }
        if let Some(v) = var("BBB_RESTRICTED_BUILDERS") {
            self.restricted_builders = list(&v);
        }
        if let Some(v) = var("BBB_IGNORED_BUILDERS") {
            self.ignored_builders = list(&v);
        }
        if let Some(v) = num("BBB_REFLECTOR_INTERVAL_S")? {
            self.reflector_interval_s = v;
        }
        if let Ok(v) = std::env::var("BBB_METRICS_LISTEN") {
            self.metrics_listen = v;
        }
        Ok(())
    }

    /// Checks what the chosen master kind needs.
    pub fn validate(&self) -> Result<(), String> {
        match self.buildbot_kind {
            BuildbotKind::Schedulerdb if self.schedulerdb_url.is_none() => {
                return Err("buildbot_kind = schedulerdb needs BBB_SCHEDULERDB_URL".to_owned());
            }
            BuildbotKind::Rest if self.buildbot_url.is_none() => {
                return Err("buildbot_kind = rest needs BBB_BUILDBOT_URL".to_owned());
            }
            _ => {}
        }
        if self.reflector_interval_s == 0 {
            return Err("reflector_interval_s must be at least 1".to_owned());
        }
        crate::payload::BuilderRules::new(&self.restricted_builders, &self.ignored_builders)
            .map_err(|e| format!("restricted/ignored builder pattern: {e}"))?;
        Ok(())
    }

    /// This instance's name: configured, or `<hostname>-<pid>`.
    pub fn instance_name(&self) -> String {
        self.instance.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "bbb".to_owned());
            format!("{host}-{}", std::process::id())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_per_kind_and_mask_secrets() {
        let mut c = BridgeConfig::default();
        assert!(c.validate().unwrap_err().contains("BBB_SCHEDULERDB_URL"));
        c.buildbot_kind = BuildbotKind::Sandbox;
        c.validate().unwrap();
        c.queue_access_token = "secret-token".into();
        c.schedulerdb_url = Some("mysql://bbb:hunter2@db/sched".into());
        c.amqp_url = Some("amqp://user:pw@mq/%2f".into());
        c.buildbot_password = Some("swordfish".into());
        let text = toml::to_string(&c).unwrap();
        for shown in [text, format!("{c:?}")] {
            assert!(!shown.contains("secret-token"), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains(":pw@"), "{shown}");
            assert!(!shown.contains("swordfish"), "{shown}");
            assert!(shown.contains("mysql://bbb:***@db/sched"), "{shown}");
        }
        c.restricted_builders = vec!["(".to_owned()];
        assert!(c.validate().is_err());
    }

    #[test]
    fn reads_a_toml_section() {
        let c: BridgeConfig = toml::from_str(
            r#"
            buildbot_kind = "rest"
            buildbot_url = "http://bm1:8010/api/v2"
            restricted_builders = ["release-.*"]
            reflector_interval_s = 30
            "#,
        )
        .unwrap();
        assert_eq!(c.buildbot_kind, BuildbotKind::Rest);
        assert_eq!(c.reflector_interval_s, 30);
        c.validate().unwrap();
        assert!(toml::from_str::<BridgeConfig>("nope = 1").is_err());
    }
}
