//! Throughput and per-task overhead of one worker on trivial tasks (`true`),
//! through an in-process native queue.
//!
//! ```text
//! cargo run --release -p bbb-workers --example bench -- [TASKS] [--postgres] [--current-user]
//! ```
//!
//! For capacity 1, 4 and 16 it queues TASKS tasks (default 200), starts one
//! worker and prints tasks per second from the worker's start to the last
//! resolution, and the worker's own overhead per task at p50/p99: from
//! `claimWork` returning to the process starting, and from the process
//! exiting to the run being resolved (log upload and report included).
//! Tasks run as the worker decides by default (task users when it runs as
//! root); `--current-user` runs them as the worker's own user.

use std::time::{Duration, Instant};

use bbb_queue::testing::{TestOptions, TestQueue};
use bbb_workers::{RunOutcome, RunTasksAs, Worker, WorkerConfig};
use serde_json::json;
use taskcluster::{ClientBuilder, Credentials, Queue};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut tasks = 200usize;
    let mut postgres = false;
    let mut run_as = None;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--postgres" => postgres = true,
            "--current-user" => run_as = Some(RunTasksAs::CurrentUser),
            n => {
                tasks = n.parse().map_err(|_| {
                    anyhow::anyhow!("usage: bench [TASKS] [--postgres] [--current-user]")
                })?
            }
        }
    }
    let decided = bbb_workers::users::decide(run_as).map_err(anyhow::Error::msg)?;
    println!(
        "{tasks} tasks `true` per capacity, one worker, queue on {}, tasks run as {}",
        if postgres { "PostgreSQL" } else { "SQLite" },
        decided.mode
    );
    println!(
        "{:>8} {:>10} {:>22} {:>22}",
        "capacity", "tasks/s", "claim->start p50/p99", "exit->resolved p50/p99"
    );
    for capacity in [1usize, 4, 16] {
        let q = TestQueue::with(TestOptions {
            postgres,
            ..Default::default()
        })
        .await?;
        let r = bench(&q, capacity, tasks, run_as).await;
        q.stop().await;
        let r = r?;
        println!(
            "{capacity:>8} {:>10.1} {:>22} {:>22}",
            r.0,
            format!("{} / {}", ms(r.1.0), ms(r.1.1)),
            format!("{} / {}", ms(r.2.0), ms(r.2.1)),
        );
    }
    Ok(())
}

type Percentiles = (Duration, Duration);

async fn bench(
    q: &TestQueue,
    capacity: usize,
    n: usize,
    run_tasks_as: Option<RunTasksAs>,
) -> anyhow::Result<(f64, Percentiles, Percentiles)> {
    let root = Queue::new(
        ClientBuilder::new(&q.root_url)
            .credentials(Credentials::new(&q.root_client_id, &q.root_access_token)),
    )?;
    let tq = format!("bbb-bench/cap{capacity}");
    let now = chrono::Utc::now().timestamp_millis();
    for _ in 0..n {
        let def = json!({
            "taskQueueId": tq,
            "created": bbb_queue::time::fmt_ms(now),
            "deadline": bbb_queue::time::fmt_ms(now + 3_600_000),
            "payload": {"command": [["true"]], "maxRunTime": 60},
            "metadata": {"name": "bench", "description": "trivial task", "owner": "bench@example.com", "source": "https://example.com/bench"},
        });
        root.createTask(&bbb_queue::validate::slugid(), &def)
            .await?;
    }
    let tasks_dir = std::env::temp_dir().join(format!("bbb-bench-{}", uuid::Uuid::new_v4()));
    let cfg = WorkerConfig {
        root_url: q.root_url.clone(),
        client_id: q.root_client_id.clone(),
        access_token: q.root_access_token.clone().into(),
        task_queue_id: tq,
        worker_id: format!("bench-{capacity}"),
        capacity,
        tasks_dir: tasks_dir.clone(),
        min_poll_interval_ms: 100,
        run_tasks_as,
        ..WorkerConfig::default()
    };
    let worker = Worker::new(cfg).await?;
    let mut reports = worker.subscribe();
    let stop = CancellationToken::new();
    let started = Instant::now();
    let handle = tokio::spawn(worker.run(stop.clone()));
    let mut to_start = Vec::with_capacity(n);
    let mut to_resolve = Vec::with_capacity(n);
    for _ in 0..n {
        let r = tokio::time::timeout(Duration::from_secs(120), reports.recv()).await??;
        anyhow::ensure!(
            r.resolution == RunOutcome::Completed,
            "task {} resolved {}",
            r.task_id,
            r.resolution
        );
        if let Some(s) = r.process_started_at {
            to_start.push(s - r.claimed_at);
        }
        to_resolve.push(r.resolved_at - r.process_ended_at);
    }
    let elapsed = started.elapsed();
    stop.cancel();
    handle.await??;
    let _ = std::fs::remove_dir_all(&tasks_dir);
    Ok((
        n as f64 / elapsed.as_secs_f64(),
        percentiles(&mut to_start),
        percentiles(&mut to_resolve),
    ))
}

fn percentiles(v: &mut [Duration]) -> Percentiles {
    if v.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    v.sort();
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    (at(0.50), at(0.99))
}

fn ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1000.0)
}
