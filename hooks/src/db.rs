//! The hooks service's tables, in the queue's database (SQLite or
//! PostgreSQL, one SQL dialect through sqlx's `Any` driver with `$n`
//! placeholders). Migrations are versions 3001 and up.

use crate::model::{Hook, HookBinding, LastFire};
use bbb_clock::Millis;
use bbb_service::ApiError;
use bbb_sqlstore::Backend;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

/// Results of the store: database failures are [`ApiError::Database`],
/// classified once.
pub type Result<T> = std::result::Result<T, ApiError>;

/// The columns [`hook_from_row`] reads.
const HOOK_COLUMNS: &str = "hook_group_id, hook_id, metadata, task, bindings, schedule, \
     trigger_schema, trigger_token, next_task_id, next_scheduled_date";

/// The columns [`fire_from_row`] reads.
const FIRE_COLUMNS: &str =
    "hook_group_id, hook_id, task_id, fired_by, task_create_time, result, error";

/// The hooks tables.
#[derive(Clone, Debug)]
pub struct Store {
    /// The pool (the queue's).
    pub pool: AnyPool,
    /// Its engine.
    pub backend: Backend,
}

/// The Pulse queue of a hook and the bindings in place on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueRow {
    /// The hook's group.
    pub hook_group_id: String,
    /// The hook.
    pub hook_id: String,
    /// The queue's name on the bus.
    pub queue_name: String,
    /// The bindings made on it.
    pub bindings: Vec<HookBinding>,
}

fn json_column(row: &AnyRow, name: &str) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(&row.try_get::<String, _>(name)?)?)
}

fn hook_from_row(row: &AnyRow) -> Result<Hook> {
    Ok(Hook {
        hook_group_id: row.try_get("hook_group_id")?,
        hook_id: row.try_get("hook_id")?,
        metadata: json_column(row, "metadata")?,
        task: json_column(row, "task")?,
        bindings: serde_json::from_value(json_column(row, "bindings")?)?,
        schedule: serde_json::from_value(json_column(row, "schedule")?)?,
        trigger_schema: json_column(row, "trigger_schema")?,
        trigger_token: row.try_get("trigger_token")?,
        next_task_id: row.try_get("next_task_id")?,
        next_scheduled_date: row.try_get("next_scheduled_date")?,
    })
}

fn fire_from_row(row: &AnyRow) -> Result<LastFire> {
    Ok(LastFire {
        hook_group_id: row.try_get("hook_group_id")?,
        hook_id: row.try_get("hook_id")?,
        task_id: row.try_get("task_id")?,
        fired_by: row.try_get("fired_by")?,
        task_create_time: row.try_get("task_create_time")?,
        result: row.try_get("result")?,
        error: row.try_get("error")?,
    })
}

fn to_text<T: serde::Serialize>(v: &T) -> Result<String> {
    Ok(serde_json::to_string(v)?)
}

/// Insert a firing's record. A later firing for the same task replaces a
/// failure's record, never a success's (the task exists: a second attempt
/// at it is refused by the queue, which changes nothing).
const INSERT_FIRE: &str = "INSERT INTO hooks_last_fires \
     (hook_group_id, hook_id, task_id, fired_by, task_create_time, result, error) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (hook_group_id, hook_id, task_id) DO UPDATE SET \
     fired_by = excluded.fired_by, task_create_time = excluded.task_create_time, \
     result = excluded.result, error = excluded.error \
     WHERE hooks_last_fires.result <> 'success'";

/// A statement on the `Any` driver.
type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// `q` with a firing's record bound as `$1` to `$7`.
fn bind_fire<'q>(q: AnyQuery<'q>, f: &'q LastFire) -> AnyQuery<'q> {
    q.bind(&f.hook_group_id)
        .bind(&f.hook_id)
        .bind(&f.task_id)
        .bind(&f.fired_by)
        .bind(f.task_create_time)
        .bind(&f.result)
        .bind(&f.error)
}

/// `q` with a hook's ids, definition and next slot bound as `$1` to `$9`:
/// group, id, metadata, task, bindings, schedule, trigger schema, next
/// taskId, next date.
fn bind_hook<'q>(q: AnyQuery<'q>, h: &'q Hook) -> Result<AnyQuery<'q>> {
    Ok(q.bind(&h.hook_group_id)
        .bind(&h.hook_id)
        .bind(to_text(&h.metadata)?)
        .bind(to_text(&h.task)?)
        .bind(to_text(&h.bindings)?)
        .bind(to_text(&h.schedule)?)
        .bind(to_text(&h.trigger_schema)?)
        .bind(&h.next_task_id)
        .bind(h.next_scheduled_date))
}

impl Store {
    /// The store on `pool`.
    pub fn new(pool: AnyPool, backend: Backend) -> Store {
        Store { pool, backend }
    }

    /// Apply this service's migrations (ignoring the other services' versions).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        bbb_sqlstore::migrate_shared(
            &self.pool,
            self.backend,
            sqlx::migrate!("./migrations/sqlite"),
            sqlx::migrate!("./migrations/postgres"),
        )
        .await
        .map_err(|e| anyhow::anyhow!("hooks migrations failed: {e}"))
    }

    /// One hook.
    pub async fn hook(&self, group: &str, id: &str) -> Result<Option<Hook>> {
        let sql =
            format!("SELECT {HOOK_COLUMNS} FROM hooks WHERE hook_group_id = $1 AND hook_id = $2");
        let row = sqlx::query(&sql)
            .bind(group)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(hook_from_row).transpose()
    }

    /// Every hook, or those of one group, by group and id.
    pub async fn hooks(&self, group: Option<&str>) -> Result<Vec<Hook>> {
        let rows = match group {
            Some(g) => {
                let sql = format!(
                    "SELECT {HOOK_COLUMNS} FROM hooks WHERE hook_group_id = $1 ORDER BY hook_id"
                );
                sqlx::query(&sql).bind(g).fetch_all(&self.pool).await?
            }
            None => {
                let sql =
                    format!("SELECT {HOOK_COLUMNS} FROM hooks ORDER BY hook_group_id, hook_id");
                sqlx::query(&sql).fetch_all(&self.pool).await?
            }
        };
        rows.iter().map(hook_from_row).collect()
    }

    /// The groups with at least one hook, sorted.
    pub async fn groups(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT hook_group_id FROM hooks ORDER BY hook_group_id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("hook_group_id"))
            .collect::<std::result::Result<_, _>>()?)
    }

    /// Insert a new hook; `false` if one with its ids exists already.
    pub async fn create(&self, h: &Hook) -> Result<bool> {
        let done = bind_hook(
            sqlx::query(
                "INSERT INTO hooks (hook_group_id, hook_id, metadata, task, bindings, schedule, \
                 trigger_schema, next_task_id, next_scheduled_date, trigger_token) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
            ),
            h,
        )?
        .bind(&h.trigger_token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replace a hook's definition and its next scheduled slot (a new taskId
    /// and date; a slot being fired is given up). The updated hook, or `None`
    /// if it does not exist.
    pub async fn update(&self, h: &Hook) -> Result<Option<Hook>> {
        let done = bind_hook(
            sqlx::query(
                "UPDATE hooks SET metadata = $3, task = $4, bindings = $5, schedule = $6, \
                 trigger_schema = $7, next_task_id = $8, next_scheduled_date = $9, \
                 fire_lease_until = NULL WHERE hook_group_id = $1 AND hook_id = $2",
            ),
            h,
        )?
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        self.hook(&h.hook_group_id, &h.hook_id).await
    }

    /// Set a hook's trigger token; `false` if the hook does not exist.
    pub async fn set_trigger_token(&self, group: &str, id: &str, token: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE hooks SET trigger_token = $3 WHERE hook_group_id = $1 AND hook_id = $2",
        )
        .bind(group)
        .bind(id)
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Remove a hook and the record of its firings (nothing if it does not exist).
    pub async fn delete(&self, group: &str, id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for table in ["hooks", "hooks_last_fires"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE hook_group_id = $1 AND hook_id = $2"
            ))
            .bind(group)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Record a firing (see [`INSERT_FIRE`] for a second one of the same task).
    pub async fn record_fire(&self, fire: &LastFire) -> Result<()> {
        bind_fire(sqlx::query(INSERT_FIRE), fire)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A hook's firings, newest first: at most `limit`, after the position
    /// `after` (`(task_create_time, task_id)` of the last one of the page before).
    pub async fn last_fires(
        &self,
        group: &str,
        id: &str,
        limit: i64,
        after: Option<(Millis, String)>,
    ) -> Result<Vec<LastFire>> {
        let base = format!(
            "SELECT {FIRE_COLUMNS} FROM hooks_last_fires WHERE hook_group_id = $1 AND hook_id = $2"
        );
        let order = "ORDER BY task_create_time DESC, task_id DESC";
        let rows = match after {
            None => {
                sqlx::query(&format!("{base} {order} LIMIT $3"))
                    .bind(group)
                    .bind(id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            Some((time, task_id)) => sqlx::query(&format!(
                "{base} AND (task_create_time < $3 OR (task_create_time = $3 AND task_id < $4)) \
                     {order} LIMIT $5"
            ))
            .bind(group)
            .bind(id)
            .bind(time)
            .bind(task_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?,
        };
        rows.iter().map(fire_from_row).collect()
    }

    /// Remove the records of firings before `before`; how many went.
    pub async fn expire_fires(&self, before: Millis) -> Result<u64> {
        let done = sqlx::query("DELETE FROM hooks_last_fires WHERE task_create_time < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Hooks whose scheduled slot has come by `now` and that no scheduler is
    /// firing, earliest first, at most `limit`.
    pub async fn due(&self, now: Millis, limit: i64) -> Result<Vec<Hook>> {
        let sql = format!(
            "SELECT {HOOK_COLUMNS} FROM hooks WHERE next_scheduled_date <= $1 \
             AND (fire_lease_until IS NULL OR fire_lease_until < $1) \
             ORDER BY next_scheduled_date LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(hook_from_row).collect()
    }

    /// When the scheduler next has something to do: the earliest scheduled
    /// slot nobody fires, or the earliest end of a firing's lease.
    pub async fn next_wakeup(&self) -> Result<Option<Millis>> {
        let row = sqlx::query(
            "SELECT (SELECT MIN(next_scheduled_date) FROM hooks WHERE fire_lease_until IS NULL) \
             AS slot, (SELECT MIN(fire_lease_until) FROM hooks) AS lease",
        )
        .fetch_one(&self.pool)
        .await?;
        let slot: Option<i64> = row.try_get("slot")?;
        let lease: Option<i64> = row.try_get("lease")?;
        Ok(slot.into_iter().chain(lease).min())
    }

    /// Take the due slot whose task is `task_id` for firing until
    /// `lease_until`; `false` if another scheduler has it, or the hook changed.
    pub async fn take_slot(
        &self,
        group: &str,
        id: &str,
        task_id: &str,
        now: Millis,
        lease_until: Millis,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE hooks SET fire_lease_until = $5 WHERE hook_group_id = $1 AND hook_id = $2 \
             AND next_task_id = $3 AND next_scheduled_date <= $4 \
             AND (fire_lease_until IS NULL OR fire_lease_until < $4)",
        )
        .bind(group)
        .bind(id)
        .bind(task_id)
        .bind(now)
        .bind(lease_until)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Give a taken slot back (to be fired again later), recording the
    /// failed attempt `fire` if any.
    pub async fn release_slot(
        &self,
        group: &str,
        id: &str,
        task_id: &str,
        fire: Option<&LastFire>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if let Some(f) = fire {
            bind_fire(sqlx::query(INSERT_FIRE), f)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE hooks SET fire_lease_until = NULL \
             WHERE hook_group_id = $1 AND hook_id = $2 AND next_task_id = $3",
        )
        .bind(group)
        .bind(id)
        .bind(task_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Close a fired slot: record `fire` (if the firing produced a record)
    /// and move the hook to its next slot (`next_task_id` at `next_date`), in
    /// one transaction; the slot must still be the one whose task is
    /// `task_id`.
    pub async fn finish_slot(
        &self,
        group: &str,
        id: &str,
        task_id: &str,
        fire: Option<&LastFire>,
        next_task_id: &str,
        next_date: Millis,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        if let Some(f) = fire {
            bind_fire(sqlx::query(INSERT_FIRE), f)
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query(
            "UPDATE hooks SET next_task_id = $4, next_scheduled_date = $5, fire_lease_until = NULL \
             WHERE hook_group_id = $1 AND hook_id = $2 AND next_task_id = $3",
        )
        .bind(group)
        .bind(id)
        .bind(task_id)
        .bind(next_task_id)
        .bind(next_date)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// The recorded Pulse queues of hooks.
    pub async fn queues(&self) -> Result<Vec<QueueRow>> {
        let rows = sqlx::query(
            "SELECT hook_group_id, hook_id, queue_name, bindings FROM hooks_queues \
             ORDER BY hook_group_id, hook_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(QueueRow {
                    hook_group_id: row.try_get("hook_group_id")?,
                    hook_id: row.try_get("hook_id")?,
                    queue_name: row.try_get("queue_name")?,
                    bindings: serde_json::from_value(json_column(row, "bindings")?)?,
                })
            })
            .collect()
    }

    /// Record a hook's queue and the bindings in place on it.
    pub async fn save_queue(&self, q: &QueueRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO hooks_queues (hook_group_id, hook_id, queue_name, bindings) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (hook_group_id, hook_id) DO UPDATE SET \
             queue_name = excluded.queue_name, bindings = excluded.bindings",
        )
        .bind(&q.hook_group_id)
        .bind(&q.hook_id)
        .bind(&q.queue_name)
        .bind(to_text(&q.bindings)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forget a hook's queue.
    pub async fn delete_queue(&self, group: &str, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM hooks_queues WHERE hook_group_id = $1 AND hook_id = $2")
            .bind(group)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
