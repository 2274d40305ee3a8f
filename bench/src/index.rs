//! The index benchmark: how fast completed tasks' index routes become entries,
//! beside the rate the queue completes those tasks, in the same run, on
//! PostgreSQL.

use crate::queue::{lifecycle, server_with};
use bbb_testdb::test_pg_url;
use sqlx::Row;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Concurrent lifecycle loops (create → claimWork → reportCompleted).
    pub concurrency: usize,
    /// How long the loops run.
    pub seconds: u64,
    /// Index routes per task (each makes one entry).
    pub routes: usize,
    /// The queue's `commit_batch`.
    pub commit_batch: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            concurrency: 64,
            seconds: 10,
            routes: 1,
            commit_batch: bbb_queue::QueueConfig::default().commit_batch,
        }
    }
}

/// How long to wait, after the loops stop, for the index to catch up.
const CATCH_UP: Duration = Duration::from_secs(300);

async fn entries(db: &bbb_queue::db::Db) -> anyhow::Result<i64> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM indexed_tasks")
        .fetch_one(&db.pool)
        .await?;
    Ok(row.try_get("n")?)
}

/// Run the benchmark and print its figures.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    println!(
        "bbb index benchmark: {} cores, concurrency {}, {} s, {} index route(s) per task, commit_batch {}, PostgreSQL {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        opts.concurrency,
        opts.seconds,
        opts.routes,
        opts.commit_batch,
        bbb_secret::mask_url(&test_pg_url())
    );
    let s = server_with(
        "postgres",
        opts.concurrency,
        opts.commit_batch,
        vec![bbb_index::mount()],
    )
    .await?;
    let db = s.running.queue.db.clone();
    let started = Instant::now();
    let measured = lifecycle(&s, opts.concurrency, opts.seconds, opts.routes).await?;
    let run_time = started.elapsed();
    let in_run = entries(&db).await?;
    let want = measured.count as i64 * opts.routes as i64;
    // The entries still to make once the loops stopped: how long the index takes
    // to catch up tells its rate when it lags.
    let give_up = Instant::now() + CATCH_UP;
    let mut made = in_run;
    while made < want && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(20)).await;
        made = entries(&db).await?;
    }
    let all_time = started.elapsed();
    s.running.shutdown().await;
    let completions = measured.count / run_time.as_secs_f64();
    let entry_rate = made as f64 / all_time.as_secs_f64();
    println!(
        "completions (queue):         {completions:>9.0} tasks/s ({} tasks in {:.1} s)",
        measured.count,
        run_time.as_secs_f64()
    );
    println!(
        "index entries made:          {entry_rate:>9.0} entries/s ({made} of {want} in {:.1} s; {in_run} by the end of the run, the rest {:.2} s after)",
        all_time.as_secs_f64(),
        all_time.saturating_sub(run_time).as_secs_f64()
    );
    println!(
        "entries / (completions × routes): {:>4.2}",
        entry_rate / (completions * opts.routes as f64)
    );
    if made < want {
        anyhow::bail!(
            "the index made {made} of {want} entries within {} s of the run's end",
            CATCH_UP.as_secs()
        );
    }
    Ok(())
}
