//! A small Hawk-signing HTTP client for TaskCluster-style APIs: what the
//! hooks service calls the queue's `createTask` with, signed as a TaskCluster
//! client signs (certificate and `authorizedScopes` in the `ext`).

use bbb_auth::Credentials;
use bbb_clock::{Clock, Millis};
use serde_json::Value;
use std::sync::{Arc, Mutex};
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

/// How long a service's own credentials are valid.
const CREDENTIALS_LIFETIME_MS: Millis = 24 * 3600 * 1000;
/// Issue them anew when they expire sooner than this.
const RENEW_BEFORE_MS: Millis = 3600 * 1000;

/// A service's own temporary credentials (the hooks' or the CI service's),
/// issued from the queue's client id and secret for one client id and its
/// scopes, valid a day and issued anew an hour before they expire. Clones
/// share what was issued.
#[derive(Clone)]
pub struct IssuedCredentials {
    issuer: Arc<(String, String)>,
    client_id: &'static str,
    scopes: Vec<String>,
    clock: Clock,
    held: Arc<Mutex<Option<(Credentials, Millis)>>>,
}

impl std::fmt::Debug for IssuedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCredentials")
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl IssuedCredentials {
    /// Credentials of `client_id` with `scopes`, issued by `issuer` (the
    /// queue's client id and secret) on `clock`'s time.
    pub fn new(
        issuer: Arc<(String, String)>,
        client_id: &'static str,
        scopes: &[&str],
        clock: Clock,
    ) -> IssuedCredentials {
        IssuedCredentials {
            issuer,
            client_id,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            clock,
            held: Arc::default(),
        }
    }

    /// The credentials, issued anew when they are about to expire.
    pub fn get(&self) -> Result<Credentials, String> {
        let now = self.clock.now_ms();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((c, expiry)) = held.as_ref()
            && *expiry - now > RENEW_BEFORE_MS
        {
            return Ok(c.clone());
        }
        let start = now - bbb_auth::CERTIFICATE_SKEW.num_milliseconds();
        let expiry = now + CREDENTIALS_LIFETIME_MS;
        let creds = bbb_auth::create_temporary_credentials(
            &self.issuer.0,
            &self.issuer.1,
            Some(self.client_id),
            &self.scopes,
            bbb_clock::from_ms(start),
            bbb_clock::from_ms(expiry),
        )
        .map_err(|e| format!("issuing the credentials of {}: {e}", self.client_id))?;
        *held = Some((creds.clone(), expiry));
        Ok(creds)
    }
}
