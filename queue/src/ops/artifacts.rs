//! Artifacts: create (s3, reference, link, error), look up, list.

use crate::core::Queue;
use crate::error::{ApiError, Result};
use crate::time::{fmt_ms, parse_ms};
use bbb_tcvalues::RunState;
use serde_json::{Map, Value, json};
use sqlx::Row;

/// How long after an `exception` resolution a run still accepts artifacts.
const EXCEPTION_GRACE_MS: i64 = 25 * 60 * 1000;

/// A stored artifact.
#[derive(Clone, Debug, PartialEq)]
pub struct Artifact {
    /// The task.
    pub task_id: String,
    /// The run.
    pub run_id: i64,
    /// The name, e.g. `public/logs/live.log`.
    pub name: String,
    /// `s3`, `reference`, `link` or `error`.
    pub storage_type: String,
    /// The content type.
    pub content_type: String,
    /// Type-specific details: `url`, `artifact`, `reason`/`message`, `contentLength`.
    pub details: Map<String, Value>,
    /// When it expires (ms).
    pub expires: i64,
}

impl Artifact {
    /// The object `listArtifacts` and `artifactInfo` show.
    pub fn info(&self) -> Value {
        let mut v = json!({
            "storageType": self.storage_type,
            "name": self.name,
            "expires": fmt_ms(self.expires),
            "contentType": self.content_type,
        });
        if let Some(l) = self.details.get("contentLength") {
            v["contentLength"] = l.clone();
        }
        v
    }

    fn from_row(row: &sqlx::any::AnyRow) -> Result<Artifact> {
        let details: Value = serde_json::from_str(&row.try_get::<String, _>("details")?)?;
        Ok(Artifact {
            task_id: row.try_get("task_id")?,
            run_id: row.try_get("run_id")?,
            name: row.try_get("name")?,
            storage_type: row.try_get("storage_type")?,
            content_type: row.try_get("content_type")?,
            details: details.as_object().cloned().unwrap_or_default(),
            expires: row.try_get("expires")?,
        })
    }
}

fn input(msg: impl Into<String>) -> ApiError {
    ApiError::Input(msg.into())
}

fn str_field<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a str> {
    body.get(key).and_then(Value::as_str).ok_or_else(|| {
        ApiError::InputValidation(format!(
            "Schema validation error: `{key}` is required and must be a string"
        ))
    })
}

impl Queue {
    /// `createArtifact`. Returns the response body and, for `s3`, the artifact so the
    /// caller can sign its upload URL.
    pub async fn create_artifact(
        &self,
        task_id: &str,
        run_id: i64,
        name: &str,
        body: &Value,
    ) -> Result<(Value, Artifact)> {
        let body = body.as_object().ok_or_else(|| {
            ApiError::InputValidation("Schema validation error: the body must be an object".into())
        })?;
        let storage_type = str_field(body, "storageType")?.to_string();
        let allowed: &[&str] = match storage_type.as_str() {
            "s3" => &["storageType", "expires", "contentType", "contentLength"],
            "reference" => &["storageType", "expires", "contentType", "url"],
            "link" => &["storageType", "expires", "contentType", "artifact"],
            "error" => &["storageType", "expires", "reason", "message"],
            "object" => {
                return Err(input(
                    "storageType `object` needs an object service, which this queue does not offer; use `s3`",
                ));
            }
            other => {
                return Err(ApiError::InputValidation(format!(
                    "Schema validation error: unknown storageType {other:?} (s3, reference, link, error)"
                )));
            }
        };
        if let Some(k) = body.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::InputValidation(format!(
                "Schema validation error: unexpected property `{k}` for storageType {storage_type}"
            )));
        }
        if name.is_empty() || name.len() > 1024 || !name.bytes().all(|b| (0x20..=0x7e).contains(&b))
        {
            return Err(ApiError::InvalidRequestArguments(format!(
                "Invalid artifact name {name:?}"
            )));
        }
        let expires = parse_ms(str_field(body, "expires")?).ok_or_else(|| {
            ApiError::InputValidation(
                "Schema validation error: `expires` is not a date-time".into(),
            )
        })?;
        let mut details = Map::new();
        let content_type = match storage_type.as_str() {
            "s3" => {
                if let Some(l) = body.get("contentLength") {
                    if l.as_i64().is_none_or(|l| l < 0) {
                        return Err(ApiError::InputValidation(
                            "Schema validation error: contentLength must be a non-negative integer"
                                .into(),
                        ));
                    }
                    details.insert("contentLength".into(), l.clone());
                }
                str_field(body, "contentType")?.to_string()
            }
            "reference" => {
                let url = str_field(body, "url")?;
                if url::Url::parse(url).is_err() {
                    return Err(input(format!("reference url {url:?} is not a URL")));
                }
                details.insert("url".into(), url.into());
                str_field(body, "contentType")?.to_string()
            }
            "link" => {
                details.insert("artifact".into(), str_field(body, "artifact")?.into());
                body.get("contentType")
                    .and_then(Value::as_str)
                    .unwrap_or("application/octet-stream")
                    .to_string()
            }
            _ => {
                let reason = str_field(body, "reason")?;
                const REASONS: [&str; 4] = [
                    "file-missing-on-worker",
                    "invalid-resource-on-worker",
                    "too-large-file-on-worker",
                    "file-not-readable-on-worker",
                ];
                if !REASONS.contains(&reason) {
                    return Err(ApiError::InputValidation(format!(
                        "Schema validation error: error reason {reason:?} must be one of {}",
                        REASONS.join(", ")
                    )));
                }
                details.insert("reason".into(), reason.into());
                details.insert("message".into(), str_field(body, "message")?.into());
                "application/json".to_string()
            }
        };
        let artifact = Artifact {
            task_id: task_id.into(),
            run_id,
            name: name.into(),
            storage_type: storage_type.clone(),
            content_type,
            details,
            expires,
        };
        self.retrying(|| self.store_artifact(&artifact)).await?;
        Ok((json!({"storageType": storage_type}), artifact))
    }

    async fn store_artifact(&self, a: &Artifact) -> Result<()> {
        let now = self.clock.now_ms();
        let mut t = self.txn().await?;
        let task = self
            .load_task_for_update(&mut t, &a.task_id)
            .await?
            .ok_or_else(|| input(format!("Task {} not found", a.task_id)))?;
        let run = task
            .runs
            .get(a.run_id as usize)
            .ok_or_else(|| input(format!("Run {} of task {} not found", a.run_id, a.task_id)))?;
        if run.worker_group.is_none() {
            return Err(input(format!(
                "Run {} of task {} was never claimed",
                a.run_id, a.task_id
            )));
        }
        let open = run.state == RunState::Running
            || (run.state == RunState::Exception
                && run.resolved.is_some_and(|r| now - r < EXCEPTION_GRACE_MS));
        if !open {
            return Err(ApiError::Conflict(format!(
                "Run {} of task {} is {}: artifacts can only be created while it runs",
                a.run_id, a.task_id, run.state
            )));
        }
        if a.expires < now - crate::validate::SKEW_MS {
            return Err(input("Artifact expires in the past"));
        }
        if a.expires > task.expires {
            return Err(input(format!(
                "Artifact expires {} after the task {}",
                fmt_ms(a.expires),
                fmt_ms(task.expires)
            )));
        }
        let existing = sqlx::query(
            "SELECT task_id, run_id, name, storage_type, content_type, details, expires FROM artifacts \
             WHERE task_id = $1 AND run_id = $2 AND name = $3",
        )
        .bind(&a.task_id)
        .bind(a.run_id)
        .bind(&a.name)
        .fetch_optional(&mut *t.tx)
        .await?;
        if let Some(row) = existing {
            let old = Artifact::from_row(&row)?;
            let same_but_expiry = Artifact {
                expires: old.expires,
                ..a.clone()
            } == old
                && a.expires >= old.expires;
            let replaces_reference = old.storage_type == "reference"
                && matches!(a.storage_type.as_str(), "reference" | "link");
            if !(same_but_expiry || replaces_reference) {
                return Err(ApiError::Conflict(format!(
                    "Artifact {} already exists with different content",
                    a.name
                )));
            }
            if same_but_expiry && !replaces_reference {
                sqlx::query("UPDATE artifacts SET expires = $4 WHERE task_id = $1 AND run_id = $2 AND name = $3")
                    .bind(&a.task_id)
                    .bind(a.run_id)
                    .bind(&a.name)
                    .bind(a.expires)
                    .execute(&mut *t.tx)
                    .await?;
                self.commit(t).await?;
                return Ok(());
            }
            sqlx::query("DELETE FROM artifacts WHERE task_id = $1 AND run_id = $2 AND name = $3")
                .bind(&a.task_id)
                .bind(a.run_id)
                .bind(&a.name)
                .execute(&mut *t.tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO artifacts (task_id, run_id, name, storage_type, content_type, details, expires, present, created) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8)",
        )
        .bind(&a.task_id)
        .bind(a.run_id)
        .bind(&a.name)
        .bind(&a.storage_type)
        .bind(&a.content_type)
        .bind(serde_json::to_string(&a.details)?)
        .bind(a.expires)
        .bind(now)
        .execute(&mut *t.tx)
        .await?;
        if a.storage_type != "s3" {
            let info = json!({
                "storageType": a.storage_type,
                "name": a.name,
                "expires": fmt_ms(a.expires),
                "contentType": a.content_type,
            });
            self.emit(&mut t, self.events.artifact_created(&task, a.run_id, info))
                .await?;
        }
        self.commit(t).await?;
        Ok(())
    }

    /// One artifact, or 404.
    pub async fn artifact(&self, task_id: &str, run_id: i64, name: &str) -> Result<Artifact> {
        let row = sqlx::query(
            "SELECT task_id, run_id, name, storage_type, content_type, details, expires FROM artifacts \
             WHERE task_id = $1 AND run_id = $2 AND name = $3",
        )
        .bind(task_id)
        .bind(run_id)
        .bind(name)
        .fetch_optional(&self.db.pool)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Artifact {name} not found for run {run_id} of task {task_id}")))?;
        Artifact::from_row(&row)
    }

    /// Every artifact of a task, by run then name (the web UI's task page).
    pub async fn task_artifacts(&self, task_id: &str) -> Result<Vec<Artifact>> {
        let rows = sqlx::query(
            "SELECT task_id, run_id, name, storage_type, content_type, details, expires FROM artifacts \
             WHERE task_id = $1 ORDER BY run_id, name",
        )
        .bind(task_id)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(Artifact::from_row).collect()
    }

    /// Artifacts of a run after `after` (by name), at most `limit`.
    pub async fn artifacts(
        &self,
        task_id: &str,
        run_id: i64,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Artifact>> {
        let rows = sqlx::query(
            "SELECT task_id, run_id, name, storage_type, content_type, details, expires FROM artifacts \
             WHERE task_id = $1 AND run_id = $2 AND name > $3 ORDER BY name LIMIT $4",
        )
        .bind(task_id)
        .bind(run_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(Artifact::from_row).collect()
    }
}
