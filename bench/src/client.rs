//! A small Hawk-signing HTTP client for the queue API, so benchmarks measure the
//! server rather than a client library's retries and conversions.

use anyhow::{Context, bail};
use serde_json::Value;

/// Credentials: id, token, optional certificate.
#[derive(Clone, Debug)]
pub struct Creds {
    /// Client id.
    pub client_id: String,
    /// Access token.
    pub access_token: String,
    /// Certificate JSON for temporary credentials.
    pub certificate: Option<String>,
}

impl Creds {
    /// The task credentials in a claim response.
    pub fn from_claim(claim: &Value) -> Creds {
        let c = &claim["credentials"];
        Creds {
            client_id: c["clientId"].as_str().unwrap_or_default().into(),
            access_token: c["accessToken"].as_str().unwrap_or_default().into(),
            certificate: c["certificate"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(String::from),
        }
    }
}

/// A queue API client for one root URL.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: url::Url,
}

impl Api {
    /// A client for `root_url`.
    pub fn new(root_url: &str) -> anyhow::Result<Api> {
        Ok(Api {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()?,
            base: url::Url::parse(&format!("{}/api/queue/v1/", root_url.trim_end_matches('/')))?,
        })
    }

    /// Call `method path` with an optional JSON body; fail on non-2xx.
    pub async fn call(
        &self,
        creds: &Creds,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = self.base.join(path)?;
        let resource = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let bytes = body.map(serde_json::to_vec).transpose()?;
        let header = bbb_auth::hawk_header(
            &creds.client_id,
            &creds.access_token,
            creds.certificate.as_deref(),
            None,
            method,
            &resource,
            url.host_str().unwrap_or("localhost"),
            url.port_or_known_default().unwrap_or(80),
            bytes.as_deref().map(|b| (b, "application/json")),
            chrono::Utc::now(),
        );
        let mut req = self
            .http
            .request(method.parse()?, url.clone())
            .header("authorization", header);
        if let Some(b) = bytes {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{method} {path}: {status}: {}",
                v["message"].as_str().unwrap_or("")
            );
        }
        Ok(v)
    }
}
