//! The command line: every command, its flags and their types.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config;

/// The variables every command reads, for `bbb --help`.
const TOP_HELP: &str = "\
Environment (every command):
  BBB_CONFIG      the configuration file (as --config)
  BBB_LOG         log filter, RUST_LOG syntax (default: INFO for bbb, WARN for the rest)
  BBB_LOG_FORMAT  text (default) or json, one object per line

Each command's --help lists the BBB_* variables that override its sections of the file.";

/// `bbb [--config FILE] <command>`.
#[derive(Parser)]
#[command(
    name = "bbb",
    version,
    about = "bbb: a TaskCluster-compatible queue, native workers and a Buildbot bridge",
    after_help = TOP_HELP
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
    #[command(after_help = config::up_help())]
    Up {
        /// Directory for the database, artifacts, task directories and the root token.
        #[arg(long, default_value = "bbb-data", env = "BBB_DATA_DIR")]
        data_dir: PathBuf,
        /// Do not submit the demo bridged task, nor push to the demo repository.
        #[arg(long)]
        no_demo: bool,
    },
    /// Run the native queue (HTTP API, resolvers, event relay).
    #[command(after_help = config::queue_and_services_env_help())]
    Queue,
    /// Run a native worker against a queue.
    #[command(after_help = config::worker_env_help())]
    Worker,
    /// Run the bridge: TC listener, Buildbot listener and reflector.
    #[command(after_help = config::bridge_env_help())]
    Bridge,
    /// Run the bridge's TC listener alone (task-pending / task-exception -> build requests).
    #[command(after_help = config::bridge_env_help())]
    TcListener,
    /// Run the bridge's Buildbot listener alone (build events -> claims and resolutions).
    #[command(after_help = config::bridge_env_help())]
    BbListener,
    /// Run the bridge's reflector alone (periodic reclaims and repairs).
    #[command(after_help = config::bridge_env_help())]
    Reflector,
    /// Apply database migrations and exit: the bridge's mapping database when
    /// BBB_STATE_DATABASE_URL (or [bridge] state_database_url) is set, and the queue's
    /// database when it is configured or the mapping database is not.
    #[command(after_help = config::migrate_env_help())]
    Migrate,
    /// Show the effective configuration.
    #[command(after_help = config::all_env_help())]
    Config {
        /// Print it (secrets masked).
        #[arg(long)]
        print: bool,
    },
    /// Sign-in helpers.
    #[command(subcommand)]
    Login(LoginCommand),
    /// Task-related actions and commands, as upstream's `taskcluster task`,
    /// against the queue at TASKCLUSTER_ROOT_URL.
    #[command(after_help = bbb_taskcli::ENV_HELP)]
    Task {
        /// What to do.
        #[command(subcommand)]
        verb: bbb_taskcli::TaskCommand,
    },
    /// Taskgroup-related actions and commands, as upstream's `taskcluster
    /// group`, against the queue at TASKCLUSTER_ROOT_URL.
    #[command(after_help = bbb_taskcli::ENV_HELP)]
    Group {
        /// What to do.
        #[command(subcommand)]
        verb: bbb_taskcli::GroupCommand,
    },
}

/// `bbb login <command>`.
#[derive(Subcommand)]
pub enum LoginCommand {
    /// Read a password from standard input (its first line) and print its
    /// Argon2id hash, for `password_hash` in `[[login.users]]`.
    HashPassword,
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
