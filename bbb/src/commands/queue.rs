//! `bbb queue`: the native queue until SIGINT/SIGTERM.

use crate::config::FileConfig;

/// Runs the queue the configuration describes.
pub async fn run(file: &FileConfig) -> anyhow::Result<()> {
    let cfg = file.queue_config()?;
    let mounts = crate::services::mounts(file)?;
    let running = bbb_queue::start_with(cfg, bbb_queue::Clock::system(), mounts).await?;
    println!("bbb queue listening on {}", running.root_url);
    super::shutdown_signal().await;
    running.shutdown().await;
    Ok(())
}
