//! `bbb migrate`: applies the migrations of the configured databases and exits.

use crate::config::FileConfig;

/// Migrates the bridge's mapping database when one is configured, and the
/// queue's database (the queue's tables and those of the services served
/// beside it) when it is configured or the mapping database is not (on a
/// bridge-only host, only the mapping database is migrated).
pub async fn run(file: &FileConfig) -> anyhow::Result<()> {
    if file.queue_database_configured() || !file.bridge_state_configured() {
        let cfg = file.queue_config()?;
        let db = bbb_queue::server::open_db(&cfg).await?;
        bbb_auth_api::Store::new(db.pool.clone(), db.backend)
            .migrate()
            .await?;
        bbb_hooks::db::Store::new(db.pool.clone(), db.backend)
            .migrate()
            .await?;
        bbb_index::migrate(&db).await?;
        bbb_migration::migrate(&db).await?;
        bbb_ci::store::Store::new(db.pool.clone(), db.backend)
            .migrate()
            .await?;
        bbb_login::store::migrate(&db).await?;
        println!("migrations applied to {}", cfg.database_url.masked());
    }
    if file.bridge_state_configured() {
        let cfg = file.bridge_config()?;
        let state = bbb_state::StateDb::connect(cfg.state_database_url.expose(), 1).await?;
        state.migrate().await?;
        println!("migrations applied to {}", cfg.state_database_url);
    }
    Ok(())
}
