//! An in-process queue for tests of this crate and of its clients (workers, bridge):
//! a real server on a free loopback port, on SQLite or on a fresh PostgreSQL database.

use bbb_testdb::{Backend, PgDatabase, TempDir};

use crate::config::{BlobConfig, ClientConfig, QueueConfig, RoleConfig};
use crate::server::{Mount, Running, random_token, start_with};
use crate::time::Clock;

/// A running queue for one test. Dropping it drops its database (a fresh
/// PostgreSQL database or a SQLite file in a temporary directory); call
/// [`TestQueue::stop`] first to shut the server down cleanly.
pub struct TestQueue {
    /// Root URL to give clients.
    pub root_url: String,
    /// The all-powerful client's id (`root`).
    pub root_client_id: String,
    /// Its access token.
    pub root_access_token: String,
    /// The clock the queue reads; advance it to trigger deadlines and claim expiry.
    pub clock: Clock,
    /// The running server.
    pub running: Running,
    _pg: Option<PgDatabase>,
    _dir: TempDir,
}

/// Options for [`TestQueue::with`].
#[derive(Clone, Debug, Default)]
pub struct TestOptions {
    /// Use PostgreSQL (a fresh database) instead of SQLite.
    pub postgres: bool,
    /// An existing database URL to use instead (for several queues on one database,
    /// e.g. a [`PgDatabase`] the test holds).
    pub database_url: Option<String>,
    /// AMQP URL for events.
    pub amqp_url: Option<String>,
    /// Claim timeout in seconds (default 1200).
    pub claim_timeout_s: Option<u64>,
    /// Most calls per transaction (default: the queue's default, 64).
    pub commit_batch: Option<usize>,
    /// Most tasks one task supersedes (default: the queue's default, 8).
    pub coalesce_limit: Option<usize>,
    /// Extra clients.
    pub clients: Vec<ClientConfig>,
    /// Roles (an `anonymous` one replaces the default anonymous scopes).
    pub roles: Vec<RoleConfig>,
    /// The blob store of `s3` artifacts (default: local disk in the test's directory).
    pub blob: Option<BlobConfig>,
    /// The source URL `__version__` reports (default: the queue's default).
    pub source_url: Option<String>,
}

impl TestQueue {
    /// A queue on a fresh SQLite file.
    pub async fn sqlite() -> TestQueue {
        Self::with(TestOptions::default())
            .await
            .expect("start test queue")
    }

    /// A queue on a fresh PostgreSQL database.
    pub async fn postgres() -> TestQueue {
        Self::with(TestOptions {
            postgres: true,
            ..Default::default()
        })
        .await
        .expect("start test queue")
    }

    /// A queue with options.
    pub async fn with(opts: TestOptions) -> anyhow::Result<TestQueue> {
        Self::with_mounts(opts, Vec::new()).await
    }

    /// A queue with options, serving the services `mounts` build beside it
    /// (see [`crate::start_with`]).
    pub async fn with_mounts(opts: TestOptions, mounts: Vec<Mount>) -> anyhow::Result<TestQueue> {
        let dir = TempDir::new("bbb-queue-test");
        let mut pg = None;
        let database_url = match (&opts.database_url, opts.postgres) {
            (Some(u), _) => u.clone(),
            (None, true) => pg
                .insert(PgDatabase::create("bbbq").await?)
                .url()
                .to_owned(),
            (None, false) => format!("sqlite://{}/queue.sqlite", dir.path().display()),
        };
        let token = random_token();
        let mut cfg = QueueConfig {
            listen: "127.0.0.1:0".into(),
            database_url: database_url.into(),
            database_max_connections: 10,
            amqp_url: opts.amqp_url.clone().map(Into::into),
            root_access_token: Some(token.clone().into()),
            claim_timeout_s: opts.claim_timeout_s.unwrap_or(1200),
            deadline_delay_s: 0,
            resolver_interval_ms: 100,
            blob_dir: dir.path().join("blobs"),
            ..QueueConfig::default()
        };
        if let Some(n) = opts.commit_batch {
            cfg.commit_batch = n;
        }
        if let Some(n) = opts.coalesce_limit {
            cfg.coalesce_limit = n;
        }
        cfg.auth.clients = opts.clients.clone();
        cfg.auth.roles = opts.roles.clone();
        if let Some(b) = &opts.blob {
            cfg.blob = b.clone();
        }
        if let Some(u) = &opts.source_url {
            cfg.source_url = u.clone();
        }
        let clock = Clock::system();
        let running = start_with(cfg, clock.clone(), mounts).await?;
        Ok(TestQueue {
            root_url: running.root_url.clone(),
            root_client_id: "root".into(),
            root_access_token: token,
            clock,
            running,
            _pg: pg,
            _dir: dir,
        })
    }

    /// The credentials `who` calls with: the root client's, a
    /// [`test_client`]'s, or none.
    pub fn credentials(&self, who: Who) -> Option<bbb_auth::Credentials> {
        let (client_id, access_token) = match who {
            Who::Root => (self.root_client_id.clone(), self.root_access_token.clone()),
            Who::Client(id) => (id.to_string(), test_token(id)),
            Who::Anonymous => return None,
        };
        Some(bbb_auth::Credentials {
            client_id,
            access_token,
            certificate: None,
        })
    }

    /// Shut the server down.
    pub async fn stop(self) {
        self.running.shutdown().await;
    }

    /// The fixture of [`bbb_testdb::on_both_backends!`]: runs `test` against
    /// a fresh queue on `backend`, then stops it.
    pub async fn on(backend: Backend, test: impl AsyncFnOnce(&TestQueue)) {
        let q = match backend {
            Backend::Sqlite => Self::sqlite().await,
            Backend::Postgres => Self::postgres().await,
        };
        test(&q).await;
        q.stop().await;
    }
}

/// The access token of a test client made by [`test_client`]: `<id>-token`.
pub fn test_token(client_id: &str) -> String {
    format!("{client_id}-token")
}

/// A permanent client `client_id` with `scopes`, whose access token is
/// [`test_token`] of its id: how tests give a queue the clients they call as.
pub fn test_client(client_id: &str, scopes: &[&str]) -> ClientConfig {
    ClientConfig {
        client_id: client_id.into(),
        access_token: test_token(client_id).into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        expires: None,
    }
}

/// Who a test calls as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// The queue's `root` client.
    Root,
    /// A client made by [`test_client`].
    Client(&'static str),
    /// No credentials.
    Anonymous,
}

/// Poll until a value comes (the one helper of [`bbb_testdb`]).
pub use bbb_testdb::wait_for;

impl TestQueue {
    /// Create the `s3` artifact `name` (expiring in an hour) of the running
    /// run `run_id` of `task_id` and upload `bytes` to the URL the queue hands
    /// out for it, as a worker does.
    pub async fn upload_s3(
        &self,
        task_id: &str,
        run_id: i64,
        name: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> anyhow::Result<()> {
        let q = &self.running.queue;
        let now = q.clock.now_ms();
        let body = serde_json::json!({
            "storageType": "s3",
            "contentType": content_type,
            "expires": crate::time::fmt_ms(now + 3600 * 1000),
        });
        q.create_artifact(task_id, run_id, name, &body).await?;
        let url = self.running.blobs.put_url(
            (task_id, run_id, name),
            content_type,
            now,
            now + crate::blob::PUT_URL_TTL_MS,
        );
        reqwest_tc::Client::new()
            .put(url)
            .header("content-type", content_type)
            .body(bytes.to_vec())
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}
