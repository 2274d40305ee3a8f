//! The Buildbot 0.8 scheduler-DB adapter, and its DB poller.

mod finished;
mod poller;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Opts, Pool, TxOpts};

use crate::builders::{BuilderCatalog, BuilderSource};
use bbb_secret::{SecretUrl, mask_url};

use crate::common::{
    PollOptions, PulseOptions, buildset_reason, normalize_branch, now_secs, url_with_segments,
};
use crate::error::{LegacyError, Result};
use crate::events::EventSources;
use crate::types::{
    BuildId, BuildInfo, BuildRequestId, BuildRequestSpec, BuildResult, CancelOutcome, FoundRequest,
    RequestState, StopOutcome, StopTarget,
};
use crate::{LegacyEventStream, LegacyMaster};

/// The source written with every build property.
pub const PROPERTY_SOURCE: &str = "bbb";
/// Longest `buildset_properties.property_value` (a `varchar(1024)`).
pub const MAX_PROPERTY_VALUE_LEN: usize = 1024;
/// Longest `buildset_properties.property_name` (a `varchar(256)`).
pub const MAX_PROPERTY_NAME_LEN: usize = 256;
/// The topic patterns the adapter binds its queue with on the masters'
/// exchange: like Mozilla's bridge, it reads `started` and `log_uploaded`
/// (only the latter names every request a finished build satisfied).
pub const PULSE_BINDINGS: [&str; 2] = ["build.*.*.started", "build.*.*.log_uploaded"];

/// Configuration of a [`SchedulerDb`].
#[derive(Clone, Debug)]
pub struct SchedulerDbConfig {
    /// `mysql://user:password@host:port/database` of the scheduler DB (its
    /// password masked in `Debug`).
    pub db_url: SecretUrl,
    /// Accepted builders.
    pub builders: BuilderSource,
    /// Pulse events, if the masters publish them.
    pub pulse: Option<PulseOptions>,
    /// DB polling, the fallback (and reconciliation) event source.
    pub poll: Option<PollOptions>,
    /// Base URL of a self-serve (buildapi) API, e.g.
    /// `http://buildapi/buildapi/self-serve`. When set, cancels and stops
    /// go through it (`DELETE {url}/{branch}/request/{brid}` and
    /// `DELETE {url}/{branch}/build/{build_id}`). Its password, if any, is
    /// masked in `Debug`.
    pub selfserve_url: Option<SecretUrl>,
    /// The `X-Remote-User` header self-serve requires.
    pub selfserve_user: String,
    /// Web URL of each master, by the name it claims requests with
    /// (`claimed_by_name`), for the stop URL
    /// `{url}/builders/<builder>/builds/<n>/stop`.
    pub master_urls: BTreeMap<String, String>,
    /// Web URL for masters not in `master_urls`.
    pub default_master_url: Option<String>,
}

impl SchedulerDbConfig {
    /// A configuration with every builder accepted, no Pulse, default DB
    /// polling, no self-serve and no master URLs.
    pub fn new(db_url: impl Into<SecretUrl>) -> Self {
        Self {
            db_url: db_url.into(),
            builders: BuilderSource::Any,
            pulse: None,
            poll: Some(PollOptions::default()),
            selfserve_url: None,
            selfserve_user: "buildbot-bridge".to_owned(),
            master_urls: BTreeMap::new(),
            default_master_url: None,
        }
    }
}

/// A [`LegacyMaster`] backed by a Buildbot 0.8 scheduler database on
/// MySQL/MariaDB. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SchedulerDb {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    config: SchedulerDbConfig,
    catalog: BuilderCatalog,
    http: reqwest::Client,
    /// For build logs: follows redirects (the log server may move them).
    logs_http: reqwest::Client,
}

impl std::fmt::Debug for Inner {
    /// Without the pool: its `Debug` shows the connection options, the
    /// password included.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("config", &self.config)
            .field("catalog", &self.catalog)
            .finish_non_exhaustive()
    }
}

/// Opens a pool on a MySQL URL, masking the URL in errors.
pub(crate) fn open_pool(db_url: &str) -> Result<Pool> {
    let opts = Opts::from_url(db_url).map_err(|e| LegacyError::InvalidUrl {
        url: mask_url(db_url),
        reason: e.to_string(),
    })?;
    Ok(Pool::new(opts))
}

/// Self-serve wants the short branch name: the last path component.
fn short_branch(branch: &str) -> &str {
    branch.rsplit('/').next().unwrap_or(branch)
}

fn decode_results(id: u64, code: Option<i64>, default: BuildResult) -> BuildResult {
    match code.and_then(BuildResult::from_code) {
        Some(results) => results,
        None => {
            tracing::warn!(
                build_request.id = id,
                ?code,
                "request has no known result code"
            );
            default
        }
    }
}

struct RequestRow {
    claimed_at: i64,
    claimed_by_name: Option<String>,
    complete: bool,
    results: Option<i64>,
    complete_at: Option<i64>,
}

struct RunningBuild {
    build_id: BuildId,
    number: u64,
    buildername: String,
    master: Option<String>,
    branch: Option<String>,
}

impl SchedulerDb {
    /// Connects lazily to the scheduler DB described by `config`.
    pub fn new(config: SchedulerDbConfig) -> Result<SchedulerDb> {
        let pool = open_pool(config.db_url.expose())?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            // A 0.8 master answers a stop with a redirect to the build page.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| LegacyError::Http {
                url: String::new(),
                reason: e.to_string(),
            })?;
        let logs_http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| LegacyError::Http {
                url: String::new(),
                reason: e.to_string(),
            })?;
        let catalog = BuilderCatalog::new(config.builders.clone(), http.clone());
        tracing::info!(db = %config.db_url, "scheduler DB adapter configured");
        Ok(SchedulerDb {
            inner: Arc::new(Inner {
                pool,
                config,
                catalog,
                http,
                logs_http,
            }),
        })
    }

    /// The connection pool (for tests and tools that read the DB directly).
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Closes the pool's connections.
    pub async fn close(self) -> Result<()> {
        if let Ok(inner) = Arc::try_unwrap(self.inner) {
            inner.pool.disconnect().await?;
        }
        Ok(())
    }

    async fn request_row(&self, id: BuildRequestId) -> Result<Option<RequestRow>> {
        let mut conn = self.inner.pool.get_conn().await?;
        type Row = (
            Option<i64>,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
        );
        let row: Option<Row> = conn
            .exec_first(
                "SELECT claimed_at, claimed_by_name, complete, results, complete_at \
                 FROM buildrequests WHERE id = ?",
                (id.0,),
            )
            .await?;
        Ok(row.map(
            |(claimed_at, claimed_by_name, complete, results, complete_at)| RequestRow {
                claimed_at: claimed_at.unwrap_or(0),
                claimed_by_name,
                complete: complete.unwrap_or(0) != 0,
                results,
                complete_at,
            },
        ))
    }

    async fn builds_of(&self, id: BuildRequestId) -> Result<Vec<BuildInfo>> {
        let mut conn = self.inner.pool.get_conn().await?;
        let rows: Vec<(u64, u64, i64, Option<i64>)> = conn
            .exec(
                "SELECT id, number, start_time, finish_time FROM builds WHERE brid = ? ORDER BY id",
                (id.0,),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(build_id, number, start_time, finish_time)| BuildInfo {
                build_id: BuildId(build_id),
                number,
                start_time,
                finish_time,
            })
            .collect())
    }

    async fn running_builds(&self, target: StopTarget) -> Result<Vec<RunningBuild>> {
        let (filter, id) = match target {
            StopTarget::Request(brid) => ("b.brid = ?", brid.0),
            StopTarget::Build(build) => ("b.id = ?", build.0),
        };
        let mut conn = self.inner.pool.get_conn().await?;
        type Row = (u64, u64, String, Option<String>, Option<String>);
        let rows: Vec<Row> = conn
            .exec(
                format!(
                    "SELECT b.id, b.number, br.buildername, br.claimed_by_name, ss.branch \
                     FROM builds b \
                     JOIN buildrequests br ON br.id = b.brid \
                     LEFT JOIN buildsets bs ON bs.id = br.buildsetid \
                     LEFT JOIN sourcestamps ss ON ss.id = bs.sourcestampid \
                     WHERE {filter} AND b.finish_time IS NULL ORDER BY b.id"
                ),
                (id,),
            )
            .await?;
        let builds =
            rows.into_iter().map(
                |(build_id, number, buildername, master, branch)| RunningBuild {
                    build_id: BuildId(build_id),
                    number,
                    buildername,
                    master,
                    branch,
                },
            );
        Ok(builds.collect())
    }

    async fn branch_of(&self, id: BuildRequestId) -> Result<Option<String>> {
        let mut conn = self.inner.pool.get_conn().await?;
        let branch: Option<Option<String>> = conn
            .exec_first(
                "SELECT ss.branch FROM buildrequests br \
                 JOIN buildsets bs ON bs.id = br.buildsetid \
                 JOIN sourcestamps ss ON ss.id = bs.sourcestampid WHERE br.id = ?",
                (id.0,),
            )
            .await?;
        Ok(branch.flatten())
    }

    /// `DELETE {selfserve}/{branch}/{kind}/{id}`; `Ok(false)` on 404.
    async fn selfserve_delete(
        &self,
        base: &str,
        branch: &str,
        kind: &str,
        id: u64,
    ) -> Result<bool> {
        let url = url_with_segments(base, &[short_branch(branch), kind, &id.to_string()])?;
        let shown = mask_url(url.as_str());
        let request = self.inner.http.delete(url);
        let request = request.header("X-Remote-User", &self.inner.config.selfserve_user);
        let response = send_web(request, &shown).await?;
        match response.status() {
            status if status.is_success() => Ok(true),
            reqwest::StatusCode::NOT_FOUND => {
                tracing::warn!(url = %shown, "self-serve answered 404");
                Ok(false)
            }
            status => Err(LegacyError::Http {
                url: shown,
                reason: format!("status {status}"),
            }),
        }
    }

    async fn stop_on_master(&self, build: &RunningBuild) -> Result<()> {
        let master = build.master.clone().unwrap_or_default();
        let base = self
            .inner
            .config
            .master_urls
            .get(&master)
            .or(self.inner.config.default_master_url.as_ref())
            .ok_or_else(|| LegacyError::NoMasterUrl(master.clone()))?;
        let number = build.number.to_string();
        let url = url_with_segments(
            base,
            &["builders", &build.buildername, "builds", &number, "stop"],
        )?;
        let shown = mask_url(url.as_str());
        let request = self.inner.http.post(url);
        let response = send_web(request.form(&[("comments", "stopped by bbb")]), &shown).await?;
        // The 0.8 web UI answers a stop with a redirect to the build page.
        if response.status().is_success() || response.status().is_redirection() {
            Ok(())
        } else {
            Err(LegacyError::Http {
                url: shown,
                reason: format!("status {}", response.status()),
            })
        }
    }
}

/// Sends a request to a master's web pages (self-serve, stop URLs); a
/// failure to send is an HTTP error on `shown`, the masked URL.
async fn send_web(request: reqwest::RequestBuilder, shown: &str) -> Result<reqwest::Response> {
    request.send().await.map_err(|e| LegacyError::Http {
        url: shown.to_owned(),
        reason: e.to_string(),
    })
}

#[async_trait]
impl LegacyMaster for SchedulerDb {
    async fn builders(&self) -> Result<Option<Vec<String>>> {
        self.inner.catalog.builders().await
    }

    async fn submit(&self, spec: &BuildRequestSpec) -> Result<BuildRequestId> {
        if !self.accepts_builder(&spec.buildername).await? {
            return Err(LegacyError::UnknownBuilder(spec.buildername.clone()));
        }
        let encoded = encode_properties(spec)?;
        let branch = spec.sourcestamp.branch.as_deref().map(normalize_branch);

        let mut conn = self.inner.pool.get_conn().await?;
        let mut tx = conn.start_transaction(TxOpts::default()).await?;
        tx.exec_drop(
            "INSERT INTO sourcestamps (branch, revision, patchid, repository, project) \
             VALUES (?, ?, NULL, ?, ?)",
            (
                branch,
                spec.sourcestamp.revision.clone(),
                spec.sourcestamp.repository.clone(),
                spec.sourcestamp.project.clone(),
            ),
        )
        .await?;
        let sourcestamp_id = tx.last_insert_id().unwrap_or_default();
        tx.exec_drop(
            "INSERT INTO buildsets (external_idstring, reason, sourcestampid, submitted_at, complete) \
             VALUES (?, ?, ?, ?, 0)",
            (
                format!("taskId:{}", spec.task_id),
                buildset_reason(&spec.task_id),
                sourcestamp_id,
                spec.submitted_at,
            ),
        )
        .await?;
        let buildset_id = tx.last_insert_id().unwrap_or_default();
        tx.exec_batch(
            "INSERT INTO buildset_properties (buildsetid, property_name, property_value) VALUES (?, ?, ?)",
            encoded
                .iter()
                .map(|(name, value)| (buildset_id, name.as_str(), value.as_str())),
        )
        .await?;
        // The request goes last: without a transaction (MyISAM) a failure
        // above leaves no runnable request behind.
        tx.exec_drop(
            "INSERT INTO buildrequests \
             (buildsetid, buildername, priority, claimed_at, complete, submitted_at) \
             VALUES (?, ?, ?, 0, 0, ?)",
            (
                buildset_id,
                spec.buildername.clone(),
                spec.priority,
                spec.submitted_at,
            ),
        )
        .await?;
        let brid = BuildRequestId(tx.last_insert_id().unwrap_or_default());
        tx.commit().await?;
        spec.log_submitted(brid, Some(buildset_id));
        Ok(brid)
    }

    async fn find_requests_for_task(&self, task_id: &str) -> Result<Vec<FoundRequest>> {
        let mut conn = self.inner.pool.get_conn().await?;
        let rows: Vec<(u64, u64, String, i64, Option<i64>)> = conn
            .exec(
                "SELECT br.id, br.buildsetid, br.buildername, br.submitted_at, br.complete \
                 FROM buildsets bs JOIN buildrequests br ON br.buildsetid = bs.id \
                 WHERE bs.external_idstring = ? ORDER BY br.id",
                (format!("taskId:{task_id}"),),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, buildset_id, buildername, submitted_at, complete)| FoundRequest {
                    build_request_id: BuildRequestId(id),
                    buildset_id,
                    buildername,
                    submitted_at,
                    complete: complete.unwrap_or(0) != 0,
                },
            )
            .collect())
    }

    async fn request_state(&self, id: BuildRequestId) -> Result<RequestState> {
        let Some(row) = self.request_row(id).await? else {
            return Ok(RequestState::Unknown);
        };
        if row.complete && row.claimed_at == 0 {
            return Ok(RequestState::Cancelled {
                results: decode_results(id.0, row.results, BuildResult::Cancelled),
                complete_at: row.complete_at,
            });
        }
        let builds = self.builds_of(id).await?;
        Ok(if row.complete {
            RequestState::Complete {
                results: decode_results(id.0, row.results, BuildResult::Exception),
                complete_at: row.complete_at,
                builds,
            }
        } else if row.claimed_at != 0 {
            RequestState::Running {
                master: row.claimed_by_name,
                claimed_at: row.claimed_at,
                builds,
            }
        } else {
            RequestState::Pending { builds }
        })
    }

    async fn cancel_request(&self, id: BuildRequestId) -> Result<CancelOutcome> {
        let Some(row) = self.request_row(id).await? else {
            return Ok(CancelOutcome::NotFound);
        };
        if row.complete {
            return Ok(CancelOutcome::AlreadyComplete);
        }
        if row.claimed_at != 0 {
            return Ok(CancelOutcome::AlreadyClaimed);
        }
        if let Some(base) = &self.inner.config.selfserve_url {
            let branch = self.branch_of(id).await?.unwrap_or_default();
            let accepted = self
                .selfserve_delete(base.expose(), &branch, "request", id.0)
                .await?;
            tracing::info!(
                build_request.id = id.0,
                accepted,
                "asked self-serve to cancel request"
            );
            return Ok(if accepted {
                CancelOutcome::Requested
            } else {
                CancelOutcome::NotFound
            });
        }
        let now = now_secs();
        let mut conn = self.inner.pool.get_conn().await?;
        let mut tx = conn.start_transaction(TxOpts::default()).await?;
        tx.exec_drop(
            "UPDATE buildrequests SET complete = 1, results = ?, complete_at = ? \
             WHERE id = ? AND complete = 0 AND (claimed_at IS NULL OR claimed_at = 0)",
            (BuildResult::Cancelled.code(), now, id.0),
        )
        .await?;
        let cancelled = tx.affected_rows() == 1;
        if cancelled {
            complete_buildset_if_done(&mut tx, id, now).await?;
        }
        tx.commit().await?;
        if cancelled {
            tracing::info!(build_request.id = id.0, "cancelled pending build request");
            return Ok(CancelOutcome::Cancelled);
        }
        // Lost a race with a claim or another cancel.
        Ok(match self.request_row(id).await? {
            None => CancelOutcome::NotFound,
            Some(row) if row.complete => CancelOutcome::AlreadyComplete,
            Some(_) => CancelOutcome::AlreadyClaimed,
        })
    }

    async fn stop_build(&self, target: StopTarget) -> Result<StopOutcome> {
        let builds = self.running_builds(target).await?;
        if builds.is_empty() {
            return Ok(StopOutcome::NotRunning);
        }
        let mut stopped = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for build in &builds {
            if !seen.insert((build.buildername.clone(), build.number)) {
                // Merged requests share one build: stop it once.
                stopped.push(build.build_id);
                continue;
            }
            if let Some(base) = &self.inner.config.selfserve_url {
                let branch = build.branch.clone().unwrap_or_default();
                self.selfserve_delete(base.expose(), &branch, "build", build.build_id.0)
                    .await?;
            } else {
                self.stop_on_master(build).await?;
            }
            tracing::info!(build.id = build.build_id.0, builder = %build.buildername, build.number = build.number, "asked to stop build");
            stopped.push(build.build_id);
        }
        Ok(StopOutcome::Requested(stopped))
    }

    /// The log postrun.py uploaded: `log_url` (what the build's
    /// `log_uploaded` message carried) downloaded and gunzipped. The
    /// scheduler DB keeps no log, so a build whose message was missed (no
    /// URL) has none.
    async fn fetch_build_log(
        &self,
        _build: Option<BuildId>,
        log_url: Option<&str>,
    ) -> Result<Option<String>> {
        match log_url {
            Some(url) => crate::buildlog::download(&self.inner.logs_http, url).await,
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
            sources.pulse(pulse, &PULSE_BINDINGS).await?;
        }
        if let Some(options) = &self.inner.config.poll {
            let poller = poller::Poller::new(self.inner.pool.clone(), options).await?;
            sources.poll(poller, options.interval);
        }
        Ok(Box::pin(sources.stream()))
    }
}

/// The request's properties as `buildset_properties` rows: each name with
/// its value as the JSON `[value, "bbb"]`, `taskId` set to the task's id.
/// What the 0.8 schema cannot hold is refused before anything is written.
pub(crate) fn encode_properties(spec: &BuildRequestSpec) -> Result<Vec<(String, String)>> {
    let mut properties = spec.properties.clone();
    properties.insert(
        "taskId".to_owned(),
        serde_json::Value::String(spec.task_id.clone()),
    );
    let mut encoded = Vec::with_capacity(properties.len());
    for (name, value) in properties {
        let text = serde_json::to_string(&serde_json::json!([value, PROPERTY_SOURCE]))?;
        if text.chars().count() > MAX_PROPERTY_VALUE_LEN {
            return Err(LegacyError::Invalid(format!(
                "property {name:?} is {} characters as JSON, the column holds {MAX_PROPERTY_VALUE_LEN}",
                text.chars().count()
            )));
        }
        if name.chars().count() > MAX_PROPERTY_NAME_LEN {
            return Err(LegacyError::Invalid(format!(
                "property name {name:?} is longer than {MAX_PROPERTY_NAME_LEN} characters"
            )));
        }
        encoded.push((name, text));
    }
    Ok(encoded)
}

/// Marks the request's buildset complete once none of its requests is
/// incomplete (what a 0.8 master does when it completes requests).
pub(crate) async fn complete_buildset_if_done(
    tx: &mut mysql_async::Transaction<'_>,
    id: BuildRequestId,
    now: i64,
) -> Result<()> {
    let row: Option<(u64, Option<i64>)> = tx
        .exec_first(
            "SELECT buildsetid, results FROM buildrequests WHERE id = ?",
            (id.0,),
        )
        .await?;
    let Some((buildset_id, results)) = row else {
        return Ok(());
    };
    let open: Option<u64> = tx
        .exec_first(
            "SELECT COUNT(*) FROM buildrequests WHERE buildsetid = ? AND complete = 0",
            (buildset_id,),
        )
        .await?;
    if open.unwrap_or(0) == 0 {
        tx.exec_drop(
            "UPDATE buildsets SET complete = 1, complete_at = ?, results = ? \
             WHERE id = ? AND complete = 0",
            (now, results, buildset_id),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{SchedulerDb, SchedulerDbConfig, short_branch};
    use crate::builders::BuilderSource;

    #[tokio::test]
    async fn passwords_in_the_configuration_are_not_shown() {
        let mut config = SchedulerDbConfig::new("mysql://bbb:db-pw@db/sched");
        config.selfserve_url = Some("http://bbb:ss-pw@buildapi/self-serve".into());
        config.builders = BuilderSource::Url {
            url: "http://bbb:list-pw@buildapi/allthethings.json".into(),
            refresh: std::time::Duration::from_secs(300),
        };
        config.poll = None;
        let shown = format!("{config:?}");
        for secret in ["db-pw", "ss-pw", "list-pw"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("mysql://bbb:***@db/sched"), "{shown}");
        assert!(
            shown.contains("http://bbb:***@buildapi/self-serve"),
            "{shown}"
        );
        assert_eq!(config.db_url.expose(), "mysql://bbb:db-pw@db/sched");
        // The pool connects lazily: the adapter is built without a server.
        let master = SchedulerDb::new(config).unwrap();
        assert!(!format!("{master:?}").contains("db-pw"));
    }

    #[test]
    fn self_serve_takes_the_short_branch_name() {
        assert_eq!(
            short_branch("integration/mozilla-inbound"),
            "mozilla-inbound"
        );
    }
}
