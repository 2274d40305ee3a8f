//! Commit batching under real concurrency, on SQLite and PostgreSQL.
//!
//! The queue combines concurrent `createTask` (without dependencies),
//! `claimWork` and `reportCompleted` / `reportFailed` / `reportException` calls
//! into one transaction (`queue/src/batch.rs`). Each test here fires a burst of
//! 20–60 requests at once, so they land in the same batches, and checks that
//! every call still gets exactly the answer upstream TaskCluster gives it: the
//! HTTP status, the error body's `code`, and the state the task is left in.
//!
//! - identical creates of one taskId all succeed and the task exists once;
//! - conflicting creates of one taskId: only the stored definition's calls succeed;
//! - creates into a sealed group are refused, except identical replays;
//! - a group keeps its first schedulerId, whether it existed before or not;
//! - concurrent `claimWork` hands every pending run out exactly once;
//! - a burst of resolutions: repeats are idempotent, a race between two
//!   resolutions of one run has one winner, `worker-shutdown` retries, unknown
//!   tasks and runs are 404.

mod common;

use bbb_queue::testing::TestQueue;
use bbb_testdb::on_both_backends;
use common::*;
use futures::future::join_all;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use taskcluster::Credentials;

on_both_backends!(
    bbb_queue::testing::TestQueue::on;
    identical_creates_of_one_task,
    conflicting_creates_of_one_task,
    creates_into_a_sealed_group,
    creates_keep_the_group_scheduler_id,
    concurrent_claims_hand_out_each_run_once,
    resolution_burst,
);

/// The same bursts with batching off (`commit_batch = 1`; the tests above run
/// with it on): every call gets the same answer either way.
macro_rules! batched_and_not {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use bbb_queue::testing::{TestOptions, TestQueue};
            async fn run(postgres: bool, commit_batch: usize) {
                let q = TestQueue::with(TestOptions {
                    postgres,
                    commit_batch: Some(commit_batch),
                    ..Default::default()
                })
                .await
                .expect("start test queue");
                assert_eq!(q.running.queue.batching(), commit_batch > 1);
                super::super::$name(&q).await;
                q.stop().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite_unbatched() {
                run(false, 1).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres_unbatched() {
                run(true, 1).await;
            }
        }
    )*};
}

mod both_ways {
    batched_and_not!(
        conflicting_creates_of_one_task,
        creates_keep_the_group_scheduler_id,
        resolution_burst,
    );
}

/// An API answer: the HTTP status and the JSON body.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    /// The TaskCluster error code of an error answer.
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    /// Assert the answer is 200.
    fn assert_ok(&self, what: &str) {
        assert_eq!(self.status, 200, "{what}: {self:?}");
    }

    /// Assert the answer is the error `status` / `code`.
    fn assert_err(&self, status: u16, code: &str, what: &str) {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "{what}: {self:?}"
        );
    }
}

/// Hawk-signed calls that keep the error body (the official client only keeps
/// its message), so each answer's `code` can be checked.
struct Api<'a> {
    q: &'a TestQueue,
    http: reqwest::Client,
}

/// How a run is reported resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Report {
    Completed,
    Failed,
    WorkerShutdown,
}

impl Report {
    /// The run state it leads to.
    fn state(self) -> &'static str {
        match self {
            Report::Completed => "completed",
            Report::Failed => "failed",
            Report::WorkerShutdown => "exception",
        }
    }
}

impl<'a> Api<'a> {
    fn new(q: &'a TestQueue) -> Self {
        Api {
            q,
            http: reqwest::Client::new(),
        }
    }

    /// `method` on `path` (under `/api/queue/v1/`), with `creds` or else root's.
    async fn send(
        &self,
        creds: Option<&Credentials>,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Answer {
        let url = format!("{}/api/queue/v1/{path}", self.q.root_url);
        let u = url::Url::parse(&url).unwrap();
        let resource = match u.query() {
            Some(qs) => format!("{}?{qs}", u.path()),
            None => u.path().to_string(),
        };
        let (client_id, token, cert) = match creds {
            Some(c) => (
                c.client_id.as_str(),
                c.access_token.as_str(),
                c.certificate.as_deref(),
            ),
            None => (
                self.q.root_client_id.as_str(),
                self.q.root_access_token.as_str(),
                None,
            ),
        };
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        let header = bbb_auth::hawk_header(
            client_id,
            token,
            cert,
            None,
            method.as_str(),
            &resource,
            u.host_str().unwrap(),
            u.port().unwrap(),
            bytes.as_deref().map(|b| (b, "application/json")),
            chrono::Utc::now(),
        );
        let mut req = self
            .http
            .request(method, &url)
            .header("authorization", header);
        if let Some(b) = bytes {
            req = req.header("content-type", "application/json").body(b);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        Answer {
            status,
            body: r.json().await.unwrap_or(Value::Null),
        }
    }

    /// `createTask` with root credentials.
    async fn create_task(&self, task_id: &str, def: &Value) -> Answer {
        self.send(
            None,
            reqwest::Method::PUT,
            &format!("task/{task_id}"),
            Some(def),
        )
        .await
    }

    /// `reportCompleted`, `reportFailed` or `reportException` (worker-shutdown).
    async fn report(
        &self,
        creds: Option<&Credentials>,
        task_id: &str,
        run_id: i64,
        how: Report,
    ) -> Answer {
        let (path, body) = match how {
            Report::Completed => ("completed", None),
            Report::Failed => ("failed", None),
            Report::WorkerShutdown => ("exception", Some(json!({"reason": "worker-shutdown"}))),
        };
        self.send(
            creds,
            reqwest::Method::POST,
            &format!("task/{task_id}/runs/{run_id}/{path}"),
            body.as_ref(),
        )
        .await
    }
}

/// Round-robin merge of `lists`, so each burst mixes its kinds of calls.
fn interleave<T>(lists: Vec<Vec<T>>) -> Vec<T> {
    let mut iters: Vec<_> = lists.into_iter().map(Vec::into_iter).collect();
    let mut out = Vec::new();
    loop {
        let before = out.len();
        for it in &mut iters {
            out.extend(it.next());
        }
        if out.len() == before {
            return out;
        }
    }
}

/// The taskIds listed in a task group.
async fn group_members(queue: &taskcluster::Queue, group: &str) -> HashSet<String> {
    let page = queue
        .listTaskGroup(group, None, Some("1000"))
        .await
        .expect("listTaskGroup");
    assert!(page["continuationToken"].is_null(), "one page: {page}");
    page["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["status"]["taskId"].as_str().expect("taskId").to_string())
        .collect()
}

/// Assert `task_id` was never stored.
async fn assert_absent(queue: &taskcluster::Queue, task_id: &str) {
    let e = queue.task(task_id).await.expect_err("task must not exist");
    assert_eq!(status_of(&e), 404, "{task_id}: {}", text_of(&e));
}

/// Create `n` tasks in `tq` at once (they are batched too); their ids.
async fn create_many(api: &Api<'_>, tq: &str, n: usize, extra: Value) -> Vec<String> {
    let defs: Vec<(String, Value)> = (0..n)
        .map(|_| (slug(), task_def(tq, extra.clone())))
        .collect();
    let answers = join_all(defs.iter().map(|(id, def)| api.create_task(id, def))).await;
    for ((id, _), a) in defs.iter().zip(&answers) {
        a.assert_ok(&format!("createTask {id}"));
        assert_eq!(a.body["status"]["state"], "pending", "{id}: {a:?}");
    }
    defs.into_iter().map(|(id, _)| id).collect()
}

/// ~20 identical `createTask` calls for one taskId: all 200 with the same
/// status, and the task exists once, with one run, handed out once.
async fn identical_creates_of_one_task(q: &TestQueue) {
    let api = Api::new(q);
    let queue = root(q);
    let id = slug();
    let def = task_def("prov/same", json!({}));
    let answers = join_all((0..20).map(|_| api.create_task(&id, &def))).await;
    for a in &answers {
        a.assert_ok("identical createTask");
    }
    let status = &answers[0].body["status"];
    assert_eq!(status["taskId"], id.as_str());
    assert_eq!(status["state"], "pending");
    assert_eq!(status["runs"].as_array().unwrap().len(), 1);
    for a in &answers {
        assert_eq!(
            a.body["status"], *status,
            "every answer has the same status"
        );
    }

    assert_eq!(
        group_members(&queue, &id).await,
        HashSet::from([id.clone()])
    );
    let stored = queue.status(&id).await.unwrap();
    assert_eq!(stored["status"], *status);
    // One pending run: a claim for four gets exactly this one.
    let tasks = claim_work(&queue, "prov/same", "w", 4).await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0]["status"]["taskId"], id.as_str());
    assert_eq!(tasks[0]["runId"], 0);
    let counts = queue.taskQueueCounts("prov/same").await.unwrap();
    assert_eq!(counts["pendingTasks"], 0, "{counts}");
}

/// One taskId, four different definitions (five calls each) at once: the calls
/// whose definition is the stored one get 200, all others 409 RequestConflict.
async fn conflicting_creates_of_one_task(q: &TestQueue) {
    let api = Api::new(q);
    let queue = root(q);
    let id = slug();
    let variants: Vec<Value> = (0..4)
        .map(|v| {
            let mut def = task_def("prov/conflict", json!({}));
            def["metadata"]["name"] = format!("variant-{v}").into();
            def
        })
        .collect();
    let calls: Vec<usize> = (0..20).map(|i| i % variants.len()).collect();
    let answers = join_all(calls.iter().map(|v| api.create_task(&id, &variants[*v]))).await;

    let stored = queue.task(&id).await.unwrap();
    let winner = variants
        .iter()
        .position(|d| d["metadata"]["name"] == stored["metadata"]["name"])
        .unwrap_or_else(|| panic!("stored definition is none of the variants: {stored}"));
    for (v, a) in calls.iter().zip(&answers) {
        let what = format!("createTask with variant {v} (stored: {winner})");
        if *v == winner {
            a.assert_ok(&what);
            assert_eq!(a.body["status"]["taskId"], id.as_str(), "{what}");
        } else {
            a.assert_err(409, "RequestConflict", &what);
        }
    }
    let status = queue.status(&id).await.unwrap();
    assert_eq!(status["status"]["runs"].as_array().unwrap().len(), 1);
    assert_eq!(
        group_members(&queue, &id).await,
        HashSet::from([id.clone()])
    );
}

/// What a create in a burst must get.
#[derive(Clone, Copy, Debug)]
enum Want {
    Ok,
    Conflict,
}

/// A sealed group and a fresh one, in one burst: new tasks into the sealed group
/// are 409, identical replays of its tasks 200, changed replays 409; new tasks
/// into the fresh group 200, an existing taskId moved into it 409.
async fn creates_into_a_sealed_group(q: &TestQueue) {
    let api = Api::new(q);
    let queue = root(q);
    let sealed = slug();
    let fresh = slug();
    let tq = "prov/sealed";
    let existing: Vec<(String, Value)> = (0..4)
        .map(|_| (slug(), task_def(tq, json!({"taskGroupId": sealed}))))
        .collect();
    for (id, def) in &existing {
        queue.createTask(id, def).await.unwrap();
    }
    queue.sealTaskGroup(&sealed).await.unwrap();

    let new_into_sealed: Vec<(String, Value, Want)> = (0..12)
        .map(|_| {
            let def = task_def(tq, json!({"taskGroupId": sealed}));
            (slug(), def, Want::Conflict)
        })
        .collect();
    let replays: Vec<(String, Value, Want)> = existing
        .iter()
        .chain(&existing)
        .map(|(id, def)| (id.clone(), def.clone(), Want::Ok))
        .collect();
    let changed_replays: Vec<(String, Value, Want)> = existing
        .iter()
        .map(|(id, def)| {
            let mut def = def.clone();
            def["metadata"]["name"] = "changed".into();
            (id.clone(), def, Want::Conflict)
        })
        .collect();
    let new_into_fresh: Vec<(String, Value, Want)> = (0..20)
        .map(|_| {
            let def = task_def(tq, json!({"taskGroupId": fresh}));
            (slug(), def, Want::Ok)
        })
        .collect();
    // A stored taskId, its definition unchanged but for the group.
    let moved = {
        let (id, def) = &existing[0];
        let mut def = def.clone();
        def["taskGroupId"] = fresh.as_str().into();
        vec![(id.clone(), def, Want::Conflict)]
    };
    let calls = interleave(vec![
        new_into_fresh.clone(),
        new_into_sealed.clone(),
        replays,
        changed_replays,
        moved,
    ]);
    let answers = join_all(calls.iter().map(|(id, def, _)| api.create_task(id, def))).await;
    for ((id, def, want), a) in calls.iter().zip(&answers) {
        let what = format!(
            "createTask {id} into {} named {}",
            if def["taskGroupId"] == sealed.as_str() {
                "the sealed group"
            } else {
                "the fresh group"
            },
            def["metadata"]["name"]
        );
        match want {
            Want::Ok => {
                a.assert_ok(&what);
                assert_eq!(a.body["status"]["taskId"], id.as_str(), "{what}");
            }
            Want::Conflict => a.assert_err(409, "RequestConflict", &what),
        }
    }

    for (id, _, _) in &new_into_sealed {
        assert_absent(&queue, id).await;
    }
    let want_sealed: HashSet<String> = existing.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(group_members(&queue, &sealed).await, want_sealed);
    for (id, _) in &existing {
        let task = queue.task(id).await.unwrap();
        assert_eq!(task["metadata"]["name"], "t", "{id} unchanged");
        assert_eq!(task["taskGroupId"], sealed.as_str(), "{id} unchanged");
    }
    let want_fresh: HashSet<String> = new_into_fresh.iter().map(|(id, ..)| id.clone()).collect();
    assert_eq!(group_members(&queue, &fresh).await, want_fresh);
    let g = queue.getTaskGroup(&sealed).await.unwrap();
    assert!(g["sealed"].is_string(), "{g}");
    let g = queue.getTaskGroup(&fresh).await.unwrap();
    assert!(g["sealed"].is_null(), "{g}");
}

/// A group keeps the schedulerId of its first task. An existing group with
/// `sched-a`: concurrent creates with `sched-a` are 200, with `sched-b` 409. A
/// group created by the burst itself: one schedulerId wins, and exactly the
/// creates with it are 200.
async fn creates_keep_the_group_scheduler_id(q: &TestQueue) {
    let api = Api::new(q);
    let queue = root(q);
    let tq = "prov/sched";
    let old = slug();
    let first = slug();
    create(
        &queue,
        &first,
        tq,
        json!({"taskGroupId": old, "schedulerId": "sched-a"}),
    )
    .await;
    let new = slug();
    let mut lists: Vec<Vec<(String, String, &str)>> = Vec::new();
    for group in [&old, &new] {
        for sched in ["sched-a", "sched-b"] {
            lists.push((0..10).map(|_| (slug(), group.clone(), sched)).collect());
        }
    }
    let calls = interleave(lists);
    let defs: Vec<Value> = calls
        .iter()
        .map(|(_, g, s)| task_def(tq, json!({"taskGroupId": g, "schedulerId": s})))
        .collect();
    let answers = join_all(
        calls
            .iter()
            .zip(&defs)
            .map(|((id, ..), def)| api.create_task(id, def)),
    )
    .await;

    let g = queue.getTaskGroup(&new).await.unwrap();
    let winner = g["schedulerId"].as_str().unwrap().to_string();
    assert!(["sched-a", "sched-b"].contains(&winner.as_str()), "{g}");
    let mut want_members: HashMap<&str, HashSet<String>> = HashMap::new();
    want_members
        .entry(old.as_str())
        .or_default()
        .insert(first.clone());
    for ((id, group, sched), a) in calls.iter().zip(&answers) {
        let expected = if *group == old { "sched-a" } else { &winner };
        let what = format!(
            "createTask {id} with {sched} into the {} group (of {expected})",
            if *group == old { "old" } else { "new" }
        );
        if *sched == expected {
            a.assert_ok(&what);
            want_members
                .entry(group.as_str())
                .or_default()
                .insert(id.clone());
        } else {
            a.assert_err(409, "RequestConflict", &what);
            assert_absent(&queue, id).await;
        }
    }
    assert_eq!(want_members[old.as_str()].len(), 11);
    assert_eq!(want_members[new.as_str()].len(), 10);
    for (group, ids) in &want_members {
        assert_eq!(&group_members(&queue, group).await, ids, "group {group}");
    }
    let g = queue.getTaskGroup(&old).await.unwrap();
    assert_eq!(g["schedulerId"], "sched-a");
}

/// Pending tasks in two task queues, and at once more `claimWork` calls (for 1
/// to 4 tasks each) than there are tasks: every run is handed out exactly once,
/// to a call for its queue, and no call gets more than it asked for. (The calls
/// left without work return after the 20 s long poll.)
async fn concurrent_claims_hand_out_each_run_once(q: &TestQueue) {
    let api = Api::new(q);
    let queue = root(q);
    let queues = [("prov/claim-a", 30, 16), ("prov/claim-b", 16, 10)];
    let mut created: HashMap<&str, HashSet<String>> = HashMap::new();
    let mut calls: Vec<Vec<(&str, String, i64)>> = Vec::new();
    for (tq, tasks, workers) in queues {
        created.insert(
            tq,
            create_many(&api, tq, tasks, json!({}))
                .await
                .into_iter()
                .collect(),
        );
        let these: Vec<(&str, String, i64)> = (0..workers)
            .map(|w| (tq, format!("{}-w{w}", &tq[5..]), w % 4 + 1))
            .collect();
        let asked: i64 = these.iter().map(|c| c.2).sum();
        assert!(asked >= tasks as i64);
        calls.push(these);
    }
    let calls = interleave(calls);
    let answers = join_all(calls.iter().map(|(tq, worker, count)| {
        let queue = &queue;
        async move {
            queue
                .claimWork(
                    tq,
                    &json!({"workerGroup": "wg", "workerId": worker, "tasks": count}),
                )
                .await
                .expect("claimWork")
        }
    }))
    .await;

    let mut claimed: HashMap<&str, HashSet<String>> = HashMap::new();
    for ((tq, worker, count), r) in calls.iter().zip(&answers) {
        let tasks = r["tasks"].as_array().expect("tasks");
        assert!(
            tasks.len() as i64 <= *count,
            "{worker} asked for {count}, got {}",
            tasks.len()
        );
        for c in tasks {
            let id = c["status"]["taskId"].as_str().unwrap().to_string();
            assert!(created[tq].contains(&id), "{worker} got {id}, not of {tq}");
            assert_eq!(c["runId"], 0, "{c}");
            assert_eq!(c["workerId"], worker.as_str(), "{c}");
            assert_eq!(c["status"]["state"], "running", "{c}");
            assert_eq!(c["status"]["runs"][0]["workerId"], worker.as_str(), "{c}");
            assert!(
                claimed.entry(*tq).or_default().insert(id.clone()),
                "{id} claimed twice"
            );
        }
    }
    for (tq, ids) in &created {
        assert_eq!(
            claimed.get(tq),
            Some(ids),
            "every task of {tq} claimed once"
        );
        let counts = queue.taskQueueCounts(tq).await.unwrap();
        assert_eq!(counts["pendingTasks"], 0, "{tq}: {counts}");
    }
    // The queue agrees on who runs what.
    for ((_, worker, _), r) in calls.iter().zip(&answers) {
        for c in r["tasks"].as_array().unwrap() {
            let id = c["status"]["taskId"].as_str().unwrap();
            let s = queue.status(id).await.unwrap();
            assert_eq!(s["status"]["state"], "running");
            assert_eq!(s["status"]["runs"][0]["workerId"], worker.as_str());
        }
    }
}

/// The reports each task of [`resolution_burst`] gets, by its kind.
fn reports_for(kind: usize) -> &'static [Report] {
    use Report::*;
    match kind {
        0 => &[Completed],
        1 => &[Completed, Completed, Completed],
        2 => &[Completed, Failed, Completed, Failed],
        3 => &[WorkerShutdown, WorkerShutdown],
        // Created with `retries: 0`.
        4 => &[WorkerShutdown],
        _ => &[WorkerShutdown, Completed],
    }
}

const KINDS: usize = 6;

/// 42 running tasks resolved in one burst: single reports; repeated identical
/// reports (all 200); completed and failed racing on one run (the resolution
/// that won gets 200 for each of its calls, the other 409 RequestConflict);
/// worker-shutdown (a retry run 1 while retries are left, none with
/// `retries: 0`); worker-shutdown racing completed; and reports on an unknown
/// task or a run that does not exist (404 ResourceNotFound).
async fn resolution_burst(q: &TestQueue) {
    let api = Api::new(q);
    let queue = root(q);
    let tq = "prov/resolve";
    let mut kind_of: HashMap<String, usize> = HashMap::new();
    for kind in 0..KINDS {
        let extra = if kind == 4 {
            json!({"retries": 0})
        } else {
            json!({})
        };
        for id in create_many(&api, tq, 7, extra).await {
            kind_of.insert(id, kind);
        }
    }
    let mut claims: HashMap<String, Value> = HashMap::new();
    while claims.len() < kind_of.len() {
        let r = queue
            .claimWork(
                tq,
                &json!({"workerGroup": "wg", "workerId": "w", "tasks": 32}),
            )
            .await
            .unwrap();
        for c in r["tasks"].as_array().unwrap() {
            let id = c["status"]["taskId"].as_str().unwrap().to_string();
            assert!(claims.insert(id, c.clone()).is_none(), "claimed twice");
        }
    }
    let creds: HashMap<&str, Credentials> = claims
        .iter()
        .map(|(id, c)| (id.as_str(), task_creds(c)))
        .collect();

    // Per task, its reports in order: the first report of every task, then
    // the second ones, ... so repeats and races land in the same batches.
    let mut ids: Vec<&str> = kind_of.keys().map(String::as_str).collect();
    ids.sort_unstable();
    let rounds: Vec<Vec<(&str, Report)>> = (0..4)
        .map(|round| {
            ids.iter()
                .filter_map(|id| {
                    let r = reports_for(kind_of[*id]).get(round)?;
                    Some((*id, *r))
                })
                .collect()
        })
        .collect();
    let reports: Vec<(&str, Report)> = rounds.into_iter().flatten().collect();
    // Refused calls, mixed in: unknown tasks, and runs that never exist.
    let kind_of = &kind_of;
    let of_kind = |k: usize| ids.iter().copied().filter(move |id| kind_of[*id] == k);
    let unknown = slug();
    let mut missing: Vec<(String, i64, Report)> = vec![
        (unknown.clone(), 0, Report::Completed),
        (unknown.clone(), 0, Report::WorkerShutdown),
    ];
    missing.extend(
        of_kind(0)
            .take(3)
            .map(|id| (id.to_string(), 1, Report::Completed)),
    );
    missing.extend(
        of_kind(2)
            .take(3)
            .map(|id| (id.to_string(), 9, Report::Failed)),
    );

    let good = join_all(
        reports
            .iter()
            .map(|(id, how)| api.report(Some(&creds[id]), id, 0, *how)),
    );
    let bad = join_all(
        missing
            .iter()
            .map(|(id, run, how)| api.report(None, id, *run, *how)),
    );
    let (good, bad) = futures::join!(good, bad);

    for ((id, run, how), a) in missing.iter().zip(&bad) {
        a.assert_err(404, "ResourceNotFound", &format!("{how:?} {id}/{run}"));
    }
    assert_absent(&queue, &unknown).await;

    let mut answers: HashMap<&str, Vec<(Report, &Answer)>> = HashMap::new();
    for ((id, how), a) in reports.iter().zip(&good) {
        answers.entry(id).or_default().push((*how, a));
    }
    let mut pending = 0;
    for id in &ids {
        let kind = kind_of[*id];
        let s = queue.status(id).await.unwrap()["status"].clone();
        let runs = s["runs"].as_array().unwrap();
        let run0 = &runs[0];
        let resolved = run0["state"].as_str().unwrap();
        let what = |how: Report| format!("{how:?} on {id} (kind {kind}), run 0 is {resolved}");
        assert!(
            reports_for(kind).iter().any(|r| r.state() == resolved),
            "{id} (kind {kind}) ended {resolved}: {s}"
        );
        // The resolution that took effect answers 200 to each of its calls
        // (repeats are idempotent); any other is 409.
        for (how, a) in &answers[id] {
            if how.state() == resolved {
                a.assert_ok(&what(*how));
                assert_eq!(a.body["status"]["runs"][0]["state"], resolved, "{a:?}");
            } else {
                a.assert_err(409, "RequestConflict", &what(*how));
            }
        }
        match resolved {
            "exception" => {
                assert_eq!(run0["reasonResolved"], "worker-shutdown", "{s}");
                if kind == 4 {
                    assert_eq!(runs.len(), 1, "no retries left: {s}");
                    assert_eq!(s["state"], "exception", "{s}");
                    assert_eq!(s["retriesLeft"], 0, "{s}");
                } else {
                    assert_eq!(runs.len(), 2, "one retry: {s}");
                    assert_eq!(runs[1]["runId"], 1, "{s}");
                    assert_eq!(runs[1]["state"], "pending", "{s}");
                    assert_eq!(runs[1]["reasonCreated"], "retry", "{s}");
                    assert_eq!(s["state"], "pending", "{s}");
                    assert_eq!(s["retriesLeft"], 4, "{s}");
                    // Every 200 answer already shows the retry.
                    for (_, a) in answers[id].iter().filter(|(_, a)| a.status == 200) {
                        assert_eq!(a.body["status"]["runs"][1]["reasonCreated"], "retry");
                    }
                    pending += 1;
                }
            }
            done => {
                assert_eq!(runs.len(), 1, "{s}");
                assert_eq!(run0["reasonResolved"], done, "{s}");
                assert_eq!(s["state"], done, "{s}");
            }
        }
    }
    assert!(pending >= 7, "every kind-3 task was retried");
    let counts = queue.taskQueueCounts(tq).await.unwrap();
    assert_eq!(counts["pendingTasks"], pending, "{counts}");
}

/// Concurrent creates into a group that does not exist yet, half with
/// schedulerId `s0` and half with `s1`: the ids of the creates that succeeded.
async fn race_new_group(
    clients: [&taskcluster::Queue; 2],
    dependency: Option<&str>,
) -> (usize, usize) {
    let group = slug();
    let calls: Vec<(usize, String)> = (0..20).map(|i| (i % 2, slug())).collect();
    let answers = join_all(calls.iter().map(|(s, id)| {
        let mut extra = json!({"taskGroupId": group, "schedulerId": format!("s{s}")});
        if let (Some(dep), 1) = (dependency, s) {
            extra["dependencies"] = json!([dep]);
        }
        let def = task_def("prov/race", extra);
        let c = clients[*s];
        async move { c.createTask(id, &def).await.is_ok() }
    }))
    .await;
    let won = |side: usize| {
        calls
            .iter()
            .zip(&answers)
            .filter(|((s, _), ok)| *s == side && **ok)
            .count()
    };
    (won(0), won(1))
}

/// Two queue processes on one database: a new group gets one schedulerId, and
/// only the creates that carry it succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_group_scheduler_race_across_two_servers() {
    use bbb_queue::testing::TestOptions;
    let db = bbb_testdb::PgDatabase::create("bbbq")
        .await
        .expect("database");
    let start = |db: String| {
        TestQueue::with(TestOptions {
            database_url: Some(db),
            ..Default::default()
        })
    };
    let a = start(db.url().to_owned()).await.expect("queue a");
    let b = start(db.url().to_owned()).await.expect("queue b");
    let (ca, cb) = (root(&a), root(&b));
    for _ in 0..10 {
        let (s0, s1) = race_new_group([&ca, &cb], None).await;
        assert!(
            s0 == 0 || s1 == 0,
            "both schedulerIds accepted: s0 {s0}, s1 {s1}"
        );
        assert_eq!(s0 + s1, 10, "the winning side's creates all succeed");
    }
    a.stop().await;
    b.stop().await;
}

/// Batched creates (no dependencies) racing one-call creates (with a
/// dependency) into a new group: still one schedulerId.
async fn new_group_scheduler_race_batched_and_alone(q: &TestQueue) {
    let c = root(q);
    let dep = slug();
    c.createTask(&dep, &task_def("prov/race", json!({})))
        .await
        .expect("create the dependency");
    for _ in 0..10 {
        let (s0, s1) = race_new_group([&c, &c], Some(&dep)).await;
        assert!(
            s0 == 0 || s1 == 0,
            "both schedulerIds accepted: s0 {s0}, s1 {s1}"
        );
        assert_eq!(s0 + s1, 10, "the winning side's creates all succeed");
    }
}

on_both_backends!(bbb_queue::testing::TestQueue::on; new_group_scheduler_race_batched_and_alone);
