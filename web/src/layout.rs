//! The frame every page shares: title, navigation, who is signed in, the
//! stylesheet; and the not-found and error pages.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bbb_login::SignedIn;
use maud::{Markup, html};

/// The one stylesheet, served at `/static/bbb.css`.
pub const STYLESHEET: &str = include_str!("../static/bbb.css");

/// A whole page: `title` (also the `<h1>`), the navigation with who is
/// signed in, then `body`; the frame the sign-in pages share
/// ([`bbb_login::page`]).
pub(crate) fn page(title: &str, who: Option<&SignedIn>, body: Markup) -> Markup {
    bbb_login::page(title, who, body)
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
