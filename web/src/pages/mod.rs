//! The pages, one module per area, and the routes that serve them.

mod dashboard;
mod health;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bbb_login::SignedIn;
use maud::html;

use crate::Web;
use crate::layout::{STYLESHEET, page};

/// The script that refreshes the parts of a page marked `data-live`.
pub(crate) const LIVE_JS: &str = include_str!("../../static/live.js");

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
        .with_state(web)
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
    fn durations_read_well() {
        assert_eq!(duration(-5), "0 ms");
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_400), "12 s");
        assert_eq!(duration(180_000), "3 min");
        assert_eq!(duration(3 * 3_600_000), "3 h");
        assert_eq!(duration(4 * 86_400_000), "4 d");
    }
}
