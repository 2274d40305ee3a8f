//! The command line: every command, its flags and their types.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config;

/// `bbb [--config FILE] <command>`.
#[derive(Parser)]
#[command(
    name = "bbb",
    version,
    about = "bbb: a TaskCluster-compatible queue, native workers and a Buildbot bridge"
)]
pub struct Cli {
    /// TOML configuration file (sections `[queue]`, `[auth]`, `[worker]`, `[bridge]`).
    #[arg(long, global = true, env = "BBB_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands; each is run by the module of the same name in `commands/`.
#[derive(Subcommand)]
pub enum Command {
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
    #[command(after_help = bbb_bridge::BridgeConfig::ENV_HELP)]
    Bridge,
    /// Run the bridge's TC listener alone (task-pending / task-exception -> build requests).
    #[command(after_help = bbb_bridge::BridgeConfig::ENV_HELP)]
    TcListener,
    /// Run the bridge's Buildbot listener alone (build events -> claims and resolutions).
    #[command(after_help = bbb_bridge::BridgeConfig::ENV_HELP)]
    BbListener,
    /// Run the bridge's reflector alone (periodic reclaims and repairs).
    #[command(after_help = bbb_bridge::BridgeConfig::ENV_HELP)]
    Reflector,
    /// Apply database migrations and exit: the bridge's mapping database when
    /// BBB_STATE_DATABASE_URL (or [bridge] state_database_url) is set, and the queue's
    /// database when it is configured or the mapping database is not.
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

/// `bbb bench <program>`.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Queue lifecycle throughput beside raw commits, claimWork wake-up latency and
    /// the drain of a 10,000-task graph, on SQLite and PostgreSQL.
    Queue {
        /// Backends to measure.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "sqlite,postgres"
        )]
        backends: Vec<Backend>,
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
        /// Legacy master.
        #[arg(long, value_enum, default_value = "schedulerdb")]
        master: BenchMaster,
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

/// A database the queue benchmark measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A fresh database on the PostgreSQL server of `BBB_TEST_PG_URL`.
    Postgres,
}

impl Backend {
    /// The name the benchmark prints and takes.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The legacy master the bridge benchmark injects into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchMaster {
    /// A fresh Buildbot 0.8 scheduler database on MariaDB.
    #[value(name = "schedulerdb")]
    SchedulerDb,
    /// The in-memory sandbox master.
    Sandbox,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn typed_values_refuse_unknown_names() {
        let parsed = Cli::try_parse_from(["bbb", "bench", "bridge", "--master", "sandbox"]);
        assert!(matches!(
            parsed.map(|c| c.command),
            Ok(Command::Bench(BenchCommand::Bridge {
                master: BenchMaster::Sandbox,
                ..
            }))
        ));
        assert!(Cli::try_parse_from(["bbb", "bench", "bridge", "--master", "nope"]).is_err());
        assert!(Cli::try_parse_from(["bbb", "bench", "queue", "--backends", "oracle"]).is_err());
    }
}
