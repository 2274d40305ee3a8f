//! CORS: every response may be read by a page from any origin, as upstream's
//! services allow, and a browser's preflight (`OPTIONS` on an API path) is
//! answered with the methods and headers a TaskCluster client sends.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

/// `Access-Control-Allow-Origin`.
pub const ALLOW_ORIGIN: &str = "*";
/// `Access-Control-Allow-Methods`.
pub const ALLOW_METHODS: &str = "OPTIONS,GET,HEAD,POST,PUT,DELETE,TRACE,CONNECT";
/// `Access-Control-Allow-Headers`: what the clients send (Hawk's
/// `Authorization` among them).
pub const ALLOW_HEADERS: &str =
    "X-Requested-With,Content-Type,Authorization,Accept,Origin,Cache-Control";
/// `Access-Control-Max-Age`, in seconds: how long a browser keeps a preflight's answer.
pub const MAX_AGE: &str = "900";

/// Add the CORS headers to `headers`, keeping any a handler set itself.
pub fn add_headers(headers: &mut HeaderMap) {
    for (name, value) in [
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, ALLOW_ORIGIN),
        (header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS),
        (header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS),
        (header::ACCESS_CONTROL_MAX_AGE, MAX_AGE),
    ] {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
}

/// The middleware that adds the CORS headers to every response.
pub async fn headers(mut response: Response) -> Response {
    add_headers(response.headers_mut());
    response
}

/// The answer to a preflight: 204 with the CORS headers (added by [`headers`]).
pub fn preflight() -> Response {
    let mut r = Response::new(axum::body::Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}
