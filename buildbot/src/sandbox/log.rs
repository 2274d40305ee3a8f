//! The sandbox's build logs: what each build did, step by step, rendered
//! as a Buildbot 0.8 master's log ([`BuildLog`]).
//!
//! A sandbox build runs four steps: it sets the `master` property, sets the
//! request's properties, checks out its source stamp (nothing is fetched),
//! and runs its script, which ends with the build's result after its
//! scripted time. The text is made from what the sandbox keeps about the
//! build, so asking again gives the same text.

use std::fmt::Write as _;

use super::state::{BuildRecord, Ending, Request};
use crate::buildlog::{BuildLog, LogStep};
use crate::types::BuildResult;

/// The log of `build`, attempt `attempt` (0-based) of `request`, on master
/// `master`.
pub(super) fn render(
    master: &str,
    request: &Request,
    attempt: usize,
    build: &BuildRecord,
) -> String {
    let start = build.start_time;
    let done = |name: &str, text: String| LogStep {
        name: name.to_owned(),
        results: Some(BuildResult::Success),
        started: start,
        finished: Some(start),
        text,
    };
    let mut properties = String::new();
    for (name, value) in &request.properties {
        match value.as_str() {
            Some(text) => {
                let _ = writeln!(properties, "{name}: {text}");
            }
            None => {
                let _ = writeln!(properties, "{name}: {value}");
            }
        }
    }
    let source = &request.sourcestamp;
    let checkout = format!(
        "repository: {}\nbranch: {}\nrevision: {}\nproject: {}\n",
        source.repository,
        source.branch.as_deref().unwrap_or("(default)"),
        source.revision.as_deref().unwrap_or("(latest)"),
        source.project,
    );
    let mut script = if request.task_id.is_empty() {
        format!(
            "a build of the master's own scheduler (reason: {}), build request {}\n",
            request.reason, request.brid
        )
    } else {
        format!(
            "the build of task {}, build request {}, attempt {}\n",
            request.task_id,
            request.brid,
            attempt + 1
        )
    };
    let outcome = match (build.results, build.ending) {
        (None, _) => String::new(),
        (Some(results), Some(Ending::Stopped)) => {
            format!("the build was stopped: it ends {results}\n")
        }
        (Some(results), Some(Ending::EndedByHand)) => {
            format!("the build was ended by hand: {results}\n")
        }
        (Some(BuildResult::Retry), _) => {
            "the script ends RETRY: the request goes back to the queue and runs again\n".to_owned()
        }
        (Some(results), _) => format!("the script ends {results}\n"),
    };
    script.push_str(&outcome);
    BuildLog {
        builder: request.builder.clone(),
        slave: format!("{}-slave", request.builder),
        start_time: start,
        results: build.results,
        build_id: build.build_id.to_string(),
        revision: source.revision.clone(),
        steps: vec![
            done("set props: master", format!("master: {master}\n")),
            done("set build properties", properties),
            done("checkout", checkout),
            LogStep {
                name: "run script".to_owned(),
                results: build.results,
                started: start,
                finished: build.finish_time,
                text: script,
            },
        ],
    }
    .render()
}
