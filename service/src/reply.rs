//! What a handler answers, and the responses built from it.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// A successful reply: a status (200 unless said otherwise), a JSON body and
/// extra headers.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: Value,
    /// Headers to add to the response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Reply {
    /// 200 with `body`.
    pub fn json(body: Value) -> Reply {
        Reply::status(StatusCode::OK, body)
    }

    /// `status` with `body` (e.g. 424 for an error artifact).
    pub fn status(status: StatusCode, body: Value) -> Reply {
        Reply {
            status,
            body,
            headers: Vec::new(),
        }
    }

    /// 204 without a body, as upstream answers a method with no output.
    pub fn empty() -> Reply {
        Reply::status(StatusCode::NO_CONTENT, Value::Null)
    }

    /// 303 to `location` with `body`, not to be cached (artifact redirects).
    pub fn redirect(location: &str, body: Value) -> Reply {
        Reply::status(StatusCode::SEE_OTHER, body)
            .header(header::LOCATION, location)
            .header(header::CACHE_CONTROL, "no-cache")
    }

    /// The same reply with the header `name: value` (left out when `value` is
    /// not a valid header value).
    pub fn header(mut self, name: impl TryInto<HeaderName>, value: &str) -> Reply {
        if let (Ok(name), Ok(value)) = (name.try_into(), HeaderValue::from_str(value)) {
            self.headers.push((name, value));
        }
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut r = if self.status == StatusCode::NO_CONTENT {
            self.status.into_response()
        } else {
            json_response(self.status, &self.body)
        };
        for (name, value) in self.headers {
            r.headers_mut().insert(name, value);
        }
        r
    }
}

/// `v` as a JSON response with `status`.
pub fn json_response(status: StatusCode, v: &Value) -> Response {
    let mut r = (status, serde_json::to_vec(v).unwrap_or_default()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// A response from raw bytes.
pub fn bytes_response(status: StatusCode, content_type: &str, bytes: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    if let Ok(ct) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_empty_reply_is_204_without_a_body() {
        let r = Reply::empty().into_response();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert!(r.headers().get(header::CONTENT_TYPE).is_none());
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        assert!(body.is_empty());

        let r = Reply::json(serde_json::json!({"a": 1})).into_response();
        assert_eq!(r.status(), StatusCode::OK);
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], br#"{"a":1}"#);
    }
}
