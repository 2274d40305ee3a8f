//! The HTTP API at `<rootUrl>/api/index/v1/`: upstream's endpoints, scopes,
//! errors and JSON, on [`bbb_service`].

use crate::Index;
use crate::namespace::{self, index_path_param, namespace_param};
use crate::store::{self, Entry};
use bbb_auth::ScopeExpr;
use bbb_clock::{from_ms, parse_ms};
use bbb_service::paging::{encode_token, with_token};
use bbb_service::validate::{is_slugid, schema_error};
use bbb_service::{
    ApiError, Call, Reply, Result, ScopeParams, Service, all_of, delete, for_each, get, post, put,
    scope,
};
use serde::Deserialize;
use serde_json::{Map, Number, Value, json};

/// How long the signed URL of a non-public artifact is valid (as upstream: 15 minutes).
const SIGNED_URL_TTL_MS: i64 = 15 * 60 * 1000;

/// The index's endpoints, in the order requests are matched.
pub fn service(index: Index) -> Service<Index> {
    let (auth, clock) = (index.auth.clone(), index.queue.clock.clone());
    let list_namespaces_scope = || scope("index:list-namespaces:<namespace>");
    let list_tasks_scope = || scope("index:list-tasks:<namespace>");
    Service::new("index", "v1", index, auth, clock)
        .param("namespace", namespace_param)
        .param("indexPath", index_path_param)
        .endpoints([
            get("/__heartbeat__", "heartbeat")
                .to(|_: Index, _| async { Ok(Reply::json(json!({}))) }),
            get("/__version__", "version")
                .to(|index: Index, _| async move { Ok(Reply::json(index.queue.version_info())) }),
            get("/task/<indexPath>", "findTask")
                .scopes(scope("index:find-task:<indexPath>"))
                .to(find_task),
            post("/tasks/indexes", "findTasksAtIndex")
                .scopes(all_of([for_each(
                    "indexPath",
                    "indexPaths",
                    "index:find-task:<indexPath>",
                )]))
                .to(find_tasks_at_index),
            // `/namespaces/` is the root namespace, as the clients call it with `""`.
            get("/namespaces", "listNamespaces")
                .scopes(list_namespaces_scope())
                .to(list_namespaces),
            get("/namespaces/", "listNamespaces")
                .scopes(list_namespaces_scope())
                .to(list_namespaces),
            get("/namespaces/<namespace>", "listNamespaces")
                .scopes(list_namespaces_scope())
                .to(list_namespaces),
            post("/namespaces", "listNamespacesPost")
                .scopes(list_namespaces_scope())
                .to(list_namespaces_post),
            post("/namespaces/", "listNamespacesPost")
                .scopes(list_namespaces_scope())
                .to(list_namespaces_post),
            post("/namespaces/<namespace>", "listNamespacesPost")
                .scopes(list_namespaces_scope())
                .to(list_namespaces_post),
            get("/tasks", "listTasks")
                .scopes(list_tasks_scope())
                .to(list_tasks),
            get("/tasks/", "listTasks")
                .scopes(list_tasks_scope())
                .to(list_tasks),
            get("/tasks/<namespace>", "listTasks")
                .scopes(list_tasks_scope())
                .to(list_tasks),
            post("/tasks", "listTasksPost")
                .scopes(list_tasks_scope())
                .to(list_tasks),
            post("/tasks/", "listTasksPost")
                .scopes(list_tasks_scope())
                .to(list_tasks),
            post("/tasks/<namespace>", "listTasksPost")
                .scopes(list_tasks_scope())
                .to(list_tasks),
            put("/task/<namespace>", "insertTask")
                .scopes(scope("index:insert-task:<namespace>"))
                .to(insert_task),
            delete("/task/<namespace>", "deleteTask")
                .scopes(scope("index:delete-task:<namespace>"))
                .to(delete_task),
            get(
                "/task/<indexPath>/artifacts/<name..>",
                "findArtifactFromTask",
            )
            .scopes(scope("queue:get-artifact:<name>"))
            .to(find_artifact_from_task),
        ])
}

/// The unexpired entry at `path`, or upstream's 404.
async fn live_entry(index: &Index, path: &str) -> Result<Entry> {
    let (ns, name) = namespace::split(path);
    store::get(&index.queue.db, ns, name)
        .await?
        .filter(|e| e.expires > index.queue.clock.now_ms())
        .ok_or_else(|| ApiError::NotFound("Indexed task not found".into()))
}

/// `findTask`: the entry at an index path.
async fn find_task(index: Index, call: Call) -> Result<Reply> {
    Ok(Reply::json(
        live_entry(&index, call.param("indexPath")).await?.to_json(),
    ))
}

/// A page of `items` fetched with `limit + 1`: the first `limit`, and a
/// continuation token (the key of the last) when there was more.
fn page<T>(mut items: Vec<T>, limit: i64, key: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
    if items.len() as i64 <= limit {
        return (items, None);
    }
    items.truncate(limit as usize);
    let token = items.last().map(|i| encode_token(&key(i)));
    (items, token)
}

/// `findTasksAtIndex`: the entries at the given index paths, paged.
async fn find_tasks_at_index(index: Index, call: Call) -> Result<Reply> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        #[serde(default)]
        indexes: Vec<String>,
    }
    let req: Req = call.input_as()?;
    call.authorize_with(ScopeParams::new().list("indexPaths", req.indexes.iter().cloned()))?;
    let (limit, token) = call.paging()?;
    let after: Option<(String, String)> = token
        .map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|_| ApiError::Input("Invalid continuationToken".into()))?;
    // As upstream: an index path names `<namespace>.<name>`, so one without a dot names nothing.
    let mut keys: Vec<(String, String)> = req
        .indexes
        .iter()
        .filter_map(|p| p.rsplit_once('.'))
        .map(|(ns, name)| (ns.to_string(), name.to_string()))
        .filter(|k| after.as_ref().is_none_or(|a| k > a))
        .collect();
    keys.sort();
    keys.dedup();
    let mut entries = store::entries_at(&index.queue.db, &keys, index.queue.clock.now_ms()).await?;
    entries.truncate(limit as usize + 1);
    let (entries, next) = page(entries, limit, |e| {
        serde_json::to_string(&(&e.namespace, &e.name)).unwrap_or_default()
    });
    let tasks: Vec<Value> = entries.iter().map(Entry::to_json).collect();
    Ok(Reply::json(with_token(json!({"tasks": tasks}), next)))
}

/// The namespace a list call names (`""`, the root, when it names none),
/// once the caller's scopes for it are checked.
fn listed_namespace(call: &Call) -> Result<&str> {
    let ns = call.param("namespace");
    call.authorize_with(ScopeParams::new().set("namespace", ns))?;
    Ok(ns)
}

/// `listNamespaces`: the namespaces directly in a namespace, paged.
async fn list_namespaces(index: Index, call: Call) -> Result<Reply> {
    let parent = listed_namespace(&call)?;
    let (limit, after) = call.paging()?;
    let rows = store::namespaces_in(
        &index.queue.db,
        parent,
        after.as_deref().unwrap_or(""),
        limit + 1,
        index.queue.clock.now_ms(),
    )
    .await?;
    let (rows, next) = page(rows, limit, |n| n.name.clone());
    let list: Vec<Value> = rows.iter().map(|n| n.to_json()).collect();
    Ok(Reply::json(with_token(json!({"namespaces": list}), next)))
}

/// `listNamespacesPost` (deprecated upstream): [`list_namespaces`], with a
/// body that, when there is one, must be upstream's `list-namespaces-request`
/// (which upstream then ignores for the query string).
async fn list_namespaces_post(index: Index, call: Call) -> Result<Reply> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Req {
        limit: Option<u16>,
        continuation_token: Option<String>,
    }
    if !call.body.is_null() {
        let _: Req = bbb_service::validate::strict(&call.body)?;
    }
    list_namespaces(index, call).await
}

/// `listTasks`: the unexpired entries directly in a namespace, paged.
async fn list_tasks(index: Index, call: Call) -> Result<Reply> {
    let namespace = listed_namespace(&call)?;
    let (limit, after) = call.paging()?;
    let rows = store::entries_in(
        &index.queue.db,
        namespace,
        after.as_deref().unwrap_or(""),
        limit + 1,
        index.queue.clock.now_ms(),
    )
    .await?;
    let (rows, next) = page(rows, limit, |e| e.name.clone());
    let list: Vec<Value> = rows.iter().map(Entry::to_json).collect();
    Ok(Reply::json(with_token(json!({"tasks": list}), next)))
}

/// The body of `insertTask` (upstream's `insert-task-request`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InsertTask {
    task_id: String,
    rank: Number,
    data: Map<String, Value>,
    expires: String,
}

/// `insertTask`: write an entry by the rank rule; answers the entry now at
/// the path (the older one when it has a higher rank).
async fn insert_task(index: Index, call: Call) -> Result<Reply> {
    let req: InsertTask = call.input_as()?;
    if !is_slugid(&req.task_id) {
        return Err(schema_error(format!(
            "taskId {:?} does not match the slugid pattern",
            req.task_id
        )));
    }
    let rank = req
        .rank
        .as_i64()
        .or_else(|| {
            req.rank
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        })
        .ok_or_else(|| schema_error(format!("rank {} must be an integer", req.rank)))?;
    let expires = parse_ms(&req.expires)
        .ok_or_else(|| schema_error(format!("expires {:?} is not a date-time", req.expires)))?;
    let path = call.param("namespace");
    let (ns, name) = namespace::split(path);
    let entry = Entry {
        namespace: ns.to_string(),
        name: name.to_string(),
        rank,
        task_id: req.task_id,
        data: Value::Object(req.data),
        expires,
    };
    let q = &index.queue;
    let stored = q
        .retrying(|| async {
            let mut tx = q.db.begin().await?;
            store::upsert(&mut tx, std::slice::from_ref(&entry), q.clock.now_ms()).await?;
            let stored = store::get_in(&mut tx, ns, name).await?;
            tx.commit().await?;
            Ok(stored)
        })
        .await?
        .ok_or_else(|| {
            ApiError::Internal(format!("the entry at {path} is gone after its insert"))
        })?;
    Ok(Reply::json(stored.to_json()))
}

/// `deleteTask`: remove the entry at a path (its namespaces stay).
async fn delete_task(index: Index, call: Call) -> Result<Reply> {
    let (ns, name) = namespace::split(call.param("namespace"));
    store::delete(&index.queue.db, ns, name).await?;
    Ok(Reply::json(json!({})))
}

/// `findArtifactFromTask`: a redirect to an artifact of the latest run of the
/// task at an index path. For an artifact anonymous callers may get, the
/// redirect goes where the queue's `latestArtifact` points (or, failing that,
/// to the queue's `getLatestArtifact`); for any other, to `getLatestArtifact`
/// signed for 15 minutes by the queue.
async fn find_artifact_from_task(index: Index, call: Call) -> Result<Reply> {
    let entry = live_entry(&index, call.param("indexPath")).await?;
    let name = call.param("name");
    let public = ScopeExpr::scope(format!("queue:get-artifact:{name}"))
        .satisfied_by(&index.auth.anonymous_scopes());
    let url = if public {
        let content = index
            .artifacts
            .latest_artifact_content(&entry.task_id, name)
            .await
            .ok();
        match content.as_ref().and_then(|c| c["url"].as_str()) {
            Some(url) => url.to_string(),
            None => index.latest_artifact_url(&entry.task_id, name)?.to_string(),
        }
    } else {
        index.signed_latest_artifact_url(&entry.task_id, name)?
    };
    Ok(Reply::redirect(&url, json!({"url": url})))
}

impl Index {
    /// The queue's `getLatestArtifact` URL for `name` of `task_id`.
    pub fn latest_artifact_url(&self, task_id: &str, name: &str) -> Result<url::Url> {
        let mut url = url::Url::parse(&self.root_url)
            .map_err(|e| ApiError::Internal(format!("root URL {}: {e}", self.root_url)))?;
        url.path_segments_mut()
            .map_err(|()| ApiError::Internal(format!("root URL {} has no path", self.root_url)))?
            .pop_if_empty()
            .extend(["api", "queue", "v1", "task", task_id, "artifacts"])
            .extend(name.split('/'));
        Ok(url)
    }

    /// [`Index::latest_artifact_url`] with a bewit of the queue's own client,
    /// valid for 15 minutes.
    pub fn signed_latest_artifact_url(&self, task_id: &str, name: &str) -> Result<String> {
        let mut url = self.latest_artifact_url(task_id, name)?;
        let (client_id, token) = &*self.queue.issuer;
        let bewit = bbb_auth::bewit(
            client_id,
            token,
            None,
            url.path(),
            url.host_str().unwrap_or("localhost"),
            url.port_or_known_default().unwrap_or(80),
            from_ms(self.queue.clock.now_ms() + SIGNED_URL_TTL_MS),
        );
        url.query_pairs_mut().append_pair("bewit", &bewit);
        Ok(url.to_string())
    }
}
