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
    "index:find-task:*",
    "index:list-namespaces:*",
    "index:list-tasks:*",
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

/// Which blob store holds the bytes of `s3` artifacts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    /// Files under `blob_dir`, served by the queue at `<rootUrl>/blobs/...`.
    #[default]
    Local,
    /// An S3-compatible object store (AWS S3, MinIO, Ceph, moto, ...).
    S3,
}

/// `[queue.blob]`: the store behind `s3` artifacts. With `kind = "s3"` uploads and
/// downloads go straight to the store through presigned URLs; objects are keyed
/// `<taskId>/<runId>/<name>` (after `prefix`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlobConfig {
    /// `local` (default) or `s3` (`BBB_BLOB_KIND`).
    pub kind: BlobKind,
    /// The store's base URL, e.g. `https://s3.us-east-1.amazonaws.com` or
    /// `http://127.0.0.1:9000` (`BBB_BLOB_S3_ENDPOINT`).
    pub s3_endpoint: String,
    /// The bucket (`BBB_BLOB_S3_BUCKET`).
    pub s3_bucket: String,
    /// The region signatures are made for (`BBB_BLOB_S3_REGION`, default `us-east-1`).
    pub s3_region: String,
    /// Access key id (`BBB_BLOB_S3_ACCESS_KEY_ID`).
    pub s3_access_key_id: String,
    /// Secret access key (`BBB_BLOB_S3_SECRET_ACCESS_KEY`). Masked when the
    /// configuration is printed; never logged.
    pub s3_secret_access_key: String,
    /// Path-style URLs (`<endpoint>/<bucket>/<key>`, as MinIO, Ceph and moto want);
    /// `false` for virtual-hosted style (`<bucket>.<endpoint host>/<key>`)
    /// (`BBB_BLOB_S3_PATH_STYLE`, default `true`).
    pub s3_path_style: bool,
    /// Prepended to every object key, e.g. `artifacts/` (default empty).
    pub s3_prefix: String,
    /// When set, `public/` artifacts redirect to `<s3_public_url>/<key>` (a public
    /// bucket or a CDN) instead of a presigned URL (`BBB_BLOB_S3_PUBLIC_URL`).
    pub s3_public_url: Option<String>,
    /// Create the bucket at start when it does not exist (`BBB_BLOB_S3_CREATE_BUCKET`).
    pub s3_create_bucket: bool,
}

impl std::fmt::Debug for BlobConfig {
    /// Like the derived form, with the secret masked.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobConfig")
            .field("kind", &self.kind)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_bucket", &self.s3_bucket)
            .field("s3_region", &self.s3_region)
            .field("s3_access_key_id", &self.s3_access_key_id)
            .field("s3_secret_access_key", &"***")
            .field("s3_path_style", &self.s3_path_style)
            .field("s3_prefix", &self.s3_prefix)
            .field("s3_public_url", &self.s3_public_url)
            .field("s3_create_bucket", &self.s3_create_bucket)
            .finish()
    }
}

impl Default for BlobConfig {
    fn default() -> Self {
        BlobConfig {
            kind: BlobKind::Local,
            s3_endpoint: String::new(),
            s3_bucket: String::new(),
            s3_region: "us-east-1".into(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            s3_path_style: true,
            s3_prefix: String::new(),
            s3_public_url: None,
            s3_create_bucket: false,
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
    /// Where `s3` artifacts are stored when `blob.kind` is `local` (the default).
    pub blob_dir: PathBuf,
    /// Where `s3` artifacts are stored: local disk or an S3-compatible store.
    pub blob: BlobConfig,
    /// How often expired tasks and artifacts are removed, in seconds.
    pub expire_interval_s: u64,
    /// Most concurrent createTask, claimWork and report* calls combined into one
    /// transaction (`BBB_COMMIT_BATCH`); 1 gives each call its own transaction.
    pub commit_batch: usize,
    /// Clients and roles.
    pub auth: AuthSection,
    /// The source code URL `__version__` reports (`BBB_SOURCE_URL`); default the
    /// package's `repository` ([`DEFAULT_SOURCE_URL`]).
    pub source_url: String,
}

/// Where the source of this build lives: the workspace's `repository` field.
pub const DEFAULT_SOURCE_URL: &str = env!("CARGO_PKG_REPOSITORY");

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
            blob: BlobConfig::default(),
            expire_interval_s: 3600,
            commit_batch: 64,
            auth: AuthSection::default(),
            source_url: DEFAULT_SOURCE_URL.into(),
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
  BBB_RESOLVER_INTERVAL_MS  idle poll interval of background resolvers (default 1000)
  BBB_COMMIT_BATCH          most concurrent create/claim/report calls per transaction (default 64; 1: one each)
  BBB_SOURCE_URL            source code URL __version__ reports (default the project's repository)
  BBB_BLOB_KIND             store of `s3` artifacts: local (default, under blob_dir) or s3
  BBB_BLOB_S3_ENDPOINT      S3-compatible endpoint URL, e.g. http://127.0.0.1:9000
  BBB_BLOB_S3_BUCKET        bucket of the artifacts
  BBB_BLOB_S3_REGION        region for signatures (default us-east-1)
  BBB_BLOB_S3_ACCESS_KEY_ID      access key id of the store
  BBB_BLOB_S3_SECRET_ACCESS_KEY  secret access key of the store
  BBB_BLOB_S3_PATH_STYLE    true (default): <endpoint>/<bucket>/<key>; false: virtual-hosted
  BBB_BLOB_S3_PUBLIC_URL    base URL public/ artifacts redirect to (unset: presigned URLs)
  BBB_BLOB_S3_CREATE_BUCKET true: create the bucket at start if missing (default false)";

impl QueueConfig {
    /// Apply the `BBB_*` environment overrides.
    pub fn apply_env(&mut self) -> Result<(), String> {
        self.apply_vars(|name| std::env::var(name).ok())
    }

    /// Apply the `BBB_*` overrides that `lookup` gives (the environment, for
    /// [`QueueConfig::apply_env`]); empty values are ignored.
    pub fn apply_vars(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        let var = |name: &str| lookup(name).filter(|v| !v.is_empty());
        fn num<T: std::str::FromStr>(
            var: &dyn Fn(&str) -> Option<String>,
            name: &str,
        ) -> Result<Option<T>, String> {
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
        if let Some(v) = num(&var, "BBB_CLAIM_TIMEOUT_S")? {
            self.claim_timeout_s = v;
        }
        if let Some(v) = num(&var, "BBB_DEADLINE_DELAY_S")? {
            self.deadline_delay_s = v;
        }
        if let Some(v) = num(&var, "BBB_RESOLVER_INTERVAL_MS")? {
            self.resolver_interval_ms = v;
        }
        if let Some(v) = num(&var, "BBB_COMMIT_BATCH")? {
            self.commit_batch = v;
        }
        if let Some(v) = var("BBB_SOURCE_URL") {
            self.source_url = v;
        }
        let flag = |name: &str| -> Result<Option<bool>, String> {
            var(name)
                .map(|v| match v.to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" | "on" => Ok(true),
                    "0" | "false" | "no" | "off" => Ok(false),
                    _ => Err(format!("{name}={v:?} is not true or false")),
                })
                .transpose()
        };
        let b = &mut self.blob;
        if let Some(v) = var("BBB_BLOB_KIND") {
            b.kind = match v.as_str() {
                "local" => BlobKind::Local,
                "s3" => BlobKind::S3,
                _ => return Err(format!("BBB_BLOB_KIND={v:?} is not local or s3")),
            };
        }
        for (name, field) in [
            ("BBB_BLOB_S3_ENDPOINT", &mut b.s3_endpoint),
            ("BBB_BLOB_S3_BUCKET", &mut b.s3_bucket),
            ("BBB_BLOB_S3_REGION", &mut b.s3_region),
            ("BBB_BLOB_S3_ACCESS_KEY_ID", &mut b.s3_access_key_id),
            ("BBB_BLOB_S3_SECRET_ACCESS_KEY", &mut b.s3_secret_access_key),
        ] {
            if let Some(v) = var(name) {
                *field = v;
            }
        }
        if let Some(v) = flag("BBB_BLOB_S3_PATH_STYLE")? {
            b.s3_path_style = v;
        }
        if let Some(v) = var("BBB_BLOB_S3_PUBLIC_URL") {
            b.s3_public_url = Some(v);
        }
        if let Some(v) = flag("BBB_BLOB_S3_CREATE_BUCKET")? {
            b.s3_create_bucket = v;
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
        c.database_url = bbb_secret::mask_url(&c.database_url);
        c.amqp_url = c.amqp_url.as_deref().map(bbb_secret::mask_url);
        if !c.blob.s3_secret_access_key.is_empty() {
            c.blob.s3_secret_access_key = "***".into();
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_section_defaults_and_masking() {
        let c: QueueConfig =
            serde_json::from_value(serde_json::json!({"blob": {"kind": "s3", "s3_bucket": "b"}}))
                .unwrap();
        assert_eq!(c.blob.kind, BlobKind::S3);
        assert_eq!(c.blob.s3_region, "us-east-1");
        assert!(c.blob.s3_path_style);
        assert_eq!(QueueConfig::default().blob.kind, BlobKind::Local);
        let mut c = c;
        c.blob.s3_secret_access_key = "hush".into();
        let printed = serde_json::to_string(&c.masked()).unwrap();
        assert!(!printed.contains("hush"));
        assert!(printed.contains("\"s3_secret_access_key\":\"***\""));
        assert!(!format!("{c:?}").contains("hush"));
        assert!(
            serde_json::from_value::<BlobConfig>(serde_json::json!({"kind": "gcs"})).is_err(),
            "unknown kinds are refused"
        );
    }

    #[test]
    fn source_url_defaults_to_the_repository_and_may_be_overridden() {
        let mut c = QueueConfig::default();
        assert_eq!(c.source_url, "https://github.com/bbb-project/bbb");
        assert_eq!(c.source_url, env!("CARGO_PKG_REPOSITORY"));
        let from_file: QueueConfig =
            serde_json::from_value(serde_json::json!({"source_url": "https://example.com/fork"}))
                .unwrap();
        assert_eq!(from_file.source_url, "https://example.com/fork");
        c.apply_vars(|n| (n == "BBB_SOURCE_URL").then(String::new))
            .unwrap();
        assert_eq!(
            c.source_url, DEFAULT_SOURCE_URL,
            "an empty value is ignored"
        );
        c.apply_vars(|n| (n == "BBB_SOURCE_URL").then(|| "https://git.example.com/bbb".into()))
            .unwrap();
        assert_eq!(c.source_url, "https://git.example.com/bbb");
        assert!(ENV_HELP.contains("BBB_SOURCE_URL"));
        let err = c
            .apply_vars(|n| (n == "BBB_COMMIT_BATCH").then(|| "many".into()))
            .unwrap_err();
        assert!(err.contains("BBB_COMMIT_BATCH"), "{err}");
    }
}
