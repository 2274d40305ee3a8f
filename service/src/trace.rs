//! A span per request, so every event a request causes carries who asked for
//! what. The span `request` has the dotted fields the logs use elsewhere:
//!
//! | field | value |
//! |---|---|
//! | `request.method` | the HTTP method |
//! | `request.path` | the path (never the query, which may hold a bewit) |
//! | `request.route` | the API method's name (`createTask`), once routed |
//! | `client.id` | the caller's client id, once authenticated (`anonymous` without credentials) |
//! | `task.id`, `run.id` | the `taskId` and `runId` URL parameters, where the route has them |
//! | `status` | the response's HTTP status |
//! | `duration_ms` | the time to the response, in milliseconds |
//!
//! The span is at INFO; when it closes, one DEBUG event `request` reports it.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use tracing::field::Empty;

/// The middleware that opens the span of each request and records its outcome.
pub async fn span(request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "request",
        request.method = %request.method(),
        request.path = %request.uri().path(),
        request.route = Empty,
        client.id = Empty,
        task.id = Empty,
        run.id = Empty,
        status = Empty,
        duration_ms = Empty,
    );
    let started = std::time::Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    span.record("status", response.status().as_u16());
    span.record("duration_ms", ms);
    span.in_scope(|| tracing::debug!("request"));
    response
}

/// Record the route and its `taskId` and `runId` parameters on the current
/// request's span.
pub fn record_route(name: &str, params: &crate::routes::Params) {
    let span = tracing::Span::current();
    span.record("request.route", name);
    for (param, field) in [("taskId", "task.id"), ("runId", "run.id")] {
        if let Some((_, v)) = params.iter().find(|(n, _)| n == param) {
            span.record(field, v.as_str());
        }
    }
}

/// Record the caller on the current request's span.
pub fn record_client(client_id: Option<&str>) {
    tracing::Span::current().record("client.id", client_id.unwrap_or("anonymous"));
}
