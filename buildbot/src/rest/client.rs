//! The REST adapter's HTTP side: reads of the data API, JSON-RPC control
//! calls, and the rows they return.

use std::time::Instant;

use serde_json::{Value, json};

use super::{RestAuth, RestMaster};
use bbb_secret::mask_url;

use crate::error::{LegacyError, Result};
use crate::types::{BuildId, BuildInfo, BuildRequestId, BuildResult};

/// Ids per `field=a&field=b` (SQL `IN`) query.
const IN_CHUNK: usize = 50;

#[derive(Clone, Debug)]
pub(super) struct BuilderRow {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) active: bool,
}

/// A JSON-RPC error answer.
pub(super) struct RpcError {
    pub(super) code: i64,
    pub(super) message: String,
}

/// A build as the REST API shows it.
#[derive(Clone, Debug)]
pub(super) struct RestBuild {
    pub(super) id: u64,
    pub(super) number: u64,
    pub(super) builder_id: u64,
    pub(super) request_id: Option<u64>,
    pub(super) master_id: Option<u64>,
    pub(super) started_at: i64,
    pub(super) complete_at: Option<i64>,
    pub(super) complete: bool,
    pub(super) results: Option<i64>,
    pub(super) properties: serde_json::Map<String, Value>,
}

impl RestBuild {
    pub(super) fn from_json(value: &Value) -> Option<RestBuild> {
        Some(RestBuild {
            id: value.get("buildid")?.as_u64()?,
            number: value.get("number").and_then(Value::as_u64).unwrap_or(0),
            builder_id: value.get("builderid").and_then(Value::as_u64).unwrap_or(0),
            request_id: value.get("buildrequestid").and_then(Value::as_u64),
            master_id: value.get("masterid").and_then(Value::as_u64),
            started_at: value.get("started_at").and_then(Value::as_i64).unwrap_or(0),
            complete_at: value.get("complete_at").and_then(Value::as_i64),
            complete: value
                .get("complete")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            results: value.get("results").and_then(Value::as_i64),
            properties: value
                .get("properties")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        })
    }

    pub(super) fn info(&self) -> BuildInfo {
        BuildInfo {
            build_id: BuildId(self.id),
            number: self.number,
            start_time: self.started_at,
            finish_time: self.complete_at,
        }
    }

    /// Whether this build ran its request for good: running, or finished
    /// with anything but RETRY.
    pub(super) fn counts_as_run(&self) -> bool {
        self.results != Some(BuildResult::Retry.code())
    }

    pub(super) fn property_str(&self, name: &str) -> Option<String> {
        self.properties
            .get(name)
            .and_then(|p| p.get(0))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }
}

/// `{"<plural>": [...]}` → the list.
pub(super) fn rows(body: &Value, plural: &str) -> Vec<Value> {
    body.get(plural)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

pub(super) fn api_base(url: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    if trimmed.ends_with("/api/v2") {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/api/v2")
    }
}

pub(super) fn results_or(code: Option<i64>, default: BuildResult) -> BuildResult {
    code.and_then(BuildResult::from_code).unwrap_or(default)
}

impl RestMaster {
    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.api.expose())
    }

    pub(super) fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let builder = self.inner.http.request(method, url);
        match &self.inner.config.auth {
            RestAuth::None => builder,
            RestAuth::Basic { user, password } => builder.basic_auth(user, Some(password.expose())),
            RestAuth::Header { name, value } => {
                builder.header(name.as_str(), value.expose().as_str())
            }
        }
    }

    pub(super) fn http_error(url: &str, reason: impl Into<String>) -> LegacyError {
        LegacyError::Http {
            url: mask_url(url),
            reason: reason.into(),
        }
    }

    /// `GET {api}{path}?{query}`; `None` on 404.
    pub(super) async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Option<Value>> {
        let url = self.url(path);
        let response = self
            .request(reqwest::Method::GET, &url)
            .query(query)
            .send()
            .await
            .map_err(|e| Self::http_error(&url, e.to_string()))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(Self::http_error(
                &url,
                format!(
                    "status {status}: {}",
                    body.chars().take(300).collect::<String>()
                ),
            ));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| Self::http_error(&url, e.to_string()))?;
        Ok(Some(body))
    }

    /// `GET {api}{path}` as text (a `raw` log endpoint); `None` on 404.
    /// At most [`MAX_LOG_BYTES`](crate::buildlog::MAX_LOG_BYTES) are read.
    pub(super) async fn get_text(&self, path: &str) -> Result<Option<String>> {
        let url = self.url(path);
        let mut response = self
            .request(reqwest::Method::GET, &url)
            .send()
            .await
            .map_err(|e| Self::http_error(&url, e.to_string()))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(Self::http_error(&url, format!("status {status}")));
        }
        let limit = crate::buildlog::MAX_LOG_BYTES;
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| Self::http_error(&url, e.to_string()))?
        {
            body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())]);
            if body.len() == limit {
                break;
            }
        }
        Ok(Some(String::from_utf8_lossy(&body).into_owned()))
    }

    /// A JSON-RPC control call: `POST {api}{path}` with
    /// `{"jsonrpc": "2.0", "method": ..., "params": ...}`.
    pub(super) async fn rpc(
        &self,
        path: &str,
        method: &str,
        params: Value,
    ) -> Result<std::result::Result<Value, RpcError>> {
        let url = self.url(path);
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let response = self
            .request(reqwest::Method::POST, &url)
            .json(&body)
            .send()
            .await
            .map_err(|e| Self::http_error(&url, e.to_string()))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| Self::http_error(&url, e.to_string()))?;
        let answer: Value = serde_json::from_str(&text).map_err(|_| {
            Self::http_error(
                &url,
                format!(
                    "status {status}, not a JSON-RPC answer: {}",
                    text.chars().take(300).collect::<String>()
                ),
            )
        })?;
        if let Some(error) = answer.get("error").filter(|e| !e.is_null()) {
            return Ok(Err(RpcError {
                code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: error
                    .get("message")
                    .map(|m| m.as_str().map(str::to_owned).unwrap_or(m.to_string()))
                    .unwrap_or_else(|| error.to_string()),
            }));
        }
        if !status.is_success() {
            return Err(Self::http_error(&url, format!("status {status}: {text}")));
        }
        Ok(Ok(answer.get("result").cloned().unwrap_or(Value::Null)))
    }

    pub(super) async fn rpc_ok(&self, path: &str, method: &str, params: Value) -> Result<Value> {
        match self.rpc(path, method, params).await? {
            Ok(result) => Ok(result),
            Err(error) => Err(Self::http_error(
                &self.url(path),
                format!(
                    "JSON-RPC {method} failed ({}): {}",
                    error.code, error.message
                ),
            )),
        }
    }

    pub(super) async fn fetch_builders(&self) -> Result<Vec<BuilderRow>> {
        let body = self
            .get(
                "/builders",
                &[
                    ("field", "builderid".to_owned()),
                    ("field", "name".to_owned()),
                    ("field", "masterids".to_owned()),
                ],
            )
            .await?
            .ok_or_else(|| Self::http_error(&self.url("/builders"), "status 404"))?;
        let list: Vec<BuilderRow> = rows(&body, "builders")
            .iter()
            .filter_map(|row| {
                Some(BuilderRow {
                    id: row.get("builderid")?.as_u64()?,
                    name: row.get("name")?.as_str()?.to_owned(),
                    // A builder no running master serves is a leftover of an
                    // older configuration.
                    active: row
                        .get("masterids")
                        .and_then(Value::as_array)
                        .is_some_and(|ids| !ids.is_empty()),
                })
            })
            .collect();
        tracing::debug!(builders = list.len(), "fetched the master's builder list");
        Ok(list)
    }

    /// The cached builder table, fetched again when older than the refresh
    /// period (or when `force`d); a stale table is kept when fetching fails.
    pub(super) async fn builder_table(&self, force: bool) -> Result<Vec<BuilderRow>> {
        let mut cache = self.inner.builders.lock().await;
        if !force
            && let Some((fetched, list)) = cache.as_ref()
            && fetched.elapsed() < self.inner.config.builders_refresh
        {
            return Ok(list.clone());
        }
        match self.fetch_builders().await {
            Ok(list) => {
                *cache = Some((Instant::now(), list.clone()));
                Ok(list)
            }
            Err(error) => match cache.as_ref() {
                Some((_, list)) => {
                    tracing::warn!(%error, "builder list refresh failed, using the cached list");
                    Ok(list.clone())
                }
                None => Err(error),
            },
        }
    }

    pub(super) async fn builder_name(&self, id: u64) -> Result<String> {
        if let Some(row) = self.builder_table(false).await?.iter().find(|b| b.id == id) {
            return Ok(row.name.clone());
        }
        // A builder added since the list was fetched.
        Ok(self
            .builder_table(true)
            .await?
            .into_iter()
            .find(|b| b.id == id)
            .map(|b| b.name)
            .unwrap_or_else(|| format!("builder-{id}")))
    }

    pub(super) async fn master_name(&self, id: Option<u64>) -> Option<String> {
        let id = id?;
        if let Some(name) = self.inner.masters.lock().await.get(&id) {
            return Some(name.clone());
        }
        match self.get(&format!("/masters/{id}"), &[]).await {
            Ok(Some(body)) => {
                let name = rows(&body, "masters")
                    .first()
                    .and_then(|m| m.get("name"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)?;
                self.inner.masters.lock().await.insert(id, name.clone());
                Some(name)
            }
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(%error, master.id = id, "could not read the master's name");
                None
            }
        }
    }

    /// Builds matching the `buildrequestid` or `buildid` values (SQL `IN`),
    /// with the `taskId`, `log_url` and `buildnumber` properties (the last
    /// one tells that the master has written the build's properties).
    pub(super) async fn builds_where(&self, field: &str, ids: &[u64]) -> Result<Vec<RestBuild>> {
        let mut builds = Vec::new();
        for chunk in ids.chunks(IN_CHUNK) {
            let mut query: Vec<(&str, String)> =
                chunk.iter().map(|id| (field, id.to_string())).collect();
            query.extend([
                ("order", "buildid".to_owned()),
                ("property", "taskId".to_owned()),
                ("property", "log_url".to_owned()),
                ("property", "buildnumber".to_owned()),
            ]);
            if let Some(body) = self.get("/builds", &query).await? {
                builds.extend(
                    rows(&body, "builds")
                        .iter()
                        .filter_map(RestBuild::from_json),
                );
            }
        }
        Ok(builds)
    }

    /// Every property of one build, as `name: [value, source]`. The build
    /// lists fetch only the few properties polling needs; a finished build's
    /// event carries them all (the bridge attaches them as
    /// `public/properties.json`).
    pub(super) async fn all_build_properties(
        &self,
        build: u64,
    ) -> Result<Option<serde_json::Map<String, Value>>> {
        Ok(self
            .get(&format!("/builds/{build}/properties"), &[])
            .await?
            .map(|body| {
                rows(&body, "properties")
                    .into_iter()
                    .next()
                    .and_then(|props| props.as_object().cloned())
                    .unwrap_or_default()
            }))
    }

    pub(super) async fn request_row(&self, id: BuildRequestId) -> Result<Option<Value>> {
        Ok(self
            .get(&format!("/buildrequests/{}", id.0), &[])
            .await?
            .and_then(|body| rows(&body, "buildrequests").into_iter().next()))
    }

    pub(super) async fn stop(&self, build: u64) -> Result<()> {
        self.rpc_ok(
            &format!("/builds/{build}"),
            "stop",
            json!({"reason": "stopped by bbb"}),
        )
        .await?;
        tracing::info!(build.id = build, "asked the master to stop build");
        Ok(())
    }
}
