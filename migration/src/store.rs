//! The record's tables (migration `5001`): observations keyed by side and
//! source id, and the mapping keyed by branch and label; and each branch's
//! revisions with their first times (migration `5004`), written with the
//! observations, which give a branch's newest revisions without reading its
//! observations. Every write is an upsert, so recording the same result
//! twice leaves one row.

use crate::model::{ALL_BRANCHES, Observation, Outcome, Pairing, Side};
use bbb_queue::db::Db;
use bbb_service::{ApiError, Result};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use std::collections::HashMap;

/// Record `observations` within `tx`: one row per (side, source id), the
/// latest write winning, and each one's revision in `migration_revisions`
/// (migration `5004`) with its first time lowered to the observation's
/// start (or finish) when that is earlier. Two statements an observation;
/// the revision's row is written (and so locked) only when it is new or its
/// first time moves, so the results of one revision arriving together do
/// not queue behind each other on it.
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
        let first = o.started.unwrap_or(o.finished);
        sqlx::query(
            "INSERT INTO migration_revisions (branch, revision, first_time) \
             SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM migration_revisions \
             WHERE branch = $4 AND revision = $5 AND first_time <= $6) \
             ON CONFLICT (branch, revision) DO UPDATE SET first_time = excluded.first_time \
             WHERE excluded.first_time < migration_revisions.first_time",
        )
        .bind(&o.branch)
        .bind(&o.revision)
        .bind(first)
        .bind(&o.branch)
        .bind(&o.revision)
        .bind(first)
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

/// The columns [`observation`] reads, in its order.
const OBSERVATION_COLUMNS: &str =
    "side, source_id, branch, revision, job, builder, symbol, result, started, finished";

fn observation(row: &AnyRow) -> Result<Observation> {
    let side: &str = row.try_get(0)?;
    let result: &str = row.try_get(7)?;
    Ok(Observation {
        side: Side::parse(side)
            .ok_or_else(|| ApiError::Internal(format!("unknown side {side:?} stored")))?,
        source_id: row.try_get(1)?,
        branch: row.try_get(2)?,
        revision: row.try_get(3)?,
        job: row.try_get(4)?,
        builder: row.try_get(5)?,
        symbol: row.try_get(6)?,
        result: Outcome::parse(result)
            .ok_or_else(|| ApiError::Internal(format!("unknown result {result:?} stored")))?,
        started: row.try_get(8)?,
        finished: row.try_get(9)?,
    })
}

/// The branches with observations, in name order.
pub async fn branches(db: &Db) -> Result<Vec<String>> {
    let rows = sqlx::query("SELECT DISTINCT branch FROM migration_revisions ORDER BY branch")
        .fetch_all(&db.pool)
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get("branch"))
        .collect::<Result<_, _>>()?)
}

/// A branch's last `revisions` revisions (newest first: ordered by their
/// earliest start, or finish when no start is known, then by name) and
/// every observation of them, by finish time (then side and source id).
pub async fn window(
    db: &Db,
    branch: &str,
    revisions: i64,
) -> Result<(Vec<String>, Vec<Observation>)> {
    let mut all = windows(db, &[branch.to_string()], revisions).await?;
    Ok(all.pop().unwrap_or_default())
}

/// Parameters one statement of [`windows`] binds at most (a branch's own
/// revisions always go in one statement, whatever their number).
const WINDOW_PARAMS: usize = 2000;

/// Branches one statement of [`windows`] reads at most (one `UNION ALL`
/// term each; SQLite allows 500).
const WINDOW_BRANCHES: usize = 200;

/// [`window`] of each of `branches`, in their order: their revisions read
/// from `migration_revisions` (each branch's newest `revisions` through its
/// index), then their observations through the index on (branch, revision),
/// one statement of each for many branches at a time.
pub async fn windows(
    db: &Db,
    branches: &[String],
    revisions: i64,
) -> Result<Vec<(Vec<String>, Vec<Observation>)>> {
    // Each name once, in the order of its first appearance.
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut names: Vec<&str> = Vec::new();
    for b in branches {
        index.entry(b.as_str()).or_insert_with(|| {
            names.push(b.as_str());
            names.len() - 1
        });
    }
    let limit = revisions.max(0);
    let mut revs: Vec<Vec<String>> = vec![Vec::new(); names.len()];
    for group in names.chunks(WINDOW_BRANCHES) {
        let sql = format!(
            "{} ORDER BY branch, first_time DESC, revision DESC",
            (1..=group.len())
                .map(|i| format!(
                    "SELECT * FROM (SELECT branch, revision, first_time FROM migration_revisions \
                     WHERE branch = ${i} ORDER BY first_time DESC, revision DESC LIMIT {limit}) AS w{i}"
                ))
                .collect::<Vec<_>>()
                .join(" UNION ALL ")
        );
        let mut q = sqlx::query(&sql);
        for b in group {
            q = q.bind(*b);
        }
        for row in q.fetch_all(&db.pool).await? {
            let branch: &str = row.try_get(0)?;
            revs[index[branch]].push(row.try_get(1)?);
        }
    }
    // Statements of whole branches, up to WINDOW_PARAMS parameters each
    // (a branch with more alone).
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut params = 0;
    for (i, r) in revs.iter().enumerate().filter(|(_, r)| !r.is_empty()) {
        match groups.last_mut() {
            Some(g) if g.len() < WINDOW_BRANCHES && params + 1 + r.len() <= WINDOW_PARAMS => {
                g.push(i)
            }
            _ => {
                groups.push(vec![i]);
                params = 0;
            }
        }
        params += 1 + r.len();
    }
    let mut observations: Vec<Vec<Observation>> = vec![Vec::new(); names.len()];
    for group in groups {
        let mut next = 1;
        let mut parts = Vec::new();
        for &i in &group {
            parts.push(format!(
                "SELECT {OBSERVATION_COLUMNS} FROM migration_observations \
                 WHERE branch = ${next} AND revision IN ({})",
                bbb_sqlstore::placeholders(next + 1, revs[i].len())
            ));
            next += 1 + revs[i].len();
        }
        let sql = format!(
            "{} ORDER BY branch, finished, side, source_id",
            parts.join(" UNION ALL ")
        );
        let mut q = sqlx::query(&sql);
        for &i in &group {
            q = q.bind(names[i]);
            for r in &revs[i] {
                q = q.bind(r);
            }
        }
        for row in q.fetch_all(&db.pool).await? {
            let o = observation(&row)?;
            observations[index[o.branch.as_str()]].push(o);
        }
    }
    let mut out: Vec<Option<(Vec<String>, Vec<Observation>)>> =
        revs.into_iter().zip(observations).map(Some).collect();
    // The last use of a window takes it; a name given twice gets copies.
    let mut uses = vec![0usize; names.len()];
    for b in branches {
        uses[index[b.as_str()]] += 1;
    }
    Ok(branches
        .iter()
        .map(|b| {
            let i = index[b.as_str()];
            uses[i] -= 1;
            if uses[i] == 0 {
                out[i].take().unwrap_or_default()
            } else {
                out[i].clone().unwrap_or_default()
            }
        })
        .collect())
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
