//! The record's tables (migration `5001`): observations keyed by side and
//! source id, and the mapping keyed by branch and label. Every write is an
//! upsert, so recording the same result twice leaves one row.

use crate::model::{ALL_BRANCHES, Observation, Outcome, Pairing, Side};
use bbb_queue::db::Db;
use bbb_service::{ApiError, Result};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

/// Record `observations` within `tx`: one row per (side, source id), the
/// latest write winning.
pub async fn record(
    tx: &mut Transaction<'static, Any>,
    observations: &[Observation],
) -> Result<()> {
    for o in observations {
        sqlx::query(
            "INSERT INTO migration_observations \
             (side, source_id, branch, revision, job, builder, symbol, result, started, finished) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (side, source_id) DO UPDATE SET branch = excluded.branch, \
             revision = excluded.revision, job = excluded.job, builder = excluded.builder, \
             symbol = excluded.symbol, result = excluded.result, started = excluded.started, \
             finished = excluded.finished",
        )
        .bind(o.side.as_str())
        .bind(&o.source_id)
        .bind(&o.branch)
        .bind(&o.revision)
        .bind(&o.job)
        .bind(o.builder.clone())
        .bind(o.symbol.clone())
        .bind(o.result.as_str())
        .bind(o.started)
        .bind(o.finished)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Record `observations` in a transaction of their own: the public way in
/// for results from elsewhere (a legacy master's builds).
pub async fn ingest(db: &Db, observations: &[Observation]) -> Result<()> {
    let mut tx = db.begin().await?;
    record(&mut tx, observations).await?;
    tx.commit().await?;
    Ok(())
}

fn observation(row: &AnyRow) -> Result<Observation> {
    let side: String = row.try_get("side")?;
    let result: String = row.try_get("result")?;
    Ok(Observation {
        side: Side::parse(&side)
            .ok_or_else(|| ApiError::Internal(format!("unknown side {side:?} stored")))?,
        source_id: row.try_get("source_id")?,
        branch: row.try_get("branch")?,
        revision: row.try_get("revision")?,
        job: row.try_get("job")?,
        builder: row.try_get("builder")?,
        symbol: row.try_get("symbol")?,
        result: Outcome::parse(&result)
            .ok_or_else(|| ApiError::Internal(format!("unknown result {result:?} stored")))?,
        started: row.try_get("started")?,
        finished: row.try_get("finished")?,
    })
}

/// The branches with observations, in name order.
pub async fn branches(db: &Db) -> Result<Vec<String>> {
    let rows = sqlx::query("SELECT DISTINCT branch FROM migration_observations ORDER BY branch")
        .fetch_all(&db.pool)
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get("branch"))
        .collect::<Result<_, _>>()?)
}

/// A branch's last `revisions` revisions (newest first: ordered by their
/// earliest start, or finish when no start is known) and every observation
/// of them.
pub async fn window(
    db: &Db,
    branch: &str,
    revisions: i64,
) -> Result<(Vec<String>, Vec<Observation>)> {
    let rows = sqlx::query(
        "SELECT revision, MIN(COALESCE(started, finished)) AS first \
         FROM migration_observations WHERE branch = $1 \
         GROUP BY revision ORDER BY first DESC, revision DESC LIMIT $2",
    )
    .bind(branch)
    .bind(revisions)
    .fetch_all(&db.pool)
    .await?;
    let revs: Vec<String> = rows
        .iter()
        .map(|r| r.try_get("revision"))
        .collect::<Result<_, _>>()?;
    let mut observations = Vec::new();
    for chunk in revs.chunks(200) {
        let sql = format!(
            "SELECT * FROM migration_observations WHERE branch = $1 AND revision IN ({}) \
             ORDER BY finished, side, source_id",
            bbb_sqlstore::placeholders(2, chunk.len())
        );
        let mut q = sqlx::query(&sql).bind(branch);
        for r in chunk {
            q = q.bind(r);
        }
        for row in q.fetch_all(&db.pool).await? {
            observations.push(observation(&row)?);
        }
    }
    Ok((revs, observations))
}

/// One mapping entry as stored: the pairing, whether it came from the
/// configuration file (`file`) or the API (`api`), when and by whom.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MappingEntry {
    /// The pairing.
    #[serde(flatten)]
    pub pairing: Pairing,
    /// `file` or `api`.
    pub source: String,
    /// When it was last written (ms).
    pub updated: i64,
    /// Who wrote it (a client id, or `configuration`).
    pub updated_by: String,
}

/// Every mapping entry, by branch then label.
pub async fn mapping(db: &Db) -> Result<Vec<MappingEntry>> {
    let rows = sqlx::query("SELECT * FROM migration_mapping ORDER BY branch, label")
        .fetch_all(&db.pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(MappingEntry {
                pairing: Pairing {
                    branch: r.try_get("branch")?,
                    label: r.try_get("label")?,
                    builder: r.try_get("builder")?,
                },
                source: r.try_get("source")?,
                updated: r.try_get("updated")?,
                updated_by: r.try_get("updated_by")?,
            })
        })
        .collect()
}

/// The mapping that holds on `branch`: label → builder, a branch's own
/// entries over the all-branches ones.
pub fn mapping_for(entries: &[MappingEntry], branch: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for e in entries.iter().filter(|e| e.pairing.branch == branch) {
        out.push((e.pairing.label.clone(), e.pairing.builder.clone()));
    }
    for e in entries.iter().filter(|e| e.pairing.branch == ALL_BRANCHES) {
        if !out.iter().any(|(l, _)| *l == e.pairing.label) {
            out.push((e.pairing.label.clone(), e.pairing.builder.clone()));
        }
    }
    out
}

/// Write one mapping entry (replacing the one of its branch and label).
pub async fn put_mapping(
    db: &Db,
    pairing: &Pairing,
    source: &str,
    who: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO migration_mapping (branch, label, builder, source, updated, updated_by) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (branch, label) DO UPDATE SET \
         builder = excluded.builder, source = excluded.source, updated = excluded.updated, \
         updated_by = excluded.updated_by",
    )
    .bind(&pairing.branch)
    .bind(&pairing.label)
    .bind(&pairing.builder)
    .bind(source)
    .bind(now)
    .bind(who)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Delete the entry of `branch` and `label`; whether there was one.
pub async fn delete_mapping(db: &Db, branch: &str, label: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM migration_mapping WHERE branch = $1 AND label = $2")
        .bind(branch)
        .bind(label)
        .execute(&db.pool)
        .await?;
    Ok(done.rows_affected() > 0)
}
