//! `bbb-bench`: the benchmark programs, one subcommand each. They print figures
//! and ratios; see the crate README. A binary of its own, so the product binary
//! `bbb` links no benchmark or test-support code.

use bbb_bench::{bridge, queue};
use clap::{Parser, Subcommand};

/// mimalloc, as in the `bbb` binary: the queue benchmark runs the queue server
/// in this process, so it must allocate as the product does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "bbb-bench",
    version,
    about = "bbb's benchmark programs: run one and print its figures"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Queue lifecycle throughput beside raw commits, claimWork wake-up latency and
    /// the drain of a 10,000-task graph, on SQLite and PostgreSQL.
    Queue {
        /// Backends to measure (sqlite, postgres).
        #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
        backends: Vec<String>,
        /// Concurrent loops (workers, each creating, claiming and completing tasks).
        #[arg(long, default_value_t = 64)]
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
        /// Most concurrent calls the queue commits in one transaction.
        #[arg(long, default_value_t = 64)]
        commit_batch: usize,
        /// Skip the lifecycle measurement with one transaction per call.
        #[arg(long)]
        no_compare: bool,
    },
    /// The bridge: task-pending → build-request-injected latency at rising task
    /// rates, and reflector passes over running rows.
    Bridge {
        /// Legacy master: schedulerdb (MariaDB, a fresh database) or sandbox (in memory).
        #[arg(long, default_value = "schedulerdb")]
        master: String,
        /// MariaDB server for the scheduler DB.
        #[arg(
            long,
            env = "BBB_TEST_MYSQL_URL",
            default_value = "mysql://root@127.0.0.1:3306/test"
        )]
        mysql_url: String,
        /// Mapping DB: a postgres:// server URL (a fresh database is made); default SQLite.
        #[arg(long)]
        state_db: Option<String>,
        /// Offered task rates per step (tasks/s).
        #[arg(long, value_delimiter = ',', default_value = "50,100,200,400")]
        rates: Vec<u32>,
        /// Tasks per rate step.
        #[arg(long, default_value_t = 1000)]
        tasks: usize,
        /// Running rows for the reflector passes (0 skips them).
        #[arg(long, default_value_t = 10_000)]
        rows: usize,
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
    let command = Cli::parse().command;
    // Ctrl-C ends the run by dropping it, so what it created (databases,
    // directories) is removed as on an error.
    tokio::select! {
        result = run(command) => result,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
    }
}

/// Runs one benchmark.
async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Queue {
            backends,
            concurrency,
            seconds,
            wake_samples,
            no_graph,
            commit_batch,
            no_compare,
        } => {
            let opts = queue::Options {
                backends,
                concurrency,
                seconds,
                wake_samples,
                graph: !no_graph,
                commit_batch,
                compare_unbatched: !no_compare,
            };
            queue::run(opts).await?;
        }
        Command::Bridge {
            master,
            mysql_url,
            state_db,
            rates,
            tasks,
            rows,
        } => {
            let opts = bridge::Options {
                master: match master.as_str() {
                    "schedulerdb" => bridge::MasterKind::SchedulerDb,
                    "sandbox" => bridge::MasterKind::Sandbox,
                    other => anyhow::bail!("--master {other:?}: expected schedulerdb or sandbox"),
                },
                mysql_url,
                state_db,
                rates,
                tasks_per_rate: tasks,
                reflector_rows: rows,
                ..bridge::Options::default()
            };
            bridge::run(opts).await?;
        }
    }
    Ok(())
}
