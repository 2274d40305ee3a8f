//! The queue's configuration: a TOML section plus `BBB_*` environment overrides.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Scopes of the `anonymous` role when the configuration defines none: the read
/// access public TaskCluster deployments grant.
pub const DEFAULT_ANONYMOUS_SCOPES: &[&str] = &[
    "queue:get-task:*",
    "queue:status:*",
    "queue:get-artifact:public/*",
    "queue:list-artifacts:*",
    "queue:list-task-group:*",
    "queue:list-dependent-tasks:*",
    "queue:pending-count:*",
    "queue:claimed-count:*",
    "queue:list-task-queues",
    "queue:get-task-queue:*",
    "queue:list-provisioners",
    "queue:get-provisioner:*",
    "queue:list-worker-types:*",
    "queue:get-worker-type:*",
];

/// A client allowed to call the API.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// The Hawk id.
    pub client_id: String,
    /// The Hawk key. Masked when the configuration is printed.
    pub access_token: String,
    /// Scopes, which may include `assume:<role>`.
    pub scopes: Vec<String>,
    /// When the client stops working (RFC 3339), if ever.
    pub expires: Option<String>,
}

/// A role: `assume:<role_id>` grants its scopes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoleConfig {
    /// The role id; may end in `*`.
    pub role_id: String,
    /// Its scopes.
    pub scopes: Vec<String>,
}

/// Clients and roles.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Static clients.
    pub clients: Vec<ClientConfig>,
    /// Roles (the role `anonymous` gives the scopes of unauthenticated callers).
    pub roles: Vec<RoleConfig>,
    /// Accept Hawk MACs computed over the path without the query string. The official
    /// Rust client signs that way, so its paginated calls need this; the query of such
    /// requests is then not covered by the signature (it only selects pages).
    pub allow_unsigned_query: bool,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            clients: vec![],
            roles: vec![],
            allow_unsigned_query: true,
        }
    }
}

/// Everything `bbb queue` needs. Every key has a default that works on one machine.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Address the HTTP API listens on (`BBB_LISTEN`).
    pub listen: String,
    /// Public root URL (`BBB_ROOT_URL`); derived from `listen` when unset.
    pub root_url: Option<String>,
    /// `sqlite://PATH` or `postgres://...` (`BBB_DATABASE_URL`).
    pub database_url: String,
    /// PostgreSQL pool size.
    pub database_max_connections: u32,
    /// AMQP URL for Pulse events (`BBB_AMQP_URL`); unset: in-process bus.
    pub amqp_url: Option<String>,
    /// Exchange name prefix.
    pub exchange_prefix: String,
    /// Access token of the client `root`, scopes `*` (`BBB_ROOT_ACCESS_TOKEN`).
    pub root_access_token: Option<String>,
    /// Seconds a claim lasts before it must be reclaimed (`BBB_CLAIM_TIMEOUT_S`).
    pub claim_timeout_s: u64,
    /// Seconds after a deadline before the task is resolved (`BBB_DEADLINE_DELAY_S`).
    pub deadline_delay_s: u64,
    /// How often idle background resolvers look for work, in ms (`BBB_RESOLVER_INTERVAL_MS`).
    pub resolver_interval_ms: u64,
    /// Longest allowed `deadline - now`, in days.
    pub max_task_deadline_days: u64,
    /// Where `s3` artifacts are stored when no object store is configured.
    pub blob_dir: PathBuf,
    /// How often expired tasks and artifacts are removed, in seconds.
    pub expire_interval_s: u64,
    /// Clients and roles.
    pub auth: AuthSection,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            listen: "127.0.0.1:8080".into(),
            root_url: None,
            database_url: "sqlite://bbb-queue.sqlite".into(),
            database_max_connections: 20,
            amqp_url: None,
            exchange_prefix: "exchange/taskcluster-queue/v1/".into(),
            root_access_token: None,
            claim_timeout_s: 1200,
            deadline_delay_s: 60,
            resolver_interval_ms: 1000,
            max_task_deadline_days: 5,
            blob_dir: PathBuf::from("bbb-artifacts"),
            expire_interval_s: 3600,
            auth: AuthSection::default(),
        }
    }
}

/// The environment overrides, one line each, for `--help`.
pub const ENV_HELP: &str = "\
  BBB_LISTEN                address:port the queue API listens on (default 127.0.0.1:8080)
  BBB_ROOT_URL              public root URL (default http://<listen>)
  BBB_DATABASE_URL          sqlite://PATH or postgres://... (default sqlite://bbb-queue.sqlite)
  BBB_AMQP_URL              AMQP URL for Pulse events (unset: in-process bus)
  BBB_ROOT_ACCESS_TOKEN     access token of the client `root` (scopes `*`)
  BBB_CLAIM_TIMEOUT_S       claim timeout in seconds (default 1200)
  BBB_DEADLINE_DELAY_S      delay after a deadline before resolving, seconds (default 60)
  BBB_RESOLVER_INTERVAL_MS  idle poll interval of background resolvers (default 1000)";

impl QueueConfig {
    /// Apply the `BBB_*` environment overrides.
    pub fn apply_env(&mut self) -> Result<(), String> {
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
        if let Some(v) = var("BBB_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = var("BBB_ROOT_URL") {
            self.root_url = Some(v);
        }
        if let Some(v) = var("BBB_DATABASE_URL") {
            self.database_url = v;
        }
        if let Some(v) = var("BBB_AMQP_URL") {
            self.amqp_url = Some(v);
        }
        if let Some(v) = var("BBB_ROOT_ACCESS_TOKEN") {
            self.root_access_token = Some(v);
        }
        if let Some(v) = num("BBB_CLAIM_TIMEOUT_S")? {
            self.claim_timeout_s = v;
        }
        if let Some(v) = num("BBB_DEADLINE_DELAY_S")? {
            self.deadline_delay_s = v;
        }
        if let Some(v) = num("BBB_RESOLVER_INTERVAL_MS")? {
            self.resolver_interval_ms = v;
        }
        Ok(())
    }

    /// The public root URL, without a trailing slash.
    pub fn root_url(&self) -> String {
        self.root_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
            .trim_end_matches('/')
            .to_string()
    }

    /// A copy safe to print: secrets masked.
    pub fn masked(&self) -> QueueConfig {
        let mut c = self.clone();
        if c.root_access_token.is_some() {
            c.root_access_token = Some("***".into());
        }
        for cl in &mut c.auth.clients {
            cl.access_token = "***".into();
        }
        c.database_url = crate::db::mask_url(&c.database_url);
        c.amqp_url = c.amqp_url.as_deref().map(crate::db::mask_url);
        c
    }
}
