//! In-tree action hooks, as upstream's ci-admin makes them: for every
//! `.taskcluster.yml` a followed branch has had (recently), in the group
//! `project-<trust domain>`, one hook `in-tree-action-<level>-<permission>/<hash>`
//! per action permission, whose task is the file's first task wrapped in a
//! JSON-e `$let` that turns the trigger payload (the `hookPayload` taskgraph
//! writes into `actions.json`) into the context `.taskcluster.yml` expects
//! with `tasks_for: action` (and `tcyml_hash`, see [`tcyml_hash`]); and one role per trust domain, level and
//! permission, `hook-id:project-<td>/in-tree-action-<level>-<perm>/*`,
//! granting `assume:repo:<host>/<path>:action:<perm>` for every repository at
//! that level of that trust domain.
//!
//! `<hash>` is taskgraph's: the first ten hex digits of the SHA-256 of the
//! file's bytes. Every `.taskcluster.yml` seen — at a followed branch's head
//! or at a decided push — is recorded (`ci_action_tcymls`) with when it was
//! last seen, and its hooks are kept while that is within
//! `action_hook_retention_days`, so the actions of every decision task of
//! that time keep working after the file changed.

use crate::Ci;
use crate::store::Repository;
use bbb_clock::Millis;
use bbb_service::ApiError;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::collections::BTreeMap;

/// Who the hooks and roles bbb manages name as their owner.
pub const OWNER: &str = "bbb-ci@bbb.invalid";

/// taskgraph's hash of a `.taskcluster.yml`: the first ten hex digits of the
/// SHA-256 of its bytes (`taskgraph.actions.registry.hash_taskcluster_yml`).
/// Every rendering of the file (push, action, cron) has it as `tcyml_hash`,
/// so a decision task that has no checkout to hash can still name its
/// action hooks in `actions.json`.
pub fn tcyml_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..10]
        .to_owned()
}

/// The group of a trust domain's hooks: `project-<trust domain>`.
pub fn hook_group(trust_domain: &str) -> String {
    format!("project-{trust_domain}")
}

/// The id of an action hook: `in-tree-action-<level>-<permission>/<hash>`.
pub fn action_hook_id(level: i64, permission: &str, hash: &str) -> String {
    format!("in-tree-action-{level}-{permission}/{hash}")
}

/// The role of a trust domain's action hooks of one level and permission.
pub fn action_role_id(trust_domain: &str, level: i64, permission: &str) -> String {
    format!(
        "hook-id:{}/in-tree-action-{level}-{permission}/*",
        hook_group(trust_domain)
    )
}

/// The first task of a parsed `.taskcluster.yml` as a template for a hook,
/// without the `taskId` it may name (the hooks service gives the task its
/// id): the key is taken out of the task, and out of the `in` of the
/// `$let`s it is wrapped in.
pub fn first_task(tcyml: &Value) -> Result<Value, String> {
    let mut task = match tcyml.get("tasks") {
        Some(Value::Array(tasks)) if !tasks.is_empty() => tasks[0].clone(),
        _ => return Err("`tasks` is not a list with a task".into()),
    };
    let mut at = &mut task;
    while let Some(obj) = at.as_object_mut() {
        if !obj.contains_key("$let") {
            obj.remove("taskId");
            break;
        }
        match obj.get_mut("in") {
            Some(inner) => at = inner,
            None => break,
        }
    }
    Ok(task)
}

/// The trigger schema of an action hook: what `hookPayload` gives (the
/// decision task's action, push and repository, the user's input and
/// target), as upstream's action hooks check it.
pub fn trigger_schema() -> Value {
    fn obj(description: &str, props: Value, optional: &[&str]) -> Value {
        let required: Vec<&String> = props
            .as_object()
            .map(|m| {
                m.keys()
                    .filter(|k| !optional.contains(&k.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "type": "object", "description": description, "additionalProperties": false,
            "required": required, "properties": props,
        })
    }
    let text = |d: &str| json!({"type": "string", "description": d});
    obj(
        "What triggering an in-tree action needs: the hookPayload of actions.json, rendered",
        json!({
            "decision": obj("From the decision task (baked into actions.json)", json!({
                "action": obj("The action", json!({
                    "name": text("action name"),
                    "title": text("action title"),
                    "description": text("action description"),
                    "taskGroupId": text("taskGroupId of the decision task"),
                    "cb_name": text("the in-tree callback"),
                    "symbol": text("treeherder symbol"),
                }), &[]),
                "push": obj("The push the decision task was for", json!({
                    "owner": text("who pushed"),
                    "revision": text("the pushed revision"),
                    "base_revision": text("the revision before the push"),
                    "pushlog_id": text("the push's id"),
                    "branch": text("the branch pushed to"),
                    "base_branch": text("the branch a pull request is based on"),
                }), &["base_revision", "branch", "base_branch"]),
                "repository": obj("The repository", json!({
                    "url": {"type": "string", "description": "its URL", "pattern": "[^/]$"},
                    "project": text("its project name"),
                    "level": text("its level"),
                    "base_url": text("the URL scopes are checked for"),
                }), &["base_url"]),
                "parameters": {"type": "object", "additionalProperties": true},
            }), &["parameters"]),
            "user": obj("From the user", json!({
                "input": {"description": "the action's input"},
                "taskId": {"anyOf": [text("the task acted on"), {"const": null}]},
                "taskGroupId": text("the task group acted on"),
            }), &[]),
        }),
        &[],
    )
}

/// The action hook of `task` (see [`first_task`]) for `permission`: the
/// hook definition of `createHook`. `clone_urls` maps a repository's URL to
/// its clone URL, given to `.taskcluster.yml` as `repository.clone_url`
/// when the triggering payload names that repository.
pub fn action_hook(
    trust_domain: &str,
    level: i64,
    permission: &str,
    hash: &str,
    task: &Value,
    clone_urls: &BTreeMap<String, String>,
    projects: &[String],
) -> Value {
    let group = hook_group(trust_domain);
    let id = action_hook_id(level, permission, hash);
    let action_field = |f: &str| json!(format!("${{payload.decision.action.{f}}}"));
    let repository = if clone_urls.is_empty() {
        json!({"$eval": "payload.decision.repository"})
    } else {
        json!({"$merge": [
            {"$eval": "payload.decision.repository"},
            {"$if": "payload.decision.repository.url in bbb_clone_urls",
             "then": {"clone_url": {"$eval": "bbb_clone_urls[payload.decision.repository.url]"}},
             "else": {}},
        ]})
    };
    let mut let_ = Map::new();
    let_.insert("tasks_for".into(), json!("action"));
    let_.insert(
        "action".into(),
        json!({
            "name": action_field("name"),
            "title": action_field("title"),
            "description": action_field("description"),
            "taskGroupId": action_field("taskGroupId"),
            "symbol": action_field("symbol"),
            "cb_name": action_field("cb_name"),
            "repo_scope": format!(
                "assume:repo:${{payload.decision.repository.url[8:]}}:action:{permission}"
            ),
            "action_perm": permission,
        }),
    );
    let_.insert("push".into(), json!({"$eval": "payload.decision.push"}));
    let_.insert("repository".into(), repository);
    let_.insert("input".into(), json!({"$eval": "payload.user.input"}));
    let_.insert(
        "parameters".into(),
        json!({"$eval": "payload.decision['parameters']"}),
    );
    let_.insert("taskId".into(), json!({"$eval": "payload.user.taskId"}));
    let_.insert(
        "taskGroupId".into(),
        json!({"$eval": "payload.user.taskGroupId"}),
    );
    let_.insert("ownTaskId".into(), json!({"$eval": "taskId"}));
    let_.insert("tcyml_hash".into(), json!(hash));
    let mut template = json!({"$let": let_, "in": task});
    if !clone_urls.is_empty() {
        template = json!({"$let": {"bbb_clone_urls": clone_urls}, "in": template});
    }
    json!({
        "hookGroupId": group,
        "hookId": id,
        "metadata": {
            "name": format!("{group}/{id}"),
            "description": format!(
                "Action task {permission} at level {level}, with `.taskcluster.yml` hash \
                 {hash}, for the repositories {}. Fired by the actions of a decision \
                 task's `actions.json`; kept by bbb's CI service.",
                projects.join(", ")
            ),
            "owner": OWNER,
            "emailOnError": true,
        },
        "bindings": [],
        "schedule": [],
        "task": template,
        "triggerSchema": trigger_schema(),
    })
}

/// The scopes of the role of a trust domain's action hooks of one level and
/// permission: `assume:repo:<host>/<path>:action:<perm>` for each of `repos`
/// (those at that level in that trust domain).
pub fn action_role_scopes(repos: &[&Repository], permission: &str) -> Vec<String> {
    let mut scopes: Vec<String> = repos
        .iter()
        .map(|r| format!("assume:repo:{}:action:{permission}", r.role_path()))
        .collect();
    scopes.sort();
    scopes.dedup();
    scopes
}

/// A `.taskcluster.yml` seen for a repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenTcyml {
    /// The repository's project.
    pub project: String,
    /// Its hash ([`tcyml_hash`]).
    pub hash: String,
    /// Its text.
    pub tcyml: String,
    /// When it was last seen at a branch's head or a decided push.
    pub last_seen: Millis,
}

impl Ci {
    /// Record that `project` has `tcyml` (its bytes) at `now`; returns
    /// whether its hash is new for the project.
    pub async fn note_tcyml(&self, project: &str, tcyml: &[u8]) -> Result<bool, ApiError> {
        let hash = tcyml_hash(tcyml);
        let now = self.clock.now_ms();
        let text = String::from_utf8_lossy(tcyml);
        let updated = sqlx::query(
            "UPDATE ci_action_tcymls SET last_seen = $3 \
             WHERE project = $1 AND hash = $2 AND last_seen < $3",
        )
        .bind(project)
        .bind(&hash)
        .bind(now)
        .execute(&self.store.pool)
        .await?;
        if updated.rows_affected() > 0 {
            return Ok(false);
        }
        let inserted = sqlx::query(
            "INSERT INTO ci_action_tcymls (project, hash, tcyml, first_seen, last_seen) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (project, hash) DO NOTHING",
        )
        .bind(project)
        .bind(&hash)
        .bind(text.as_ref())
        .bind(now)
        .execute(&self.store.pool)
        .await?;
        let new = inserted.rows_affected() > 0;
        if new {
            tracing::info!(ci.project = %project, hash = %hash, "a new .taskcluster.yml");
            self.hooks_changed.notify_one();
        }
        Ok(new)
    }

    /// The `.taskcluster.yml`s seen since `since`, by project and hash.
    pub async fn seen_tcymls(&self, since: Millis) -> Result<Vec<SeenTcyml>, ApiError> {
        let rows = sqlx::query(
            "SELECT project, hash, tcyml, last_seen FROM ci_action_tcymls \
             WHERE last_seen >= $1 ORDER BY project, hash",
        )
        .bind(since)
        .fetch_all(&self.store.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SeenTcyml {
                    project: r.try_get("project")?,
                    hash: r.try_get("hash")?,
                    tcyml: r.try_get("tcyml")?,
                    last_seen: r.try_get("last_seen")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_taskgraphs() {
        // `sha256sum` of the same bytes: 09bfcc6a14b83e21...
        let h = tcyml_hash(b"version: 1\n");
        assert_eq!(h, "09bfcc6a14");
        assert_ne!(h, tcyml_hash(b"version: 1\n\n"));
    }

    #[test]
    fn the_first_task_loses_its_task_id() {
        let tcyml = json!({"version": 1, "tasks": [
            {"$let": {"a": 1}, "in": {"$let": {"b": 2}, "in": {"taskId": "x", "c": 3}}},
            {"other": true},
        ]});
        assert_eq!(
            first_task(&tcyml).unwrap(),
            json!({"$let": {"a": 1}, "in": {"$let": {"b": 2}, "in": {"c": 3}}})
        );
        assert!(first_task(&json!({"tasks": []})).is_err());
    }

    #[test]
    fn an_action_hook_renders_the_task_with_the_action_context() {
        let task = json!({
            "for": "${tasks_for}", "perm": "${action.action_perm}",
            "scope": "${action.repo_scope}", "cb": "${action.cb_name}",
            "clone": "${repository.clone_url}", "input": {"$eval": "input"},
            "target": {"$eval": "taskId"}, "own": "${ownTaskId}",
            "hash": "${tcyml_hash}",
        });
        let clones = BTreeMap::from([("https://git.example/o/p".to_owned(), "/srv/p".to_owned())]);
        let hook = action_hook(
            "td",
            1,
            "generic",
            "0123456789",
            &task,
            &clones,
            &["p".into()],
        );
        assert_eq!(hook["hookId"], "in-tree-action-1-generic/0123456789");
        assert_eq!(hook["hookGroupId"], "project-td");
        let payload = json!({
            "decision": {
                "action": {"name": "rerun", "title": "Rerun", "description": "d",
                           "taskGroupId": "G", "cb_name": "rerun_action", "symbol": "rr"},
                "push": {"owner": "o", "revision": "r", "pushlog_id": "1"},
                "repository": {"url": "https://git.example/o/p", "project": "p", "level": "1"},
            },
            "user": {"input": {"x": 1}, "taskId": "T", "taskGroupId": "G"},
        });
        let out = json_e::render(
            &hook["task"],
            &json!({"payload": payload, "taskId": "NEW", "firedBy": "triggerHook"}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({
                "for": "action", "perm": "generic",
                "scope": "assume:repo:git.example/o/p:action:generic", "cb": "rerun_action",
                "clone": "/srv/p", "input": {"x": 1}, "target": "T", "own": "NEW",
                "hash": "0123456789",
            })
        );
    }
}
