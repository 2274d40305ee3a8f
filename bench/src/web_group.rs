//! The web UI's task-group inspector on a 10,000-task group: how long its
//! pages take to serve (p50/p99, one page at a time, as a person loads them)
//! and what each costs the database: the statements the page made (counted
//! by `bbb-web`) and, on PostgreSQL, the rows it read from the `tasks` table
//! (from `pg_stat_user_tables`).

use crate::queue::pct;
use bbb_auth::Credentials;
use bbb_hooks::client::HawkClient;
use bbb_queue::{Clock, QueueConfig};
use bbb_testdb::{PgDatabase, TempDir};
use futures::future::join_all;
use serde_json::{Value, json};
use sqlx::Row;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Backends: `sqlite`, `postgres`.
    pub backends: Vec<String>,
    /// Page loads measured per kind of page.
    pub samples: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backends: vec!["sqlite".into(), "postgres".into()],
            samples: 200,
        }
    }
}

/// The shape of the group: the decision task, 100 tasks depending on it,
/// 98 depending on each of those, 98 tasks each collecting 100 of the
/// previous level and one final task: 10,000 tasks.
fn graph(group: &str) -> Vec<(String, String, Vec<String>)> {
    let slug = bbb_queue::validate::slugid;
    let mut out = vec![(group.to_owned(), "decision".to_owned(), vec![])];
    let mids: Vec<String> = (0..100).map(|_| slug()).collect();
    for (i, m) in mids.iter().enumerate() {
        out.push((m.clone(), format!("build-{i}"), vec![group.to_owned()]));
    }
    let mut leaves = Vec::new();
    for (i, m) in mids.iter().enumerate() {
        for j in 0..98 {
            let id = slug();
            out.push((id.clone(), format!("test-{i}-{j}"), vec![m.clone()]));
            leaves.push(id);
        }
    }
    let mut collectors = Vec::new();
    for (i, chunk) in leaves.chunks(100).enumerate() {
        let id = slug();
        out.push((id.clone(), format!("collect-{i}"), chunk.to_vec()));
        collectors.push(id);
    }
    out.push((slug(), "final".to_owned(), collectors));
    out
}

struct Server {
    running: bbb_queue::Running,
    http: HawkClient,
    root: Credentials,
    db_url: String,
    _pg: Option<PgDatabase>,
    _dir: TempDir,
}

async fn server(backend: &str) -> anyhow::Result<Server> {
    let dir = TempDir::new("bbb-bench-web");
    let mut pg = None;
    let db_url = if backend == "postgres" {
        pg.insert(PgDatabase::create("bbb_bench_web").await?)
            .url()
            .to_owned()
    } else {
        format!("sqlite://{}/queue.sqlite", dir.0.display())
    };
    let token = bbb_queue::server::random_token();
    let cfg = QueueConfig {
        listen: "127.0.0.1:0".into(),
        database_url: db_url.clone().into(),
        database_max_connections: 20,
        root_access_token: Some(token.clone().into()),
        blob_dir: dir.0.join("blobs"),
        // The background loops stay out of the figures.
        resolver_interval_ms: 3_600_000,
        ..QueueConfig::default()
    };
    let running = bbb_queue::start_with(
        cfg,
        Clock::system(),
        vec![bbb_web::mount(bbb_login::Login::default())],
    )
    .await?;
    let http = HawkClient::new(&running.root_url, running.queue.clock.clone());
    Ok(Server {
        running,
        http,
        root: Credentials {
            client_id: "root".into(),
            access_token: token,
            certificate: None,
        },
        db_url,
        _pg: pg,
        _dir: dir,
    })
}

/// Create the group's tasks through the queue's API, level by level, 16 at a time.
async fn create(
    s: &Server,
    tasks: &[(String, String, Vec<String>)],
    group: &str,
) -> anyhow::Result<()> {
    let now = chrono::Utc::now().timestamp_millis();
    let at = |ms: i64| bbb_queue::time::fmt_ms(now + ms);
    let (created, deadline, expires) = (at(0), at(3 * 3_600_000), at(24 * 3_600_000));
    // Levels: a task comes after every task it depends on.
    let mut level_of: std::collections::HashMap<&str, usize> = Default::default();
    let mut levels: Vec<Vec<(String, Value)>> = Vec::new();
    for (id, name, deps) in tasks {
        let level = deps
            .iter()
            .map(|d| level_of[d.as_str()] + 1)
            .max()
            .unwrap_or(0);
        level_of.insert(id, level);
        if levels.len() <= level {
            levels.resize(level + 1, Vec::new());
        }
        levels[level].push((
            id.clone(),
            json!({
                "taskQueueId": "bench/web",
                "taskGroupId": group,
                "created": created, "deadline": deadline, "expires": expires,
                "dependencies": deps,
                "payload": {},
                "metadata": {"name": name, "description": "a task of the web benchmark", "owner": "bench@example.com", "source": "https://example.com/bench"},
            }),
        ));
    }
    for level in levels {
        let level = Arc::new(level);
        let next = Arc::new(AtomicUsize::new(0));
        let loops = (0..16).map(|_| {
            let (level, next) = (level.clone(), next.clone());
            async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((id, def)) = level.get(i) else {
                        return anyhow::Ok(());
                    };
                    let url = s.http.url("queue", &format!("task/{id}"));
                    let a = s
                        .http
                        .call(Some(&s.root), None, "PUT", &url, Some(def))
                        .await
                        .map_err(anyhow::Error::msg)?;
                    anyhow::ensure!(a.is_success(), "createTask: {} {}", a.status, a.body);
                }
            }
        });
        for r in join_all(loops).await {
            r?;
        }
    }
    Ok(())
}

/// Rows read from the `tasks` table so far (PostgreSQL's statistics).
async fn tasks_rows_read(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    let row = sqlx::query(
        "SELECT COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0) AS n \
         FROM pg_stat_user_tables WHERE relname = 'tasks'",
    )
    .fetch_one(pool)
    .await?;
    Ok(row.try_get("n")?)
}

/// The database's plan of the inspector's statements that read a group's
/// rows: the counts by state and a page filtered by name.
async fn plans(
    db: &bbb_queue::db::Db,
    group: &str,
) -> anyhow::Result<Vec<(&'static str, Vec<String>)>> {
    let (explain, column) = match db.backend {
        bbb_queue::db::Backend::Postgres => ("EXPLAIN", "QUERY PLAN"),
        bbb_queue::db::Backend::Sqlite => ("EXPLAIN QUERY PLAN", "detail"),
    };
    let statements = [
        (
            "the counts by state",
            "SELECT state, COUNT(*) AS n FROM tasks WHERE task_group_id = $1 GROUP BY state ORDER BY state",
        ),
        (
            "a page filtered by name",
            "SELECT task_id FROM tasks WHERE task_group_id = $1 AND task_id > '' \
             AND LOWER(name) LIKE '%test-42-%' ORDER BY task_id LIMIT 201",
        ),
    ];
    let mut out = Vec::new();
    for (what, sql) in statements {
        let rows = sqlx::query(&format!("{explain} {sql}"))
            .bind(group)
            .fetch_all(&db.pool)
            .await?;
        let lines = rows
            .iter()
            .map(|r| r.try_get::<String, _>(column))
            .collect::<Result<_, _>>()?;
        out.push((what, lines));
    }
    Ok(out)
}

/// One kind of page measured.
struct Figures {
    what: String,
    p50: f64,
    p99: f64,
    bytes: usize,
    statements: f64,
    rows: Option<f64>,
}

async fn measure(
    s: &Server,
    pg: Option<&sqlx::PgPool>,
    what: &str,
    path: &str,
    samples: usize,
) -> anyhow::Result<Figures> {
    let http = reqwest::Client::new();
    let url = format!("{}{path}", s.running.root_url);
    for _ in 0..3 {
        http.get(&url)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
    }
    // PostgreSQL publishes a connection's statistics within 10 s of its last use.
    let settle = Duration::from_secs(11);
    let rows_before = match pg {
        Some(p) => {
            tokio::time::sleep(settle).await;
            Some(tasks_rows_read(p).await?)
        }
        None => None,
    };
    let statements_before = bbb_web::queries();
    let mut times = Vec::with_capacity(samples);
    let mut bytes = 0;
    for _ in 0..samples {
        let t = Instant::now();
        let body = http
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        times.push(t.elapsed());
        bytes = body.len();
    }
    let statements = (bbb_web::queries() - statements_before) as f64 / samples as f64;
    let rows = match (pg, rows_before) {
        (Some(p), Some(before)) => {
            tokio::time::sleep(settle).await;
            Some((tasks_rows_read(p).await? - before) as f64 / samples as f64)
        }
        _ => None,
    };
    times.sort();
    Ok(Figures {
        what: what.to_owned(),
        p50: pct(&times, 0.5),
        p99: pct(&times, 0.99),
        bytes,
        statements,
        rows,
    })
}

/// Run the benchmark and print its figures.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    for backend in &opts.backends {
        let s = server(backend).await?;
        let group = bbb_queue::validate::slugid();
        let tasks = graph(&group);
        let t = Instant::now();
        create(&s, &tasks, &group).await?;
        println!(
            "{backend}: a group of {} tasks created in {:.1} s",
            tasks.len(),
            t.elapsed().as_secs_f64()
        );
        let pg = if backend == "postgres" {
            let pool = sqlx::PgPool::connect(&s.db_url).await?;
            // As autovacuum leaves a table that stopped changing: statistics
            // for the planner, and the visibility map that lets an
            // index-only scan skip the table's rows.
            sqlx::query("VACUUM (ANALYZE) tasks").execute(&pool).await?;
            Some(pool)
        } else {
            None
        };
        for (what, plan) in plans(&s.running.queue.db, &group).await? {
            println!("plan of {what}:");
            for line in plan {
                println!("    {line}");
            }
        }
        let mut sorted: Vec<&str> = tasks.iter().map(|(id, _, _)| id.as_str()).collect();
        sorted.sort();
        let last_page_start = (sorted.len() - 1) / bbb_web::PAGE_SIZE * bbb_web::PAGE_SIZE;
        let last_page_after = sorted[last_page_start - 1];
        let build = &tasks[1].0;
        let pages = [
            ("first page", format!("/groups/{group}")),
            (
                "a state (pending, 1 task)",
                format!("/groups/{group}?state=pending"),
            ),
            (
                "a state (unscheduled, first page)",
                format!("/groups/{group}?state=unscheduled"),
            ),
            (
                "a name (\"test-42-\", 98 tasks)",
                format!("/groups/{group}?name=test-42-"),
            ),
            (
                "the last page",
                format!("/groups/{group}?after={last_page_after}"),
            ),
            (
                "graph of a build (98 dependents)",
                format!("/groups/{group}?task={build}"),
            ),
            (
                "graph of the decision (100 dependents)",
                format!("/groups/{group}?task={group}"),
            ),
            ("a task's page", format!("/tasks/{build}")),
        ];
        println!(
            "{:<42} {:>8} {:>8} {:>9} {:>11}{}",
            "page",
            "p50 ms",
            "p99 ms",
            "KiB",
            "statements",
            if pg.is_some() {
                "  tasks rows read"
            } else {
                ""
            }
        );
        for (what, path) in &pages {
            let f = measure(&s, pg.as_ref(), what, path, opts.samples).await?;
            println!(
                "{:<42} {:>8.1} {:>8.1} {:>9.0} {:>11.1}{}",
                f.what,
                f.p50,
                f.p99,
                f.bytes as f64 / 1024.0,
                f.statements,
                f.rows.map(|r| format!("  {r:>15.0}")).unwrap_or_default()
            );
        }
        if let Some(p) = pg {
            p.close().await;
        }
        s.running.shutdown().await;
    }
    Ok(())
}
