//! The queue's configuration: a TOML section plus `BBB_*` environment overrides.

use bbb_envlayer::{EnvError, Var, set, set_flag, set_number, set_one_of, set_some};
use bbb_secret::{Secret, SecretUrl};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Scopes of the `anonymous` role when the configuration defines none: the read
/// access public TaskCluster deployments grant (upstream's recommended
/// anonymous role, for the services bbb serves). `auth:current-scopes` lets a
/// task ask what it may do (taskgraph's action callback does),
/// `auth:expand-scopes` what a role grants (Treeherder does before an action).
pub const DEFAULT_ANONYMOUS_SCOPES: &[&str] = &[
    "auth:current-scopes",
    "auth:expand-scopes",
    "auth:get-client:*",
    "auth:get-role:*",
    "auth:list-clients",
    "auth:list-roles",
    "hooks:get:*",
    "hooks:list-hooks:*",
    "hooks:list-last-fires:*",
    "hooks:status:*",
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
    "queue:list-workers:*",
    "queue:get-worker:*",
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
    /// The Hawk key. Masked when printed.
    pub access_token: Secret<String>,
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
#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// Secret access key (`BBB_BLOB_S3_SECRET_ACCESS_KEY`). Masked when
    /// printed; never logged.
    pub s3_secret_access_key: Secret<String>,
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

impl Default for BlobConfig {
    fn default() -> Self {
        BlobConfig {
            kind: BlobKind::Local,
            s3_endpoint: String::new(),
            s3_bucket: String::new(),
            s3_region: "us-east-1".into(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: Secret::default(),
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
    /// `sqlite://PATH` or `postgres://...` (`BBB_DATABASE_URL`). Its password
    /// is masked when printed.
    pub database_url: SecretUrl,
    /// PostgreSQL pool size.
    pub database_max_connections: u32,
    /// AMQP URL for Pulse events (`BBB_AMQP_URL`); unset: in-process bus. Its
    /// password is masked when printed.
    pub amqp_url: Option<SecretUrl>,
    /// Exchange name prefix.
    pub exchange_prefix: String,
    /// Access token of the client `root`, scopes `*` (`BBB_ROOT_ACCESS_TOKEN`).
    /// Masked when printed.
    pub root_access_token: Option<Secret<String>>,
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
    /// Most pending tasks one task supersedes when it becomes pending
    /// (`BBB_COALESCE_LIMIT`; see coalescing in the README); 0 turns
    /// coalescing off.
    pub coalesce_limit: usize,
    /// Clients and roles.
    pub auth: AuthSection,
    /// The source code URL `__version__` reports (`BBB_SOURCE_URL`); default the
    /// package's `repository` ([`DEFAULT_SOURCE_URL`]).
    pub source_url: String,
}

/// Most tasks one task supersedes by default: the 8 requests Mozilla's
/// Buildbot merged into one build by default.
pub const DEFAULT_COALESCE_LIMIT: usize = 8;

/// Where the source of this build lives: the workspace's `repository` field.
pub const DEFAULT_SOURCE_URL: &str = env!("CARGO_PKG_REPOSITORY");

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            listen: "127.0.0.1:8080".into(),
            root_url: None,
            database_url: SecretUrl::new("sqlite://bbb-queue.sqlite"),
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
            coalesce_limit: DEFAULT_COALESCE_LIMIT,
            auth: AuthSection::default(),
            source_url: DEFAULT_SOURCE_URL.into(),
        }
    }
}

impl QueueConfig {
    /// The `BBB_*` variables that override the `[queue]` section, in the order
    /// they are applied and listed by `--help`.
    pub const ENV: &'static [Var<QueueConfig>] = &[
        Var::new(
            "BBB_LISTEN",
            "address:port the queue API listens on (default 127.0.0.1:8080)",
            |c, v| set(&mut c.listen, v),
        ),
        Var::new(
            "BBB_ROOT_URL",
            "public root URL (default http://<listen>)",
            |c, v| set_some(&mut c.root_url, v),
        ),
        Var::secret(
            "BBB_DATABASE_URL",
            "sqlite://PATH or postgres://... (default sqlite://bbb-queue.sqlite)",
            |c, v| set(&mut c.database_url, v),
        ),
        Var::secret(
            "BBB_AMQP_URL",
            "AMQP URL for Pulse events (unset: in-process bus)",
            |c, v| set_some(&mut c.amqp_url, v),
        ),
        Var::secret(
            "BBB_ROOT_ACCESS_TOKEN",
            "access token of the client `root` (scopes `*`)",
            |c, v| set_some(&mut c.root_access_token, v),
        ),
        Var::new(
            "BBB_CLAIM_TIMEOUT_S",
            "claim timeout in seconds (default 1200)",
            |c, v| set_number(&mut c.claim_timeout_s, v),
        ),
        Var::new(
            "BBB_DEADLINE_DELAY_S",
            "delay after a deadline before resolving, seconds (default 60)",
            |c, v| set_number(&mut c.deadline_delay_s, v),
        ),
        Var::new(
            "BBB_RESOLVER_INTERVAL_MS",
            "idle poll interval of background resolvers (default 1000)",
            |c, v| set_number(&mut c.resolver_interval_ms, v),
        ),
        Var::new(
            "BBB_COMMIT_BATCH",
            "most concurrent create/claim/report calls per transaction (default 64; 1: one each)",
            |c, v| set_number(&mut c.commit_batch, v),
        ),
        Var::new(
            "BBB_COALESCE_LIMIT",
            "most pending tasks of its coalesce.v1.<key> a new task supersedes (default 8; 0: off)",
            |c, v| set_number(&mut c.coalesce_limit, v),
        ),
        Var::new(
            "BBB_SOURCE_URL",
            "source code URL __version__ reports (default the project's repository)",
            |c, v| set(&mut c.source_url, v),
        ),
        Var::new(
            "BBB_BLOB_KIND",
            "store of `s3` artifacts: local (default, under blob_dir) or s3",
            |c, v| {
                set_one_of(
                    &mut c.blob.kind,
                    v,
                    &[("local", BlobKind::Local), ("s3", BlobKind::S3)],
                )
            },
        ),
        Var::new(
            "BBB_BLOB_S3_ENDPOINT",
            "S3-compatible endpoint URL, e.g. http://127.0.0.1:9000",
            |c, v| set(&mut c.blob.s3_endpoint, v),
        ),
        Var::new("BBB_BLOB_S3_BUCKET", "bucket of the artifacts", |c, v| {
            set(&mut c.blob.s3_bucket, v)
        }),
        Var::new(
            "BBB_BLOB_S3_REGION",
            "region for signatures (default us-east-1)",
            |c, v| set(&mut c.blob.s3_region, v),
        ),
        Var::new(
            "BBB_BLOB_S3_ACCESS_KEY_ID",
            "access key id of the store",
            |c, v| set(&mut c.blob.s3_access_key_id, v),
        ),
        Var::secret(
            "BBB_BLOB_S3_SECRET_ACCESS_KEY",
            "secret access key of the store",
            |c, v| set(&mut c.blob.s3_secret_access_key, v),
        ),
        Var::new(
            "BBB_BLOB_S3_PATH_STYLE",
            "true (default): <endpoint>/<bucket>/<key>; false: virtual-hosted",
            |c, v| set_flag(&mut c.blob.s3_path_style, v),
        ),
        Var::new(
            "BBB_BLOB_S3_PUBLIC_URL",
            "base URL public/ artifacts redirect to (unset: presigned URLs)",
            |c, v| set_some(&mut c.blob.s3_public_url, v),
        ),
        Var::new(
            "BBB_BLOB_S3_CREATE_BUCKET",
            "true: create the bucket at start if missing (default false)",
            |c, v| set_flag(&mut c.blob.s3_create_bucket, v),
        ),
    ];

    /// Apply the `BBB_*` environment overrides ([`QueueConfig::ENV`]).
    pub fn apply_env(&mut self) -> Result<(), EnvError> {
        self.apply_vars(bbb_envlayer::from_env)
    }

    /// Apply the overrides of [`QueueConfig::ENV`] that `lookup` gives (the environment,
    /// for [`QueueConfig::apply_env`]); empty values are ignored.
    pub fn apply_vars(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<(), EnvError> {
        bbb_envlayer::apply(Self::ENV, self, lookup)
    }

    /// The public root URL, without a trailing slash.
    pub fn root_url(&self) -> String {
        self.root_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
            .trim_end_matches('/')
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bbb_envlayer::testing::{
        Sample, assert_bad_values_are_refused, assert_each_variable_sets_its_field,
    };

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
        let printed = serde_json::to_string(&c).unwrap();
        assert!(!printed.contains("hush"));
        assert!(printed.contains("\"s3_secret_access_key\":\"***\""));
        assert!(!format!("{c:?}").contains("hush"));
        assert_eq!(c.blob.s3_secret_access_key.expose(), "hush");
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
        assert!(QueueConfig::ENV.iter().any(|v| v.name == "BBB_SOURCE_URL"));
        let err = c
            .apply_vars(|n| (n == "BBB_COMMIT_BATCH").then(|| "many".into()))
            .unwrap_err();
        assert!(err.to_string().contains("BBB_COMMIT_BATCH"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let c: QueueConfig = serde_json::from_value(serde_json::json!({
            "database_url": "postgres://bbb:db-pw@db/queue",
            "amqp_url": "amqp://bbb:mq/pw@mq/%2f",
            "root_access_token": "root-token",
            "blob": {"s3_secret_access_key": "s3-key"},
            "auth": {"clients": [{"client_id": "c", "access_token": "client-token"}]},
        }))
        .unwrap();
        assert_eq!(c.database_url.expose(), "postgres://bbb:db-pw@db/queue");
        assert_eq!(c.auth.clients[0].access_token.expose(), "client-token");
        let json = serde_json::to_string(&c).unwrap();
        let toml = toml::to_string(&c).unwrap();
        for shown in [json, toml, format!("{c:?}")] {
            for secret in ["db-pw", "mq/pw", "root-token", "s3-key", "client-token"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
            assert!(shown.contains("postgres://bbb:***@db/queue"), "{shown}");
            assert!(shown.contains("amqp://bbb:***@mq/%2f"), "{shown}");
        }
    }

    #[test]
    fn the_file_reads_as_before() {
        let c: QueueConfig = toml::from_str(
            r#"
            listen = "0.0.0.0:80"
            database_url = "postgres://bbb:pw@db/queue"
            amqp_url = "amqp://bbb:pw@mq/%2f"
            root_access_token = "root-token"
            [blob]
            kind = "s3"
            s3_secret_access_key = "s3-key"
            [auth]
            clients = [{ client_id = "ci", access_token = "client-token", scopes = ["*"] }]
            "#,
        )
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:80");
        assert_eq!(c.database_url.expose(), "postgres://bbb:pw@db/queue");
        assert_eq!(
            c.amqp_url.as_ref().map(SecretUrl::expose),
            Some("amqp://bbb:pw@mq/%2f")
        );
        assert_eq!(c.root_access_token.as_ref().unwrap().expose(), "root-token");
        assert_eq!(c.blob.s3_secret_access_key.expose(), "s3-key");
        assert_eq!(c.auth.clients[0].access_token.expose(), "client-token");
        assert_eq!(c.auth.clients[0].scopes, ["*"]);
    }

    /// A value for every variable of [`QueueConfig::ENV`], and the check that it set its
    /// field.
    const SAMPLES: &[Sample<QueueConfig>] = &[
        ("BBB_LISTEN", "0.0.0.0:81", |c| c.listen == "0.0.0.0:81"),
        ("BBB_ROOT_URL", "https://q.example.com", |c| {
            c.root_url.as_deref() == Some("https://q.example.com")
        }),
        ("BBB_DATABASE_URL", "postgres://u:pw@db/q", |c| {
            c.database_url.expose() == "postgres://u:pw@db/q"
        }),
        ("BBB_AMQP_URL", "amqp://u:pw@mq/%2f", |c| {
            c.amqp_url.as_ref().map(SecretUrl::expose) == Some("amqp://u:pw@mq/%2f")
        }),
        ("BBB_ROOT_ACCESS_TOKEN", "root-token", |c| {
            c.root_access_token.as_ref().map(|t| t.expose().as_str()) == Some("root-token")
        }),
        ("BBB_CLAIM_TIMEOUT_S", "11", |c| c.claim_timeout_s == 11),
        ("BBB_DEADLINE_DELAY_S", "12", |c| c.deadline_delay_s == 12),
        ("BBB_RESOLVER_INTERVAL_MS", "13", |c| {
            c.resolver_interval_ms == 13
        }),
        ("BBB_COMMIT_BATCH", "14", |c| c.commit_batch == 14),
        ("BBB_COALESCE_LIMIT", "0", |c| c.coalesce_limit == 0),
        ("BBB_SOURCE_URL", "https://src.example.com", |c| {
            c.source_url == "https://src.example.com"
        }),
        ("BBB_BLOB_KIND", "s3", |c| c.blob.kind == BlobKind::S3),
        ("BBB_BLOB_S3_ENDPOINT", "http://s3:9000", |c| {
            c.blob.s3_endpoint == "http://s3:9000"
        }),
        ("BBB_BLOB_S3_BUCKET", "bkt", |c| c.blob.s3_bucket == "bkt"),
        ("BBB_BLOB_S3_REGION", "eu-west-3", |c| {
            c.blob.s3_region == "eu-west-3"
        }),
        ("BBB_BLOB_S3_ACCESS_KEY_ID", "AKID", |c| {
            c.blob.s3_access_key_id == "AKID"
        }),
        ("BBB_BLOB_S3_SECRET_ACCESS_KEY", "s3-key", |c| {
            c.blob.s3_secret_access_key.expose() == "s3-key"
        }),
        ("BBB_BLOB_S3_PATH_STYLE", "false", |c| !c.blob.s3_path_style),
        ("BBB_BLOB_S3_PUBLIC_URL", "https://cdn", |c| {
            c.blob.s3_public_url.as_deref() == Some("https://cdn")
        }),
        ("BBB_BLOB_S3_CREATE_BUCKET", "yes", |c| {
            c.blob.s3_create_bucket
        }),
    ];

    #[test]
    fn each_variable_sets_its_field() {
        assert_each_variable_sets_its_field(QueueConfig::ENV, SAMPLES);
    }

    #[test]
    fn bad_values_name_their_variable() {
        assert_bad_values_are_refused(
            QueueConfig::ENV,
            &[
                ("BBB_CLAIM_TIMEOUT_S", "soon"),
                ("BBB_DEADLINE_DELAY_S", "-1"),
                ("BBB_RESOLVER_INTERVAL_MS", "1.5"),
                ("BBB_COMMIT_BATCH", "many"),
                ("BBB_COALESCE_LIMIT", "-1"),
                ("BBB_BLOB_KIND", "gcs"),
                ("BBB_BLOB_S3_PATH_STYLE", "maybe"),
                ("BBB_BLOB_S3_CREATE_BUCKET", "2"),
            ],
        );
    }
}
