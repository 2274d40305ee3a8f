//! The bridge's configuration: the `[bridge]` section of the TOML file plus
//! `BBB_*` environment overrides (see [`BridgeConfig::ENV`]).

use std::collections::BTreeMap;

use bbb_envlayer::{EnvError, Var, set, set_list, set_number, set_one_of, set_some};
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

impl BridgeConfig {
    /// The `BBB_*` variables that override the `[bridge]` section, in the
    /// order they are applied and listed by `--help`.
    pub const ENV: &'static [Var<BridgeConfig>] = &[
        Var::new(
            "BBB_QUEUE_ROOT_URL",
            "root URL of the queue (default http://127.0.0.1:8080)",
            |c, v| set(&mut c.queue_root_url, v),
        ),
        Var::new(
            "BBB_QUEUE_CLIENT_ID",
            "client id for the queue (default buildbot-bridge)",
            |c, v| set(&mut c.queue_client_id, v),
        ),
        Var::secret("BBB_QUEUE_ACCESS_TOKEN", "its access token", |c, v| {
            set(&mut c.queue_access_token, v)
        }),
        Var::secret(
            "BBB_AMQP_URL",
            "AMQP URL of the broker with the queue's Pulse exchanges",
            |c, v| set_some(&mut c.amqp_url, v),
        ),
        Var::secret(
            "BBB_STATE_DATABASE_URL",
            "mapping DB: sqlite://PATH (one instance) or postgres://... (several)",
            |c, v| set(&mut c.state_database_url, v),
        ),
        Var::new(
            "BBB_BRIDGE_TASK_QUEUE",
            "task queue served (default buildbot-bridge/buildbot-bridge)",
            |c, v| set(&mut c.task_queue_id, v),
        ),
        Var::new(
            "BBB_BRIDGE_INSTANCE",
            "this instance's name (default <hostname>-<pid>)",
            |c, v| set_some(&mut c.instance, v),
        ),
        Var::new(
            "BBB_BRIDGE_MASTER",
            "master name stored on mapping rows (default buildbot)",
            |c, v| set(&mut c.master_name, v),
        ),
        Var::new(
            "BBB_BUILDBOT_KIND",
            "schedulerdb (default), rest or sandbox",
            |c, v| {
                set_one_of(
                    &mut c.buildbot_kind,
                    v,
                    &[
                        ("schedulerdb", BuildbotKind::Schedulerdb),
                        ("rest", BuildbotKind::Rest),
                        ("sandbox", BuildbotKind::Sandbox),
                    ],
                )
            },
        ),
        Var::secret(
            "BBB_BUILDBOT_URL",
            "REST API base of a Buildbot 4 master (rest)",
            |c, v| set_some(&mut c.buildbot_url, v),
        ),
        Var::new(
            "BBB_BUILDBOT_SCHEDULER",
            "force scheduler to submit through (rest; default bbb)",
            |c, v| set(&mut c.buildbot_scheduler, v),
        ),
        Var::new(
            "BBB_BUILDBOT_USER",
            "basic-auth user for the REST API (rest)",
            |c, v| set_some(&mut c.buildbot_user, v),
        ),
        Var::secret(
            "BBB_BUILDBOT_PASSWORD",
            "its password (rest; used when both are set)",
            |c, v| set_some(&mut c.buildbot_password, v),
        ),
        Var::new(
            "BBB_REPORTER_EXCHANGE",
            "exchange of bbb's reporter plugin (rest; default exchange/build)",
            |c, v| set(&mut c.reporter_exchange, v),
        ),
        Var::secret(
            "BBB_SCHEDULERDB_URL",
            "mysql://user:password@host/db of a 0.8 scheduler DB (schedulerdb)",
            |c, v| set_some(&mut c.schedulerdb_url, v),
        ),
        Var::new(
            "BBB_BUILD_EXCHANGE",
            "exchange the masters publish build events to (schedulerdb; default exchange/build)",
            |c, v| set(&mut c.build_exchange, v),
        ),
        Var::secret(
            "BBB_SELFSERVE_URL",
            "self-serve (buildapi) base URL for cancels and stops (schedulerdb)",
            |c, v| set_some(&mut c.selfserve_url, v),
        ),
        Var::new(
            "BBB_SELFSERVE_USER",
            "X-Remote-User sent to self-serve (default buildbot-bridge)",
            |c, v| set(&mut c.selfserve_user, v),
        ),
        Var::new(
            "BBB_DEFAULT_MASTER_URL",
            "web URL of the masters, for stop URLs without self-serve (schedulerdb)",
            |c, v| set_some(&mut c.default_master_url, v),
        ),
        Var::new(
            "BBB_BUILDERS",
            "comma-separated accepted builders (schedulerdb; default: any)",
            |c, v| set_list(&mut c.builders, v),
        ),
        Var::secret(
            "BBB_BUILDERS_URL",
            "URL of a builder list or allthethings.json (schedulerdb)",
            |c, v| set_some(&mut c.builders_url, v),
        ),
        Var::new(
            "BBB_RESTRICTED_BUILDERS",
            "comma-separated regexes of builders needing a builder-name scope",
            |c, v| set_list(&mut c.restricted_builders, v),
        ),
        Var::new(
            "BBB_IGNORED_BUILDERS",
            "comma-separated regexes of builders the bridge leaves alone",
            |c, v| set_list(&mut c.ignored_builders, v),
        ),
        Var::new(
            "BBB_BRIDGE_WORKER_GROUP",
            "worker group of the claims, shared by every instance (default buildbot-bridge)",
            |c, v| set(&mut c.worker_group, v),
        ),
        Var::new(
            "BBB_BRIDGE_WORKER_ID",
            "worker id of the claims, shared by every instance (default buildbot-bridge)",
            |c, v| set(&mut c.worker_id, v),
        ),
        Var::new(
            "BBB_EXCHANGE_PREFIX",
            "prefix of the queue's exchanges (default exchange/taskcluster-queue/v1/)",
            |c, v| set(&mut c.exchange_prefix, v),
        ),
        Var::new(
            "BBB_QUEUE_PREFIX",
            "prefix of the bridge's durable queues (default queue/bbb-bridge)",
            |c, v| set(&mut c.queue_prefix, v),
        ),
        Var::new(
            "BBB_POLL_INTERVAL_S",
            "seconds between DB/REST polls for missed Buildbot events (default 5)",
            |c, v| set_number(&mut c.poll_interval_s, v),
        ),
        Var::new(
            "BBB_REFLECTOR_INTERVAL_S",
            "seconds between reflector passes (default 60)",
            |c, v| set_number(&mut c.reflector_interval_s, v),
        ),
        Var::new(
            "BBB_RECLAIM_WINDOW_S",
            "reclaim runs whose claim expires within this (default 600)",
            |c, v| set_number(&mut c.reclaim_window_s, v),
        ),
        Var::new(
            "BBB_RECHECK_INTERVAL_S",
            "compare each active row with master and queue this often (default 300)",
            |c, v| set_number(&mut c.recheck_interval_s, v),
        ),
        Var::new(
            "BBB_RETENTION_DAYS",
            "keep resolved rows this long (default 7)",
            |c, v| set_number(&mut c.retention_days, v),
        ),
        Var::empty_allowed(
            "BBB_METRICS_LISTEN",
            "address:port of /metrics (default 127.0.0.1:9464; empty: off)",
            |c, v| set(&mut c.metrics_listen, v),
        ),
    ];

    /// Applies the `BBB_*` environment overrides of [`BridgeConfig::ENV`].
    pub fn apply_env(&mut self) -> Result<(), EnvError> {
        self.apply_vars(bbb_envlayer::from_env)
    }

    /// Applies the overrides of [`BridgeConfig::ENV`] that `lookup` gives
    /// (the environment, for [`BridgeConfig::apply_env`]); empty values are
    /// ignored, but for `BBB_METRICS_LISTEN`.
    pub fn apply_vars(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<(), EnvError> {
        bbb_envlayer::apply(Self::ENV, self, lookup)
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
    use bbb_envlayer::testing::{
        Sample, assert_bad_values_are_refused, assert_each_variable_sets_its_field,
    };

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
        c.selfserve_url = Some("http://bbb:selfserve-pw@buildapi/self-serve".into());
        let text = toml::to_string(&c).unwrap();
        for shown in [text, format!("{c:?}")] {
            assert!(!shown.contains("secret-token"), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains(":pw@"), "{shown}");
            assert!(!shown.contains("swordfish"), "{shown}");
            assert!(!shown.contains("selfserve-pw"), "{shown}");
            assert!(shown.contains("mysql://bbb:***@db/sched"), "{shown}");
            assert!(
                shown.contains("http://bbb:***@buildapi/self-serve"),
                "{shown}"
            );
        }
        assert_eq!(c.queue_access_token.expose(), "secret-token");
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

    /// A value for every variable of [`BridgeConfig::ENV`], and the check
    /// that it set its field.
    const SAMPLES: &[Sample<BridgeConfig>] = &[
        ("BBB_QUEUE_ROOT_URL", "http://q", |c| {
            c.queue_root_url == "http://q"
        }),
        ("BBB_QUEUE_CLIENT_ID", "cid", |c| c.queue_client_id == "cid"),
        ("BBB_QUEUE_ACCESS_TOKEN", "tok", |c| {
            c.queue_access_token.expose() == "tok"
        }),
        ("BBB_AMQP_URL", "amqp://u:pw@mq/%2f", |c| {
            c.amqp_url.as_ref().map(SecretUrl::expose) == Some("amqp://u:pw@mq/%2f")
        }),
        ("BBB_STATE_DATABASE_URL", "postgres://u:pw@db/s", |c| {
            c.state_database_url.expose() == "postgres://u:pw@db/s"
        }),
        ("BBB_BRIDGE_TASK_QUEUE", "p/t", |c| c.task_queue_id == "p/t"),
        ("BBB_BRIDGE_INSTANCE", "i-1", |c| {
            c.instance.as_deref() == Some("i-1")
        }),
        ("BBB_BRIDGE_MASTER", "m", |c| c.master_name == "m"),
        ("BBB_BUILDBOT_KIND", "rest", |c| {
            c.buildbot_kind == BuildbotKind::Rest
        }),
        ("BBB_BUILDBOT_URL", "http://u:pw@bb:8010/", |c| {
            c.buildbot_url.as_ref().map(SecretUrl::expose) == Some("http://u:pw@bb:8010/")
        }),
        ("BBB_BUILDBOT_SCHEDULER", "force", |c| {
            c.buildbot_scheduler == "force"
        }),
        ("BBB_BUILDBOT_USER", "u", |c| {
            c.buildbot_user.as_deref() == Some("u")
        }),
        ("BBB_BUILDBOT_PASSWORD", "pw", |c| {
            c.buildbot_password.as_ref().map(|p| p.expose().as_str()) == Some("pw")
        }),
        ("BBB_REPORTER_EXCHANGE", "exchange/r", |c| {
            c.reporter_exchange == "exchange/r"
        }),
        ("BBB_SCHEDULERDB_URL", "mysql://u:pw@db/s", |c| {
            c.schedulerdb_url.as_ref().map(SecretUrl::expose) == Some("mysql://u:pw@db/s")
        }),
        ("BBB_BUILD_EXCHANGE", "exchange/b", |c| {
            c.build_exchange == "exchange/b"
        }),
        ("BBB_SELFSERVE_URL", "http://ss/", |c| {
            c.selfserve_url.as_ref().map(SecretUrl::expose) == Some("http://ss/")
        }),
        ("BBB_SELFSERVE_USER", "ssu", |c| c.selfserve_user == "ssu"),
        ("BBB_DEFAULT_MASTER_URL", "http://m/", |c| {
            c.default_master_url.as_deref() == Some("http://m/")
        }),
        ("BBB_BUILDERS", "a, b", |c| c.builders == ["a", "b"]),
        ("BBB_BUILDERS_URL", "http://b/all.json", |c| {
            c.builders_url.as_ref().map(SecretUrl::expose) == Some("http://b/all.json")
        }),
        ("BBB_RESTRICTED_BUILDERS", "r-.*", |c| {
            c.restricted_builders == ["r-.*"]
        }),
        ("BBB_IGNORED_BUILDERS", "i-.*,j", |c| {
            c.ignored_builders == ["i-.*", "j"]
        }),
        ("BBB_BRIDGE_WORKER_GROUP", "wg", |c| c.worker_group == "wg"),
        ("BBB_BRIDGE_WORKER_ID", "wi", |c| c.worker_id == "wi"),
        ("BBB_EXCHANGE_PREFIX", "exchange/x/", |c| {
            c.exchange_prefix == "exchange/x/"
        }),
        ("BBB_QUEUE_PREFIX", "queue/x", |c| {
            c.queue_prefix == "queue/x"
        }),
        ("BBB_POLL_INTERVAL_S", "0.5", |c| c.poll_interval_s == 0.5),
        ("BBB_REFLECTOR_INTERVAL_S", "9", |c| {
            c.reflector_interval_s == 9
        }),
        ("BBB_RECLAIM_WINDOW_S", "8", |c| c.reclaim_window_s == 8),
        ("BBB_RECHECK_INTERVAL_S", "7", |c| c.recheck_interval_s == 7),
        ("BBB_RETENTION_DAYS", "6", |c| c.retention_days == 6),
        ("BBB_METRICS_LISTEN", "", |c| c.metrics_listen.is_empty()),
    ];

    #[test]
    fn each_variable_sets_its_field() {
        assert_each_variable_sets_its_field(BridgeConfig::ENV, SAMPLES);
        // An empty value is ignored, but for BBB_METRICS_LISTEN (off).
        let mut c = BridgeConfig::default();
        c.apply_vars(|_| Some(String::new())).unwrap();
        assert_eq!(c.metrics_listen, "");
        assert_eq!(c.queue_root_url, BridgeConfig::default().queue_root_url);
    }

    #[test]
    fn bad_values_name_their_variable() {
        assert_bad_values_are_refused(
            BridgeConfig::ENV,
            &[
                ("BBB_BUILDBOT_KIND", "buildbot9"),
                ("BBB_POLL_INTERVAL_S", "often"),
                ("BBB_REFLECTOR_INTERVAL_S", "-1"),
                ("BBB_RECLAIM_WINDOW_S", "10m"),
                ("BBB_RECHECK_INTERVAL_S", "x"),
                ("BBB_RETENTION_DAYS", "a week"),
            ],
        );
        let err = BridgeConfig::default()
            .apply_vars(|n| (n == "BBB_BUILDBOT_KIND").then(|| "x".to_owned()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "BBB_BUILDBOT_KIND=\"x\": expected schedulerdb, rest or sandbox"
        );
    }
}
