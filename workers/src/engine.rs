//! The process engine: runs one task payload in a directory, writes the
//! task log and lists the artifacts to upload. It knows nothing about the
//! queue, so it can be used and tested on its own.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::livelog::TaskLog;
use crate::payload::{ArtifactDecl, ArtifactKind, Payload, guess_content_type};
use crate::users::{TaskUser, current_user_name, kill_user_processes};

/// What a task run is about: identity and limits that come from the claim
/// and the worker, not from the payload.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// Task id.
    pub task_id: String,
    /// Run id.
    pub run_id: u32,
    /// Task group id (exported as `TASK_GROUP_ID`).
    pub task_group_id: String,
    /// Worker group (for the log header).
    pub worker_group: String,
    /// Worker id (for the log header).
    pub worker_id: String,
    /// Root URL of the deployment (exported as `TASKCLUSTER_ROOT_URL`).
    pub root_url: String,
    /// The task's `expires`: default and upper bound of artifact expiry.
    pub task_expires: Option<DateTime<Utc>>,
    /// Upper bound of the payload's `maxRunTime`, in seconds.
    pub max_run_time_cap: u64,
    /// The OS user the commands run as; `None`: the worker's own user (the
    /// log then warns that the task has the worker's rights).
    pub user: Option<TaskUser>,
    /// URL of the task's taskcluster proxy (exported as
    /// `TASKCLUSTER_PROXY_URL`), when it has one.
    pub proxy_url: Option<String>,
}

/// Why a running task is stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// The claim was lost (reclaim answered 409: cancelled, deadline or
    /// claim expired). Nothing is reported.
    ClaimLost,
    /// The worker is shutting down; the run resolves
    /// `exception/worker-shutdown`.
    WorkerShutdown,
}

/// A handle to stop a running task, remembering the first reason given.
#[derive(Debug, Clone, Default)]
pub struct AbortSignal {
    token: CancellationToken,
    reason: Arc<OnceLock<AbortReason>>,
}

impl AbortSignal {
    /// A signal that has not fired.
    pub fn new() -> AbortSignal {
        AbortSignal::default()
    }

    /// Stops the task; the first reason wins.
    pub fn abort(&self, reason: AbortReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// The reason, once aborted.
    pub fn reason(&self) -> Option<AbortReason> {
        self.reason.get().copied()
    }

    /// Waits until aborted.
    pub async fn aborted(&self) -> AbortReason {
        self.token.cancelled().await;
        self.reason().unwrap_or(AbortReason::WorkerShutdown)
    }
}

/// `reportException` reasons a worker may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionReason {
    /// The payload is invalid; never retried.
    MalformedPayload,
    /// The task asked to be retried (`onExitStatus.retry`).
    IntermittentTask,
    /// The worker stopped; retried by the queue.
    WorkerShutdown,
    /// A resource (e.g. artifact storage) stayed unavailable.
    ResourceUnavailable,
    /// A bug or unexpected condition in the worker.
    InternalError,
}

impl ExceptionReason {
    /// The wire name of the reason.
    pub fn as_str(self) -> &'static str {
        match self {
            ExceptionReason::MalformedPayload => "malformed-payload",
            ExceptionReason::IntermittentTask => "intermittent-task",
            ExceptionReason::WorkerShutdown => "worker-shutdown",
            ExceptionReason::ResourceUnavailable => "resource-unavailable",
            ExceptionReason::InternalError => "internal-error",
        }
    }
}

/// How a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// All commands exited 0: `reportCompleted`.
    Completed,
    /// A command failed or `maxRunTime` was exceeded: `reportFailed`.
    Failed,
    /// `reportException` with the reason.
    Exception(ExceptionReason),
    /// The claim was lost: report nothing, upload nothing.
    ClaimLost,
}

impl std::fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunOutcome::Completed => f.write_str("completed"),
            RunOutcome::Failed => f.write_str("failed"),
            RunOutcome::Exception(r) => write!(f, "exception/{}", r.as_str()),
            RunOutcome::ClaimLost => f.write_str("claim lost"),
        }
    }
}

/// An artifact to upload, produced from the payload's declarations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Artifact name.
    pub name: String,
    /// Expiry (`None`: the task's expiry, decided by the queue).
    pub expires: Option<DateTime<Utc>>,
    /// What to upload.
    pub content: ArtifactContent,
}

/// Content of an [`Artifact`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactContent {
    /// A file to upload.
    File {
        /// The file on disk.
        path: PathBuf,
        /// Its content type.
        content_type: String,
        /// Its size in bytes.
        size: u64,
    },
    /// An `error` artifact.
    Error {
        /// `file-missing-on-worker`, `invalid-resource-on-worker`, …
        reason: &'static str,
        /// Human-readable explanation.
        message: String,
    },
}

/// The result of [`run_task`].
#[derive(Debug, Clone)]
pub struct TaskOutcome {
    /// How to resolve the run.
    pub resolution: RunOutcome,
    /// Exit code of the last command run, if it exited normally.
    pub exit_code: Option<i32>,
    /// Artifacts declared by the payload, resolved against the directory.
    pub artifacts: Vec<Artifact>,
    /// The parsed payload, when it was valid.
    pub payload: Option<Payload>,
    /// Time from start to end of the commands.
    pub duration: Duration,
    /// When the first command was started (`None` if none was).
    pub first_spawn: Option<Instant>,
}

/// A fresh, private directory for one task, removed by [`TaskDir::remove`]
/// or when dropped.
#[derive(Debug)]
pub struct TaskDir {
    path: PathBuf,
    removed: bool,
}

impl TaskDir {
    /// Creates `base/name`, removing whatever was there before.
    pub fn create(base: &Path, name: &str) -> std::io::Result<TaskDir> {
        TaskDir::create_for(base, name, None)
    }

    /// Creates `base/name` (removing whatever was there before) with mode
    /// 0700, owned by `user` when given: only that user (and root) can
    /// enter it.
    pub fn create_for(
        base: &Path,
        name: &str,
        user: Option<&TaskUser>,
    ) -> std::io::Result<TaskDir> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let path = base.join(name);
        if std::fs::symlink_metadata(&path).is_ok() {
            remove_tree(&path)?;
        }
        std::fs::create_dir_all(base)?;
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        let dir = TaskDir {
            path,
            removed: false,
        };
        if let Some(user) = user {
            std::os::unix::fs::chown(&dir.path, Some(user.uid), Some(user.gid))?;
        }
        std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o700))?;
        Ok(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory and everything in it.
    pub fn remove(mut self) -> std::io::Result<()> {
        self.removed = true;
        remove_tree(&self.path)
    }
}

impl Drop for TaskDir {
    fn drop(&mut self) {
        if !self.removed
            && let Err(e) = remove_tree(&self.path)
        {
            tracing::warn!(dir = %self.path.display(), error = %e, "cannot remove task directory");
        }
    }
}

/// Removes a tree, first making directories writable if the task made them
/// read-only.
fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_writable(path);
            match std::fs::remove_dir_all(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        }
    }
}

fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let mut perms = meta.permissions();
        perms.set_mode(perms.mode() | 0o700);
        let _ = std::fs::set_permissions(path, perms);
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.flatten() {
                make_writable(&entry.path());
            }
        }
    }
}

/// Runs a task: validates the payload, runs its commands in `dir` with
/// their output in `log`, and lists its artifacts. Never panics on bad
/// input: an invalid payload gives `exception/malformed-payload` with the
/// reason in the log.
pub async fn run_task(
    ctx: &TaskContext,
    payload: &Value,
    dir: &TaskDir,
    log: &TaskLog,
    abort: &AbortSignal,
) -> TaskOutcome {
    let started = Instant::now();
    let started_at = Utc::now();
    log.line(&format!("Worker Group: {}", ctx.worker_group));
    log.line(&format!("Worker ID: {}", ctx.worker_id));
    log.line(&format!("Task ID: {}", ctx.task_id));
    log.line(&format!("Run ID: {}", ctx.run_id));
    log.line(&format!(
        "Task started at {}",
        started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    ));

    let parsed = match Payload::parse(payload, ctx.max_run_time_cap, ctx.task_expires) {
        Ok(p) => p,
        Err(e) => {
            log.error_line(&format!("malformed payload: {e}"));
            let outcome = TaskOutcome {
                resolution: RunOutcome::Exception(ExceptionReason::MalformedPayload),
                exit_code: None,
                artifacts: Vec::new(),
                payload: None,
                duration: started.elapsed(),
                first_spawn: None,
            };
            footer(log, &outcome);
            return outcome;
        }
    };

    match &ctx.user {
        Some(user) => log.line(&format!(
            "Running as task user {} (uid {})",
            user.name, user.uid
        )),
        None => log.warning_line(&format!(
            "This task runs as the worker's own user ({}): it has the worker's rights and can read its credentials and files",
            current_user_name()
        )),
    }
    if let Some(url) = &ctx.proxy_url {
        log.line(&format!("Taskcluster proxy running at {url}"));
    }
    let env = task_env(ctx, dir.path(), &parsed.env);
    let deadline = started + Duration::from_secs(parsed.max_run_time);
    let mut resolution = RunOutcome::Completed;
    let mut exit_code = None;
    let mut first_spawn = None;
    for (i, argv) in parsed.command.iter().enumerate() {
        log.line(&format!("Executing command {i}: {}", shell_join(argv)));
        let end = run_command(
            argv,
            &env,
            dir.path(),
            ctx.user.as_ref(),
            log,
            deadline,
            abort,
            &mut first_spawn,
        )
        .await;
        match end {
            CommandEnd::Exited(status) => {
                exit_code = status.code();
                match status.code() {
                    Some(0) => {
                        log.line("Exit Code: 0");
                        continue;
                    }
                    Some(code) => {
                        log.line(&format!("Exit Code: {code}"));
                        if parsed.on_exit_status.retry.contains(&i64::from(code)) {
                            log.error_line(&format!(
                                "Exit code {code} is listed in onExitStatus.retry: resolving exception/intermittent-task"
                            ));
                            resolution = RunOutcome::Exception(ExceptionReason::IntermittentTask);
                        } else {
                            resolution = RunOutcome::Failed;
                        }
                    }
                    None => {
                        use std::os::unix::process::ExitStatusExt;
                        let sig = status.signal().unwrap_or(0);
                        log.line(&format!("Command killed by signal {sig}"));
                        resolution = RunOutcome::Failed;
                    }
                }
                break;
            }
            CommandEnd::SpawnFailed(e) => {
                log.error_line(&format!("cannot start command {i} ({}): {e}", argv[0]));
                resolution = RunOutcome::Failed;
                break;
            }
            CommandEnd::TimedOut => {
                log.error_line(&format!(
                    "Aborting task - max run time exceeded! ({} seconds); the process group was killed",
                    parsed.max_run_time
                ));
                resolution = RunOutcome::Failed;
                break;
            }
            CommandEnd::Aborted(AbortReason::WorkerShutdown) => {
                log.error_line("Aborting task - worker shutdown; the process group was killed");
                resolution = RunOutcome::Exception(ExceptionReason::WorkerShutdown);
                break;
            }
            CommandEnd::Aborted(AbortReason::ClaimLost) => {
                log.error_line(
                    "Aborting task - the claim was lost (task cancelled or claim expired); the process group was killed",
                );
                resolution = RunOutcome::ClaimLost;
                break;
            }
        }
    }
    let duration = started.elapsed();
    if let Some(user) = &ctx.user {
        // Whatever the task started in other process groups goes now, before
        // its files are read.
        let uid = user.uid;
        let _ = tokio::task::spawn_blocking(move || kill_user_processes(uid)).await;
    }

    let artifacts = match resolution {
        RunOutcome::ClaimLost => Vec::new(),
        _ => collect_artifacts(ctx, dir.path(), &parsed.artifacts),
    };
    let outcome = TaskOutcome {
        resolution,
        exit_code,
        artifacts,
        payload: Some(parsed),
        duration,
        first_spawn,
    };
    footer(log, &outcome);
    outcome
}

fn footer(log: &TaskLog, outcome: &TaskOutcome) {
    log.line("=== Task Finished ===");
    if let Some(code) = outcome.exit_code {
        log.line(&format!("Exit Code: {code}"));
    }
    log.line(&format!("Result: {}", outcome.resolution));
    log.line(&format!(
        "Task Duration: {:.3}s",
        outcome.duration.as_secs_f64()
    ));
}

fn task_env(
    ctx: &TaskContext,
    dir: &Path,
    payload_env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    // Built from scratch: nothing of the worker's environment but these.
    let mut env = BTreeMap::new();
    for name in ["LANG", "LC_ALL", "TZ"] {
        if let Ok(v) = std::env::var(name) {
            env.insert(name.to_owned(), v);
        }
    }
    let path = std::env::var("PATH")
        .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    env.insert("PATH".into(), path);
    let user = match &ctx.user {
        Some(u) => u.name.clone(),
        None => current_user_name(),
    };
    env.insert("USER".into(), user.clone());
    env.insert("LOGNAME".into(), user);
    env.insert("SHELL".into(), "/bin/sh".into());
    let dir = dir.display().to_string();
    env.insert("HOME".into(), dir.clone());
    // The payload may override the above, not what follows.
    for (k, v) in payload_env {
        env.insert(k.clone(), v.clone());
    }
    env.insert("TASK_WORKDIR".into(), dir);
    env.insert("TASK_ID".into(), ctx.task_id.clone());
    env.insert("RUN_ID".into(), ctx.run_id.to_string());
    env.insert("TASK_GROUP_ID".into(), ctx.task_group_id.clone());
    env.insert("TASKCLUSTER_ROOT_URL".into(), ctx.root_url.clone());
    match &ctx.proxy_url {
        Some(url) => {
            env.insert("TASKCLUSTER_PROXY_URL".into(), url.clone());
        }
        None => {
            env.remove("TASKCLUSTER_PROXY_URL");
        }
    }
    env
}

enum CommandEnd {
    Exited(ExitStatus),
    SpawnFailed(std::io::Error),
    TimedOut,
    Aborted(AbortReason),
}

#[allow(clippy::too_many_arguments)]
async fn run_command(
    argv: &[String],
    env: &BTreeMap<String, String>,
    dir: &Path,
    user: Option<&TaskUser>,
    log: &TaskLog,
    deadline: Instant,
    abort: &AbortSignal,
    first_spawn: &mut Option<Instant>,
) -> CommandEnd {
    if let Some(reason) = abort.reason() {
        return CommandEnd::Aborted(reason);
    }
    let (reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return CommandEnd::SpawnFailed(e),
    };
    let spawned = {
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .current_dir(dir)
            .env_clear()
            .envs(env)
            .stdin(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(user) = user {
            // Supplementary groups are dropped too when the uid changes.
            cmd.uid(user.uid).gid(user.gid);
        }
        match writer.try_clone() {
            Ok(w2) => {
                cmd.stdout(w2).stderr(writer);
                cmd.spawn()
            }
            Err(e) => Err(e),
        }
        // `cmd` (and its copies of the pipe's write end) is dropped here, so
        // the pipe reaches end-of-file once the task's processes are gone.
    };
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return CommandEnd::SpawnFailed(e),
    };
    first_spawn.get_or_insert_with(Instant::now);
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let mut rx = match tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader)) {
        Ok(rx) => Some(rx),
        Err(e) => {
            log.error_line(&format!("cannot read command output: {e}"));
            None
        }
    };
    let pump = async {
        let Some(rx) = rx.as_mut() else {
            return;
        };
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => log.write(&buf[..n]),
            }
        }
    };
    tokio::pin!(pump);
    let mut pump_done = false;
    let end = loop {
        tokio::select! {
            () = &mut pump, if !pump_done => pump_done = true,
            status = child.wait() => break match status {
                Ok(s) => CommandEnd::Exited(s),
                Err(e) => CommandEnd::SpawnFailed(e),
            },
            () = tokio::time::sleep_until(deadline.into()) => {
                kill_group(pgid);
                let _ = child.wait().await;
                break CommandEnd::TimedOut;
            }
            reason = abort.aborted() => {
                kill_group(pgid);
                let _ = child.wait().await;
                break CommandEnd::Aborted(reason);
            }
        }
    };
    // Whatever the command left running in its process group goes too;
    // then the rest of the output is read.
    kill_group(pgid);
    if !pump_done
        && tokio::time::timeout(Duration::from_secs(5), &mut pump)
            .await
            .is_err()
    {
        log.error_line("output pipe still open 5 s after the command ended; stopped reading it");
    }
    end
}

fn kill_group(pgid: Option<Pid>) {
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
}

/// Quotes an argument list for display in the log.
fn shell_join(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn collect_artifacts(ctx: &TaskContext, dir: &Path, decls: &[ArtifactDecl]) -> Vec<Artifact> {
    let owner = ctx.user.as_ref().map(|u| u.uid);
    let mut out = Vec::new();
    for decl in decls {
        let name = decl.name().to_owned();
        let expires = decl.expires.or(ctx.task_expires);
        let path = dir.join(&decl.path);
        let error = |name: &str, reason: &'static str, message: String| Artifact {
            name: name.to_owned(),
            expires,
            content: ArtifactContent::Error { reason, message },
        };
        let content_type = |file_name: &str| {
            decl.content_type
                .clone()
                .unwrap_or_else(|| guess_content_type(file_name).to_owned())
        };
        let meta = std::fs::metadata(&path);
        match (decl.kind, meta) {
            (_, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                if !decl.optional {
                    out.push(error(
                        &name,
                        "file-missing-on-worker",
                        format!(
                            "{} {:?} was not found in the task directory",
                            kind_word(decl.kind),
                            decl.path
                        ),
                    ));
                }
            }
            (_, Err(e)) => out.push(error(
                &name,
                "file-not-readable-on-worker",
                format!("cannot read {:?}: {e}", decl.path),
            )),
            (ArtifactKind::File, Ok(m)) if m.is_file() => match open_artifact(&path, owner) {
                Ok((_, size)) => out.push(Artifact {
                    name: name.clone(),
                    expires,
                    content: ArtifactContent::File {
                        content_type: content_type(&decl.path),
                        path,
                        size,
                    },
                }),
                Err(e) => out.push(error(
                    &name,
                    "file-not-readable-on-worker",
                    format!("cannot read {:?}: {e}", decl.path),
                )),
            },
            (ArtifactKind::File, Ok(_)) => out.push(error(
                &name,
                "invalid-resource-on-worker",
                format!("{:?} is not a regular file", decl.path),
            )),
            (ArtifactKind::Directory, Ok(m)) if m.is_dir() => {
                if let Some(uid) = owner.filter(|uid| m.uid() != *uid) {
                    out.push(error(
                        &name,
                        "file-not-readable-on-worker",
                        format!(
                            "cannot read {:?}: it belongs to uid {}, not to the task user (uid {uid})",
                            decl.path,
                            m.uid()
                        ),
                    ));
                    continue;
                }
                let mut files = Vec::new();
                walk(&path, owner, &mut files);
                files.sort();
                for file in files {
                    let Ok(rel) = file.strip_prefix(&path) else {
                        continue;
                    };
                    let rel = rel.to_string_lossy().into_owned();
                    let file_name = format!("{}/{rel}", name.trim_end_matches('/'));
                    match open_artifact(&file, owner) {
                        Ok((_, size)) => out.push(Artifact {
                            name: file_name,
                            expires,
                            content: ArtifactContent::File {
                                content_type: content_type(&rel),
                                path: file,
                                size,
                            },
                        }),
                        Err(e) => out.push(error(
                            &file_name,
                            "file-not-readable-on-worker",
                            format!("cannot read {rel:?} in {:?}: {e}", decl.path),
                        )),
                    }
                }
            }
            (ArtifactKind::Directory, Ok(_)) => out.push(error(
                &name,
                "invalid-resource-on-worker",
                format!("{:?} is not a directory", decl.path),
            )),
        }
    }
    out
}

/// Opens an artifact file for reading. With `owner`, the file (after
/// following links) must be a regular file belonging to that uid: the worker
/// reads with its own rights, so it uploads only what the task user owns,
/// never a file a task linked to from outside its reach.
pub fn open_artifact(path: &Path, owner: Option<u32>) -> std::io::Result<(std::fs::File, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    let check = |meta: &std::fs::Metadata| -> std::io::Result<()> {
        if !meta.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        match owner {
            Some(uid) if meta.uid() != uid => Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "it belongs to uid {}, not to the task user (uid {uid})",
                    meta.uid()
                ),
            )),
            _ => Ok(()),
        }
    };
    // Checked before opening (opening a device can have effects) and again
    // on what was opened.
    check(&std::fs::metadata(path)?)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    check(&meta)?;
    Ok((file, meta.len()))
}

fn kind_word(kind: ArtifactKind) -> &'static str {
    match kind {
        ArtifactKind::File => "file",
        ArtifactKind::Directory => "directory",
    }
}

/// Lists the regular files below `dir` (links to files included), not
/// following links to directories; with `owner`, directories of another
/// user are not entered.
fn walk(dir: &Path, owner: Option<u32>, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() && is_dir && owner.is_none_or(|uid| m.uid() == uid) => {
                walk(&path, owner, files);
            }
            Ok(m) if m.is_file() => files.push(path),
            _ => {}
        }
    }
}
