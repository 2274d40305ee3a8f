//! `bbb migrate`: applies the migrations of the configured databases and exits.

use crate::config::FileConfig;

/// Migrates the bridge's mapping database when one is configured, and the
/// queue's database when it is configured or the mapping database is not (on
/// a bridge-only host, only the mapping database is migrated).
pub async fn run(file: &FileConfig) -> anyhow::Result<()> {
    if file.queue_database_configured() || !file.bridge_state_configured() {
        let cfg = file.queue_config()?;
        bbb_queue::server::open_db(&cfg).await?;
        println!("migrations applied to {}", cfg.database_url);
    }
    if file.bridge_state_configured() {
        let cfg = file.bridge_config()?;
        let state = bbb_state::StateDb::connect(cfg.state_database_url.expose(), 1).await?;
        state.migrate().await?;
        println!("migrations applied to {}", cfg.state_database_url);
    }
    Ok(())
}
