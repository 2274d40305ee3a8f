//! The dashboard and health pages served by a queue with the migration
//! record, on SQLite and PostgreSQL (the bridge's mapping database on the
//! same engine): the figures each page shows are exactly those of the
//! record, the CI tables, the bridge's snapshots and the queue's tables
//! written by the test; unknown branches and pairs are clear 404 pages;
//! every value from the data is escaped.

use bbb_ci::store::{Decided, NewPush, Repository, Store};
use bbb_ci::{Kind, Mode};
use bbb_migration::milestones::{self, MilestoneDef};
use bbb_migration::{MigrationConfig, Observation, Outcome, Pairing, Side};
use bbb_queue::testing::{TestOptions, TestQueue, wait_for};
use bbb_state::{HealthRow, NewSlot, StateDb};
use bbb_testdb::{Backend, PgDatabase, TempDir, on_both_backends};
use serde_json::json;
use taskcluster::{ClientBuilder, Credentials, Queue, Retry};

on_both_backends!(
    crate::on;
    the_dashboard_shows_shares_pushes_pairs_and_milestones,
    the_health_page_shows_masters_processes_and_task_queues,
);

const BRANCH: &str = "shadow-repo";
const T0: i64 = 1_700_000_000_000;

/// What a test gets: the queue with the record and the web UI, and the
/// bridge's mapping database the web UI reads.
struct Env {
    q: TestQueue,
    state: StateDb,
}

async fn on(backend: Backend, test: impl AsyncFnOnce(&Env)) {
    let dir = TempDir::new("bbb-web-test");
    let pg = match backend {
        Backend::Postgres => Some(
            PgDatabase::create("bbbweb")
                .await
                .expect("a PostgreSQL database"),
        ),
        Backend::Sqlite => None,
    };
    let url = match &pg {
        Some(pg) => pg.url().to_owned(),
        None => format!("sqlite://{}/bridge-state.sqlite", dir.path().display()),
    };
    let state = StateDb::connect(&url, 4)
        .await
        .expect("the mapping database");
    state.migrate().await.expect("migrate it");
    let q = TestQueue::with_mounts(
        TestOptions {
            postgres: backend == Backend::Postgres,
            ..Default::default()
        },
        vec![
            bbb_migration::mount(MigrationConfig {
                poll: None,
                revisions: 10,
                ..MigrationConfig::default()
            }),
            bbb_web::mount_with(
                bbb_login::Login::default(),
                bbb_web::WebConfig {
                    bridge_state_url: Some(bbb_secret::SecretUrl::new(url.clone())),
                    revisions: 10,
                    ..bbb_web::WebConfig::default()
                },
            ),
        ],
    )
    .await
    .expect("start the queue with the web UI");
    let env = Env { q, state };
    test(&env).await;
    env.q.stop().await;
    env.state.close().await;
}

/// GET `path`: status and body.
async fn get(q: &TestQueue, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("{}{path}", q.root_url))
        .await
        .expect("GET");
    (r.status().as_u16(), r.text().await.expect("body"))
}

/// The `<tr>` whose opening tag holds `attr` (e.g. `data-job="test-a"`).
fn row<'a>(html: &'a str, attr: &str) -> &'a str {
    let start = html
        .find(&format!("<tr {attr}"))
        .or_else(|| html.find(attr).and_then(|i| html[..i].rfind("<tr")))
        .unwrap_or_else(|| panic!("no row {attr} in {html}"));
    let end = html[start..].find("</tr>").expect("the row ends") + start;
    &html[start..end]
}

/// The content of the cell `data-figure="<name>"` in `html`.
fn figure<'a>(html: &'a str, name: &str) -> &'a str {
    let tag = format!("data-figure=\"{name}\"");
    let at = html
        .find(&tag)
        .unwrap_or_else(|| panic!("no figure {name} in {html}"));
    let open = html[at..].find('>').expect("tag ends") + at + 1;
    let close = html[open..].find("</").expect("cell ends") + open;
    &html[open..close]
}

fn obs(
    side: Side,
    id: &str,
    rev: &str,
    job: &str,
    result: Outcome,
    at: i64,
    mins: i64,
) -> Observation {
    Observation {
        side,
        source_id: id.into(),
        branch: BRANCH.into(),
        revision: rev.into(),
        job: job.into(),
        builder: (side == Side::Buildbot).then(|| job.to_string()),
        symbol: None,
        result,
        started: Some(T0 + at * 60_000),
        finished: T0 + (at + mins) * 60_000,
    }
}

async fn the_dashboard_shows_shares_pushes_pairs_and_milestones(env: &Env) {
    let q = &env.q;
    let db = &q.running.queue.db;
    use Outcome::*;
    use Side::*;
    // Three revisions. The pair test-a ↔ lin.a: r1 both pass (10 and 20
    // min), r2 Buildbot passes and the task fails (8, 20), r3 only Buildbot.
    // lint runs natively, lin.talos only on Buildbot, build-win through the
    // bridge (builder win.build).
    let mut bridged = obs(
        Bridged,
        "TaskBridged000000000000/0",
        "rev-2",
        "build-win",
        Success,
        11,
        30,
    );
    bridged.builder = Some("win.build".into());
    bbb_migration::ingest(
        db,
        &[
            obs(Buildbot, "m/1", "rev-1", "lin.a", Success, 0, 20),
            obs(
                Native,
                "TaskA1000000000000000000/0",
                "rev-1",
                "test-a",
                Success,
                1,
                10,
            ),
            obs(
                Native,
                "TaskLint1000000000000000/0",
                "rev-1",
                "lint",
                Success,
                2,
                1,
            ),
            obs(Buildbot, "m/2", "rev-1", "lin.talos", Success, 3, 40),
            obs(Buildbot, "m/3", "rev-2", "lin.a", Success, 10, 20),
            obs(
                Native,
                "TaskA2000000000000000000/0",
                "rev-2",
                "test-a",
                Failure,
                10,
                8,
            ),
            bridged,
            obs(Buildbot, "m/4", "rev-3", "lin.a", Failure, 20, 20),
            obs(Buildbot, "m/5", "rev-3", "<b>lin.evil</b>", Success, 21, 2),
        ],
    )
    .await
    .expect("ingest");
    bbb_migration::store::put_mapping(
        db,
        &Pairing {
            branch: BRANCH.into(),
            label: "test-a".into(),
            builder: "lin.a".into(),
        },
        "api",
        "tests",
        T0,
    )
    .await
    .expect("mapping");
    // The branch's CI: followed in shadow mode, one push decided, one whose
    // .taskcluster.yml is broken.
    let ci = Store::new(db.pool.clone(), db.backend);
    ci.migrate().await.expect("CI tables");
    let mut repo = Repository::from_config(&bbb_ci::config::RepositoryConfig {
        project: BRANCH.into(),
        url: "https://example.com/shadow-repo".into(),
        clone_url: None,
        kind: Kind::Git,
        trust_domain: "test".into(),
        level: 1,
        poll: false,
        webhook_secret: None,
        branches: vec![bbb_ci::config::BranchConfig {
            name: "main".into(),
            mode: Mode::Shadow,
        }],
    });
    repo.poll = false;
    ci.put_repository(&repo, false, "tests", T0)
        .await
        .expect("repository");
    let mut ids = Vec::new();
    for (i, rev) in ["rev-2", "rev-3"].into_iter().enumerate() {
        let push = NewPush {
            project: BRANCH.into(),
            branch: "main".into(),
            revision: rev.into(),
            base_revision: None,
            owner: "dev@example.com".into(),
            pushdate: T0 + i as i64 * 600_000,
            source: "webhook",
        };
        ids.push(ci.record_push(&push, T0).await.expect("push").expect("new"));
    }
    let mut conn = ci.pool.acquire().await.expect("connection");
    ci.decided(
        &mut conn,
        ids[0],
        &Decided::Task("DecisionTask0000000000w".into()),
        T0,
    )
    .await
    .expect("decided");
    ci.decided(
        &mut conn,
        ids[1],
        &Decided::Failed(".taskcluster.yml: <script>alert(1)</script> is not valid".into()),
        T0,
    )
    .await
    .expect("failed");
    drop(conn);
    // Two milestones: one overdue with half its jobs native, one met.
    for (name, due, jobs) in [
        ("q1-linux", "2020-01-17", vec!["test-a", "lin.talos"]),
        ("q2-lint", "2999-01-01", vec!["lint"]),
    ] {
        let def = MilestoneDef {
            branch: BRANCH.into(),
            due: due.into(),
            jobs: jobs.into_iter().map(Into::into).collect(),
            description: "Linux <i>tier 1</i>".into(),
        };
        milestones::put(db, name, &def, "api", "tests", T0)
            .await
            .expect("milestone");
    }

    // The overview.
    let (status, html) = get(q, "/").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("<title>Migration · bbb</title>"), "{html}");
    let b = row(&html, &format!("data-branch=\"{BRANCH}\""));
    // Jobs over the window: test-a↔lin.a (native), lint (native), lin.talos
    // and <b>lin.evil</b> (Buildbot only), build-win↔win.build (bridged).
    assert_eq!(figure(b, "jobs"), "5");
    assert_eq!(figure(b, "native"), "2 (40%)");
    assert_eq!(figure(b, "bridged"), "1 (20%)");
    assert_eq!(figure(b, "buildbot-only"), "2 (40%)");
    assert!(b.contains("data-mode=\"shadow\">main: shadow"), "{b}");
    assert!(b.contains("<code>rev-3</code> main"), "{b}");
    assert!(b.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{b}");
    assert!(!html.contains("<script>alert"), "unescaped: {html}");
    assert!(b.contains("<svg class=\"chart\""), "{b}");
    let m = row(&html, "data-milestone=\"q1-linux\"");
    assert!(m.contains("class=\"overdue\""), "{m}");
    assert!(m.contains("<progress max=\"2\" value=\"1\""), "{m}");
    assert!(m.contains("1 of 2 native"), "{m}");
    assert!(m.contains("<code>lin.talos</code>"), "{m}");
    assert!(m.contains("Linux &lt;i&gt;tier 1&lt;/i&gt;"), "{m}");
    let m = row(&html, "data-milestone=\"q2-lint\"");
    assert!(
        !m.contains("overdue") && m.contains("<progress max=\"1\" value=\"1\""),
        "{m}"
    );

    // The branch.
    let (status, html) = get(q, &format!("/branches/{BRANCH}")).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("<title>Branch shadow-repo · bbb</title>"));
    assert_eq!(figure(&html, "jobs"), "5");
    let pair = row(&html, "data-job=\"test-a\"");
    assert_eq!(figure(pair, "runs-on"), "native");
    // r1 agree, r2 false failure; r3 has no task.
    assert!(pair.contains(">1 / 2</a>"), "{pair}");
    assert!(
        pair.contains(&format!("href=\"/branches/{BRANCH}/pairs/test-a\"")),
        "{pair}"
    );
    assert_eq!(figure(pair, "false-failures"), "1");
    assert_eq!(figure(pair, "false-passes"), "0");
    // Runtimes: new 10 and 8 (median 9), old 20 and 20.
    assert_eq!(figure(pair, "runtime-ratio"), "0.45");
    assert!(
        pair.contains("href=\"/tasks/TaskA2000000000000000000\""),
        "{pair}"
    );
    assert!(
        pair.contains("<span class=\"result failure\">failure</span> <code>rev-2</code>"),
        "{pair}"
    );
    let evil = row(&html, "data-job=\"&lt;b&gt;lin.evil&lt;/b&gt;\"");
    assert_eq!(figure(evil, "runs-on"), "Buildbot only");
    let bridged = row(&html, "data-job=\"build-win\"");
    assert_eq!(figure(bridged, "runs-on"), "bridged");
    let push = row(&html, "data-revision=\"rev-2\"");
    assert!(
        push.contains("href=\"/tasks/DecisionTask0000000000w\""),
        "{push}"
    );
    let broken = row(&html, "data-revision=\"rev-3\"");
    assert!(
        broken.contains("<pre class=\"error\" role=\"note\">.taskcluster.yml: &lt;script&gt;"),
        "{broken}"
    );
    // The history: three revisions, oldest first.
    let history = &html[html.find("<table id=\"history\"").expect("history table")..];
    let history = &history[..history.find("</table>").expect("the table ends")];
    let rows: Vec<&str> = history.split("<tr>").skip(2).collect();
    assert_eq!(rows.len(), 3, "{history}");
    assert!(
        rows[0].contains("rev-3") && rows[2].contains("rev-1"),
        "{history}"
    );
    assert!(html.contains("data-milestone=\"q1-linux\""));

    // The pair's runs.
    let (status, html) = get(q, &format!("/branches/{BRANCH}/pairs/test-a")).await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(figure(&html, "both-ran"), "2 of the last 3");
    assert_eq!(figure(&html, "agree"), "1");
    assert_eq!(figure(&html, "false-failures"), "1");
    let r2 = row(&html, "data-revision=\"rev-2\"");
    assert!(r2.contains("class=\"comparison falseFailure\""), "{r2}");
    assert!(r2.contains("build m/3"), "{r2}");
    assert!(
        r2.contains("<td>20.0 s</td>") || r2.contains("1200.0 s"),
        "{r2}"
    );
    let r1 = row(&html, "data-revision=\"rev-1\"");
    assert!(r1.contains("class=\"comparison agree\""), "{r1}");

    // Not found: a branch, a pair, and a name that is markup.
    let (status, html) = get(q, "/branches/nowhere").await;
    assert_eq!(status, 404);
    assert!(html.contains("<title>Not found · bbb</title>"));
    assert!(html.contains("Branch nowhere was not found."), "{html}");
    let (status, html) = get(q, &format!("/branches/{BRANCH}/pairs/lint")).await;
    assert_eq!(status, 404);
    assert!(html.contains("A pair of lint with a builder on branch shadow-repo was not found."));
    let (status, html) = get(q, "/branches/%3Cscript%3Ex").await;
    assert_eq!(status, 404);
    assert!(
        html.contains("Branch &lt;script&gt;x was not found."),
        "{html}"
    );
    // A smaller window: the last revision only (lin.a and lin.evil).
    let (status, html) = get(q, &format!("/branches/{BRANCH}?revisions=1")).await;
    assert_eq!(status, 200);
    assert_eq!(figure(&html, "jobs"), "2");
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

fn task(q: &TestQueue, task_queue_id: &str) -> serde_json::Value {
    let now = q.clock.now_ms();
    json!({
        "taskQueueId": task_queue_id,
        "created": bbb_clock::fmt_ms(now),
        "deadline": bbb_clock::fmt_ms(now + 3_600_000),
        "payload": {},
        "metadata": {"name": "a health test task", "description": "d", "owner": "tests@example.com", "source": "https://example.com/tests"},
    })
}

async fn the_health_page_shows_masters_processes_and_task_queues(env: &Env) {
    let q = &env.q;
    let state = &env.state;
    let now = q.clock.now_ms();
    // The master's rows: two requests waiting, one build running.
    for task in ["Wait1", "Wait2", "Run1"] {
        state
            .claim_slot(&NewSlot {
                task_id: task,
                run_id: 0,
                master: "legacy-1",
                deadline: now + 3_600_000,
                instance: "bridge-a",
                now,
                inject_lease_ms: 60_000,
            })
            .await
            .expect("slot");
    }
    for (i, task) in ["Wait1", "Wait2", "Run1"].into_iter().enumerate() {
        state
            .set_build_request(task, 0, 10 + i as i64, now)
            .await
            .expect("request");
    }
    state
        .mark_started(
            "Run1",
            0,
            bbb_state::StartedBuild {
                build_id: Some(5),
                number: None,
            },
            now + 60_000,
            now,
        )
        .await
        .expect("started");
    // Two processes: one reporting now, one silent for ten minutes.
    let snapshot = json!({
        "injected": 3,
        "reclaims": {"ok": 7, "refused": 1},
        "claimExpired": 2,
        "deadlineExceeded": 4,
        "pastDeadline": 1,
        "parkedTotal": 1,
        "parked": [{"at": now - 1000, "queue": "bbb/tc-pending", "reason": "payload <em>bad</em>"}],
        "reflector": {"ended": now - 20_000, "tookMs": 35, "intervalMs": 60_000, "passes": 3},
    });
    state
        .put_health(&HealthRow {
            master: "legacy-1".into(),
            instance: "bridge-a".into(),
            started: now - 100_000,
            updated: now,
            snapshot: snapshot.to_string(),
        })
        .await
        .expect("snapshot");
    state
        .put_health(&HealthRow {
            master: "legacy-1".into(),
            instance: "bridge-old".into(),
            started: now - 1_000_000,
            updated: now - 600_000,
            snapshot: "{}".into(),
        })
        .await
        .expect("snapshot");
    // The queue: a task pending on one queue; one claimed on another.
    let queue = root_queue(q);
    let pending_queue = "web-test/pending";
    let busy_queue = "web-test/busy";
    queue
        .createTask(&bbb_service::validate::slugid(), &task(q, pending_queue))
        .await
        .expect("createTask");
    let claimed = bbb_service::validate::slugid();
    queue
        .createTask(&claimed, &task(q, busy_queue))
        .await
        .expect("createTask");
    let claim = wait_for("the task claimed", || async {
        let r = queue
            .claimWork(
                busy_queue,
                &json!({"workerGroup": "grp", "workerId": "w-1", "tasks": 1}),
            )
            .await
            .expect("claimWork");
        r["tasks"].as_array().and_then(|t| t.first().cloned())
    })
    .await;
    assert_eq!(claim["status"]["taskId"], claimed.as_str());

    let (status, html) = get(q, "/health").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("<title>Health · bbb</title>"));
    assert!(html.contains("data-live=\"/health/figures\""));
    assert!(html.contains("<script src=\"/static/live.js\" defer></script>"));
    let master = row(&html, "data-master=\"legacy-1\"");
    assert_eq!(figure(master, "pending"), "2");
    assert_eq!(figure(master, "running"), "1");
    let p = row(&html, "data-process=\"legacy-1/bridge-a\"");
    assert!(figure(p, "reclaims").starts_with('7'), "{p}");
    assert_eq!(figure(p, "claim-expired"), "2");
    assert!(figure(p, "deadline-exceeded").starts_with('4'), "{p}");
    assert_eq!(figure(p, "reflector-pass"), "35 ms");
    assert!(
        figure(p, "reflector-lag").starts_with("20 s since the last pass"),
        "{p}"
    );
    assert_eq!(figure(p, "parked"), "1");
    assert!(!p.contains("stale"), "{p}");
    let old = row(&html, "data-process=\"legacy-1/bridge-old\"");
    assert!(old.contains("stale"), "{old}");
    assert!(html.contains("payload &lt;em&gt;bad&lt;/em&gt;"), "{html}");
    let pq = row(&html, &format!("data-task-queue=\"{pending_queue}\""));
    assert_eq!(figure(pq, "pending"), "1");
    assert_eq!(figure(pq, "claimed"), "0");
    let bq = row(&html, &format!("data-task-queue=\"{busy_queue}\""));
    assert_eq!(figure(bq, "pending"), "0");
    assert_eq!(figure(bq, "claimed"), "1");
    assert_eq!(figure(bq, "workers"), "1");
    assert!(
        bq.contains(&format!("href=\"/tasks/{claimed}\"")) && bq.contains("by grp/w-1"),
        "{bq}"
    );

    // The fragment the page polls: the figures alone, and new ones.
    queue
        .createTask(&bbb_service::validate::slugid(), &task(q, pending_queue))
        .await
        .expect("createTask");
    let (status, fragment) = get(q, "/health/figures").await;
    assert_eq!(status, 200);
    assert!(!fragment.contains("<html") && fragment.contains("<table id=\"task-queues\""));
    let pq = row(&fragment, &format!("data-task-queue=\"{pending_queue}\""));
    assert_eq!(figure(pq, "pending"), "2");
    let (status, js) = get(q, "/static/live.js").await;
    assert_eq!(status, 200);
    assert!(js.contains("data-live"));
}
