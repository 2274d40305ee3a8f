//! REST polling: the source that reconciles what the reporter's messages
//! missed (and the only one without them).

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::Value;

use super::RestMaster;
use super::client::{RestBuild, results_or, rows};
use crate::common::{PollOptions, now_secs};
use crate::error::Result;
use crate::events::{PollSource, polled_completion};
use crate::types::{BuildId, BuildRequestId, BuildResult, EventSource, LegacyEvent};

/// Rows fetched per REST call while polling.
const BATCH: u64 = 1000;
/// How far below its build-id watermark each poll looks again (ids are not
/// commit-ordered).
const ID_MARGIN: u64 = 64;
/// How far below its completion-time watermark each poll looks again.
const TIME_MARGIN: i64 = 5;

/// Reconciliation by REST polling: new builds give `BuildStarted`, builds
/// seen complete give `BuildFinished` (and `RequestRequeued` for RETRY),
/// requests completed since the watermark give `RequestCompleted`.
pub(super) struct RestPoller {
    master: RestMaster,
    /// Every build below this id has been looked at.
    next_build_id: u64,
    started_seen: HashSet<u64>,
    finished_seen: HashSet<u64>,
    /// Builds reported started, not yet finished.
    open: BTreeSet<u64>,
    completed_mark: i64,
    completed_seen: HashMap<u64, i64>,
}

impl RestPoller {
    pub(super) async fn new(master: RestMaster, options: &PollOptions) -> Result<RestPoller> {
        let since = now_secs() - options.lookback.as_secs() as i64;
        let first = master
            .get(
                "/builds",
                &[
                    ("started_at__ge", since.to_string()),
                    ("field", "buildid".to_owned()),
                    ("field", "started_at".to_owned()),
                    ("order", "buildid".to_owned()),
                    ("limit", "1".to_owned()),
                ],
            )
            .await?
            .and_then(|body| rows(&body, "builds").first()?.get("buildid")?.as_u64());
        let next_build_id = match first {
            Some(id) => id,
            None => {
                let last = master
                    .get(
                        "/builds",
                        &[
                            ("field", "buildid".to_owned()),
                            ("order", "-buildid".to_owned()),
                            ("limit", "1".to_owned()),
                        ],
                    )
                    .await?
                    .and_then(|body| rows(&body, "builds").first()?.get("buildid")?.as_u64());
                last.map_or(1, |id| id + 1)
            }
        };
        Ok(RestPoller {
            master,
            next_build_id,
            started_seen: HashSet::new(),
            finished_seen: HashSet::new(),
            open: BTreeSet::new(),
            completed_mark: since + TIME_MARGIN,
            completed_seen: HashMap::new(),
        })
    }

    async fn poll_all(&mut self) -> Result<Vec<LegacyEvent>> {
        let mut events = Vec::new();
        let floor = self.next_build_id.saturating_sub(ID_MARGIN).max(1);
        let body = self
            .master
            .get(
                "/builds",
                &[
                    ("buildid__ge", floor.to_string()),
                    ("order", "buildid".to_owned()),
                    ("limit", BATCH.to_string()),
                    ("property", "taskId".to_owned()),
                    ("property", "log_url".to_owned()),
                    ("property", "buildnumber".to_owned()),
                ],
            )
            .await?;
        let builds: Vec<RestBuild> = body
            .map(|body| {
                rows(&body, "builds")
                    .iter()
                    .filter_map(RestBuild::from_json)
                    .collect()
            })
            .unwrap_or_default();
        for build in &builds {
            self.observe(build, &mut events).await?;
        }
        // Builds still running that started below the window.
        let stale: Vec<u64> = self.open.iter().copied().filter(|id| *id < floor).collect();
        if !stale.is_empty() {
            for build in self.master.builds_where("buildid", &stale).await? {
                self.observe(&build, &mut events).await?;
            }
        }
        let floor = self.next_build_id.saturating_sub(ID_MARGIN);
        let open = &self.open;
        self.started_seen
            .retain(|id| *id >= floor || open.contains(id));
        self.finished_seen.retain(|id| *id >= floor);

        events.extend(self.poll_completed().await?);
        Ok(events)
    }

    async fn observe(&mut self, build: &RestBuild, events: &mut Vec<LegacyEvent>) -> Result<()> {
        self.next_build_id = self.next_build_id.max(build.id + 1);
        if self.finished_seen.contains(&build.id) {
            return Ok(());
        }
        let request_ids: Vec<BuildRequestId> =
            build.request_id.map(BuildRequestId).into_iter().collect();
        let builder = self.master.builder_name(build.builder_id).await?;
        let master = self.master.master_name(build.master_id).await;
        let task_id = build.property_str("taskId");
        // The master writes a build's properties just after its row: report
        // the start once they are there (`buildnumber` is always among them),
        // or once the build is complete.
        let ready = build.complete || !build.properties.is_empty();
        if ready && self.started_seen.insert(build.id) {
            events.push(LegacyEvent::BuildStarted {
                build_request_ids: request_ids.clone(),
                builder: builder.clone(),
                build_number: build.number,
                build_ids: vec![BuildId(build.id)],
                master: master.clone(),
                task_id: task_id.clone(),
                source: EventSource::RestPoll,
            });
        }
        if !build.complete {
            self.open.insert(build.id);
            return Ok(());
        }
        // All the properties of a bridged build (one with a `taskId`; the
        // others concern no task). Fetched before the build counts as seen: a
        // failed fetch fails this poll, and the next one reports it again.
        let mut properties = if task_id.is_some() {
            self.master
                .all_build_properties(build.id)
                .await?
                .unwrap_or_default()
        } else {
            serde_json::Map::new()
        };
        for (name, value) in &build.properties {
            properties
                .entry(name.clone())
                .or_insert_with(|| value.clone());
        }
        self.open.remove(&build.id);
        self.finished_seen.insert(build.id);
        let results = results_or(build.results, BuildResult::Exception);
        events.push(LegacyEvent::BuildFinished {
            build_request_ids: request_ids.clone(),
            builder,
            build_number: build.number,
            build_ids: vec![BuildId(build.id)],
            results,
            master,
            task_id,
            properties: properties.into_iter().collect(),
            log_url: build.property_str("log_url"),
            source: EventSource::RestPoll,
        });
        if results == BuildResult::Retry {
            events.extend(
                request_ids
                    .into_iter()
                    .map(|id| LegacyEvent::RequestRequeued {
                        build_request_id: id,
                        source: EventSource::RestPoll,
                    }),
            );
        }
        Ok(())
    }

    async fn poll_completed(&mut self) -> Result<Vec<LegacyEvent>> {
        let from = self.completed_mark - TIME_MARGIN;
        let Some(body) = self
            .master
            .get(
                "/buildrequests",
                &[
                    ("complete", "true".to_owned()),
                    ("complete_at__ge", from.to_string()),
                    ("field", "buildrequestid".to_owned()),
                    ("field", "complete".to_owned()),
                    ("field", "complete_at".to_owned()),
                    ("field", "results".to_owned()),
                    ("order", "complete_at".to_owned()),
                    ("order", "buildrequestid".to_owned()),
                    ("limit", BATCH.to_string()),
                ],
            )
            .await?
        else {
            return Ok(Vec::new());
        };
        let mut fresh = Vec::new();
        for row in rows(&body, "buildrequests") {
            let (Some(id), Some(complete_at)) = (
                row.get("buildrequestid").and_then(Value::as_u64),
                row.get("complete_at").and_then(Value::as_i64),
            ) else {
                continue;
            };
            if self.completed_seen.contains_key(&id) {
                continue;
            }
            fresh.push((id, complete_at, row.get("results").and_then(Value::as_i64)));
        }
        let ids: Vec<u64> = fresh.iter().map(|(id, _, _)| *id).collect();
        let builds = self.master.builds_where("buildrequestid", &ids).await?;
        let mut events = Vec::new();
        let mut highest = self.completed_mark;
        for (id, complete_at, results) in fresh {
            self.completed_seen.insert(id, complete_at);
            highest = highest.max(complete_at);
            let claimed = builds
                .iter()
                .any(|b| b.request_id == Some(id) && b.counts_as_run());
            events.push(polled_completion(
                BuildRequestId(id),
                results,
                claimed,
                EventSource::RestPoll,
            ));
        }
        self.completed_mark = highest;
        let floor = self.completed_mark - TIME_MARGIN;
        self.completed_seen.retain(|_, at| *at >= floor);
        Ok(events)
    }
}

impl PollSource for RestPoller {
    const WHAT: &'static str = "the Buildbot REST API";

    async fn poll_once(&mut self) -> Result<Vec<LegacyEvent>> {
        self.poll_all().await
    }
}
