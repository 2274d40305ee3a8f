//! The HTTP API at `<rootUrl>/api/queue/v1/`: routing, Hawk authentication,
//! scope checks and the TaskCluster error body.

mod handlers;
pub mod routes;

use crate::blob::BlobStore;
use crate::core::Queue;
use crate::error::QueueError;
use crate::time::fmt_ms;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bbb_auth::{Authenticator, HawkRequest, ScopeExpr};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// Shared state of the HTTP layer.
#[derive(Clone)]
pub struct Api {
    /// The queue core.
    pub queue: Queue,
    /// Hawk verification and scope expansion.
    pub auth: Arc<Authenticator>,
    /// Artifact bytes.
    pub blobs: BlobStore,
    /// When the process started (for `ping`).
    pub started: std::time::Instant,
}

/// The largest request body accepted (as upstream: 10 MB).
pub const BODY_LIMIT: usize = 10 * 1024 * 1024;

/// A successful reply.
pub enum Reply {
    /// 200 with JSON.
    Json(Value),
    /// 303 with a `Location` and a JSON body (artifact redirects).
    Redirect(String, Value, String),
    /// Another status with JSON (424 for error artifacts).
    Status(StatusCode, Value, Option<String>),
}

/// Who is calling and with which scopes, plus what the error body needs.
pub struct Call {
    /// The route.
    pub route: routes::Route,
    /// The authenticated identity.
    pub client_id: Option<String>,
    /// Expanded scopes.
    pub scopes: Vec<String>,
    /// The parsed body (`null` when empty).
    pub body: Value,
    /// Query parameters.
    pub query: HashMap<String, String>,
    /// Whether the request declared `application/json`.
    pub json_content_type: bool,
}

impl Call {
    /// Check a scope expression; 403 `InsufficientScopes` with upstream's wording otherwise.
    pub fn authorize(&self, expr: &ScopeExpr) -> Result<(), QueueError> {
        if expr.satisfied_by(&self.scopes) {
            return Ok(());
        }
        let missing = expr
            .unsatisfied(&self.scopes)
            .unwrap_or_else(|| expr.clone());
        let pretty = |v: &ScopeExpr| serde_json::to_string_pretty(v).unwrap_or_default();
        Err(QueueError::InsufficientScopes(format!(
            "Client ID {} does not have sufficient scopes and is missing the following scopes:\n\n```\n{}\n```\n\nYou have the following scopes:\n\n```\n{}\n```\n\nThis request requires the client to satisfy the following scope expression:\n\n```\n{}\n```",
            self.client_id.as_deref().unwrap_or("anonymous"),
            pretty(&missing),
            serde_json::to_string_pretty(&self.scopes).unwrap_or_default(),
            pretty(expr)
        )))
    }

    /// The body, for methods with an input schema: it must be JSON.
    pub fn input(&self) -> Result<&Value, QueueError> {
        if !self.json_content_type || self.body.is_null() {
            return Err(QueueError::MalformedPayload(
                "This method requires a JSON body with `Content-Type: application/json`".into(),
            ));
        }
        Ok(&self.body)
    }

    /// `limit` and `continuationToken` query parameters: (page size, token).
    pub fn paging(&self) -> Result<(i64, Option<String>), QueueError> {
        let limit = match self.query.get("limit") {
            Some(l) => l
                .parse::<i64>()
                .ok()
                .filter(|l| *l >= 1)
                .ok_or_else(|| {
                    QueueError::InvalidRequestArguments(format!(
                        "limit {l:?} must be a positive integer"
                    ))
                })?
                .min(1000),
            None => 1000,
        };
        let token = match self.query.get("continuationToken") {
            Some(t) if !t.is_empty() => Some(decode_token(t)?),
            _ => None,
        };
        Ok((limit, token))
    }
}

/// An opaque continuation token for a keyset position.
pub fn encode_token(key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

fn decode_token(t: &str) -> Result<String, QueueError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| QueueError::Input(format!("Invalid continuationToken {t:?}")))
}

/// The axum router: the API, the blob endpoints and CORS.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/api/queue/v1/{*rest}", axum::routing::any(dispatch))
        .route("/api/queue/v1/", axum::routing::any(dispatch))
        .route(
            "/blobs/{task_id}/{run_id}/{*name}",
            axum::routing::any(handlers::blob),
        )
        .fallback(not_found)
        .layer(tower_http::compression::CompressionLayer::new())
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(api)
}

async fn not_found(uri: Uri) -> Response {
    error_response(
        &QueueError::NotFound(format!("No such route: {}", uri.path())),
        "unknown",
        json!({}),
        Value::Null,
        &crate::time::Clock::system(),
    )
}

fn host_and_port(headers: &HeaderMap) -> (String, u16) {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let (name, port) = match host.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || host.starts_with('[') => match p.parse::<u16>() {
            Ok(p) => (h.to_string(), Some(p)),
            Err(_) => (host.to_string(), None),
        },
        _ => (host.to_string(), None),
    };
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok());
    let fwd_port = headers
        .get("x-forwarded-port")
        .and_then(|h| h.to_str().ok())
        .and_then(|p| p.parse().ok());
    let port = fwd_port
        .or(if proto == Some("https") {
            Some(443)
        } else {
            None
        })
        .or(port)
        .unwrap_or(80);
    (name, port)
}

async fn dispatch(
    State(api): State<Api>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let clock = api.queue.clock.clone();
    let rest = uri.path().strip_prefix("/api/queue/v1/").unwrap_or("");
    let segs: Vec<String> = rest.split('/').map(routes::decode).collect();
    let Some(route) = routes::route(&method, &segs) else {
        return error_response(
            &QueueError::NotFound(format!("No such API method: {method} {}", uri.path())),
            "unknown",
            json!({}),
            Value::Null,
            &clock,
        );
    };
    let name = route.name();
    let params = route.params();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok());
    let json_content_type = content_type.is_some_and(|c| {
        c.trim()
            .to_ascii_lowercase()
            .starts_with("application/json")
    });
    let body_json = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => v,
            Err(e) => {
                return error_response(
                    &QueueError::MalformedPayload(format!("Failed to parse the JSON body: {e}")),
                    name,
                    params,
                    Value::Null,
                    &clock,
                );
            }
        }
    };

    // Authenticate: Hawk header or bewit, else anonymous.
    let (host, port) = host_and_port(&headers);
    let resource = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let hawk = HawkRequest {
        method: method.as_str(),
        resource,
        host: &host,
        port,
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok()),
        content_type,
        body: &body,
    };
    let identity = match api.auth.authenticate(&hawk, clock.now()) {
        Ok(i) => i,
        Err(e) => {
            let mut r = error_response(
                &QueueError::Authentication(e.to_string()),
                name,
                params,
                body_json,
                &clock,
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("hawk"));
            return r;
        }
    };
    let call = Call {
        route: route.clone(),
        client_id: identity.client_id,
        scopes: identity.scopes,
        body: body_json,
        query,
        json_content_type,
    };
    let started = std::time::Instant::now();
    let result = handlers::handle(&api, &call).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(reply) => {
            tracing::debug!(method = name, duration_ms = ms, "ok");
            reply_response(reply)
        }
        Err(e) => {
            if !e.is_internal() {
                tracing::debug!(method = name, code = e.code(), "request refused");
            }
            error_response(&e, name, params, call.body, &clock)
        }
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    let mut r = (status, serde_json::to_vec(v).unwrap_or_default()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

fn reply_response(reply: Reply) -> Response {
    match reply {
        Reply::Json(v) => json_response(StatusCode::OK, &v),
        Reply::Redirect(location, v, storage_type) => {
            let mut r = json_response(StatusCode::SEE_OTHER, &v);
            if let Ok(l) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, l);
            }
            if let Ok(s) = HeaderValue::from_str(&storage_type) {
                r.headers_mut()
                    .insert("x-taskcluster-artifact-storage-type", s);
            }
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        Reply::Status(status, v, storage_type) => {
            let mut r = json_response(status, &v);
            if let Some(s) = storage_type.and_then(|s| HeaderValue::from_str(&s).ok()) {
                r.headers_mut()
                    .insert("x-taskcluster-artifact-storage-type", s);
            }
            r
        }
    }
}

/// The TaskCluster error body for `e`. An internal error's text stays out of
/// the body: it is logged at ERROR with a new incident id (field `incident.id`),
/// and the body's message gives only that id, as upstream does.
pub fn error_response(
    e: &QueueError,
    method: &str,
    params: Value,
    payload: Value,
    clock: &crate::time::Clock,
) -> Response {
    let time = fmt_ms(clock.now_ms());
    let status = e.status();
    let text = if e.is_internal() {
        let incident = uuid::Uuid::new_v4();
        tracing::error!(incident.id = %incident, method, error = %e, "request failed");
        format!("Internal Server Error, incidentId {incident}.")
    } else {
        e.to_string()
    };
    let message = format!(
        "{text}\n\n---\n\n* method:     {method}\n* errorCode:  {}\n* statusCode: {}\n* time:       {time}",
        e.code(),
        status.as_u16()
    );
    json_response(
        status,
        &json!({
            "code": e.code(),
            "message": message,
            "requestInfo": {"method": method, "params": params, "payload": payload, "time": time},
        }),
    )
}

/// A response from raw bytes.
pub fn bytes_response(status: StatusCode, content_type: &str, bytes: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    if let Ok(ct) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}
