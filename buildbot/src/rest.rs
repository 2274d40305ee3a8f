//! The Buildbot 4 adapter: a master's REST (data) API, plus the events of
//! bbb's reporter plugin.
//!
//! See the crate README ("The REST adapter") for what the master needs: a
//! force scheduler with a [`JsonPropertiesParameter`-style] properties
//! parameter, and the reporter plugin `buildbot/reporter/bbb_reporter.py`
//! in `c['services']`.
//!
//! [`JsonPropertiesParameter`-style]: RestMasterConfig::properties_parameter

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

use bbb_secret::{Secret, SecretUrl, mask_url};

use crate::error::{LegacyError, Result};
use crate::events::{self, EventStream};
use crate::scheduler_db::{PollOptions, PulseOptions, REASON_PREFIX, normalize_branch, now_secs};
use crate::types::{
    BuildId, BuildInfo, BuildRequestId, BuildRequestSpec, BuildResult, CancelOutcome, EventSource,
    FoundRequest, LegacyEvent, RequestState, StopOutcome, StopTarget,
};
use crate::{LegacyEventStream, LegacyMaster};

/// The force scheduler bbb submits through unless configured otherwise (the
/// one `buildbot/test-master/master.cfg` declares).
pub const DEFAULT_SCHEDULER: &str = "bbb";
/// The force-scheduler parameter that carries every build property as one
/// JSON object (`bbb_reporter.JsonPropertiesParameter`).
pub const DEFAULT_PROPERTIES_PARAMETER: &str = "bbb_properties";
/// The build property holding the spec's `submitted_at` (the run's scheduled
/// time), which [`LegacyMaster::find_requests_for_task`] reports: Buildbot
/// sets a request's own `submitted_at` to the time of the `force` call.
pub const SUBMITTED_AT_PROPERTY: &str = "bbb_submitted_at";
/// The topic patterns the adapter binds its queue with, on the reporter's
/// exchange.
pub const REPORTER_BINDINGS: [&str; 4] = [
    "build.*.*.started",
    "build.*.*.finished",
    "buildrequest.*.*.complete",
    "buildrequest.*.*.requeued",
];

/// Rows fetched per REST call while polling.
const BATCH: u64 = 1000;
/// How far below its build-id watermark each poll looks again (ids are not
/// commit-ordered).
const ID_MARGIN: u64 = 64;
/// How far below its completion-time watermark each poll looks again.
const TIME_MARGIN: i64 = 5;
/// Ids per `field=a&field=b` (SQL `IN`) query.
const IN_CHUNK: usize = 50;

/// How to authenticate to the REST API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RestAuth {
    /// No credentials (a master whose `www` has no `auth`).
    #[default]
    None,
    /// HTTP basic authentication (Buildbot's `UserPasswordAuth` /
    /// `HTPasswdAuth`).
    Basic {
        /// User name.
        user: String,
        /// Password (masked in `Debug`).
        password: Secret<String>,
    },
    /// One header sent with every call, e.g. `Authorization: Bearer …` or a
    /// cookie, for masters behind an authenticating proxy.
    Header {
        /// Header name.
        name: String,
        /// Header value (masked in `Debug`).
        value: Secret<String>,
    },
}

/// Configuration of a [`RestMaster`].
#[derive(Clone, Debug)]
pub struct RestMasterConfig {
    /// The REST API's base URL, `http://host:8010/api/v2`. The master's own
    /// URL (`http://host:8010/`, its `buildbotURL`) is accepted too: `api/v2`
    /// is appended to a URL whose path does not end with it. Only `http`:
    /// the crate's HTTP client is built without TLS.
    pub api_url: SecretUrl,
    /// The force scheduler to submit through ([`DEFAULT_SCHEDULER`]). It
    /// must list every builder bbb submits to.
    pub scheduler: String,
    /// The scheduler's parameter that takes every property as one JSON
    /// object ([`DEFAULT_PROPERTIES_PARAMETER`]).
    pub properties_parameter: String,
    /// Credentials for the REST API.
    pub auth: RestAuth,
    /// How long the builder list is used before fetching it again (300 s;
    /// Mozilla's bridge refreshed its list as often).
    pub builders_refresh: Duration,
    /// Events of bbb's reporter plugin on RabbitMQ: the bus, the reporter's
    /// exchange, the durable queue to consume (shared by every bridge
    /// instance) and the prefetch.
    pub pulse: Option<PulseOptions>,
    /// REST polling, which reconciles what the reporter's messages missed
    /// (and is the only source without them): its interval and how far back
    /// the first poll looks.
    pub poll: Option<PollOptions>,
    /// Timeout of each HTTP call.
    pub http_timeout: Duration,
    /// How long [`LegacyMaster::cancel_request`] waits for the master to
    /// confirm a cancellation before answering [`CancelOutcome::Requested`].
    pub cancel_confirm_timeout: Duration,
}

impl RestMasterConfig {
    /// A configuration with the defaults: scheduler `bbb`, properties
    /// parameter `bbb_properties`, no credentials, builder list refreshed
    /// every 300 s, no reporter messages, REST polling every 5 s looking back
    /// an hour, 30 s HTTP timeout, 10 s to confirm a cancellation.
    pub fn new(api_url: impl Into<SecretUrl>) -> Self {
        Self {
            api_url: api_url.into(),
            scheduler: DEFAULT_SCHEDULER.to_owned(),
            properties_parameter: DEFAULT_PROPERTIES_PARAMETER.to_owned(),
            auth: RestAuth::None,
            builders_refresh: Duration::from_secs(300),
            pulse: None,
            poll: Some(PollOptions::default()),
            http_timeout: Duration::from_secs(30),
            cancel_confirm_timeout: Duration::from_secs(10),
        }
    }
}

/// A [`LegacyMaster`] talking to a Buildbot 4 master through its REST API
/// (submit, cancel, stop, state, builder list) and reading the events of
/// bbb's reporter plugin from RabbitMQ, reconciled by REST polling. Cheap to
/// clone.
#[derive(Clone, Debug)]
pub struct RestMaster {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: RestMasterConfig,
    api: String,
    http: reqwest::Client,
    builders: Mutex<Option<(Instant, Vec<BuilderRow>)>>,
    masters: Mutex<HashMap<u64, String>>,
}

#[derive(Clone, Debug)]
struct BuilderRow {
    id: u64,
    name: String,
    active: bool,
}

/// A JSON-RPC error answer.
struct RpcError {
    code: i64,
    message: String,
}

/// A build as the REST API shows it.
#[derive(Clone, Debug)]
struct RestBuild {
    id: u64,
    number: u64,
    builder_id: u64,
    request_id: Option<u64>,
    master_id: Option<u64>,
    started_at: i64,
    complete_at: Option<i64>,
    complete: bool,
    results: Option<i64>,
    properties: serde_json::Map<String, Value>,
}

impl RestBuild {
    fn from_json(value: &Value) -> Option<RestBuild> {
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

    fn info(&self) -> BuildInfo {
        BuildInfo {
            build_id: BuildId(self.id),
            number: self.number,
            start_time: self.started_at,
            finish_time: self.complete_at,
        }
    }

    /// Whether this build ran its request for good: running, or finished
    /// with anything but RETRY.
    fn counts_as_run(&self) -> bool {
        self.results != Some(BuildResult::Retry.code())
    }

    fn property_str(&self, name: &str) -> Option<String> {
        self.properties
            .get(name)
            .and_then(|p| p.get(0))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }
}

/// `{"<plural>": [...]}` → the list.
fn rows(body: &Value, plural: &str) -> Vec<Value> {
    body.get(plural)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn api_base(url: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    if trimmed.ends_with("/api/v2") {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/api/v2")
    }
}

fn results_or(code: Option<i64>, default: BuildResult) -> BuildResult {
    code.and_then(BuildResult::from_code).unwrap_or(default)
}

impl RestMaster {
    /// An adapter for the master described by `config`. Nothing is fetched
    /// until the first call.
    pub fn new(config: RestMasterConfig) -> Result<RestMaster> {
        let http = reqwest::Client::builder()
            .timeout(config.http_timeout)
            .build()
            .map_err(|e| LegacyError::Http {
                url: config.api_url.masked(),
                reason: e.to_string(),
            })?;
        let api = api_base(config.api_url.expose());
        let parsed = url::Url::parse(&api).map_err(|e| LegacyError::InvalidUrl {
            url: mask_url(&api),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(LegacyError::InvalidUrl {
                url: mask_url(&api),
                reason: "expected an http:// or https:// URL".to_owned(),
            });
        }
        tracing::info!(api = %mask_url(&api), scheduler = %config.scheduler, "Buildbot REST adapter configured");
        Ok(RestMaster {
            inner: Arc::new(Inner {
                config,
                api,
                http,
                builders: Mutex::new(None),
                masters: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The REST API base URL in use (ending in `/api/v2`).
    pub fn api_url(&self) -> &str {
        &self.inner.api
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.api)
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let builder = self.inner.http.request(method, url);
        match &self.inner.config.auth {
            RestAuth::None => builder,
            RestAuth::Basic { user, password } => builder.basic_auth(user, Some(password.expose())),
            RestAuth::Header { name, value } => {
                builder.header(name.as_str(), value.expose().as_str())
            }
        }
    }

    fn http_error(url: &str, reason: impl Into<String>) -> LegacyError {
        LegacyError::Http {
            url: mask_url(url),
            reason: reason.into(),
        }
    }

    /// `GET {api}{path}?{query}`; `None` on 404.
    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Option<Value>> {
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

    /// A JSON-RPC control call: `POST {api}{path}` with
    /// `{"jsonrpc": "2.0", "method": ..., "params": ...}`.
    async fn rpc(
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

    async fn rpc_ok(&self, path: &str, method: &str, params: Value) -> Result<Value> {
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

    async fn fetch_builders(&self) -> Result<Vec<BuilderRow>> {
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
    async fn builder_table(&self, force: bool) -> Result<Vec<BuilderRow>> {
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

    async fn builder_name(&self, id: u64) -> Result<String> {
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

    async fn master_name(&self, id: Option<u64>) -> Option<String> {
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
    async fn builds_where(&self, field: &str, ids: &[u64]) -> Result<Vec<RestBuild>> {
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
    async fn all_build_properties(
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

    async fn request_row(&self, id: BuildRequestId) -> Result<Option<Value>> {
        Ok(self
            .get(&format!("/buildrequests/{}", id.0), &[])
            .await?
            .and_then(|body| rows(&body, "buildrequests").into_iter().next()))
    }

    async fn stop(&self, build: u64) -> Result<()> {
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

#[async_trait]
impl LegacyMaster for RestMaster {
    async fn builders(&self) -> Result<Option<Vec<String>>> {
        Ok(Some(
            self.builder_table(false)
                .await?
                .into_iter()
                .filter(|b| b.active)
                .map(|b| b.name)
                .collect(),
        ))
    }

    async fn submit(&self, spec: &BuildRequestSpec) -> Result<BuildRequestId> {
        if !self.accepts_builder(&spec.buildername).await? {
            return Err(LegacyError::UnknownBuilder(spec.buildername.clone()));
        }
        let mut properties: serde_json::Map<String, Value> = spec
            .properties
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        properties.insert("taskId".to_owned(), Value::String(spec.task_id.clone()));
        properties.insert(SUBMITTED_AT_PROPERTY.to_owned(), json!(spec.submitted_at));
        let source = &spec.sourcestamp;
        let mut params = json!({
            "builderNames": [spec.buildername],
            "reason": format!("{REASON_PREFIX}{}", spec.task_id),
            "priority": spec.priority,
            "branch": source.branch.as_deref().map(normalize_branch).unwrap_or_default(),
            "revision": source.revision.clone().unwrap_or_default(),
            "repository": source.repository,
            "project": source.project,
        });
        params[&self.inner.config.properties_parameter] = Value::Object(properties);
        let path = format!("/forceschedulers/{}", self.inner.config.scheduler);
        let result = match self.rpc(&path, "force", params).await? {
            Ok(result) => result,
            Err(error)
                if error
                    .message
                    .contains("builderNames not specified or not supported") =>
            {
                // The master has the builder but the scheduler does not list it.
                return Err(LegacyError::UnknownBuilder(spec.buildername.clone()));
            }
            Err(error) if error.code == -32602 => {
                return Err(LegacyError::Invalid(error.message));
            }
            Err(error) => {
                return Err(Self::http_error(
                    &self.url(&path),
                    format!("JSON-RPC force failed ({}): {}", error.code, error.message),
                ));
            }
        };
        // [bsid, {"<builderid>": brid}]
        let buildset_id = result.get(0).and_then(Value::as_u64);
        let brid = result
            .get(1)
            .and_then(Value::as_object)
            .and_then(|map| map.values().next())
            .and_then(Value::as_u64)
            .map(BuildRequestId)
            .ok_or_else(|| {
                Self::http_error(
                    &self.url(&path),
                    format!("unexpected force result {result}"),
                )
            })?;
        tracing::info!(
            task.id = %spec.task_id,
            run.id = spec.run_id,
            build_request.id = brid.0,
            buildset.id = buildset_id,
            builder = %spec.buildername,
            "submitted build request"
        );
        Ok(brid)
    }

    async fn find_requests_for_task(&self, task_id: &str) -> Result<Vec<FoundRequest>> {
        let reason = format!("{REASON_PREFIX}{task_id}");
        let Some(body) = self
            .get(
                "/buildsets",
                &[
                    ("reason", reason),
                    ("field", "bsid".to_owned()),
                    ("field", "reason".to_owned()),
                    ("order", "bsid".to_owned()),
                ],
            )
            .await?
        else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        for buildset in rows(&body, "buildsets") {
            let Some(bsid) = buildset.get("bsid").and_then(Value::as_u64) else {
                continue;
            };
            let Some(requests) = self
                .get(
                    "/buildrequests",
                    &[
                        ("buildsetid", bsid.to_string()),
                        ("order", "buildrequestid".to_owned()),
                        ("property", "taskId".to_owned()),
                        ("property", SUBMITTED_AT_PROPERTY.to_owned()),
                    ],
                )
                .await?
            else {
                continue;
            };
            for request in rows(&requests, "buildrequests") {
                let property = |name: &str| {
                    request
                        .get("properties")
                        .and_then(|p| p.get(name))
                        .and_then(|p| p.get(0))
                        .cloned()
                };
                // The reason is free text: trust the taskId property.
                if property("taskId").as_ref().and_then(Value::as_str) != Some(task_id) {
                    continue;
                }
                let Some(id) = request.get("buildrequestid").and_then(Value::as_u64) else {
                    continue;
                };
                let builder_id = request
                    .get("builderid")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let submitted_at = property(SUBMITTED_AT_PROPERTY)
                    .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
                    .or_else(|| request.get("submitted_at").and_then(Value::as_i64))
                    .unwrap_or(0);
                found.push(FoundRequest {
                    build_request_id: BuildRequestId(id),
                    buildset_id: bsid,
                    buildername: self.builder_name(builder_id).await?,
                    submitted_at,
                    complete: request
                        .get("complete")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                });
            }
        }
        found.sort_by_key(|f| f.build_request_id);
        Ok(found)
    }

    async fn request_state(&self, id: BuildRequestId) -> Result<RequestState> {
        let Some(row) = self.request_row(id).await? else {
            return Ok(RequestState::Unknown);
        };
        let complete = row
            .get("complete")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let claimed = row.get("claimed").and_then(Value::as_bool).unwrap_or(false);
        let complete_at = row.get("complete_at").and_then(Value::as_i64);
        let results = row.get("results").and_then(Value::as_i64);
        let builds = self.builds_where("buildrequestid", &[id.0]).await?;
        if complete {
            // Buildbot claims a request to cancel it: a request that
            // completed without a build that ran it (none, or only RETRY
            // ones) was cancelled before it (re)started.
            if !builds.iter().any(RestBuild::counts_as_run) {
                return Ok(RequestState::Cancelled {
                    results: results_or(results, BuildResult::Cancelled),
                    complete_at,
                });
            }
            return Ok(RequestState::Complete {
                results: results_or(results, BuildResult::Exception),
                complete_at,
                builds: builds.iter().map(RestBuild::info).collect(),
            });
        }
        let builds: Vec<BuildInfo> = builds.iter().map(RestBuild::info).collect();
        if claimed {
            let master_id = row.get("claimed_by_masterid").and_then(Value::as_u64);
            return Ok(RequestState::Running {
                master: self.master_name(master_id).await,
                claimed_at: row.get("claimed_at").and_then(Value::as_i64).unwrap_or(0),
                builds,
            });
        }
        Ok(RequestState::Pending { builds })
    }

    async fn cancel_request(&self, id: BuildRequestId) -> Result<CancelOutcome> {
        let Some(row) = self.request_row(id).await? else {
            return Ok(CancelOutcome::NotFound);
        };
        if row
            .get("complete")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            return Ok(CancelOutcome::AlreadyComplete);
        }
        if row.get("claimed").and_then(Value::as_bool).unwrap_or(false) {
            return Ok(CancelOutcome::AlreadyClaimed);
        }
        // The master cancels by claiming the request (its guard against a
        // concurrent claim) and completing it CANCELLED. Should a claim win
        // in the few milliseconds between the check above and this call,
        // the master stops the just-started build instead; the answer below
        // then says AlreadyClaimed.
        self.rpc_ok(
            &format!("/buildrequests/{}", id.0),
            "cancel",
            json!({"reason": "cancelled by bbb"}),
        )
        .await?;
        let deadline = Instant::now() + self.inner.config.cancel_confirm_timeout;
        loop {
            match self.request_state(id).await? {
                RequestState::Cancelled { .. } => {
                    tracing::info!(build_request.id = id.0, "cancelled pending build request");
                    return Ok(CancelOutcome::Cancelled);
                }
                // The cancellation's own claim shows as Running without a
                // running build: wait for its completion.
                RequestState::Running { builds, .. }
                    if !builds.iter().any(|b| b.finish_time.is_none()) => {}
                RequestState::Complete { .. } | RequestState::Running { .. } => {
                    tracing::warn!(
                        build_request.id = id.0,
                        "request was claimed before the cancellation reached the master"
                    );
                    return Ok(CancelOutcome::AlreadyClaimed);
                }
                RequestState::Unknown => return Ok(CancelOutcome::NotFound),
                RequestState::Pending { .. } => {}
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    build_request.id = id.0,
                    "the master has not confirmed the cancellation yet"
                );
                return Ok(CancelOutcome::Requested);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop_build(&self, target: StopTarget) -> Result<StopOutcome> {
        let builds = match target {
            StopTarget::Request(brid) => self.builds_where("buildrequestid", &[brid.0]).await?,
            StopTarget::Build(build) => self.builds_where("buildid", &[build.0]).await?,
        };
        let running: Vec<u64> = builds
            .iter()
            .filter(|b| !b.complete)
            .map(|b| b.id)
            .collect();
        if running.is_empty() {
            return Ok(StopOutcome::NotRunning);
        }
        for id in &running {
            self.stop(*id).await?;
        }
        Ok(StopOutcome::Requested(
            running.into_iter().map(BuildId).collect(),
        ))
    }

    async fn build_properties(
        &self,
        build: BuildId,
    ) -> Result<Option<std::collections::BTreeMap<String, Value>>> {
        Ok(self
            .all_build_properties(build.0)
            .await?
            .map(|props| props.into_iter().collect()))
    }

    async fn events(&self) -> Result<LegacyEventStream> {
        let (tx, rx) = mpsc::channel(1024);
        let mut tasks = Vec::new();
        if let Some(pulse) = &self.inner.config.pulse {
            let bindings: Vec<bbb_pulse::Binding> = REPORTER_BINDINGS
                .iter()
                .map(|pattern| bbb_pulse::Binding::new(&pulse.exchange, *pattern))
                .collect();
            let consumer = pulse
                .bus
                .consume(&pulse.queue, &bindings, pulse.prefetch)
                .await?;
            tasks.push(tokio::spawn(events::run_pulse(consumer, tx.clone())));
        }
        if let Some(options) = self.inner.config.poll.clone() {
            let poller = RestPoller::new(self.clone(), &options).await?;
            tasks.push(tokio::spawn(run_poller(poller, options, tx.clone())));
        }
        Ok(Box::pin(EventStream::from_parts(rx, tasks)))
    }
}

async fn run_poller(mut poller: RestPoller, options: PollOptions, tx: mpsc::Sender<LegacyEvent>) {
    loop {
        match poller.poll_once().await {
            Ok(events) => {
                for event in events {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "polling the Buildbot REST API failed"),
        }
        tokio::time::sleep(options.interval).await;
    }
}

/// Reconciliation by REST polling: new builds give `BuildStarted`, builds
/// seen complete give `BuildFinished` (and `RequestRequeued` for RETRY),
/// requests completed since the watermark give `RequestCompleted`.
struct RestPoller {
    master: RestMaster,
    /// Every build below this id has been looked at.
    next_build_id: u64,
    started_seen: HashSet<u64>,
    finished_seen: HashSet<u64>,
    /// Builds reported started, not yet finished.
    open: BTreeSet<u64>,
    completed_mark: i64,
    completed_seen: HashMap<u64, i64>,
}

impl RestPoller {
    async fn new(master: RestMaster, options: &PollOptions) -> Result<RestPoller> {
        let since = now_secs() - options.lookback.as_secs() as i64;
        let first = master
            .get(
                "/builds",
                &[
                    ("started_at__ge", since.to_string()),
                    ("field", "buildid".to_owned()),
                    ("field", "started_at".to_owned()),
                    ("order", "buildid".to_owned()),
                    ("limit", "1".to_owned()),
                ],
            )
            .await?
            .and_then(|body| rows(&body, "builds").first()?.get("buildid")?.as_u64());
        let next_build_id = match first {
            Some(id) => id,
            None => {
                let last = master
                    .get(
                        "/builds",
                        &[
                            ("field", "buildid".to_owned()),
                            ("order", "-buildid".to_owned()),
                            ("limit", "1".to_owned()),
                        ],
                    )
                    .await?
                    .and_then(|body| rows(&body, "builds").first()?.get("buildid")?.as_u64());
                last.map_or(1, |id| id + 1)
            }
        };
        Ok(RestPoller {
            master,
            next_build_id,
            started_seen: HashSet::new(),
            finished_seen: HashSet::new(),
            open: BTreeSet::new(),
            completed_mark: since + TIME_MARGIN,
            completed_seen: HashMap::new(),
        })
    }

    async fn poll_once(&mut self) -> Result<Vec<LegacyEvent>> {
        let mut events = Vec::new();
        let floor = self.next_build_id.saturating_sub(ID_MARGIN).max(1);
        let body = self
            .master
            .get(
                "/builds",
                &[
                    ("buildid__ge", floor.to_string()),
                    ("order", "buildid".to_owned()),
                    ("limit", BATCH.to_string()),
                    ("property", "taskId".to_owned()),
                    ("property", "log_url".to_owned()),
                    ("property", "buildnumber".to_owned()),
                ],
            )
            .await?;
        let builds: Vec<RestBuild> = body
            .map(|body| {
                rows(&body, "builds")
                    .iter()
                    .filter_map(RestBuild::from_json)
                    .collect()
            })
            .unwrap_or_default();
        for build in &builds {
            self.observe(build, &mut events).await?;
        }
        // Builds still running that started below the window.
        let stale: Vec<u64> = self.open.iter().copied().filter(|id| *id < floor).collect();
        if !stale.is_empty() {
            for build in self.master.builds_where("buildid", &stale).await? {
                self.observe(&build, &mut events).await?;
            }
        }
        let floor = self.next_build_id.saturating_sub(ID_MARGIN);
        let open = &self.open;
        self.started_seen
            .retain(|id| *id >= floor || open.contains(id));
        self.finished_seen.retain(|id| *id >= floor);

        events.extend(self.poll_completed().await?);
        Ok(events)
    }

    async fn observe(&mut self, build: &RestBuild, events: &mut Vec<LegacyEvent>) -> Result<()> {
        self.next_build_id = self.next_build_id.max(build.id + 1);
        if self.finished_seen.contains(&build.id) {
            return Ok(());
        }
        let request_ids: Vec<BuildRequestId> =
            build.request_id.map(BuildRequestId).into_iter().collect();
        let builder = self.master.builder_name(build.builder_id).await?;
        let master = self.master.master_name(build.master_id).await;
        let task_id = build.property_str("taskId");
        // The master writes a build's properties just after its row: report
        // the start once they are there (`buildnumber` is always among them),
        // or once the build is complete.
        let ready = build.complete || !build.properties.is_empty();
        if ready && self.started_seen.insert(build.id) {
            events.push(LegacyEvent::BuildStarted {
                build_request_ids: request_ids.clone(),
                builder: builder.clone(),
                build_number: build.number,
                build_ids: vec![BuildId(build.id)],
                master: master.clone(),
                task_id: task_id.clone(),
                source: EventSource::RestPoll,
            });
        }
        if !build.complete {
            self.open.insert(build.id);
            return Ok(());
        }
        // All the properties of a bridged build (one with a `taskId`; the
        // others concern no task). Fetched before the build counts as seen: a
        // failed fetch fails this poll, and the next one reports it again.
        let mut properties = if task_id.is_some() {
            self.master
                .all_build_properties(build.id)
                .await?
                .unwrap_or_default()
        } else {
            serde_json::Map::new()
        };
        for (name, value) in &build.properties {
            properties
                .entry(name.clone())
                .or_insert_with(|| value.clone());
        }
        self.open.remove(&build.id);
        self.finished_seen.insert(build.id);
        let results = results_or(build.results, BuildResult::Exception);
        events.push(LegacyEvent::BuildFinished {
            build_request_ids: request_ids.clone(),
            builder,
            build_number: build.number,
            build_ids: vec![BuildId(build.id)],
            results,
            master,
            task_id,
            properties: properties.into_iter().collect(),
            log_url: build.property_str("log_url"),
            source: EventSource::RestPoll,
        });
        if results == BuildResult::Retry {
            events.extend(
                request_ids
                    .into_iter()
                    .map(|id| LegacyEvent::RequestRequeued {
                        build_request_id: id,
                        source: EventSource::RestPoll,
                    }),
            );
        }
        Ok(())
    }

    async fn poll_completed(&mut self) -> Result<Vec<LegacyEvent>> {
        let from = self.completed_mark - TIME_MARGIN;
        let Some(body) = self
            .master
            .get(
                "/buildrequests",
                &[
                    ("complete", "true".to_owned()),
                    ("complete_at__ge", from.to_string()),
                    ("field", "buildrequestid".to_owned()),
                    ("field", "complete".to_owned()),
                    ("field", "complete_at".to_owned()),
                    ("field", "results".to_owned()),
                    ("order", "complete_at".to_owned()),
                    ("order", "buildrequestid".to_owned()),
                    ("limit", BATCH.to_string()),
                ],
            )
            .await?
        else {
            return Ok(Vec::new());
        };
        let mut fresh = Vec::new();
        for row in rows(&body, "buildrequests") {
            let (Some(id), Some(complete_at)) = (
                row.get("buildrequestid").and_then(Value::as_u64),
                row.get("complete_at").and_then(Value::as_i64),
            ) else {
                continue;
            };
            if self.completed_seen.contains_key(&id) {
                continue;
            }
            fresh.push((id, complete_at, row.get("results").and_then(Value::as_i64)));
        }
        let ids: Vec<u64> = fresh.iter().map(|(id, _, _)| *id).collect();
        let builds = self.master.builds_where("buildrequestid", &ids).await?;
        let mut events = Vec::new();
        let mut highest = self.completed_mark;
        for (id, complete_at, results) in fresh {
            self.completed_seen.insert(id, complete_at);
            highest = highest.max(complete_at);
            let claimed = builds
                .iter()
                .any(|b| b.request_id == Some(id) && b.counts_as_run());
            let default = if claimed {
                BuildResult::Exception
            } else {
                BuildResult::Cancelled
            };
            events.push(LegacyEvent::RequestCompleted {
                build_request_id: BuildRequestId(id),
                results: results_or(results, default),
                claimed,
                source: EventSource::RestPoll,
            });
        }
        self.completed_mark = highest;
        let floor = self.completed_mark - TIME_MARGIN;
        self.completed_seen.retain(|_, at| *at >= floor);
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::{RestAuth, api_base};

    #[test]
    fn api_base_accepts_master_and_api_urls() {
        assert_eq!(api_base("http://bb:8010/api/v2/"), "http://bb:8010/api/v2");
        assert_eq!(api_base("http://bb:8010/"), "http://bb:8010/api/v2");
        assert_eq!(api_base("http://bb:8010"), "http://bb:8010/api/v2");
    }

    #[test]
    fn http_and_https_are_accepted_and_other_schemes_refused() {
        super::RestMaster::new(super::RestMasterConfig::new("https://bb/api/v2")).unwrap();
        super::RestMaster::new(super::RestMasterConfig::new("http://bb/api/v2")).unwrap();
        let error = super::RestMaster::new(super::RestMasterConfig::new("ftp://bb/api/v2"))
            .expect_err("not HTTP");
        assert!(error.to_string().contains("http://"), "{error}");
    }

    #[test]
    fn credentials_are_not_shown() {
        let auth = RestAuth::Basic {
            user: "u".to_owned(),
            password: "secret".into(),
        };
        assert!(!format!("{auth:?}").contains("secret"));
        let auth = RestAuth::Header {
            name: "Authorization".to_owned(),
            value: "Bearer secret".into(),
        };
        assert!(!format!("{auth:?}").contains("secret"));
    }
}
