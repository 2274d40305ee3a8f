//! The 0.8 scheduler DB polled for events: new `builds` rows give
//! `BuildStarted` (with the task of a buildset the bridge made), finished builds `BuildFinished` (and `RequestRequeued`
//! for a RETRY), completed requests `RequestCompleted`.

use std::collections::{HashMap, HashSet};

use mysql_async::Pool;
use mysql_async::prelude::Queryable;

use crate::common::{PollOptions, now_secs};
use crate::error::Result;
use crate::events::{PollSource, polled_completion};
use crate::types::{BuildId, BuildRequestId, BuildResult, EventSource, LegacyEvent};

/// How far below its watermark each poll looks again, to catch rows that
/// committed late (auto-increment ids and second-resolution times are not
/// commit-ordered). Seconds for times, rows for ids.
const TIME_MARGIN: i64 = 5;
const ID_MARGIN: u64 = 256;
const BATCH: u64 = 5000;

/// Remembers what was reported near a watermark.
#[derive(Debug, Default)]
struct Window {
    mark: i64,
    seen: HashMap<u64, i64>,
}

impl Window {
    fn from(&self) -> i64 {
        self.mark - TIME_MARGIN
    }

    fn advance(&mut self, to: i64) {
        if to > self.mark {
            self.mark = to;
        }
        let floor = self.from();
        self.seen.retain(|_, time| *time >= floor);
    }
}

enum Outcome {
    Done(BuildResult),
    Requeued,
    Undetermined,
}

/// A started build: `builds.id`, its number, its request, the builder, the
/// claiming master and the buildset's `external_idstring`.
type StartedRow = (u64, u64, u64, String, Option<String>, Option<String>);

/// The scheduler DB's poller.
pub(super) struct Poller {
    pool: Pool,
    last_build_id: u64,
    started_seen: HashSet<u64>,
    finished: Window,
    completed: Window,
}

impl Poller {
    pub(super) async fn new(pool: Pool, options: &PollOptions) -> Result<Poller> {
        let since = now_secs() - options.lookback.as_secs() as i64;
        let mut conn = pool.get_conn().await?;
        let last_build_id: Option<u64> = conn
            .exec_first(
                "SELECT COALESCE(MAX(id), 0) FROM builds WHERE start_time < ?",
                (since,),
            )
            .await?;
        drop(conn);
        Ok(Poller {
            pool,
            last_build_id: last_build_id.unwrap_or(0),
            started_seen: HashSet::new(),
            finished: Window {
                mark: since + TIME_MARGIN,
                seen: HashMap::new(),
            },
            completed: Window {
                mark: since + TIME_MARGIN,
                seen: HashMap::new(),
            },
        })
    }

    async fn poll_started(&mut self) -> Result<Vec<LegacyEvent>> {
        let floor = self.last_build_id.saturating_sub(ID_MARGIN);
        let mut conn = self.pool.get_conn().await?;
        let rows: Vec<StartedRow> = conn
            .exec(
                "SELECT b.id, b.number, b.brid, br.buildername, br.claimed_by_name, \
                 bs.external_idstring \
                 FROM builds b JOIN buildrequests br ON br.id = b.brid \
                 LEFT JOIN buildsets bs ON bs.id = br.buildsetid \
                 WHERE b.id > ? ORDER BY b.id LIMIT ?",
                (floor, BATCH),
            )
            .await?;
        drop(conn);
        let mut groups: Vec<((String, u64), LegacyEvent)> = Vec::new();
        for (id, number, brid, builder, master, external) in rows {
            // The bridge's buildsets are `taskId:<taskId>`: the task is known
            // even before the bridge recorded the request's id.
            let task_id = external
                .as_deref()
                .and_then(|e| e.strip_prefix("taskId:"))
                .map(str::to_owned);
            self.last_build_id = self.last_build_id.max(id);
            if !self.started_seen.insert(id) {
                continue;
            }
            let key = (builder.clone(), number);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((
                    _,
                    LegacyEvent::BuildStarted {
                        build_request_ids,
                        build_ids,
                        task_id: group_task,
                        ..
                    },
                )) => {
                    build_request_ids.push(BuildRequestId(brid));
                    build_ids.push(BuildId(id));
                    // A merged build serves several tasks: it names none.
                    if *group_task != task_id {
                        *group_task = None;
                    }
                }
                _ => groups.push((
                    key,
                    LegacyEvent::BuildStarted {
                        build_request_ids: vec![BuildRequestId(brid)],
                        builder,
                        build_number: number,
                        build_ids: vec![BuildId(id)],
                        master,
                        task_id,
                        source: EventSource::DbPoll,
                    },
                )),
            }
        }
        let floor = self.last_build_id.saturating_sub(ID_MARGIN);
        self.started_seen.retain(|id| *id > floor);
        Ok(groups.into_iter().map(|(_, event)| event).collect())
    }

    async fn poll_finished(&mut self) -> Result<Vec<LegacyEvent>> {
        type Row = (
            u64,
            u64,
            u64,
            i64,
            String,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<u64>,
        );
        let mut conn = self.pool.get_conn().await?;
        let rows: Vec<Row> = conn
            .exec(
                "SELECT b.id, b.number, b.brid, b.finish_time, br.buildername, br.claimed_by_name, \
                 br.complete, br.results, br.claimed_at, \
                 (SELECT MAX(n.id) FROM builds n WHERE n.brid = b.brid) \
                 FROM builds b JOIN buildrequests br ON br.id = b.brid \
                 WHERE b.finish_time >= ? ORDER BY b.finish_time, b.id LIMIT ?",
                (self.finished.from(), BATCH),
            )
            .await?;
        drop(conn);

        struct Group {
            builder: String,
            number: u64,
            master: Option<String>,
            rows: Vec<(u64, u64, i64, Outcome)>,
        }
        let mut groups: Vec<Group> = Vec::new();
        for (id, number, brid, finish, builder, master, complete, results, claimed_at, newest) in
            rows
        {
            if self.finished.seen.contains_key(&id) {
                continue;
            }
            let claimed = claimed_at.unwrap_or(0) != 0;
            let outcome = if newest.unwrap_or(id) > id || !claimed {
                // Claimed again by a newer build, or back in the queue (and
                // maybe cancelled there since): this build ended RETRY.
                Outcome::Requeued
            } else if complete.unwrap_or(0) != 0 {
                Outcome::Done(
                    results
                        .and_then(BuildResult::from_code)
                        .unwrap_or(BuildResult::Exception),
                )
            } else {
                Outcome::Undetermined
            };
            match groups
                .iter_mut()
                .find(|g| g.builder == builder && g.number == number)
            {
                Some(group) => group.rows.push((id, brid, finish, outcome)),
                None => groups.push(Group {
                    builder,
                    number,
                    master,
                    rows: vec![(id, brid, finish, outcome)],
                }),
            }
        }

        let mut events = Vec::new();
        let mut deferred_floor: Option<i64> = None;
        let mut highest = self.finished.mark;
        for group in groups {
            if group
                .rows
                .iter()
                .any(|(_, _, _, outcome)| matches!(outcome, Outcome::Undetermined))
            {
                // The master set finish_time but has not completed or
                // requeued the request yet: look again next time.
                let earliest = group.rows.iter().map(|r| r.2).min().unwrap_or(highest);
                deferred_floor = Some(deferred_floor.map_or(earliest, |f| f.min(earliest)));
                continue;
            }
            let results = group
                .rows
                .iter()
                .find_map(|(_, _, _, outcome)| match outcome {
                    Outcome::Done(results) => Some(*results),
                    _ => None,
                })
                .unwrap_or(BuildResult::Retry);
            for (id, _, finish, _) in &group.rows {
                self.finished.seen.insert(*id, *finish);
                highest = highest.max(*finish);
            }
            events.push(LegacyEvent::BuildFinished {
                build_request_ids: group.rows.iter().map(|r| BuildRequestId(r.1)).collect(),
                builder: group.builder,
                build_number: group.number,
                build_ids: group.rows.iter().map(|r| BuildId(r.0)).collect(),
                results,
                master: group.master,
                task_id: None,
                properties: Default::default(),
                log_url: None,
                source: EventSource::DbPoll,
            });
            for (_, brid, _, outcome) in &group.rows {
                if matches!(outcome, Outcome::Requeued) {
                    events.push(LegacyEvent::RequestRequeued {
                        build_request_id: BuildRequestId(*brid),
                        source: EventSource::DbPoll,
                    });
                }
            }
        }
        let mark = deferred_floor.map_or(highest, |floor| floor.min(highest));
        self.finished.advance(mark);
        Ok(events)
    }

    async fn poll_completed(&mut self) -> Result<Vec<LegacyEvent>> {
        let mut conn = self.pool.get_conn().await?;
        let rows: Vec<(u64, Option<i64>, Option<i64>, i64)> = conn
            .exec(
                "SELECT id, results, claimed_at, complete_at FROM buildrequests \
                 WHERE complete = 1 AND complete_at >= ? ORDER BY complete_at, id LIMIT ?",
                (self.completed.from(), BATCH),
            )
            .await?;
        drop(conn);
        let mut events = Vec::new();
        let mut highest = self.completed.mark;
        for (id, results, claimed_at, complete_at) in rows {
            if self.completed.seen.contains_key(&id) {
                continue;
            }
            self.completed.seen.insert(id, complete_at);
            highest = highest.max(complete_at);
            let claimed = claimed_at.unwrap_or(0) != 0;
            events.push(polled_completion(
                BuildRequestId(id),
                results,
                claimed,
                EventSource::DbPoll,
            ));
        }
        self.completed.advance(highest);
        Ok(events)
    }
}

impl PollSource for Poller {
    const WHAT: &'static str = "the scheduler DB";

    async fn poll_once(&mut self) -> Result<Vec<LegacyEvent>> {
        let mut events = self.poll_started().await?;
        events.extend(self.poll_finished().await?);
        events.extend(self.poll_completed().await?);
        Ok(events)
    }
}
