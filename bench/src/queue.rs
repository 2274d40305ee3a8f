//! The queue benchmark: lifecycle throughput beside raw commits, claimWork wake-up
//! latency, and the drain of a 10,000-task graph, on SQLite and PostgreSQL.

use crate::client::{Api, Creds};
use crate::cpu::{CpuSample, per_op_us};
use bbb_queue::{Clock, QueueConfig};
use bbb_testdb::{PgDatabase, TempDir, test_pg_url};
use futures::future::join_all;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Backends: `sqlite`, `postgres`.
    pub backends: Vec<String>,
    /// Concurrent loops for the lifecycle and raw-commit measurements.
    pub concurrency: usize,
    /// How long each throughput measurement runs.
    pub seconds: u64,
    /// Wake-up latency samples.
    pub wake_samples: usize,
    /// Tasks in the drained graph (rounded to the graph's shape; 10,000 by default).
    pub graph: bool,
    /// The queue's `commit_batch` (most concurrent calls per transaction).
    pub commit_batch: usize,
    /// Also measure lifecycles with one transaction per call, for comparison.
    pub compare_unbatched: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backends: vec!["sqlite".into(), "postgres".into()],
            concurrency: 64,
            seconds: 10,
            wake_samples: 200,
            graph: true,
            commit_batch: QueueConfig::default().commit_batch,
            compare_unbatched: true,
        }
    }
}

/// The `p` quantile of `sorted`, in milliseconds.
pub(crate) fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn def(task_queue_id: &str, group: &str, deps: &[String]) -> Value {
    let now = chrono::Utc::now().timestamp_millis();
    json!({
        "taskQueueId": task_queue_id,
        "taskGroupId": group,
        "created": bbb_queue::time::fmt_ms(now),
        "deadline": bbb_queue::time::fmt_ms(now + 3 * 3600 * 1000),
        "dependencies": deps,
        "payload": {},
        "metadata": {"name": "bench", "description": "benchmark task", "owner": "bench@example.com", "source": "https://example.com/bench"},
    })
}

/// A queue server for one measurement, with its database and directory.
pub(crate) struct Server {
    pub(crate) running: bbb_queue::Running,
    api: Api,
    root: Creds,
    pub(crate) url: String,
    _pg: Option<PgDatabase>,
    _dir: TempDir,
}

async fn server(backend: &str, opts: &Options, commit_batch: usize) -> anyhow::Result<Server> {
    server_with(backend, opts.concurrency, commit_batch, Vec::new()).await
}

/// A queue server on a fresh `backend` database, with pool room for
/// `concurrency` loops, and the services `mounts` beside it.
pub(crate) async fn server_with(
    backend: &str,
    concurrency: usize,
    commit_batch: usize,
    mounts: Vec<bbb_queue::Mount>,
) -> anyhow::Result<Server> {
    let dir = TempDir::new("bbb-bench");
    let mut pg = None;
    let url = if backend == "postgres" {
        pg.insert(PgDatabase::create("bbb_bench").await?)
            .url()
            .to_owned()
    } else {
        format!("sqlite://{}/queue.sqlite", dir.0.display())
    };
    let token = bbb_queue::server::random_token();
    let cfg = QueueConfig {
        listen: "127.0.0.1:0".into(),
        database_url: url.clone().into(),
        database_max_connections: (concurrency as u32 + 4).min(40),
        root_access_token: Some(token.clone().into()),
        blob_dir: dir.0.join("blobs"),
        resolver_interval_ms: 200,
        commit_batch,
        ..QueueConfig::default()
    };
    let running = bbb_queue::start_with(cfg, Clock::system(), mounts).await?;
    let api = Api::new(&running.root_url)?;
    Ok(Server {
        api,
        root: Creds {
            client_id: "root".into(),
            access_token: token,
            certificate: None,
        },
        running,
        url,
        _pg: pg,
        _dir: dir,
    })
}

/// Raw single-row commits per second at `concurrency` on the database at `url`,
/// and the CPU they used.
async fn raw_commits(
    url: &str,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<(f64, (Duration, Duration))> {
    let db = bbb_queue::db::Db::connect(url, concurrency as u32 + 2).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_raw (id TEXT PRIMARY KEY, v TEXT NOT NULL)")
        .execute(&db.pool)
        .await?;
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Instant::now() + Duration::from_secs(seconds);
    let loops = (0..concurrency).map(|w| {
        let db = db.clone();
        let done = done.clone();
        async move {
            let mut i = 0u64;
            while Instant::now() < stop {
                sqlx::query("INSERT INTO bench_raw (id, v) VALUES ($1, $2)")
                    .bind(format!("{w}-{i}-{}", bbb_queue::validate::slugid()))
                    .bind("x")
                    .execute(&db.pool)
                    .await?;
                i += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }
    });
    let started = Instant::now();
    let cpu = CpuSample::now();
    for r in join_all(loops).await {
        r?;
    }
    Ok((
        done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(),
        CpuSample::now().since(&cpu),
    ))
}

/// Time spent in each call of the lifecycle, summed over all loops (µs).
#[derive(Default)]
struct PhaseTimes {
    create: std::sync::atomic::AtomicU64,
    claim: std::sync::atomic::AtomicU64,
    complete: std::sync::atomic::AtomicU64,
}

impl PhaseTimes {
    fn add(slot: &std::sync::atomic::AtomicU64, since: Instant) {
        slot.fetch_add(since.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

/// What one lifecycle measurement gives.
pub(crate) struct Lifecycles {
    /// Lifecycles per second.
    pub(crate) rate: f64,
    /// How many were done.
    pub(crate) count: f64,
    /// Mean latency of createTask, claimWork and reportCompleted (ms).
    latency_ms: [f64; 3],
    /// CPU used while they ran: (the benchmark's process less the client's thread,
    /// PostgreSQL).
    cpu: (Duration, Duration),
    /// CPU the client's thread used.
    client_cpu: Duration,
}

/// Lifecycles (create → claimWork → reportCompleted) at `concurrency`, each
/// task with `routes` index routes (`index.bench.<taskId>.r<n>`). The
/// client runs on a thread of its own (a single-threaded runtime with its own
/// HTTP connections), so its CPU time is told apart from the server's.
pub(crate) async fn lifecycle(
    s: &Server,
    concurrency: usize,
    seconds: u64,
    routes: usize,
) -> anyhow::Result<Lifecycles> {
    let (root_url, root) = (s.running.root_url.clone(), s.root.clone());
    let cpu = CpuSample::now();
    let started = Instant::now();
    let client = std::thread::Builder::new()
        .name("bench-client".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let before = crate::cpu::thread_cpu();
            let out = runtime.block_on(lifecycle_client(
                &root_url,
                root,
                concurrency,
                seconds,
                routes,
            ));
            anyhow::Ok((out?, crate::cpu::thread_cpu().saturating_sub(before)))
        })?;
    let joined = tokio::task::spawn_blocking(move || client.join()).await?;
    let ((n, times), client_cpu) =
        joined.map_err(|_| anyhow::anyhow!("the benchmark client panicked"))??;
    let elapsed = started.elapsed();
    let (own, postgres) = CpuSample::now().since(&cpu);
    let n = n.max(1) as f64;
    let ms = |slot: &std::sync::atomic::AtomicU64| slot.load(Ordering::Relaxed) as f64 / 1000.0 / n;
    Ok(Lifecycles {
        rate: n / elapsed.as_secs_f64(),
        count: n,
        latency_ms: [ms(&times.create), ms(&times.claim), ms(&times.complete)],
        cpu: (own.saturating_sub(client_cpu), postgres),
        client_cpu,
    })
}

/// The client side of [`lifecycle`]: how many lifecycles it did, and the
/// time spent in each call.
async fn lifecycle_client(
    root_url: &str,
    root: Creds,
    concurrency: usize,
    seconds: u64,
    routes: usize,
) -> anyhow::Result<(usize, Arc<PhaseTimes>)> {
    let api = Api::new(root_url)?;
    let group = bbb_queue::validate::slugid();
    let times = Arc::new(PhaseTimes::default());
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Instant::now() + Duration::from_secs(seconds);
    let loops = (0..concurrency).map(|w| {
        let (api, root, done, group, times) = (api.clone(), root.clone(), done.clone(), group.clone(), times.clone());
        async move {
            while Instant::now() < stop {
                let id = bbb_queue::validate::slugid();
                let mut task = def("bench/life", &group, &[]);
                task["routes"] = (0..routes).map(|r| format!("index.bench.{id}.r{r}")).collect();
                let t0 = Instant::now();
                api.call(&root, "PUT", &format!("task/{id}"), Some(&task)).await?;
                PhaseTimes::add(&times.create, t0);
                let t0 = Instant::now();
                let r = api
                    .call(&root, "POST", "claim-work/bench%2Flife", Some(&json!({"workerGroup": "bench", "workerId": format!("w{w}"), "tasks": 1})))
                    .await?;
                PhaseTimes::add(&times.claim, t0);
                for c in r["tasks"].as_array().cloned().unwrap_or_default() {
                    let tid = c["status"]["taskId"].as_str().unwrap_or_default().to_string();
                    let run = c["runId"].as_i64().unwrap_or(0);
                    let t0 = Instant::now();
                    api.call(&Creds::from_claim(&c), "POST", &format!("task/{tid}/runs/{run}/completed"), None).await?;
                    PhaseTimes::add(&times.complete, t0);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }
    });
    for r in join_all(loops).await {
        r?;
    }
    Ok((done.load(Ordering::Relaxed), times))
}

/// Wake-up latency samples (ms): createTask sent → waiting claimWork returns it.
async fn wake_latency(s: &Server, samples: usize) -> anyhow::Result<Vec<Duration>> {
    let group = bbb_queue::validate::slugid();
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let (api, root) = (s.api.clone(), s.root.clone());
        let waiter = tokio::spawn(async move {
            let r = api
                .call(
                    &root,
                    "POST",
                    "claim-work/bench%2Fwake",
                    Some(&json!({"workerGroup": "bench", "workerId": "waiter", "tasks": 1})),
                )
                .await;
            (r, Instant::now())
        });
        // Let the claim reach its wait before the task appears.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let id = bbb_queue::validate::slugid();
        let sent = Instant::now();
        s.api
            .call(
                &s.root,
                "PUT",
                &format!("task/{id}"),
                Some(&def("bench/wake", &group, &[])),
            )
            .await?;
        let (r, returned) = waiter.await?;
        let r = r?;
        let c = &r["tasks"][0];
        if c["status"]["taskId"] != id.as_str() {
            anyhow::bail!("the waiting claim returned {r} instead of {id}");
        }
        out.push(returned.saturating_duration_since(sent));
        s.api
            .call(
                &Creds::from_claim(c),
                "POST",
                &format!("task/{id}/runs/0/completed"),
                None,
            )
            .await?;
    }
    out.sort();
    Ok(out)
}

/// Create a 10,000-task graph, then drain it; returns (tasks, create time, drain time).
async fn graph_drain(
    s: &Server,
    concurrency: usize,
) -> anyhow::Result<(usize, Duration, Duration)> {
    let group = bbb_queue::validate::slugid();
    let tq = "bench/graph";
    let slug = bbb_queue::validate::slugid;
    let root_id = slug();
    let mids: Vec<String> = (0..100).map(|_| slug()).collect();
    let leaves: Vec<(String, String)> = mids
        .iter()
        .flat_map(|m| (0..98).map(move |_| (slug(), m.clone())))
        .collect();
    let collectors: Vec<(String, Vec<String>)> = leaves
        .chunks(100)
        .map(|c| (slug(), c.iter().map(|(l, _)| l.clone()).collect()))
        .collect();
    let final_id = slug();
    let final_deps: Vec<String> = collectors.iter().map(|(c, _)| c.clone()).collect();
    let mut levels: Vec<Vec<(String, Vec<String>)>> = vec![vec![(root_id.clone(), vec![])]];
    levels.push(
        mids.iter()
            .map(|m| (m.clone(), vec![root_id.clone()]))
            .collect(),
    );
    levels.push(
        leaves
            .iter()
            .map(|(l, m)| (l.clone(), vec![m.clone()]))
            .collect(),
    );
    levels.push(collectors.clone());
    levels.push(vec![(final_id.clone(), final_deps)]);
    let total: usize = levels.iter().map(Vec::len).sum();

    let created = Instant::now();
    for level in &levels {
        let next = Arc::new(AtomicUsize::new(0));
        let level = Arc::new(level.clone());
        let loops = (0..concurrency).map(|_| {
            let (api, root, next, level, group) = (
                s.api.clone(),
                s.root.clone(),
                next.clone(),
                level.clone(),
                group.clone(),
            );
            async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((id, deps)) = level.get(i) else {
                        return anyhow::Ok(());
                    };
                    api.call(
                        &root,
                        "PUT",
                        &format!("task/{id}"),
                        Some(&def(tq, &group, deps)),
                    )
                    .await?;
                }
            }
        });
        for r in join_all(loops).await {
            r?;
        }
    }
    let create_time = created.elapsed();

    let drained = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    // The drain ends when the last task is reported; the other workers are then
    // waiting in claimWork long polls, which are dropped rather than waited out.
    let finished = Arc::new(tokio::sync::Notify::new());
    let loops = (0..concurrency).map(|w| {
        let finished = finished.clone();
        let (api, root, done, final_id) = (s.api.clone(), s.root.clone(), done.clone(), final_id.clone());
        async move {
            loop {
                if done.load(Ordering::Relaxed) >= total {
                    return anyhow::Ok(());
                }
                let r = api
                    .call(&root, "POST", "claim-work/bench%2Fgraph", Some(&json!({"workerGroup": "bench", "workerId": format!("g{w}"), "tasks": 32})))
                    .await?;
                let claims = r["tasks"].as_array().cloned().unwrap_or_default();
                let reports = claims.iter().map(|c| {
                    let api = api.clone();
                    async move {
                        let tid = c["status"]["taskId"].as_str().unwrap_or_default();
                        let run = c["runId"].as_i64().unwrap_or(0);
                        api.call(&Creds::from_claim(c), "POST", &format!("task/{tid}/runs/{run}/completed"), None).await
                    }
                });
                for r in join_all(reports).await {
                    r?;
                }
                let n = done.fetch_add(claims.len(), Ordering::Relaxed) + claims.len();
                if claims.iter().any(|c| c["status"]["taskId"] == final_id.as_str()) || n >= total {
                    done.store(total, Ordering::Relaxed);
                    finished.notify_one();
                    return Ok(());
                }
            }
        }
    });
    let all = join_all(loops);
    tokio::select! {
        results = all => {
            for r in results {
                r?;
            }
        }
        _ = finished.notified() => {}
    }
    Ok((total, create_time, drained.elapsed()))
}

/// Prints the CPU cost of a raw commit and of a lifecycle, and what that cost
/// allows on this machine: the lifecycle rate at which the cores are busy,
/// and the cost per lifecycle that half the raw-commit rate would need.
fn print_cpu(
    backend: &str,
    raw_rate: f64,
    raw_us: (f64, f64),
    life_us: (f64, f64),
    client_us: f64,
) {
    if raw_us.0 + raw_us.1 + life_us.0 + life_us.1 == 0.0 {
        return; // no /proc
    }
    let postgres = backend == "postgres";
    let db = |us: f64| {
        if postgres {
            format!(", PostgreSQL {us:.0} µs")
        } else {
            String::new()
        }
    };
    println!(
        "CPU per raw commit:          bbb {:.0} µs{}",
        raw_us.0,
        db(raw_us.1)
    );
    println!(
        "CPU per lifecycle:           queue server {:.0} µs{}, benchmark client {client_us:.0} µs",
        life_us.0,
        db(life_us.1)
    );
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let total = life_us.0 + life_us.1 + client_us;
    if total > 0.0 {
        println!(
            "  {cores:.0} cores at that cost:     {:>9.0} lifecycles/s at most; half the raw rate needs {:.0} µs or less",
            cores * 1e6 / total,
            cores * 1e6 / (raw_rate / 2.0)
        );
    }
}

/// Run the benchmark and print its figures.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    println!(
        "bbb queue benchmark: {} cores, concurrency {}, {} s per throughput run, commit_batch {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        opts.concurrency,
        opts.seconds,
        opts.commit_batch
    );
    for backend in &opts.backends {
        println!("\n== {backend} ==");
        if backend == "postgres" {
            println!(
                "server:                      {}",
                bbb_secret::mask_url(&test_pg_url())
            );
        }
        let s = server(backend, &opts, opts.commit_batch).await?;
        let (raw, raw_cpu) = raw_commits(&s.url, opts.concurrency, opts.seconds).await?;
        let measured = lifecycle(&s, opts.concurrency, opts.seconds, 0).await?;
        let life = measured.rate;
        let [create, claim, complete] = measured.latency_ms;
        println!("raw single-row commits:      {raw:>9.0} /s");
        println!("task lifecycles (3 calls):   {life:>9.0} tasks/s");
        println!(
            "  mean call latency:         createTask {create:.1} ms, claimWork {claim:.1} ms, reportCompleted {complete:.1} ms"
        );
        println!("lifecycle / raw commits:     {:>9.2}", life / raw);
        print_cpu(
            backend,
            raw,
            per_op_us(raw_cpu, raw * opts.seconds as f64),
            per_op_us(measured.cpu, measured.count),
            measured.client_cpu.as_secs_f64() * 1e6 / measured.count,
        );
        if opts.compare_unbatched && opts.commit_batch > 1 {
            let alone = server(backend, &opts, 1).await?;
            let one = lifecycle(&alone, opts.concurrency, opts.seconds, 0)
                .await?
                .rate;
            alone.running.shutdown().await;
            println!(
                "  one transaction per call: {one:>9.0} tasks/s (batched: {:.1}x)",
                life / one
            );
        }
        let wake = wake_latency(&s, opts.wake_samples).await?;
        println!(
            "claimWork wake-up latency:   p50 {:.1} ms, p99 {:.1} ms ({} samples)",
            pct(&wake, 0.5),
            pct(&wake, 0.99),
            wake.len()
        );
        if opts.graph {
            let (n, create, drain) = graph_drain(&s, opts.concurrency).await?;
            println!(
                "graph of {n} tasks:          created in {:.1} s ({:.0} tasks/s), drained in {:.1} s ({:.0} tasks/s)",
                create.as_secs_f64(),
                n as f64 / create.as_secs_f64(),
                drain.as_secs_f64(),
                n as f64 / drain.as_secs_f64()
            );
        }
        s.running.shutdown().await;
    }
    Ok(())
}
