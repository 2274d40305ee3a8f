//! An in-process queue for tests of this crate and of its clients (workers, bridge):
//! a real server on a free loopback port, on SQLite or on a fresh PostgreSQL database.

use crate::config::{BlobConfig, ClientConfig, QueueConfig};
use crate::server::{Running, random_token, start};
use crate::time::Clock;

/// A running queue for one test. Dropping it leaves the database behind; call
/// [`TestQueue::stop`] to shut it down cleanly.
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
    _dir: TempDir,
}

/// A directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// A fresh empty directory under the system temp dir.
    pub fn new(prefix: &str) -> Self {
        let p = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub use bbb_sqlstore::test_pg_url;

/// Create a fresh, empty PostgreSQL database and return its URL.
pub async fn fresh_pg_database(prefix: &str) -> anyhow::Result<String> {
    Ok(bbb_sqlstore::fresh_pg_database(prefix).await?)
}

/// Options for [`TestQueue::with`].
#[derive(Clone, Debug, Default)]
pub struct TestOptions {
    /// Use PostgreSQL (a fresh database) instead of SQLite.
    pub postgres: bool,
    /// An existing database URL to use instead (for several queues on one database).
    pub database_url: Option<String>,
    /// AMQP URL for events.
    pub amqp_url: Option<String>,
    /// Claim timeout in seconds (default 1200).
    pub claim_timeout_s: Option<u64>,
    /// Most calls per transaction (default: the queue's default, 64).
    pub commit_batch: Option<usize>,
    /// Extra clients.
    pub clients: Vec<ClientConfig>,
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
        let dir = TempDir::new("bbb-queue-test");
        let database_url = match (&opts.database_url, opts.postgres) {
            (Some(u), _) => u.clone(),
            (None, true) => fresh_pg_database("bbbq").await?,
            (None, false) => format!("sqlite://{}/queue.sqlite", dir.0.display()),
        };
        let token = random_token();
        let mut cfg = QueueConfig {
            listen: "127.0.0.1:0".into(),
            database_url,
            database_max_connections: 10,
            amqp_url: opts.amqp_url.clone(),
            root_access_token: Some(token.clone()),
            claim_timeout_s: opts.claim_timeout_s.unwrap_or(1200),
            deadline_delay_s: 0,
            resolver_interval_ms: 100,
            blob_dir: dir.0.join("blobs"),
            ..QueueConfig::default()
        };
        if let Some(n) = opts.commit_batch {
            cfg.commit_batch = n;
        }
        cfg.auth.clients = opts.clients.clone();
        if let Some(b) = &opts.blob {
            cfg.blob = b.clone();
        }
        if let Some(u) = &opts.source_url {
            cfg.source_url = u.clone();
        }
        let clock = Clock::system();
        let running = start(cfg, clock.clone()).await?;
        Ok(TestQueue {
            root_url: running.root_url.clone(),
            root_client_id: "root".into(),
            root_access_token: token,
            clock,
            running,
            _dir: dir,
        })
    }

    /// Shut the server down.
    pub async fn stop(self) {
        self.running.shutdown().await;
    }
}

/// Run one async test body, `async fn name(q: &TestQueue)`, against SQLite and
/// against PostgreSQL: `both_backends!(name, other_name);` makes the tests
/// `name::sqlite` and `name::postgres`, each on a fresh [`TestQueue`].
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let q = $crate::testing::TestQueue::sqlite().await;
                super::$name(&q).await;
                q.stop().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let q = $crate::testing::TestQueue::postgres().await;
                super::$name(&q).await;
                q.stop().await;
            }
        }
    )*};
}
