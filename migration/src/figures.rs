//! A branch's window loaded once, and every figure computed from it: its
//! jobs, its shares, its history and its pairs' comparisons. The API and
//! the web UI read through it; the dashboard loads every branch's window at
//! once ([`Window::load_many`]).

use crate::compute::{self, BranchSummary, Comparison, HistoryPoint, Job};
use crate::model::Observation;
use crate::store::{self, MappingEntry};
use bbb_queue::db::Db;
use bbb_service::Result;

/// A branch's last revisions, their observations and the mapping that holds
/// on it.
#[derive(Clone, Debug)]
pub struct Window {
    /// The branch.
    pub branch: String,
    /// Its last revisions, newest first.
    pub revisions: Vec<String>,
    /// Every observation of them.
    pub observations: Vec<Observation>,
    /// The mapping on the branch: label → builder.
    pub mapping: Vec<(String, String)>,
}

impl Window {
    /// The last `n` revisions of `branch` (two queries), with the mapping
    /// `entries` (as [`store::mapping`] gives them: read once for many
    /// branches).
    pub async fn load(db: &Db, branch: &str, n: i64, entries: &[MappingEntry]) -> Result<Window> {
        let (revisions, observations) = store::window(db, branch, n).await?;
        Ok(Window {
            branch: branch.to_string(),
            revisions,
            observations,
            mapping: store::mapping_for(entries, branch),
        })
    }

    /// [`Window::load`] of each of `branches`, in their order, in two
    /// queries for up to 200 branches ([`store::windows`]).
    pub async fn load_many(
        db: &Db,
        branches: &[String],
        n: i64,
        entries: &[MappingEntry],
    ) -> Result<Vec<Window>> {
        let windows = store::windows(db, branches, n).await?;
        Ok(branches
            .iter()
            .zip(windows)
            .map(|(branch, (revisions, observations))| Window {
                branch: branch.clone(),
                revisions,
                observations,
                mapping: store::mapping_for(entries, branch),
            })
            .collect())
    }

    /// The window of its newest `n` revisions: what [`Window::load`] with
    /// `n` reads, when `n` is at most its own size (it is a prefix of a
    /// larger window).
    pub fn newest(&self, n: usize) -> Window {
        if n >= self.revisions.len() {
            return self.clone();
        }
        let revisions = self.revisions[..n].to_vec();
        let kept: std::collections::HashSet<&str> = revisions.iter().map(String::as_str).collect();
        let observations = self
            .observations
            .iter()
            .filter(|o| kept.contains(o.revision.as_str()))
            .cloned()
            .collect();
        Window {
            branch: self.branch.clone(),
            revisions,
            observations,
            mapping: self.mapping.clone(),
        }
    }

    /// Whether the branch has no result at all in it.
    pub fn is_empty(&self) -> bool {
        self.revisions.is_empty()
    }

    /// Its jobs ([`compute::jobs`]).
    pub fn jobs(&self) -> Vec<Job> {
        compute::jobs(&self.revisions, &self.observations, &self.mapping)
    }

    /// Its summary, given its `jobs`.
    pub fn summary(&self, jobs: &[Job]) -> BranchSummary {
        compute::summary(&self.branch, self.revisions.clone(), jobs)
    }

    /// Its history, oldest revision first ([`compute::history`]).
    pub fn history(&self) -> Vec<HistoryPoint> {
        compute::history(&self.revisions, &self.observations, &self.mapping)
    }

    /// The comparison of the pair `label` ↔ `builder` ([`compute::compare`]).
    pub fn compare(&self, label: &str, builder: &str) -> Comparison {
        compute::compare(
            label,
            builder,
            &self.revisions,
            &self.observations,
            &self.mapping,
        )
    }

    /// The builder `label` is paired with on the branch: a pair among
    /// `jobs`, else the mapping's entry.
    pub fn builder_of(&self, jobs: &[Job], label: &str) -> Option<String> {
        jobs.iter()
            .find(|j| j.is_pair() && j.label.as_deref() == Some(label))
            .and_then(|j| j.builder.clone())
            .or_else(|| {
                self.mapping
                    .iter()
                    .find(|(l, _)| l == label)
                    .map(|(_, b)| b.clone())
            })
    }
}
