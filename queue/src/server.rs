//! Starting the queue: database, migrations, credentials, the HTTP listener, the
//! background resolvers and the event relay.

use crate::api::{self, Api};
use crate::blob::{BlobStore, LocalStore};
use crate::config::{BlobKind, DEFAULT_ANONYMOUS_SCOPES, QueueConfig};
use crate::core::{Queue, Signals};
use crate::db::{Backend, Db};
use crate::events::Events;
use crate::s3::S3Store;
use crate::time::{Clock, parse_ms};
use anyhow::Context;
use bbb_auth::{AuthConfig, Authenticator, Client, Role};
use bbb_pulse::Bus;
use sqlx::Row;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// The client id the queue issues task credentials with.
pub const ISSUER_CLIENT_ID: &str = "static/taskcluster/queue";

/// A random access token (URL-safe, 44 characters).
pub fn random_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut b = [0u8; 33];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Open the database and apply migrations.
pub async fn open_db(cfg: &QueueConfig) -> anyhow::Result<Db> {
    if let Some(path) = cfg.database_url.expose().strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        if let Some(parent) = std::path::Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
    }
    let db = Db::connect(cfg.database_url.expose(), cfg.database_max_connections)
        .await
        .with_context(|| format!("connecting to {}", cfg.database_url))?;
    db.migrate().await?;
    Ok(db)
}

/// The queue's own secret (issuer of task credentials, blob URL signing key),
/// created once per database so every process on it agrees.
async fn issuer_secret(db: &Db) -> anyhow::Result<String> {
    sqlx::query("INSERT INTO secrets (name, value) VALUES ('issuer', $1) ON CONFLICT DO NOTHING")
        .bind(random_token())
        .execute(&db.pool)
        .await?;
    let row = sqlx::query("SELECT value FROM secrets WHERE name = 'issuer'")
        .fetch_one(&db.pool)
        .await?;
    Ok(row.try_get("value")?)
}

/// Build the authenticator from the configuration plus the root and issuer clients.
pub fn authenticator(cfg: &QueueConfig, issuer_token: &str) -> anyhow::Result<Authenticator> {
    let mut clients = vec![Client::new(ISSUER_CLIENT_ID, issuer_token, ["*"])];
    if let Some(token) = &cfg.root_access_token {
        clients.push(Client::new("root", token.expose().clone(), ["*"]));
    }
    for c in &cfg.auth.clients {
        let mut client = Client::new(
            c.client_id.clone(),
            c.access_token.expose().clone(),
            c.scopes.clone(),
        );
        if let Some(e) = &c.expires {
            let ms = parse_ms(e)
                .with_context(|| format!("client {}: expires {e:?} is not a date", c.client_id))?;
            client = client.with_expires(crate::time::from_ms(ms));
        }
        clients.push(client);
    }
    let mut roles: Vec<Role> = cfg
        .auth
        .roles
        .iter()
        .map(|r| Role::new(r.role_id.clone(), r.scopes.clone()))
        .collect();
    if !roles.iter().any(|r| r.role_id == "anonymous") {
        roles.push(Role::new(
            "anonymous",
            DEFAULT_ANONYMOUS_SCOPES.iter().copied(),
        ));
    }
    Ok(Authenticator::new(AuthConfig { clients, roles })
        .map_err(|e| anyhow::anyhow!("auth configuration: {e}"))?
        .allow_unsigned_query(cfg.auth.allow_unsigned_query))
}

/// The blob store `cfg.blob` asks for (creating the bucket when configured to).
async fn blob_store(cfg: &QueueConfig, secret: &str, root_url: &str) -> anyhow::Result<BlobStore> {
    Ok(match cfg.blob.kind {
        BlobKind::Local => BlobStore::Local(LocalStore::new(
            cfg.blob_dir.clone(),
            secret.as_bytes(),
            root_url,
        )),
        BlobKind::S3 => {
            let store = S3Store::new(&cfg.blob)?;
            if cfg.blob.s3_create_bucket {
                store
                    .ensure_bucket()
                    .await
                    .map_err(|e| anyhow::anyhow!("blob store: {e}"))?;
            }
            tracing::info!(store = ?store, "s3 artifacts go to an S3-compatible store");
            BlobStore::S3(store)
        }
    })
}

/// A running queue.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its public root URL.
    pub root_url: String,
    /// The core, for in-process callers and tests.
    pub queue: Queue,
    /// The event bus it publishes on.
    pub bus: Bus,
    /// Where `s3` artifacts' bytes live.
    pub blobs: BlobStore,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stop serving and wait for background loops to finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// What a service served beside the queue gets from it: the queue itself (its
/// database, clock and configuration), where artifacts' bytes live, the
/// authenticator every service shares, the event bus, the public root URL and
/// the stop signal for its background loops.
#[derive(Clone)]
pub struct Shared {
    /// The queue, for in-process calls and its database.
    pub queue: Queue,
    /// Where `s3` artifacts' bytes live (for their download URLs).
    pub blobs: BlobStore,
    /// The authenticator all services on this listener share.
    pub auth: Arc<Authenticator>,
    /// The event bus the queue publishes on.
    pub bus: Bus,
    /// The public root URL of every service on this listener.
    pub root_url: String,
    /// Turns `true` when the process stops.
    pub stop: watch::Receiver<bool>,
}

/// A service mounted beside the queue: its routes (from
/// [`bbb_service::Service::routes_only`]) and its background loops, which
/// must end when [`Shared::stop`] turns `true`.
#[derive(Default)]
pub struct Mounted {
    /// The service's routes.
    pub routes: axum::Router,
    /// Its background loops, awaited on shutdown.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Builds a service to serve beside the queue once the queue's database, bus and
/// authenticator exist (e.g. after applying its own migrations).
pub type Mount =
    Box<dyn FnOnce(Shared) -> futures::future::BoxFuture<'static, anyhow::Result<Mounted>> + Send>;

/// Start the queue: serve the API on `cfg.listen` (port 0 picks a free port) and run
/// the background work. `clock` lets tests move time.
pub async fn start(cfg: QueueConfig, clock: Clock) -> anyhow::Result<Running> {
    start_with(cfg, clock, Vec::new()).await
}

/// [`start`], serving the services `mounts` build on the same listener and root
/// URL, as upstream serves every service under one root URL.
pub async fn start_with(
    cfg: QueueConfig,
    clock: Clock,
    mounts: Vec<Mount>,
) -> anyhow::Result<Running> {
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let mut cfg = cfg;
    if cfg.root_url.is_none() {
        cfg.root_url = Some(format!("http://{addr}"));
    }
    let root_url = cfg.root_url();
    let db = open_db(&cfg).await?;
    let secret = issuer_secret(&db).await?;
    let auth = authenticator(&cfg, &secret)?;
    let bus = Bus::connect(cfg.amqp_url.as_ref().map(bbb_secret::SecretUrl::expose))
        .await
        .map_err(|e| anyhow::anyhow!("event bus: {e}"))?;
    bus.declare_exchanges(&Events::new(&cfg.exchange_prefix).all_exchanges())
        .await
        .map_err(|e| anyhow::anyhow!("event bus: declaring the queue's exchanges: {e}"))?;
    let blobs = blob_store(&cfg, &secret, &root_url).await?;
    let queue = Queue {
        db: db.clone(),
        clock,
        events: Events::new(&cfg.exchange_prefix),
        cfg: Arc::new(cfg),
        signals: Arc::new(Signals::default()),
        issuer: Arc::new((ISSUER_CLIENT_ID.to_string(), secret)),
        batches: Arc::default(),
        feeds: Arc::default(),
    };
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(queue.clone().run_background(
        bus.clone(),
        blobs.clone(),
        stop_rx.clone(),
    )));
    if db.backend == Backend::Postgres {
        tasks.push(tokio::spawn(listen_for_pending(
            queue.clone(),
            stop_rx.clone(),
        )));
    }
    let auth = Arc::new(auth);
    let shared = Shared {
        queue: queue.clone(),
        blobs: blobs.clone(),
        auth: auth.clone(),
        bus: bus.clone(),
        root_url: root_url.clone(),
        stop: stop_rx.clone(),
    };
    let mut services = vec![
        api::service(
            Api {
                queue: queue.clone(),
                blobs: blobs.clone(),
            },
            auth,
        )
        .routes_only(),
    ];
    for mount in mounts {
        let mounted = mount(shared.clone()).await?;
        services.push(mounted.routes);
        tasks.extend(mounted.tasks);
    }
    let app = bbb_service::serve_together(services, queue.clock.clone());
    let mut srx = stop_rx.clone();
    tasks.push(tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = srx.changed().await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    }));
    tracing::info!(%addr, root_url = %root_url, "queue listening");
    Ok(Running {
        addr,
        root_url,
        queue,
        bus,
        blobs,
        stop,
        tasks,
    })
}

/// Wake local claimWork waiters when another process makes work pending
/// (PostgreSQL `LISTEN`). Reconnects on errors; claimWork also polls as a fallback.
async fn listen_for_pending(queue: Queue, mut stop: watch::Receiver<bool>) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect(&queue.db.url).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        if let Err(e) = listener.listen(crate::db::PENDING_CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            continue;
        }
        loop {
            tokio::select! {
                n = listener.recv() => match n {
                    Ok(n) => {
                        // "<instance>\n<new runs>\n<taskQueueId>"; our own commits woke us already.
                        let mut parts = n.payload().splitn(3, '\n');
                        let (from, count, tq) = (parts.next(), parts.next(), parts.next());
                        if let (Some(from), Some(count), Some(tq)) = (from, count, tq)
                            && from != queue.signals.instance
                        {
                            queue.signals.wake_queue(tq, count.parse().unwrap_or(usize::MAX));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                        break;
                    }
                },
                _ = stop.changed() => return,
            }
        }
    }
}
