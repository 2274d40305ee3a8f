//! The writes a transaction makes at commit: the rows a batched transaction held
//! back (task saves, `pending` changes, resolutions, the runs workers claimed),
//! its outbox messages and the `NOTIFY` of newly pending work.
//!
//! Each kind is written with multi-row statements. On PostgreSQL they all go in
//! one statement (data-modifying `WITH` parts, the notifications as its
//! `SELECT`), so committing a batch costs one round trip plus the `COMMIT`; on
//! SQLite, which has no data-modifying `WITH`, each part is its own statement.

use crate::db::Backend;
use crate::error::{ApiError, Result};
use crate::model::Task;
use bbb_pulse::Message;
use bbb_tcvalues::TaskState;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, Transaction};
use std::collections::BTreeMap;

/// Row writes a batched transaction holds back until commit.
#[derive(Default)]
pub struct Writes {
    /// Tasks to save, by id (the last save of a task wins).
    pub saves: BTreeMap<String, Task>,
    /// Runs to add to `pending`.
    pub enqueued: Vec<PendingRow>,
    /// Runs to remove from `pending`.
    pub dequeued: Vec<(String, i64)>,
    /// `(task_id, task_group_id, resolution)` for the dependency resolver.
    pub resolutions: Vec<(String, String, TaskState)>,
    /// Runs workers claimed, for their records.
    pub worker_tasks: Vec<WorkerTaskRow>,
}

/// One row of `worker_tasks`: a run a worker claimed.
pub struct WorkerTaskRow {
    /// The task queue the worker claimed from.
    pub task_queue_id: String,
    /// The worker's group.
    pub worker_group: String,
    /// The worker's id.
    pub worker_id: String,
    /// The task.
    pub task_id: String,
    /// The run claimed.
    pub run_id: i64,
}

/// One row of `pending`.
pub struct PendingRow {
    /// The task.
    pub task_id: String,
    /// Its run.
    pub run_id: i64,
    /// Where workers claim it.
    pub task_queue_id: String,
    /// The [rank](bbb_tcvalues::Priority::rank) of the task's priority.
    pub priority: i64,
    /// When the run became pending (FIFO order within a priority).
    pub inserted: i64,
    /// The task's deadline.
    pub deadline: i64,
    /// The coalescing key under which the run may be superseded (only run 0 of
    /// a task with one, see `ops::coalesce`), else empty.
    pub coalesce_key: String,
    /// With a key: the task's `created` (ms), which orders the tasks of a key.
    pub created: i64,
    /// With a key: how many tasks it stands for (superseded by it, directly
    /// or through a task it superseded).
    pub supersedes: i64,
}

impl PendingRow {
    /// The row for the last run of `task`.
    pub fn of(task: &Task) -> Result<PendingRow> {
        let run = task
            .last_run()
            .ok_or_else(|| ApiError::Internal("no run to enqueue".into()))?;
        Ok(PendingRow {
            task_id: task.task_id.clone(),
            run_id: run.run_id,
            task_queue_id: task.def.task_queue_id.clone(),
            priority: task.def.priority.rank(),
            inserted: run.scheduled,
            deadline: task.deadline,
            coalesce_key: String::new(),
            created: 0,
            supersedes: 0,
        })
    }
}

/// The column values a task save writes besides its id.
pub struct SavedState {
    /// `state`.
    pub state: String,
    /// `open` (1 while unscheduled, pending or running).
    pub open: i64,
    /// `runs` as JSON.
    pub runs: String,
}

impl SavedState {
    /// What `task` stores.
    pub fn of(task: &Task) -> Result<SavedState> {
        let state = task.state();
        Ok(SavedState {
            state: state.as_str().to_owned(),
            open: i64::from(!state.is_resolved()),
            runs: serde_json::to_string(&task.runs)?,
        })
    }
}

/// A bound value.
enum Arg {
    Text(String),
    Int(i64),
    MaybeInt(Option<i64>),
}

/// SQL text with its arguments, numbered as they are added.
#[derive(Default)]
struct Sql {
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    fn arg(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("${}", self.args.len())
    }

    fn text(&mut self, s: impl Into<String>) -> String {
        self.arg(Arg::Text(s.into()))
    }

    fn int(&mut self, i: i64) -> String {
        self.arg(Arg::Int(i))
    }

    fn query(&self) -> Query<'_, Any, AnyArguments<'_>> {
        let mut q = sqlx::query(&self.text);
        for a in &self.args {
            q = match a {
                Arg::Text(s) => q.bind(s.as_str()),
                Arg::Int(i) => q.bind(*i),
                Arg::MaybeInt(i) => q.bind(*i),
            };
        }
        q
    }
}

/// Statements under construction: one combined statement (PostgreSQL) or one
/// statement per part (SQLite).
struct Parts {
    combine: bool,
    cur: Sql,
    ctes: Vec<String>,
    done: Vec<Sql>,
}

impl Parts {
    /// The statement the next part binds its arguments into.
    fn sql(&mut self) -> &mut Sql {
        &mut self.cur
    }

    /// End a part whose SQL is `fragment`.
    fn end(&mut self, fragment: String) {
        if self.combine {
            self.ctes.push(fragment);
        } else {
            let args = std::mem::take(&mut self.cur.args);
            self.done.push(Sql {
                text: fragment,
                args,
            });
        }
    }

    /// The statements, the last one selecting `tail` (PostgreSQL only).
    fn finish(mut self, tail: Option<String>) -> Vec<Sql> {
        if self.combine {
            if self.ctes.is_empty() && tail.is_none() {
                return vec![];
            }
            let mut text = String::new();
            if !self.ctes.is_empty() {
                let parts: Vec<String> = self
                    .ctes
                    .iter()
                    .enumerate()
                    .map(|(i, f)| format!("w{i} AS ({f})"))
                    .collect();
                text = format!("WITH {} ", parts.join(", "));
            }
            text.push_str(&format!(
                "SELECT {}",
                tail.unwrap_or_else(|| "1".to_string())
            ));
            self.cur.text = text;
            self.done.push(self.cur);
        }
        self.done
    }
}

/// Rows per statement part (at most 7 arguments each).
const ROWS: usize = 200;

/// `(...), (...)`: one tuple per item, each made by `row`.
/// The tuples are padded with `pad` rows (which the statement ignores) up to the
/// next power of two, so a few statement texts serve every batch size and stay
/// in the connections' prepared-statement caches.
fn tuples<T>(
    sql: &mut Sql,
    items: &[T],
    row: impl Fn(&mut Sql, &T) -> Result<Vec<String>>,
    pad: impl Fn(&mut Sql) -> Vec<String>,
) -> Result<String> {
    let n = items.len().next_power_of_two();
    let mut out = Vec::with_capacity(n);
    for it in items {
        out.push(format!("({})", row(sql, it)?.join(", ")));
    }
    while out.len() < n {
        out.push(format!("({})", pad(sql).join(", ")));
    }
    Ok(out.join(", "))
}

/// `n` padding columns of empty text.
fn blanks(sql: &mut Sql, n: usize) -> Vec<String> {
    (0..n).map(|_| sql.text("")).collect()
}

/// The columns `exchange`, `routing_key`, `cc` and `payload` of a message
/// (in the outbox and the feeds).
fn message_cells(sql: &mut Sql, m: &Message) -> Result<Vec<String>> {
    Ok(vec![
        sql.text(m.exchange.clone()),
        sql.text(m.routing_key.clone()),
        sql.text(serde_json::to_string(&m.cc)?),
        sql.text(serde_json::to_string(&m.payload)?),
    ])
}

/// Write everything `t` holds back, plus `outbox`, the copies of messages
/// `feed` gives (feed name, message; see [`crate::feeds`]) and the
/// notifications of `woke` (task queue → newly pending runs, PostgreSQL only),
/// within `tx`.
pub async fn write(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    writes: Option<Writes>,
    outbox: &[Message],
    feed: &[(String, &Message)],
    woke: &BTreeMap<String, usize>,
    instance: &str,
) -> Result<()> {
    let pg = backend == Backend::Postgres;
    // Many rows (a big resolver pass) are written in several statements.
    let small = writes.as_ref().is_none_or(|w| {
        w.saves.len() <= ROWS
            && w.enqueued.len() <= ROWS
            && w.dequeued.len() <= ROWS
            && w.resolutions.len() <= ROWS
            && w.worker_tasks.len() <= ROWS
    }) && outbox.len() <= ROWS
        && feed.len() <= ROWS;
    let mut parts = Parts {
        combine: pg && small,
        cur: Sql::default(),
        ctes: Vec::new(),
        done: Vec::new(),
    };
    if let Some(w) = writes {
        let saves: Vec<&Task> = w.saves.values().collect();
        for chunk in saves.chunks(ROWS) {
            let sql = parts.sql();
            let values = tuples(
                sql,
                chunk,
                |sql, task| {
                    let st = SavedState::of(task)?;
                    Ok(vec![
                        sql.text(task.task_id.clone()),
                        sql.text(st.state),
                        sql.int(st.open),
                        sql.arg(Arg::MaybeInt(task.taken_until)),
                        sql.int(task.retries_left),
                        sql.text(st.runs),
                        sql.int(task.ever_resolved as i64),
                    ])
                },
                |sql| {
                    // No task has an empty id: the row updates nothing.
                    vec![
                        sql.text(""),
                        sql.text(""),
                        sql.int(0),
                        sql.arg(Arg::MaybeInt(None)),
                        sql.int(0),
                        sql.text(""),
                        sql.int(0),
                    ]
                },
            )?;
            parts.end(format!(
                "UPDATE tasks SET state = v.column2, open = v.column3, taken_until = v.column4, \
                 retries_left = v.column5, runs = v.column6, ever_resolved = v.column7 \
                 FROM (VALUES {values}) AS v WHERE tasks.task_id = v.column1"
            ));
        }
        for chunk in w.dequeued.chunks(ROWS) {
            let sql = parts.sql();
            let values = tuples(
                sql,
                chunk,
                |sql, (task_id, run_id)| Ok(vec![sql.text(task_id.clone()), sql.int(*run_id)]),
                |sql| vec![sql.text(""), sql.int(-1)],
            )?;
            parts.end(format!(
                "DELETE FROM pending WHERE (task_id, run_id) IN (VALUES {values})"
            ));
        }
        for chunk in w.enqueued.chunks(ROWS) {
            let sql = parts.sql();
            let values = tuples(
                sql,
                chunk,
                |sql, p| {
                    Ok(vec![
                        sql.text(p.task_id.clone()),
                        sql.int(p.run_id),
                        sql.text(p.task_queue_id.clone()),
                        sql.int(p.priority),
                        sql.int(p.inserted),
                        sql.int(p.deadline),
                        sql.text(p.coalesce_key.clone()),
                        sql.int(p.created),
                        sql.int(p.supersedes),
                    ])
                },
                |sql| {
                    vec![
                        sql.text(""),
                        sql.int(-1),
                        sql.text(""),
                        sql.int(0),
                        sql.int(0),
                        sql.int(0),
                        sql.text(""),
                        sql.int(0),
                        sql.int(0),
                    ]
                },
            )?;
            parts.end(format!(
                "INSERT INTO pending (task_id, run_id, task_queue_id, priority, inserted, deadline, \
                 coalesce_key, created, supersedes) SELECT * FROM (VALUES {values}) AS v \
                 WHERE v.column1 <> '' ON CONFLICT DO NOTHING"
            ));
        }
        for chunk in w.resolutions.chunks(ROWS) {
            let sql = parts.sql();
            let values = tuples(
                sql,
                chunk,
                |sql, (task_id, group, resolution)| {
                    Ok(vec![
                        sql.text(task_id.clone()),
                        sql.text(group.clone()),
                        sql.text(resolution.as_str()),
                    ])
                },
                |sql| blanks(sql, 3),
            )?;
            parts.end(format!(
                "INSERT INTO resolutions (task_id, task_group_id, resolution) \
                 SELECT * FROM (VALUES {values}) AS v WHERE v.column1 <> ''"
            ));
        }
        for chunk in w.worker_tasks.chunks(ROWS) {
            let sql = parts.sql();
            let values = tuples(
                sql,
                chunk,
                |sql, r| {
                    Ok(vec![
                        sql.text(r.task_queue_id.clone()),
                        sql.text(r.worker_group.clone()),
                        sql.text(r.worker_id.clone()),
                        sql.text(r.task_id.clone()),
                        sql.int(r.run_id),
                    ])
                },
                |sql| {
                    let mut pad = blanks(sql, 4);
                    pad.push(sql.int(-1));
                    pad
                },
            )?;
            // Rows keep their order: the ids the table gives them are the claims' order.
            parts.end(format!(
                "INSERT INTO worker_tasks (task_queue_id, worker_group, worker_id, task_id, run_id) \
                 SELECT * FROM (VALUES {values}) AS v WHERE v.column1 <> ''"
            ));
        }
    }
    for chunk in outbox.chunks(ROWS) {
        let sql = parts.sql();
        let values = tuples(sql, chunk, message_cells, |sql| blanks(sql, 4))?;
        parts.end(format!(
            "INSERT INTO outbox (exchange, routing_key, cc, payload) \
             SELECT * FROM (VALUES {values}) AS v WHERE v.column1 <> ''"
        ));
    }
    for chunk in feed.chunks(ROWS) {
        let sql = parts.sql();
        let values = tuples(
            sql,
            chunk,
            |sql, (name, m)| {
                let mut cells = vec![sql.text(name.clone())];
                cells.extend(message_cells(sql, m)?);
                Ok(cells)
            },
            |sql| blanks(sql, 5),
        )?;
        parts.end(format!(
            "INSERT INTO feed (feed, exchange, routing_key, cc, payload) \
             SELECT * FROM (VALUES {values}) AS v WHERE v.column1 <> ''"
        ));
    }
    let mut statements = if pg && !woke.is_empty() {
        // Announce newly pending work to the other processes on the database.
        let combined = parts.combine;
        let notify = |sql: &mut Sql| -> String {
            woke.iter()
                .map(|(q, n)| {
                    format!(
                        "pg_notify({}, {})",
                        sql.text(crate::db::PENDING_CHANNEL),
                        sql.text(format!("{instance}\n{n}\n{q}"))
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        if combined {
            let tail = notify(parts.sql());
            parts.finish(Some(tail))
        } else {
            let mut done = parts.finish(None);
            let mut sql = Sql::default();
            let calls = notify(&mut sql);
            sql.text = format!("SELECT {calls}");
            done.push(sql);
            done
        }
    } else {
        parts.finish(None)
    };
    for s in statements.iter_mut() {
        s.query().execute(&mut **tx).await?;
    }
    Ok(())
}
