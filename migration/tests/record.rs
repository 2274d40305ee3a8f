//! The migration record end to end: a `shadow` branch whose jobs run both on
//! the legacy master (its builds ingested with scripted results) and as
//! native tasks resolved by the queue's built-in workers, plus a bridged task
//! resolved by the queue's worker operations, give exactly the agreement,
//! false-failure and false-pass counts and the shares expected; the mapping's
//! API checks its scopes.

use bbb_migration::{MigrationConfig, Observation, Outcome, Side};
use bbb_queue::config::ClientConfig;
use bbb_queue::testing::{TestOptions, TestQueue, wait_for};
use bbb_testdb::{Backend, on_both_backends};
use serde_json::{Value, json};
use taskcluster::{ClientBuilder, Credentials, Queue, Retry};

on_both_backends!(
    crate::on;
    a_shadow_branch_gives_the_expected_comparison,
    the_mapping_is_changed_through_the_api,
);

const BRANCH: &str = "shadow-repo";

/// The mapping file the record starts with: `test-a` on this branch only,
/// `test-b` on every branch.
const MAPPING: &str = r#"
[[pair]]
branch = "shadow-repo"
label = "test-a"
builder = "linux.a"

[[pair]]
label = "test-b"
builder = "linux.b"
"#;

/// Whether a figure read back from JSON is `expected`: equal but for the
/// last bits a JSON number's text and its parse may round.
fn same_float(got: f64, expected: f64) -> bool {
    (got - expected).abs() <= 4.0 * f64::EPSILON * got.abs().max(expected.abs())
}

async fn on(backend: Backend, test: impl AsyncFnOnce(&TestQueue)) {
    let cfg = MigrationConfig {
        mapping: bbb_migration::parse_mapping(MAPPING).expect("mapping"),
        ..MigrationConfig::default()
    };
    let q = TestQueue::with_mounts(
        TestOptions {
            postgres: backend == Backend::Postgres,
            clients: vec![ClientConfig {
                client_id: "reader".into(),
                access_token: "reader-token".into(),
                scopes: vec!["migration:manage-mapping:other/*".into()],
                expires: None,
            }],
            ..Default::default()
        },
        vec![bbb_migration::mount(cfg), bbb_queue::builtin::mount()],
    )
    .await
    .expect("start the queue with the migration record");
    test(&q).await;
    q.stop().await;
}

fn root_queue(q: &TestQueue) -> Queue {
    let b = ClientBuilder::new(&q.root_url)
        .retry(Retry {
            retries: 0,
            ..Retry::default()
        })
        .credentials(Credentials::new(&q.root_client_id, &q.root_access_token));
    Queue::new(b).expect("client")
}

fn from_now(q: &TestQueue, secs: i64) -> String {
    bbb_clock::fmt_ms(q.clock.now_ms() + secs * 1000)
}

/// A task of the branch at `rev` as taskgraph makes it: `tags.label`,
/// `tags.project`, a Treeherder route and symbol.
fn graph_task(q: &TestQueue, task_queue_id: &str, label: &str, rev: &str) -> Value {
    json!({
        "taskQueueId": task_queue_id,
        "created": from_now(q, 0),
        "deadline": from_now(q, 3600),
        "payload": {},
        "routes": [format!("tc-treeherder.v2.{BRANCH}.{rev}.7")],
        "tags": {"label": label, "project": BRANCH, "kind": "test"},
        "extra": {"treeherder": {"symbol": label, "groupSymbol": "T"}},
        "metadata": {"name": label, "description": "a migration test task", "owner": "tests@example.com", "source": "https://example.com/tests"},
    })
}

/// A request to `<rootUrl>/api/migration/v1/<path>`, signed with `creds`
/// when given: its status and JSON body.
async fn call(
    q: &TestQueue,
    method: &str,
    path: &str,
    creds: Option<(&str, &str)>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}/api/migration/v1/{path}", q.root_url);
    let parsed = url::Url::parse(&url).expect("url");
    let body = body.map(|b| b.to_string());
    let mut req = reqwest::Client::new().request(method.parse().expect("method"), &url);
    if let Some(b) = &body {
        req = req
            .header("content-type", "application/json")
            .body(b.clone());
    }
    if let Some((id, token)) = creds {
        let resource = match parsed.query() {
            Some(qs) => format!("{}?{qs}", parsed.path()),
            None => parsed.path().to_string(),
        };
        let header = bbb_auth::hawk_header(
            id,
            token,
            None,
            None,
            method,
            &resource,
            parsed.host_str().expect("host"),
            parsed.port_or_known_default().expect("port"),
            body.as_deref().map(|b| (b.as_bytes(), "application/json")),
            q.clock.now(),
        );
        req = req.header("authorization", header);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A legacy build of `builder` at `rev`: `results` code, started `start_min`
/// minutes before now and running `minutes`.
fn build(
    q: &TestQueue,
    id: u32,
    builder: &str,
    rev: &str,
    results: i64,
    start_min: i64,
    minutes: i64,
) -> Observation {
    let started = q.clock.now_ms() - start_min * 60_000;
    Observation {
        side: Side::Buildbot,
        source_id: format!("build-{id}"),
        branch: BRANCH.into(),
        revision: rev.into(),
        job: builder.into(),
        builder: Some(builder.into()),
        symbol: None,
        result: Outcome::of_buildbot_results(results).expect("a results code"),
        started: Some(started),
        finished: started + minutes * 60_000,
    }
}

async fn a_shadow_branch_gives_the_expected_comparison(q: &TestQueue) {
    let queue = root_queue(q);
    let db = &q.running.queue.db;
    let revs = ["r1", "r2", "r3", "r4"];
    // The legacy master's own builds, oldest revision first (so the window
    // orders r4, r3, r2, r1). linux.a: S, S, F, F; linux.b: S, S, S, EXCEPTION;
    // linux.only: S on every revision.
    let (a, b) = ([0, 0, 2, 2], [0, 0, 0, 4]);
    let mut builds = Vec::new();
    for (i, rev) in revs.iter().enumerate() {
        let start = 100 - 10 * i as i64;
        builds.push(build(
            q,
            10 + i as u32,
            "linux.a",
            rev,
            a[i],
            start,
            20 + i as i64,
        ));
        builds.push(build(q, 20 + i as u32, "linux.b", rev, b[i], start, 30));
        builds.push(build(q, 30 + i as u32, "linux.only", rev, 0, start, 5));
    }
    bbb_migration::ingest(db, &builds).await.expect("ingest");
    // Delivered twice: nothing doubles.
    bbb_migration::ingest(db, &builds)
        .await
        .expect("ingest again");

    // The same jobs as native tasks. test-a: S, F, F, S (agree, false
    // failure, agree, false pass); test-b: S, S, F, S (agree, agree, false
    // failure, inconclusive); lint runs only natively.
    let na = ["succeed", "fail", "fail", "succeed"];
    let nb = ["succeed", "succeed", "fail", "succeed"];
    let mut tasks = Vec::new();
    for (i, rev) in revs.iter().enumerate() {
        for (label, how) in [("test-a", na[i]), ("test-b", nb[i]), ("lint", "succeed")] {
            let id = bbb_service::validate::slugid();
            let def = graph_task(q, &format!("built-in/{how}"), label, rev);
            queue.createTask(&id, &def).await.expect("createTask");
            tasks.push(id);
        }
    }
    // A bridged task, resolved as the bridge resolves one: claimed on the
    // bridge's task queue and reported completed. Its branch and revision
    // come from the payload's sourcestamp, its label from metadata.name.
    let bridged = bbb_service::validate::slugid();
    let mut def = graph_task(q, bbb_migration::BRIDGE_TASK_QUEUE, "test-bridged", "r4");
    def["routes"] = json!([]);
    def["tags"] = json!({});
    def["payload"] = json!({
        "buildername": "linux.bridged",
        "properties": {"product": "firefox"},
        "sourcestamp": {"branch": BRANCH, "revision": "r4"},
    });
    queue.createTask(&bridged, &def).await.expect("createTask");
    let claim = wait_for("the bridged task claimed", || async {
        let r = queue
            .claimWork(
                bbb_migration::BRIDGE_TASK_QUEUE,
                &json!({"workerGroup": "buildbot-bridge", "workerId": "bridge", "tasks": 1}),
            )
            .await
            .expect("claimWork");
        r["tasks"].as_array().and_then(|t| t.first().cloned())
    })
    .await;
    assert_eq!(claim["status"]["taskId"], bridged);
    queue
        .reportCompleted(&bridged, "0")
        .await
        .expect("reportCompleted");
    // A task of no branch is left out.
    let stray = bbb_service::validate::slugid();
    let mut def = graph_task(q, "built-in/succeed", "stray", "r1");
    def["routes"] = json!([]);
    def["tags"] = json!({});
    queue.createTask(&stray, &def).await.expect("createTask");
    tasks.push(stray);

    // Every task resolved (the stray one too, which the feed then drops)...
    wait_for("every task resolved", || async {
        for id in &tasks {
            let s = queue.status(id).await.expect("status");
            let state = &s["status"]["state"];
            if state == "pending" || state == "running" {
                return None;
            }
        }
        Some(())
    })
    .await;
    // ...and every resolution recorded through the feed.
    let feed_queue = q.running.queue.clone();
    wait_for("every resolution taken from the feed", || async {
        let (_, obs) = bbb_migration::store::window(db, BRANCH, 100)
            .await
            .expect("window");
        let native = obs.iter().filter(|o| o.side != Side::Buildbot).count();
        let drained = feed_queue
            .feed_len(bbb_migration::FEED)
            .await
            .expect("feed")
            == 0;
        (native == 13 && drained).then_some(())
    })
    .await;
    let (revisions, obs) = bbb_migration::store::window(db, BRANCH, 100).await.unwrap();
    assert_eq!(revisions, ["r4", "r3", "r2", "r1"]);
    assert_eq!(obs.len(), 12 + 13, "each build and each run once");
    assert!(obs.iter().all(|o| o.job != "stray"));

    // The branch: test-a and test-b (pairs, native), lint (native),
    // test-bridged ↔ linux.bridged (bridged), linux.only (Buildbot only).
    let (status, branches) = call(q, "GET", "branches", None, None).await;
    assert_eq!(status, 200, "{branches}");
    assert_eq!(
        branches,
        json!({"revisions": 10, "branches": [{
            "branch": BRANCH,
            "revisions": ["r4", "r3", "r2", "r1"],
            "counts": {"jobs": 5, "native": 3, "bridged": 1, "buildbotOnly": 1},
            "shares": {"jobs": 1.0, "native": 0.6, "bridged": 0.2, "buildbotOnly": 0.2},
        }]})
    );
    let (status, jobs) = call(q, "GET", &format!("branches/{BRANCH}/jobs"), None, None).await;
    assert_eq!(status, 200, "{jobs}");
    let summary: Vec<(Value, Value, Value, Value)> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["label"].clone(),
                j["builder"].clone(),
                j["runsOn"].clone(),
                j["sides"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                json!(null),
                json!("linux.only"),
                json!("buildbotOnly"),
                json!(["buildbot"])
            ),
            (
                json!("lint"),
                json!(null),
                json!("native"),
                json!(["native"])
            ),
            (
                json!("test-a"),
                json!("linux.a"),
                json!("native"),
                json!(["native", "buildbot"])
            ),
            (
                json!("test-b"),
                json!("linux.b"),
                json!("native"),
                json!(["native", "buildbot"])
            ),
            (
                json!("test-bridged"),
                json!("linux.bridged"),
                json!("bridged"),
                json!(["bridged"])
            ),
        ]
    );
    let test_a = &jobs["jobs"][2];
    assert_eq!(test_a["symbol"], "T(test-a)");
    assert_eq!(test_a["last"]["buildbot"]["sourceId"], "build-13");
    assert_eq!(test_a["last"]["buildbot"]["result"], "failure");
    assert_eq!(test_a["last"]["native"]["revision"], "r4");
    assert_eq!(test_a["last"]["native"]["result"], "success");

    // The pairs over all four revisions.
    let expect = [
        (
            "test-a",
            "linux.a",
            4,
            2,
            1,
            1,
            0,
            ["falsePass", "agree", "falseFailure", "agree"],
        ),
        (
            "test-b",
            "linux.b",
            4,
            2,
            1,
            0,
            1,
            ["inconclusive", "falseFailure", "agree", "agree"],
        ),
    ];
    for (label, builder, both, agree, ff, fp, inc, runs) in expect {
        let (status, c) = call(
            q,
            "GET",
            &format!("branches/{BRANCH}/pairs/{label}"),
            None,
            None,
        )
        .await;
        assert_eq!(status, 200, "{c}");
        assert_eq!(
            (
                &c["builder"],
                &c["newSide"],
                &c["bothRan"],
                &c["agreeing"],
                &c["falseFailures"],
                &c["falsePasses"],
                &c["inconclusive"]
            ),
            (
                &json!(builder),
                &json!("native"),
                &json!(both),
                &json!(agree),
                &json!(ff),
                &json!(fp),
                &json!(inc)
            ),
            "{label}: {c}"
        );
        let got: Vec<&str> = c["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["comparison"].as_str().unwrap())
            .collect();
        assert_eq!(got, runs, "{label}");
        // The ratio is the median native runtime over the median build runtime.
        let median = |side: &str| {
            let mut t: Vec<i64> = c["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    r[side]["finished"].as_i64().unwrap() - r[side]["started"].as_i64().unwrap()
                })
                .collect();
            t.sort();
            (t[1] + t[2]) as f64 / 2.0
        };
        let (got, expected) = (c["runtimeRatio"].as_f64(), median("new") / median("old"));
        assert!(
            got.is_some_and(|g| same_float(g, expected)),
            "{label}: {got:?} != {expected}"
        );
    }
    // Over the last two revisions only: test-a is r4 false pass, r3 agree.
    let (_, c) = call(
        q,
        "GET",
        &format!("branches/{BRANCH}/pairs/test-a?revisions=2"),
        None,
        None,
    )
    .await;
    assert_eq!(
        (
            &c["bothRan"],
            &c["agreeing"],
            &c["falsePasses"],
            &c["falseFailures"]
        ),
        (&json!(2), &json!(1), &json!(1), &json!(0))
    );
    // The bridged pair compares the bridge's run with no build of its own: nothing ran on both sides.
    let (_, c) = call(
        q,
        "GET",
        &format!("branches/{BRANCH}/pairs/test-bridged"),
        None,
        None,
    )
    .await;
    assert_eq!(
        (&c["builder"], &c["newSide"], &c["bothRan"]),
        (&json!("linux.bridged"), &json!("bridged"), &json!(0))
    );
    // Errors in upstream's shape.
    let (status, e) = call(
        q,
        "GET",
        &format!("branches/{BRANCH}/pairs/lint"),
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (404, Some("ResourceNotFound"))
    );
    let (status, e) = call(q, "GET", "branches?revisions=0", None, None).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (400, Some("InvalidRequestArguments"))
    );
    let (status, _) = call(q, "GET", "branches/nowhere/jobs", None, None).await;
    assert_eq!(status, 404);
}

async fn the_mapping_is_changed_through_the_api(q: &TestQueue) {
    let root = (q.root_client_id.as_str(), q.root_access_token.as_str());
    let (status, m) = call(q, "GET", "mapping", None, None).await;
    assert_eq!(status, 200);
    let entries: Vec<(Value, Value, Value, Value)> = m["mapping"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["branch"].clone(),
                e["label"].clone(),
                e["builder"].clone(),
                e["source"].clone(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            (json!("*"), json!("test-b"), json!("linux.b"), json!("file")),
            (
                json!(BRANCH),
                json!("test-a"),
                json!("linux.a"),
                json!("file")
            ),
        ]
    );
    // Without the scope: 403; with it (for another branch): done.
    let body = json!({"builder": "linux.x"});
    let (status, e) = call(
        q,
        "PUT",
        &format!("mapping/{BRANCH}/test-x"),
        Some(("reader", "reader-token")),
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (403, Some("InsufficientScopes")),
        "{e}"
    );
    let (status, e) = call(
        q,
        "PUT",
        "mapping/other/test-x/opt",
        Some(("reader", "reader-token")),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 200, "{e}");
    assert_eq!(
        (
            &e["branch"],
            &e["label"],
            &e["builder"],
            &e["source"],
            &e["updatedBy"]
        ),
        (
            &json!("other"),
            &json!("test-x/opt"),
            &json!("linux.x"),
            &json!("api"),
            &json!("reader")
        )
    );
    let (status, e) = call(
        q,
        "PUT",
        "mapping/other/test-y",
        Some(root),
        Some(json!({"builder": "b", "extra": 1})),
    )
    .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (400, Some("InputValidationError"))
    );
    // A branch's own entry wins over the all-branches one in the pairing.
    let (status, _) = call(
        q,
        "PUT",
        "mapping/other/test-b",
        Some(root),
        Some(json!({"builder": "linux.b2"})),
    )
    .await;
    assert_eq!(status, 200);
    let db = &q.running.queue.db;
    let all = bbb_migration::store::mapping(db).await.unwrap();
    let other = bbb_migration::store::mapping_for(&all, "other");
    assert!(other.contains(&("test-b".into(), "linux.b2".into())));
    assert!(other.contains(&("test-x/opt".into(), "linux.x".into())));
    let elsewhere = bbb_migration::store::mapping_for(&all, "elsewhere");
    assert_eq!(elsewhere, [("test-b".to_string(), "linux.b".to_string())]);
    let (status, _) = call(q, "DELETE", "mapping/other/test-x/opt", Some(root), None).await;
    assert_eq!(status, 204);
    let (status, e) = call(q, "DELETE", "mapping/other/test-x/opt", Some(root), None).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (404, Some("ResourceNotFound"))
    );
}
