//! The HTTP API at `<rootUrl>/api/migration/v1/`, on [`bbb_service`]: the
//! branches with their shares, a branch's jobs, a pair's comparison, and the
//! mapping. Reads need no scopes (the figures are for everyone, as the queue's
//! task reads are); changing the mapping needs
//! `migration:manage-mapping:<branch>/<label>`.

use crate::compute::{self, Job};
use crate::model::Pairing;
use crate::{Migration, sources, store};
use bbb_service::{ApiError, Call, Reply, Result, Service, delete, get, put, scope};
use serde::Deserialize;
use serde_json::json;

/// Most revisions a request may cover.
pub const MAX_REVISIONS: i64 = 1000;

/// The record's endpoints, in the order requests are matched.
pub fn service(migration: Migration) -> Service<Migration> {
    let (auth, clock) = (migration.auth.clone(), migration.queue.clock.clone());
    let manage = || scope("migration:manage-mapping:<branch>/<label>");
    Service::new("migration", "v1", migration, auth, clock).endpoints([
        get("/__heartbeat__", "heartbeat")
            .to(|_: Migration, _| async { Ok(Reply::json(json!({}))) }),
        get("/branches", "listBranches").to(list_branches),
        get("/branches/<branch>/jobs", "listJobs").to(list_jobs),
        get("/branches/<branch>/pairs/<label..>", "comparePair").to(compare_pair),
        get("/mapping", "listMapping").to(list_mapping),
        get("/sources", "listSources").to(list_sources),
        put("/mapping/<branch>/<label..>", "setMapping")
            .scopes(manage())
            .to(set_mapping),
        delete("/mapping/<branch>/<label..>", "deleteMapping")
            .scopes(manage())
            .to(delete_mapping),
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
    let Some(v) = call.query.get("revisions") else {
        return Ok(m.cfg.revisions);
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
) -> Result<(compute::BranchSummary, Vec<Job>)> {
    let (revs, observations) = store::window(&m.queue.db, branch, n).await?;
    let mapping = store::mapping_for(&store::mapping(&m.queue.db).await?, branch);
    let jobs = compute::jobs(&revs, &observations, &mapping);
    Ok((compute::summary(branch, revs, &jobs), jobs))
}

/// `listBranches`: every branch with observations, and its shares.
async fn list_branches(m: Migration, call: Call) -> Result<Reply> {
    let n = revisions(&m, &call)?;
    let mut branches = Vec::new();
    for b in store::branches(&m.queue.db).await? {
        branches.push(branch_jobs(&m, &b, n).await?.0);
    }
    Ok(Reply::json(json!({"revisions": n, "branches": branches})))
}

/// `listJobs`: a branch's shares and its jobs with their last results.
async fn list_jobs(m: Migration, call: Call) -> Result<Reply> {
    let n = revisions(&m, &call)?;
    let (summary, jobs) = branch_jobs(&m, call.param("branch"), n).await?;
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
    let (revs, observations) = store::window(&m.queue.db, branch, n).await?;
    let mapping = store::mapping_for(&store::mapping(&m.queue.db).await?, branch);
    let jobs = compute::jobs(&revs, &observations, &mapping);
    let builder = jobs
        .iter()
        .find(|j| j.is_pair() && j.label.as_deref() == Some(label))
        .and_then(|j| j.builder.clone())
        .or_else(|| {
            mapping
                .iter()
                .find(|(l, _)| l == label)
                .map(|(_, b)| b.clone())
        })
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "{label} is not paired with a builder on branch {branch}"
            ))
        })?;
    Ok(Reply::json(json!(compute::compare(
        label,
        &builder,
        &revs,
        &observations,
        &mapping
    ))))
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
