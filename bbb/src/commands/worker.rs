//! `bbb worker`: a native worker until SIGINT/SIGTERM (a task that runs is
//! finished or handed back first).

use tokio_util::sync::CancellationToken;

use crate::config::FileConfig;

/// Runs the worker the configuration describes.
pub async fn run(file: &FileConfig) -> anyhow::Result<()> {
    let cfg = file.worker_config()?;
    let worker = bbb_workers::Worker::new(cfg).await?;
    if worker.run_tasks_as() == bbb_workers::RunTasksAs::TaskUser {
        file.keep_from_tasks();
    }
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        on_signal.cancel();
    });
    worker.run(stop).await?;
    Ok(())
}
