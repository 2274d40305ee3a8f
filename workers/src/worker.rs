//! The claim loop: claims tasks from the queue, keeps their claims alive,
//! runs them with the [engine](crate::engine), uploads logs and artifacts
//! and resolves the runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use taskcluster::{ClientBuilder, Credentials, Queue};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::WorkerConfig;
use crate::engine::{
    AbortReason, AbortSignal, ArtifactContent, ExceptionReason, RunOutcome, TaskContext, TaskDir,
    open_artifact, run_task,
};
use crate::error::QueueCallError;
use crate::livelog::{LiveLogServer, TaskLog};
use crate::payload::{Logs, Payload};
use crate::proxy::{SharedCredentials, TaskCredentials, TaskclusterProxy};
use crate::users::{RunAsDecision, RunTasksAs, TaskUser, TaskUsers};

/// What happened to one claimed task; sent to [`Worker::subscribe`]rs once
/// the run is resolved (or forgotten after losing its claim).
#[derive(Debug, Clone)]
pub struct TaskReport {
    /// Task id.
    pub task_id: String,
    /// Run id.
    pub run_id: u32,
    /// How the run was resolved.
    pub resolution: RunOutcome,
    /// When `claimWork` returned the task.
    pub claimed_at: Instant,
    /// When the first command was started, if any was.
    pub process_started_at: Option<Instant>,
    /// When the commands ended.
    pub process_ended_at: Instant,
    /// When the resolution was reported (or the task forgotten).
    pub resolved_at: Instant,
}

struct Shared {
    cfg: WorkerConfig,
    run_as: RunAsDecision,
    /// Creates and removes task users (`run_tasks_as = "task-user"`).
    users: Option<TaskUsers>,
    livelog: LiveLogServer,
    http: reqwest_tc::Client,
    reports: broadcast::Sender<TaskReport>,
    running: Mutex<HashMap<(String, u32), AbortSignal>>,
}

/// A process worker bound to one task queue.
pub struct Worker {
    shared: Arc<Shared>,
    queue: Queue,
    livelog_stop: CancellationToken,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("cfg", &self.shared.cfg)
            .field("livelog", &self.shared.livelog)
            .finish_non_exhaustive()
    }
}

fn queue_client(root_url: &str, creds: Credentials) -> anyhow::Result<Queue> {
    Queue::new(
        ClientBuilder::new(root_url)
            .credentials(creds)
            .timeout(Duration::from_secs(60)),
    )
}

impl Worker {
    /// Validates the configuration, decides who tasks run as
    /// ([`crate::users::decide`]), prepares the tasks directory, removes the
    /// task users a previous run of this worker left, and starts the
    /// live-log server.
    pub async fn new(cfg: WorkerConfig) -> anyhow::Result<Worker> {
        cfg.validate()?;
        let run_as = crate::users::decide(cfg.run_tasks_as).map_err(anyhow::Error::msg)?;
        let users = match run_as.mode {
            RunTasksAs::TaskUser => {
                crate::users::prepare_tasks_dir(&cfg.tasks_dir).map_err(|e| {
                    anyhow::anyhow!(
                        "tasks_dir: {e}; choose a tasks_dir that other users can reach, or set run_tasks_as = \"current-user\""
                    )
                })?;
                // Two workers never share a tasks directory: it tells this
                // worker's users from those of another on the same host.
                let users = TaskUsers::new(&format!(
                    "{}/{} on {} in {}",
                    cfg.worker_group,
                    cfg.worker_id,
                    cfg.task_queue_id,
                    std::path::absolute(&cfg.tasks_dir)
                        .unwrap_or_else(|_| cfg.tasks_dir.clone())
                        .display()
                ))
                .map_err(anyhow::Error::msg)?;
                let stale = users.remove_stale().await;
                if stale > 0 {
                    tracing::info!(users = stale, "removed task users left by a previous run");
                }
                Some(users)
            }
            RunTasksAs::CurrentUser => {
                use std::os::unix::fs::PermissionsExt;
                std::fs::create_dir_all(&cfg.tasks_dir)
                    .and_then(|()| {
                        std::fs::set_permissions(
                            &cfg.tasks_dir,
                            std::fs::Permissions::from_mode(0o700),
                        )
                    })
                    .map_err(|e| {
                        anyhow::anyhow!("cannot create tasks_dir {}: {e}", cfg.tasks_dir.display())
                    })?;
                None
            }
        };
        let queue = queue_client(
            &cfg.root_url,
            Credentials::new(cfg.client_id.clone(), cfg.access_token.expose().clone()),
        )?;
        let livelog_stop = CancellationToken::new();
        let livelog = LiveLogServer::start(
            &cfg.livelog_listen,
            cfg.livelog_public_url.as_deref(),
            livelog_stop.clone(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.livelog_listen))?;
        let http = reqwest_tc::Client::builder()
            .timeout(Duration::from_secs(15 * 60))
            .build()?;
        let (reports, _) = broadcast::channel(1024);
        Ok(Worker {
            shared: Arc::new(Shared {
                cfg,
                run_as,
                users,
                livelog,
                http,
                reports,
                running: Mutex::default(),
            }),
            queue,
            livelog_stop,
        })
    }

    /// Who this worker runs tasks as.
    pub fn run_tasks_as(&self) -> RunTasksAs {
        self.shared.run_as.mode
    }

    /// The address the live-log server is bound to.
    pub fn livelog_addr(&self) -> SocketAddr {
        self.shared.livelog.addr()
    }

    /// The base URL of the live-log server's log URLs (the URLs of the
    /// tasks' `public/logs/live.log` references start with it).
    pub fn livelog_url(&self) -> &str {
        self.shared.livelog.base_url()
    }

    /// Receives a [`TaskReport`] for every task this worker finishes.
    pub fn subscribe(&self) -> broadcast::Receiver<TaskReport> {
        self.shared.reports.subscribe()
    }

    /// Claims and runs tasks until `shutdown` is cancelled (e.g. on
    /// SIGTERM). Then it claims nothing more, lets running tasks finish
    /// within `shutdown_grace_s`, stops the rest and reports them
    /// `exception/worker-shutdown` (the queue retries them), and returns.
    ///
    /// A `claimWork` call in flight when `shutdown` fires is abandoned; a task
    /// it may have claimed comes back after its claim expires.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let cfg = &self.shared.cfg;
        tracing::info!(
            task_queue_id = %cfg.task_queue_id,
            worker_group = %cfg.worker_group,
            worker_id = %cfg.worker_id,
            capacity = cfg.capacity,
            livelog = %self.shared.livelog.addr(),
            run_tasks_as = %self.shared.run_as.mode,
            "worker started"
        );
        if let Some(warning) = &self.shared.run_as.warning {
            tracing::warn!("{warning}");
        }
        let mut running: JoinSet<()> = JoinSet::new();
        let min_poll = Duration::from_millis(cfg.min_poll_interval_ms);
        let mut failures: u32 = 0;
        loop {
            while let Some(r) = running.try_join_next() {
                if let Err(e) = r {
                    tracing::error!(error = %e, "task runner panicked");
                }
            }
            if shutdown.is_cancelled() {
                break;
            }
            let free = cfg.capacity.saturating_sub(running.len());
            if free == 0 {
                tokio::select! {
                    _ = running.join_next() => continue,
                    () = shutdown.cancelled() => break,
                }
            }
            let started = Instant::now();
            let claimed = tokio::select! {
                r = self.claim_work(free) => r,
                () = shutdown.cancelled() => break,
            };
            let wait = match claimed {
                Ok(tasks) => {
                    failures = 0;
                    let claimed_at = Instant::now();
                    let n = tasks.len();
                    for claim in tasks {
                        let shared = self.shared.clone();
                        running.spawn(async move { run_claim(shared, claim, claimed_at).await });
                    }
                    if n == 0 {
                        min_poll.saturating_sub(started.elapsed())
                    } else {
                        Duration::ZERO
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let backoff = Duration::from_millis(500 * 2u64.pow(failures.min(6)));
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "claimWork failed");
                    backoff.max(min_poll.saturating_sub(started.elapsed()))
                }
            };
            if !wait.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => break,
                }
            }
        }

        tracing::info!(
            running = running.len(),
            grace_s = cfg.shutdown_grace_s,
            "shutting down: claiming stopped"
        );
        let grace = tokio::time::sleep(Duration::from_secs(cfg.shutdown_grace_s));
        tokio::pin!(grace);
        loop {
            tokio::select! {
                r = running.join_next() => match r {
                    None => break,
                    Some(Err(e)) => tracing::error!(error = %e, "task runner panicked"),
                    Some(Ok(())) => {}
                },
                () = &mut grace => {
                    let signals: Vec<AbortSignal> = self
                        .shared
                        .running
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .values()
                        .cloned()
                        .collect();
                    tracing::warn!(tasks = signals.len(), "grace period over: stopping running tasks");
                    for s in signals {
                        s.abort(AbortReason::WorkerShutdown);
                    }
                    break;
                }
            }
        }
        while let Some(r) = running.join_next().await {
            if let Err(e) = r {
                tracing::error!(error = %e, "task runner panicked");
            }
        }
        self.livelog_stop.cancel();
        tracing::info!("worker stopped");
        Ok(())
    }

    async fn claim_work(&self, n: usize) -> Result<Vec<Value>, QueueCallError> {
        let cfg = &self.shared.cfg;
        let body = json!({
            "workerGroup": cfg.worker_group,
            "workerId": cfg.worker_id,
            "tasks": n,
        });
        let res = self
            .queue
            .claimWork(&cfg.task_queue_id, &body)
            .await
            .map_err(|e| QueueCallError::from_client("claimWork", e))?;
        match res.get("tasks").and_then(Value::as_array) {
            Some(tasks) => Ok(tasks.clone()),
            None => Err(QueueCallError::Other {
                call: "claimWork",
                message: "response has no tasks list".into(),
            }),
        }
    }
}

/// A queue client holding a task's current temporary credentials.
struct TaskClient {
    root_url: String,
    queue: RwLock<Arc<Queue>>,
    taken_until: Mutex<DateTime<Utc>>,
    /// The claim's credentials, renewed at each reclaim; `None` when the
    /// claim had none (the worker's own are used for its calls then, and
    /// never given to a proxy).
    credentials: Option<SharedCredentials>,
}

impl TaskClient {
    fn get(&self) -> Arc<Queue> {
        self.queue.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, claim: &Value, fallback: &WorkerConfig) {
        if let Some(t) = claim
            .get("takenUntil")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<DateTime<Utc>>().ok())
        {
            *self.taken_until.lock().unwrap_or_else(|e| e.into_inner()) = t;
        }
        let creds = TaskCredentials::from_claim(claim.get("credentials"));
        if let (Some(shared), Some(creds)) = (&self.credentials, &creds) {
            shared.set(creds.clone());
        }
        match queue_client(&self.root_url, client_credentials(creds.as_ref(), fallback)) {
            Ok(q) => *self.queue.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(q),
            Err(e) => {
                tracing::error!(error = %e, "cannot build a client with the task credentials")
            }
        }
    }

    fn taken_until(&self) -> DateTime<Utc> {
        *self.taken_until.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The temporary credentials of a claim for the worker's calls about the
/// task; the worker's own when the claim has none.
fn client_credentials(creds: Option<&TaskCredentials>, fallback: &WorkerConfig) -> Credentials {
    match creds {
        Some(c) => c.client(),
        None => Credentials::new(
            fallback.client_id.clone(),
            fallback.access_token.expose().clone(),
        ),
    }
}

/// When to reclaim: `reclaim_before` ahead of `taken_until`, or half-way
/// when the claim is shorter than twice that.
pub fn reclaim_delay(remaining: Duration, reclaim_before: Duration) -> Duration {
    remaining.saturating_sub(reclaim_before).max(remaining / 2)
}

async fn run_claim(shared: Arc<Shared>, claim: Value, claimed_at: Instant) {
    let task_id = claim["status"]["taskId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let run_id = claim["runId"].as_u64().unwrap_or(u64::MAX);
    if task_id.is_empty() || run_id > u64::from(u32::MAX) {
        tracing::error!("claimWork returned a claim without taskId or runId; ignored");
        return;
    }
    let run_id = run_id as u32;
    let span = tracing::info_span!("task", task.id = %task_id, run.id = run_id);
    run_claimed(shared, claim, task_id, run_id, claimed_at)
        .instrument(span)
        .await;
}

async fn run_claimed(
    shared: Arc<Shared>,
    claim: Value,
    task_id: String,
    run_id: u32,
    claimed_at: Instant,
) {
    let cfg = &shared.cfg;
    tracing::info!("task claimed");
    let task = claim.get("task").cloned().unwrap_or(Value::Null);
    let task_expires = task
        .get("expires")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<DateTime<Utc>>().ok());
    let expires = task_expires.unwrap_or_else(|| Utc::now() + chrono::Duration::days(1));
    let task_creds = TaskCredentials::from_claim(claim.get("credentials"));
    let client = Arc::new(TaskClient {
        root_url: cfg.root_url.clone(),
        queue: RwLock::new(Arc::new(
            match queue_client(&cfg.root_url, client_credentials(task_creds.as_ref(), cfg)) {
                Ok(q) => q,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build a queue client for the task");
                    return;
                }
            },
        )),
        taken_until: Mutex::new(
            claim
                .get("takenUntil")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<DateTime<Utc>>().ok())
                .unwrap_or_else(Utc::now),
        ),
        credentials: task_creds.map(SharedCredentials::new),
    });

    let abort = AbortSignal::new();
    shared
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((task_id.clone(), run_id), abort.clone());
    let done = CancellationToken::new();
    let reclaimer = tokio::spawn(
        reclaim_loop(
            client.clone(),
            task_id.clone(),
            run_id,
            Duration::from_secs(cfg.reclaim_before_s),
            abort.clone(),
            done.clone(),
            cfg.clone(),
        )
        .in_current_span(),
    );

    let payload = task.get("payload").cloned().unwrap_or(Value::Null);
    let parsed = Payload::parse(&payload, cfg.max_task_run_time_s, task_expires).ok();
    let logs = parsed.as_ref().map(|p| p.logs.clone()).unwrap_or_default();
    let live_log = parsed.as_ref().map(|p| p.features.live_log).unwrap_or(true);
    let backing_log = parsed
        .as_ref()
        .map(|p| p.features.backing_log)
        .unwrap_or(true);

    let dir_name = format!("task_{task_id}_{run_id}");
    let log_path = cfg.tasks_dir.join(format!("{dir_name}.log"));
    let log = match TaskLog::create(&log_path) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot create the task log");
            finish_without_run(&shared, &client, &task_id, run_id, &done).await;
            return;
        }
    };
    // A task user only for a payload that will run: a malformed one is
    // reported without running anything.
    let task_user = match (&shared.users, &parsed) {
        (Some(users), Some(_)) => match users.create(&cfg.tasks_dir.join(&dir_name)).await {
            Ok(user) => Some(user),
            Err(e) => {
                tracing::error!(error = %e, "cannot create the task user");
                finish_without_run(&shared, &client, &task_id, run_id, &done).await;
                let _ = std::fs::remove_file(&log_path);
                return;
            }
        },
        _ => None,
    };
    let dir = match TaskDir::create_for(&cfg.tasks_dir, &dir_name, task_user.as_ref()) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot create the task directory");
            finish_without_run(&shared, &client, &task_id, run_id, &done).await;
            remove_task_user(&shared, task_user.as_ref()).await;
            let _ = std::fs::remove_file(&log_path);
            return;
        }
    };
    let proxy = match &parsed {
        Some(p) if p.features.taskcluster_proxy => {
            start_proxy(
                cfg,
                &client,
                &task,
                &task_id,
                run_id,
                task_user.as_ref(),
                &log,
            )
            .await
        }
        _ => None,
    };

    // The live log reference is posted while the task starts; it is awaited
    // before the log is uploaded and the reference replaced by a link.
    let mut live_token = None;
    let mut live_posting = None;
    if live_log {
        let (url, token) = shared.livelog.publish(log.clone());
        live_token = Some(token);
        let body = json!({
            "storageType": "reference",
            "expires": fmt_time(expires),
            "contentType": "text/plain; charset=utf-8",
            "url": url,
        });
        let client = client.clone();
        let (task_id, name) = (task_id.clone(), logs.live.clone());
        live_posting = Some(tokio::spawn(
            async move {
                if let Err(e) = create_artifact(&client, &task_id, run_id, &name, &body).await {
                    tracing::warn!(error = %e, "cannot create the live log artifact");
                }
            }
            .in_current_span(),
        ));
    }

    let ctx = TaskContext {
        task_id: task_id.clone(),
        run_id,
        task_group_id: task
            .get("taskGroupId")
            .and_then(Value::as_str)
            .unwrap_or(&task_id)
            .to_owned(),
        worker_group: cfg.worker_group.clone(),
        worker_id: cfg.worker_id.clone(),
        root_url: cfg.root_url.clone(),
        task_expires,
        max_run_time_cap: cfg.max_task_run_time_s,
        user: task_user.clone(),
        proxy_url: proxy.as_ref().map(|p| p.url().to_owned()),
    };
    let outcome = run_task(&ctx, &payload, &dir, &log, &abort).await;
    let process_ended_at = Instant::now();
    // The task's processes are gone: so goes its proxy.
    drop(proxy);
    let owner = task_user.as_ref().map(|u| u.uid);
    let mut resolution = outcome.resolution;
    if abort.reason() == Some(AbortReason::ClaimLost) {
        resolution = RunOutcome::ClaimLost;
    }
    tracing::info!(resolution = %resolution, "task finished");

    if resolution != RunOutcome::ClaimLost {
        let mut upload_failed = false;
        for artifact in &outcome.artifacts {
            let expires = artifact.expires.unwrap_or(expires);
            let res = match &artifact.content {
                ArtifactContent::File {
                    path,
                    content_type,
                    size,
                } => {
                    upload_file(
                        &shared,
                        &client,
                        &task_id,
                        run_id,
                        &artifact.name,
                        (path, owner),
                        content_type,
                        *size,
                        expires,
                    )
                    .await
                }
                ArtifactContent::Error { reason, message } => {
                    log.error_line(&format!("artifact {}: {message}", artifact.name));
                    let body = json!({
                        "storageType": "error",
                        "expires": fmt_time(expires),
                        "reason": reason,
                        "message": message,
                    });
                    create_artifact(&client, &task_id, run_id, &artifact.name, &body)
                        .await
                        .map(|_| ())
                }
            };
            if let Err(e) = res {
                if e.status() == Some(409) && abort.reason() == Some(AbortReason::ClaimLost) {
                    break;
                }
                tracing::warn!(artifact = %artifact.name, error = %e, "artifact upload failed");
                log.error_line(&format!("upload of artifact {} failed: {e}", artifact.name));
                upload_failed = true;
            }
        }
        if upload_failed && resolution == RunOutcome::Completed {
            resolution = RunOutcome::Exception(ExceptionReason::ResourceUnavailable);
            log.line(&format!(
                "Result changed to {resolution}: artifacts could not be uploaded"
            ));
        }
    }
    log.close();
    if let Some(posting) = live_posting {
        let _ = posting.await;
    }

    if resolution != RunOutcome::ClaimLost && abort.reason() != Some(AbortReason::ClaimLost) {
        upload_logs(
            &shared,
            &client,
            &task_id,
            run_id,
            &log,
            &logs,
            live_token.is_some(),
            backing_log,
            expires,
        )
        .await;
        report(&client, &task_id, run_id, resolution).await;
    } else {
        tracing::warn!("claim lost: task killed and forgotten, nothing reported");
        resolution = RunOutcome::ClaimLost;
    }
    let resolved_at = Instant::now();
    done.cancel();
    let _ = reclaimer.await;
    shared
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&(task_id.clone(), run_id));
    if let Some(token) = live_token {
        shared.livelog.unpublish(&token);
    }
    if let Err(e) = dir.remove() {
        tracing::warn!(error = %e, "cannot remove the task directory");
    }
    remove_task_user(&shared, task_user.as_ref()).await;
    drop(log);
    let _ = std::fs::remove_file(&log_path);
    let _ = shared.reports.send(TaskReport {
        task_id,
        run_id,
        resolution,
        claimed_at,
        process_started_at: outcome.first_spawn,
        process_ended_at,
        resolved_at,
    });
}

/// Starts the task's taskcluster proxy, signing with the claim's
/// credentials restricted to the task's scopes plus
/// `queue:create-artifact:<taskId>/<runId>` (as upstream). Problems are
/// written into the task log; the task then runs without a proxy.
async fn start_proxy(
    cfg: &WorkerConfig,
    client: &TaskClient,
    task: &Value,
    task_id: &str,
    run_id: u32,
    user: Option<&TaskUser>,
    log: &TaskLog,
) -> Option<TaskclusterProxy> {
    let Some(creds) = &client.credentials else {
        log.error_line(
            "features.taskclusterProxy: the claim carries no task credentials, so the task has no proxy",
        );
        return None;
    };
    let mut scopes: Vec<String> = task
        .get("scopes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    scopes.push(format!("queue:create-artifact:{task_id}/{run_id}"));
    match TaskclusterProxy::start(&cfg.root_url, creds.clone(), scopes, user.map(|u| u.uid)).await {
        Ok(proxy) => Some(proxy),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the taskcluster proxy");
            log.error_line(&format!("cannot start the taskcluster proxy: {e}"));
            None
        }
    }
}

/// Removes a task user (its processes, its leftovers, its account).
async fn remove_task_user(shared: &Shared, user: Option<&TaskUser>) {
    if let (Some(users), Some(user)) = (&shared.users, user)
        && let Err(e) = users.remove(user).await
    {
        tracing::warn!(user = %user.name, error = %e, "cannot remove the task user");
    }
}

/// The worker could not even prepare the task: report `internal-error`.
async fn finish_without_run(
    shared: &Shared,
    client: &TaskClient,
    task_id: &str,
    run_id: u32,
    done: &CancellationToken,
) {
    report(
        client,
        task_id,
        run_id,
        RunOutcome::Exception(ExceptionReason::InternalError),
    )
    .await;
    done.cancel();
    shared
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&(task_id.to_owned(), run_id));
}

async fn reclaim_loop(
    client: Arc<TaskClient>,
    task_id: String,
    run_id: u32,
    reclaim_before: Duration,
    abort: AbortSignal,
    done: CancellationToken,
    cfg: WorkerConfig,
) {
    let mut retry_in: Option<Duration> = None;
    loop {
        let remaining = (client.taken_until() - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        let delay = retry_in
            .take()
            .unwrap_or_else(|| reclaim_delay(remaining, reclaim_before));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = done.cancelled() => return,
        }
        let res = client
            .get()
            .reclaimTask(&task_id, &run_id.to_string())
            .await
            .map_err(|e| QueueCallError::from_client("reclaimTask", e));
        if done.is_cancelled() {
            return;
        }
        match res {
            Ok(v) => {
                client.update(&v, &cfg);
                tracing::debug!(taken_until = %client.taken_until(), "task reclaimed");
            }
            Err(e) if e.status() == Some(409) => {
                tracing::warn!(error = %e, "reclaim refused: task cancelled or claim expired; stopping it");
                abort.abort(AbortReason::ClaimLost);
                return;
            }
            Err(e) => {
                if Utc::now() >= client.taken_until() {
                    tracing::warn!(error = %e, "reclaim failed and the claim has expired; stopping the task");
                    abort.abort(AbortReason::ClaimLost);
                    return;
                }
                tracing::warn!(error = %e, "reclaim failed; retrying");
                let remaining = (client.taken_until() - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO);
                retry_in = Some(
                    (remaining / 4).clamp(Duration::from_millis(200), Duration::from_secs(30)),
                );
            }
        }
    }
}

async fn create_artifact(
    client: &TaskClient,
    task_id: &str,
    run_id: u32,
    name: &str,
    body: &Value,
) -> Result<Value, QueueCallError> {
    client
        .get()
        .createArtifact(task_id, &run_id.to_string(), name, body)
        .await
        .map_err(|e| QueueCallError::from_client("createArtifact", e))
}

/// Uploads a file through the queue's `s3` storage type: `createArtifact`
/// for a put URL, then a PUT of the content, retried on transient errors.
#[allow(clippy::too_many_arguments)]
async fn upload_file(
    shared: &Shared,
    client: &TaskClient,
    task_id: &str,
    run_id: u32,
    name: &str,
    (path, owner): (&std::path::Path, Option<u32>),
    content_type: &str,
    size: u64,
    expires: DateTime<Utc>,
) -> Result<(), QueueCallError> {
    let body = json!({
        "storageType": "s3",
        "expires": fmt_time(expires),
        "contentType": content_type,
        "contentLength": size,
    });
    let mut attempt: u32 = 0;
    loop {
        let res = create_artifact(client, task_id, run_id, name, &body).await?;
        if res.get("storageType").and_then(Value::as_str) != Some("s3") {
            return Err(QueueCallError::Other {
                call: "createArtifact",
                message: format!("unexpected storage type in response for {name}"),
            });
        }
        let Some(put_url) = res.get("putUrl").and_then(Value::as_str) else {
            return Err(QueueCallError::Other {
                call: "createArtifact",
                message: format!("no putUrl in response for {name}"),
            });
        };
        let err = match put(shared, put_url, (path, owner), content_type, size).await {
            Ok(()) => return Ok(()),
            Err(PutError::Permanent(e)) => return Err(e),
            Err(PutError::Transient(e)) => e,
        };
        attempt += 1;
        if attempt > shared.cfg.upload_retries {
            return Err(err);
        }
        let backoff = Duration::from_millis(250 * 2u64.pow(attempt.min(6)));
        tracing::warn!(artifact = name, attempt, error = %err, "artifact upload failed; retrying");
        tokio::time::sleep(backoff).await;
    }
}

enum PutError {
    Transient(QueueCallError),
    Permanent(QueueCallError),
}

async fn put(
    shared: &Shared,
    url: &str,
    (path, owner): (&std::path::Path, Option<u32>),
    content_type: &str,
    size: u64,
) -> Result<(), PutError> {
    let other = |message: String| QueueCallError::Other {
        call: "artifact PUT",
        message,
    };
    let file = open_artifact(path, owner)
        .map(|(file, _)| tokio::fs::File::from_std(file))
        .map_err(|e| PutError::Permanent(other(format!("cannot open {}: {e}", path.display()))))?;
    let body = reqwest_tc::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    let resp = shared
        .http
        .put(url)
        .header(reqwest_tc::header::CONTENT_TYPE, content_type)
        .header(reqwest_tc::header::CONTENT_LENGTH, size)
        .body(body)
        .send()
        .await
        .map_err(|e| PutError::Transient(other(e.without_url().to_string())))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    let err = QueueCallError::Status {
        call: "artifact PUT",
        status: status.as_u16(),
        message: text.chars().take(500).collect(),
    };
    if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
        Err(PutError::Transient(err))
    } else {
        Err(PutError::Permanent(err))
    }
}

#[allow(clippy::too_many_arguments)]
async fn upload_logs(
    shared: &Shared,
    client: &TaskClient,
    task_id: &str,
    run_id: u32,
    log: &TaskLog,
    logs: &Logs,
    live_posted: bool,
    backing_log: bool,
    expires: DateTime<Utc>,
) {
    if !backing_log {
        return;
    }
    let uploaded = upload_file(
        shared,
        client,
        task_id,
        run_id,
        &logs.backing,
        (log.path(), None),
        "text/plain; charset=utf-8",
        log.len(),
        expires,
    )
    .await;
    if let Err(e) = uploaded {
        tracing::error!(error = %e, "cannot upload the backing log");
        return;
    }
    if live_posted {
        let body = json!({
            "storageType": "link",
            "expires": fmt_time(expires),
            "artifact": logs.backing,
        });
        if let Err(e) = create_artifact(client, task_id, run_id, &logs.live, &body).await {
            tracing::warn!(error = %e, "cannot replace the live log with a link to the backing log");
        }
    }
}

async fn report(client: &TaskClient, task_id: &str, run_id: u32, resolution: RunOutcome) {
    let run = run_id.to_string();
    let q = client.get();
    let res = match resolution {
        RunOutcome::Completed => q
            .reportCompleted(task_id, &run)
            .await
            .map_err(|e| QueueCallError::from_client("reportCompleted", e)),
        RunOutcome::Failed => q
            .reportFailed(task_id, &run)
            .await
            .map_err(|e| QueueCallError::from_client("reportFailed", e)),
        RunOutcome::Exception(reason) => q
            .reportException(task_id, &run, &json!({"reason": reason.as_str()}))
            .await
            .map_err(|e| QueueCallError::from_client("reportException", e)),
        RunOutcome::ClaimLost => return,
    };
    match res {
        Ok(_) => tracing::info!(resolution = %resolution, "run resolved"),
        Err(e) => tracing::error!(resolution = %resolution, error = %e, "cannot resolve the run"),
    }
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reclaim_timing() {
        let m = |s| Duration::from_secs(s);
        assert_eq!(reclaim_delay(m(1200), m(180)), m(1020));
        assert_eq!(reclaim_delay(m(300), m(180)), m(150));
        assert_eq!(reclaim_delay(m(4), m(180)), m(2));
        assert_eq!(reclaim_delay(m(0), m(180)), m(0));
    }
}
