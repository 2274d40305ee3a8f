//! The task payload: generic-worker's Linux (`insecure_posix`) format.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::error::PayloadError;

/// Default name of the live log artifact.
pub const LIVE_LOG_NAME: &str = "public/logs/live.log";
/// Default name of the backing log artifact.
pub const BACKING_LOG_NAME: &str = "public/logs/live_backing.log";

/// A validated task payload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Payload {
    /// Commands run in order, each an argument list; the first failure stops
    /// the task.
    pub command: Vec<Vec<String>>,
    /// Maximum run time of the whole task, in seconds.
    pub max_run_time: u64,
    /// Extra environment variables for the commands.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Files and directories uploaded as artifacts after the commands ran.
    #[serde(default)]
    pub artifacts: Vec<ArtifactDecl>,
    /// Exit-status handling.
    #[serde(default)]
    pub on_exit_status: OnExitStatus,
    /// Optional worker features.
    #[serde(default)]
    pub features: Features,
    /// Names of the log artifacts.
    #[serde(default)]
    pub logs: Logs,
    /// Mounts; accepted only when empty (mounts are not supported).
    #[serde(default)]
    pub mounts: Vec<Value>,
    /// OS groups; accepted only when empty (not supported).
    #[serde(default)]
    pub os_groups: Vec<String>,
    /// Accepted for compatibility and ignored.
    #[serde(default)]
    pub superseder_url: Option<String>,
    /// Where the taskcluster proxy listens: only `localhost` (the default)
    /// is supported.
    #[serde(default)]
    pub taskcluster_proxy_interface: Option<String>,
}

/// One artifact declaration of the payload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArtifactDecl {
    /// `file` or `directory`.
    #[serde(rename = "type")]
    pub kind: ArtifactKind,
    /// Path relative to the task directory.
    pub path: String,
    /// Artifact name; defaults to `path`. For a directory, each file is
    /// named `<name>/<relative path>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Expiry; defaults to the task's `expires`.
    #[serde(default)]
    pub expires: Option<DateTime<Utc>>,
    /// Content type; guessed from the file extension when absent.
    #[serde(default)]
    pub content_type: Option<String>,
    /// `identity` or `gzip`; accepted, content is always uploaded as is.
    #[serde(default)]
    pub content_encoding: Option<ContentEncoding>,
    /// When true, a missing file is skipped instead of becoming an error
    /// artifact.
    #[serde(default)]
    pub optional: bool,
}

/// Kind of an artifact declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    /// A single file.
    File,
    /// Every file below a directory.
    Directory,
}

/// Content encoding of an artifact declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentEncoding {
    /// No encoding.
    Identity,
    /// gzip.
    Gzip,
}

/// `onExitStatus`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OnExitStatus {
    /// Exit codes that resolve the run `exception/intermittent-task`, so the
    /// queue retries it.
    #[serde(default)]
    pub retry: Vec<i64>,
    /// Exit codes after which caches would be purged (accepted; this worker
    /// has no caches).
    #[serde(default)]
    pub purge_caches: Vec<i64>,
}

/// `features`: generic-worker's feature flags. Unknown flags make the
/// payload malformed, as upstream's schema says.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Features {
    /// Serve the log live while the task runs (default true).
    #[serde(default = "yes")]
    pub live_log: bool,
    /// Upload the backing log at the end (default true).
    #[serde(default = "yes")]
    pub backing_log: bool,
    /// Run a taskcluster proxy for the task, its URL in
    /// `TASKCLUSTER_PROXY_URL` (default false).
    #[serde(default)]
    pub taskcluster_proxy: bool,
    /// Accepted and ignored (no chain-of-trust artifacts are made).
    #[serde(default)]
    pub chain_of_trust: bool,
    /// Accepted and ignored (no interactive shell).
    #[serde(default)]
    pub interactive: bool,
    /// Accepted and ignored (no loopback video device).
    #[serde(default)]
    pub loopback_video: bool,
    /// Accepted and ignored (no loopback audio device).
    #[serde(default)]
    pub loopback_audio: bool,
    /// Accepted and ignored (no resource monitor).
    #[serde(default = "yes")]
    pub resource_monitor: bool,
    /// Accepted only when false: tasks always run as their task user.
    #[serde(default)]
    pub run_task_as_current_user: bool,
}

impl Default for Features {
    fn default() -> Self {
        Features {
            live_log: true,
            backing_log: true,
            taskcluster_proxy: false,
            chain_of_trust: false,
            interactive: false,
            loopback_video: false,
            loopback_audio: false,
            resource_monitor: true,
            run_task_as_current_user: false,
        }
    }
}

fn yes() -> bool {
    true
}

/// `logs`: the names of the log artifacts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logs {
    /// Name of the live log artifact.
    #[serde(default = "live_log_name")]
    pub live: String,
    /// Name of the backing log artifact.
    #[serde(default = "backing_log_name")]
    pub backing: String,
}

impl Default for Logs {
    fn default() -> Self {
        Logs {
            live: live_log_name(),
            backing: backing_log_name(),
        }
    }
}

fn live_log_name() -> String {
    LIVE_LOG_NAME.to_owned()
}

fn backing_log_name() -> String {
    BACKING_LOG_NAME.to_owned()
}

impl Payload {
    /// Parses and validates a payload. `max_run_time_cap` is the worker's
    /// upper bound for `maxRunTime`; `task_expires`, when known, bounds
    /// artifact expiry.
    pub fn parse(
        value: &Value,
        max_run_time_cap: u64,
        task_expires: Option<DateTime<Utc>>,
    ) -> Result<Payload, PayloadError> {
        if !value.is_object() {
            return Err(PayloadError(format!(
                "payload must be a JSON object, got {}",
                type_name(value)
            )));
        }
        let payload: Payload = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                PayloadError(format!("payload: {inner}"))
            } else {
                PayloadError(format!("payload.{path}: {inner}"))
            }
        })?;
        payload.validate(max_run_time_cap, task_expires)?;
        Ok(payload)
    }

    fn validate(
        &self,
        max_run_time_cap: u64,
        task_expires: Option<DateTime<Utc>>,
    ) -> Result<(), PayloadError> {
        let err = |m: String| Err(PayloadError(m));
        if self.command.is_empty() {
            return err("payload.command: at least one command is required".into());
        }
        for (i, argv) in self.command.iter().enumerate() {
            if argv.is_empty() {
                return err(format!("payload.command[{i}]: a command needs a program"));
            }
        }
        if self.max_run_time == 0 || self.max_run_time > max_run_time_cap {
            return err(format!(
                "payload.maxRunTime: {} is out of range (1 to {max_run_time_cap} seconds)",
                self.max_run_time
            ));
        }
        for name in self.env.keys() {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return err(format!("payload.env: invalid variable name {name:?}"));
            }
        }
        for code in &self.on_exit_status.retry {
            if *code < 1 {
                return err(format!(
                    "payload.onExitStatus.retry: exit code {code} must be at least 1"
                ));
            }
        }
        if !self.mounts.is_empty() {
            return err("payload.mounts: mounts are not supported by this worker".into());
        }
        if !self.os_groups.is_empty() {
            return err("payload.osGroups: OS groups are not supported by this worker".into());
        }
        if self.features.run_task_as_current_user {
            return err(
                "payload.features.runTaskAsCurrentUser: not supported by this worker (tasks run as their own task user)".into(),
            );
        }
        match self.taskcluster_proxy_interface.as_deref() {
            None | Some("localhost") => {}
            Some(other) => {
                return err(format!(
                    "payload.taskclusterProxyInterface: {other:?} is not supported by this worker (only \"localhost\")"
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, a) in self.artifacts.iter().enumerate() {
            if !is_relative_inside(Path::new(&a.path)) {
                return err(format!(
                    "payload.artifacts[{i}].path: {:?} must be a relative path inside the task directory",
                    a.path
                ));
            }
            let name = a.name();
            if name.is_empty() || name.starts_with('/') {
                return err(format!(
                    "payload.artifacts[{i}].name: invalid name {name:?}"
                ));
            }
            if name == self.logs.live || name == self.logs.backing {
                return err(format!(
                    "payload.artifacts[{i}].name: {name:?} is reserved for the task log"
                ));
            }
            if !names.insert(name.to_owned()) {
                return err(format!(
                    "payload.artifacts[{i}].name: {name:?} is declared twice"
                ));
            }
            if let (Some(exp), Some(task_exp)) = (a.expires, task_expires)
                && exp > task_exp
            {
                return err(format!(
                    "payload.artifacts[{i}].expires: {} is after the task expires ({})",
                    exp.to_rfc3339(),
                    task_exp.to_rfc3339()
                ));
            }
        }
        if self.logs.live == self.logs.backing {
            return err("payload.logs: live and backing logs need different names".into());
        }
        Ok(())
    }
}

impl ArtifactDecl {
    /// The artifact name (`name`, or `path` when absent).
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.path)
    }
}

fn is_relative_inside(path: &Path) -> bool {
    !path.as_os_str().is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Guesses a content type from a file name.
pub fn guess_content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("log" | "txt" | "text") => "text/plain; charset=utf-8",
        Some("json") => "application/json",
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("xml") => "application/xml",
        Some("css") => "text/css",
        Some("js") => "application/javascript",
        Some("csv") => "text/csv",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("svg") => "image/svg+xml",
        Some("gz" | "tgz") => "application/gzip",
        Some("bz2") => "application/x-bzip2",
        Some("xz") => "application/x-xz",
        Some("zst") => "application/zstd",
        Some("zip") => "application/zip",
        Some("tar") => "application/x-tar",
        Some("pdf") => "application/pdf",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Payload, PayloadError> {
        Payload::parse(&v, 86_400, None)
    }

    #[test]
    fn minimal_and_full_payloads() {
        let p = parse(json!({"command": [["true"]], "maxRunTime": 10})).unwrap();
        assert!(p.features.live_log && p.features.backing_log);
        assert!(!p.features.taskcluster_proxy);
        assert_eq!(p.logs.live, LIVE_LOG_NAME);
        let p = parse(json!({
            "command": [["sh", "-c", "exit 3"], ["true"]],
            "maxRunTime": 600,
            "env": {"A": "b"},
            "artifacts": [
                {"type": "file", "path": "out/a.txt", "name": "public/a.txt", "expires": "2030-01-01T00:00:00.000Z"},
                {"type": "directory", "path": "out"}
            ],
            "onExitStatus": {"retry": [3], "purgeCaches": [4]},
            "features": {"liveLog": false, "chainOfTrust": true, "taskclusterProxy": true, "runTaskAsCurrentUser": false},
            "mounts": [], "osGroups": [], "supersederUrl": "https://x",
            "taskclusterProxyInterface": "localhost"
        }))
        .unwrap();
        assert!(!p.features.live_log);
        assert!(p.features.taskcluster_proxy);
        assert_eq!(p.artifacts[1].name(), "out");
        assert_eq!(p.on_exit_status.retry, vec![3]);
    }

    #[test]
    fn readable_messages() {
        let cases = [
            (json!([]), "payload must be a JSON object, got an array"),
            (json!({"maxRunTime": 1}), "missing field `command`"),
            (
                json!({"command": "ls", "maxRunTime": 1}),
                "payload.command: invalid type",
            ),
            (
                json!({"command": [["true"]], "maxRunTime": 1, "env": {"A": 5}}),
                "payload.env.A: invalid type: integer `5`, expected a string",
            ),
            (
                json!({"command": [["true"]], "maxRunTime": 1, "bogus": 1}),
                "unknown field `bogus`",
            ),
            (
                json!({"command": [], "maxRunTime": 1}),
                "at least one command",
            ),
            (
                json!({"command": [[]], "maxRunTime": 1}),
                "payload.command[0]",
            ),
            (
                json!({"command": [["true"]], "maxRunTime": 100_000}),
                "payload.maxRunTime: 100000 is out of range",
            ),
            (
                json!({"command": [["true"]], "maxRunTime": 1, "artifacts": [{"type": "file", "path": "../etc/passwd"}]}),
                "payload.artifacts[0].path",
            ),
            (
                json!({"command": [["true"]], "maxRunTime": 1, "artifacts": [{"type": "socket", "path": "x"}]}),
                "payload.artifacts[0].type: unknown variant `socket`",
            ),
            (
                json!({"command": [["true"]], "maxRunTime": 1, "onExitStatus": {"retry": [0]}}),
                "exit code 0 must be at least 1",
            ),
            (
                json!({"command": [["true"]], "maxRunTime": 1, "mounts": [{"directory": "x"}]}),
                "mounts are not supported",
            ),
            (
                json!({"command": [["true"]], "maxRunTime": 1, "features": {"dockerSave": true}}),
                "payload.features.dockerSave: unknown field `dockerSave`",
            ),
            (
                json!({"command": [["true"]], "maxRunTime": 1, "features": {"taskclusterProxy": "yes"}}),
                "payload.features.taskclusterProxy: invalid type",
            ),
            (
                json!({"command": [["true"]], "maxRunTime": 1, "features": {"runTaskAsCurrentUser": true}}),
                "runTaskAsCurrentUser: not supported",
            ),
            (
                json!({"command": [["true"]], "maxRunTime": 1, "taskclusterProxyInterface": "docker-bridge"}),
                "payload.taskclusterProxyInterface: \"docker-bridge\" is not supported",
            ),
        ];
        for (payload, expected) in cases {
            let err = parse(payload.clone()).unwrap_err().to_string();
            assert!(err.contains(expected), "{payload}: {err}");
        }
        let exp: DateTime<Utc> = "2030-01-01T00:00:00Z".parse().unwrap();
        let err = Payload::parse(
            &json!({"command": [["true"]], "maxRunTime": 1, "artifacts": [{"type": "file", "path": "a", "expires": "2031-01-01T00:00:00Z"}]}),
            10,
            Some(exp),
        )
        .unwrap_err();
        assert!(err.0.contains("after the task expires"), "{err}");
    }

    #[test]
    fn content_types() {
        assert_eq!(guess_content_type("a/b.LOG"), "text/plain; charset=utf-8");
        assert_eq!(guess_content_type("x.tar"), "application/x-tar");
        assert_eq!(guess_content_type("noext"), "application/octet-stream");
    }
}
