//! `bbb-bench`: the benchmark programs, one subcommand each. They print figures
//! and ratios; see the crate README. A binary of its own, so the product binary
//! `bbb` links no benchmark or test-support code.

use bbb_bench::{bridge, ci, hooks, index, queue, web_dashboard, web_group};
use clap::{Parser, Subcommand, ValueEnum};

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

/// The benchmark programs.
#[derive(Subcommand)]
enum Command {
    /// Queue lifecycle throughput beside raw commits, claimWork wake-up latency and
    /// the drain of a 10,000-task graph, on SQLite and PostgreSQL.
    Queue {
        #[command(flatten)]
        backends: Backends,
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
    /// The index: entries made per second from completed tasks' index routes
    /// beside the queue's completion rate in the same run, on PostgreSQL.
    Index {
        /// Concurrent loops (each creating, claiming and completing tasks).
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Seconds the loops run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Index routes per task (each makes one entry).
        #[arg(long, default_value_t = 1)]
        routes: usize,
        /// Most concurrent calls the queue commits in one transaction.
        #[arg(long, default_value_t = 64)]
        commit_batch: usize,
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
    /// The CI service: push webhook to decision task latency, one push at a
    /// time, and pushes per second decided in a burst on several branches, on
    /// SQLite and PostgreSQL.
    Ci {
        #[command(flatten)]
        backends: Backends,
        /// Pushes delivered one at a time (the latency figures).
        #[arg(long, default_value_t = 100)]
        sequential: usize,
        /// Pushes delivered in a burst (the throughput figure).
        #[arg(long, default_value_t = 200)]
        burst: usize,
        /// Branches the burst is spread over.
        #[arg(long, default_value_t = 4)]
        branches: usize,
    },
    /// The hooks service: triggerHook latency (template rendered, task created
    /// through the queue's API, firing recorded) and how late scheduled hooks
    /// fire, on SQLite and PostgreSQL.
    Hooks {
        #[command(flatten)]
        backends: Backends,
        /// triggerHook calls measured.
        #[arg(long, default_value_t = 1000)]
        triggers: usize,
        /// Concurrent triggerHook callers.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Hooks scheduled every second.
        #[arg(long, default_value_t = 10)]
        cron_hooks: usize,
        /// Seconds the scheduled hooks run.
        #[arg(long, default_value_t = 10)]
        cron_seconds: u64,
    },
    /// The web UI's task-group inspector on a 10,000-task group: each kind
    /// of page served p50/p99 and its cost on the database (statements per
    /// page; rows of the tasks table read, on PostgreSQL).
    WebGroup {
        #[command(flatten)]
        backends: Backends,
        /// Page loads measured per kind of page.
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    /// The web UI: the migration dashboard, a branch's page and the health
    /// page served p50/p99 over a realistic record, and the SQL statements
    /// each page runs, on SQLite and PostgreSQL.
    WebDashboard {
        #[command(flatten)]
        backends: Backends,
        /// Branches in the record.
        #[arg(long, default_value_t = 20)]
        branches: usize,
        /// Jobs per branch.
        #[arg(long, default_value_t = 200)]
        jobs: usize,
        /// Revisions per branch.
        #[arg(long, default_value_t = 50)]
        revisions: usize,
        /// The window of the dashboard's figures (revisions).
        #[arg(long, default_value_t = 10)]
        window: i64,
        /// Loads of each page measured.
        #[arg(long, default_value_t = 50)]
        loads: usize,
    },
}

/// The databases a benchmark measures.
#[derive(clap::Args)]
struct Backends {
    /// Backends to measure.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "sqlite,postgres"
    )]
    backends: Vec<Backend>,
}

impl Backends {
    /// Their names, as the benchmarks take them.
    fn names(&self) -> Vec<String> {
        self.backends.iter().map(|b| b.name().to_owned()).collect()
    }
}

/// A database the queue benchmark measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A fresh database on the PostgreSQL server of `BBB_TEST_PG_URL`.
    Postgres,
}

impl Backend {
    /// The name the benchmark prints and takes.
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The legacy master the bridge benchmark injects into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BenchMaster {
    /// A fresh Buildbot 0.8 scheduler database on MariaDB.
    #[value(name = "schedulerdb")]
    SchedulerDb,
    /// The in-memory sandbox master.
    Sandbox,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let command = Cli::parse().command;
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_env("BBB_LOG")
                .unwrap_or_else(|_| "warn".into()),
        );
    let registry = tracing_subscriber::registry().with(log);
    // Only the web benchmark counts statements: the events cost a little.
    if matches!(command, Command::WebDashboard { .. }) {
        registry
            .with(web_dashboard::QueryCounter.with_filter(web_dashboard::QueryCounter::filter()))
            .init();
    } else {
        registry.init();
    }
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
                backends: backends.names(),
                concurrency,
                seconds,
                wake_samples,
                graph: !no_graph,
                commit_batch,
                compare_unbatched: !no_compare,
            };
            queue::run(opts).await?;
        }
        Command::Index {
            concurrency,
            seconds,
            routes,
            commit_batch,
        } => {
            index::run(index::Options {
                concurrency,
                seconds,
                routes,
                commit_batch,
            })
            .await?;
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
                master: match master {
                    BenchMaster::SchedulerDb => bridge::MasterKind::SchedulerDb,
                    BenchMaster::Sandbox => bridge::MasterKind::Sandbox,
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
        Command::Ci {
            backends,
            sequential,
            burst,
            branches,
        } => {
            ci::run(ci::Options {
                backends: backends.names(),
                sequential,
                burst,
                branches,
            })
            .await?;
        }
        Command::WebDashboard {
            backends,
            branches,
            jobs,
            revisions,
            window,
            loads,
        } => {
            web_dashboard::run(web_dashboard::Options {
                backends: backends.names(),
                branches,
                jobs,
                revisions,
                window,
                loads,
            })
            .await?;
        }
        Command::Hooks {
            backends,
            triggers,
            concurrency,
            cron_hooks,
            cron_seconds,
        } => {
            hooks::run(hooks::Options {
                backends: backends.names(),
                triggers,
                concurrency,
                cron_hooks,
                cron_seconds,
            })
            .await?;
        }
        Command::WebGroup { backends, samples } => {
            web_group::run(web_group::Options {
                backends: backends.names(),
                samples,
            })
            .await?;
        }
    }
    Ok(())
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
        let parsed = Cli::try_parse_from(["bbb-bench", "bridge", "--master", "sandbox"]);
        assert!(matches!(
            parsed.map(|c| c.command),
            Ok(Command::Bridge {
                master: BenchMaster::Sandbox,
                ..
            })
        ));
        assert!(Cli::try_parse_from(["bbb-bench", "bridge", "--master", "nope"]).is_err());
        assert!(Cli::try_parse_from(["bbb-bench", "queue", "--backends", "oracle"]).is_err());
    }
}
