//! A Buildbot 4 master's finished builds, for the migration record.

use serde_json::Value;

use super::RestMaster;
use super::client::{RestBuild, rows};
use crate::error::Result;
use crate::finished::{FinishedBuild, FinishedCursor, property_text, task_of_reason};
use crate::types::{BuildId, BuildResult};

impl RestMaster {
    /// Complete builds after `after`, by (`complete_at`, `buildid`): `GET
    /// /builds?complete=true&complete_at__ge=…` with the properties `taskId`,
    /// `branch` and `revision` (Buildbot sets the last two from the build's
    /// source stamp); a build without them takes its buildset's source stamp
    /// and reason (`/buildrequests/<id>`, `/buildsets/<id>`).
    pub(super) async fn read_finished_builds(
        &self,
        after: FinishedCursor,
        limit: usize,
    ) -> Result<Vec<FinishedBuild>> {
        let limit = limit.max(1);
        let mut found = Vec::new();
        let mut offset = 0usize;
        loop {
            let Some(body) = self
                .get(
                    "/builds",
                    &[
                        ("complete", "true".to_owned()),
                        ("complete_at__ge", after.finished.to_string()),
                        ("order", "complete_at".to_owned()),
                        ("order", "buildid".to_owned()),
                        ("limit", limit.to_string()),
                        ("offset", offset.to_string()),
                        ("property", "taskId".to_owned()),
                        ("property", "branch".to_owned()),
                        ("property", "revision".to_owned()),
                    ],
                )
                .await?
            else {
                return Ok(found);
            };
            let page: Vec<RestBuild> = rows(&body, "builds")
                .iter()
                .filter_map(RestBuild::from_json)
                .collect();
            let full = page.len() >= limit;
            for build in page {
                let finished = build.complete_at.unwrap_or(0);
                if !after.is_before(finished, build.id) {
                    continue;
                }
                found.push(self.finished_build(build).await?);
                if found.len() >= limit {
                    return Ok(found);
                }
            }
            // A full page of builds at or before the cursor (many finished in
            // the cursor's second): read on.
            if !full || !found.is_empty() {
                return Ok(found);
            }
            offset += limit;
        }
    }

    async fn finished_build(&self, build: RestBuild) -> Result<FinishedBuild> {
        let text = |name: &str| build.properties.get(name).and_then(property_text);
        let mut branch = text("branch");
        let mut revision = text("revision");
        let mut task_id = text("taskId");
        if (branch.is_none() || revision.is_none())
            && let Some(buildset) = self.buildset_of(build.request_id).await?
        {
            let stamp = buildset
                .get("sourcestamps")
                .and_then(Value::as_array)
                .and_then(|s| s.first())
                .cloned()
                .unwrap_or(Value::Null);
            let field = |name: &str| {
                stamp
                    .get(name)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            };
            branch = branch.or_else(|| field("branch"));
            revision = revision.or_else(|| field("revision"));
            task_id = task_id.or_else(|| {
                buildset
                    .get("reason")
                    .and_then(Value::as_str)
                    .and_then(task_of_reason)
            });
        }
        Ok(FinishedBuild {
            build_id: BuildId(build.id),
            builder: self.builder_name(build.builder_id).await?,
            number: build.number,
            branch,
            revision,
            results: Some(
                build
                    .results
                    .and_then(BuildResult::from_code)
                    .unwrap_or(BuildResult::Exception),
            ),
            started: build.started_at,
            finished: build.complete_at.unwrap_or(0),
            task_id,
        })
    }

    /// The buildset of a request (`None` when either is gone).
    async fn buildset_of(&self, request: Option<u64>) -> Result<Option<Value>> {
        let Some(request) = request else {
            return Ok(None);
        };
        let Some(row) = self
            .request_row(crate::types::BuildRequestId(request))
            .await?
        else {
            return Ok(None);
        };
        let Some(bsid) = row.get("buildsetid").and_then(Value::as_u64) else {
            return Ok(None);
        };
        Ok(self
            .get(&format!("/buildsets/{bsid}"), &[])
            .await?
            .and_then(|body| rows(&body, "buildsets").into_iter().next()))
    }
}
