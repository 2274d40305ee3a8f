//! Bridge and queue health (`/health`): per legacy master, its build
//! requests waiting and running (the bridge's mapping database) and each
//! bridge process's last health snapshot (claims renewed, claim-expired and
//! deadline-exceeded runs, the reflector's last pass and lag, the messages it
//! parked and why); per task queue, its pending and claimed runs and the
//! workers seen with their last task (the queue's tables). The figures are
//! one fragment (`/health/figures`) the page fetches again every few
//! seconds (`/static/live.js`); without JavaScript the page shows the
//! figures of its load.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bbb_bridge::health::HealthSnapshot;
use bbb_state::{HealthRow, MasterRequests};
use maud::{Markup, html};
use sqlx::Row;

use super::{duration, failed, time};
use crate::Web;
use crate::layout;

/// How often the page fetches its figures again, ms.
pub(crate) const REFRESH_MS: u32 = 3000;

/// A snapshot older than this many of the bridge's snapshot intervals (3 s)
/// is marked stale: its process stopped or cannot write.
const STALE_MS: i64 = 30_000;

/// One task queue's figures.
#[derive(Default)]
struct TaskQueueRow {
    pending: i64,
    claimed: i64,
    workers: i64,
    /// The newest run a worker of it claimed: worker group, worker id, task, run.
    last: Option<(String, String, String, i64)>,
}

/// One worker seen.
struct WorkerRow {
    task_queue_id: String,
    worker_group: String,
    worker_id: String,
    last_active: i64,
    last: Option<(String, i64)>,
}

/// The bridge's side: each master's requests and each process's snapshot.
struct Bridges {
    requests: Vec<MasterRequests>,
    processes: Vec<(HealthRow, HealthSnapshot)>,
}

/// Everything the figures show.
struct Figures {
    now: i64,
    bridges: Result<Option<Bridges>, String>,
    queues: BTreeMap<String, TaskQueueRow>,
    workers: Vec<WorkerRow>,
}

async fn bridges(web: &Web) -> Result<Option<Bridges>, String> {
    let Some(db) = web.bridge_state.db().await? else {
        return Ok(None);
    };
    let requests = db.requests_by_master().await.map_err(|e| e.to_string())?;
    let rows = db.health().await.map_err(|e| e.to_string())?;
    let processes = rows
        .into_iter()
        .map(|r| {
            let s = serde_json::from_str(&r.snapshot).unwrap_or_default();
            (r, s)
        })
        .collect();
    Ok(Some(Bridges {
        requests,
        processes,
    }))
}

/// The queue's figures: four grouped queries and one over the workers.
async fn queues(
    web: &Web,
    now: i64,
) -> Result<(BTreeMap<String, TaskQueueRow>, Vec<WorkerRow>), String> {
    let pool = &web.queue.db.pool;
    let mut out: BTreeMap<String, TaskQueueRow> = BTreeMap::new();
    let e = |e: sqlx::Error| e.to_string();
    for r in sqlx::query("SELECT task_queue_id FROM task_queues WHERE expires > $1")
        .bind(now)
        .fetch_all(pool)
        .await
        .map_err(e)?
    {
        out.entry(r.try_get("task_queue_id").map_err(e)?)
            .or_default();
    }
    for r in sqlx::query("SELECT task_queue_id, COUNT(*) AS n FROM pending GROUP BY task_queue_id")
        .fetch_all(pool)
        .await
        .map_err(e)?
    {
        out.entry(r.try_get("task_queue_id").map_err(e)?)
            .or_default()
            .pending = r.try_get("n").map_err(e)?;
    }
    for r in sqlx::query(
        "SELECT task_queue_id, COUNT(*) AS n FROM tasks WHERE state = 'running' GROUP BY task_queue_id",
    )
    .fetch_all(pool)
    .await
    .map_err(e)?
    {
        out.entry(r.try_get("task_queue_id").map_err(e)?)
            .or_default()
            .claimed = r.try_get("n").map_err(e)?;
    }
    for r in sqlx::query(
        "SELECT k.task_queue_id, k.worker_group, k.worker_id, k.task_id, k.run_id FROM worker_tasks k \
         WHERE k.id IN (SELECT MAX(id) FROM worker_tasks GROUP BY task_queue_id)",
    )
    .fetch_all(pool)
    .await
    .map_err(e)?
    {
        out.entry(r.try_get("task_queue_id").map_err(e)?)
            .or_default()
            .last = Some((
            r.try_get("worker_group").map_err(e)?,
            r.try_get("worker_id").map_err(e)?,
            r.try_get("task_id").map_err(e)?,
            r.try_get("run_id").map_err(e)?,
        ));
    }
    let mut workers = Vec::new();
    for r in sqlx::query(
        "SELECT w.task_queue_id, w.worker_group, w.worker_id, w.last_date_active, \
         (SELECT k.task_id FROM worker_tasks k WHERE k.task_queue_id = w.task_queue_id \
          AND k.worker_group = w.worker_group AND k.worker_id = w.worker_id ORDER BY k.id DESC LIMIT 1) AS task_id, \
         (SELECT k.run_id FROM worker_tasks k WHERE k.task_queue_id = w.task_queue_id \
          AND k.worker_group = w.worker_group AND k.worker_id = w.worker_id ORDER BY k.id DESC LIMIT 1) AS run_id \
         FROM workers w WHERE w.expires > $1 \
         ORDER BY w.task_queue_id, w.worker_group, w.worker_id LIMIT 500",
    )
    .bind(now)
    .fetch_all(pool)
    .await
    .map_err(e)?
    {
        let w = WorkerRow {
            task_queue_id: r.try_get("task_queue_id").map_err(e)?,
            worker_group: r.try_get("worker_group").map_err(e)?,
            worker_id: r.try_get("worker_id").map_err(e)?,
            last_active: r.try_get("last_date_active").map_err(e)?,
            last: r
                .try_get::<Option<String>, _>("task_id")
                .map_err(e)?
                .zip(r.try_get::<Option<i64>, _>("run_id").map_err(e)?),
        };
        out.entry(w.task_queue_id.clone()).or_default().workers += 1;
        workers.push(w);
    }
    Ok((out, workers))
}

async fn read(web: &Web) -> Result<Figures, String> {
    let now = web.queue.clock.now_ms();
    let (queues, workers) = queues(web, now).await?;
    Ok(Figures {
        now,
        bridges: bridges(web).await,
        queues,
        workers,
    })
}

/// `/health`: the page, with the figures of its load.
pub(crate) async fn page(State(web): State<Web>, headers: HeaderMap) -> Response {
    let who = web.login.signed_in(&headers);
    match read(&web).await {
        Ok(f) => {
            let body = html! {
                p.lede {
                    "The legacy masters' build requests and the bridge processes' figures, "
                    "and the queue's task queues and workers. The figures refresh every "
                    (REFRESH_MS / 1000) " seconds."
                }
                noscript { p.muted { "Without JavaScript, reload the page for new figures." } }
                div #figures data-live="/health/figures" data-every=(REFRESH_MS) aria-live="polite" {
                    (render(&f))
                }
                script src="/static/live.js" defer {}
            };
            layout::page("Health", who.as_ref(), body).into_response()
        }
        Err(e) => failed(who.as_ref(), "Health", &e),
    }
}

/// `/health/figures`: the figures alone, an HTML fragment.
pub(crate) async fn figures(State(web): State<Web>) -> Response {
    match read(&web).await {
        Ok(f) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            render(&f).into_string(),
        )
            .into_response(),
        Err(e) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            html! { p.error role="alert" { (e) } },
        )
            .into_response(),
    }
}

fn render(f: &Figures) -> Markup {
    html! {
        p.muted { "Figures as of " span #as-of { (time(f.now)) } "." }
        section aria-labelledby="masters-h" {
            h2 #masters-h { "Legacy masters" }
            @match &f.bridges {
                Err(e) => { p.error role="alert" { (e) } }
                Ok(None) => { p.muted { "No bridge has run with this configuration's mapping database." } }
                Ok(Some(b)) => { (masters(b, f.now)) }
            }
        }
        section aria-labelledby="queues-h" {
            h2 #queues-h { "Task queues" }
            @if f.queues.is_empty() {
                p.muted { "No task queue has been used yet." }
            } @else {
                div.scroll {
                    table #task-queues {
                        thead { tr {
                            th scope="col" { "Task queue" }
                            th scope="col" { "Pending" }
                            th scope="col" { "Claimed" }
                            th scope="col" { "Workers seen" }
                            th scope="col" { "Last task claimed" }
                        } }
                        tbody {
                            @for (id, q) in &f.queues {
                                tr data-task-queue=(id) {
                                    th scope="row" { (id) }
                                    td data-figure="pending" { (q.pending) }
                                    td data-figure="claimed" { (q.claimed) }
                                    td data-figure="workers" { (q.workers) }
                                    td {
                                        @if let Some((group, worker, task, run)) = &q.last {
                                            a href={"/tasks/" (task)} { code { (task) } } " run " (run)
                                            " by " (group) "/" (worker)
                                        } @else { span.muted { "–" } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="workers-h" {
            h2 #workers-h { "Workers" }
            @if f.workers.is_empty() {
                p.muted { "No worker seen in the last day." }
            } @else {
                div.scroll {
                    table #workers {
                        thead { tr {
                            th scope="col" { "Task queue" }
                            th scope="col" { "Worker" }
                            th scope="col" { "Last active" }
                            th scope="col" { "Last task" }
                        } }
                        tbody {
                            @for w in &f.workers {
                                tr {
                                    td { (w.task_queue_id) }
                                    th scope="row" { (w.worker_group) "/" (w.worker_id) }
                                    td { (duration(f.now - w.last_active)) " ago" }
                                    td {
                                        @if let Some((task, run)) = &w.last {
                                            a href={"/tasks/" (task)} { code { (task) } } " run " (run)
                                        } @else { span.muted { "–" } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn masters(b: &Bridges, now: i64) -> Markup {
    let mut names: Vec<&str> = b.requests.iter().map(|r| r.master.as_str()).collect();
    names.extend(b.processes.iter().map(|(r, _)| r.master.as_str()));
    names.sort_unstable();
    names.dedup();
    let parked: Vec<(&HealthRow, &bbb_bridge::Parked)> = b
        .processes
        .iter()
        .flat_map(|(r, s)| s.parked.iter().map(move |p| (r, p)))
        .collect();
    html! {
        @if names.is_empty() {
            p.muted { "No bridge process has reported yet." }
        } @else {
            div.scroll {
                table #masters {
                    thead { tr {
                        th scope="col" { "Master" }
                        th scope="col" { "Requests waiting" }
                        th scope="col" { "Builds running" }
                        th scope="col" { "Bridge processes" }
                    } }
                    tbody {
                        @for m in &names {
                            @let r = b.requests.iter().find(|r| r.master == *m).cloned().unwrap_or_default();
                            tr data-master=(m) {
                                th scope="row" { (m) }
                                td data-figure="pending" { (r.pending) }
                                td data-figure="running" { (r.running) }
                                td { (b.processes.iter().filter(|(p, _)| p.master == *m).count()) }
                            }
                        }
                    }
                }
            }
            @if !b.processes.is_empty() {
                h3 { "Bridge processes" }
                div.scroll {
                    table #bridge-processes {
                        thead { tr {
                            th scope="col" { "Master" }
                            th scope="col" { "Process" }
                            th scope="col" { "Reported" }
                            th scope="col" { "Claims renewed" }
                            th scope="col" { "Claim expired" }
                            th scope="col" { "Deadline exceeded" }
                            th scope="col" { "Reflector pass" }
                            th scope="col" { "Reflector lag" }
                            th scope="col" { "Parked" }
                        } }
                        tbody {
                            @for (row, s) in &b.processes {
                                @let age = now - row.updated;
                                tr data-process={(row.master) "/" (row.instance)} class=[(age > STALE_MS).then_some("stale")] {
                                    td { (row.master) }
                                    th scope="row" { (row.instance) }
                                    td {
                                        (duration(age)) " ago"
                                        @if age > STALE_MS { " " strong.badge.bad { "stale" } }
                                    }
                                    td data-figure="reclaims" {
                                        (s.reclaims.get("ok").copied().unwrap_or(0))
                                        @let refused = s.reclaims.get("refused").copied().unwrap_or(0);
                                        @let errors = s.reclaims.get("error").copied().unwrap_or(0);
                                        @if refused + errors > 0 {
                                            " " span.muted { "(" (refused) " refused, " (errors) " failed)" }
                                        }
                                    }
                                    td data-figure="claim-expired" { (s.claim_expired) }
                                    td data-figure="deadline-exceeded" {
                                        (s.deadline_exceeded)
                                        @if s.past_deadline > 0 { " " span.muted { "(+" (s.past_deadline) " settled by the reflector)" } }
                                    }
                                    @match &s.reflector {
                                        Some(p) => {
                                            td data-figure="reflector-pass" { (duration(p.took_ms)) }
                                            @let lag = now - p.ended;
                                            td data-figure="reflector-lag" class=[(lag > 2 * p.interval_ms + STALE_MS).then_some("bad")] {
                                                (duration(lag)) " since the last pass (every " (duration(p.interval_ms)) ")"
                                            }
                                        }
                                        None => {
                                            td data-figure="reflector-pass" { span.muted { "no reflector" } }
                                            td data-figure="reflector-lag" { span.muted { "–" } }
                                        }
                                    }
                                    td data-figure="parked" class=[(s.parked_total > 0).then_some("bad")] { (s.parked_total) }
                                }
                            }
                        }
                    }
                }
            }
            @if !parked.is_empty() {
                h3 { "Parked messages" }
                div.scroll {
                    table #parked {
                        thead { tr {
                            th scope="col" { "When" }
                            th scope="col" { "Process" }
                            th scope="col" { "Queue" }
                            th scope="col" { "Why" }
                        } }
                        tbody {
                            @for (row, p) in parked.iter().rev() {
                                tr {
                                    td { (time(p.at)) }
                                    td { (row.master) "/" (row.instance) }
                                    td { code { (p.queue) } }
                                    td { (p.reason) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
