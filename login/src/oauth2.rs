//! The OAuth2 endpoints upstream's web server exposes for third-party tools
//! (`services/web-server/src/servers/oauth2.js`, on oauth2orize), with the
//! same parameters, redirects, bodies and checks:
//!
//! 1. `GET /login/oauth/authorize?response_type&client_id&redirect_uri&scope&state&expires`:
//!    a signed-in user is sent to the consent page `/third-party?transactionID&client_id&expires&scope&clientId`
//!    (a whitelisted client asking exactly its registered scopes skips it);
//! 2. `POST /login/oauth/authorize/decision` (the consent form: `transaction_id`,
//!    `clientId`, `scope`, `expires`, `description`, `cancel` to deny) redirects
//!    back to the tool with `?code=..&state=..` (`code` clients) or
//!    `#access_token=..&token_type=Bearer&state=..` (`token` clients), or with
//!    `error=..`;
//! 3. `POST /login/oauth/token` (`grant_type=authorization_code`, `code`,
//!    `redirect_uri`) answers `{"access_token", "token_type": "Bearer"}`;
//! 4. `GET /login/oauth/credentials` with `Authorization: Bearer <token>`
//!    creates a client `<user>/<tool>-<6 chars>` through the auth service, as
//!    the user (restricted to `assume:login-identity:<user>`), with the
//!    scopes granted that the user has, deleted when it expires, and answers
//!    `{"expires", "credentials": {"clientId", "accessToken"}}` (expiring 30 s
//!    early).
//!
//! Upstream keeps the transaction between steps 1 and 2 in the session;
//! here it is a token signed with the queue's issuer secret, bound to the
//! user and valid ten minutes, so any bbb process on the database accepts it.

use crate::pages::{LoginState, html_response, local_path, page, protect};
use crate::store::{self, GRANT_LIFETIME_MS, Grant};
use crate::{EXPIRES_MARGIN, Peer, RegisteredClient, SignedIn};
use axum::body::Bytes;
use axum::extract::{Form, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bbb_auth::{normalize_scopes, scope_satisfied};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use hmac::{Hmac, Mac};
use maud::html;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::HashMap;

/// An OAuth2 error: its code (`invalid_request`, `unauthorized_client`...)
/// and message, as oauth2orize's `AuthorizationError` and `TokenError`.
#[derive(Debug)]
struct OAuthError {
    code: &'static str,
    message: String,
}

fn oauth_error(code: &'static str, message: impl Into<String>) -> OAuthError {
    OAuthError {
        code,
        message: message.into(),
    }
}

impl OAuthError {
    /// oauth2orize's status for the code.
    fn status(&self) -> StatusCode {
        match self.code {
            "invalid_request" | "invalid_scope" => StatusCode::BAD_REQUEST,
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "unauthorized_client" | "access_denied" | "invalid_grant" => StatusCode::FORBIDDEN,
            "unsupported_response_type" | "unsupported_grant_type" => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// An error of the authorization endpoints that cannot go back to the
    /// tool (no valid redirect URI): upstream's error body `{code, name}`.
    fn authorization_page(&self) -> Response {
        json_response(
            self.status(),
            json!({"code": self.code, "name": "AuthorizationError"}),
        )
    }

    /// An error of the token endpoint: `{error, error_description}`.
    fn token_body(&self) -> Response {
        json_response(
            self.status(),
            json!({"error": self.code, "error_description": self.message}),
        )
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut r = (status, axum::Json(body)).into_response();
    protect(r.headers_mut());
    r
}

/// Upstream's `InputError` of the credentials endpoint (its message says as
/// little as upstream's).
fn input_error() -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        json!({"name": "InputError", "message": "Could not generate credentials for this access token"}),
    )
}

/// A `302 Found` to `location` (as express's `res.redirect`).
fn found(location: &str) -> Response {
    let mut r = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    protect(r.headers_mut());
    r
}

/// The parameters of a query string or a form body.
fn params(raw: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect()
}

/// `a=b&c=d`.
fn encode(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// A scope parameter as oauth2orize reads it: split on spaces.
fn split_scope(scope: Option<&str>) -> Vec<String> {
    scope
        .map(|s| s.split(' ').map(str::to_owned).collect())
        .unwrap_or_default()
}

/// taskcluster-lib-scopes' `scopeIntersection`: the scopes of each set the
/// other satisfies, normalised.
pub(crate) fn scope_intersection(a: &[String], b: &[String]) -> Vec<String> {
    let mut both: Vec<String> = a
        .iter()
        .filter(|s| scope_satisfied(b, s))
        .cloned()
        .collect();
    both.extend(b.iter().filter(|s| scope_satisfied(a, s)).cloned());
    normalize_scopes(both)
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// A fresh slugid.
fn slugid() -> String {
    bbb_service::validate::slugid()
}

/// The date a consent form's `expires` names (`new Date(expires)` for the
/// forms upstream's UI posts: RFC 3339, `YYYY-MM-DD[THH:MM[:SS]]` in UTC,
/// `YYYY/MM/DD`).
fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, f) {
            return Some(d.and_utc());
        }
    }
    for f in ["%Y-%m-%d", "%Y/%m/%d"] {
        if let Ok(d) = NaiveDate::parse_from_str(t, f) {
            return d.and_hms_opt(0, 0, 0).map(|d| d.and_utc());
        }
    }
    None
}

/// The date format upstream answers with (`toISOString`).
fn iso(t: DateTime<Utc>) -> String {
    bbb_clock::fmt_ms(t.timestamp_millis())
}

// --- the transaction between the authorization request and the decision --

/// The authorization request a consent form answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Transaction {
    /// `client_id`.
    c: String,
    /// `redirect_uri`.
    r: String,
    /// The scopes asked.
    s: Vec<String>,
    /// `state`, if any.
    st: Option<String>,
    /// `response_type`.
    t: String,
    /// The user it was shown to.
    u: String,
    /// Until when it may be decided (ms).
    e: i64,
}

fn transaction_mac(state: &LoginState, payload: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(state.issuer.1.as_bytes()).expect("HMAC takes any key");
    mac.update(b"bbb-login oauth2 transaction\n");
    mac.update(payload.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// The transaction id of `t`: its JSON and a MAC with the issuer's secret.
fn seal(state: &LoginState, t: &Transaction) -> String {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(t).expect("serialisable"));
    let mac = transaction_mac(state, &payload);
    format!("{payload}.{mac}")
}

/// The transaction `id` names, if it is one of ours, for `user`, and not
/// expired.
fn open(state: &LoginState, id: &str, user: &str) -> Option<Transaction> {
    use subtle::ConstantTimeEq;
    let (payload, mac) = id.split_once('.')?;
    if !bool::from(
        transaction_mac(state, payload)
            .as_bytes()
            .ct_eq(mac.as_bytes()),
    ) {
        return None;
    }
    let t: Transaction = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    (t.u == user && t.e > state.clock.now_ms()).then_some(t)
}

// --- redirects back to the tool ---------------------------------------------

/// `redirect_uri` with `params` in its query (a `code` client) or its
/// fragment (a `token` client), as oauth2orize responds.
fn back_to_tool(redirect_uri: &str, fragment: bool, params: &[(&str, &str)]) -> Response {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return oauth_error("server_error", "bad redirect URI").authorization_page();
    };
    if fragment {
        url.set_fragment(Some(&encode(params)));
    } else {
        url.query_pairs_mut().extend_pairs(params);
    }
    found(url.as_str())
}

/// The error `e` sent back to the tool of transaction `t`.
fn error_to_tool(t: &Transaction, e: &OAuthError) -> Response {
    let mut params = vec![("error", e.code), ("error_description", e.message.as_str())];
    if let Some(s) = t.st.as_deref().filter(|s| !s.is_empty()) {
        params.push(("state", s));
    }
    back_to_tool(&t.r, t.t == "token", &params)
}

// --- the grant ---------------------------------------------------------------

/// What the user decided: upstream's `ares`.
struct Decision {
    scope: Vec<String>,
    description: Option<String>,
    expires: Option<DateTime<Utc>>,
    client_id: String,
}

/// The default name of the client a tool gets: `<user>/<tool>-<6 chars>`.
fn default_client_id(user: &str, tool: &str) -> String {
    format!("{user}/{tool}-{}", &slugid()[..6])
}

/// How the user signed in, for the grant (`users` or `proxy`).
fn provider(state: &LoginState, user: &str) -> &'static str {
    if state.login.is_user(user) {
        "users"
    } else {
        "proxy"
    }
}

/// Grant `t` as decided: upstream's code and token grants (the same checks
/// in the same order), then the code or the access token is recorded and the
/// tool's browser sent back with it.
async fn grant(state: &LoginState, who: &SignedIn, t: &Transaction, ares: Decision) -> Response {
    match try_grant(state, who, t, ares).await {
        Ok(r) => r,
        Err(e) => error_to_tool(t, &e),
    }
}

async fn try_grant(
    state: &LoginState,
    who: &SignedIn,
    t: &Transaction,
    ares: Decision,
) -> Result<Response, OAuthError> {
    let client = find_client(state, &t.c)
        .ok_or_else(|| oauth_error("unauthorized_client", "Unauthorized client"))?;
    if sorted(&client.scope) != sorted(&t.s) {
        return Err(oauth_error("invalid_scope", "Invalid scope"));
    }
    if !client.redirect_uri.contains(&t.r) {
        return Err(oauth_error("access_denied", "Access denied"));
    }
    if client.response_type != t.t {
        return Err(oauth_error(
            "unsupported_response_type",
            "Unsupported response type",
        ));
    }
    if scope_intersection(&ares.scope, &client.scope) != normalize_scopes(ares.scope.clone()) {
        return Err(oauth_error("invalid_scope", "Invalid scope"));
    }
    let now = state.clock.now();
    let user_scopes = state
        .auth
        .expand(&[format!("assume:login-identity:{}", who.user)]);
    let max = crate::duration::from_now(&client.max_expires, now)
        .map_err(|e| oauth_error("server_error", e))?;
    let expires = match ares.expires {
        Some(e) if e <= max => e,
        _ => max,
    };
    let scopes = scope_intersection(
        &scope_intersection(&ares.scope, &client.scope),
        &user_scopes,
    );
    let description = ares
        .description
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| {
            format!(
                "Client generated by {} for OAuth2 Client {}",
                who.user, client.client_id
            )
        });
    let grant = Grant {
        client_id: client.client_id.clone(),
        redirect_uri: t.r.clone(),
        identity: who.user.clone(),
        identity_provider_id: provider(state, &who.user).to_owned(),
        expires: now.timestamp_millis() + GRANT_LIFETIME_MS,
        client_details: json!({
            "clientId": ares.client_id,
            "description": description,
            "scopes": scopes,
            "expires": iso(expires),
            "deleteOnExpiration": true,
        }),
    };
    let server_error = |e: anyhow::Error| {
        tracing::error!(error = %e, "recording an OAuth2 grant");
        oauth_error("server_error", "Internal error")
    };
    let state_param = t.st.as_deref().filter(|s| !s.is_empty());
    if t.t == "code" {
        let code = slugid();
        store::create_authorization_code(&state.db, &code, &grant)
            .await
            .map_err(server_error)?;
        let mut params = vec![("code", code.as_str())];
        params.extend(state_param.map(|s| ("state", s)));
        Ok(back_to_tool(&t.r, false, &params))
    } else {
        let token = STANDARD.encode(slugid());
        store::create_access_token(&state.db, &token, &grant)
            .await
            .map_err(server_error)?;
        let mut params = vec![("access_token", token.as_str()), ("token_type", "Bearer")];
        params.extend(state_param.map(|s| ("state", s)));
        Ok(back_to_tool(&t.r, true, &params))
    }
}

fn find_client<'s>(state: &'s LoginState, id: &str) -> Option<&'s RegisteredClient> {
    state
        .login
        .config()
        .registered_clients
        .iter()
        .find(|c| c.client_id == id)
}

// --- the endpoints -------------------------------------------------------------

/// Who is signed in (a proxied user is signed in now; the cookie to set).
fn who_is(
    state: &LoginState,
    headers: &HeaderMap,
    peer: Peer,
) -> (Option<SignedIn>, Option<String>) {
    state.login.session(headers, peer)
}

fn with_cookie(mut r: Response, cookie: Option<String>) -> Response {
    if let Some(v) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// `GET /login/oauth/authorize`.
pub(crate) async fn authorize(
    State(state): State<LoginState>,
    peer: Peer,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let raw = raw.unwrap_or_default();
    let (who, cookie) = who_is(&state, &headers, peer);
    let Some(who) = who else {
        return found(&format!("/third-party?{raw}"));
    };
    with_cookie(authorize_as(&state, &who, &raw).await, cookie)
}

async fn authorize_as(state: &LoginState, who: &SignedIn, raw: &str) -> Response {
    let q = params(raw);
    let get = |k: &str| q.get(k).map(String::as_str);
    let Some(response_type) = get("response_type").filter(|t| !t.is_empty()) else {
        return oauth_error(
            "invalid_request",
            "Missing required parameter: response_type",
        )
        .authorization_page();
    };
    if response_type != "code" && response_type != "token" {
        return oauth_error(
            "unsupported_response_type",
            format!("Unsupported response type: {response_type}"),
        )
        .authorization_page();
    }
    let Some(client_id) = get("client_id").filter(|c| !c.is_empty()) else {
        return oauth_error("invalid_request", "Missing required parameter: client_id")
            .authorization_page();
    };
    let redirect_uri = get("redirect_uri").unwrap_or("");
    let client = match find_client(state, client_id) {
        Some(c) if c.redirect_uri.iter().any(|u| u == redirect_uri) => c,
        _ => return oauth_error("unauthorized_client", "Unauthorized client").authorization_page(),
    };
    let scope = split_scope(get("scope"));
    let now = state.clock.now();
    let t = Transaction {
        c: client.client_id.clone(),
        r: redirect_uri.to_owned(),
        s: scope.clone(),
        st: get("state").map(str::to_owned),
        t: response_type.to_owned(),
        u: who.user.clone(),
        e: now.timestamp_millis() + GRANT_LIFETIME_MS,
    };
    let client_name = default_client_id(&who.user, &client.client_id);
    if client.whitelisted && sorted(&client.scope) == sorted(&scope) {
        let expires = get("expires").and_then(|e| crate::duration::from_now(e, now).ok());
        let ares = Decision {
            scope,
            description: None,
            expires,
            client_id: client_name,
        };
        return grant(state, who, &t, ares).await;
    }
    let max = client.max_expires.as_str();
    let expires = match get("expires") {
        Some(e) => match (
            crate::duration::from_now(e, now),
            crate::duration::from_now(max, now),
        ) {
            (Ok(asked), Ok(limit)) if asked <= limit => e,
            _ => max,
        },
        None => max,
    };
    let sealed = seal(state, &t);
    let query = encode(&[
        ("transactionID", sealed.as_str()),
        ("client_id", client_id),
        ("expires", expires),
        ("scope", get("scope").unwrap_or("")),
        ("clientId", client_name.as_str()),
    ]);
    found(&format!("/third-party?{query}"))
}

/// `GET /third-party`: the consent page (upstream's UI page of the same
/// name). Not signed in: the sign-in page first, coming back here.
pub(crate) async fn third_party(
    State(state): State<LoginState>,
    peer: Peer,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let raw = raw.unwrap_or_default();
    let q = params(&raw);
    let get = |k: &str| q.get(k).map(String::as_str);
    let (who, cookie) = who_is(&state, &headers, peer);
    let Some(tid) = get("transactionID") else {
        // Sent here by the authorization endpoint before signing in.
        let back = format!("/login/oauth/authorize?{raw}");
        return with_cookie(
            match who {
                Some(_) => found(&back),
                None => found(&format!("/login?{}", encode(&[("next", back.as_str())]))),
            },
            cookie,
        );
    };
    let Some(who) = who else {
        let back = local_path(Some(&format!("/third-party?{raw}")));
        return found(&format!("/login?{}", encode(&[("next", back.as_str())])));
    };
    let Some(t) = open(&state, tid, &who.user) else {
        let body = html! {
            p.error role="alert" { "This authorization request has expired or is not yours. Go back to the tool and start again." }
        };
        return with_cookie(
            html_response(
                StatusCode::FORBIDDEN,
                page("Authorization failed", Some(&who), body),
            ),
            cookie,
        );
    };
    let now = state.clock.now();
    let expires_text = get("expires").unwrap_or("");
    let expires = crate::duration::from_now(expires_text, now)
        .ok()
        .filter(|e| *e > now)
        .or_else(|| {
            find_client(&state, &t.c)
                .and_then(|c| crate::duration::from_now(&c.max_expires, now).ok())
        })
        .unwrap_or(now);
    let client_name = get("clientId")
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| default_client_id(&who.user, &t.c));
    let description = format!("Client generated by {} for OAuth2 Client {}", who.user, t.c);
    let csrf = state.login.csrf_token(&who);
    let body = html! {
        p { strong { (t.c) } " asks for TaskCluster credentials of yours, for these scopes:" }
        ul.scopes {
            @for s in &t.s { li { code { (s) } } }
            @if t.s.is_empty() { li { "(no scopes)" } }
        }
        p { "It will get the scopes of these that you have yourself, as the client "
            code { (client_name) } ", and be sent back to " code { (t.r) } "." }
        form method="post" action="/login/oauth/authorize/decision" {
            input type="hidden" name="transaction_id" value=(tid);
            input type="hidden" name="clientId" value=(client_name);
            input type="hidden" name="scope" value=(t.s.join(" "));
            input type="hidden" name="csrf" value=(csrf);
            p {
                label for="expires" { "Expires (UTC, at the latest " (iso(expires)) ")" }
                br;
                input id="expires" name="expires" type="text" size="30" required value=(iso(expires));
            }
            p {
                label for="description" { "Description" }
                br;
                input id="description" name="description" type="text" size="60" value=(description);
            }
            p {
                button type="submit" name="allow" value="1" autofocus { "Allow" }
                " "
                button type="submit" name="cancel" value="1" { "Deny" }
            }
        }
    };
    with_cookie(
        html_response(StatusCode::OK, page("Authorize a tool", Some(&who), body)),
        cookie,
    )
}

/// `POST /login/oauth/authorize/decision`: the consent form.
pub(crate) async fn decision(
    State(state): State<LoginState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some(who) = state.login.signed_in(&headers) else {
        return found("/third-party");
    };
    let get = |k: &str| form.get(k).map(String::as_str);
    let forbidden = || json_response(StatusCode::FORBIDDEN, json!({"name": "ForbiddenError"}));
    if !state.login.check_csrf(&who, get("csrf").unwrap_or("")) {
        return forbidden();
    }
    let Some(t) = get("transaction_id").and_then(|id| open(&state, id, &who.user)) else {
        return forbidden();
    };
    if get("cancel").is_some_and(|c| !c.is_empty()) {
        let mut params = vec![("error", "access_denied")];
        if let Some(s) = t.st.as_deref().filter(|s| !s.is_empty()) {
            params.push(("state", s));
        }
        return back_to_tool(&t.r, t.t == "token", &params);
    }
    let ares = Decision {
        scope: get("scope")
            .filter(|s| !s.is_empty())
            .map(|s| split_scope(Some(s)))
            .unwrap_or_default(),
        description: get("description").map(str::to_owned),
        expires: get("expires").and_then(parse_date),
        client_id: get("clientId")
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| default_client_id(&who.user, &t.c)),
    };
    grant(&state, &who, &t, ares).await
}

/// The origins of the registered clients' redirect URIs (upstream's
/// `thirdPartyCorsOptions`), which may call the token and credentials
/// endpoints from a page.
fn cors(state: &LoginState, headers: &HeaderMap, r: &mut Response) {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return;
    };
    let allowed = state.login.config().registered_clients.iter().any(|c| {
        c.redirect_uri
            .iter()
            .any(|u| url::Url::parse(u).is_ok_and(|u| u.origin().ascii_serialization() == origin))
    });
    let h = r.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    if allowed && let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    } else if let Ok(v) = HeaderValue::from_str(&state.root_url) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
}

/// `OPTIONS` of the token and credentials endpoints.
pub(crate) async fn preflight(State(state): State<LoginState>, headers: HeaderMap) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    cors(&state, &headers, &mut r);
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET,HEAD,PUT,PATCH,POST,DELETE"),
    );
    if let Some(asked) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    r
}

/// `POST /login/oauth/token`: an authorization code for an access token.
pub(crate) async fn token(
    State(state): State<LoginState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let fields: HashMap<String, String> = if is_json {
        serde_json::from_slice::<HashMap<String, Value>>(&body)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_owned())))
            .collect()
    } else {
        params(&String::from_utf8_lossy(&body))
    };
    let mut r = exchange(&state, &fields).await;
    cors(&state, &headers, &mut r);
    r
}

async fn exchange(state: &LoginState, fields: &HashMap<String, String>) -> Response {
    let get = |k: &str| fields.get(k).map(String::as_str);
    let grant_type = get("grant_type").unwrap_or("undefined");
    if grant_type != "authorization_code" {
        return oauth_error(
            "unsupported_grant_type",
            format!("Unsupported grant type: {grant_type}"),
        )
        .token_body();
    }
    let Some(code) = get("code").filter(|c| !c.is_empty()) else {
        return oauth_error("invalid_request", "Missing required parameter: code").token_body();
    };
    let token = STANDARD.encode(slugid());
    let now = state.clock.now_ms();
    match store::exchange_code(&state.db, code, get("redirect_uri"), &token, now).await {
        Ok(Some(_)) => {
            let mut r = json_response(
                StatusCode::OK,
                json!({"access_token": token, "token_type": "Bearer"}),
            );
            r.headers_mut()
                .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            r
        }
        Ok(None) => oauth_error("invalid_grant", "Invalid authorization code").token_body(),
        Err(e) => {
            tracing::error!(error = %e, "exchanging an OAuth2 authorization code");
            oauth_error("server_error", "Internal error").token_body()
        }
    }
}

/// `GET /login/oauth/credentials`: TaskCluster credentials for a bearer
/// access token.
pub(crate) async fn credentials(State(state): State<LoginState>, headers: HeaderMap) -> Response {
    let mut r = match issue_credentials(&state, &headers).await {
        Ok(r) => r,
        Err(why) => {
            tracing::info!(reason = %why, "OAuth2 credentials refused");
            input_error()
        }
    };
    cors(&state, &headers, &mut r);
    r
}

async fn issue_credentials(state: &LoginState, headers: &HeaderMap) -> Result<Response, String> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("Bearer"))
        .ok_or("no bearer token")?;
    let token = auth.replacen("Bearer ", "", 1);
    let entry = store::access_token(&state.db, &token)
        .await
        .map_err(|e| format!("reading the access token: {e}"))?
        .ok_or("unknown access token")?;
    let now = state.clock.now();
    let details = &entry.client_details;
    let client_expires = details["expires"]
        .as_str()
        .and_then(parse_date)
        .ok_or("the grant has no expiry")?;
    if entry.expires < now.timestamp_millis() || client_expires < now {
        return Err("the access token or the client it grants expired".into());
    }
    if entry.identity_provider_id == "users" && !state.login.is_user(&entry.identity) {
        return Err(format!("user {} is no longer configured", entry.identity));
    }
    let client_id = details["clientId"].as_str().ok_or("no clientId")?;
    let user_scopes = vec![format!("assume:login-identity:{}", entry.identity)];
    let body = json!({
        "description": details["description"],
        "scopes": details["scopes"],
        "expires": details["expires"],
        "deleteOnExpiration": true,
    });
    let created = create_client(state, client_id, &user_scopes, &body).await?;
    let expires = created["expires"]
        .as_str()
        .and_then(parse_date)
        .ok_or("createClient answered no expiry")?
        - EXPIRES_MARGIN;
    tracing::info!(
        client_id = %client_id,
        expires = %iso(expires),
        user_identity = %entry.identity,
        "createCredentials"
    );
    let mut r = json_response(
        StatusCode::OK,
        json!({
            "expires": iso(expires),
            "credentials": {
                "clientId": created["clientId"],
                "accessToken": created["accessToken"],
            },
        }),
    );
    r.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// The auth service's `createClient(clientId, body)`, called over HTTP as
/// the queue's issuer restricted to `authorized` (the user's scopes), as
/// upstream's web server calls it: the client gets only what the user may
/// grant.
async fn create_client(
    state: &LoginState,
    client_id: &str,
    authorized: &[String],
    body: &Value,
) -> Result<Value, String> {
    let mut url = url::Url::parse(&format!("{}/api/auth/v1/clients", state.root_url))
        .map_err(|e| e.to_string())?;
    url.path_segments_mut()
        .map_err(|_| "the root URL cannot have a path")?
        .push(client_id);
    let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let header = bbb_auth::hawk_header(
        &state.issuer.0,
        &state.issuer.1,
        None,
        Some(authorized),
        "PUT",
        url.path(),
        url.host_str().unwrap_or("localhost"),
        url.port_or_known_default().unwrap_or(80),
        Some((bytes.as_slice(), "application/json")),
        state.clock.now(),
    );
    let res = state
        .http
        .put(url.clone())
        .header(header::AUTHORIZATION, header)
        .header(header::CONTENT_TYPE, "application/json")
        .body(bytes)
        .send()
        .await
        .map_err(|e| format!("createClient: {e}"))?;
    let status = res.status();
    let answer: Value = res.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(format!("createClient {client_id}: {status} {answer}"));
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn intersection_as_upstream() {
        assert_eq!(
            scope_intersection(&v(&["a:*"]), &v(&["a:b", "c"])),
            v(&["a:b"])
        );
        assert_eq!(
            scope_intersection(&v(&["queue:*", "x"]), &v(&["queue:get-task:*"])),
            v(&["queue:get-task:*"])
        );
        assert!(scope_intersection(&v(&["a"]), &v(&["b"])).is_empty());
    }

    #[test]
    fn consent_form_dates() {
        let d = |s: &str| parse_date(s).map(iso);
        assert_eq!(d("3019/04/01").as_deref(), Some("3019-04-01T00:00:00.000Z"));
        assert_eq!(d("2030-01-02").as_deref(), Some("2030-01-02T00:00:00.000Z"));
        assert_eq!(
            d("2030-01-02T03:04:05.678Z").as_deref(),
            Some("2030-01-02T03:04:05.678Z")
        );
        assert_eq!(
            d("2030-01-02T03:04").as_deref(),
            Some("2030-01-02T03:04:00.000Z")
        );
        assert_eq!(d("soon"), None);
    }

    #[test]
    fn redirects_carry_the_parameters_as_oauth2orize_does() {
        let r = back_to_tool(
            "https://t.example.com/cb?x=1",
            false,
            &[("code", "c"), ("state", "s t")],
        );
        assert_eq!(
            r.headers()[header::LOCATION],
            "https://t.example.com/cb?x=1&code=c&state=s+t"
        );
        let r = back_to_tool(
            "https://t.example.com/cb",
            true,
            &[("access_token", "a"), ("token_type", "Bearer")],
        );
        assert_eq!(
            r.headers()[header::LOCATION],
            "https://t.example.com/cb#access_token=a&token_type=Bearer"
        );
        assert_eq!(r.status(), StatusCode::FOUND);
    }
}
