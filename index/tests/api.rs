//! The index's HTTP API through the official client and raw requests: each
//! endpoint's success, scopes (403 with upstream's body), bad input and
//! unknown paths, the rank and expiry rules, paging, on SQLite and PostgreSQL.

mod common;

use bbb_queue::model::RunResolution;
use bbb_queue::testing::TestQueue;
use bbb_testdb::on_both_backends;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(
    crate::common::on;
    monitoring_endpoints_answer,
    inserted_entries_are_found_listed_and_deleted,
    lists_are_paged_with_continuation_tokens,
    a_lower_rank_does_not_replace_an_entry,
    expired_entries_are_not_found_and_are_purged,
    find_tasks_at_index_gives_the_entries_at_given_paths,
    bad_input_gets_upstreams_errors,
    find_artifact_from_task_redirects_to_the_artifact,
);
on_both_backends!(crate::common::on_restricted; scopes_are_enforced_with_upstreams_body);

fn entry_body(task_id: &str, rank: i64, expires: &str, data: Value) -> Value {
    json!({"taskId": task_id, "rank": rank, "data": data, "expires": expires})
}

async fn monitoring_endpoints_answer(q: &TestQueue) {
    for path in ["ping", "__heartbeat__", "__lbheartbeat__", "__version__"] {
        let (status, body) = call(q, "GET", path, None, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (_, ping) = call(q, "GET", "ping", None, None).await;
    assert_eq!(ping["alive"], true);
    let (_, version) = call(q, "GET", "__version__", None, None).await;
    assert!(version["version"].is_string(), "{version}");
}

async fn inserted_entries_are_found_listed_and_deleted(q: &TestQueue) {
    let writer = index(q, Some(creds("writer")));
    let reader = index(q, Some(creds("reader")));
    let (a, b) = (slug(), slug());
    let expires = from_now(q, 3600);
    let got = writer
        .insertTask(
            "proj.app.v1.latest",
            &entry_body(&a, 5, &expires, json!({"rev": "abc"})),
        )
        .await
        .unwrap();
    assert_eq!(
        got,
        json!({"namespace": "proj.app.v1.latest", "taskId": a, "rank": 5,
               "data": {"rev": "abc"}, "expires": expires})
    );
    writer
        .insertTask(
            "proj.app.v1.nightly",
            &entry_body(&b, 0, &expires, json!({})),
        )
        .await
        .unwrap();
    assert_eq!(reader.findTask("proj.app.v1.latest").await.unwrap(), got);
    // Anonymous callers may read the index (upstream's public anonymous role).
    assert_eq!(
        index(q, None).findTask("proj.app.v1.latest").await.unwrap(),
        got
    );

    let tasks = reader.listTasks("proj.app.v1", None, None).await.unwrap();
    let paths: Vec<&str> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["proj.app.v1.latest", "proj.app.v1.nightly"]);
    assert!(tasks.get("continuationToken").is_none(), "{tasks}");

    // Every namespace above an entry exists, expiring at the start of the day after it.
    let day_after = bbb_clock::fmt_ms(bbb_index::store::day_after(
        bbb_clock::parse_ms(&expires).unwrap(),
    ));
    let root = index(q, None).listNamespaces("", None, None).await.unwrap();
    assert_eq!(
        root["namespaces"],
        json!([{"namespace": "proj", "name": "proj", "expires": day_after}])
    );
    let ns = reader.listNamespaces("proj.app", None, None).await.unwrap();
    assert_eq!(
        ns["namespaces"],
        json!([{"namespace": "proj.app.v1", "name": "v1", "expires": day_after}])
    );
    // The raw root paths answer the same.
    let (status, body) = call(q, "GET", "namespaces", None, None).await;
    assert_eq!((status, &body["namespaces"]), (200, &root["namespaces"]));

    writer.deleteTask("proj.app.v1.latest").await.unwrap();
    let e = reader.findTask("proj.app.v1.latest").await.unwrap_err();
    assert_eq!(status_of(&e), 404);
    // Deleting again is no error; the namespace stays.
    writer.deleteTask("proj.app.v1.latest").await.unwrap();
    let ns = reader.listNamespaces("proj.app", None, None).await.unwrap();
    assert_eq!(ns["namespaces"].as_array().unwrap().len(), 1);
}

async fn lists_are_paged_with_continuation_tokens(q: &TestQueue) {
    let root = index(q, Some(root_creds(q)));
    let expires = from_now(q, 3600);
    for name in ["c", "a", "e", "b", "d"] {
        root.insertTask(
            &format!("paged.{name}"),
            &entry_body(&slug(), 0, &expires, json!({})),
        )
        .await
        .unwrap();
        root.insertTask(
            &format!("paged.ns-{name}.x"),
            &entry_body(&slug(), 0, &expires, json!({})),
        )
        .await
        .unwrap();
    }
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = root
            .listTasks("paged", token.as_deref(), Some("2"))
            .await
            .unwrap();
        pages += 1;
        for t in page["tasks"].as_array().unwrap() {
            names.push(t["namespace"].as_str().unwrap().to_string());
        }
        match page["continuationToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(
        names,
        ["paged.a", "paged.b", "paged.c", "paged.d", "paged.e"]
    );
    assert_eq!(
        pages, 3,
        "a page with more after it carries a token, the last none"
    );

    let first = root.listNamespaces("paged", None, Some("3")).await.unwrap();
    let second = root
        .listNamespaces("paged", first["continuationToken"].as_str(), Some("3"))
        .await
        .unwrap();
    let all: Vec<&str> = first["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["namespaces"].as_array().unwrap())
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(all, ["ns-a", "ns-b", "ns-c", "ns-d", "ns-e"]);
    assert!(second.get("continuationToken").is_none());
}

async fn a_lower_rank_does_not_replace_an_entry(q: &TestQueue) {
    let root = index(q, Some(root_creds(q)));
    let expires = from_now(q, 3600);
    let (high, low, equal, higher) = (slug(), slug(), slug(), slug());
    root.insertTask(
        "ranked.x",
        &entry_body(&high, 10, &expires, json!({"n": 1})),
    )
    .await
    .unwrap();
    // Lower: not stored, and the answer is the entry that stays (200).
    let got = root
        .insertTask("ranked.x", &entry_body(&low, 9, &expires, json!({"n": 2})))
        .await
        .unwrap();
    assert_eq!(
        (got["taskId"].as_str(), got["rank"].as_i64()),
        (Some(high.as_str()), Some(10))
    );
    assert_eq!(root.findTask("ranked.x").await.unwrap()["taskId"], high);
    // Equal: the later wins.
    let got = root
        .insertTask(
            "ranked.x",
            &entry_body(&equal, 10, &expires, json!({"n": 3})),
        )
        .await
        .unwrap();
    assert_eq!(got["taskId"], equal);
    assert_eq!(got["data"], json!({"n": 3}));
    // Higher: replaces.
    let got = root
        .insertTask("ranked.x", &entry_body(&higher, 11, &expires, json!({})))
        .await
        .unwrap();
    assert_eq!(got["taskId"], higher);
    assert_eq!(root.findTask("ranked.x").await.unwrap(), got);
}

async fn expired_entries_are_not_found_and_are_purged(q: &TestQueue) {
    let root = index(q, Some(root_creds(q)));
    let (old, new, kept) = (slug(), slug(), slug());
    root.insertTask(
        "exp.gone",
        &entry_body(&old, 100, &from_now(q, -60), json!({})),
    )
    .await
    .unwrap();
    let e = root.findTask("exp.gone").await.unwrap_err();
    assert_eq!(status_of(&e), 404);
    let listed = root.listTasks("exp", None, None).await.unwrap();
    assert_eq!(listed["tasks"], json!([]));
    // An expired entry does not hold its path against a lower rank.
    root.insertTask(
        "exp.gone",
        &entry_body(&new, 1, &from_now(q, 60), json!({})),
    )
    .await
    .unwrap();
    assert_eq!(root.findTask("exp.gone").await.unwrap()["taskId"], new);

    root.insertTask(
        "exp.kept",
        &entry_body(&kept, 0, &from_now(q, 3 * 86400), json!({})),
    )
    .await
    .unwrap();
    // Two days on, the first entry and nothing else has expired; the purge
    // deletes it but keeps the namespace `exp`, which the other holds. (Time
    // moves: from now on, anonymous calls, which carry no timestamp.)
    let root = index(q, None);
    q.clock.advance(Duration::from_secs(2 * 86400));
    let db = &q.running.queue.db;
    let (entries, namespaces) = bbb_index::store::expire(db, q.clock.now_ms())
        .await
        .unwrap();
    assert_eq!((entries, namespaces), (1, 0));
    assert!(
        bbb_index::store::get(db, "exp", "gone")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(root.findTask("exp.kept").await.unwrap()["taskId"], kept);
    // Past everything's expiry, the namespace goes too.
    q.clock.advance(Duration::from_secs(3 * 86400));
    let (entries, namespaces) = bbb_index::store::expire(db, q.clock.now_ms())
        .await
        .unwrap();
    assert_eq!((entries, namespaces), (1, 1));
    let root_ns = root.listNamespaces("", None, None).await.unwrap();
    assert_eq!(root_ns["namespaces"], json!([]));
}

async fn find_tasks_at_index_gives_the_entries_at_given_paths(q: &TestQueue) {
    let root = index(q, Some(root_creds(q)));
    let expires = from_now(q, 3600);
    let mut ids = std::collections::BTreeMap::new();
    for path in ["at.a.x", "at.a.y", "at.b.z", "top"] {
        let id = slug();
        root.insertTask(path, &entry_body(&id, 0, &expires, json!({"p": path})))
            .await
            .unwrap();
        ids.insert(path, id);
    }
    root.insertTask(
        "at.c.expired",
        &entry_body(&slug(), 0, &from_now(q, -1), json!({})),
    )
    .await
    .unwrap();
    let body = json!({"indexes": ["at.b.z", "at.a.x", "at.a.missing", "top", "at.c.expired", "at.a.x", "at.a.y"]});
    let mut found = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = root
            .findTasksAtIndex(&body, token.as_deref(), Some("2"))
            .await
            .unwrap();
        for t in page["tasks"].as_array().unwrap() {
            assert_eq!(t["taskId"], ids[t["namespace"].as_str().unwrap()]);
            found.push(t["namespace"].as_str().unwrap().to_string());
        }
        match page["continuationToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    // A path without a dot names no entry, as upstream's query reads it.
    assert_eq!(found, ["at.a.x", "at.a.y", "at.b.z"]);
    let none = root.findTasksAtIndex(&json!({}), None, None).await.unwrap();
    assert_eq!(none, json!({"tasks": []}));
}

/// The 403 body: upstream's code, the missing scope in the message, the
/// method's name in `requestInfo`.
fn assert_forbidden(status: u16, body: &Value, method: &str, missing: &str) {
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "InsufficientScopes", "{body}");
    assert_eq!(body["requestInfo"]["method"], method, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(missing), "{message}");
}

async fn scopes_are_enforced_with_upstreams_body(q: &TestQueue) {
    let root = index(q, Some(root_creds(q)));
    let expires = from_now(q, 3600);
    let id = slug();
    for path in ["proj.a", "other.b"] {
        root.insertTask(path, &entry_body(&id, 0, &expires, json!({})))
            .await
            .unwrap();
    }
    let (reader, writer, nothing) = (creds("reader"), creds("writer"), creds("nothing"));
    let body = entry_body(&id, 0, &expires, json!({})).to_string();

    let (s, b) = call(q, "GET", "task/other.b", Some(&reader), None).await;
    assert_forbidden(s, &b, "findTask", "index:find-task:other.b");
    let (s, b) = call(q, "GET", "tasks/other", Some(&reader), None).await;
    assert_forbidden(s, &b, "listTasks", "index:list-tasks:other");
    let (s, b) = call(q, "GET", "tasks", Some(&reader), None).await;
    assert_forbidden(s, &b, "listTasks", "index:list-tasks:");
    let (s, b) = call(q, "GET", "namespaces/other", Some(&nothing), None).await;
    assert_forbidden(s, &b, "listNamespaces", "index:list-namespaces:other");
    let (s, b) = call(q, "PUT", "task/other.c", Some(&writer), Some(&body)).await;
    assert_forbidden(s, &b, "insertTask", "index:insert-task:other.c");
    let (s, b) = call(q, "PUT", "task/proj.c", Some(&reader), Some(&body)).await;
    assert_forbidden(s, &b, "insertTask", "index:insert-task:proj.c");
    let (s, b) = call(q, "PUT", "task/proj.c", None, Some(&body)).await;
    assert_forbidden(s, &b, "insertTask", "index:insert-task:proj.c");
    let (s, b) = call(q, "DELETE", "task/other.b", Some(&writer), None).await;
    assert_forbidden(s, &b, "deleteTask", "index:delete-task:other.b");
    let (s, b) = call(
        q,
        "POST",
        "tasks/indexes",
        Some(&reader),
        Some(r#"{"indexes": ["proj.a", "other.b"]}"#),
    )
    .await;
    assert_forbidden(s, &b, "findTasksAtIndex", "index:find-task:other.b");
    let (s, b) = call(q, "GET", "task/proj.a/artifacts/private/x", None, None).await;
    assert_forbidden(
        s,
        &b,
        "findArtifactFromTask",
        "queue:get-artifact:private/x",
    );

    // Within their scopes they succeed, and nothing was changed by the refusals.
    let (s, _) = call(q, "GET", "task/proj.a", Some(&reader), None).await;
    assert_eq!(s, 200);
    let (s, _) = call(q, "PUT", "task/proj.c", Some(&writer), Some(&body)).await;
    assert_eq!(s, 200);
    assert_eq!(root.findTask("other.b").await.unwrap()["taskId"], id);
}

/// A 400 or 404 with upstream's code.
fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(
        (status, body["code"].as_str()),
        (want_status, Some(code)),
        "{body}"
    );
}

async fn bad_input_gets_upstreams_errors(q: &TestQueue) {
    let root = root_creds(q);
    let expires = from_now(q, 3600);
    let good = entry_body(&slug(), 1, &expires, json!({}));

    let (s, b) = call(q, "PUT", "task/proj.x", Some(&root), Some("{not json")).await;
    assert_error(s, &b, 400, "MalformedPayload");
    let (s, b) = call(q, "PUT", "task/proj.x", Some(&root), None).await;
    assert_error(s, &b, 400, "MalformedPayload");
    for (field, bad) in [
        ("rank", json!("high")),
        ("rank", json!(1.5)),
        ("taskId", json!("not-a-slugid")),
        ("taskId", json!(7)),
        ("data", json!([1])),
        ("expires", json!("tomorrow")),
        ("unknown", json!(1)),
    ] {
        let mut body = good.clone();
        body[field] = bad;
        let (s, b) = call(
            q,
            "PUT",
            "task/proj.x",
            Some(&root),
            Some(&body.to_string()),
        )
        .await;
        assert_error(s, &b, 400, "InputValidationError");
    }
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("expires");
    let (s, b) = call(
        q,
        "PUT",
        "task/proj.x",
        Some(&root),
        Some(&missing.to_string()),
    )
    .await;
    assert_error(s, &b, 400, "InputValidationError");
    // Nothing was stored by the refused calls.
    let (s, _) = call(q, "GET", "task/proj.x", None, None).await;
    assert_eq!(s, 404);

    let (s, b) = call(
        q,
        "PUT",
        "task/proj..x",
        Some(&root),
        Some(&good.to_string()),
    )
    .await;
    assert_error(s, &b, 400, "InvalidRequestArguments");
    assert!(
        b["message"].as_str().unwrap().starts_with(
            "Invalid URL patterns:\nURL parameter 'namespace' given as 'proj..x' must match regular expression: '/^([a-zA-Z0-9_!~*'()%-]+\\.)*[a-zA-Z0-9_!~*'()%-]+$/'"
        ),
        "{b}"
    );
    let (s, b) = call(q, "GET", "task/a%2Fb", None, None).await;
    assert_error(s, &b, 400, "InvalidRequestArguments");
    let (s, b) = call(q, "GET", "tasks/bad..ns", None, None).await;
    assert_error(s, &b, 400, "InvalidRequestArguments");

    let (s, b) = call(q, "GET", "task/proj.unknown", None, None).await;
    assert_error(s, &b, 404, "ResourceNotFound");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .starts_with("Indexed task not found"),
        "{b}"
    );
    let (s, b) = call(q, "GET", "no/such/path", None, None).await;
    assert_error(s, &b, 404, "ResourceNotFound");

    let (s, b) = call(
        q,
        "POST",
        "tasks/indexes",
        Some(&root),
        Some(r#"{"indexes": "a.b"}"#),
    )
    .await;
    assert_error(s, &b, 400, "InputValidationError");
    let (s, b) = call(q, "GET", "tasks/proj?limit=0", None, None).await;
    assert_error(s, &b, 400, "InvalidRequestArguments");
    let (s, b) = call(q, "GET", "tasks/proj?continuationToken=%25%25", None, None).await;
    assert_error(s, &b, 400, "InputError");
    let (s, b) = call(
        q,
        "POST",
        "tasks/indexes?continuationToken=eA",
        Some(&root),
        Some(r#"{"indexes": ["a.b"]}"#),
    )
    .await;
    assert_error(s, &b, 400, "InputError");
}

/// A task on `prov/index-artifacts` with a public `s3` artifact, a public
/// reference and a private `s3` artifact, completed; its id.
async fn task_with_artifacts(q: &TestQueue) -> String {
    let queue = root_queue(q);
    let id = slug();
    queue
        .createTask(&id, &task_def(q, "prov/index-artifacts", json!({})))
        .await
        .unwrap();
    // The worker's part in-process: what is tested is the index's redirects.
    let inner = &q.running.queue;
    inner
        .claim_pending("prov/index-artifacts", "wg", "w", 1)
        .await
        .unwrap();
    for (name, bytes) in [
        ("public/file.txt", "public bytes"),
        ("private/secret.txt", "secret bytes"),
    ] {
        q.upload_s3(&id, 0, name, "text/plain", bytes.as_bytes())
            .await
            .unwrap();
    }
    let reference = json!({"storageType": "reference", "url": "https://example.com/elsewhere",
                           "contentType": "text/plain", "expires": from_now(q, 3600)});
    inner
        .create_artifact(&id, 0, "public/ref", &reference)
        .await
        .unwrap();
    inner
        .resolve_run(&id, 0, RunResolution::Completed)
        .await
        .unwrap();
    id
}

async fn find_artifact_from_task_redirects_to_the_artifact(q: &TestQueue) {
    let id = task_with_artifacts(q).await;
    index(q, Some(root_creds(q)))
        .insertTask(
            "arts.latest",
            &entry_body(&id, 0, &from_now(q, 3600), json!({})),
        )
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let location = |r: &reqwest::Response| r.headers()["location"].to_str().unwrap().to_string();
    let anonymous = index(q, None);

    // Public: straight to the bytes.
    let r = http
        .get(
            anonymous
                .findArtifactFromTask_url("arts.latest", "public/file.txt")
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let blob = location(&r);
    assert!(blob.contains("/blobs/"), "{blob}");
    assert_eq!(
        http.get(&blob).send().await.unwrap().text().await.unwrap(),
        "public bytes"
    );
    // A public reference: to its URL.
    let r = http
        .get(
            anonymous
                .findArtifactFromTask_url("arts.latest", "public/ref")
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), location(&r)),
        (303, "https://example.com/elsewhere".to_string())
    );
    // A public name without an artifact: to the queue, which answers 404.
    let r = http
        .get(
            anonymous
                .findArtifactFromTask_url("arts.latest", "public/none")
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let queue_url = location(&r);
    assert_eq!(
        queue_url,
        format!(
            "{}/api/queue/v1/task/{id}/artifacts/public/none",
            q.root_url
        )
    );
    assert_eq!(http.get(&queue_url).send().await.unwrap().status(), 404);

    // Private: to the queue's getLatestArtifact, signed, which leads to the bytes.
    let root = index(q, Some(root_creds(q)));
    let r = http
        .get(
            root.findArtifactFromTask_signed_url(
                "arts.latest",
                "private/secret.txt",
                Duration::from_secs(60),
            )
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let signed = location(&r);
    assert!(
        signed.starts_with(&format!(
            "{}/api/queue/v1/task/{id}/artifacts/private/secret.txt?bewit=",
            q.root_url
        )),
        "{signed}"
    );
    let r = http.get(&signed).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let bytes = http
        .get(location(&r))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(bytes, "secret bytes");

    // No entry: 404.
    let (s, b) = call(
        q,
        "GET",
        "task/arts.none/artifacts/public/file.txt",
        None,
        None,
    )
    .await;
    assert_error(s, &b, 404, "ResourceNotFound");
}
