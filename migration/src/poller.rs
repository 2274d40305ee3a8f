//! The poller of the legacy masters' finished builds: it reads each master's
//! builds since its cursor ([`LegacyMaster::finished_builds`]), passes over
//! the bridge's own (their runs come from the queue's events), records the
//! others as `buildbot` observations and moves the master's persisted cursor
//! in the same transaction, so a build is ingested once across restarts. A
//! failed poll is logged, recorded on the master's row (the `sources`
//! endpoint) and retried with a doubling wait; it never stops the process.

use crate::model::{Observation, Outcome, Side};
use crate::sources::{self, Cursor};
use crate::{Migration, store};
use bbb_buildbot::{FinishedBuild, FinishedCursor, LegacyMaster};
use bbb_queue::db::Db;
use sqlx::Row;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// Builds read per call to the master.
pub const BATCH: usize = 500;

/// How far (seconds) below its cursor each poll reads again: a build whose
/// row committed after later ones (0.8 ids and second-resolution times are
/// not commit-ordered) is still found; what was recorded already is not
/// recorded again.
pub const MARGIN_S: i64 = 5;

/// How long (seconds) the cursor waits at a build whose outcome the master
/// has not written yet (finish time set, request neither completed nor
/// requeued), before moving past it.
pub const HOLD_S: i64 = 600;

/// A polled master: its name (the key of its cursor) and the master.
pub type NamedMaster = (String, Arc<dyn LegacyMaster>);

/// The legacy masters the poller reads, by name: filled in by whoever makes
/// them (the configuration's masters when the service starts, `bbb up`'s
/// sandbox master once it runs). Cheap to clone; every clone sees the same
/// list.
#[derive(Clone, Default)]
pub struct LegacyMasters {
    list: Arc<Mutex<Vec<NamedMaster>>>,
    added: Arc<Notify>,
}

impl std::fmt::Debug for LegacyMasters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.list().into_iter().map(|(n, _)| n).collect();
        f.debug_struct("LegacyMasters")
            .field("names", &names)
            .finish()
    }
}

impl LegacyMasters {
    /// Adds `master` under `name` (the key of its cursor), replacing one of
    /// the same name; the poller reads it from its next round.
    pub fn add(&self, name: impl Into<String>, master: Arc<dyn LegacyMaster>) {
        let name = name.into();
        {
            let mut list = self.list.lock().unwrap_or_else(PoisonError::into_inner);
            list.retain(|(n, _)| *n != name);
            list.push((name, master));
        }
        self.added.notify_one();
    }

    /// The masters, in the order they were added.
    pub fn list(&self) -> Vec<NamedMaster> {
        self.list
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// How the poller runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollSettings {
    /// Between two polls of a master, ms.
    pub interval_ms: u64,
    /// The longest wait after failed polls, ms (the wait doubles from
    /// `interval_ms`).
    pub max_backoff_ms: u64,
    /// How far back (seconds before now) a master's first poll reads.
    pub first_lookback_s: i64,
}

/// What one poll of a master did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Builds recorded that were not before.
    pub ingested: usize,
    /// Builds of the bridge's requests passed over (after the cursor).
    pub skipped_bridged: usize,
    /// Whether another process holds the master's lease (nothing was read).
    pub leased_elsewhere: bool,
}

/// The record's branch for a build's branch: its last path component
/// (`integration/mozilla-inbound` → `mozilla-inbound`, the project name
/// Treeherder and taskgraph use), trailing `/` removed.
pub fn branch_of(branch: &str) -> &str {
    let trimmed = branch.trim_end_matches('/');
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// The observation of one of the master's own builds: source id
/// `<master>/<buildId>`, job and builder the builder, times in ms. `None`
/// for a build naming no branch or revision (it belongs to no branch's
/// migration) or with an unknown result code.
pub fn observation(master: &str, build: &FinishedBuild) -> Option<Observation> {
    let branch = build
        .branch
        .as_deref()
        .map(branch_of)
        .filter(|b| !b.is_empty())?;
    let revision = build.revision.as_deref().filter(|r| !r.is_empty())?;
    let result = Outcome::of_buildbot_results(build.results?.code())?;
    Some(Observation {
        side: Side::Buildbot,
        source_id: format!("{master}/{}", build.build_id.0),
        branch: branch.to_owned(),
        revision: revision.to_owned(),
        job: build.builder.clone(),
        builder: Some(build.builder.clone()),
        symbol: None,
        result,
        started: (build.started > 0).then_some(build.started * 1000),
        finished: build.finished * 1000,
    })
}

/// Which of `ids` (source ids of `buildbot` observations) are recorded.
async fn recorded(db: &Db, ids: &[String]) -> bbb_service::Result<HashSet<String>> {
    let mut found = HashSet::new();
    for chunk in ids.chunks(200) {
        let sql = format!(
            "SELECT source_id FROM migration_observations WHERE side = 'buildbot' \
             AND source_id IN ({})",
            bbb_sqlstore::placeholders(1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id);
        }
        for row in q.fetch_all(&db.pool).await? {
            found.insert(row.try_get("source_id")?);
        }
    }
    Ok(found)
}

impl Migration {
    /// Polls `master` (named `name`) once, if no other process holds its
    /// lease: every finished build since its cursor, page by page, each page
    /// recorded with the cursor's move in one transaction.
    pub async fn poll_master(
        &self,
        name: &str,
        master: &dyn LegacyMaster,
        owner: &str,
        settings: &PollSettings,
    ) -> anyhow::Result<PollReport> {
        let db = &self.queue.db;
        let now = self.queue.clock.now_ms();
        let ttl = (settings.interval_ms.saturating_mul(3)).max(30_000) as i64;
        if !sources::lease(db, name, owner, now, now + ttl).await? {
            return Ok(PollReport {
                leased_elsewhere: true,
                ..PollReport::default()
            });
        }
        let result = self.read_master(name, master, settings).await;
        let now = self.queue.clock.now_ms();
        match &result {
            Ok(_) => sources::succeeded(db, name, now).await?,
            Err(e) => sources::failed(db, name, now, &format!("{e:#}")).await?,
        }
        result
    }

    async fn read_master(
        &self,
        name: &str,
        master: &dyn LegacyMaster,
        settings: &PollSettings,
    ) -> anyhow::Result<PollReport> {
        let db = &self.queue.db;
        let stored = sources::get(db, name)
            .await?
            .map(|s| s.cursor)
            .unwrap_or_default();
        let now_s = self.queue.clock.now_ms() / 1000;
        let persisted = FinishedCursor {
            finished: stored.finished,
            build_id: stored.build_id.max(0) as u64,
        };
        let mut after = if stored == Cursor::default() {
            FinishedCursor {
                finished: (now_s - settings.first_lookback_s).max(0),
                build_id: 0,
            }
        } else {
            FinishedCursor {
                finished: (stored.finished - MARGIN_S).max(0),
                build_id: 0,
            }
        };
        let mut cursor = persisted;
        let mut held = false;
        let mut report = PollReport::default();
        loop {
            let builds = master.finished_builds(after, BATCH).await?;
            let full = builds.len() >= BATCH;
            let mut candidates = Vec::new();
            let mut skipped = 0usize;
            for build in &builds {
                let position = FinishedCursor {
                    finished: build.finished,
                    build_id: build.build_id.0,
                };
                after = after.max(position);
                let fresh = persisted.is_before(position.finished, position.build_id);
                if build.results.is_none() && now_s - build.finished < HOLD_S {
                    // Its outcome is not written yet: the cursor waits here.
                    held = true;
                    continue;
                }
                if !held && cursor < position {
                    cursor = position;
                }
                if build.is_bridged() {
                    if fresh {
                        skipped += 1;
                    }
                    continue;
                }
                if let Some(o) = observation(name, build) {
                    candidates.push(o);
                }
            }
            let ids: Vec<String> = candidates.iter().map(|o| o.source_id.clone()).collect();
            let known = recorded(db, &ids).await?;
            let new: Vec<Observation> = candidates
                .into_iter()
                .filter(|o| !known.contains(&o.source_id))
                .collect();
            let mut tx = db.begin().await?;
            store::record(&mut tx, &new).await?;
            sqlx::query(
                "UPDATE migration_sources SET cursor_finished = $1, cursor_build_id = $2, \
                 ingested = ingested + $3, skipped_bridged = skipped_bridged + $4 \
                 WHERE master = $5",
            )
            .bind(cursor.finished)
            .bind(cursor.build_id as i64)
            .bind(new.len() as i64)
            .bind(skipped as i64)
            .bind(name)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            report.ingested += new.len();
            report.skipped_bridged += skipped;
            if !new.is_empty() {
                tracing::info!(master = name, builds = new.len(), "legacy builds recorded");
            }
            if !full {
                return Ok(report);
            }
        }
    }

    /// Polls every master of `masters` every `settings.interval_ms` until
    /// `stop` turns `true`; a failed poll waits twice as long each time, up
    /// to `settings.max_backoff_ms`. Masters added while it runs are polled
    /// from then on.
    pub async fn run_poller(
        self,
        masters: LegacyMasters,
        settings: PollSettings,
        mut stop: watch::Receiver<bool>,
    ) {
        let owner = format!("poller-{}", bbb_service::validate::slugid());
        let interval = Duration::from_millis(settings.interval_ms.max(10));
        let max_backoff = Duration::from_millis(settings.max_backoff_ms).max(interval);
        let mut due: HashMap<String, (Instant, u32)> = HashMap::new();
        loop {
            let added = masters.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            let listed = masters.list();
            for (name, master) in &listed {
                let now = Instant::now();
                let (at, failures) = due.entry(name.clone()).or_insert((now, 0));
                if *at > now {
                    continue;
                }
                match self
                    .poll_master(name, master.as_ref(), &owner, &settings)
                    .await
                {
                    Ok(_) => {
                        *failures = 0;
                        *at = Instant::now() + interval;
                    }
                    Err(e) => {
                        *failures += 1;
                        let wait = interval
                            .saturating_mul(1u32 << (*failures).min(16))
                            .min(max_backoff);
                        tracing::warn!(
                            master = %name,
                            error = %format!("{e:#}"),
                            failures = *failures,
                            retry_in_ms = wait.as_millis() as u64,
                            "polling the legacy master's builds failed; retrying"
                        );
                        *at = Instant::now() + wait;
                    }
                }
            }
            let next = due
                .values()
                .map(|(at, _)| *at)
                .min()
                .unwrap_or_else(|| Instant::now() + interval);
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = &mut added => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
        }
        for (name, _) in masters.list() {
            if let Err(e) = sources::release(&self.queue.db, &name, &owner).await {
                tracing::warn!(master = %name, error = %e, "could not give up the poll lease");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bbb_buildbot::{BuildId, BuildResult};

    fn build(
        branch: Option<&str>,
        revision: Option<&str>,
        results: Option<BuildResult>,
    ) -> FinishedBuild {
        FinishedBuild {
            build_id: BuildId(7),
            builder: "linux64-build".into(),
            number: 3,
            branch: branch.map(str::to_owned),
            revision: revision.map(str::to_owned),
            results,
            started: 100,
            finished: 160,
            task_id: None,
        }
    }

    #[test]
    fn a_builds_branch_is_its_last_component() {
        assert_eq!(branch_of("integration/mozilla-inbound/"), "mozilla-inbound");
        assert_eq!(branch_of("mozilla-central"), "mozilla-central");
    }

    #[test]
    fn a_build_becomes_an_observation_of_its_builder() {
        let o = observation(
            "bb",
            &build(
                Some("integration/m-i"),
                Some("abc"),
                Some(BuildResult::Warnings),
            ),
        )
        .expect("an observation");
        assert_eq!((o.side, o.source_id.as_str()), (Side::Buildbot, "bb/7"));
        assert_eq!((o.branch.as_str(), o.revision.as_str()), ("m-i", "abc"));
        assert_eq!(
            (o.job.as_str(), o.builder.as_deref()),
            ("linux64-build", Some("linux64-build"))
        );
        assert_eq!(o.result, Outcome::Warnings);
        assert_eq!((o.started, o.finished), (Some(100_000), 160_000));
        assert!(observation("bb", &build(None, Some("abc"), Some(BuildResult::Success))).is_none());
        assert!(observation("bb", &build(Some("b"), None, Some(BuildResult::Success))).is_none());
        assert!(observation("bb", &build(Some("b"), Some("abc"), None)).is_none());
    }
}
