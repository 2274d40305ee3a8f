#![doc = include_str!("../README.md")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bbb_bridge::{ActionIds, Bridge, BridgeResult, Outcome};
use bbb_state::{Lease, MappingRow, RowState};
use futures::StreamExt;
use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How the reflector works.
#[derive(Clone, Debug)]
pub struct ReflectorSettings {
    /// Time between passes.
    pub interval: Duration,
    /// Rows taken per batch.
    pub batch_size: i64,
    /// Rows handled at once within a batch.
    pub concurrency: usize,
    /// Running rows whose `takenUntil` falls within this window are reclaimed.
    pub reclaim_window: Duration,
    /// Every active row is compared with the master and the queue once per
    /// this interval (across all reflectors): the lease length of those walks.
    pub recheck_interval: Duration,
    /// Rows changed more recently than this are left to the listeners.
    pub settle_time: Duration,
    /// Resolved rows are kept this long (so a late redelivery finds them), then purged.
    pub retention: Duration,
}

impl Default for ReflectorSettings {
    fn default() -> Self {
        ReflectorSettings {
            interval: Duration::from_secs(60),
            batch_size: 500,
            concurrency: 32,
            reclaim_window: Duration::from_secs(600),
            recheck_interval: Duration::from_secs(300),
            settle_time: Duration::from_secs(30),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Rows of tasks past their deadline settled.
    pub past_deadline: u64,
    /// Running rows reclaimed (or settled when the queue refused).
    pub reclaimed: u64,
    /// Rows without a build request re-driven.
    pub redriven: u64,
    /// Requested, retrying and running rows compared with the master and the queue.
    pub reconciled: u64,
    /// Of those, rows whose state changed or needed an action.
    pub repaired: u64,
    /// Pending runs of the task queue without a row, adopted (their task-pending was lost).
    pub adopted: u64,
    /// Resolved rows purged.
    pub purged: u64,
    /// Rows whose action failed (they are taken again next time).
    pub errors: u64,
    /// How long the pass took.
    pub elapsed: Duration,
}

impl PassReport {
    /// Whether the pass changed anything or met an error (a pass that only
    /// found every row in step did not).
    pub fn did_something(&self) -> bool {
        self.past_deadline
            + self.reclaimed
            + self.redriven
            + self.repaired
            + self.adopted
            + self.purged
            + self.errors
            > 0
    }
}

/// The reflector: periodic, batched reconciliation, safe with any number of
/// instances (rows are leased in batches; see `bbb_state`'s lease protocol).
pub struct Reflector {
    bridge: Arc<Bridge>,
    settings: ReflectorSettings,
    running: Mutex<()>,
}

impl std::fmt::Debug for Reflector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reflector")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Deadline,
    Reclaim,
    Redrive,
    Walk(RowState),
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Deadline => "deadline",
            Phase::Reclaim => "reclaim",
            Phase::Redrive => "redrive",
            Phase::Walk(RowState::Requested) => "check-requested",
            Phase::Walk(RowState::Retrying) => "check-retrying",
            Phase::Walk(_) => "check-running",
        }
    }
}

impl Reflector {
    /// A reflector acting through `bridge`.
    pub fn new(bridge: Arc<Bridge>, settings: ReflectorSettings) -> Reflector {
        Reflector {
            bridge,
            settings,
            running: Mutex::new(()),
        }
    }

    /// Runs one pass now (waiting for a pass in progress in this process to end).
    pub async fn pass(&self) -> PassReport {
        let _guard = self.running.lock().await;
        let start = Instant::now();
        let mut report = PassReport::default();
        for phase in [
            Phase::Deadline,
            Phase::Reclaim,
            Phase::Redrive,
            Phase::Walk(RowState::Requested),
            Phase::Walk(RowState::Retrying),
            Phase::Walk(RowState::Running),
        ] {
            self.run_phase(phase, &mut report).await;
        }
        match self
            .bridge
            .adopt_pending(ms(self.settings.settle_time))
            .await
        {
            Ok((_, adopted)) => report.adopted = adopted,
            Err(e) => {
                warn!(error = %e, "cannot list the task queue's pending runs");
                report.errors += 1;
            }
        }
        let cutoff = self.bridge.now() - ms(self.settings.retention);
        loop {
            match self.bridge.state.purge_resolved_before(cutoff, 1000).await {
                Ok(n) => {
                    report.purged += n;
                    if n < 1000 {
                        break;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "cannot purge resolved rows");
                    report.errors += 1;
                    break;
                }
            }
        }
        report.elapsed = start.elapsed();
        let m = &self.bridge.metrics;
        m.reflector_pass(self.bridge.now(), report.elapsed, self.settings.interval);
        for (action, n) in [
            ("deadline", report.past_deadline),
            ("redrive", report.redriven),
            ("adopt", report.adopted),
            ("repair", report.repaired),
            ("purge", report.purged),
        ] {
            if n > 0 {
                m.add(
                    "bbb_bridge_reflector_actions_total",
                    format!("action=\"{action}\""),
                    n,
                );
            }
        }
        if report.did_something() {
            info!(?report, "reflector pass");
        }
        report
    }

    async fn take(&self, phase: Phase, owner: &str) -> bbb_state::Result<Vec<MappingRow>> {
        let now = self.bridge.now();
        let state = &self.bridge.state;
        let settle = now - ms(self.settings.settle_time);
        let walk = Lease {
            owner,
            now,
            duration_ms: ms(self.settings.recheck_interval),
            limit: self.settings.batch_size,
        };
        let short = Lease {
            duration_ms: ms(self.settings.interval).max(1000),
            ..walk.clone()
        };
        match phase {
            Phase::Deadline => state.take_batch_past_deadline(&short).await,
            Phase::Reclaim => {
                state
                    .take_batch_needing_reclaim(&short, ms(self.settings.reclaim_window))
                    .await
            }
            Phase::Redrive => state.take_batch_without_build_request(&short, settle).await,
            Phase::Walk(row_state) => state.take_batch_in_state(&walk, row_state, settle).await,
        }
    }

    async fn run_phase(&self, phase: Phase, report: &mut PassReport) {
        let owner = self.bridge.settings.instance.clone();
        loop {
            let rows = match self.take(phase, &owner).await {
                Ok(rows) => rows,
                Err(e) => {
                    warn!(phase = phase.name(), error = %e, "cannot take a batch");
                    report.errors += 1;
                    return;
                }
            };
            if rows.is_empty() {
                return;
            }
            let full = rows.len() as i64 >= self.settings.batch_size;
            let results: Vec<(i64, BridgeResult<Outcome>)> = futures::stream::iter(rows)
                .map(|row| async move {
                    let bridge = &self.bridge;
                    let action = async {
                        match phase {
                            Phase::Deadline => bridge.past_deadline(&row).await,
                            Phase::Reclaim => bridge.reclaim(&row).await,
                            Phase::Redrive => bridge.redrive(&row).await,
                            Phase::Walk(_) => bridge.reconcile(&row).await,
                        }
                    };
                    let result = bridge
                        .timed(phase.name(), ActionIds::of_row(&row), action)
                        .await;
                    if let Err(e) = &result {
                        warn!(phase = phase.name(), task.id = %row.task_id, run.id = row.run_id,
                              error = %e, "reflector action failed");
                        bridge.metrics.error("reflector");
                    }
                    (row.id, result)
                })
                .buffer_unordered(self.settings.concurrency.max(1))
                .collect()
                .await;
            let mut done = Vec::new();
            for (id, result) in results {
                if result.is_ok() {
                    done.push(id);
                }
                match (phase, result) {
                    (_, Err(_)) => report.errors += 1,
                    (Phase::Deadline, Ok(_)) => report.past_deadline += 1,
                    (Phase::Reclaim, Ok(_)) => report.reclaimed += 1,
                    (Phase::Redrive, Ok(_)) => report.redriven += 1,
                    (Phase::Walk(_), Ok(outcome)) => {
                        report.reconciled += 1;
                        if outcome != Outcome::InStep {
                            report.repaired += 1;
                        }
                    }
                }
            }
            if matches!(phase, Phase::Reclaim | Phase::Deadline | Phase::Redrive) {
                // Reclaimed rows moved their takenUntil and the others are settled:
                // hand their leases back. A row whose action failed keeps its lease,
                // so it is tried again next pass rather than at once.
                if let Err(e) = self.bridge.state.release_leases(&done, &owner).await {
                    warn!(error = %e, "cannot release leases");
                }
            }
            if !full {
                return;
            }
        }
    }

    /// Runs a pass at once, then one every interval (`tokio-cron-scheduler`),
    /// until `cancel` fires. A pass still running when the next is due delays it.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> Result<(), SchedulerError> {
        self.pass().await;
        let mut scheduler = JobScheduler::new().await.map_err(sched_err)?;
        let me = self.clone();
        let job = Job::new_repeated_async(self.settings.interval, move |_id, _lock| {
            let me = me.clone();
            Box::pin(async move {
                if me.running.try_lock().is_ok() {
                    me.pass().await;
                }
            })
        })
        .map_err(sched_err)?;
        scheduler.add(job).await.map_err(sched_err)?;
        scheduler.start().await.map_err(sched_err)?;
        cancel.cancelled().await;
        scheduler.shutdown().await.map_err(sched_err)?;
        Ok(())
    }
}

/// The reflector's scheduler failed to start or stop.
#[derive(Debug)]
pub struct SchedulerError(pub String);

impl std::fmt::Display for SchedulerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "reflector scheduler: {}", self.0)
    }
}

impl std::error::Error for SchedulerError {}

fn sched_err(e: impl std::fmt::Display) -> SchedulerError {
    SchedulerError(e.to_string())
}
