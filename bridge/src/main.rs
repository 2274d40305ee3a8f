//! The `bbb` binary: one subcommand per role. Logic lives in the library crates;
//! this file only parses the command line and wires them together.

mod config;
mod demo;
mod roles;

use anyhow::Context;
use bbb_secret::SecretUrl;
use clap::{Parser, Subcommand};
use config::FileConfig;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// mimalloc instead of the system allocator: the queue's request path allocates
/// many small, short-lived objects from several threads, where glibc's malloc
/// spent a sixth of the CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "bbb",
    version,
    about = "bbb: a TaskCluster-compatible queue, native workers and a Buildbot bridge"
)]
struct Cli {
    /// TOML configuration file (sections [queue], [auth], [worker], [bridge]).
    #[arg(long, global = true, env = "BBB_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything in one process on embedded defaults: the queue on SQLite with the
    /// in-process bus, and a native worker on the task queue `bbb/native`.
    #[command(after_help = config::UP_HELP)]
    Up {
        /// Directory for the database, artifacts, task directories and the root token.
        #[arg(long, default_value = "bbb-data", env = "BBB_DATA_DIR")]
        data_dir: PathBuf,
        /// Do not submit the demo bridged task.
        #[arg(long)]
        no_demo: bool,
    },
    /// Run the native queue (HTTP API, resolvers, event relay).
    #[command(after_help = bbb_queue::config::ENV_HELP)]
    Queue,
    /// Run a native worker against a queue.
    #[command(after_help = bbb_workers::WorkerConfig::ENV_HELP)]
    Worker,
    /// Run the bridge: TC listener, Buildbot listener and reflector.
    #[command(after_help = bbb_listeners::BridgeConfig::ENV_HELP)]
    Bridge,
    /// Run the bridge's TC listener alone (task-pending / task-exception -> build requests).
    #[command(after_help = bbb_listeners::BridgeConfig::ENV_HELP)]
    TcListener,
    /// Run the bridge's Buildbot listener alone (build events -> claims and resolutions).
    #[command(after_help = bbb_listeners::BridgeConfig::ENV_HELP)]
    BbListener,
    /// Run the bridge's reflector alone (periodic reclaims and repairs).
    #[command(after_help = bbb_listeners::BridgeConfig::ENV_HELP)]
    Reflector,
    /// Apply database migrations and exit: the bridge's mapping database when
    /// BBB_STATE_DATABASE_URL (or [bridge] state_database_url) is set, and the queue's
    /// database when it is configured or the mapping database is not.
    #[command(after_help = bbb_queue::config::ENV_HELP)]
    Migrate,
    /// Show the effective configuration.
    Config {
        /// Print it (secrets masked).
        #[arg(long)]
        print: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BBB_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let file = FileConfig::load(cli.config.as_deref())?;
    match cli.command {
        Command::Queue => {
            let cfg = file.queue_config()?;
            let running = bbb_queue::start(cfg, bbb_queue::Clock::system()).await?;
            println!("bbb queue listening on {}", running.root_url);
            shutdown_signal().await;
            running.shutdown().await;
        }
        Command::Migrate => {
            let queue_configured = std::env::var_os("BBB_DATABASE_URL").is_some()
                || file
                    .queue
                    .as_ref()
                    .is_some_and(|q| q.get("database_url").is_some());
            // On a bridge-only host, only the mapping DB is migrated.
            if queue_configured || !file.bridge_state_configured() {
                let cfg = file.queue_config()?;
                bbb_queue::server::open_db(&cfg).await?;
                println!("migrations applied to {}", cfg.database_url);
            }
            if file.bridge_state_configured() {
                let bcfg = file.bridge_config()?;
                let state =
                    bbb_state::StateDb::connect(bcfg.state_database_url.expose(), 1).await?;
                state.migrate().await?;
                println!("migrations applied to {}", bcfg.state_database_url);
            }
        }
        Command::Bridge => run_roles(&file, roles::RoleSet::ALL).await?,
        Command::TcListener => {
            let set = roles::RoleSet {
                tc_listener: true,
                bb_listener: false,
                reflector: false,
            };
            run_roles(&file, set).await?
        }
        Command::BbListener => {
            let set = roles::RoleSet {
                tc_listener: false,
                bb_listener: true,
                reflector: false,
            };
            run_roles(&file, set).await?
        }
        Command::Reflector => {
            let set = roles::RoleSet {
                tc_listener: false,
                bb_listener: false,
                reflector: true,
            };
            run_roles(&file, set).await?
        }
        Command::Worker => {
            let cfg = file.worker_config()?;
            let worker = bbb_workers::Worker::new(cfg).await?;
            let stop = CancellationToken::new();
            let s = stop.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                s.cancel();
            });
            worker.run(stop).await?;
        }
        Command::Up { data_dir, no_demo } => up(file, data_dir, !no_demo).await?,
        Command::Config { print } => {
            // Secrets print themselves masked (bbb_secret).
            let printable = config::Printable {
                queue: file.queue_config()?,
                worker: file.worker_config_unchecked()?,
                bridge: file.bridge_config()?,
            };
            if print {
                println!("{}", toml::to_string_pretty(&printable)?);
            }
        }
    }
    Ok(())
}

/// `bbb bridge` and its single-role variants, until SIGINT/SIGTERM.
async fn run_roles(file: &FileConfig, set: roles::RoleSet) -> anyhow::Result<()> {
    let cfg = file.bridge_config()?;
    cfg.validate().map_err(anyhow::Error::msg)?;
    if cfg.amqp_url.is_none() && cfg.buildbot_kind != bbb_listeners::BuildbotKind::Sandbox {
        anyhow::bail!(
            "BBB_AMQP_URL is required: the bridge reads the queue's Pulse exchanges \
             (and the masters' build events) from the broker"
        );
    }
    let bus = bbb_pulse::Bus::connect(cfg.amqp_url.as_ref().map(SecretUrl::expose)).await?;
    let master = roles::legacy_master(&cfg, &bus, None).await?;
    let running = roles::start(&cfg, set, bus.clone(), master).await?;
    if let Some(addr) = running.metrics_addr {
        println!("bbb bridge running; metrics on http://{addr}/metrics");
    }
    let failed = running.failed.clone();
    let role_failed = tokio::select! {
        _ = shutdown_signal() => false,
        _ = failed.cancelled() => true,
    };
    running.shutdown().await;
    bus.close().await;
    if role_failed {
        anyhow::bail!("a bridge role stopped; exiting so the supervisor restarts the process");
    }
    Ok(())
}

/// `bbb up`: the queue, one native worker and the bridge on a sandbox master,
/// in this process.
async fn up(file: FileConfig, data_dir: PathBuf, demo: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let mut qcfg = file.queue_config()?;
    if std::env::var_os("BBB_DATABASE_URL").is_none()
        && file
            .queue
            .as_ref()
            .is_none_or(|q| q.get("database_url").is_none())
    {
        qcfg.database_url = format!("sqlite://{}", data_dir.join("queue.sqlite").display()).into();
    }
    if file
        .queue
        .as_ref()
        .is_none_or(|q| q.get("blob_dir").is_none())
    {
        qcfg.blob_dir = data_dir.join("artifacts");
    }
    // Shown in the banner below: the user needs it.
    let token = match &qcfg.root_access_token {
        Some(t) => t.expose().clone(),
        None => {
            let path = data_dir.join("root-access-token");
            match std::fs::read_to_string(&path) {
                Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
                _ => {
                    let t = bbb_queue::server::random_token();
                    std::fs::write(&path, &t)?;
                    t
                }
            }
        }
    };
    qcfg.root_access_token = Some(token.clone().into());
    let running = bbb_queue::start(qcfg, bbb_queue::Clock::system()).await?;

    let mut wcfg = file.worker_config_unchecked()?;
    wcfg.root_url = running.root_url.clone();
    wcfg.client_id = "root".into();
    wcfg.access_token = token.clone().into();
    if wcfg.task_queue_id.is_empty() {
        wcfg.task_queue_id = "bbb/native".into();
    }
    wcfg.tasks_dir = data_dir.join("tasks");
    let worker = bbb_workers::Worker::new(wcfg.clone()).await?;
    let stop = CancellationToken::new();
    let worker_task = tokio::spawn(worker.run(stop.clone()));

    let mut bcfg = file.bridge_config()?;
    bcfg.queue_root_url = running.root_url.clone();
    bcfg.queue_client_id = "root".into();
    bcfg.queue_access_token = token.clone().into();
    if !file.bridge_state_configured() {
        bcfg.state_database_url = format!(
            "sqlite://{}",
            data_dir.join("bridge-state.sqlite").display()
        )
        .into();
    }
    if file
        .bridge
        .as_ref()
        .is_none_or(|b| b.get("buildbot_kind").is_none())
        && std::env::var_os("BBB_BUILDBOT_KIND").is_none()
    {
        bcfg.buildbot_kind = bbb_listeners::BuildbotKind::Sandbox;
    }
    if std::env::var_os("BBB_METRICS_LISTEN").is_none()
        && file
            .bridge
            .as_ref()
            .is_none_or(|b| b.get("metrics_listen").is_none())
    {
        bcfg.metrics_listen = "127.0.0.1:0".into();
    }
    let master = roles::legacy_master(&bcfg, &running.bus, None).await?;
    let bridge = roles::start(&bcfg, roles::RoleSet::ALL, running.bus.clone(), master).await?;

    println!("bbb is up.");
    println!("  root URL:        {}", running.root_url);
    println!("  client id:       root");
    println!("  access token:    {token}");
    println!(
        "  native worker:   task queue {} (worker {}/{})",
        wcfg.task_queue_id, wcfg.worker_group, wcfg.worker_id
    );
    println!(
        "  bridge:          task queue {} -> {:?} master (metrics: {})",
        bcfg.task_queue_id,
        bcfg.buildbot_kind,
        bridge
            .metrics_addr
            .map(|a| format!("http://{a}/metrics"))
            .unwrap_or_else(|| "off".into())
    );
    println!("  data directory:  {}", data_dir.display());
    println!();
    println!(
        "  export TASKCLUSTER_ROOT_URL={} TASKCLUSTER_CLIENT_ID=root TASKCLUSTER_ACCESS_TOKEN={token}",
        running.root_url
    );
    println!("Stop with Ctrl-C.");
    let demo_task = demo.then(|| {
        tokio::spawn(demo::bridged_task(
            running.root_url.clone(),
            token.clone(),
            bcfg.task_queue_id.clone(),
        ))
    });
    let failed = bridge.failed.clone();
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = failed.cancelled() => tracing::error!("a bridge role stopped; shutting down"),
    }
    if let Some(t) = demo_task {
        t.abort();
    }
    bridge.shutdown().await;
    stop.cancel();
    match worker_task.await {
        Ok(Err(e)) => tracing::error!(error = %e, "worker stopped with an error"),
        Err(e) => tracing::error!(error = %e, "worker task failed"),
        Ok(Ok(())) => {}
    }
    running.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
