//! Worker configuration: a TOML file plus `BBB_*` environment overrides.

use std::path::{Path, PathBuf};

use bbb_envlayer::{Var, set, set_number};
use bbb_secret::Secret;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::users::RunTasksAs;

/// Configuration of a process worker.
///
/// Every field has a working default except the queue credentials and the
/// task queue, which must come from the file or the environment.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Root URL of the TaskCluster deployment (or the native queue),
    /// e.g. `https://tc.example.com`.
    pub root_url: String,
    /// Client id the worker claims work with.
    pub client_id: String,
    /// Access token for `client_id`. Never logged; masked when printed.
    pub access_token: Secret<String>,
    /// Task queue to claim from, `provisionerId/workerType`.
    pub task_queue_id: String,
    /// Worker group reported to the queue.
    pub worker_group: String,
    /// Worker id reported to the queue.
    pub worker_id: String,
    /// Number of tasks run at the same time (≥ 1).
    pub capacity: usize,
    /// Address the live-log HTTP server listens on (`host:port`; port 0
    /// picks a free one).
    pub livelog_listen: String,
    /// Base URL under which the live-log server is reachable by readers,
    /// e.g. `http://worker-7.example.com:60023`. Defaults to
    /// `http://<bound address>`.
    pub livelog_public_url: Option<String>,
    /// Reclaim a task this many seconds before its claim expires. When the
    /// claim is shorter than twice this, the task is reclaimed half-way.
    pub reclaim_before_s: u64,
    /// On shutdown, how long running tasks may still run before they are
    /// stopped and reported `exception/worker-shutdown`.
    pub shutdown_grace_s: u64,
    /// Directory holding one fresh sub-directory per running task.
    pub tasks_dir: PathBuf,
    /// Upper bound on a payload's `maxRunTime`, in seconds (a larger value
    /// is a malformed payload).
    pub max_task_run_time_s: u64,
    /// Minimum time between two `claimWork` calls that both returned no
    /// task, in milliseconds. Guards against queues that do not long-poll.
    pub min_poll_interval_ms: u64,
    /// How many times an artifact upload is retried after a transient error.
    pub upload_retries: u32,
    /// Who task commands run as: `task-user` (a fresh unprivileged OS user
    /// per task; needs root) or `current-user` (the worker's own user).
    /// Unset: `task-user` when the worker runs as root and `useradd` exists,
    /// otherwise `current-user` with a warning.
    pub run_tasks_as: Option<RunTasksAs>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            root_url: String::new(),
            client_id: String::new(),
            access_token: Secret::default(),
            task_queue_id: String::new(),
            worker_group: "bbb".to_owned(),
            worker_id: default_worker_id(),
            capacity: 1,
            livelog_listen: "127.0.0.1:0".to_owned(),
            livelog_public_url: None,
            reclaim_before_s: 180,
            shutdown_grace_s: 60,
            tasks_dir: std::env::temp_dir().join("bbb-worker-tasks"),
            max_task_run_time_s: 86_400,
            min_poll_interval_ms: 5_000,
            upload_retries: 5,
            run_tasks_as: None,
        }
    }
}

fn default_worker_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "bbb-worker".to_owned())
}

impl WorkerConfig {
    /// The `BBB_*` variables that override the `[worker]` section, in the
    /// order they are applied and listed by `--help`.
    pub const ENV: &'static [Var<WorkerConfig>] = &[
        Var::new(
            "BBB_QUEUE_ROOT_URL",
            "root URL of the queue (root_url)",
            |c, v| set(&mut c.root_url, v),
        ),
        Var::new(
            "BBB_QUEUE_CLIENT_ID",
            "client id the worker claims with (client_id)",
            |c, v| set(&mut c.client_id, v),
        ),
        Var::secret(
            "BBB_QUEUE_ACCESS_TOKEN",
            "access token of that client (access_token)",
            |c, v| set(&mut c.access_token, v),
        ),
        Var::new(
            "BBB_WORKER_TASK_QUEUE",
            "task queue to claim from, provisionerId/workerType (task_queue_id)",
            |c, v| set(&mut c.task_queue_id, v),
        ),
        Var::new("BBB_WORKER_GROUP", "worker group (worker_group)", |c, v| {
            set(&mut c.worker_group, v)
        }),
        Var::new("BBB_WORKER_ID", "worker id (worker_id)", |c, v| {
            set(&mut c.worker_id, v)
        }),
        Var::new(
            "BBB_WORKER_CAPACITY",
            "number of tasks run at once (capacity)",
            |c, v| set_number(&mut c.capacity, v),
        ),
        Var::new(
            "BBB_WORKER_LIVELOG_LISTEN",
            "address:port the live log is served on (livelog_listen)",
            |c, v| set(&mut c.livelog_listen, v),
        ),
        Var::new(
            "BBB_WORKER_RUN_TASKS_AS",
            "task-user or current-user: who task commands run as (run_tasks_as)",
            |c, v| {
                c.run_tasks_as = Some(v.parse()?);
                Ok(())
            },
        ),
    ];

    /// Reads a TOML configuration file; absent keys take their defaults.
    pub fn from_file(path: &Path) -> Result<WorkerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        WorkerConfig::from_toml(&text)
    }

    /// Parses a TOML configuration; absent keys take their defaults.
    pub fn from_toml(text: &str) -> Result<WorkerConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Applies the `BBB_*` environment overrides of
    /// [`WorkerConfig::ENV`]. Empty variables are ignored.
    pub fn apply_env(&mut self) -> Result<(), ConfigError> {
        self.apply_vars(bbb_envlayer::from_env)
    }

    /// Applies the overrides of [`WorkerConfig::ENV`] from any variable
    /// source (the environment in [`WorkerConfig::apply_env`]).
    pub fn apply_vars(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        Ok(bbb_envlayer::apply(Self::ENV, self, lookup)?)
    }

    /// Checks the configuration is complete and consistent.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, message: &str| {
            Err(ConfigError::Invalid {
                field,
                message: message.to_owned(),
            })
        };
        if self.root_url.is_empty() {
            return invalid("root_url", "is required");
        }
        if self.client_id.is_empty() {
            return invalid("client_id", "is required");
        }
        if self.access_token.is_empty() {
            return invalid("access_token", "is required");
        }
        match self.task_queue_id.split_once('/') {
            Some((p, w)) if !p.is_empty() && !w.is_empty() && !w.contains('/') => {}
            _ => return invalid("task_queue_id", "must be provisionerId/workerType"),
        }
        if self.worker_group.is_empty() || self.worker_group.len() > 38 {
            return invalid("worker_group", "must be 1 to 38 characters");
        }
        if self.worker_id.is_empty() || self.worker_id.len() > 38 {
            return invalid("worker_id", "must be 1 to 38 characters");
        }
        if self.capacity == 0 || self.capacity > 32 {
            return invalid("capacity", "must be between 1 and 32");
        }
        if self.max_task_run_time_s == 0 {
            return invalid("max_task_run_time_s", "must be positive");
        }
        Ok(())
    }

    /// The provisioner and worker type parts of the task queue id.
    pub fn provisioner_and_worker_type(&self) -> (&str, &str) {
        self.task_queue_id
            .split_once('/')
            .unwrap_or((&self.task_queue_id, ""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bbb_envlayer::testing::{Sample, assert_each_variable_sets_its_field};
    use std::collections::HashMap;

    #[test]
    fn env_overrides_and_masking() {
        let mut cfg = WorkerConfig::from_toml("root_url = \"http://q\"\ncapacity = 2\n").unwrap();
        let vars: HashMap<&str, &str> = [
            ("BBB_QUEUE_CLIENT_ID", "worker/client"),
            ("BBB_QUEUE_ACCESS_TOKEN", "sekrit-token"),
            ("BBB_WORKER_TASK_QUEUE", "prov/type"),
            ("BBB_WORKER_CAPACITY", "4"),
            ("BBB_WORKER_ID", ""),
            ("BBB_WORKER_LIVELOG_LISTEN", "0.0.0.0:60023"),
            ("BBB_WORKER_RUN_TASKS_AS", "current-user"),
        ]
        .into_iter()
        .collect();
        let id_before = cfg.worker_id.clone();
        cfg.apply_vars(|n| vars.get(n).map(|v| v.to_string()))
            .unwrap();
        assert_eq!(cfg.root_url, "http://q");
        assert_eq!(cfg.capacity, 4);
        assert_eq!(cfg.worker_id, id_before, "empty variables are ignored");
        assert_eq!(cfg.livelog_listen, "0.0.0.0:60023");
        assert_eq!(cfg.run_tasks_as, Some(RunTasksAs::CurrentUser));
        cfg.validate().unwrap();
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("sekrit-token"), "{dbg}");
        let printed = toml::to_string(&cfg).unwrap();
        assert!(!printed.contains("sekrit-token"), "{printed}");
        assert!(printed.contains("access_token = \"***\""), "{printed}");
        assert_eq!(cfg.access_token.expose(), "sekrit-token");
        assert_eq!(cfg.provisioner_and_worker_type(), ("prov", "type"));
    }

    #[test]
    fn invalid_values_are_reported() {
        let mut cfg = WorkerConfig::default();
        let err = cfg
            .apply_vars(|n| (n == "BBB_WORKER_CAPACITY").then(|| "many".to_owned()))
            .unwrap_err();
        assert!(err.to_string().contains("BBB_WORKER_CAPACITY"), "{err}");
        assert!(cfg.validate().unwrap_err().to_string().contains("root_url"));
        let err = WorkerConfig::from_toml("nonsense = 1").unwrap_err();
        assert!(err.to_string().contains("nonsense"), "{err}");
        let err = cfg
            .apply_vars(|n| (n == "BBB_WORKER_RUN_TASKS_AS").then(|| "root".to_owned()))
            .unwrap_err();
        assert!(err.to_string().contains("BBB_WORKER_RUN_TASKS_AS"), "{err}");
        let cfg = WorkerConfig::from_toml("run_tasks_as = \"task-user\"").unwrap();
        assert_eq!(cfg.run_tasks_as, Some(RunTasksAs::TaskUser));
        assert!(WorkerConfig::from_toml("run_tasks_as = \"nobody\"").is_err());
        assert_eq!(WorkerConfig::ENV.len(), 9);
    }

    #[test]
    fn each_variable_sets_its_field() {
        let samples: &[Sample<WorkerConfig>] = &[
            ("BBB_QUEUE_ROOT_URL", "http://q", |c| {
                c.root_url == "http://q"
            }),
            ("BBB_QUEUE_CLIENT_ID", "cid", |c| c.client_id == "cid"),
            ("BBB_QUEUE_ACCESS_TOKEN", "tok", |c| {
                c.access_token.expose() == "tok"
            }),
            ("BBB_WORKER_TASK_QUEUE", "p/t", |c| c.task_queue_id == "p/t"),
            ("BBB_WORKER_GROUP", "grp", |c| c.worker_group == "grp"),
            ("BBB_WORKER_ID", "w-9", |c| c.worker_id == "w-9"),
            ("BBB_WORKER_CAPACITY", "7", |c| c.capacity == 7),
            ("BBB_WORKER_LIVELOG_LISTEN", "0.0.0.0:1", |c| {
                c.livelog_listen == "0.0.0.0:1"
            }),
            ("BBB_WORKER_RUN_TASKS_AS", "current-user", |c| {
                c.run_tasks_as == Some(RunTasksAs::CurrentUser)
            }),
        ];
        assert_each_variable_sets_its_field(WorkerConfig::ENV, samples);
    }
}
