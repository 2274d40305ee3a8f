#![doc = include_str!("../README.md")]

mod chart;
mod csrf;
mod layout;
mod origins;
mod pages;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bbb_auth::Authenticator;
use bbb_hooks::client::HawkClient;
use bbb_login::Login;
use bbb_queue::blob::BlobStore;
use bbb_queue::{Mount, Mounted, Queue, Shared};
use bbb_secret::SecretUrl;
use bbb_state::StateDb;

pub use layout::STYLESHEET;
pub use origins::{LiveLogOrigins, WebSection, configured_origin, origin_of};
pub use pages::groups::PAGE_SIZE;

/// What the pages read besides the queue's database.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// The bridge's mapping database (the `[bridge]` section's
    /// `state_database_url`), where every bridge process writes its health
    /// snapshot: the health page's legacy masters. `None`: no bridge shown.
    pub bridge_state_url: Option<SecretUrl>,
    /// How many revisions the dashboard's figures cover unless a page's
    /// `revisions` says otherwise (the `[migration]` section's `revisions`).
    pub revisions: i64,
    /// The origins whose live logs the task pages stream through (the
    /// `[web]` section's `live_log_origins`, plus the live-log server of a
    /// native worker in the same process); a live log anywhere else is not
    /// fetched.
    pub live_log_origins: LiveLogOrigins,
}

impl Default for WebConfig {
    /// No bridge, the default window, no live log read.
    fn default() -> Self {
        WebConfig {
            bridge_state_url: None,
            revisions: bbb_migration::DEFAULT_REVISIONS,
            live_log_origins: LiveLogOrigins::none(),
        }
    }
}

/// What every page handler gets.
#[derive(Clone)]
pub(crate) struct Web {
    /// The queue, for in-process reads and its database.
    pub queue: Queue,
    /// Where `s3` artifacts' bytes live (to read `actions.json` and logs).
    pub blobs: BlobStore,
    /// The authenticator the services share (to expand a decision task's
    /// scopes, as Treeherder asks the auth service to).
    pub auth: Arc<Authenticator>,
    /// The public root URL of the services.
    pub root_url: String,
    /// Who is signed in.
    pub login: Login,
    /// For the calls made with a user's credentials (Hawk-signed).
    pub hawk: HawkClient,
    /// For unsigned reads of artifacts and stored logs.
    pub http: reqwest::Client,
    /// For reads of workers' live logs: redirects are followed only to
    /// allowed origins ([`WebConfig::live_log_origins`]).
    pub live_http: reqwest::Client,
    /// The CI service's tables (in the queue's database).
    pub ci: bbb_ci::store::Store,
    /// The bridge's mapping database, opened on first use.
    pub bridge_state: Arc<BridgeState>,
    /// The configuration.
    pub cfg: Arc<WebConfig>,
}

/// The bridge's mapping database, opened when a page first needs it (and
/// again after a failure), so the web UI starts whether or not a bridge
/// ever ran.
pub(crate) struct BridgeState {
    url: Option<SecretUrl>,
    db: tokio::sync::Mutex<Option<StateDb>>,
}

impl BridgeState {
    /// The database, `Ok(None)` when none is configured or (SQLite) its
    /// file does not exist yet: no bridge has run.
    pub async fn db(&self) -> Result<Option<StateDb>, String> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        let mut db = self.db.lock().await;
        if let Some(db) = &*db {
            return Ok(Some(db.clone()));
        }
        let raw = url.expose();
        if let Some(path) = raw
            .strip_prefix("sqlite://")
            .or(raw.strip_prefix("sqlite:"))
        {
            let file = path.split('?').next().unwrap_or_default();
            if !Path::new(file).exists() {
                return Ok(None);
            }
        }
        let opened = StateDb::connect(raw, 2)
            .await
            .map_err(|e| format!("the bridge's mapping database {url}: {e}"))?;
        *db = Some(opened.clone());
        Ok(Some(opened))
    }
}

/// Database statements the pages have made in this process: each read a page
/// makes counts one (see [`queries`]).
static QUERIES: AtomicU64 = AtomicU64::new(0);

/// How many database statements the pages of this process have made so far
/// (what the benchmark divides by the pages it loaded).
pub fn queries() -> u64 {
    QUERIES.load(Ordering::Relaxed)
}

/// Count `n` statements made by a page.
pub(crate) fn counted(n: u64) {
    QUERIES.fetch_add(n, Ordering::Relaxed);
}

/// The web UI, to serve beside the queue at the root URL.
pub fn mount(login: Login) -> Mount {
    mount_with(login, WebConfig::default())
}

/// The web UI with `cfg`, to serve beside the queue at the root URL (after
/// the CI service and the migration record, whose tables it reads).
pub fn mount_with(login: Login, cfg: WebConfig) -> Mount {
    Box::new(move |shared: Shared| {
        Box::pin(async move {
            login.attach(&shared);
            let http = reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .build()?;
            let allowed = cfg.live_log_origins.clone();
            let live_http = reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                    if attempt.previous().len() >= 10 {
                        attempt.error("too many redirects")
                    } else if allowed.allows(attempt.url().as_str()) {
                        attempt.follow()
                    } else {
                        attempt.stop()
                    }
                }))
                .build()?;
            let web = Web {
                hawk: HawkClient::new(&shared.root_url, shared.queue.clock.clone()),
                ci: bbb_ci::store::Store::new(
                    shared.queue.db.pool.clone(),
                    shared.queue.db.backend,
                ),
                queue: shared.queue.clone(),
                blobs: shared.blobs.clone(),
                auth: shared.auth.clone(),
                root_url: shared.root_url.clone(),
                login,
                http,
                live_http,
                bridge_state: Arc::new(BridgeState {
                    url: cfg.bridge_state_url.clone(),
                    db: tokio::sync::Mutex::new(None),
                }),
                cfg: Arc::new(cfg),
            };
            Ok(Mounted {
                routes: pages::routes(web),
                tasks: Vec::new(),
            })
        })
    })
}
