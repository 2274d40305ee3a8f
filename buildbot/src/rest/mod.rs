//! The Buildbot 4 adapter: a master's REST (data) API, plus the events of
//! bbb's reporter plugin.
//!
//! See the crate README ("The REST adapter") for what the master needs: a
//! force scheduler with a [`JsonPropertiesParameter`-style] properties
//! parameter, and the reporter plugin `buildbot/reporter/bbb_reporter.py`
//! in `c['services']`.
//!
//! [`JsonPropertiesParameter`-style]: RestMasterConfig::properties_parameter
//!
//! `client` holds the HTTP side (REST reads, JSON-RPC control calls, the
//! builder and master name caches), `poller` the REST polling that
//! reconciles what the reporter's messages missed.

mod client;
mod finished;
mod log;
mod poller;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use self::client::{BuilderRow, RestBuild, api_base, results_or, rows};
use crate::common::{PollOptions, PulseOptions, buildset_reason, normalize_branch};
use bbb_secret::{Secret, SecretUrl};

use crate::error::{LegacyError, Result};
use crate::events::EventSources;
use crate::types::{
    BuildId, BuildInfo, BuildRequestId, BuildRequestSpec, BuildResult, CancelOutcome, FoundRequest,
    RequestState, StopOutcome, StopTarget,
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

/// How to authenticate to the REST API. `Debug` shows the secrets as `***`.
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
        /// Password.
        password: Secret<String>,
    },
    /// One header sent with every call, e.g. `Authorization: Bearer …` or a
    /// cookie, for masters behind an authenticating proxy.
    Header {
        /// Header name.
        name: String,
        /// Header value.
        value: Secret<String>,
    },
}

/// Configuration of a [`RestMaster`].
#[derive(Clone, Debug)]
pub struct RestMasterConfig {
    /// The REST API's base URL, `http://host:8010/api/v2`. The master's own
    /// URL (`http://host:8010/`, its `buildbotURL`) is accepted too: `api/v2`
    /// is appended to a URL whose path does not end with it. Only `http`:
    /// the crate's HTTP client is built without TLS. Its password, if any,
    /// is masked in `Debug`.
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
    api: SecretUrl,
    http: reqwest::Client,
    builders: Mutex<Option<(Instant, Vec<BuilderRow>)>>,
    masters: Mutex<HashMap<u64, String>>,
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
        let api = SecretUrl::new(api_base(config.api_url.expose()));
        let parsed = url::Url::parse(api.expose()).map_err(|e| LegacyError::InvalidUrl {
            url: api.masked(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(LegacyError::InvalidUrl {
                url: api.masked(),
                reason: "expected an http:// or https:// URL".to_owned(),
            });
        }
        tracing::info!(%api, scheduler = %config.scheduler, "Buildbot REST adapter configured");
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
        self.inner.api.expose()
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
            "reason": buildset_reason(&spec.task_id),
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
        spec.log_submitted(brid, buildset_id);
        Ok(brid)
    }

    async fn find_requests_for_task(&self, task_id: &str) -> Result<Vec<FoundRequest>> {
        let reason = buildset_reason(task_id);
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

    /// The build's steps and each of their logs, from the data API
    /// (`/builds/<id>/steps`, `/steps/<id>/logs`, `/logs/<id>/raw`), as one
    /// text; the log URL is not used.
    async fn fetch_build_log(
        &self,
        build: Option<BuildId>,
        _log_url: Option<&str>,
    ) -> Result<Option<String>> {
        match build {
            Some(build) => self.read_build_log(build.0).await,
            None => Ok(None),
        }
    }

    async fn finished_builds(
        &self,
        after: crate::FinishedCursor,
        limit: usize,
    ) -> Result<Vec<crate::FinishedBuild>> {
        self.read_finished_builds(after, limit).await
    }

    async fn events(&self) -> Result<LegacyEventStream> {
        let mut sources = EventSources::new();
        if let Some(pulse) = &self.inner.config.pulse {
            sources.pulse(pulse, &REPORTER_BINDINGS).await?;
        }
        if let Some(options) = &self.inner.config.poll {
            let poller = poller::RestPoller::new(self.clone(), options).await?;
            sources.poll(poller, options.interval);
        }
        Ok(Box::pin(sources.stream()))
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
        let config = super::RestMasterConfig::new("http://bbb:secret@bb:8010/api/v2");
        let shown = format!("{config:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("http://bbb:***@bb:8010/api/v2"), "{shown}");
        let master = super::RestMaster::new(config).unwrap();
        assert!(!format!("{master:?}").contains("secret"));
        assert_eq!(master.api_url(), "http://bbb:secret@bb:8010/api/v2");
    }
}
