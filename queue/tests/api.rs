//! The HTTP surface: authentication, scopes, input validation, error bodies,
//! paths in both encodings, monitoring endpoints.

mod common;

use bbb_queue::config::ClientConfig;
use bbb_queue::testing::{TestOptions, TestQueue};
use common::*;
use serde_json::{Value, json};
use taskcluster::Credentials;

async fn queue_with_clients() -> TestQueue {
    TestQueue::with(TestOptions {
        clients: vec![
            ClientConfig {
                client_id: "limited".into(),
                access_token: "limited-token".into(),
                scopes: vec!["queue:get-task:*".into()],
                expires: None,
            },
            ClientConfig {
                client_id: "creator".into(),
                access_token: "creator-token".into(),
                scopes: vec![
                    "queue:create-task:high:prov/*".into(),
                    "queue:scheduler-id:-".into(),
                    "queue:create-task:project:none".into(),
                ],
                expires: None,
            },
        ],
        ..Default::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn scopes_are_enforced() {
    let q = queue_with_clients().await;
    let limited = with_creds(&q, Credentials::new("limited", "limited-token"));
    let e = create_refused(&limited, "prov/x", json!({})).await;
    assert_eq!(status_of(&e), 403);
    let text = text_of(&e);
    assert!(
        text.contains("InsufficientScopes") && text.contains("queue:create-task:project:none"),
        "{text}"
    );

    // Priority scopes: `high` allows high and lower, not very-high.
    let creator = with_creds(&q, Credentials::new("creator", "creator-token"));
    creator
        .createTask(&slug(), &task_def("prov/x", json!({"priority": "low"})))
        .await
        .unwrap();
    let e = create_refused(&creator, "prov/x", json!({"priority": "very-high"})).await;
    assert_eq!(status_of(&e), 403);
    // Routes and task scopes need matching scopes.
    let e = create_refused(&creator, "prov/x", json!({"routes": ["index.a"]})).await;
    assert_eq!(status_of(&e), 403);
    let e = create_refused(&creator, "prov/x", json!({"scopes": ["secrets:get:x"]})).await;
    assert_eq!(status_of(&e), 403);

    // Anonymous callers can read but not claim.
    let id = slug();
    root(&q)
        .createTask(&id, &task_def("prov/x", json!({})))
        .await
        .unwrap();
    let anon = anonymous(&q);
    assert_eq!(
        anon.status(&id).await.unwrap()["status"]["taskId"],
        id.as_str()
    );
    let e = anon
        .claimWork("prov/x", &json!({"workerGroup": "g", "workerId": "w"}))
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), 403);
    q.stop().await;
}

#[tokio::test]
async fn bad_credentials_are_refused() {
    let q = queue_with_clients().await;
    let wrong = with_creds(&q, Credentials::new("limited", "not-the-token"));
    let e = wrong.task(&slug()).await.unwrap_err();
    assert_eq!(status_of(&e), 401);
    assert!(
        text_of(&e).contains("AuthenticationFailed"),
        "{}",
        text_of(&e)
    );
    let unknown = with_creds(&q, Credentials::new("nobody", "x"));
    assert_eq!(status_of(&unknown.task(&slug()).await.unwrap_err()), 401);
    // Task credentials only reach their own task.
    let queue = root(&q);
    let (a, b) = (slug(), slug());
    create(&queue, &a, "prov/own", json!({})).await;
    create(&queue, &b, "prov/own", json!({})).await;
    let claim = claim_one(&queue, "prov/own", "w").await;
    let mine = claim["status"]["taskId"].as_str().unwrap().to_string();
    let other = if mine == a { &b } else { &a };
    let t = with_creds(&q, task_creds(&claim));
    assert_eq!(
        status_of(&t.reportCompleted(other, "0").await.unwrap_err()),
        403
    );
    q.stop().await;
}

async fn raw(
    q: &TestQueue,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}/api/queue/v1/{path}", q.root_url);
    let u = url::Url::parse(&url).unwrap();
    let resource = match u.query() {
        Some(qs) => format!("{}?{qs}", u.path()),
        None => u.path().to_string(),
    };
    let bytes = body.as_ref().map(|b| serde_json::to_vec(b).unwrap());
    let header = bbb_auth::hawk_header(
        &q.root_client_id,
        &q.root_access_token,
        None,
        None,
        method.as_str(),
        &resource,
        "127.0.0.1",
        u.port().unwrap(),
        bytes.as_deref().map(|b| (b, "application/json")),
        chrono::Utc::now(),
    );
    let mut req = reqwest::Client::new()
        .request(method, &url)
        .header("authorization", header);
    if let Some(b) = bytes {
        req = req.header("content-type", "application/json").body(b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `__version__` names the configured source URL (by default the workspace's
/// `repository`) and the package's version.
#[tokio::test]
async fn version_names_the_source_and_the_version() {
    for (source_url, want) in [
        (None, "https://github.com/bbb-project/bbb"),
        (
            Some("https://git.example.com/ci/bbb"),
            "https://git.example.com/ci/bbb",
        ),
    ] {
        let q = TestQueue::with(TestOptions {
            source_url: source_url.map(String::from),
            ..Default::default()
        })
        .await
        .unwrap();
        let v: Value = reqwest::get(format!("{}/api/queue/v1/__version__", q.root_url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["source"], want, "{v}");
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"), "{v}");
        q.stop().await;
    }
}

#[tokio::test]
async fn malformed_input_gets_upstream_errors() {
    let q = TestQueue::sqlite().await;
    let id = slug();
    let mut def = task_def("prov/bad", json!({}));
    def["unexpected"] = json!(1);
    let (status, body) = raw(&q, reqwest::Method::PUT, &format!("task/{id}"), Some(def)).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "InputValidationError");
    assert_eq!(body["requestInfo"]["method"], "createTask");
    assert_eq!(body["requestInfo"]["params"]["taskId"], id.as_str());
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("errorCode:  InputValidationError")
    );

    // Each: the call, its body and upstream's error code (`None`: only the
    // status is checked).
    let create = format!("task/{id}");
    let routes: Vec<String> = (0..65).map(|i| format!("r.{i}")).collect();
    let cases = [
        (
            create.as_str(),
            task_def("prov/bad", json!({"deadline": from_now(-60)})),
            Some("InputError"),
        ),
        (
            &create,
            task_def("prov/bad", json!({"deadline": from_now(6 * 86400)})),
            Some("InputError"),
        ),
        (
            &create,
            task_def("prov/bad", json!({"created": from_now(-3600)})),
            Some("InputError"),
        ),
        (
            &create,
            task_def("prov/bad", json!({"priority": "normal"})),
            Some("InputValidationError"),
        ),
        (
            &create,
            task_def("prov/bad", json!({"routes": routes})),
            None,
        ),
        (
            &create,
            task_def("prov/bad", json!({"retries": 50})),
            Some("InputValidationError"),
        ),
        (
            "task/not-a-slug",
            task_def("prov/bad", json!({})),
            Some("InvalidRequestArguments"),
        ),
        (
            &create,
            task_def("Bad Queue", json!({})),
            Some("InputValidationError"),
        ),
        (
            "claim-work/prov%2Fbad",
            json!({"workerGroup": "g", "workerId": "w", "tasks": 33}),
            Some("InputValidationError"),
        ),
    ];
    for (path, input, code) in cases {
        let method = if path.starts_with("claim-work/") {
            reqwest::Method::POST
        } else {
            reqwest::Method::PUT
        };
        let (status, body) = raw(&q, method, path, Some(input.clone())).await;
        assert_eq!(status, 400, "{path} {input}: {body}");
        if let Some(code) = code {
            assert_eq!(body["code"].as_str(), Some(code), "{path} {input}: {body}");
        }
    }

    // A body that is not JSON.
    let r = reqwest::Client::new()
        .put(format!("{}/api/queue/v1/task/{id}", q.root_url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "MalformedPayload");
    // Unknown things are 404 with the error body.
    let (status, body) = raw(&q, reqwest::Method::GET, &format!("task/{id}"), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("ResourceNotFound"))
    );
    let (status, _) = raw(&q, reqwest::Method::GET, "no/such/method", None).await;
    assert_eq!(status, 404);
    q.stop().await;
}

#[tokio::test]
async fn encoded_and_raw_paths_and_monitoring() {
    let q = TestQueue::sqlite().await;
    let queue = root(&q);
    let id = new_task(&queue, "prov/enc", json!({})).await;
    let counts = async |path| raw(&q, reqwest::Method::GET, path, None).await;
    let (s1, b1) = counts("task-queues/prov%2Fenc/counts").await;
    let (s2, b2) = counts("task-queues/prov/enc/counts").await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(b1, b2);
    assert_eq!(b1["pendingTasks"], 1);
    let (s, b) = raw(&q, reqwest::Method::GET, "pending/prov/enc", None).await;
    assert_eq!((s, b["pendingTasks"].as_i64()), (200, Some(1)));
    let (s, b) = raw(
        &q,
        reqwest::Method::POST,
        "claim-work/prov/enc",
        Some(json!({"workerGroup": "g", "workerId": "w"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b["tasks"][0]["status"]["taskId"], id.as_str());
    let claimed = queue
        .listClaimedTasks("prov/enc", None, None)
        .await
        .unwrap();
    assert_eq!(claimed["tasks"][0]["workerId"], "w");
    let queues = queue.listTaskQueues(None, None).await.unwrap();
    assert!(
        queues["taskQueues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["taskQueueId"] == "prov/enc")
    );
    let tq = queue.getTaskQueue("prov/enc").await.unwrap();
    assert_eq!(tq["taskQueueId"], "prov/enc");
    let workers = queue
        .listWorkers("prov", "enc", None, None, None)
        .await
        .unwrap();
    assert_eq!(workers["workers"][0]["workerId"], "w");
    let worker = queue.getWorker("prov", "enc", "g", "w").await.unwrap();
    assert_eq!(worker["recentTasks"][0]["taskId"], id.as_str());
    // Batch reads.
    let statuses = queue
        .statuses(&json!({"taskIds": [id, slug()]}), None, None)
        .await
        .unwrap();
    assert_eq!(statuses["statuses"].as_array().unwrap().len(), 1);
    let tasks = queue
        .tasks(&json!({"taskIds": [id]}), None, None)
        .await
        .unwrap();
    assert_eq!(tasks["tasks"][0]["task"]["taskQueueId"], "prov/enc");

    let http = reqwest::Client::new();
    for (path, key) in [("ping", "alive"), ("__version__", "version")] {
        let response = http
            .get(format!("{}/api/queue/v1/{path}", q.root_url))
            .send()
            .await
            .unwrap();
        let v: Value = response.json().await.unwrap();
        assert!(!v[key].is_null(), "{path}: {v}");
    }
    for path in ["__lbheartbeat__", "__heartbeat__"] {
        let r = http
            .get(format!("{}/api/queue/v1/{path}", q.root_url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    q.stop().await;
}
