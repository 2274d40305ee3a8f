//! `artifact` and `latestArtifact` (the `artifact-content` paths the clients'
//! download helpers call): where each kind of artifact's content is, as JSON,
//! links followed with the scope of each name checked, on SQLite and PostgreSQL.

mod common;

use bbb_queue::testing::TestQueue;
use bbb_testdb::on_both_backends;
use common::*;
use serde_json::{Value, json};

on_both_backends!(
    bbb_queue::testing::TestQueue::on;
    artifact_content_tells_where_the_content_is,
    artifact_content_refuses_like_upstream,
);

/// A completed task on `prov/content` with `public/a.txt` and `private/b.txt`
/// (`s3`, uploaded), `public/ref` (a reference), `public/link` → `public/a.txt`,
/// `public/to-private` → `private/b.txt` and `public/err` (an error). Its id.
async fn task_with_artifacts(q: &TestQueue) -> String {
    let queue = root(q);
    let id = slug();
    queue
        .createTask(&id, &task_def("prov/content", json!({})))
        .await
        .unwrap();
    let as_task = with_creds(q, task_creds(&claim_one(&queue, "prov/content", "w").await));
    for (name, bytes) in [("public/a.txt", "aaa"), ("private/b.txt", "bbb")] {
        q.upload_s3(&id, 0, name, "text/plain", bytes.as_bytes())
            .await
            .unwrap();
    }
    for (name, body) in [
        (
            "public/ref",
            json!({"storageType": "reference", "contentType": "text/plain", "url": "https://example.com/r"}),
        ),
        (
            "public/link",
            json!({"storageType": "link", "artifact": "public/a.txt"}),
        ),
        (
            "public/to-private",
            json!({"storageType": "link", "artifact": "private/b.txt"}),
        ),
        (
            "public/err",
            json!({"storageType": "error", "reason": "file-missing-on-worker", "message": "no such file"}),
        ),
    ] {
        let mut body = body;
        body["expires"] = from_now(600).into();
        as_task.createArtifact(&id, "0", name, &body).await.unwrap();
    }
    as_task.reportCompleted(&id, "0").await.unwrap();
    id
}

async fn artifact_content_tells_where_the_content_is(q: &TestQueue) {
    let id = task_with_artifacts(q).await;
    let queue = root(q);
    let http = reqwest::Client::new();
    for got in [
        queue.artifact(&id, "0", "public/a.txt").await.unwrap(),
        queue.latestArtifact(&id, "public/a.txt").await.unwrap(),
        queue.latestArtifact(&id, "public/link").await.unwrap(),
        anonymous(q)
            .latestArtifact(&id, "public/a.txt")
            .await
            .unwrap(),
    ] {
        assert_eq!(got.as_object().unwrap().len(), 2, "{got}");
        assert_eq!(got["storageType"], "s3");
        let bytes = http.get(got["url"].as_str().unwrap()).send().await.unwrap();
        assert_eq!(bytes.text().await.unwrap(), "aaa");
    }
    let got = queue.latestArtifact(&id, "private/b.txt").await.unwrap();
    let bytes = http.get(got["url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(bytes.text().await.unwrap(), "bbb");
    assert_eq!(
        queue.artifact(&id, "0", "public/ref").await.unwrap(),
        json!({"storageType": "reference", "url": "https://example.com/r"})
    );
    // An error artifact's content is its error, with 200.
    assert_eq!(
        queue.latestArtifact(&id, "public/err").await.unwrap(),
        json!({"storageType": "error", "reason": "file-missing-on-worker", "message": "no such file"})
    );
}

/// A raw GET of `<rootUrl>/api/queue/v1/<path>` without credentials.
async fn get(q: &TestQueue, path: &str) -> (u16, Value) {
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/api/queue/v1/{path}", q.root_url))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn artifact_content_refuses_like_upstream(q: &TestQueue) {
    let id = task_with_artifacts(q).await;
    // Not a redirect, whatever the storage type.
    let (s, body) = get(q, &format!("task/{id}/artifact-content/public/a.txt")).await;
    assert_eq!((s, &body["storageType"]), (200, &json!("s3")));
    // Anonymous callers may get `public/*` only, and each link's target is checked.
    for path in [
        format!("task/{id}/artifact-content/private/b.txt"),
        format!("task/{id}/runs/0/artifact-content/private/b.txt"),
        format!("task/{id}/artifact-content/public/to-private"),
    ] {
        let (s, body) = get(q, &path).await;
        assert_eq!(
            (s, body["code"].as_str()),
            (403, Some("InsufficientScopes")),
            "{path}: {body}"
        );
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("queue:get-artifact:private/b.txt"),
            "{body}"
        );
    }
    let (s, body) = get(q, &format!("task/{id}/artifact-content/private/b.txt")).await;
    assert_eq!(body["requestInfo"]["method"], "latestArtifact", "{s}");
    let (s, body) = get(
        q,
        &format!("task/{id}/runs/0/artifact-content/public/a.txt"),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    for (path, status, code) in [
        (
            format!("task/{id}/artifact-content/public/none"),
            404,
            "ResourceNotFound",
        ),
        (
            format!("task/{id}/runs/1/artifact-content/public/a.txt"),
            404,
            "ResourceNotFound",
        ),
        (
            format!("task/{}/artifact-content/public/a.txt", slug()),
            404,
            "ResourceNotFound",
        ),
        (
            format!("task/{id}/runs/x/artifact-content/public/a.txt"),
            400,
            "InvalidRequestArguments",
        ),
        (
            "task/not-a-slug/artifact-content/public/a.txt".to_string(),
            400,
            "InvalidRequestArguments",
        ),
    ] {
        let (s, body) = get(q, &path).await;
        assert_eq!(
            (s, body["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
    }
}
