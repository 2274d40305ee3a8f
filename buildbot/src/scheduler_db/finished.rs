//! The scheduler DB's finished builds, for the migration record.

use mysql_async::prelude::Queryable;

use super::SchedulerDb;
use crate::error::Result;
use crate::finished::{
    FinishedBuild, FinishedCursor, property_text, task_of_idstring, task_of_reason,
};
use crate::types::{BuildId, BuildResult};

impl SchedulerDb {
    /// `builds` rows with a `finish_time` after `after`, by (finish time,
    /// id), joined to their request, buildset and source stamp. 0.8 keeps no
    /// result per build: a build whose request was claimed again by a newer
    /// build, or went back to the queue, ended RETRY; one whose request is
    /// complete ended with the request's result; otherwise the master has
    /// not written the outcome yet (`results: None`).
    pub(super) async fn read_finished_builds(
        &self,
        after: FinishedCursor,
        limit: usize,
    ) -> Result<Vec<FinishedBuild>> {
        let mut conn = self.pool().get_conn().await?;
        let rows: Vec<mysql_async::Row> = conn
            .exec(
                "SELECT b.id, b.number, b.start_time, b.finish_time, br.buildername, \
                 br.complete, br.results, br.claimed_at, \
                 (SELECT MAX(n.id) FROM builds n WHERE n.brid = b.brid), \
                 ss.branch, ss.revision, bs.reason, bs.external_idstring, \
                 (SELECT p.property_value FROM buildset_properties p \
                  WHERE p.buildsetid = bs.id AND p.property_name = 'taskId' LIMIT 1) \
                 FROM builds b JOIN buildrequests br ON br.id = b.brid \
                 LEFT JOIN buildsets bs ON bs.id = br.buildsetid \
                 LEFT JOIN sourcestamps ss ON ss.id = bs.sourcestampid \
                 WHERE b.finish_time IS NOT NULL \
                 AND (b.finish_time > ? OR (b.finish_time = ? AND b.id > ?)) \
                 ORDER BY b.finish_time, b.id LIMIT ?",
                (after.finished, after.finished, after.build_id, limit as u64),
            )
            .await?;
        drop(conn);
        let mut builds = Vec::with_capacity(rows.len());
        for row in rows {
            let id: u64 = row.get(0).unwrap_or(0);
            let newest: Option<u64> = row.get::<Option<u64>, _>(8).flatten();
            let claimed = row.get::<Option<i64>, _>(7).flatten().unwrap_or(0) != 0;
            let complete = row.get::<Option<i64>, _>(5).flatten().unwrap_or(0) != 0;
            let results = if newest.unwrap_or(id) > id || !claimed {
                Some(BuildResult::Retry)
            } else if complete {
                Some(
                    row.get::<Option<i64>, _>(6)
                        .flatten()
                        .and_then(BuildResult::from_code)
                        .unwrap_or(BuildResult::Exception),
                )
            } else {
                None
            };
            let text = |i: usize| row.get::<Option<String>, _>(i).flatten();
            let task_id = text(11)
                .as_deref()
                .and_then(task_of_reason)
                .or_else(|| text(12).as_deref().and_then(task_of_idstring))
                .or_else(|| {
                    text(13)
                        .and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok())
                        .as_ref()
                        .and_then(property_text)
                });
            builds.push(FinishedBuild {
                build_id: BuildId(id),
                builder: text(4).unwrap_or_default(),
                number: row.get(1).unwrap_or(0),
                branch: text(9),
                revision: text(10),
                results,
                started: row.get(2).unwrap_or(0),
                finished: row.get::<Option<i64>, _>(3).flatten().unwrap_or(0),
                task_id,
            });
        }
        Ok(builds)
    }
}
