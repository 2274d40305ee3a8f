//! The sign-in pages (`/login`, `/logout`), the frame they share and the
//! routes of everything this crate serves.

use crate::{Login, Peer, SignedIn};
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bbb_auth::Authenticator;
use bbb_clock::Clock;
use bbb_queue::db::Db;
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use std::sync::Arc;

/// The cookie holding the sign-in form's token (the form carries the same
/// value: another site can neither read nor set it).
pub(crate) const FORM_COOKIE: &str = "bbb-login-form";

/// What every handler gets.
#[derive(Clone)]
pub(crate) struct LoginState {
    /// Sign-in and its configuration.
    pub login: Login,
    /// The queue's database (OAuth2 codes and tokens).
    pub db: Db,
    /// The queue's clock.
    pub clock: Clock,
    /// The shared authenticator (expanding users' scopes).
    pub auth: Arc<Authenticator>,
    /// The queue's issuer, which calls the auth service for the OAuth2
    /// credentials (restricted to the user's scopes).
    pub issuer: Arc<(String, String)>,
    /// The public root URL.
    pub root_url: String,
    /// For calls to the auth service.
    pub http: reqwest::Client,
}

/// Every route of sign-in.
pub(crate) fn routes(state: LoginState) -> Router {
    Router::new()
        .route("/login", get(login_form).post(login_submit))
        .route("/logout", get(logout))
        .route("/third-party", get(crate::oauth2::third_party))
        .route("/login/oauth/authorize", get(crate::oauth2::authorize))
        .route(
            "/login/oauth/authorize/decision",
            post(crate::oauth2::decision),
        )
        .route(
            "/login/oauth/token",
            post(crate::oauth2::token).options(crate::oauth2::preflight),
        )
        .route(
            "/login/oauth/credentials",
            get(crate::oauth2::credentials).options(crate::oauth2::preflight),
        )
        .with_state(state)
}

/// A whole bbb page, the frame the sign-in pages and the web UI share:
/// `title` (also the `<h1>`), the navigation with who is signed in, then
/// `body`; the web UI's stylesheet (`/static/bbb.css`).
pub fn page(title: &str, who: Option<&SignedIn>, body: Markup) -> Markup {
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

/// `status` with `markup`, not cached, never framed by another site.
pub(crate) fn html_response(status: StatusCode, markup: Markup) -> Response {
    let mut r = (status, markup).into_response();
    protect(r.headers_mut());
    r
}

/// The headers every sign-in page carries: not cached, not framed
/// (clickjacking a consent page), no referrer to elsewhere.
pub(crate) fn protect(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

/// A `303 See Other` to `location`, setting `cookies`.
pub(crate) fn see_other(location: &str, cookies: &[String]) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    protect(r.headers_mut());
    r
}

/// `next` when it is a path on this site (`/...`, not `//host` nor
/// `/\host`, no control characters); `/` otherwise, so a link cannot send a
/// user elsewhere after signing in.
pub(crate) fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && !n.chars().any(|c| c.is_control() || c == '\\') =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// The query of `GET /login`.
#[derive(Deserialize)]
pub(crate) struct Next {
    next: Option<String>,
}

/// The fields of the sign-in form.
#[derive(Deserialize)]
pub(crate) struct Credentials {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    form_token: String,
    next: Option<String>,
}

/// The sign-in form with `error` (if any), a fresh form token and its
/// cookie.
fn form(
    state: &LoginState,
    status: StatusCode,
    who: Option<&SignedIn>,
    name: &str,
    next: &str,
    error: Option<&str>,
) -> Response {
    let token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>());
    let no_users = state.login.config().users.is_empty();
    let body = html! {
        @if let Some(who) = who {
            p { "You are signed in as " strong { (who.user) } ". "
                a href=(next) { "Continue" } " or sign in as someone else." }
        }
        @if let Some(e) = error {
            p.error role="alert" id="login-error" { (e) }
        }
        @if no_users {
            p { "No users are configured (see the " code { "[login]" } " section of the configuration)." }
        }
        form method="post" action="/login" {
            input type="hidden" name="form_token" value=(token);
            input type="hidden" name="next" value=(next);
            p {
                label for="name" { "Name" }
                br;
                input id="name" name="name" type="text" required autofocus
                    autocomplete="username" value=(name)
                    aria-describedby=[error.map(|_| "login-error")];
            }
            p {
                label for="password" { "Password" }
                br;
                input id="password" name="password" type="password" required
                    autocomplete="current-password";
            }
            p { button type="submit" { "Sign in" } }
        }
    };
    let mut r = html_response(status, page("Sign in", who, body));
    let cookie = format!(
        "{FORM_COOKIE}={token}; Path=/login; HttpOnly; SameSite=Strict; Max-Age=3600{}",
        state.login.secure()
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// `GET /login`: the form; a user the trusted proxy names is signed in at
/// once and sent on to `next`.
async fn login_form(
    State(state): State<LoginState>,
    peer: Peer,
    headers: HeaderMap,
    Query(q): Query<Next>,
) -> Response {
    let next = local_path(q.next.as_deref());
    if let Some(user) = state.login.proxy_user(&headers, peer) {
        return match state.login.sign_in(&user) {
            Ok(who) => see_other(&next, &[state.login.session_cookie(&who)]),
            Err(e) => {
                tracing::error!(error = %e, "signing in a proxied user");
                html_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    page(
                        "Sign in",
                        None,
                        html! { p.error role="alert" { "Signing in failed." } },
                    ),
                )
            }
        };
    }
    let who = state.login.signed_in(&headers);
    form(&state, StatusCode::OK, who.as_ref(), "", &next, None)
}

/// `POST /login`: a right name and password sign in and go on to `next`; a
/// wrong one gives the form again, saying only that one of them was wrong.
async fn login_submit(
    State(state): State<LoginState>,
    headers: HeaderMap,
    Form(f): Form<Credentials>,
) -> Response {
    let next = local_path(f.next.as_deref());
    let expected = crate::cookie(&headers, FORM_COOKIE).unwrap_or("");
    let fresh = {
        use subtle::ConstantTimeEq;
        !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(f.form_token.as_bytes()))
    };
    if !fresh {
        return form(
            &state,
            StatusCode::FORBIDDEN,
            None,
            &f.name,
            &next,
            Some("This form has expired or did not come from this site: please sign in again."),
        );
    }
    if !state.login.check_password(&f.name, &f.password) {
        tracing::info!(user = %f.name, "sign-in refused");
        return form(
            &state,
            StatusCode::UNAUTHORIZED,
            None,
            &f.name,
            &next,
            Some("The name or the password is wrong."),
        );
    }
    match state.login.sign_in(&f.name) {
        Ok(who) => {
            tracing::info!(user = %who.user, "signed in");
            let clear =
                format!("{FORM_COOKIE}=; Path=/login; HttpOnly; SameSite=Strict; Max-Age=0");
            see_other(&next, &[state.login.session_cookie(&who), clear])
        }
        Err(e) => {
            tracing::error!(error = %e, "issuing a user's credentials");
            form(
                &state,
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                &f.name,
                &next,
                Some("Signing in failed; please try again."),
            )
        }
    }
}

/// `GET /logout`: the session cookie is removed (its credentials expire on
/// their own).
async fn logout(State(state): State<LoginState>) -> Response {
    let body = html! {
        p role="status" { "You are signed out." }
        p { a href="/login" autofocus { "Sign in again" } }
    };
    let mut r = html_response(StatusCode::OK, page("Signed out", None, body));
    if let Ok(v) = HeaderValue::from_str(&state.login.signed_out_cookie()) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        for (next, expected) in [
            (Some("/groups/abc?x=1"), "/groups/abc?x=1"),
            (Some("/"), "/"),
            (None, "/"),
            (Some("https://evil.example.com/"), "/"),
            (Some("//evil.example.com/"), "/"),
            (Some("/\\evil.example.com"), "/"),
            (Some("/a\\b"), "/"),
            (Some("/a\nb"), "/"),
            (Some("javascript:alert(1)"), "/"),
            (Some(""), "/"),
        ] {
            assert_eq!(local_path(next), expected, "{next:?}");
        }
    }
}
