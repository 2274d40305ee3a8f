//! The `bbb` binary: parses the command line, sets up logging and runs the
//! command. Each command is a small module of `commands/`; everything it
//! starts lives in the library crates.

mod cli;
mod commands;
mod config;
mod demo;
mod demo_repo;
mod logging;
mod migration;
mod private;
mod roles;
mod services;

use clap::Parser;

/// mimalloc instead of the system allocator: the queue's request path allocates
/// many small, short-lived objects from several threads, where glibc's malloc
/// spent a sixth of the CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    logging::init()?;
    let cli = cli::Cli::parse();
    let file = config::FileConfig::load(cli.config.as_deref())?;
    commands::run(cli.command, file).await
}
