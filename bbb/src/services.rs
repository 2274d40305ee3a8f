//! The TaskCluster-style services served beside the queue on its listener and
//! root URL (as upstream serves every service under one root URL). `bbb up`
//! and `bbb queue` both serve the list [`mounts`] gives.

use crate::config::FileConfig;

/// The services to serve beside the queue, built from the configuration: the
/// auth service, the hooks, the index, the CI service (repositories, pushes and
/// decision tasks), the migration record (tasks on the bridge's task queue
/// count as bridged) and the built-in workers (`built-in/succeed`,
/// `built-in/fail`).
pub fn mounts(file: &FileConfig) -> anyhow::Result<Vec<bbb_queue::Mount>> {
    Ok(vec![
        bbb_auth_api::mount(),
        bbb_hooks::mount(file.hooks_config()?),
        bbb_index::mount(),
        bbb_ci::mount(file.ci_config()?),
        bbb_migration::mount(bbb_migration::MigrationConfig {
            bridge_task_queues: vec![file.bridge_config()?.task_queue_id],
            ..Default::default()
        }),
        bbb_queue::builtin::mount(),
    ])
}
