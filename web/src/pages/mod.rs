//! The pages, one module per area, and the routes that serve them.

pub(crate) mod acting;
pub(crate) mod actions;
mod dashboard;
pub(crate) mod graph;
pub(crate) mod groups;
mod health;
pub(crate) mod tasks;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bbb_login::SignedIn;
use bbb_tcvalues::TaskState;
use maud::html;

use crate::Web;
use crate::layout::{STYLESHEET, page};

/// The script that refreshes the parts of a page marked `data-live`.
pub(crate) const LIVE_JS: &str = include_str!("../../static/live.js");

/// Every page's route. Every page sees the user a trusted reverse proxy
/// names as signed in ([`bbb_login::proxied_sessions`]: their session cookie
/// is set on the first page they load).
pub(crate) fn routes(web: Web) -> Router {
    let proxied =
        axum::middleware::from_fn_with_state(web.login.clone(), bbb_login::proxied_sessions);
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
        .route(
            "/static/live.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    LIVE_JS,
                )
            }),
        )
        .route("/", get(dashboard::overview))
        .route("/branches/{branch}", get(dashboard::branch))
        .route("/branches/{branch}/pairs/{*label}", get(dashboard::pair))
        .route("/health", get(health::page))
        .route("/health/figures", get(health::figures))
        .route("/groups/{task_group_id}", get(groups::show))
        .route("/groups/{task_group_id}/act", post(acting::group_act))
        .route("/tasks/{task_id}", get(tasks::show))
        .route("/tasks/{task_id}/act", post(acting::task_act))
        .route("/tasks/{task_id}/runs/{run_id}/log", get(tasks::log))
        .layer(proxied)
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

/// A page saying what could not be read (the error is the database's or a
/// service's: no secret in it), with status 500.
pub(crate) fn failed(who: Option<&SignedIn>, title: &str, error: &str) -> Response {
    tracing::warn!(page = title, error, "a page could not be made");
    let body = html! { p.error role="alert" { "This page could not be made: " (error) } };
    (StatusCode::INTERNAL_SERVER_ERROR, page(title, who, body)).into_response()
}

/// A time for people, in UTC to the second, in a `<time>` element.
pub(crate) fn time(ms: i64) -> maud::Markup {
    let t = bbb_clock::from_ms(ms);
    html! {
        time datetime=(bbb_clock::fmt_ms(ms)) { (t.format("%Y-%m-%d %H:%M:%S UTC").to_string()) }
    }
}

/// A duration for people: `850 ms`, `12 s`, `3 min`, `2 h`, `4 d`.
pub(crate) fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..120_000 => format!("{} s", ms / 1000),
        120_000..7_200_000 => format!("{} min", ms / 60_000),
        7_200_000..172_800_000 => format!("{} h", ms / 3_600_000),
        _ => format!("{} d", ms / 86_400_000),
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

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(-5), "0 ms");
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_400), "12 s");
        assert_eq!(duration(180_000), "3 min");
        assert_eq!(duration(3 * 3_600_000), "3 h");
        assert_eq!(duration(4 * 86_400_000), "4 d");
    }
}
