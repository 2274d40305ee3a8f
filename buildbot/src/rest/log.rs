//! A finished build's log from the data API: the build, its steps, each
//! step's logs read whole through `/logs/<logid>/raw` (which drops the
//! stream prefix of stdio lines), rendered as one text in the shape of a
//! 0.8 master's log ([`BuildLog`]) so a bridged run's log reads the same
//! whichever master ran it.

use serde_json::Value;

use super::RestMaster;
use super::client::{results_or, rows};
use crate::buildlog::{BuildLog, LogStep, MAX_LOG_BYTES};
use crate::error::Result;
use crate::types::BuildResult;

impl RestMaster {
    /// The log of build `build`; `None` for an unknown build or one still
    /// running.
    pub(super) async fn read_build_log(&self, build: u64) -> Result<Option<String>> {
        let query = [
            ("property", "revision".to_owned()),
            ("property", "workername".to_owned()),
        ];
        let Some(body) = self.get(&format!("/builds/{build}"), &query).await? else {
            return Ok(None);
        };
        let Some(row) = rows(&body, "builds").into_iter().next() else {
            return Ok(None);
        };
        if !row
            .get("complete")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            return Ok(None);
        }
        let property = |name: &str| {
            row.get("properties")
                .and_then(|p| p.get(name))
                .and_then(|p| p.get(0))
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let builder = match row.get("builderid").and_then(Value::as_u64) {
            Some(id) => self.builder_name(id).await?,
            None => String::new(),
        };
        let started_at = row.get("started_at").and_then(Value::as_i64).unwrap_or(0);
        let mut log = BuildLog {
            builder,
            slave: property("workername").unwrap_or_default(),
            start_time: started_at,
            results: Some(results_or(
                row.get("results").and_then(Value::as_i64),
                BuildResult::Exception,
            )),
            build_id: build.to_string(),
            revision: property("revision"),
            steps: Vec::new(),
        };
        let steps = self
            .get(
                &format!("/builds/{build}/steps"),
                &[("order", "number".to_owned())],
            )
            .await?
            .map(|body| rows(&body, "steps"))
            .unwrap_or_default();
        let mut size = 0;
        for step in steps {
            let Some(step_id) = step.get("stepid").and_then(Value::as_u64) else {
                continue;
            };
            let logs = self
                .get(
                    &format!("/steps/{step_id}/logs"),
                    &[("order", "logid".to_owned())],
                )
                .await?
                .map(|body| rows(&body, "logs"))
                .unwrap_or_default();
            let logs: Vec<&Value> = logs
                .iter()
                // HTML logs are pages, not lines of the build's output.
                .filter(|l| l.get("type").and_then(Value::as_str) != Some("h"))
                .collect();
            let mut text = String::new();
            for entry in &logs {
                let Some(log_id) = entry.get("logid").and_then(Value::as_u64) else {
                    continue;
                };
                if logs.len() > 1 {
                    let name = entry.get("name").and_then(Value::as_str).unwrap_or("log");
                    text.push_str(&format!("--- {name} ---\n"));
                }
                if size < MAX_LOG_BYTES
                    && let Some(raw) = self.get_text(&format!("/logs/{log_id}/raw")).await?
                {
                    size += raw.len();
                    text.push_str(&raw);
                    if !raw.is_empty() && !raw.ends_with('\n') {
                        text.push('\n');
                    }
                }
            }
            let started = step.get("started_at").and_then(Value::as_i64);
            log.steps.push(LogStep {
                name: step
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("step")
                    .to_owned(),
                results: step
                    .get("results")
                    .and_then(Value::as_i64)
                    .and_then(BuildResult::from_code),
                started: started.unwrap_or(started_at),
                finished: step
                    .get("complete_at")
                    .and_then(Value::as_i64)
                    .or(started)
                    .or(Some(started_at)),
                text,
            });
        }
        Ok(Some(log.render()))
    }
}
