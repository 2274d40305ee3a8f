//! The TaskCluster-style services served beside the queue on its listener and
//! root URL (as upstream serves every service under one root URL). `bbb up`
//! and `bbb queue` both serve the list [`mounts`] gives.

use crate::config::FileConfig;

/// The services to serve beside the queue, built from the configuration: the
/// auth service, the hooks, the index, the CI service (repositories, pushes and
/// decision tasks), the migration record (tasks on the bridge's task queue
/// count as bridged), the built-in workers (`built-in/succeed`,
/// `built-in/fail`), sign-in (`[login]`: `/login`, the OAuth2 endpoints) and
/// the web UI at the root URL, which share one [`bbb_login::Login`] (the web
/// UI reads the bridge's mapping database of `[bridge]` for the health page).
///
/// The migration record polls the masters of its `[migration]` section and
/// the bridge's own (built from `[bridge]`). The web UI reads the live logs
/// of the origins of `[web]` `live_log_origins` only.
pub fn mounts(file: &FileConfig) -> anyhow::Result<Vec<bbb_queue::Mount>> {
    mounts_polling(
        file,
        bbb_migration::LegacyMasters::default(),
        false,
        file.live_log_origins()?,
    )
}

/// [`mounts`], the migration record polling `masters` too; with
/// `bridge_later`, the bridge's master is not built from the configuration
/// but added to `masters` by the caller once it runs (`bbb up`,
/// [`crate::migration::add_bridge_master`]). The web UI reads the live logs
/// of `live_logs`, to which the caller may add the origin of a worker it
/// starts later (`bbb up`).
pub fn mounts_polling(
    file: &FileConfig,
    masters: bbb_migration::LegacyMasters,
    bridge_later: bool,
    live_logs: bbb_web::LiveLogOrigins,
) -> anyhow::Result<Vec<bbb_queue::Mount>> {
    let login = bbb_login::Login::new(file.login_config()?).map_err(anyhow::Error::msg)?;
    let migration = file.migration_section()?;
    let bridge = file.bridge_config()?;
    let web = bbb_web::WebConfig {
        bridge_state_url: Some(bridge.state_database_url.clone()),
        revisions: migration.revisions,
        live_log_origins: live_logs,
    };
    Ok(vec![
        bbb_auth_api::mount(),
        bbb_hooks::mount(file.hooks_config()?),
        bbb_index::mount(),
        bbb_ci::mount(file.ci_config()?),
        crate::migration::mount(&migration, &bridge, masters, bridge_later)?,
        bbb_queue::builtin::mount(),
        bbb_login::mount(login.clone()),
        bbb_web::mount_with(login, web),
    ])
}
