//! Finished builds read for the migration record
//! ([`LegacyMaster::finished_builds`](crate::LegacyMaster::finished_builds)):
//! the values every adapter answers with, and the rule telling the bridge's
//! own builds from the ones the master ran by itself.

use serde::{Deserialize, Serialize};

use crate::common::REASON_PREFIX;
use crate::types::{BuildId, BuildResult};

/// Where a reading of finished builds resumes: after the build finished at
/// `finished` (epoch seconds) with id `build_id`, in the order
/// (finish time, build id). [`FinishedCursor::START`] reads from the
/// beginning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FinishedCursor {
    /// The finish time of the last build read, epoch seconds.
    pub finished: i64,
    /// Its build id (0: every build finished at `finished`).
    pub build_id: u64,
}

impl FinishedCursor {
    /// Before every build.
    pub const START: FinishedCursor = FinishedCursor {
        finished: 0,
        build_id: 0,
    };

    /// Whether a build finished at `finished` with id `build_id` comes after
    /// the cursor.
    pub fn is_before(&self, finished: i64, build_id: u64) -> bool {
        (finished, build_id) > (self.finished, self.build_id)
    }
}

/// One finished build, as the migration record reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishedBuild {
    /// The build's id on its master (`builds.id`, `buildid`): one per
    /// request a merged 0.8 build satisfied.
    pub build_id: BuildId,
    /// Its builder.
    pub builder: String,
    /// Its number on the builder.
    pub number: u64,
    /// The branch built (as the master stores it: a repository path such as
    /// `integration/mozilla-inbound`, or a branch name), if any.
    pub branch: Option<String>,
    /// The revision built, if known.
    pub revision: Option<String>,
    /// Its result; `None` while the master has set the finish time but not
    /// yet the outcome (0.8: the request is neither completed nor back in the
    /// queue): read it again later.
    pub results: Option<BuildResult>,
    /// Start, epoch seconds.
    pub started: i64,
    /// Finish, epoch seconds.
    pub finished: i64,
    /// The task whose request this build ran, when the bridge injected it
    /// (the buildset's reason `Created by BBB for task <taskId>`, its
    /// `external_idstring` `taskId:<taskId>` or its `taskId` property);
    /// `None` for a build the master's own schedulers asked for.
    pub task_id: Option<String>,
}

impl FinishedBuild {
    /// Whether the bridge injected the build's request (its result is then
    /// a bridged task's run, recorded from the queue's own events).
    pub fn is_bridged(&self) -> bool {
        self.task_id.is_some()
    }
}

/// The task id a buildset's reason names, when it is the bridge's
/// (`Created by BBB for task <taskId>`).
pub fn task_of_reason(reason: &str) -> Option<String> {
    reason
        .strip_prefix(REASON_PREFIX)
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// The task id an `external_idstring` names (`taskId:<taskId>`, as the
/// scheduler-DB adapter writes it).
pub(crate) fn task_of_idstring(idstring: &str) -> Option<String> {
    idstring
        .strip_prefix("taskId:")
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// A property value as text: a plain JSON string, or the first element of a
/// `[value, source]` pair (how 0.8 stores and Buildbot 4 serves them).
pub(crate) fn property_text(value: &serde_json::Value) -> Option<String> {
    let value = match value {
        serde_json::Value::Array(pair) => pair.first()?,
        other => other,
    };
    match value {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_bridges_requests_are_told_by_reason_idstring_or_property() {
        assert_eq!(
            task_of_reason("Created by BBB for task abc").as_deref(),
            Some("abc")
        );
        assert_eq!(task_of_reason("The Nightly scheduler"), None);
        assert_eq!(task_of_idstring("taskId:abc").as_deref(), Some("abc"));
        assert_eq!(task_of_idstring("taskId:"), None);
        assert_eq!(
            property_text(&json!(["abc", "bbb"])).as_deref(),
            Some("abc")
        );
        assert_eq!(property_text(&json!("abc")).as_deref(), Some("abc"));
        assert_eq!(property_text(&json!([null, "x"])), None);
    }

    #[test]
    fn the_cursor_orders_by_finish_then_id() {
        let c = FinishedCursor {
            finished: 10,
            build_id: 5,
        };
        assert!(c.is_before(10, 6));
        assert!(c.is_before(11, 1));
        assert!(!c.is_before(10, 5));
        assert!(!c.is_before(9, 100));
        assert!(FinishedCursor::START.is_before(0, 1));
    }
}
