//! The index's tables, in the queue's database: entries (`indexed_tasks`) and
//! the namespaces above them (`index_namespaces`), with upstream's rules.
//!
//! - An entry replaces the one at its path unless that one has a higher rank
//!   (an equal rank replaces: the later entry wins) and has not expired.
//! - Writing an entry makes sure its namespace and every namespace above it
//!   exist and expire no sooner than the start of the day after the entry
//!   expires (upstream rounds so as not to update namespaces on every insert).
//! - Lists leave out what has expired; [`expire`] deletes it.
//!
//! Writes take a transaction, so the feed consumer makes the entries of a batch
//! and deletes its items in one; several rows go in one statement, in key order
//! (so concurrent writers lock rows in the same order).

use crate::namespace::{join, with_ancestors};
use bbb_clock::{Millis, fmt_ms};
use bbb_queue::db::Db;
use bbb_service::Result;
use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row, Transaction};
use std::collections::BTreeMap;

/// Rows per statement.
const ROWS: usize = 128;

/// The namespace of padding rows: not a valid namespace, so no real row has it.
const PAD: &str = ".";

/// One milliseconds day.
const DAY_MS: Millis = 24 * 3600 * 1000;

/// An index entry: the task found at `<namespace>.<name>`.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The namespace (`""` at the root).
    pub namespace: String,
    /// The last word of the path.
    pub name: String,
    /// Higher ranks win.
    pub rank: i64,
    /// The task.
    pub task_id: String,
    /// What the task's indexer attached (a JSON object).
    pub data: Value,
    /// When the entry expires (ms).
    pub expires: Millis,
}

impl Entry {
    /// Its index path.
    pub fn path(&self) -> String {
        join(&self.namespace, &self.name)
    }

    /// The entry as upstream's `indexed-task-response` shows it.
    pub fn to_json(&self) -> Value {
        json!({
            "namespace": self.path(),
            "taskId": self.task_id,
            "rank": self.rank,
            "data": self.data,
            "expires": fmt_ms(self.expires),
        })
    }

    fn from_row(row: &AnyRow) -> Result<Entry> {
        Ok(Entry {
            namespace: row.try_get("namespace")?,
            name: row.try_get("name")?,
            rank: row.try_get("rank")?,
            task_id: row.try_get("task_id")?,
            data: serde_json::from_str(&row.try_get::<String, _>("data")?)?,
            expires: row.try_get("expires")?,
        })
    }
}

/// A namespace, as `listNamespaces` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// The namespace above it (`""` at the root).
    pub parent: String,
    /// Its last word.
    pub name: String,
    /// When it expires (ms).
    pub expires: Millis,
}

impl Namespace {
    /// As upstream's `list-namespaces-response` shows it.
    pub fn to_json(&self) -> Value {
        json!({
            "namespace": join(&self.parent, &self.name),
            "name": self.name,
            "expires": fmt_ms(self.expires),
        })
    }
}

/// The start of the day after the day of `ms` (UTC), as upstream rounds the
/// expiry of namespaces.
pub fn day_after(ms: Millis) -> Millis {
    (ms.div_euclid(DAY_MS) + 1) * DAY_MS
}

/// `($a, $b, ...), (...)`: `rows` tuples of `cols` placeholders from `$from`.
fn tuples(rows: usize, cols: usize, from: usize) -> String {
    (0..rows)
        .map(|r| {
            let cells: Vec<String> = (0..cols)
                .map(|c| format!("${}", from + r * cols + c))
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Write `entries` within `tx` at time `now`, each replacing the entry at its
/// path by the rank rule, and make sure the namespaces of those written exist.
/// Of several entries for one path, the last of those with the highest rank
/// counts, as if they had been written one after another. Returns how many
/// entries were written (the others lost to a higher rank).
pub async fn upsert(
    tx: &mut Transaction<'static, Any>,
    entries: &[Entry],
    now: Millis,
) -> Result<usize> {
    let mut winners: BTreeMap<(&str, &str), &Entry> = BTreeMap::new();
    for e in entries {
        let key = (e.namespace.as_str(), e.name.as_str());
        match winners.get(&key) {
            Some(w) if w.rank > e.rank => {}
            _ => {
                winners.insert(key, e);
            }
        }
    }
    let winners: Vec<&Entry> = winners.into_values().collect();
    // Each written entry's namespaces, with the latest expiry asked for.
    let mut namespaces: BTreeMap<(String, String), Millis> = BTreeMap::new();
    let mut written = 0;
    for chunk in winners.chunks(ROWS) {
        let n = chunk.len().next_power_of_two();
        let sql = format!(
            "INSERT INTO indexed_tasks (namespace, name, rank, task_id, data, expires) \
             SELECT * FROM (VALUES {}) AS v WHERE v.column1 <> '{PAD}' \
             ON CONFLICT (namespace, name) DO UPDATE SET rank = excluded.rank, \
             task_id = excluded.task_id, data = excluded.data, expires = excluded.expires \
             WHERE indexed_tasks.rank <= excluded.rank OR indexed_tasks.expires <= $1 \
             RETURNING namespace, expires",
            tuples(n, 6, 2)
        );
        let mut q = sqlx::query(&sql).bind(now);
        for e in chunk {
            q = q
                .bind(e.namespace.as_str())
                .bind(e.name.as_str())
                .bind(e.rank)
                .bind(e.task_id.as_str())
                .bind(serde_json::to_string(&e.data)?)
                .bind(e.expires);
        }
        for _ in chunk.len()..n {
            q = q
                .bind(PAD)
                .bind("")
                .bind(0i64)
                .bind("")
                .bind("{}")
                .bind(0i64);
        }
        for row in q.fetch_all(&mut **tx).await? {
            written += 1;
            let namespace: String = row.try_get("namespace")?;
            let expires = day_after(row.try_get("expires")?);
            for key in with_ancestors(&namespace) {
                let e = namespaces.entry(key).or_insert(expires);
                *e = (*e).max(expires);
            }
        }
    }
    // Namespaces that exist and expire late enough are left alone (most, as
    // expiries are rounded to days), so concurrent writers seldom lock them.
    let keys: Vec<(String, String)> = namespaces.keys().cloned().collect();
    for row in at_keys(
        tx,
        "SELECT parent, name, expires FROM index_namespaces WHERE (parent, name)",
        &keys,
        0,
    )
    .await?
    {
        let key = (row.try_get("parent")?, row.try_get("name")?);
        let have: Millis = row.try_get("expires")?;
        if namespaces.get(&key).is_some_and(|want| *want <= have) {
            namespaces.remove(&key);
        }
    }
    let namespaces: Vec<((String, String), Millis)> = namespaces.into_iter().collect();
    for chunk in namespaces.chunks(ROWS) {
        let n = chunk.len().next_power_of_two();
        let sql = format!(
            "INSERT INTO index_namespaces (parent, name, expires) \
             SELECT * FROM (VALUES {}) AS v WHERE v.column1 <> '{PAD}' \
             ON CONFLICT (parent, name) DO UPDATE SET expires = excluded.expires \
             WHERE index_namespaces.expires < excluded.expires",
            tuples(n, 3, 1)
        );
        let mut q = sqlx::query(&sql);
        for ((parent, name), expires) in chunk {
            q = q.bind(parent.as_str()).bind(name.as_str()).bind(*expires);
        }
        for _ in chunk.len()..n {
            q = q.bind(PAD).bind("").bind(0i64);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(written)
}

const ENTRY_COLUMNS: &str = "namespace, name, rank, task_id, data, expires";

/// The entry at `namespace`.`name`, expired or not.
pub async fn get(db: &Db, namespace: &str, name: &str) -> Result<Option<Entry>> {
    get_in(&mut *db.pool.acquire().await?, namespace, name).await
}

/// The entry at `namespace`.`name` on `conn` (within a transaction: `&mut *tx`).
pub async fn get_in(
    conn: &mut AnyConnection,
    namespace: &str,
    name: &str,
) -> Result<Option<Entry>> {
    let sql =
        format!("SELECT {ENTRY_COLUMNS} FROM indexed_tasks WHERE namespace = $1 AND name = $2");
    let row = sqlx::query(&sql)
        .bind(namespace)
        .bind(name)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(Entry::from_row).transpose()
}

/// Unexpired entries directly in `namespace` whose name comes after `after`,
/// by name, at most `limit`.
pub async fn entries_in(
    db: &Db,
    namespace: &str,
    after: &str,
    limit: i64,
    now: Millis,
) -> Result<Vec<Entry>> {
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM indexed_tasks WHERE namespace = $1 AND name > $2 \
         AND expires > $3 ORDER BY name LIMIT $4"
    );
    let rows = sqlx::query(&sql)
        .bind(namespace)
        .bind(after)
        .bind(now)
        .bind(limit)
        .fetch_all(&db.pool)
        .await?;
    rows.iter().map(Entry::from_row).collect()
}

/// Unexpired namespaces directly in `parent` whose name comes after `after`,
/// by name, at most `limit`.
pub async fn namespaces_in(
    db: &Db,
    parent: &str,
    after: &str,
    limit: i64,
    now: Millis,
) -> Result<Vec<Namespace>> {
    let rows = sqlx::query(
        "SELECT parent, name, expires FROM index_namespaces WHERE parent = $1 AND name > $2 \
         AND expires > $3 ORDER BY name LIMIT $4",
    )
    .bind(parent)
    .bind(after)
    .bind(now)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Namespace {
                parent: r.try_get("parent")?,
                name: r.try_get("name")?,
                expires: r.try_get("expires")?,
            })
        })
        .collect()
}

/// The rows `select` (a statement ending in a pair of key columns, its
/// placeholders from `$1` to `$<bound>` bound to `now` when `bound` is 1)
/// gives for the pairs `keys`, queried `IN (VALUES ...)` a chunk at a time.
async fn at_keys(
    conn: &mut AnyConnection,
    select: &str,
    keys: &[(String, String)],
    now: Millis,
) -> Result<Vec<AnyRow>> {
    let bound = usize::from(select.contains("$1"));
    let mut out = Vec::new();
    for chunk in keys.chunks(ROWS) {
        let sql = format!("{select} IN (VALUES {})", tuples(chunk.len(), 2, bound + 1));
        let mut q = sqlx::query(&sql);
        if bound == 1 {
            q = q.bind(now);
        }
        for (a, b) in chunk {
            q = q.bind(a.as_str()).bind(b.as_str());
        }
        out.extend(q.fetch_all(&mut *conn).await?);
    }
    Ok(out)
}

/// The unexpired entries at the paths `keys` ((namespace, name) pairs), by
/// namespace then name.
pub async fn entries_at(db: &Db, keys: &[(String, String)], now: Millis) -> Result<Vec<Entry>> {
    let select = format!(
        "SELECT {ENTRY_COLUMNS} FROM indexed_tasks WHERE expires > $1 AND (namespace, name)"
    );
    let mut conn = db.pool.acquire().await?;
    let mut out = at_keys(&mut conn, &select, keys, now)
        .await?
        .iter()
        .map(Entry::from_row)
        .collect::<Result<Vec<_>>>()?;
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(out)
}

/// Delete the entry at `namespace`.`name`, if there is one.
pub async fn delete(db: &Db, namespace: &str, name: &str) -> Result<()> {
    sqlx::query("DELETE FROM indexed_tasks WHERE namespace = $1 AND name = $2")
        .bind(namespace)
        .bind(name)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Delete the entries and namespaces that expired before `now`. Returns how
/// many (entries, namespaces) went.
pub async fn expire(db: &Db, now: Millis) -> Result<(u64, u64)> {
    let entries = sqlx::query("DELETE FROM indexed_tasks WHERE expires < $1")
        .bind(now)
        .execute(&db.pool)
        .await?
        .rows_affected();
    let namespaces = sqlx::query("DELETE FROM index_namespaces WHERE expires < $1")
        .bind(now)
        .execute(&db.pool)
        .await?
        .rows_affected();
    Ok((entries, namespaces))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_expire_at_the_start_of_the_next_day() {
        let ms = bbb_clock::parse_ms("2030-05-06T10:11:12.000Z").unwrap();
        assert_eq!(fmt_ms(day_after(ms)), "2030-05-07T00:00:00.000Z");
        let midnight = bbb_clock::parse_ms("2030-05-06T00:00:00.000Z").unwrap();
        assert_eq!(fmt_ms(day_after(midnight)), "2030-05-07T00:00:00.000Z");
    }

    #[test]
    fn placeholders_are_numbered_across_rows() {
        assert_eq!(tuples(2, 3, 2), "($2, $3, $4), ($5, $6, $7)");
    }

    #[test]
    fn entries_show_their_whole_path() {
        let e = Entry {
            namespace: "".into(),
            name: "top".into(),
            rank: 3,
            task_id: "T".into(),
            data: json!({"k": 1}),
            expires: 0,
        };
        assert_eq!(e.to_json()["namespace"], "top");
        let e = Entry {
            namespace: "a.b".into(),
            ..e
        };
        assert_eq!(e.path(), "a.b.top");
    }
}
