//! The `bbb` binary: one subcommand per role. Logic lives in the library crates;
//! this file only parses the command line and wires them together.

mod config;

use anyhow::Context;
use clap::{Parser, Subcommand};
use config::FileConfig;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "bbb",
    version,
    about = "bbb: a TaskCluster-compatible queue, native workers and a Buildbot bridge"
)]
struct Cli {
    /// TOML configuration file (sections [queue], [auth], [worker]).
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
    },
    /// Run the native queue (HTTP API, resolvers, event relay).
    #[command(after_help = bbb_queue::config::ENV_HELP)]
    Queue,
    /// Run a native worker against a queue.
    #[command(after_help = bbb_workers::WorkerConfig::ENV_HELP)]
    Worker,
    /// Apply database migrations and exit.
    #[command(after_help = bbb_queue::config::ENV_HELP)]
    Migrate,
    /// Run a benchmark program and print its figures.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Show the effective configuration.
    Config {
        /// Print it (secrets masked).
        #[arg(long)]
        print: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Queue lifecycle throughput beside raw commits, claimWork wake-up latency and
    /// the drain of a 10,000-task graph, on SQLite and PostgreSQL.
    Queue {
        /// Backends to measure (sqlite, postgres).
        #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
        backends: Vec<String>,
        /// Concurrent loops.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Seconds per throughput measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Wake-up latency samples.
        #[arg(long, default_value_t = 200)]
        wake_samples: usize,
        /// Skip the 10,000-task graph.
        #[arg(long)]
        no_graph: bool,
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
            let cfg = file.queue_config()?;
            bbb_queue::server::open_db(&cfg).await?;
            println!(
                "migrations applied to {}",
                bbb_queue::db::mask_url(&cfg.database_url)
            );
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
        Command::Up { data_dir } => up(file, data_dir).await?,
        Command::Bench(BenchCommand::Queue {
            backends,
            concurrency,
            seconds,
            wake_samples,
            no_graph,
        }) => {
            let opts = bbb_bench::queue::Options {
                backends,
                concurrency,
                seconds,
                wake_samples,
                graph: !no_graph,
            };
            bbb_bench::queue::run(opts).await?;
        }
        Command::Config { print } => {
            let q = file.queue_config()?.masked();
            let mut w = file.worker_config_unchecked()?;
            if !w.access_token.is_empty() {
                w.access_token = "***".into();
            }
            if print {
                println!(
                    "{}",
                    toml::to_string_pretty(&config::Printable {
                        queue: q,
                        worker: w
                    })?
                );
            }
        }
    }
    Ok(())
}

/// `bbb up`: the queue and one worker in this process.
async fn up(file: FileConfig, data_dir: PathBuf) -> anyhow::Result<()> {
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
        qcfg.database_url = format!("sqlite://{}", data_dir.join("queue.sqlite").display());
    }
    if file
        .queue
        .as_ref()
        .is_none_or(|q| q.get("blob_dir").is_none())
    {
        qcfg.blob_dir = data_dir.join("artifacts");
    }
    let token = match &qcfg.root_access_token {
        Some(t) => t.clone(),
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
    qcfg.root_access_token = Some(token.clone());
    let running = bbb_queue::start(qcfg, bbb_queue::Clock::system()).await?;

    let mut wcfg = file.worker_config_unchecked()?;
    wcfg.root_url = running.root_url.clone();
    wcfg.client_id = "root".into();
    wcfg.access_token = token.clone();
    if wcfg.task_queue_id.is_empty() {
        wcfg.task_queue_id = "bbb/native".into();
    }
    wcfg.tasks_dir = data_dir.join("tasks");
    let worker = bbb_workers::Worker::new(wcfg.clone()).await?;
    let stop = CancellationToken::new();
    let worker_task = tokio::spawn(worker.run(stop.clone()));

    println!("bbb is up.");
    println!("  root URL:        {}", running.root_url);
    println!("  client id:       root");
    println!("  access token:    {token}");
    println!(
        "  native worker:   task queue {} (worker {}/{})",
        wcfg.task_queue_id, wcfg.worker_group, wcfg.worker_id
    );
    println!("  data directory:  {}", data_dir.display());
    println!();
    println!(
        "  export TASKCLUSTER_ROOT_URL={} TASKCLUSTER_CLIENT_ID=root TASKCLUSTER_ACCESS_TOKEN={token}",
        running.root_url
    );
    println!("Stop with Ctrl-C.");
    shutdown_signal().await;
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
