//! The HTTP API at `<rootUrl>/api/migration/v1/`, on [`bbb_service`]: the
//! branches with their shares, a branch's jobs and history, a pair's
//! comparison, the mapping and the milestones. Reads need no scopes (the
//! figures are for everyone, as the queue's task reads are); changing the
//! mapping needs `migration:manage-mapping:<branch>/<label>`, a milestone
//! `migration:manage-milestone:<name>`.

use crate::compute::{self, Job};
use crate::figures::Window;
use crate::milestones::{self, MilestoneDef};
use crate::model::Pairing;
use crate::{Migration, sources, store};
use bbb_service::validate::param;
use bbb_service::{ApiError, Call, Reply, Result, Service, delete, get, post, put, scope};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;

/// Most revisions a request may cover.
pub const MAX_REVISIONS: i64 = 1000;

/// How many revisions a branch's history covers when a request does not say.
pub const HISTORY_REVISIONS: i64 = 50;

/// The record's endpoints, in the order requests are matched.
pub fn service(migration: Migration) -> Service<Migration> {
    let (auth, clock) = (migration.auth.clone(), migration.queue.clock.clone());
    let manage = || scope("migration:manage-mapping:<branch>/<label>");
    let milestone = || scope("migration:manage-milestone:<name>");
    Service::new("migration", "v1", migration, auth, clock)
        .param("name", |v| {
            param("name", v, milestones::valid_name(v)).map(|()| v.to_string())
        })
        .endpoints([
            get("/__heartbeat__", "heartbeat")
                .to(|_: Migration, _| async { Ok(Reply::json(json!({}))) }),
            get("/branches", "listBranches").to(list_branches),
            get("/branches/<branch>/jobs", "listJobs").to(list_jobs),
            get("/branches/<branch>/history", "branchHistory").to(branch_history),
            get("/branches/<branch>/pairs/<label..>", "comparePair").to(compare_pair),
            get("/mapping", "listMapping").to(list_mapping),
            get("/sources", "listSources").to(list_sources),
            put("/mapping/<branch>/<label..>", "setMapping")
                .scopes(manage())
                .to(set_mapping),
            delete("/mapping/<branch>/<label..>", "deleteMapping")
                .scopes(manage())
                .to(delete_mapping),
            get("/milestones", "listMilestones").to(list_milestones),
            get("/milestones/<name>", "milestone").to(get_milestone),
            put("/milestones/<name>", "createMilestone")
                .scopes(milestone())
                .to(create_milestone),
            post("/milestones/<name>", "updateMilestone")
                .scopes(milestone())
                .to(update_milestone),
            delete("/milestones/<name>", "deleteMilestone")
                .scopes(milestone())
                .to(delete_milestone),
        ])
}

/// `listSources`: the polled legacy masters, their cursors, counts, last
/// poll and error.
async fn list_sources(m: Migration, _call: Call) -> Result<Reply> {
    let sources = sources::sources(&m.queue.db).await?;
    Ok(Reply::json(json!({"sources": sources})))
}

/// The query parameter `revisions` (default: the configured window,
/// [`MigrationConfig::revisions`](crate::MigrationConfig::revisions)).
fn revisions(m: &Migration, call: &Call) -> Result<i64> {
    revisions_or(call, m.cfg.revisions)
}

/// The query parameter `revisions`, `default` when absent.
fn revisions_or(call: &Call, default: i64) -> Result<i64> {
    let Some(v) = call.query.get("revisions") else {
        return Ok(default);
    };
    v.parse::<i64>()
        .ok()
        .filter(|n| (1..=MAX_REVISIONS).contains(n))
        .ok_or_else(|| {
            ApiError::InvalidRequestArguments(format!(
                "revisions must be an integer from 1 to {MAX_REVISIONS}, not {v:?}"
            ))
        })
}

/// A branch's window, its jobs and its summary.
async fn branch_jobs(
    m: &Migration,
    branch: &str,
    n: i64,
    entries: &[store::MappingEntry],
) -> Result<(compute::BranchSummary, Vec<Job>)> {
    let window = Window::load(&m.queue.db, branch, n, entries).await?;
    let jobs = window.jobs();
    Ok((window.summary(&jobs), jobs))
}

/// `listBranches`: every branch with observations, and its shares.
async fn list_branches(m: Migration, call: Call) -> Result<Reply> {
    let n = revisions(&m, &call)?;
    let entries = store::mapping(&m.queue.db).await?;
    let mut branches = Vec::new();
    for b in store::branches(&m.queue.db).await? {
        branches.push(branch_jobs(&m, &b, n, &entries).await?.0);
    }
    Ok(Reply::json(json!({"revisions": n, "branches": branches})))
}

/// `listJobs`: a branch's shares and its jobs with their last results.
async fn list_jobs(m: Migration, call: Call) -> Result<Reply> {
    let n = revisions(&m, &call)?;
    let entries = store::mapping(&m.queue.db).await?;
    let (summary, jobs) = branch_jobs(&m, call.param("branch"), n, &entries).await?;
    if summary.revisions.is_empty() {
        return Err(ApiError::NotFound(format!(
            "No results recorded on branch {}",
            call.param("branch")
        )));
    }
    Ok(Reply::json(json!({"summary": summary, "jobs": jobs})))
}

/// `comparePair`: the pair of a label on a branch, compared over the window.
async fn compare_pair(m: Migration, call: Call) -> Result<Reply> {
    let n = revisions(&m, &call)?;
    let (branch, label) = (call.param("branch"), call.param("label"));
    let entries = store::mapping(&m.queue.db).await?;
    let window = Window::load(&m.queue.db, branch, n, &entries).await?;
    let builder = window.builder_of(&window.jobs(), label).ok_or_else(|| {
        ApiError::NotFound(format!(
            "{label} is not paired with a builder on branch {branch}"
        ))
    })?;
    Ok(Reply::json(json!(window.compare(label, &builder))))
}

/// `branchHistory`: how a branch's jobs split on each of its last revisions
/// (default [`HISTORY_REVISIONS`]), oldest first.
async fn branch_history(m: Migration, call: Call) -> Result<Reply> {
    let n = revisions_or(&call, HISTORY_REVISIONS)?;
    let branch = call.param("branch");
    let entries = store::mapping(&m.queue.db).await?;
    let window = Window::load(&m.queue.db, branch, n, &entries).await?;
    if window.is_empty() {
        return Err(ApiError::NotFound(format!(
            "No results recorded on branch {branch}"
        )));
    }
    Ok(Reply::json(
        json!({"branch": branch, "revisions": n, "history": window.history()}),
    ))
}

/// Milestones with their progress: each branch's window (the configured
/// revisions) read once.
pub async fn with_progress(
    m: &Migration,
    list: Vec<milestones::Milestone>,
) -> Result<Vec<serde_json::Value>> {
    let entries = store::mapping(&m.queue.db).await?;
    let today = milestones::date_of(m.queue.clock.now_ms());
    let mut jobs_of: BTreeMap<String, Vec<Job>> = BTreeMap::new();
    let mut out = Vec::new();
    for ms in list {
        if !jobs_of.contains_key(&ms.def.branch) {
            let (_, jobs) = branch_jobs(m, &ms.def.branch, m.cfg.revisions, &entries).await?;
            jobs_of.insert(ms.def.branch.clone(), jobs);
        }
        let progress = milestones::progress(&ms.def, &jobs_of[&ms.def.branch], &today);
        let mut v = json!(ms);
        v["progress"] = json!(progress);
        out.push(v);
    }
    Ok(out)
}

/// `listMilestones`: every milestone by date, with its progress.
async fn list_milestones(m: Migration, _call: Call) -> Result<Reply> {
    let list = milestones::list(&m.queue.db).await?;
    Ok(Reply::json(
        json!({"milestones": with_progress(&m, list).await?}),
    ))
}

async fn existing_milestone(m: &Migration, name: &str) -> Result<milestones::Milestone> {
    milestones::get(&m.queue.db, name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("No milestone {name}")))
}

/// One milestone with its progress.
async fn milestone_reply(m: &Migration, name: &str) -> Result<Reply> {
    let ms = existing_milestone(m, name).await?;
    let mut v = with_progress(m, vec![ms]).await?;
    Ok(Reply::json(v.remove(0)))
}

/// `milestone`: one milestone with its progress.
async fn get_milestone(m: Migration, call: Call) -> Result<Reply> {
    milestone_reply(&m, call.param("name")).await
}

/// `createMilestone`: a new milestone; the same definition again answers it
/// as it is, a different one is a conflict.
async fn create_milestone(m: Migration, call: Call) -> Result<Reply> {
    let def: MilestoneDef = call.input_as()?;
    def.check()?;
    let name = call.param("name");
    if let Some(old) = milestones::get(&m.queue.db, name).await? {
        if old.def != def {
            return Err(ApiError::Conflict(format!(
                "Milestone {name} exists with another definition"
            )));
        }
    } else {
        let who = call.client_id.clone().unwrap_or_else(|| "anonymous".into());
        milestones::put(&m.queue.db, name, &def, "api", &who, m.queue.clock.now_ms()).await?;
    }
    milestone_reply(&m, name).await
}

/// `updateMilestone`: change an existing milestone.
async fn update_milestone(m: Migration, call: Call) -> Result<Reply> {
    let def: MilestoneDef = call.input_as()?;
    def.check()?;
    let name = call.param("name");
    let old = existing_milestone(&m, name).await?;
    if old.def != def {
        let who = call.client_id.clone().unwrap_or_else(|| "anonymous".into());
        milestones::put(&m.queue.db, name, &def, "api", &who, m.queue.clock.now_ms()).await?;
    }
    milestone_reply(&m, name).await
}

/// `deleteMilestone`: remove a milestone.
async fn delete_milestone(m: Migration, call: Call) -> Result<Reply> {
    let name = call.param("name");
    if !milestones::delete(&m.queue.db, name).await? {
        return Err(ApiError::NotFound(format!("No milestone {name}")));
    }
    Ok(Reply::empty())
}

/// `listMapping`: every mapping entry.
async fn list_mapping(m: Migration, _call: Call) -> Result<Reply> {
    Ok(Reply::json(
        json!({"mapping": store::mapping(&m.queue.db).await?}),
    ))
}

/// The body of `setMapping`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetMapping {
    builder: String,
}

/// `setMapping`: pair a label with a builder on a branch (`*`: every branch).
async fn set_mapping(m: Migration, call: Call) -> Result<Reply> {
    let body: SetMapping = call.input_as()?;
    if body.builder.is_empty() {
        return Err(ApiError::Input("builder must not be empty".into()));
    }
    let pairing = Pairing {
        branch: call.param("branch").to_string(),
        label: call.param("label").to_string(),
        builder: body.builder,
    };
    let who = call.client_id.clone().unwrap_or_else(|| "anonymous".into());
    store::put_mapping(&m.queue.db, &pairing, "api", &who, m.queue.clock.now_ms()).await?;
    let entry = store::mapping(&m.queue.db)
        .await?
        .into_iter()
        .find(|e| e.pairing == pairing)
        .ok_or_else(|| ApiError::Internal("a mapping entry written is gone".into()))?;
    Ok(Reply::json(json!(entry)))
}

/// `deleteMapping`: remove a pairing.
async fn delete_mapping(m: Migration, call: Call) -> Result<Reply> {
    let (branch, label) = (call.param("branch"), call.param("label"));
    if !store::delete_mapping(&m.queue.db, branch, label).await? {
        return Err(ApiError::NotFound(format!(
            "No mapping entry for {label} on branch {branch}"
        )));
    }
    Ok(Reply::empty())
}
