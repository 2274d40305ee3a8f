//! A small Hawk-signing HTTP client for TaskCluster-style APIs: what the
//! hooks service calls the queue's `createTask` with, signed as a TaskCluster
//! client signs (certificate and `authorizedScopes` in the `ext`).

use bbb_auth::Credentials;
use bbb_clock::Clock;
use serde_json::Value;
use std::time::Duration;

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What a call answered: its status and JSON body (`null` when the body is
/// empty or not JSON).
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Value,
}

impl Answer {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A client for one root URL, signing with the time of `clock` (the time
/// the server checks signatures against).
#[derive(Clone, Debug)]
pub struct HawkClient {
    http: reqwest::Client,
    root_url: String,
    clock: Clock,
}

impl HawkClient {
    /// A client for the services under `root_url`.
    pub fn new(root_url: &str, clock: Clock) -> HawkClient {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .unwrap_or_default();
        HawkClient {
            http,
            root_url: root_url.trim_end_matches('/').to_owned(),
            clock,
        }
    }

    /// The URL of `path` (already percent-encoded) in `service`'s API.
    pub fn url(&self, service: &str, path: &str) -> String {
        format!(
            "{}/api/{service}/v1/{}",
            self.root_url,
            path.trim_start_matches('/')
        )
    }

    /// `method url` with an optional JSON body, signed with `creds` (none:
    /// anonymous) restricted to `authorized_scopes` when given. `Err` is a
    /// call that got no answer (connection refused, timeout), as text.
    pub async fn call(
        &self,
        creds: Option<&Credentials>,
        authorized_scopes: Option<&[String]>,
        method: &str,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("bad URL {url}: {e}"))?;
        let bytes = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| e.to_string())?;
        let method: reqwest::Method = method.parse().map_err(|_| format!("bad method {method}"))?;
        let mut req = self.http.request(method.clone(), parsed.clone());
        if let Some(c) = creds {
            let resource = match parsed.query() {
                Some(q) => format!("{}?{q}", parsed.path()),
                None => parsed.path().to_owned(),
            };
            let header = bbb_auth::hawk_header(
                &c.client_id,
                &c.access_token,
                c.certificate.as_deref(),
                authorized_scopes,
                method.as_str(),
                &resource,
                parsed.host_str().unwrap_or("localhost"),
                parsed.port_or_known_default().unwrap_or(80),
                bytes.as_deref().map(|b| (b, "application/json")),
                self.clock.now(),
            );
            req = req.header("authorization", header);
        }
        if let Some(b) = bytes {
            req = req.header("content-type", "application/json").body(b);
        }
        let res = req.send().await.map_err(|e| e.to_string())?;
        let status = res.status().as_u16();
        let text = res.bytes().await.map_err(|e| e.to_string())?;
        let body = serde_json::from_slice(&text).unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }
}
