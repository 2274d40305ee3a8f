//! The web dashboard benchmark: the migration dashboard (`/`), a branch's
//! page and the health page served by a queue with the migration record and
//! the web UI, over a realistic record (by default 20 branches × 200 jobs ×
//! 50 revisions: 300,000 observations), on SQLite and PostgreSQL. It prints
//! each page's p50/p99 time (sequential GETs over loopback, the whole
//! response read) and its cost on the database: the SQL statements one page
//! runs, counted from sqlx's `sqlx::query` events ([`QueryCounter`]) with the
//! queue's background loops idle (resolver interval one hour), and the
//! observation rows it reads; then the cost of recording a new revision of
//! every branch through `bbb_migration::store::ingest`.

use crate::queue::pct;
use bbb_queue::{Clock, QueueConfig};
use bbb_testdb::{PgDatabase, TempDir};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing_subscriber::layer::{Context, Layer};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Backends: `sqlite`, `postgres`.
    pub backends: Vec<String>,
    /// Branches in the record.
    pub branches: usize,
    /// Jobs per branch.
    pub jobs: usize,
    /// Revisions per branch.
    pub revisions: usize,
    /// The window the dashboard's figures cover (`[migration] revisions`).
    pub window: i64,
    /// Loads of each page measured.
    pub loads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backends: vec!["sqlite".into(), "postgres".into()],
            branches: 20,
            jobs: 200,
            revisions: 50,
            window: bbb_migration::DEFAULT_REVISIONS,
            loads: 50,
        }
    }
}

static QUERIES: AtomicU64 = AtomicU64::new(0);

/// A tracing layer counting sqlx's statement events (target `sqlx::query`,
/// one per statement run); install it with a filter letting those DEBUG
/// events through ([`QueryCounter::filter`]).
pub struct QueryCounter;

impl QueryCounter {
    /// The events it must see.
    pub fn filter() -> tracing_subscriber::filter::Targets {
        tracing_subscriber::filter::Targets::new().with_target("sqlx::query", tracing::Level::DEBUG)
    }

    /// Statements counted so far.
    pub fn queries() -> u64 {
        QUERIES.load(Ordering::Relaxed)
    }
}

impl<S: tracing::Subscriber> Layer<S> for QueryCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            QUERIES.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The kinds of jobs of a branch, by job number: half are pairs (a native
/// task and a Buildbot builder), a quarter native only, 15% bridged, 10%
/// Buildbot only.
fn kind(j: usize, jobs: usize) -> &'static str {
    match j * 100 / jobs.max(1) {
        0..50 => "pair",
        50..75 => "native",
        75..90 => "bridged",
        _ => "buildbot",
    }
}

/// One observation row: side, source id, branch, revision, job, builder, result, started, finished.
type Row = (
    &'static str,
    String,
    String,
    String,
    String,
    Option<String>,
    &'static str,
    i64,
    i64,
);

fn rows_of(opts: &Options, b: usize, r: usize, base: i64) -> Vec<Row> {
    let branch = format!("branch-{b:02}");
    let revision = format!("{b:02}{r:038}");
    let mut out = Vec::new();
    for j in 0..opts.jobs {
        let start = base + r as i64 * 3_600_000 + j as i64 * 1000;
        let result = if (j + r).is_multiple_of(13) {
            "failure"
        } else {
            "success"
        };
        let mut push =
            |side: &'static str, id: String, job: String, builder: Option<String>, mins: i64| {
                out.push((
                    side,
                    id,
                    branch.clone(),
                    revision.clone(),
                    job,
                    builder,
                    result,
                    start,
                    start + mins * 60_000,
                ));
            };
        match kind(j, opts.jobs) {
            "pair" => {
                push(
                    "native",
                    format!("t-{b}-{r}-{j}/0"),
                    format!("test-{j}"),
                    None,
                    9,
                );
                push(
                    "buildbot",
                    format!("m/{b}-{r}-{j}"),
                    format!("bb-{j}"),
                    Some(format!("bb-{j}")),
                    10,
                );
            }
            "native" => push(
                "native",
                format!("t-{b}-{r}-{j}/0"),
                format!("test-{j}"),
                None,
                5,
            ),
            "bridged" => push(
                "bridged",
                format!("t-{b}-{r}-{j}/0"),
                format!("legacy-{j}"),
                Some(format!("br-{j}")),
                12,
            ),
            _ => push(
                "buildbot",
                format!("m/{b}-{r}-{j}"),
                format!("bb-{j}"),
                Some(format!("bb-{j}")),
                15,
            ),
        }
    }
    out
}

/// Inserts `batch` in one multi-row statement.
async fn insert(db: &bbb_queue::db::Db, batch: Vec<Row>) -> anyhow::Result<()> {
    let sql = format!(
        "INSERT INTO migration_observations \
         (side, source_id, branch, revision, job, builder, result, started, finished) VALUES {}",
        (0..batch.len())
            .map(|i| {
                let p: Vec<String> = (1..=9).map(|k| format!("${}", i * 9 + k)).collect();
                format!("({})", p.join(", "))
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut q = sqlx::query(&sql);
    for r in batch {
        q = q
            .bind(r.0)
            .bind(r.1)
            .bind(r.2)
            .bind(r.3)
            .bind(r.4)
            .bind(r.5)
            .bind(r.6)
            .bind(r.7)
            .bind(r.8);
    }
    q.execute(&db.pool).await?;
    Ok(())
}

/// Writes the record: observations (multi-row inserts), the mapping of the
/// pairs (for every branch), a CI repository per branch with ten pushes,
/// and five milestones. Returns the observations written.
async fn seed(db: &bbb_queue::db::Db, opts: &Options) -> anyhow::Result<usize> {
    let base = chrono::Utc::now().timestamp_millis() - opts.revisions as i64 * 3_600_000;
    let mut written = 0;
    let mut batch: Vec<Row> = Vec::new();
    for b in 0..opts.branches {
        for r in 0..opts.revisions {
            for row in rows_of(opts, b, r, base) {
                batch.push(row);
                if batch.len() == 500 {
                    written += batch.len();
                    insert(db, std::mem::take(&mut batch)).await?;
                }
            }
        }
    }
    written += batch.len();
    if !batch.is_empty() {
        insert(db, batch).await?;
    }
    // Each revision's first time, as recording the observations one by one
    // (`store::record`) writes it.
    sqlx::query(
        "INSERT INTO migration_revisions (branch, revision, first_time) \
         SELECT branch, revision, MIN(COALESCE(started, finished)) \
         FROM migration_observations GROUP BY branch, revision",
    )
    .execute(&db.pool)
    .await?;
    for j in 0..opts.jobs {
        if kind(j, opts.jobs) == "pair" {
            let p = bbb_migration::Pairing {
                branch: bbb_migration::ALL_BRANCHES.into(),
                label: format!("test-{j}"),
                builder: format!("bb-{j}"),
            };
            bbb_migration::store::put_mapping(db, &p, "file", "bench", base).await?;
        }
    }
    let ci = bbb_ci::store::Store::new(db.pool.clone(), db.backend);
    ci.migrate().await?;
    for b in 0..opts.branches {
        let project = format!("branch-{b:02}");
        let repo: bbb_ci::config::RepositoryConfig = serde_json::from_value(serde_json::json!({
            "project": project,
            "url": format!("https://bench.example/{project}"),
            "kind": bbb_ci::Kind::Git,
            "trust_domain": "bench",
            "level": 1,
            "poll": false,
            "branches": [{"name": "main", "mode": bbb_ci::Mode::Shadow}],
        }))?;
        ci.put_repository(
            &bbb_ci::store::Repository::from_config(&repo),
            false,
            "bench",
            base,
        )
        .await?;
        for r in opts.revisions.saturating_sub(10)..opts.revisions {
            let push = bbb_ci::store::NewPush {
                project: project.clone(),
                branch: "main".into(),
                revision: format!("{b:02}{r:038}"),
                base_revision: None,
                owner: "bench@example.com".into(),
                pushdate: base + r as i64 * 3_600_000,
                source: "webhook",
            };
            ci.record_push(&push, base).await?;
        }
    }
    for m in 0..5.min(opts.branches) {
        let def = bbb_migration::milestones::MilestoneDef {
            branch: format!("branch-{m:02}"),
            due: "2027-06-30".into(),
            jobs: (0..20).map(|j| format!("test-{}", j * 10)).collect(),
            description: "bench".into(),
        };
        bbb_migration::milestones::put(db, &format!("m{m}"), &def, "api", "bench", base).await?;
    }
    Ok(written)
}

/// The queue with the migration record (no polling) and the web UI, its
/// background loops idle.
struct Server {
    running: bbb_queue::Running,
    _pg: Vec<PgDatabase>,
    _dir: TempDir,
}

async fn start(backend: &str, window: i64) -> anyhow::Result<Server> {
    let dir = TempDir::new("bbb-bench-web");
    let mut pg = Vec::new();
    let (queue_url, state_url) = if backend == "postgres" {
        let q = PgDatabase::create("bbb_bench_web").await?;
        let s = PgDatabase::create("bbb_bench_web_state").await?;
        let urls = (q.url().to_owned(), s.url().to_owned());
        pg.push(q);
        pg.push(s);
        urls
    } else {
        (
            format!("sqlite://{}/queue.sqlite", dir.path().display()),
            format!("sqlite://{}/state.sqlite", dir.path().display()),
        )
    };
    // The bridge's mapping database with two processes' snapshots.
    let state = bbb_state::StateDb::connect(&state_url, 2).await?;
    state.migrate().await?;
    let now = chrono::Utc::now().timestamp_millis();
    for instance in ["bridge-a", "bridge-b"] {
        let snapshot = bbb_bridge::health::HealthSnapshot {
            injected: 1000,
            ..Default::default()
        };
        state
            .put_health(&bbb_state::HealthRow {
                master: "legacy".into(),
                instance: instance.into(),
                started: now,
                updated: now,
                snapshot: serde_json::to_string(&snapshot)?,
            })
            .await?;
    }
    state.close().await;
    let cfg = QueueConfig {
        listen: "127.0.0.1:0".into(),
        database_url: queue_url.into(),
        database_max_connections: 20,
        root_access_token: Some(bbb_queue::server::random_token().into()),
        blob_dir: dir.path().join("blobs"),
        resolver_interval_ms: 3_600_000,
        ..QueueConfig::default()
    };
    let mounts = vec![
        bbb_migration::mount(bbb_migration::MigrationConfig {
            poll: None,
            revisions: window,
            ..bbb_migration::MigrationConfig::default()
        }),
        bbb_web::mount_with(
            bbb_login::Login::default(),
            bbb_web::WebConfig {
                bridge_state_url: Some(bbb_secret::SecretUrl::new(state_url)),
                revisions: window,
                ..bbb_web::WebConfig::default()
            },
        ),
    ];
    let running = bbb_queue::start_with(cfg, Clock::system(), mounts).await?;
    Ok(Server {
        running,
        _pg: pg,
        _dir: dir,
    })
}

/// `loads` sequential GETs of `path`: the sorted times and the statements
/// counted per load (all statements during the loads, over their number).
async fn measure(
    http: &reqwest::Client,
    root: &str,
    path: &str,
    loads: usize,
) -> anyhow::Result<(Vec<Duration>, f64, usize)> {
    let url = format!("{root}{path}");
    let mut size = 0;
    for _ in 0..3 {
        let r = http.get(&url).send().await?.error_for_status()?;
        size = r.bytes().await?.len();
    }
    let before = QueryCounter::queries();
    let mut times = Vec::with_capacity(loads);
    for _ in 0..loads {
        let t = Instant::now();
        let r = http.get(&url).send().await?.error_for_status()?;
        r.bytes().await?;
        times.push(t.elapsed());
    }
    let queries = (QueryCounter::queries() - before) as f64 / loads.max(1) as f64;
    times.sort();
    Ok((times, queries, size))
}

/// Observations recorded per transaction by [`ingest`].
const INGEST_BATCH: usize = 50;

/// Records a new revision of every branch's jobs through
/// `bbb_migration::store::ingest` ([`INGEST_BATCH`] observations a
/// transaction, as the feed's batches), each job's results arriving in
/// the order they finish (so some lower their revision's first time), and
/// prints the time per batch (p50/p99) and the statements per observation.
async fn ingest(db: &bbb_queue::db::Db, backend: &str, opts: &Options) -> anyhow::Result<()> {
    let base = chrono::Utc::now().timestamp_millis();
    let mut observations = Vec::new();
    for b in 0..opts.branches {
        let mut rows = rows_of(opts, b, opts.revisions, base);
        rows.sort_by_key(|r| (r.8, r.1.clone()));
        for r in rows {
            observations.push(bbb_migration::Observation {
                side: bbb_migration::Side::parse(r.0).expect("a side"),
                source_id: r.1,
                branch: r.2,
                revision: r.3,
                job: r.4,
                builder: r.5,
                symbol: None,
                result: bbb_migration::Outcome::parse(r.6).expect("a result"),
                started: Some(r.7),
                finished: r.8,
            });
        }
    }
    let before = QueryCounter::queries();
    let mut times = Vec::new();
    for batch in observations.chunks(INGEST_BATCH) {
        let t = Instant::now();
        bbb_migration::store::ingest(db, batch).await?;
        times.push(t.elapsed());
    }
    let statements = (QueryCounter::queries() - before) as f64 / observations.len().max(1) as f64;
    times.sort();
    println!(
        "{backend:8} ingest       p50 {:8.1} ms  p99 {:8.1} ms  per {INGEST_BATCH} observations  {statements:.2} statements/observation ({} observations)",
        pct(&times, 0.5),
        pct(&times, 0.99),
        observations.len()
    );
    Ok(())
}

/// Run the benchmark and print its figures.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    println!(
        "bbb web dashboard benchmark: {} cores, {} branches × {} jobs × {} revisions, window {} revisions, {} loads per page",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        opts.branches,
        opts.jobs,
        opts.revisions,
        opts.window,
        opts.loads
    );
    let http = reqwest::Client::new();
    for backend in &opts.backends {
        let s = start(backend, opts.window).await?;
        let t = Instant::now();
        let written = seed(&s.running.queue.db, &opts).await?;
        println!(
            "{backend:8} seeded {written} observations in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        // The background loops' own statements, for comparison.
        let idle = QueryCounter::queries();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = QueryCounter::queries() - idle;
        let per_revision = opts.jobs as f64 * 1.5;
        let per_branch = per_revision * opts.window.min(opts.revisions as i64) as f64;
        // The branch page reads the larger of its window and its chart's.
        let branch_page = per_revision
            * opts
                .window
                .max(bbb_migration::api::HISTORY_REVISIONS)
                .min(opts.revisions as i64) as f64;
        for (name, path, rows) in [
            (
                "dashboard /",
                "/".to_string(),
                per_branch * opts.branches as f64,
            ),
            (
                "branch page",
                "/branches/branch-00".to_string(),
                branch_page,
            ),
            ("health", "/health".to_string(), 0.0),
        ] {
            let (times, queries, size) =
                measure(&http, &s.running.root_url, &path, opts.loads).await?;
            println!(
                "{backend:8} {name:12} p50 {:8.1} ms  p99 {:8.1} ms  {:6.1} statements/page  ~{:.0} observation rows read  {} kB",
                pct(&times, 0.5),
                pct(&times, 0.99),
                queries,
                rows,
                size / 1024
            );
        }
        println!("{backend:8} statements by the idle background loops in 2 s: {idle}");
        ingest(&s.running.queue.db, backend, &opts).await?;
        s.running.shutdown().await;
    }
    Ok(())
}
