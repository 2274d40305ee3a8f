//! The CI service's tables in the queue's database (SQLite or PostgreSQL, one
//! SQL dialect through sqlx's `Any` driver): repositories, branches and their
//! mode changes, and the push ledger. Migrations are versions 4001 and up.
//! Database failures are [`ApiError::Database`], classified once.

use crate::config::{Kind, Mode, RepositoryConfig};
use bbb_clock::{Millis, fmt_ms};
use bbb_secret::Secret;
use bbb_service::ApiError;
use bbb_sqlstore::Backend;
use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

/// Results of the store.
pub type Result<T> = std::result::Result<T, ApiError>;

/// A repository and its branches, as stored.
#[derive(Clone, Debug)]
pub struct Repository {
    /// The project name, unique.
    pub project: String,
    /// The public URL.
    pub url: String,
    /// Where to fetch from, when not `url`.
    pub clone_url: Option<String>,
    /// git or hg.
    pub kind: Kind,
    /// The trust domain.
    pub trust_domain: String,
    /// The SCM level.
    pub level: i64,
    /// Whether the remote is polled.
    pub poll: bool,
    /// The secret webhooks are signed with.
    pub webhook_secret: Option<Secret<String>>,
    /// The branches bbb follows.
    pub branches: Vec<Branch>,
    /// When the last poll ended.
    pub last_poll_at: Option<Millis>,
    /// The last poll's error, while polls fail: its text and time.
    pub poll_error: Option<(String, Millis)>,
    /// Failed polls in a row.
    pub poll_failures: i64,
    /// For hg: the id of the last pushlog push taken (`None` until the
    /// pushlog is first read).
    pub pushlog_cursor: Option<i64>,
}

/// A branch bbb follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Branch {
    /// Its name.
    pub name: String,
    /// Who schedules it.
    pub mode: Mode,
    /// The head the last poll saw (polls record a push when it moves).
    pub polled_head: Option<String>,
}

impl Repository {
    /// The repository from its configuration (no branches' heads yet).
    pub fn from_config(c: &RepositoryConfig) -> Repository {
        Repository {
            project: c.project.clone(),
            url: c.url.clone(),
            clone_url: c.clone_url.clone(),
            kind: c.kind,
            trust_domain: c.trust_domain.clone(),
            level: c.level.into(),
            poll: c.poll,
            webhook_secret: c.webhook_secret.clone(),
            branches: c
                .branches
                .iter()
                .map(|b| Branch {
                    name: b.name.clone(),
                    mode: b.mode,
                    polled_head: None,
                })
                .collect(),
            last_poll_at: None,
            poll_error: None,
            poll_failures: 0,
            pushlog_cursor: None,
        }
    }

    /// Where to fetch from: `clone_url`, else `url`.
    pub fn fetch_url(&self) -> &str {
        self.clone_url.as_deref().unwrap_or(&self.url)
    }

    /// `<host>/<path>` of the public URL (its scheme and a trailing `/` cut),
    /// as upstream's `repo:` roles name a repository.
    pub fn role_path(&self) -> &str {
        let rest = self.url.split_once("://").map_or(&*self.url, |(_, r)| r);
        rest.trim_end_matches('/')
    }

    /// The role pushes to `branch` create tasks with:
    /// `repo:<host>/<path>:branch:<branch>`.
    pub fn branch_role(&self, branch: &str) -> String {
        format!("repo:{}:branch:{branch}", self.role_path())
    }

    /// The branch named `name`.
    pub fn branch(&self, name: &str) -> Option<&Branch> {
        self.branches.iter().find(|b| b.name == name)
    }

    /// The API's view (the webhook secret only as whether one is set).
    pub fn to_json(&self) -> Value {
        json!({
            "project": self.project,
            "url": self.url,
            "cloneUrl": self.clone_url,
            "kind": self.kind.as_str(),
            "trustDomain": self.trust_domain,
            "level": self.level,
            "poll": self.poll,
            "webhookSecretSet": self.webhook_secret.is_some(),
            "branches": self.branches.iter().map(|b| json!({
                "name": b.name, "mode": b.mode.as_str(), "polledHead": b.polled_head,
            })).collect::<Vec<_>>(),
            "lastPoll": self.last_poll_at.map(fmt_ms),
            "pollError": self.poll_error.as_ref().map(|(message, at)| json!({
                "message": message, "time": fmt_ms(*at), "failuresInARow": self.poll_failures,
            })),
            "pushlogId": self.pushlog_cursor,
        })
    }
}

/// One push of the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    /// Its id in the ledger (`push.pushlog_id` for git pushes).
    pub id: i64,
    /// For a push taken from a Mercurial pushlog: its pushlog id.
    pub pushlog_id: Option<i64>,
    /// The repository's project.
    pub project: String,
    /// The branch pushed to.
    pub branch: String,
    /// The pushed revision (the new head).
    pub revision: String,
    /// The head before the push, when known.
    pub base_revision: Option<String>,
    /// Who pushed (or the head commit's author when polled).
    pub owner: String,
    /// When it was pushed, ms.
    pub pushdate: Millis,
    /// `poll` or `webhook`.
    pub source: String,
    /// The branch's mode when the push was recorded.
    pub mode: Mode,
    /// `pending`, `observed`, `decided` or `failed`.
    pub state: String,
    /// When it was recorded, ms (the decision's `now`, so every attempt
    /// renders the same task).
    pub recorded_at: Millis,
    /// Decision attempts so far.
    pub attempts: i64,
    /// The decision task created.
    pub decision_task_id: Option<String>,
    /// Why the decision failed (or the last attempt's error while pending).
    pub error: Option<String>,
    /// When it was handled.
    pub handled_at: Option<Millis>,
}

/// A push to record.
#[derive(Clone, Debug)]
pub struct NewPush {
    /// The repository's project.
    pub project: String,
    /// The branch.
    pub branch: String,
    /// The new head.
    pub revision: String,
    /// The head before, when known.
    pub base_revision: Option<String>,
    /// Who pushed.
    pub owner: String,
    /// When, ms.
    pub pushdate: Millis,
    /// `poll` or `webhook`.
    pub source: &'static str,
}

const PUSH_COLUMNS: &str = "id, project, branch, revision, base_revision, owner, pushdate, \
     source, mode, state, recorded_at, attempts, decision_task_id, error, handled_at, pushlog_id";

fn push_from_row(r: &AnyRow) -> Result<Push> {
    let mode: String = r.try_get("mode")?;
    Ok(Push {
        id: r.try_get("id")?,
        pushlog_id: r.try_get("pushlog_id")?,
        project: r.try_get("project")?,
        branch: r.try_get("branch")?,
        revision: r.try_get("revision")?,
        base_revision: r.try_get("base_revision")?,
        owner: r.try_get("owner")?,
        pushdate: r.try_get("pushdate")?,
        source: r.try_get("source")?,
        mode: Mode::parse(&mode).ok_or_else(|| ApiError::Internal(format!("mode {mode}")))?,
        state: r.try_get("state")?,
        recorded_at: r.try_get("recorded_at")?,
        attempts: r.try_get("attempts")?,
        decision_task_id: r.try_get("decision_task_id")?,
        error: r.try_get("error")?,
        handled_at: r.try_get("handled_at")?,
    })
}

impl Push {
    /// The API's view.
    pub fn to_json(&self) -> Value {
        json!({
            "pushId": self.id,
            "branch": self.branch,
            "revision": self.revision,
            "baseRevision": self.base_revision,
            "owner": self.owner,
            "pushdate": fmt_ms(self.pushdate),
            "source": self.source,
            "mode": self.mode.as_str(),
            "state": self.state,
            "recorded": fmt_ms(self.recorded_at),
            "attempts": self.attempts,
            "decisionTaskId": self.decision_task_id,
            "error": self.error,
            "handled": self.handled_at.map(fmt_ms),
            "pushlogId": self.pushlog_id,
        })
    }
}

/// The CI tables.
#[derive(Clone, Debug)]
pub struct Store {
    /// The pool (the queue's).
    pub pool: AnyPool,
    /// Its engine.
    pub backend: Backend,
}

impl Store {
    /// The tables on the queue's pool.
    pub fn new(pool: AnyPool, backend: Backend) -> Store {
        Store { pool, backend }
    }

    /// Apply the CI migrations (versions 4001 and up).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        bbb_sqlstore::migrate_shared(
            &self.pool,
            self.backend,
            sqlx::migrate!("./migrations/sqlite"),
            sqlx::migrate!("./migrations/postgres"),
        )
        .await
        .map_err(|e| anyhow::anyhow!("ci migrations: {e}"))
    }

    /// Every repository, by project.
    pub async fn repositories(&self) -> Result<Vec<Repository>> {
        let rows = sqlx::query("SELECT * FROM ci_repositories ORDER BY project")
            .fetch_all(&self.pool)
            .await?;
        let branches = sqlx::query(
            "SELECT project, branch, mode, polled_head FROM ci_branches ORDER BY project, branch",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut repos = rows.iter().map(repo_from_row).collect::<Result<Vec<_>>>()?;
        for b in &branches {
            let project: String = b.try_get("project")?;
            if let Some(r) = repos.iter_mut().find(|r| r.project == project) {
                r.branches.push(branch_from_row(b)?);
            }
        }
        Ok(repos)
    }

    /// The repository of `project`.
    pub async fn repository(&self, project: &str) -> Result<Option<Repository>> {
        let Some(row) = sqlx::query("SELECT * FROM ci_repositories WHERE project = $1")
            .bind(project)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let mut repo = repo_from_row(&row)?;
        let branches = sqlx::query(
            "SELECT project, branch, mode, polled_head FROM ci_branches WHERE project = $1 \
             ORDER BY branch",
        )
        .bind(project)
        .fetch_all(&self.pool)
        .await?;
        repo.branches = branches
            .iter()
            .map(branch_from_row)
            .collect::<Result<_>>()?;
        Ok(Some(repo))
    }

    /// Create `repo`, or (`replace`) update it to be `repo`: its fields, its
    /// branches (those it does not name are dropped) and their modes, each
    /// mode change recorded as `who`'s at `now`. Without `replace` an
    /// existing repository is left as it is but gains the branches it lacks
    /// (how the configuration file seeds the database). Returns the
    /// repository as stored.
    pub async fn put_repository(
        &self,
        repo: &Repository,
        replace: bool,
        who: &str,
        now: Millis,
    ) -> Result<Repository> {
        let mut tx = self.pool.begin().await?;
        let existing = sqlx::query(&format!(
            "SELECT project FROM ci_repositories WHERE project = $1{}",
            self.backend.for_update()
        ))
        .bind(&repo.project)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        if !existing || replace {
            sqlx::query(
                "INSERT INTO ci_repositories (project, url, clone_url, kind, trust_domain, level, \
                 poll, webhook_secret) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (project) DO UPDATE SET url = $2, clone_url = $3, kind = $4, \
                 trust_domain = $5, level = $6, poll = $7, webhook_secret = $8",
            )
            .bind(&repo.project)
            .bind(&repo.url)
            .bind(&repo.clone_url)
            .bind(repo.kind.as_str())
            .bind(&repo.trust_domain)
            .bind(repo.level)
            .bind(i64::from(repo.poll))
            .bind(repo.webhook_secret.as_ref().map(|s| s.expose().clone()))
            .execute(&mut *tx)
            .await?;
        }
        let rows = sqlx::query("SELECT branch, mode FROM ci_branches WHERE project = $1")
            .bind(&repo.project)
            .fetch_all(&mut *tx)
            .await?;
        let mut old = Vec::new();
        for r in &rows {
            old.push((
                r.try_get::<String, _>("branch")?,
                r.try_get::<String, _>("mode")?,
            ));
        }
        for b in &repo.branches {
            let before = old
                .iter()
                .find(|(n, _)| *n == b.name)
                .map(|(_, m)| m.clone());
            match &before {
                None => {
                    sqlx::query(
                        "INSERT INTO ci_branches (project, branch, mode) VALUES ($1, $2, $3)",
                    )
                    .bind(&repo.project)
                    .bind(&b.name)
                    .bind(b.mode.as_str())
                    .execute(&mut *tx)
                    .await?;
                }
                Some(m) if m != b.mode.as_str() && replace => {
                    sqlx::query(
                        "UPDATE ci_branches SET mode = $3 WHERE project = $1 AND branch = $2",
                    )
                    .bind(&repo.project)
                    .bind(&b.name)
                    .bind(b.mode.as_str())
                    .execute(&mut *tx)
                    .await?;
                }
                Some(m) => {
                    if m != b.mode.as_str() {
                        tracing::warn!(
                            ci.project = %repo.project, ci.branch = %b.name, database = %m,
                            configuration = b.mode.as_str(),
                            "the configuration names another mode than the database holds; \
                             the database's stays (change it through the API)"
                        );
                    }
                    continue;
                }
            }
            record_mode_change(
                &mut tx,
                &repo.project,
                &b.name,
                before.as_deref(),
                b.mode,
                who,
                now,
            )
            .await?;
        }
        if replace {
            for (name, _) in &old {
                if repo.branch(name).is_none() {
                    sqlx::query("DELETE FROM ci_branches WHERE project = $1 AND branch = $2")
                        .bind(&repo.project)
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        self.repository(&repo.project)
            .await?
            .ok_or_else(|| ApiError::Internal("repository gone after writing it".into()))
    }

    /// Set `branch`'s mode as `who` at `now`, recording the change (nothing
    /// when it already is). `None` when there is no such branch.
    pub async fn set_mode(
        &self,
        project: &str,
        branch: &str,
        mode: Mode,
        who: &str,
        now: Millis,
    ) -> Result<Option<bool>> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query(&format!(
            "SELECT mode FROM ci_branches WHERE project = $1 AND branch = $2{}",
            self.backend.for_update()
        ))
        .bind(project)
        .bind(branch)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let old: String = row.try_get("mode")?;
        if old == mode.as_str() {
            return Ok(Some(false));
        }
        sqlx::query("UPDATE ci_branches SET mode = $3 WHERE project = $1 AND branch = $2")
            .bind(project)
            .bind(branch)
            .bind(mode.as_str())
            .execute(&mut *tx)
            .await?;
        record_mode_change(&mut tx, project, branch, Some(&old), mode, who, now).await?;
        tx.commit().await?;
        Ok(Some(true))
    }

    /// The mode changes of `project`'s branches, oldest first.
    pub async fn mode_changes(&self, project: &str) -> Result<Vec<Value>> {
        let rows = sqlx::query(
            "SELECT branch, old_mode, new_mode, changed_by, changed_at FROM ci_mode_changes \
             WHERE project = $1 ORDER BY id",
        )
        .bind(project)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(json!({
                    "branch": r.try_get::<String, _>("branch")?,
                    "oldMode": r.try_get::<Option<String>, _>("old_mode")?,
                    "mode": r.try_get::<String, _>("new_mode")?,
                    "changedBy": r.try_get::<String, _>("changed_by")?,
                    "changed": fmt_ms(r.try_get::<i64, _>("changed_at")?),
                }))
            })
            .collect()
    }

    /// The head the last poll saw on `branch`.
    pub async fn set_polled_head(&self, project: &str, branch: &str, head: &str) -> Result<()> {
        sqlx::query("UPDATE ci_branches SET polled_head = $3 WHERE project = $1 AND branch = $2")
            .bind(project)
            .bind(branch)
            .bind(head)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A poll of `project` ended at `now`: with `error`, or well (clearing
    /// the last error). Returns the failures in a row.
    pub async fn poll_ended(&self, project: &str, now: Millis, error: Option<&str>) -> Result<i64> {
        let query = match error {
            Some(e) => sqlx::query(
                "UPDATE ci_repositories SET last_poll_at = $2, poll_error = $3, \
                 poll_error_at = $2, poll_failures = poll_failures + 1 WHERE project = $1",
            )
            .bind(project)
            .bind(now)
            .bind(e),
            None => sqlx::query(
                "UPDATE ci_repositories SET last_poll_at = $2, poll_error = NULL, \
                 poll_error_at = NULL, poll_failures = 0 WHERE project = $1",
            )
            .bind(project)
            .bind(now),
        };
        query.execute(&self.pool).await?;
        let row = sqlx::query("SELECT poll_failures FROM ci_repositories WHERE project = $1")
            .bind(project)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| r.try_get("poll_failures"))
            .transpose()?
            .unwrap_or(0))
    }

    /// Record `push` unless the ledger has it (same repository, branch and
    /// revision), in the branch's current mode: `pending` to decide, or
    /// `observed` on a `buildbot` branch. Returns its id when recorded now;
    /// `None` when it was already there or the branch is not followed.
    pub async fn record_push(&self, push: &NewPush, now: Millis) -> Result<Option<i64>> {
        self.record_keyed_push(push, &push.revision, None, now)
            .await
    }

    /// [`Store::record_push`] with the ledger's key `push_key` (the revision
    /// for git, the pushlog id for hg) and the pushlog id to keep.
    pub async fn record_keyed_push(
        &self,
        push: &NewPush,
        push_key: &str,
        pushlog_id: Option<i64>,
        now: Millis,
    ) -> Result<Option<i64>> {
        let mut tx = self.pool.begin().await?;
        let Some(row) =
            sqlx::query("SELECT mode FROM ci_branches WHERE project = $1 AND branch = $2")
                .bind(&push.project)
                .bind(&push.branch)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(None);
        };
        let mode: String = row.try_get("mode")?;
        let state = if Mode::parse(&mode).is_some_and(Mode::decides) {
            "pending"
        } else {
            "observed"
        };
        let handled = (state == "observed").then_some(now);
        let inserted = sqlx::query(
            "INSERT INTO ci_pushes (project, branch, push_key, revision, base_revision, owner, \
             pushdate, source, mode, state, recorded_at, next_attempt_at, handled_at, pushlog_id) \
             VALUES ($1, $2, $3, $12, $4, $5, $6, $7, $8, $9, $10, $10, $11, $13) \
             ON CONFLICT (project, branch, push_key) DO NOTHING RETURNING id",
        )
        .bind(&push.project)
        .bind(&push.branch)
        .bind(push_key)
        .bind(&push.base_revision)
        .bind(&push.owner)
        .bind(push.pushdate)
        .bind(push.source)
        .bind(&mode)
        .bind(state)
        .bind(now)
        .bind(handled)
        .bind(&push.revision)
        .bind(pushlog_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(inserted.map(|r| r.try_get("id")).transpose()?)
    }

    /// `project`'s pushes, newest first: of `branch` if given, older than
    /// the push `before` if given, at most `limit`.
    pub async fn pushes(
        &self,
        project: &str,
        branch: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Push>> {
        let rows = sqlx::query(&format!(
            "SELECT {PUSH_COLUMNS} FROM ci_pushes WHERE project = $1 \
             AND ($2 IS NULL OR branch = $2) AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
        ))
        .bind(project)
        .bind(branch)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(push_from_row).collect()
    }

    /// The oldest push due to be decided whose branch has no older push
    /// pending (so each branch's pushes are decided in order), read through
    /// `conn`; on PostgreSQL the row stays locked (`SKIP LOCKED`: other
    /// processes take other branches) until `conn`'s transaction ends.
    pub async fn next_due(
        &self,
        conn: &mut sqlx::AnyConnection,
        now: Millis,
    ) -> Result<Option<Push>> {
        let row = sqlx::query(&format!(
            "SELECT {PUSH_COLUMNS} FROM ci_pushes p WHERE state = 'pending' \
             AND next_attempt_at <= $1 AND NOT EXISTS (SELECT 1 FROM ci_pushes q \
             WHERE q.project = p.project AND q.branch = p.branch AND q.state = 'pending' \
             AND q.id < p.id) ORDER BY id LIMIT 1{}",
            self.backend.skip_locked()
        ))
        .bind(now)
        .fetch_optional(conn)
        .await?;
        row.as_ref().map(push_from_row).transpose()
    }

    /// Record what deciding push `id` came to, through `conn`: its decision
    /// task, its error (`failed`), or (`retry_at`) an error that may pass, to
    /// try again then. Only a push still pending is changed.
    pub async fn decided(
        &self,
        conn: &mut sqlx::AnyConnection,
        id: i64,
        outcome: &Decided,
        now: Millis,
    ) -> Result<()> {
        let (state, task, error, next) = match outcome {
            Decided::Task(t) => ("decided", Some(t.as_str()), None, now),
            Decided::Failed(e) => ("failed", None, Some(e.as_str()), now),
            Decided::Retry(e, at) => ("pending", None, Some(e.as_str()), *at),
        };
        let handled = (state != "pending").then_some(now);
        sqlx::query(
            "UPDATE ci_pushes SET state = $2, decision_task_id = $3, error = $4, \
             next_attempt_at = $5, handled_at = $6, attempts = attempts + 1 \
             WHERE id = $1 AND state = 'pending'",
        )
        .bind(id)
        .bind(state)
        .bind(task)
        .bind(error)
        .bind(next)
        .bind(handled)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// What deciding a push came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decided {
    /// The decision task was created (its id).
    Task(String),
    /// The decision failed for good (a broken `.taskcluster.yml`, a render
    /// error, a refused task): the message.
    Failed(String),
    /// It failed in a way that may pass (a fetch, an unreachable queue): the
    /// message, and when to try again.
    Retry(String, Millis),
}

async fn record_mode_change(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    project: &str,
    branch: &str,
    old: Option<&str>,
    mode: Mode,
    who: &str,
    now: Millis,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO ci_mode_changes (project, branch, old_mode, new_mode, changed_by, changed_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(project)
    .bind(branch)
    .bind(old)
    .bind(mode.as_str())
    .bind(who)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn repo_from_row(r: &AnyRow) -> Result<Repository> {
    let kind: String = r.try_get("kind")?;
    let error: Option<String> = r.try_get("poll_error")?;
    let error_at: Option<i64> = r.try_get("poll_error_at")?;
    Ok(Repository {
        project: r.try_get("project")?,
        url: r.try_get("url")?,
        clone_url: r.try_get("clone_url")?,
        kind: Kind::parse(&kind).ok_or_else(|| ApiError::Internal(format!("kind {kind}")))?,
        trust_domain: r.try_get("trust_domain")?,
        level: r.try_get("level")?,
        poll: r.try_get::<i64, _>("poll")? != 0,
        webhook_secret: r
            .try_get::<Option<String>, _>("webhook_secret")?
            .map(Secret::new),
        branches: Vec::new(),
        last_poll_at: r.try_get("last_poll_at")?,
        poll_error: error.zip(error_at),
        poll_failures: r.try_get("poll_failures")?,
        pushlog_cursor: r.try_get("pushlog_cursor")?,
    })
}

fn branch_from_row(r: &AnyRow) -> Result<Branch> {
    let mode: String = r.try_get("mode")?;
    Ok(Branch {
        name: r.try_get("branch")?,
        mode: Mode::parse(&mode).ok_or_else(|| ApiError::Internal(format!("mode {mode}")))?,
        polled_head: r.try_get("polled_head")?,
    })
}
