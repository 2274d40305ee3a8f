//! Helpers shared by the index's integration tests: a queue with the index and
//! the built-in workers beside it, official clients, raw requests, task
//! definitions and polling.
#![allow(dead_code)]

use bbb_queue::config::{ClientConfig, RoleConfig};
use bbb_queue::testing::{TestOptions, TestQueue};
use bbb_testdb::Backend;
use serde_json::{Value, json};
use taskcluster::{ClientBuilder, Credentials, Index, Queue, Retry};

/// A client whose scopes a test chooses.
pub use bbb_queue::testing::test_client as client;

/// The clients of [`start`]: `reader` (find and list only), `writer` (insert
/// and delete under `proj.*`), `nothing` (no scopes).
pub fn clients() -> Vec<ClientConfig> {
    vec![
        client(
            "reader",
            &[
                "index:find-task:proj.*",
                "index:list-tasks:proj.*",
                "index:list-namespaces:proj.*",
            ],
        ),
        client(
            "writer",
            &["index:insert-task:proj.*", "index:delete-task:proj.*"],
        ),
        client("nothing", &[]),
    ]
}

/// A queue on `backend` with the index and the built-in workers beside it and
/// the clients of [`clients`]; anonymous callers have the default scopes
/// (reading the index, `public/*` artifacts).
pub async fn start(backend: Backend) -> TestQueue {
    start_with(TestOptions {
        postgres: backend == Backend::Postgres,
        clients: clients(),
        ..Default::default()
    })
    .await
}

/// The fixture of `on_both_backends!` for scope checks: [`start`], but
/// anonymous callers may only get `public/*` artifacts, so what a client
/// may do is what its own scopes allow (every client has the anonymous role's).
pub async fn on_restricted(backend: Backend, test: impl AsyncFnOnce(&TestQueue)) {
    let q = start_with(TestOptions {
        postgres: backend == Backend::Postgres,
        clients: clients(),
        roles: vec![RoleConfig {
            role_id: "anonymous".into(),
            scopes: vec!["queue:get-artifact:public/*".into()],
        }],
        ..Default::default()
    })
    .await;
    test(&q).await;
    q.stop().await;
}

/// A queue with `opts` and the index and the built-in workers beside it.
pub async fn start_with(opts: TestOptions) -> TestQueue {
    TestQueue::with_mounts(opts, vec![bbb_index::mount(), bbb_queue::builtin::mount()])
        .await
        .expect("start the queue with the index")
}

/// The fixture of `on_both_backends!`.
pub async fn on(backend: Backend, test: impl AsyncFnOnce(&TestQueue)) {
    let q = start(backend).await;
    test(&q).await;
    q.stop().await;
}

/// A client builder for `q` that does not retry, so an error shows as itself.
fn builder(q: &TestQueue) -> ClientBuilder {
    let no_retries = Retry {
        retries: 0,
        ..Retry::default()
    };
    ClientBuilder::new(&q.root_url).retry(no_retries)
}

/// The official index client with `creds` (none: anonymous).
pub fn index(q: &TestQueue, creds: Option<Credentials>) -> Index {
    let b = builder(q);
    Index::new(match creds {
        Some(c) => b.credentials(c),
        None => b,
    })
    .expect("client")
}

/// The root credentials.
pub fn root_creds(q: &TestQueue) -> Credentials {
    Credentials::new(&q.root_client_id, &q.root_access_token)
}

/// The credentials of a client of [`clients`].
pub fn creds(id: &str) -> Credentials {
    Credentials::new(id, bbb_queue::testing::test_token(id))
}

/// The official queue client with root credentials.
pub fn root_queue(q: &TestQueue) -> Queue {
    Queue::new(builder(q).credentials(root_creds(q))).expect("client")
}

/// A fresh slugid.
pub fn slug() -> String {
    bbb_service::validate::slugid()
}

/// A date `secs` from now (by the queue's clock) in upstream's format.
pub fn from_now(q: &TestQueue, secs: i64) -> String {
    bbb_clock::fmt_ms(q.clock.now_ms() + secs * 1000)
}

/// A task definition on `task_queue_id` with `extra` fields merged in.
pub fn task_def(q: &TestQueue, task_queue_id: &str, extra: Value) -> Value {
    let mut t = json!({
        "taskQueueId": task_queue_id,
        "created": from_now(q, 0),
        "deadline": from_now(q, 3600),
        "payload": {},
        "metadata": {"name": "t", "description": "an index test task", "owner": "tests@example.com", "source": "https://example.com/tests"},
    });
    for (k, v) in extra.as_object().expect("extra is an object") {
        t[k] = v.clone();
    }
    t
}

/// The HTTP status of a client error.
pub fn status_of(e: &anyhow::Error) -> u16 {
    taskcluster::err_status_code(e)
        .map(|s| s.as_u16())
        .unwrap_or(0)
}

/// A raw request to `<rootUrl>/api/index/v1/<path>`, signed with `creds`
/// when given: its status and JSON body (`null` when it is not JSON).
pub async fn call(
    q: &TestQueue,
    method: &str,
    path: &str,
    creds: Option<&Credentials>,
    body: Option<&str>,
) -> (u16, Value) {
    let url = format!("{}/api/index/v1/{path}", q.root_url);
    let parsed = url::Url::parse(&url).expect("url");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client");
    let mut req = client.request(method.parse().expect("method"), &url);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    if let Some(c) = creds {
        let resource = match parsed.query() {
            Some(qs) => format!("{}?{qs}", parsed.path()),
            None => parsed.path().to_string(),
        };
        let header = bbb_auth::hawk_header(
            &c.client_id,
            &c.access_token,
            c.certificate.as_deref(),
            None,
            method,
            &resource,
            parsed.host_str().expect("host"),
            parsed.port_or_known_default().expect("port"),
            body.map(|b| (b.as_bytes(), "application/json")),
            q.clock.now(),
        );
        req = req.header("authorization", header);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub use bbb_queue::testing::wait_for;

/// Wait until a task is resolved; its status.
pub async fn wait_resolved(q: &TestQueue, task_id: &str) -> Value {
    let queue = root_queue(q);
    wait_for(&format!("{task_id} to resolve"), || async {
        let s = queue.status(task_id).await.expect("status");
        let state = s["status"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        ["completed", "failed", "exception"]
            .contains(&state.as_str())
            .then_some(s)
    })
    .await
}

/// Wait until the index's feed is empty (every completion handled).
pub async fn wait_feed_drained(q: &TestQueue) {
    let queue = q.running.queue.clone();
    wait_for("the index feed to drain", || async {
        (queue.feed_len(bbb_index::FEED).await.expect("feed length") == 0).then_some(())
    })
    .await
}
