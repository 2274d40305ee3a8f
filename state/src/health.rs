//! The bridge processes' health snapshots (migration `0002`) and the build
//! requests per master, for the web UI's health page.

use crate::db::StateDb;
use crate::error::Result;
use crate::model::RowState;
use sqlx::Row;

/// One bridge process's last snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthRow {
    /// The legacy master it bridges to.
    pub master: String,
    /// The process (the bridge's instance name).
    pub instance: String,
    /// When the process started, ms.
    pub started: i64,
    /// When it wrote the snapshot, ms.
    pub updated: i64,
    /// Its figures, JSON (the bridge's `HealthSnapshot`).
    pub snapshot: String,
}

/// The active build requests of one master.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MasterRequests {
    /// The master.
    pub master: String,
    /// Runs handed over whose request waits on the master (rows `pending`,
    /// `requested` or `retrying`).
    pub pending: i64,
    /// Runs whose build runs (rows `running`).
    pub running: i64,
}

impl StateDb {
    /// Write a process's snapshot, replacing its last one (one row per master
    /// and instance, so writing it again changes nothing else).
    pub async fn put_health(&self, row: &HealthRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO bridge_health (master, instance, started, updated, snapshot) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (master, instance) DO UPDATE SET \
             started = excluded.started, updated = excluded.updated, snapshot = excluded.snapshot",
        )
        .bind(&row.master)
        .bind(&row.instance)
        .bind(row.started)
        .bind(row.updated)
        .bind(&row.snapshot)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Every process's last snapshot, by master then instance.
    pub async fn health(&self) -> Result<Vec<HealthRow>> {
        let rows = sqlx::query(
            "SELECT master, instance, started, updated, snapshot FROM bridge_health \
             ORDER BY master, instance",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(HealthRow {
                    master: r.try_get("master")?,
                    instance: r.try_get("instance")?,
                    started: r.try_get("started")?,
                    updated: r.try_get("updated")?,
                    snapshot: r.try_get("snapshot")?,
                })
            })
            .collect()
    }

    /// Delete the snapshots written before `cutoff` (processes gone); how many.
    pub async fn purge_health_before(&self, cutoff: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM bridge_health WHERE updated < $1")
            .bind(cutoff)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// Each master's waiting and running build requests (one grouped query;
    /// resolved rows are not read), by master.
    pub async fn requests_by_master(&self) -> Result<Vec<MasterRequests>> {
        let rows = sqlx::query(
            "SELECT master, state, COUNT(*) AS n FROM mappings \
             WHERE state IN ('pending', 'requested', 'retrying', 'running') \
             GROUP BY master, state ORDER BY master",
        )
        .fetch_all(self.pool())
        .await?;
        let mut out: Vec<MasterRequests> = Vec::new();
        for r in &rows {
            let master: String = r.try_get("master")?;
            let state: RowState = r.try_get::<String, _>("state")?.parse()?;
            let n: i64 = r.try_get("n")?;
            if out.last().is_none_or(|m| m.master != master) {
                out.push(MasterRequests {
                    master,
                    ..MasterRequests::default()
                });
            }
            let m = out.last_mut().expect("pushed");
            if state == RowState::Running {
                m.running += n;
            } else {
                m.pending += n;
            }
        }
        Ok(out)
    }
}
