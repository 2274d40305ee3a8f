//! Wiring of the bridge's roles (TC listener, Buildbot listener, reflector)
//! from a [`BridgeConfig`], and the `/metrics` endpoint.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use bbb_bridge::payload::BuilderRules;
use bbb_bridge::{Bridge, BridgeConfig, BridgeSettings, BuildbotKind, Metrics, QueueClient};
use bbb_buildbot::sandbox::{SandboxConfig, SandboxMaster};
use bbb_buildbot::{
    BuilderSource, LegacyMaster, PollOptions, PulseOptions, RestAuth, RestMaster, RestMasterConfig,
    SchedulerDb, SchedulerDbConfig,
};
use bbb_listeners::bb_listener::{self, BbListenerSettings};
use bbb_listeners::tc_listener::{self, TcListenerSettings};
use bbb_pulse::Bus;
use bbb_reflector::{Reflector, ReflectorSettings};
use bbb_state::StateDb;
use tokio_util::sync::CancellationToken;

/// Which roles to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleSet {
    /// The TC listener.
    pub tc_listener: bool,
    /// The Buildbot listener.
    pub bb_listener: bool,
    /// The reflector.
    pub reflector: bool,
}

impl RoleSet {
    /// Every role.
    pub const ALL: RoleSet = RoleSet {
        tc_listener: true,
        bb_listener: true,
        reflector: true,
    };

    /// The TC listener alone (`bbb tc-listener`).
    pub fn only_tc_listener() -> RoleSet {
        RoleSet {
            tc_listener: true,
            bb_listener: false,
            reflector: false,
        }
    }

    /// The Buildbot listener alone (`bbb bb-listener`).
    pub fn only_bb_listener() -> RoleSet {
        RoleSet {
            tc_listener: false,
            bb_listener: true,
            reflector: false,
        }
    }

    /// The reflector alone (`bbb reflector`).
    pub fn only_reflector() -> RoleSet {
        RoleSet {
            tc_listener: false,
            bb_listener: false,
            reflector: true,
        }
    }
}

/// Builds the legacy master the configuration names. `sandbox` starts an
/// in-memory master with the default configuration (builders `linux.build`,
/// `linux.test`, `win.build` and `win.test`, master `sandbox-master`).
pub async fn legacy_master(cfg: &BridgeConfig, bus: &Bus) -> anyhow::Result<Arc<dyn LegacyMaster>> {
    let poll = PollOptions {
        interval: Duration::from_secs_f64(cfg.poll_interval_s.max(0.05)),
        lookback: Duration::from_secs(3600),
    };
    let pulse = |exchange: &str, name: &str| {
        let mut p = PulseOptions::new(bus.clone());
        p.exchange = exchange.to_owned();
        p.queue = format!("{}/{name}", cfg.queue_prefix.trim_end_matches('/'));
        p
    };
    Ok(match cfg.buildbot_kind {
        BuildbotKind::Schedulerdb => {
            let url = cfg
                .schedulerdb_url
                .clone()
                .context("BBB_SCHEDULERDB_URL is required with buildbot_kind = schedulerdb")?;
            let mut c = SchedulerDbConfig::new(url);
            c.builders = match (&cfg.builders_url, cfg.builders.is_empty()) {
                (Some(url), _) => BuilderSource::Url {
                    url: url.clone(),
                    refresh: Duration::from_secs(300),
                },
                (None, false) => BuilderSource::List(cfg.builders.clone()),
                (None, true) => BuilderSource::Any,
            };
            if !bus.is_in_process() {
                c.pulse = Some(pulse(&cfg.build_exchange, "buildbot-builds"));
            }
            c.poll = Some(poll);
            c.selfserve_url = cfg.selfserve_url.clone();
            c.selfserve_user = cfg.selfserve_user.clone();
            c.master_urls = cfg.master_urls.clone();
            c.default_master_url = cfg.default_master_url.clone();
            Arc::new(SchedulerDb::new(c)?)
        }
        BuildbotKind::Rest => {
            let url = cfg
                .buildbot_url
                .clone()
                .context("BBB_BUILDBOT_URL is required with buildbot_kind = rest")?;
            let mut c = RestMasterConfig::new(url);
            c.scheduler = cfg.buildbot_scheduler.clone();
            if let (Some(user), Some(password)) = (&cfg.buildbot_user, &cfg.buildbot_password) {
                c.auth = RestAuth::Basic {
                    user: user.clone(),
                    password: password.clone(),
                };
            }
            if !bus.is_in_process() {
                c.pulse = Some(pulse(&cfg.reporter_exchange, "buildbot-builds"));
            }
            c.poll = Some(poll);
            Arc::new(RestMaster::new(c)?)
        }
        BuildbotKind::Sandbox => Arc::new(SandboxMaster::start(SandboxConfig::default()).await),
    })
}

/// A running bridge: its shared context and its role tasks.
pub struct RunningBridge {
    /// Where `/metrics` listens, if it does.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Fires when a role stops on its own (an error it cannot recover from):
    /// the process should then exit, so its supervisor restarts it.
    pub failed: CancellationToken,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningBridge {
    /// Stops every role and waits for them.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Starts the chosen roles on `bus` with `master`.
pub async fn start(
    cfg: &BridgeConfig,
    roles: RoleSet,
    bus: Bus,
    master: Arc<dyn LegacyMaster>,
) -> anyhow::Result<RunningBridge> {
    cfg.validate().map_err(anyhow::Error::msg)?;
    let max = if cfg.state_database_url.expose().starts_with("sqlite:") {
        1
    } else {
        16
    };
    let state = StateDb::connect(cfg.state_database_url.expose(), max)
        .await
        .with_context(|| format!("mapping DB {}", cfg.state_database_url))?;
    state.migrate().await?;
    let mut settings =
        BridgeSettings::new(&cfg.task_queue_id, &cfg.master_name, &cfg.instance_name());
    settings.worker_group = cfg.worker_group.clone();
    settings.worker_id = cfg.worker_id.clone();
    settings.rules = BuilderRules::new(&cfg.restricted_builders, &cfg.ignored_builders)?;
    let queue = QueueClient::new(
        &cfg.queue_root_url,
        &cfg.queue_client_id,
        cfg.queue_access_token.expose(),
        &settings.worker_group,
        &settings.worker_id,
    )?;
    let metrics = Arc::new(Metrics::default());
    let bridge = Arc::new(Bridge::new(queue, state, master, settings, metrics));
    let cancel = CancellationToken::new();
    let failed = CancellationToken::new();
    let mut tasks = Vec::new();
    if roles.tc_listener {
        let settings = TcListenerSettings {
            exchange_prefix: cfg.exchange_prefix.clone(),
            queue_prefix: cfg.queue_prefix.clone(),
            ..TcListenerSettings::default()
        };
        // Subscribed before this function returns: nothing published after it is missed.
        let handle = tc_listener::start(bridge.clone(), bus.clone(), settings, cancel.clone())
            .await
            .context("TC listener: subscribing to the queue's exchanges")?;
        tasks.push(watch_role(
            "TC listener",
            handle,
            cancel.clone(),
            failed.clone(),
        ));
    }
    if roles.bb_listener {
        let handle = bb_listener::start(
            bridge.clone(),
            BbListenerSettings::default(),
            cancel.clone(),
        )
        .await
        .context("Buildbot listener: opening the master's event stream")?;
        tasks.push(watch_role(
            "Buildbot listener",
            handle,
            cancel.clone(),
            failed.clone(),
        ));
    }
    if roles.reflector {
        let settings = ReflectorSettings {
            interval: Duration::from_secs(cfg.reflector_interval_s.max(1)),
            reclaim_window: Duration::from_secs(cfg.reclaim_window_s),
            recheck_interval: Duration::from_secs(cfg.recheck_interval_s.max(1)),
            retention: Duration::from_secs(cfg.retention_days * 24 * 3600),
            ..ReflectorSettings::default()
        };
        let reflector = Arc::new(Reflector::new(bridge.clone(), settings));
        let (c, f) = (cancel.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let result = reflector.run(c.clone()).await;
            if !c.is_cancelled() {
                match result {
                    Err(e) => tracing::error!(error = %e, "reflector stopped"),
                    Ok(()) => tracing::error!("reflector stopped unexpectedly"),
                }
                f.cancel();
            }
        }));
    }
    tasks.push(tokio::spawn(write_health(bridge.clone(), cancel.clone())));
    let mut metrics_addr = None;
    if !cfg.metrics_listen.is_empty() {
        let listener = tokio::net::TcpListener::bind(&cfg.metrics_listen)
            .await
            .with_context(|| format!("metrics listener on {}", cfg.metrics_listen))?;
        metrics_addr = Some(listener.local_addr()?);
        let app = Router::new()
            .route("/metrics", get(metrics_handler))
            .with_state(bridge.clone());
        let c = cancel.clone();
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(c.cancelled_owned())
                .await;
        }));
    }
    tracing::info!(
        instance = %bridge.settings.instance,
        task_queue = %cfg.task_queue_id,
        master = ?cfg.buildbot_kind,
        state = %cfg.state_database_url,
        ?roles,
        "bridge started"
    );
    Ok(RunningBridge {
        metrics_addr,
        failed,
        cancel,
        tasks,
    })
}

/// How often a bridge process writes its health snapshot (its row of the
/// mapping database's `bridge_health`, read by the web UI's health page).
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(3);

/// Writes the process's health snapshot every [`HEALTH_INTERVAL`] until
/// `cancel`, and once more then; a failed write is logged and tried again
/// next time (the figures are informational: the bridge goes on).
async fn write_health(bridge: Arc<Bridge>, cancel: CancellationToken) {
    let started = bridge.now();
    let mut purge = true;
    loop {
        match bridge.write_health(started, purge).await {
            Ok(()) => purge = false,
            Err(e) => tracing::warn!(error = %e, "cannot write the bridge's health snapshot"),
        }
        if cancel.is_cancelled() {
            return;
        }
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(HEALTH_INTERVAL) => {}
        }
    }
}

/// Watches a role's task: if it ends while the bridge is not shutting down,
/// the role stopped on its own and `failed` fires.
fn watch_role(
    name: &'static str,
    handle: tokio::task::JoinHandle<()>,
    cancel: CancellationToken,
    failed: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let result = handle.await;
        if !cancel.is_cancelled() {
            match result {
                Err(e) => tracing::error!(error = %e, "{name} stopped"),
                Ok(()) => tracing::error!("{name} stopped unexpectedly"),
            }
            failed.cancel();
        }
    })
}

async fn metrics_handler(
    State(bridge): State<Arc<Bridge>>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let rows = match bridge.state.rows_by_state().await {
        Ok(rows) => rows
            .into_iter()
            .map(|(state, n)| (state.as_str().to_owned(), n))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot count mapping rows");
            bridge.metrics.error("metrics");
            vec![]
        }
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        bridge.metrics.render(&rows),
    )
}
