//! Milestones: a date and the jobs of a branch that must run natively by
//! then (migration `5003`), and their progress over the branch's window.

use crate::compute::{Job, Place};
use bbb_queue::db::Db;
use bbb_service::{ApiError, Result};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

/// What a milestone's name may be: letters, digits, `_`, `.`, `-`, 1 to 100.
pub fn valid_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Whether `due` is a calendar date `YYYY-MM-DD`.
pub fn valid_due(due: &str) -> bool {
    due.len() == 10 && chrono::NaiveDate::parse_from_str(due, "%Y-%m-%d").is_ok()
}

/// The UTC date (`YYYY-MM-DD`) of `ms` since the epoch.
pub fn date_of(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// A milestone's definition, as written through the API or the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MilestoneDef {
    /// The branch whose jobs it names.
    pub branch: String,
    /// The date they must run natively by, `YYYY-MM-DD`.
    pub due: String,
    /// The jobs: task labels or builders (a job matches by either).
    pub jobs: Vec<String>,
    /// What it is about.
    #[serde(default)]
    pub description: String,
}

impl MilestoneDef {
    /// Checks the fields: a branch, a date, at least one job, no empty or
    /// repeated job.
    pub fn check(&self) -> Result<()> {
        if self.branch.is_empty() {
            return Err(ApiError::Input("branch must not be empty".into()));
        }
        if !valid_due(&self.due) {
            return Err(ApiError::Input(format!(
                "due must be a date YYYY-MM-DD, not {:?}",
                self.due
            )));
        }
        if self.jobs.is_empty() {
            return Err(ApiError::Input("jobs must name at least one job".into()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for j in &self.jobs {
            if j.is_empty() || !seen.insert(j.as_str()) {
                return Err(ApiError::Input(format!(
                    "jobs must be non-empty and distinct: {j:?}"
                )));
            }
        }
        Ok(())
    }
}

/// A milestone as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Milestone {
    /// Its name, unique.
    pub name: String,
    /// What it holds.
    #[serde(flatten)]
    pub def: MilestoneDef,
    /// `api` or `file` (the configuration).
    pub source: String,
    /// When it was last written (ms).
    pub updated: i64,
    /// Who wrote it (a client id, or `configuration`).
    pub updated_by: String,
}

/// How far a milestone is: which of its jobs run natively over its branch's
/// window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Its jobs that run natively.
    pub native: usize,
    /// Its jobs.
    pub total: usize,
    /// The jobs not native yet, in the milestone's order.
    pub remaining: Vec<String>,
    /// Past its date (the day after `due`, UTC) with jobs remaining.
    pub overdue: bool,
}

/// The progress of `m` given its branch's `jobs` over the window, on `today`
/// (`YYYY-MM-DD`, UTC). A named job counts as native when a job of the
/// branch with that label or builder runs natively.
pub fn progress(def: &MilestoneDef, jobs: &[Job], today: &str) -> Progress {
    let native = |name: &str| {
        jobs.iter().any(|j| {
            j.runs_on == Place::Native
                && (j.label.as_deref() == Some(name) || j.builder.as_deref() == Some(name))
        })
    };
    let remaining: Vec<String> = def.jobs.iter().filter(|j| !native(j)).cloned().collect();
    Progress {
        native: def.jobs.len() - remaining.len(),
        total: def.jobs.len(),
        overdue: !remaining.is_empty() && def.due.as_str() < today,
        remaining,
    }
}

fn from_row(r: &AnyRow) -> Result<Milestone> {
    let jobs: String = r.try_get("jobs")?;
    Ok(Milestone {
        name: r.try_get("name")?,
        def: MilestoneDef {
            branch: r.try_get("branch")?,
            due: r.try_get("due")?,
            jobs: serde_json::from_str(&jobs)
                .map_err(|e| ApiError::Internal(format!("a milestone's jobs stored: {e}")))?,
            description: r.try_get("description")?,
        },
        source: r.try_get("source")?,
        updated: r.try_get("updated")?,
        updated_by: r.try_get("updated_by")?,
    })
}

/// Every milestone, by date then name.
pub async fn list(db: &Db) -> Result<Vec<Milestone>> {
    let rows = sqlx::query("SELECT * FROM migration_milestones ORDER BY due, name")
        .fetch_all(&db.pool)
        .await?;
    rows.iter().map(from_row).collect()
}

/// The milestone named `name`.
pub async fn get(db: &Db, name: &str) -> Result<Option<Milestone>> {
    let row = sqlx::query("SELECT * FROM migration_milestones WHERE name = $1")
        .bind(name)
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Write `name` (replacing it when it exists).
pub async fn put(
    db: &Db,
    name: &str,
    def: &MilestoneDef,
    source: &str,
    who: &str,
    now: i64,
) -> Result<()> {
    let jobs = serde_json::to_string(&def.jobs).expect("strings serialise");
    sqlx::query(
        "INSERT INTO migration_milestones \
         (name, branch, due, jobs, description, source, updated, updated_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) DO UPDATE SET \
         branch = excluded.branch, due = excluded.due, jobs = excluded.jobs, \
         description = excluded.description, source = excluded.source, \
         updated = excluded.updated, updated_by = excluded.updated_by",
    )
    .bind(name)
    .bind(&def.branch)
    .bind(&def.due)
    .bind(jobs)
    .bind(&def.description)
    .bind(source)
    .bind(now)
    .bind(who)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Delete `name`; whether it existed.
pub async fn delete(db: &Db, name: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM migration_milestones WHERE name = $1")
        .bind(name)
        .execute(&db.pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn job(label: Option<&str>, builder: Option<&str>, runs_on: Place) -> Job {
        Job {
            label: label.map(Into::into),
            builder: builder.map(Into::into),
            symbol: None,
            runs_on,
            sides: Vec::new(),
            last: BTreeMap::new(),
        }
    }

    #[test]
    fn progress_counts_named_jobs_running_natively_by_label_or_builder() {
        let def = MilestoneDef {
            branch: "b".into(),
            due: "2026-12-01".into(),
            jobs: vec!["test-a".into(), "lin.b".into(), "test-c".into()],
            description: String::new(),
        };
        def.check().unwrap();
        let jobs = vec![
            job(Some("test-a"), Some("lin.a"), Place::Native),
            job(Some("test-b"), Some("lin.b"), Place::Native),
            job(Some("test-c"), None, Place::Bridged),
        ];
        let p = progress(&def, &jobs, "2026-12-01");
        assert_eq!((p.native, p.total, p.overdue), (2, 3, false));
        assert_eq!(p.remaining, vec!["test-c".to_string()]);
        assert!(progress(&def, &jobs, "2026-12-02").overdue);
        let all = vec![job(Some("test-c"), None, Place::Native)];
        let done = MilestoneDef {
            jobs: vec!["test-c".into()],
            ..def.clone()
        };
        assert!(!progress(&done, &all, "2027-01-01").overdue);
    }

    #[test]
    fn definitions_and_names_are_checked() {
        assert!(valid_name("q1-linux_64.native"));
        assert!(!valid_name("a/b") && !valid_name(""));
        assert!(valid_due("2027-01-17") && !valid_due("2027-1-17") && !valid_due("tomorrow"));
        assert!(!valid_due("2027-02-30"));
        let bad = MilestoneDef {
            branch: "b".into(),
            due: "2027-01-17".into(),
            jobs: vec!["a".into(), "a".into()],
            description: String::new(),
        };
        assert!(bad.check().is_err());
        assert_eq!(date_of(0), "1970-01-01");
    }
}
