//! Task users: each task's commands run as an unprivileged OS user of its
//! own, created before the task runs and removed after it, so a task cannot
//! read the worker's credentials, its configuration or another task's files.
//!
//! Users are made with `useradd` and removed with `userdel`, which needs the
//! worker to run as root. Where it cannot (not root, or no `useradd`), tasks
//! run with the worker's own rights and the worker says so at start and in
//! every task log.

use std::fmt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User};
use serde::{Deserialize, Serialize};

/// Who a task's commands run as (`run_tasks_as` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunTasksAs {
    /// A fresh unprivileged OS user per task, removed after the task. Needs
    /// root and `useradd`/`userdel`.
    TaskUser,
    /// The worker's own OS user: tasks have the worker's rights, so they can
    /// read its credentials and files.
    CurrentUser,
}

impl RunTasksAs {
    /// The configuration value, `task-user` or `current-user`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunTasksAs::TaskUser => "task-user",
            RunTasksAs::CurrentUser => "current-user",
        }
    }
}

impl fmt::Display for RunTasksAs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunTasksAs {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "task-user" => Ok(RunTasksAs::TaskUser),
            "current-user" => Ok(RunTasksAs::CurrentUser),
            other => Err(format!(
                "{other:?} is neither \"task-user\" nor \"current-user\""
            )),
        }
    }
}

/// How a worker runs its tasks, decided once at start ([`decide`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAsDecision {
    /// The mode in effect.
    pub mode: RunTasksAs,
    /// Why tasks run with the worker's rights, when they do: logged as a
    /// warning at start and written into every task log.
    pub warning: Option<String>,
}

/// Decides how tasks run: `configured` when given (an error if
/// `task-user` is impossible here), otherwise `task-user` when the worker
/// runs as root and `useradd`/`userdel` exist, `current-user` (with a
/// warning saying why) when not.
pub fn decide(configured: Option<RunTasksAs>) -> Result<RunAsDecision, String> {
    let root = nix::unistd::geteuid().is_root();
    let tools = Tools::find();
    let current = current_user_name();
    let why_not = if !root {
        Some(format!(
            "the worker runs as {current}, not root, so it cannot switch users"
        ))
    } else {
        tools.as_ref().err().cloned()
    };
    match (configured, why_not) {
        (Some(RunTasksAs::TaskUser), Some(why)) => {
            Err(format!("run_tasks_as = \"task-user\" is impossible: {why}"))
        }
        (Some(RunTasksAs::TaskUser), None) | (None, None) => Ok(RunAsDecision {
            mode: RunTasksAs::TaskUser,
            warning: None,
        }),
        (Some(RunTasksAs::CurrentUser), _) => Ok(RunAsDecision {
            mode: RunTasksAs::CurrentUser,
            warning: Some(format!(
                "tasks run as the worker's own user ({current}, run_tasks_as = \"current-user\"): \
                 they have the worker's rights and can read its credentials and files"
            )),
        }),
        (None, Some(why)) => Ok(RunAsDecision {
            mode: RunTasksAs::CurrentUser,
            warning: Some(format!(
                "tasks run as the worker's own user ({current}): {why}; \
                 they have the worker's rights and can read its credentials and files"
            )),
        }),
    }
}

/// The name of the user this process runs as (its uid when it has no name).
pub fn current_user_name() -> String {
    let uid = nix::unistd::geteuid();
    match User::from_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => format!("uid {uid}"),
    }
}

/// An OS user a task's commands run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskUser {
    /// User name, `task_<12 hex digits>`.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary group (a group of its own).
    pub gid: u32,
}

/// Paths of the account tools.
#[derive(Debug, Clone)]
struct Tools {
    useradd: PathBuf,
    userdel: PathBuf,
}

impl Tools {
    fn find() -> Result<Tools, String> {
        let find = |name: &str| -> Result<PathBuf, String> {
            ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .map(|d| Path::new(d).join(name))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    format!("{name} was not found in /usr/sbin, /sbin, /usr/bin or /bin")
                })
        };
        Ok(Tools {
            useradd: find("useradd")?,
            userdel: find("userdel")?,
        })
    }
}

/// Creates and removes the task users of one worker.
#[derive(Debug)]
pub struct TaskUsers {
    tools: Tools,
    marker: String,
    /// `useradd`/`userdel` lock the account files; one at a time per worker
    /// (other processes are waited for by retrying).
    serial: tokio::sync::Mutex<()>,
}

/// Exit statuses of `useradd`/`userdel` that mean "try again".
const USERADD_NAME_IN_USE: i32 = 9;
const ACCOUNT_FILES_LOCKED: [i32; 2] = [1, 10];
const USERDEL_NO_SUCH_USER: i32 = 6;
const USERDEL_USER_BUSY: i32 = 8;

impl TaskUsers {
    /// A manager for the task users of the worker `worker` (e.g.
    /// `group/id on provisioner/type`): the text is stored in each user's
    /// comment field so that [`TaskUsers::remove_stale`] can find the users
    /// a previous run of the same worker left behind.
    pub fn new(worker: &str) -> Result<TaskUsers, String> {
        let clean: String = worker
            .chars()
            .map(|c| {
                if matches!(c, ':' | ',' | '\n' | '=') {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        Ok(TaskUsers {
            tools: Tools::find()?,
            marker: format!("bbb task user of {clean}"),
            serial: tokio::sync::Mutex::new(()),
        })
    }

    /// Creates a fresh user whose home is `home` (not created here), with a
    /// group of its own and no password.
    pub async fn create(&self, home: &Path) -> Result<TaskUser, String> {
        let _serial = self.serial.lock().await;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let name = format!("task_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            let out = account_tool(&self.tools.useradd)
                .arg("--no-create-home")
                .arg("--home-dir")
                .arg(home)
                .args(["--shell", "/bin/sh", "--user-group", "--no-log-init"])
                .args(["--comment", &self.marker])
                .arg(&name)
                .output()
                .await
                .map_err(|e| format!("cannot run useradd: {e}"))?;
            match out.status.code() {
                Some(0) => {}
                Some(code)
                    if attempt < 40
                        && (code == USERADD_NAME_IN_USE
                            || ACCOUNT_FILES_LOCKED.contains(&code)) =>
                {
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                _ => return Err(format!("useradd {name} failed: {}", tool_error(&out))),
            }
            return match User::from_name(&name) {
                Ok(Some(u)) if u.uid.is_root() => Err(format!("{name} was given uid 0")),
                Ok(Some(u)) => Ok(TaskUser {
                    name,
                    uid: u.uid.as_raw(),
                    gid: u.gid.as_raw(),
                }),
                Ok(None) => Err(format!("useradd made {name}, but it cannot be looked up")),
                Err(e) => Err(format!("cannot look up {name}: {e}")),
            };
        }
    }

    /// Removes a task user: kills whatever it still runs, deletes what it
    /// left at the top of the shared temporary directories (`/tmp`,
    /// `/var/tmp`, `/dev/shm`), then deletes the account and its group.
    pub async fn remove(&self, user: &TaskUser) -> Result<(), String> {
        let uid = user.uid;
        tokio::task::spawn_blocking(move || {
            kill_user_processes(uid);
            remove_leftovers(uid);
        })
        .await
        .map_err(|e| format!("cleaning up after {}: {e}", user.name))?;
        let _serial = self.serial.lock().await;
        let mut attempt = 0u32;
        let mut force = false;
        loop {
            attempt += 1;
            let mut cmd = account_tool(&self.tools.userdel);
            if force {
                cmd.arg("--force");
            }
            let out = cmd
                .arg(&user.name)
                .output()
                .await
                .map_err(|e| format!("cannot run userdel: {e}"))?;
            match out.status.code() {
                Some(0) | Some(USERDEL_NO_SUCH_USER) => return Ok(()),
                Some(USERDEL_USER_BUSY) if attempt < 5 => {
                    // A process escaped the kill (or is a zombie nobody
                    // reaps): kill again, then insist.
                    tokio::task::spawn_blocking(move || kill_user_processes(uid))
                        .await
                        .ok();
                    force = attempt >= 2;
                }
                Some(code) if attempt < 40 && ACCOUNT_FILES_LOCKED.contains(&code) => {}
                _ => {
                    return Err(format!(
                        "userdel {} failed: {}",
                        user.name,
                        tool_error(&out)
                    ));
                }
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// Removes the users a previous run of this worker left (after a crash):
    /// those whose comment field names this worker. Returns how many.
    pub async fn remove_stale(&self) -> usize {
        let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let stale: Vec<TaskUser> = text
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() >= 7 && f[4] == self.marker && f[0].starts_with("task_")).then(|| {
                    TaskUser {
                        name: f[0].to_owned(),
                        uid: f[2].parse().unwrap_or(u32::MAX),
                        gid: f[3].parse().unwrap_or(u32::MAX),
                    }
                })
            })
            .filter(|u| u.uid != u32::MAX && u.uid != 0)
            .collect();
        let mut removed = 0;
        for user in &stale {
            match self.remove(user).await {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(user = %user.name, error = %e, "cannot remove a stale task user")
                }
            }
        }
        removed
    }
}

fn account_tool(path: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(path);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null());
    cmd
}

fn tool_error(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr);
    format!("{} ({})", text.trim(), out.status)
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(25 * u64::from(attempt.min(20)))
}

/// Kills (SIGKILL) every live process whose real, effective or saved uid is
/// `uid`, repeating until none is left (processes may fork meanwhile).
/// Returns whether none is left. Never touches root's processes (uid 0).
pub fn kill_user_processes(uid: u32) -> bool {
    if uid == 0 {
        return false;
    }
    for _ in 0..100 {
        let pids = user_processes(uid);
        if pids.is_empty() {
            return true;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    user_processes(uid).is_empty()
}

/// Live (not zombie) processes with `uid` as real, effective or saved uid.
fn user_processes(uid: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let mut zombie = false;
        let mut matches = false;
        for line in status.lines() {
            if let Some(state) = line.strip_prefix("State:") {
                zombie = state.trim_start().starts_with('Z');
            } else if let Some(ids) = line.strip_prefix("Uid:") {
                matches = ids
                    .split_whitespace()
                    .take(3)
                    .any(|id| id.parse::<u32>() == Ok(uid));
            }
        }
        if matches && !zombie {
            pids.push(pid);
        }
    }
    pids
}

/// Deletes the entries owned by `uid` at the top of the shared temporary
/// directories, without following symbolic links. Never root's (uid 0).
fn remove_leftovers(uid: u32) {
    if uid == 0 {
        return;
    }
    let mut dirs = vec![
        PathBuf::from("/tmp"),
        PathBuf::from("/var/tmp"),
        PathBuf::from("/dev/shm"),
    ];
    let tmp = std::env::temp_dir();
    if !dirs.contains(&tmp) {
        dirs.push(tmp);
    }
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.uid() != uid {
                continue;
            }
            let removed = if meta.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if let Err(e) = removed {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a task user's leftover");
            }
        }
    }
}

/// Checks that other users can reach `dir`: every directory above it must
/// be searchable by others (the `x` bit for others), or task users cannot
/// enter their task directories below it.
pub fn reachable_by_others(dir: &Path) -> Result<(), String> {
    let dir = std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for ancestor in dir.ancestors().skip(1) {
        let meta =
            std::fs::metadata(ancestor).map_err(|e| format!("{}: {e}", ancestor.display()))?;
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            return Err(format!(
                "{} (mode {:o}) cannot be searched by other users, so task users cannot reach {}",
                ancestor.display(),
                mode & 0o7777,
                dir.display()
            ));
        }
    }
    Ok(())
}

/// Prepares the directory that holds the task directories when tasks run
/// as task users: created if missing, it must be a directory (not a link)
/// owned by the worker, reachable by others ([`reachable_by_others`]); its
/// mode becomes 0711, so task users can enter their own directory but not
/// list the others.
pub fn prepare_tasks_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "{} belongs to uid {}, not to the worker (uid {me})",
            dir.display(),
            meta.uid()
        ));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
        .map_err(|e| format!("cannot set the mode of {}: {e}", dir.display()))?;
    reachable_by_others(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_tasks_as_values() {
        assert_eq!("task-user".parse(), Ok(RunTasksAs::TaskUser));
        assert_eq!(" current-user".parse(), Ok(RunTasksAs::CurrentUser));
        assert!(
            "root"
                .parse::<RunTasksAs>()
                .unwrap_err()
                .contains("\"root\"")
        );
        assert_eq!(RunTasksAs::TaskUser.to_string(), "task-user");
        let d = decide(Some(RunTasksAs::CurrentUser)).unwrap();
        assert_eq!(d.mode, RunTasksAs::CurrentUser);
        assert!(d.warning.unwrap().contains("current-user"));
        // Root's processes are never a task user's.
        assert!(!kill_user_processes(0));
    }

    #[test]
    fn reachability() {
        let tmp = std::env::temp_dir().join(format!("bbb-users-{}", uuid::Uuid::new_v4()));
        let inner = tmp.join("closed").join("tasks");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::set_permissions(tmp.join("closed"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        let err = reachable_by_others(&inner).unwrap_err();
        assert!(err.contains("closed (mode 700)"), "{err}");
        std::fs::set_permissions(tmp.join("closed"), std::fs::Permissions::from_mode(0o711))
            .unwrap();
        reachable_by_others(&inner).unwrap();
        prepare_tasks_dir(&inner).unwrap();
        let mode = std::fs::metadata(&inner).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o711);
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
