//! One module per command of [`Command`]: each reads the configuration it
//! needs, starts the library pieces and waits for SIGINT/SIGTERM.

mod bridge;
mod config;
mod login;
mod migrate;
mod queue;
mod tasks;
mod up;
mod worker;

use crate::cli::Command;
use crate::config::FileConfig;
use crate::roles::RoleSet;

/// Runs `command` with the configuration `file`.
pub async fn run(command: Command, file: FileConfig) -> anyhow::Result<()> {
    match command {
        Command::Up { data_dir, no_demo } => up::run(file, data_dir, !no_demo).await,
        Command::Queue => queue::run(&file).await,
        Command::Worker => worker::run(&file).await,
        Command::Bridge => bridge::run(&file, RoleSet::ALL).await,
        Command::TcListener => bridge::run(&file, RoleSet::only_tc_listener()).await,
        Command::BbListener => bridge::run(&file, RoleSet::only_bb_listener()).await,
        Command::Reflector => bridge::run(&file, RoleSet::only_reflector()).await,
        Command::Migrate => migrate::run(&file).await,
        Command::Config { print } => config::run(&file, print),
        Command::Login(command) => login::run(command),
        Command::Task { verb } => tasks::task(&verb).await,
        Command::Group { verb } => tasks::group(&verb).await,
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
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
