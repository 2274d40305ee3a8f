//! The TaskCluster-style services served beside the queue on its listener and
//! root URL (as upstream serves every service under one root URL). `bbb up`
//! and `bbb queue` both serve the list [`mounts`] gives.

use crate::config::FileConfig;

/// The services to serve beside the queue, built from the configuration:
/// the auth service (clients and roles, `/api/auth/v1/`).
pub fn mounts(_file: &FileConfig) -> anyhow::Result<Vec<bbb_queue::Mount>> {
    Ok(vec![bbb_auth_api::mount()])
}
