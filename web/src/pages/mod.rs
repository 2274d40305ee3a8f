//! The pages, one module per area, and the routes that serve them.

pub(crate) mod acting;
pub(crate) mod actions;
pub(crate) mod graph;
pub(crate) mod groups;
pub(crate) mod tasks;

use axum::Router;
use axum::http::header;
use axum::routing::{get, post};
use bbb_tcvalues::TaskState;

use crate::Web;
use crate::layout::STYLESHEET;

/// Every page's route.
pub(crate) fn routes(web: Web) -> Router {
    Router::new()
        .route(
            "/static/bbb.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    STYLESHEET,
                )
            }),
        )
        .route("/groups/{task_group_id}", get(groups::show))
        .route("/groups/{task_group_id}/act", post(acting::group_act))
        .route("/tasks/{task_id}", get(tasks::show))
        .route("/tasks/{task_id}/act", post(acting::task_act))
        .route("/tasks/{task_id}/runs/{run_id}/log", get(tasks::log))
        .with_state(web)
}

/// The page of a task.
pub(crate) fn task_href(task_id: &str) -> String {
    format!("/tasks/{task_id}")
}

/// The page of a task group.
pub(crate) fn group_href(task_group_id: &str) -> String {
    format!("/groups/{task_group_id}")
}

/// `text` percent-encoded for a URL path segment or query value (everything
/// but unreserved characters; with `keep_slash`, `/` too, for artifact names).
pub(crate) fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The queue's URL of an artifact of a run (which redirects to its bytes).
pub(crate) fn artifact_url(root_url: &str, task_id: &str, run_id: i64, name: &str) -> String {
    format!(
        "{}/api/queue/v1/task/{task_id}/runs/{run_id}/artifacts/{}",
        root_url.trim_end_matches('/'),
        encode(name, true)
    )
}

/// The CSS class a state is shown with.
pub(crate) fn state_class(state: TaskState) -> &'static str {
    match state {
        TaskState::Completed => "state completed",
        TaskState::Failed => "state failed",
        TaskState::Exception => "state exception",
        TaskState::Running => "state running",
        TaskState::Pending => "state pending",
        TaskState::Unscheduled => "state unscheduled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_names_keep_their_slashes_and_lose_the_rest() {
        assert_eq!(
            artifact_url("http://q/", "T", 0, "public/logs/a b?.log"),
            "http://q/api/queue/v1/task/T/runs/0/artifacts/public/logs/a%20b%3F.log"
        );
        assert_eq!(encode("a/b&c", false), "a%2Fb%26c");
    }
}
