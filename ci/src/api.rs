//! The HTTP API at `<rootUrl>/api/ci/v1/`, on [`bbb_service`]: repositories,
//! their branches' modes and the record of changes, and the push ledger.
//!
//! | method | path | name | scopes |
//! |---|---|---|---|
//! | GET | `/repositories` | `listRepositories` | `ci:list-repositories` |
//! | GET | `/repositories/<project>` | `repository` | `ci:get-repository:<project>` |
//! | PUT | `/repositories/<project>` | `createOrUpdateRepository` | `ci:manage-repository:<project>` |
//! | POST | `/repositories/<project>/branch-mode` | `setBranchMode` | `ci:set-branch-mode:<project>/<branch>` |
//! | GET | `/repositories/<project>/mode-changes` | `listModeChanges` | `ci:get-repository:<project>` |
//! | GET | `/repositories/<project>/pushes` | `listPushes` | `ci:get-repository:<project>` |
//! | GET | `/hooks-pass` | `lastHooksPass` | `ci:list-repositories` |
//!
//! The webhook (`POST /github/<project>`) is in [`crate::webhook`].

use crate::Ci;
use crate::config::{BranchConfig, Kind, Mode, RepositoryConfig};
use crate::store::Repository;
use bbb_auth::Authenticator;
use bbb_secret::Secret;
use bbb_service::validate::param;
use bbb_service::{ApiError, Call, Reply, Result, ScopeParams, Service, get, post, put, scope};
use regex::Regex;
use serde::Deserialize;
use serde_json::json;
use std::sync::{Arc, LazyLock};

/// What a project name may be.
pub static PROJECT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9_.-]{1,100}$").expect("regex"));

/// The CI service's endpoints.
pub fn service(ci: Ci, auth: Arc<Authenticator>) -> Service<Ci> {
    let clock = ci.clock.clone();
    Service::new("ci", "v1", ci, auth, clock)
        .param("project", |v| {
            param("project", v, PROJECT.is_match(v)).map(|()| v.to_string())
        })
        .endpoints([
            get("/__heartbeat__", "heartbeat").to(|ci: Ci, _| async move {
                ci.store.ping().await?;
                Ok(Reply::json(json!({})))
            }),
            get("/__version__", "version")
                .to(|ci: Ci, _| async move { Ok(Reply::json(ci.queue.version_info())) }),
            get("/repositories", "listRepositories")
                .scopes(scope("ci:list-repositories"))
                .to(list_repositories),
            get("/repositories/<project>", "repository")
                .scopes(scope("ci:get-repository:<project>"))
                .to(repository),
            put("/repositories/<project>", "createOrUpdateRepository")
                .scopes(scope("ci:manage-repository:<project>"))
                .to(put_repository),
            post("/repositories/<project>/branch-mode", "setBranchMode")
                .scopes(scope("ci:set-branch-mode:<project>/<branch>"))
                .to(set_branch_mode),
            get("/repositories/<project>/mode-changes", "listModeChanges")
                .scopes(scope("ci:get-repository:<project>"))
                .to(mode_changes),
            get("/repositories/<project>/pushes", "listPushes")
                .scopes(scope("ci:get-repository:<project>"))
                .to(pushes),
            get("/hooks-pass", "lastHooksPass")
                .scopes(scope("ci:list-repositories"))
                .to(last_hooks_pass),
        ])
}

/// Who a call is recorded as.
fn who(call: &Call) -> String {
    call.client_id.clone().unwrap_or_else(|| "anonymous".into())
}

async fn existing(ci: &Ci, project: &str) -> Result<Repository> {
    ci.store
        .repository(project)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("No repository {project}")))
}

async fn list_repositories(ci: Ci, _: Call) -> Result<Reply> {
    let repos = ci.store.repositories().await?;
    Ok(Reply::json(json!({
        "repositories": repos.iter().map(Repository::to_json).collect::<Vec<_>>()
    })))
}

async fn repository(ci: Ci, call: Call) -> Result<Reply> {
    Ok(Reply::json(
        existing(&ci, call.param("project")).await?.to_json(),
    ))
}

/// The body of `createOrUpdateRepository`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RepositoryBody {
    url: String,
    #[serde(default)]
    clone_url: Option<String>,
    kind: Kind,
    trust_domain: String,
    level: u8,
    #[serde(default = "yes")]
    poll: bool,
    /// Absent: keep the one set; empty: none.
    #[serde(default)]
    webhook_secret: Option<String>,
    branches: Vec<BranchConfig>,
}

fn yes() -> bool {
    true
}

/// `createOrUpdateRepository`: the repository becomes the body (branches it
/// does not name are dropped; a webhook secret it does not give is kept).
async fn put_repository(ci: Ci, call: Call) -> Result<Reply> {
    let project = call.param("project").to_owned();
    let body: RepositoryBody = call.input_as()?;
    let url = url::Url::parse(&body.url)
        .map_err(|e| ApiError::Input(format!("url {:?}: {e}", body.url)))?;
    if url.host_str().is_none() {
        return Err(ApiError::Input(format!("url {:?} names no host", body.url)));
    }
    if !(1..=3).contains(&body.level) {
        return Err(ApiError::Input("level must be 1, 2 or 3".into()));
    }
    if body.trust_domain.is_empty() {
        return Err(ApiError::Input("trustDomain must not be empty".into()));
    }
    let mut names: Vec<&str> = body.branches.iter().map(|b| b.name.as_str()).collect();
    names.sort_unstable();
    if names.iter().any(|n| n.is_empty()) || names.windows(2).any(|w| w[0] == w[1]) {
        return Err(ApiError::Input(
            "branch names must be non-empty and distinct".into(),
        ));
    }
    let secret = match body.webhook_secret {
        Some(s) if s.is_empty() => None,
        Some(s) => Some(Secret::new(s)),
        None => ci
            .store
            .repository(&project)
            .await?
            .and_then(|r| r.webhook_secret),
    };
    let repo = Repository::from_config(&RepositoryConfig {
        project,
        url: body.url,
        clone_url: body.clone_url,
        kind: body.kind,
        trust_domain: body.trust_domain,
        level: body.level,
        poll: body.poll,
        webhook_secret: secret,
        branches: body.branches,
    });
    let stored = ci
        .store
        .put_repository(&repo, true, &who(&call), ci.clock.now_ms())
        .await?;
    ci.hooks_changed.notify_one();
    Ok(Reply::json(stored.to_json()))
}

/// `setBranchMode`: `{branch, mode}`; the change is recorded with the
/// caller's clientId.
async fn set_branch_mode(ci: Ci, call: Call) -> Result<Reply> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        branch: String,
        mode: Mode,
    }
    let body: Body = call.input_as()?;
    call.authorize_with(ScopeParams::new().set("branch", body.branch.clone()))?;
    let project = call.param("project");
    let changed = ci
        .store
        .set_mode(
            project,
            &body.branch,
            body.mode,
            &who(&call),
            ci.clock.now_ms(),
        )
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "Repository {project} has no branch {}",
                body.branch
            ))
        })?;
    ci.hooks_changed.notify_one();
    Ok(Reply::json(json!({
        "branch": body.branch, "mode": body.mode.as_str(), "changed": changed,
    })))
}

async fn mode_changes(ci: Ci, call: Call) -> Result<Reply> {
    let project = call.param("project");
    existing(&ci, project).await?;
    Ok(Reply::json(
        json!({"modeChanges": ci.store.mode_changes(project).await?}),
    ))
}

/// `listPushes`: newest first, `?branch=` to filter, `?limit=` (default
/// 100, at most 1000) and `?continuationToken=` (the last answer's) to page.
async fn pushes(ci: Ci, call: Call) -> Result<Reply> {
    let project = call.param("project");
    existing(&ci, project).await?;
    let limit = match call.query.get("limit") {
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| ApiError::InvalidRequestArguments("limit must be 1 to 1000".into()))?,
        None => 100,
    };
    let before =
        match call.query.get("continuationToken") {
            Some(t) => Some(t.parse::<i64>().map_err(|_| {
                ApiError::InvalidRequestArguments("Invalid continuationToken".into())
            })?),
            None => None,
        };
    let branch = call.query.get("branch").map(String::as_str);
    let list = ci.store.pushes(project, branch, before, limit + 1).await?;
    let more = list.len() as i64 > limit;
    let list = &list[..list.len().min(limit as usize)];
    let mut body = json!({"pushes": list.iter().map(|p| p.to_json()).collect::<Vec<_>>()});
    if more && let Some(last) = list.last() {
        body["continuationToken"] = json!(last.id.to_string());
    }
    Ok(Reply::json(body))
}

/// `lastHooksPass`: what this process's last pass over the action and cron
/// hooks did ([`crate::hooks_sync`]): hooks created, updated, removed and
/// deferred, roles changed, and what failed.
async fn last_hooks_pass(ci: Ci, _: Call) -> Result<Reply> {
    ci.admin
        .last_pass()
        .map(Reply::json)
        .ok_or_else(|| ApiError::NotFound("No pass over the hooks has ended yet".into()))
}
