//! The command line: every command, its flags and their types.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    /// Show the effective configuration.
    Config {
        /// Print it (secrets masked).
        #[arg(long)]
        print: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
