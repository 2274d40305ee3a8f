//! Pushes to real Mercurial repositories on disk (Debian's `mercurial`)
//! become decision tasks, once each, in pushlog order; on SQLite and
//! PostgreSQL. The test serves the repository over HTTP: `hg serve` for its
//! content (`raw-file`), and a `json-pushes` endpoint of its own (core
//! Mercurial keeps no pushlog) made from the pushes it did with `hg push`,
//! honouring `version=2`, `full`, `startID` and `endID` as Mozilla's
//! servers do.

mod common;

use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bbb_ci::Mode;
use bbb_ci::config::{Kind, RepositoryConfig};
use bbb_pulse::{Binding, Bus, Message};
use bbb_testdb::{Backend, on_both_backends, wait_for};
use common::{Env, PROJECT, World};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

on_both_backends!(
    crate::common::World::on;
    modes_decide_per_branch_with_the_hg_push_context,
    a_broken_taskcluster_yml_is_recorded_and_the_next_push_works,
    pushes_made_while_stopped_are_all_handled_after_restart_once,
    pushlog_failures_are_shown_and_retried,
    hgpushes_messages_record_pushes_and_bad_ones_are_parked,
);

/// The repository's public URL.
const HG_URL: &str = "https://hg.example/bbb/proj";
/// Who commits.
const AUTHOR: &str = "Alice <alice@example.com>";
/// Who pushes (the pushlog's user).
const PUSHER: &str = "pusher@example.com";
/// The exchange and queue of the Pulse test.
const EXCHANGE: &str = "exchange/hgpushes/v2";
const QUEUE: &str = "queue/bbb/hgpushes";

fn hg(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("hg")
        .arg("--cwd")
        .arg(dir)
        .args(args)
        .env("HGPLAIN", "1")
        .env("HGUSER", AUTHOR)
        .output()
        .expect("hg runs (Debian's mercurial)");
    assert!(
        out.status.success(),
        "hg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The pushlog the test keeps: push `n` at index `n - 1`.
#[derive(Default)]
struct Pushlog {
    pushes: Vec<Value>,
    /// Answer every `json-pushes` with a 500.
    fail: bool,
}

type Shared = (Arc<Mutex<Pushlog>>, String);

/// `json-pushes`, as Mozilla's pushlog extension answers it.
async fn json_pushes(
    State((log, _)): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let log = log.lock().unwrap();
    if log.fail {
        return (StatusCode::INTERNAL_SERVER_ERROR, "the pushlog is down").into_response();
    }
    if q.get("version").map(String::as_str) != Some("2") {
        return (
            StatusCode::BAD_REQUEST,
            "this pushlog answers version=2 only",
        )
            .into_response();
    }
    let full = q.contains_key("full");
    let last = log.pushes.len() as i64;
    let num = |k: &str| q.get(k).map(|v| v.parse::<i64>().expect("an integer id"));
    let start = num("startID").unwrap_or((last - 10).max(0));
    let end = num("endID").unwrap_or(last).min(last);
    let mut pushes = Map::new();
    for id in (start + 1).max(1)..=end {
        let mut p = log.pushes[(id - 1) as usize].clone();
        if !full {
            let nodes: Vec<Value> = p["changesets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["node"].clone())
                .collect();
            p["changesets"] = json!(nodes);
        }
        pushes.insert(id.to_string(), p);
    }
    axum::Json(json!({"lastpushid": last, "pushes": pushes})).into_response()
}

/// Everything else goes to `hg serve`.
async fn to_hg_serve(State((_, hg_url)): State<Shared>, uri: Uri) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let res = reqwest::get(format!("{hg_url}{path}")).await.unwrap();
    let status = StatusCode::from_u16(res.status().as_u16()).unwrap();
    (status, res.bytes().await.unwrap()).into_response()
}

/// A Mercurial repository (`server`, served over HTTP) and a clone with a
/// work tree the test commits in and pushes from.
struct HgOrigin {
    server: PathBuf,
    work: PathBuf,
    log: Arc<Mutex<Pushlog>>,
    /// The changesets the server has.
    revs: Mutex<i64>,
    /// The work tree's branch.
    branch: Mutex<String>,
    serve: Child,
    http: tokio::task::JoinHandle<()>,
    /// Where the repository and its pushlog are served.
    url: String,
}

impl Drop for HgOrigin {
    fn drop(&mut self) {
        let _ = self.serve.kill();
        let _ = self.serve.wait();
        self.http.abort();
    }
}

impl HgOrigin {
    /// A repository whose `default` has the test project's
    /// `.taskcluster.yml`, and named branches `branches` made from it, each
    /// pushed.
    async fn create(dir: &Path, branches: &[&str]) -> HgOrigin {
        let server = dir.join("hg-server");
        let work = dir.join("hg-work");
        std::fs::create_dir_all(&server).unwrap();
        hg(&server, &["init"]);
        hg(dir, &["clone", "-q", "hg-server", "hg-work"]);
        let mut serve = Command::new("hg")
            .args(["serve", "-R"])
            .arg(&server)
            .args(["-a", "127.0.0.1", "-p", "0"])
            .env("HGPLAIN", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("hg serve starts");
        let mut line = String::new();
        let mut out = BufReader::new(serve.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        // hg serve logs each request to its output: keep reading it.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let port = line
            .rsplit_once(':')
            .and_then(|(_, p)| p.trim().trim_end_matches(')').parse::<u16>().ok())
            .unwrap_or_else(|| panic!("hg serve said {line:?}"));
        let log = Arc::new(Mutex::new(Pushlog::default()));
        let app = axum::Router::new()
            .route("/json-pushes", axum::routing::get(json_pushes))
            .fallback(to_hg_serve)
            .with_state((log.clone(), format!("http://127.0.0.1:{port}")));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let http = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let o = HgOrigin {
            server,
            work,
            log,
            revs: Mutex::new(0),
            branch: Mutex::new("default".into()),
            serve,
            http,
            url,
        };
        o.commit("default", ".taskcluster.yml", &common::tcyml());
        o.push(PUSHER);
        for b in branches {
            hg(&o.work, &["update", "-q", "default"]);
            hg(&o.work, &["branch", "-q", b]);
            *o.branch.lock().unwrap() = b.to_string();
            o.commit_here(&format!("branch {b}"), "README", &format!("{b}\n"));
            o.push(PUSHER);
        }
        o
    }

    fn commit_here(&self, message: &str, file: &str, content: &str) {
        std::fs::write(self.work.join(file), content).unwrap();
        hg(&self.work, &["commit", "-q", "-A", "-m", message]);
    }

    /// Commit `content` as `file` on `branch` (not pushed).
    fn commit(&self, branch: &str, file: &str, content: &str) {
        let mut current = self.branch.lock().unwrap();
        if *current != branch {
            hg(&self.work, &["update", "-q", branch]);
            *current = branch.to_owned();
        }
        self.commit_here(&format!("change {file} on {branch}"), file, content)
    }

    /// `hg push` what was committed, as `user`, and log it in the pushlog:
    /// its pushlog id and its tip-most changeset.
    fn push(&self, user: &str) -> (i64, String) {
        let mut revs = self.revs.lock().unwrap();
        hg(&self.work, &["push", "-q", "--new-branch", "../hg-server"]);
        let out = hg(
            &self.server,
            &["log", "-v", "-Tjson", "-r", &format!("{}:", *revs)],
        );
        let changesets: Vec<Value> = serde_json::from_str::<Vec<Value>>(&out)
            .unwrap()
            .into_iter()
            .map(|c| {
                json!({
                    "node": c["node"], "author": c["user"], "desc": c["desc"],
                    "branch": c["branch"], "parents": c["parents"], "tags": c["tags"],
                    "files": c["files"],
                })
            })
            .collect();
        assert!(!changesets.is_empty(), "the push added changesets");
        *revs += changesets.len() as i64;
        let tip = changesets.last().unwrap()["node"]
            .as_str()
            .unwrap()
            .to_owned();
        let date = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut log = self.log.lock().unwrap();
        log.pushes
            .push(json!({"user": user, "date": date, "changesets": changesets}));
        (log.pushes.len() as i64, tip)
    }

    /// A commit on `branch` changing a file of no consequence, pushed: its
    /// pushlog id and changeset.
    fn push_change(&self, branch: &str, n: usize) -> (i64, String) {
        self.commit(branch, "README", &format!("change {n}\n"));
        self.push(PUSHER)
    }

    /// Push `id` of the pushlog.
    fn pushlog(&self, id: i64) -> Value {
        self.log.lock().unwrap().pushes[(id - 1) as usize].clone()
    }

    fn set_failing(&self, fail: bool) {
        self.log.lock().unwrap().fail = fail;
    }
}

/// The repository [`HG_URL`] served by `origin`, with `branches`.
fn hg_repository(origin: &HgOrigin, branches: &[(&str, Mode)]) -> RepositoryConfig {
    common::repository_at(HG_URL, &origin.url, Kind::Hg, branches)
}

/// Wait until the service follows the pushlog from push `id` or later.
async fn following(env: &Env, id: i64) {
    wait_for(&format!("the pushlog followed from {id}"), || async {
        let r = env
            .ci("GET", &format!("repositories/{PROJECT}"), None)
            .await;
        (r["pushlogId"].as_i64() >= Some(id)).then_some(())
    })
    .await
}

/// Check a decision task of the test project's `.taskcluster.yml` for the
/// pushlog push `id` (`push`) of `revision` to `branch`.
fn assert_hg_decision_task(
    task_id: &str,
    task: &Value,
    branch: &str,
    revision: &str,
    id: i64,
    push: &Value,
) {
    assert_eq!(task["taskGroupId"], task_id, "{task}");
    assert_eq!(
        task["scopes"],
        json!([format!("assume:repo:hg.example/bbb/proj:branch:{branch}")])
    );
    assert_eq!(task["schedulerId"], "bbbtest-level-1");
    assert_eq!(task["metadata"]["owner"], PUSHER);
    assert_eq!(task["metadata"]["name"], "Decision Task");
    assert_eq!(task["tags"]["kind"], "decision-task");
    let env = &task["payload"]["env"];
    assert_eq!(env["BBB_TASKS_FOR"], "hg-push");
    assert_eq!(env["BBB_REVISION"], revision);
    assert_eq!(env["BBB_BRANCH"], branch);
    assert_eq!(env["BBB_OWNER"], PUSHER);
    assert_eq!(env["BBB_PUSHLOG_ID"], id.to_string());
    assert_eq!(env["BBB_PUSHDATE"], push["date"].to_string());
    assert_eq!(env["BBB_PROJECT"], PROJECT);
    assert_eq!(env["BBB_REPOSITORY"], HG_URL);
}

/// Check the ledger's `p` is push `id` of `origin`, decided: its decision
/// task.
async fn assert_decided(
    env: &Env,
    origin: &HgOrigin,
    p: &Value,
    branch: &str,
    id: i64,
    node: &str,
) {
    assert_eq!(p["state"], "decided", "{p}");
    assert_eq!(p["revision"], node);
    assert_eq!(p["pushlogId"], id);
    assert_eq!(p["owner"], PUSHER);
    assert_eq!(p["attempts"], 1, "decided once: {p}");
    let pushed = origin.pushlog(id);
    assert_eq!(p["baseRevision"], pushed["changesets"][0]["parents"][0]);
    let task_id = p["decisionTaskId"].as_str().unwrap();
    assert_hg_decision_task(task_id, &env.task(task_id).await, branch, node, id, &pushed);
}

async fn modes_decide_per_branch_with_the_hg_push_context(w: &World) {
    let origin = HgOrigin::create(w.dir.path(), &["beta", "old", "other"]).await;
    let repo = hg_repository(
        &origin,
        &[
            ("default", Mode::Taskgraph),
            ("beta", Mode::Shadow),
            ("old", Mode::Buildbot),
        ],
    );
    let mut repo = repo;
    repo.webhook_secret = Some("hook-secret".into());
    let env = w.start("a", vec![repo]).await;
    // The pushes made before bbb first read the pushlog are its start.
    following(&env, 4).await;
    let (d, d_node) = origin.push_change("default", 1);
    let (b, b_node) = origin.push_change("beta", 2);
    let (o, o_node) = origin.push_change("old", 3);
    let (_, _) = origin.push_change("other", 4);
    following(&env, 8).await;
    let default = env.handled("default", 1).await;
    assert_decided(&env, &origin, &default[0], "default", d, &d_node).await;
    let beta = env.handled("beta", 1).await;
    assert_decided(&env, &origin, &beta[0], "beta", b, &b_node).await;
    assert_eq!(beta[0]["mode"], "shadow");
    let old = env.handled("old", 1).await;
    assert_eq!(old[0]["state"], "observed");
    assert_eq!(old[0]["revision"], o_node);
    assert_eq!(old[0]["pushlogId"], o);
    assert_eq!(old[0]["decisionTaskId"], Value::Null);
    assert!(
        env.pushes("other").await.is_empty(),
        "a branch not followed"
    );
    assert_ne!(default[0]["decisionTaskId"], beta[0]["decisionTaskId"]);

    // A GitHub-style push webhook records nothing for an hg repository,
    // even well signed: its pushes come from the pushlog.
    let body = serde_json::to_vec(&json!({
        "ref": "refs/heads/default", "before": d_node, "after": "ab".repeat(20),
        "pusher": {"email": PUSHER},
    }))
    .unwrap();
    let res = reqwest::Client::new()
        .post(format!("{}/api/ci/v1/github/{PROJECT}", env.q.root_url))
        .header("x-github-event", "push")
        .header(
            "x-hub-signature-256",
            bbb_ci::webhook::sign(b"hook-secret", &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let answer: Value = res.json().await.unwrap();
    assert_eq!(answer["recorded"], false, "{answer}");
    assert_eq!(env.pushes("default").await.len(), 1);
    env.stop().await;
}

async fn a_broken_taskcluster_yml_is_recorded_and_the_next_push_works(w: &World) {
    let origin = HgOrigin::create(w.dir.path(), &[]).await;
    let env = w
        .start(
            "a",
            vec![hg_repository(&origin, &[("default", Mode::Taskgraph)])],
        )
        .await;
    following(&env, 1).await;
    origin.commit("default", ".taskcluster.yml", "version: 1\ntasks: [\n");
    origin.push(PUSHER);
    let pushes = env.handled("default", 1).await;
    assert_eq!(pushes[0]["state"], "failed");
    let error = pushes[0]["error"].as_str().unwrap();
    assert!(error.contains("not valid YAML"), "{error}");

    std::fs::write(origin.work.join("README"), "no .taskcluster.yml\n").unwrap();
    hg(&origin.work, &["rm", "-q", ".taskcluster.yml"]);
    hg(
        &origin.work,
        &["commit", "-q", "-A", "-m", "no .taskcluster.yml"],
    );
    origin.push(PUSHER);
    let pushes = env.handled("default", 2).await;
    assert_eq!(pushes[1]["state"], "failed");
    assert!(
        pushes[1]["error"]
            .as_str()
            .unwrap()
            .contains("there is no .taskcluster.yml"),
        "{}",
        pushes[1]
    );

    origin.commit("default", ".taskcluster.yml", &common::tcyml());
    let (id, good) = origin.push(PUSHER);
    let pushes = env.handled("default", 3).await;
    assert_decided(&env, &origin, &pushes[2], "default", id, &good).await;
    env.stop().await;
}

async fn pushes_made_while_stopped_are_all_handled_after_restart_once(w: &World) {
    let origin = HgOrigin::create(w.dir.path(), &["beta"]).await;
    let repo = hg_repository(
        &origin,
        &[("default", Mode::Taskgraph), ("beta", Mode::Shadow)],
    );
    let env = w.start("a", vec![repo.clone()]).await;
    following(&env, 2).await;
    let (first, first_node) = origin.push_change("default", 1);
    let before = env.handled("default", 1).await;
    env.stop().await;

    // While the service is down: two pushes on default, one on beta; the
    // pushlog keeps each.
    let mut made = vec![("default", first, first_node)];
    for (branch, n) in [("default", 2), ("beta", 3), ("default", 4)] {
        let (id, node) = origin.push_change(branch, n);
        made.push((branch, id, node));
    }

    let env = w.start("b", vec![repo]).await;
    let default = env.handled("default", 3).await;
    let beta = env.handled("beta", 1).await;
    assert_eq!(
        default[0], before[0],
        "the push handled before is untouched"
    );
    let mut got: Vec<(&Value, &str)> = default.iter().map(|p| (p, "default")).collect();
    got.extend(beta.iter().map(|p| (p, "beta")));
    got.sort_by_key(|(p, _)| p["pushlogId"].as_i64());
    assert_eq!(got.len(), made.len());
    for ((p, branch), (b, id, node)) in got.iter().zip(&made) {
        assert_eq!(branch, b);
        assert_decided(&env, &origin, p, branch, *id, node).await;
    }
    // The ledger's order is the pushlog's.
    let ledger: Vec<i64> = got
        .iter()
        .map(|(p, _)| p["pushId"].as_i64().unwrap())
        .collect();
    assert!(ledger.windows(2).all(|w| w[0] < w[1]), "{ledger:?}");
    // A later push is recorded, nothing more.
    let (next, next_node) = origin.push_change("beta", 5);
    let beta = env.handled("beta", 2).await;
    assert_decided(&env, &origin, &beta[1], "beta", next, &next_node).await;
    assert_eq!(env.pushes("default").await.len(), 3);
    env.stop().await;
}

async fn pushlog_failures_are_shown_and_retried(w: &World) {
    let origin = HgOrigin::create(w.dir.path(), &[]).await;
    let env = w
        .start(
            "a",
            vec![hg_repository(&origin, &[("default", Mode::Taskgraph)])],
        )
        .await;
    following(&env, 1).await;
    origin.set_failing(true);
    // A push made while the pushlog fails is recorded once it answers.
    let (id, node) = origin.push_change("default", 1);
    let error = wait_for("a poll error shown", || async {
        let r = env
            .ci("GET", &format!("repositories/{PROJECT}"), None)
            .await;
        (r["pollError"]["failuresInARow"].as_i64() >= Some(2)).then(|| r["pollError"].clone())
    })
    .await;
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("json-pushes") && message.contains("500"),
        "{error}"
    );
    assert!(error["time"].is_string());
    assert!(env.pushes("default").await.is_empty());

    origin.set_failing(false);
    let pushes = env.handled("default", 1).await;
    assert_decided(&env, &origin, &pushes[0], "default", id, &node).await;
    let r = env
        .ci("GET", &format!("repositories/{PROJECT}"), None)
        .await;
    assert_eq!(r["pollError"], Value::Null);
    env.stop().await;
}

/// A `changegroup.1` message of `exchange/hgpushes/v2` for push `id`.
fn changegroup(repo_url: &str, id: i64, push: &Value) -> Value {
    let head = push["changesets"].as_array().unwrap().last().unwrap()["node"].clone();
    let base = format!(
        "{repo_url}/json-pushes?version=2&startID={}&endID={id}",
        id - 1
    );
    json!({
        "payload": {
            "type": "changegroup.1",
            "data": {
                "repo_url": repo_url,
                "heads": [head],
                "source": "serve",
                "pushlog_pushes": [{
                    "time": push["date"],
                    "pushid": id,
                    "user": push["user"],
                    "push_json_url": base,
                    "push_full_json_url": base.replace("version=2&", "version=2&full=1&"),
                }],
            },
        },
        "_meta": {"exchange": EXCHANGE, "routing_key": "bbb/proj"},
    })
}

async fn publish(bus: &Bus, payload: Value) {
    bus.publish(&[Message {
        exchange: EXCHANGE.into(),
        routing_key: "bbb/proj".into(),
        cc: vec![],
        payload,
    }])
    .await
    .unwrap();
}

async fn hgpushes_messages_record_pushes_and_bad_ones_are_parked(w: &World) {
    let vhost = bbb_pulse::testing::fresh_vhost("ci-hg")
        .await
        .expect("a RabbitMQ vhost");
    let bus = Bus::connect(Some(&vhost.url)).await.unwrap();
    // The queue exists before anything is published to the exchange.
    bus.declare(QUEUE, &[Binding::new(EXCHANGE, "#")])
        .await
        .unwrap();
    let origin = HgOrigin::create(w.dir.path(), &["beta"]).await;
    let mut repo = hg_repository(
        &origin,
        &[("default", Mode::Taskgraph), ("beta", Mode::Shadow)],
    );
    repo.poll = false;
    let url = vhost.url.clone();
    let env = w
        .start_with("a", vec![repo], |c| {
            c.hgpushes_amqp_url = Some(url.as_str().into());
            c.hgpushes_exchange = EXCHANGE.into();
            c.hgpushes_queue = QUEUE.into();
        })
        .await;

    // Not polled: nothing is recorded until a message tells of the push.
    let (d, _) = origin.push_change("default", 1);
    let (b, b_node) = origin.push_change("beta", 2);
    // A message for a repository bbb does not follow, a message of another
    // type and a malformed one go first.
    publish(
        &bus,
        changegroup("https://hg.example/other", 9, &origin.pushlog(d)),
    )
    .await;
    publish(
        &bus,
        json!({"payload": {"type": "newrepo.1", "data": {"repo_url": HG_URL}}}),
    )
    .await;
    publish(
        &bus,
        json!({"payload": {"type": "changegroup.1", "data": {"heads": []}}}),
    )
    .await;
    publish(&bus, changegroup(HG_URL, b, &origin.pushlog(b))).await;
    // The message names push `b`; the pushlog gives the pushes from the
    // first one bbb had not taken (here, the message's).
    let beta = env.handled("beta", 1).await;
    assert_decided(&env, &origin, &beta[0], "beta", b, &b_node).await;
    assert_eq!(beta[0]["source"], "pulse");
    assert!(
        env.pushes("default").await.is_empty(),
        "push {d} came before"
    );

    // The next message's push and the one between are recorded in order.
    let (d2, d2_node) = origin.push_change("default", 3);
    publish(&bus, changegroup(HG_URL, d2, &origin.pushlog(d2))).await;
    let default = env.handled("default", 1).await;
    assert_decided(&env, &origin, &default[0], "default", d2, &d2_node).await;
    // A message told again (Pulse is at-least-once) records nothing more.
    publish(&bus, changegroup(HG_URL, d2, &origin.pushlog(d2))).await;
    publish(&bus, changegroup(HG_URL, b, &origin.pushlog(b))).await;

    // The malformed message is parked with its reason.
    let mut parked = bus
        .consume(&bbb_pulse::parked_queue_name(QUEUE), &[], 10)
        .await
        .unwrap();
    let delivery = parked.next().await.expect("a parked message");
    let reason = delivery.parked_reason.clone().unwrap_or_default();
    assert!(reason.contains("no repo_url"), "{reason}");
    delivery.ack().await.unwrap();
    // Messages are taken in order: once a later push is recorded, the
    // messages told again before it were handled, and recorded nothing.
    let (d3, d3_node) = origin.push_change("default", 4);
    publish(&bus, changegroup(HG_URL, d3, &origin.pushlog(d3))).await;
    let default = env.handled("default", 2).await;
    assert_decided(&env, &origin, &default[1], "default", d3, &d3_node).await;
    assert_eq!(env.pushes("beta").await.len(), 1);
    env.stop().await;
    bus.close().await;
    vhost.delete().await.unwrap();
}

/// Two services on one PostgreSQL database: every pushlog push recorded and
/// decided once, whichever service read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_services_on_one_database_take_each_push_once() {
    World::on(Backend::Postgres, async |w: &World| {
        let origin = HgOrigin::create(w.dir.path(), &["beta"]).await;
        let repo = hg_repository(
            &origin,
            &[("default", Mode::Taskgraph), ("beta", Mode::Shadow)],
        );
        let a = w.start("a", vec![repo.clone()]).await;
        let b = w.start("b", vec![repo]).await;
        following(&a, 2).await;
        let mut made = Vec::new();
        for n in 0..4 {
            for branch in ["default", "beta"] {
                let (id, node) = origin.push_change(branch, n);
                made.push((branch, id, node));
            }
        }
        let mut ids = std::collections::HashSet::new();
        for branch in ["default", "beta"] {
            let pushes = b.handled(branch, 4).await;
            let expected: Vec<_> = made.iter().filter(|(b, _, _)| *b == branch).collect();
            for (p, (_, id, node)) in pushes.iter().zip(expected) {
                assert_decided(&b, &origin, p, branch, *id, node).await;
                assert!(ids.insert(p["decisionTaskId"].as_str().unwrap().to_owned()));
            }
        }
        assert_eq!(ids.len(), 8);
        a.stop().await;
        b.stop().await;
    })
    .await;
}
