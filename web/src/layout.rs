//! The frame every page shares: title, navigation, who is signed in, the
//! stylesheet; and the not-found and error pages.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bbb_login::SignedIn;
use maud::{DOCTYPE, Markup, html};

/// The one stylesheet, served at `/static/bbb.css`.
pub const STYLESHEET: &str = include_str!("../static/bbb.css");

/// A whole page: `title` (also the `<h1>`), the navigation with who is
/// signed in, then `body`.
pub(crate) fn page(title: &str, who: Option<&SignedIn>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · bbb" }
                link rel="stylesheet" href="/static/bbb.css";
            }
            body {
                header {
                    nav aria-label="main" {
                        a href="/" { "Migration" }
                        a href="/health" { "Health" }
                        span.who {
                            @if let Some(who) = who {
                                "Signed in as " strong { (who.user) } " · "
                                a href="/logout" { "Sign out" }
                            } @else {
                                a href="/login" { "Sign in" }
                            }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A 404 page saying what was not found.
pub(crate) fn not_found(who: Option<&SignedIn>, what: &str) -> Response {
    let body = html! { p.error role="alert" { (what) " was not found." } };
    (StatusCode::NOT_FOUND, page("Not found", who, body)).into_response()
}

/// A page saying why a request could not be answered, served with `status`.
pub(crate) fn error(who: Option<&SignedIn>, status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = html! { p.error role="alert" { (message) } };
    (status, page(title, who, body)).into_response()
}
