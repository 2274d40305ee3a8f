//! The record's history and milestones through its API, on SQLite and
//! PostgreSQL: a branch's shares per revision, exactly as its observations
//! give them; milestones created, read with their progress (which moves as
//! a job turns native, and is overdue past its date), updated and deleted,
//! each write checking `migration:manage-milestone:<name>` and its body.

use bbb_migration::{MigrationConfig, Observation, Outcome, Side};
use bbb_queue::config::ClientConfig;
use bbb_queue::testing::{TestOptions, TestQueue};
use bbb_testdb::{Backend, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    crate::on;
    a_branch_s_history_gives_its_shares_per_revision,
    milestones_are_managed_with_their_scopes_and_show_progress,
);

const BRANCH: &str = "ms-branch";

async fn on(backend: Backend, test: impl AsyncFnOnce(&TestQueue)) {
    let q = TestQueue::with_mounts(
        TestOptions {
            postgres: backend == Backend::Postgres,
            clients: vec![ClientConfig {
                client_id: "planner".into(),
                access_token: "planner-token".into(),
                scopes: vec!["migration:manage-milestone:q1-*".into()],
                expires: None,
            }],
            ..Default::default()
        },
        vec![bbb_migration::mount(MigrationConfig {
            poll: None,
            ..MigrationConfig::default()
        })],
    )
    .await
    .expect("start the queue with the migration record");
    test(&q).await;
    q.stop().await;
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

/// An observation of `job` on `side` at `rev`, started `at` minutes after
/// the epoch of the test (revisions are ordered by their first start).
fn obs(side: Side, id: &str, rev: &str, job: &str, builder: Option<&str>, at: i64) -> Observation {
    Observation {
        side,
        source_id: id.into(),
        branch: BRANCH.into(),
        revision: rev.into(),
        job: job.into(),
        builder: builder.map(Into::into),
        symbol: None,
        result: Outcome::Success,
        started: Some(1_700_000_000_000 + at * 60_000),
        finished: 1_700_000_000_000 + (at + 5) * 60_000,
    }
}

async fn a_branch_s_history_gives_its_shares_per_revision(q: &TestQueue) {
    let db = &q.running.queue.db;
    use Side::*;
    bbb_migration::ingest(
        db,
        &[
            // r1: lin.build on Buildbot and through the bridge (one job, a
            // pair by the bridged task's builder), lin.talos on Buildbot.
            obs(Buildbot, "m/1", "r1", "lin.build", Some("lin.build"), 0),
            obs(Bridged, "b1/0", "r1", "build-lin", Some("lin.build"), 1),
            obs(Buildbot, "m/2", "r1", "lin.talos", Some("lin.talos"), 2),
            // r2: the pair on Buildbot and natively, lin.talos, lint native.
            obs(Buildbot, "m/3", "r2", "lin.build", Some("lin.build"), 10),
            obs(Native, "n2/0", "r2", "build-lin", None, 11),
            obs(Buildbot, "m/4", "r2", "lin.talos", Some("lin.talos"), 12),
            obs(Native, "l2/0", "r2", "lint", None, 13),
            // r3: everything native.
            obs(Native, "n3/0", "r3", "build-lin", None, 20),
            obs(Native, "l3/0", "r3", "lint", None, 21),
        ],
    )
    .await
    .expect("ingest");
    let (status, h) = call(q, "GET", &format!("branches/{BRANCH}/history"), None, None).await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["branch"], BRANCH);
    assert_eq!(h["revisions"], 50);
    let points = h["history"].as_array().expect("history");
    let got: Vec<(String, i64, Vec<i64>)> = points
        .iter()
        .map(|p| {
            let c = &p["counts"];
            (
                p["revision"].as_str().unwrap().to_string(),
                p["time"].as_i64().unwrap(),
                ["jobs", "native", "bridged", "buildbotOnly"]
                    .iter()
                    .map(|k| c[k].as_i64().unwrap())
                    .collect(),
            )
        })
        .collect();
    let t = |m: i64| 1_700_000_000_000 + m * 60_000;
    assert_eq!(
        got,
        vec![
            ("r1".to_string(), t(0), vec![2, 0, 1, 1]),
            ("r2".to_string(), t(10), vec![3, 2, 0, 1]),
            ("r3".to_string(), t(20), vec![2, 2, 0, 0]),
        ]
    );
    assert_eq!(points[1]["shares"]["native"].as_f64(), Some(2.0 / 3.0));
    assert_eq!(points[2]["shares"]["buildbotOnly"].as_f64(), Some(0.0));
    // A smaller window: the newest revisions.
    let (status, h) = call(
        q,
        "GET",
        &format!("branches/{BRANCH}/history?revisions=2"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let revs: Vec<&str> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["revision"].as_str().unwrap())
        .collect();
    assert_eq!(revs, ["r2", "r3"]);
    let (status, e) = call(q, "GET", "branches/nowhere/history", None, None).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (404, Some("ResourceNotFound"))
    );
    let (status, e) = call(
        q,
        "GET",
        &format!("branches/{BRANCH}/history?revisions=0"),
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (400, Some("InvalidRequestArguments"))
    );
}

async fn milestones_are_managed_with_their_scopes_and_show_progress(q: &TestQueue) {
    let db = &q.running.queue.db;
    let root = (q.root_client_id.as_str(), q.root_access_token.as_str());
    let planner = Some(("planner", "planner-token"));
    use Side::*;
    bbb_migration::ingest(
        db,
        &[
            obs(Native, "a/0", "r1", "test-a", None, 0),
            obs(Buildbot, "m/1", "r1", "lin.b", Some("lin.b"), 1),
            obs(Bridged, "c/0", "r1", "test-c", Some("lin.c"), 2),
        ],
    )
    .await
    .expect("ingest");
    let def = json!({
        "branch": BRANCH,
        "due": "2020-01-17",
        "jobs": ["test-a", "lin.b", "test-c"],
        "description": "Linux <b>tier 1</b>",
    });
    // Scopes: none, and another milestone's.
    let (status, e) = call(q, "PUT", "milestones/q1-linux", None, Some(def.clone())).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (403, Some("InsufficientScopes"))
    );
    let (status, _) = call(q, "PUT", "milestones/q2-linux", planner, Some(def.clone())).await;
    assert_eq!(status, 403);
    // Bad bodies and names.
    for bad in [
        json!({"branch": BRANCH, "due": "soon", "jobs": ["a"]}),
        json!({"branch": BRANCH, "due": "2020-02-30", "jobs": ["a"]}),
        json!({"branch": BRANCH, "due": "2020-01-17", "jobs": []}),
        json!({"branch": BRANCH, "due": "2020-01-17", "jobs": ["a", "a"]}),
        json!({"branch": "", "due": "2020-01-17", "jobs": ["a"]}),
        json!({"branch": BRANCH, "due": "2020-01-17", "jobs": ["a"], "owner": "x"}),
    ] {
        let (status, e) = call(q, "PUT", "milestones/q1-linux", planner, Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad} gave {e}");
    }
    let (status, _) = call(
        q,
        "PUT",
        "milestones/q1%20linux",
        Some(root),
        Some(def.clone()),
    )
    .await;
    assert_eq!(status, 400);

    // Created, with its progress: test-a native; lin.b Buildbot only,
    // test-c bridged. Past its date with jobs left: overdue.
    let (status, m) = call(q, "PUT", "milestones/q1-linux", planner, Some(def.clone())).await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["name"], "q1-linux");
    assert_eq!(m["updatedBy"], "planner");
    assert_eq!(m["source"], "api");
    assert_eq!(m["description"], "Linux <b>tier 1</b>");
    assert_eq!(
        m["progress"],
        json!({"native": 1, "total": 3, "remaining": ["lin.b", "test-c"], "overdue": true})
    );
    // The same again: answered as it is; another definition: a conflict.
    let (status, again) = call(q, "PUT", "milestones/q1-linux", planner, Some(def.clone())).await;
    assert_eq!((status, &again), (200, &m));
    let mut other = def.clone();
    other["due"] = json!("2020-01-18");
    let (status, e) = call(q, "PUT", "milestones/q1-linux", planner, Some(other)).await;
    assert_eq!((status, e["code"].as_str()), (409, Some("RequestConflict")));

    // lin.b's pair turns native: the milestone moves.
    let (status, _) = call(
        q,
        "PUT",
        &format!("mapping/{BRANCH}/test-b"),
        Some(root),
        Some(json!({"builder": "lin.b"})),
    )
    .await;
    assert_eq!(status, 200);
    bbb_migration::ingest(db, &[obs(Native, "b/0", "r1", "test-b", None, 3)])
        .await
        .expect("ingest");
    let (status, list) = call(q, "GET", "milestones", None, None).await;
    assert_eq!(status, 200);
    let list = list["milestones"].as_array().expect("milestones");
    assert_eq!(list.len(), 1);
    assert_eq!(
        list[0]["progress"],
        json!({"native": 2, "total": 3, "remaining": ["test-c"], "overdue": true})
    );

    // Updated: a later date and fewer jobs, all native: not overdue.
    let later = json!({"branch": BRANCH, "due": "2999-12-31", "jobs": ["test-a", "test-b"]});
    let (status, m) = call(
        q,
        "POST",
        "milestones/q1-linux",
        planner,
        Some(later.clone()),
    )
    .await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(
        m["progress"],
        json!({"native": 2, "total": 2, "remaining": [], "overdue": false})
    );
    assert_eq!(m["description"], "");
    let (status, one) = call(q, "GET", "milestones/q1-linux", None, None).await;
    assert_eq!((status, &one), (200, &m));
    let (status, _) = call(q, "POST", "milestones/q1-nothing", planner, Some(later)).await;
    assert_eq!(status, 404);

    // Deleted, once.
    let (status, _) = call(q, "DELETE", "milestones/q1-linux", None, None).await;
    assert_eq!(status, 403);
    let (status, _) = call(q, "DELETE", "milestones/q1-linux", planner, None).await;
    assert_eq!(status, 204);
    let (status, _) = call(q, "DELETE", "milestones/q1-linux", planner, None).await;
    assert_eq!(status, 404);
    let (status, e) = call(q, "GET", "milestones/q1-linux", None, None).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (404, Some("ResourceNotFound"))
    );
    let (_, list) = call(q, "GET", "milestones", None, None).await;
    assert_eq!(list["milestones"], json!([]));
}
