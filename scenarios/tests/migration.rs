//! The migration record with its poller of the legacy master's finished
//! builds, end to end:
//!
//! - a branch in `shadow` mode whose jobs run on the sandbox master by
//!   themselves (builds its own scheduler asked for, with scripted results),
//!   as native tasks (built-in workers, scripted outcomes) and through the
//!   bridge gives, through `/api/migration/v1`, exactly the shares,
//!   agreement, false-failure and false-pass counts and runtime ratios
//!   computed here by hand from the raw runs and builds;
//! - on every kind of master (0.8 simulator on MariaDB, a real Buildbot 4.3
//!   master, the sandbox), the poller ingests each of the master's own builds
//!   once across a restart of the service and passes over the bridge's.

#[macro_use]
mod common;

use std::time::Duration;

use bbb_buildbot::{BuildResult, FinishedBuild, FinishedCursor, LegacyMaster};
use bbb_migration::{LegacyMasters, MigrationConfig, PollSettings};
use bbb_queue::testing::{TestOptions, TestQueue};
use bbb_testdb::{PgDatabase, TempDir};
use common::{Env, MasterKind, Options, poll_until};
use serde_json::{Value, json};

scenarios!(the_poller_ingests_each_own_build_once_across_a_restart);

/// The record's configuration in these tests: polling every 100 ms.
fn record_config(mapping: &str) -> MigrationConfig {
    MigrationConfig {
        mapping: bbb_migration::parse_mapping(mapping).expect("mapping"),
        poll: Some(PollSettings {
            interval_ms: 100,
            max_backoff_ms: 1000,
            first_lookback_s: 3600,
        }),
        ..MigrationConfig::default()
    }
}

/// `GET <rootUrl>/api/migration/v1/<path>`: status and body.
async fn get(root_url: &str, path: &str) -> (u16, Value) {
    let url = format!("{root_url}/api/migration/v1/{path}");
    let resp = reqwest::get(&url).await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The `sources` row of `master`.
async fn source(root_url: &str, master: &str) -> Value {
    let (status, body) = get(root_url, "sources").await;
    assert_eq!(status, 200, "{body}");
    body["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["master"] == master)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Every finished build of `master`.
async fn finished(master: &dyn LegacyMaster) -> Vec<FinishedBuild> {
    master
        .finished_builds(FinishedCursor::START, 10_000)
        .await
        .expect("finished builds")
}

/// Waits until `master` has `n` finished builds with a known result.
async fn wait_finished(master: &dyn LegacyMaster, n: usize) -> Vec<FinishedBuild> {
    poll_until(
        &format!("{n} finished builds"),
        async || finished(master).await,
        |b| b.iter().filter(|b| b.results.is_some()).count() >= n,
    )
    .await
}

/// Milliseconds of an upstream date.
fn ms(date: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(date.as_str().expect("a date"))
        .expect("an upstream date")
        .timestamp_millis()
}

/// The median as the record computes it (the mean of the middle two).
fn median(mut v: Vec<i64>) -> f64 {
    v.sort_unstable();
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m] as f64
    } else {
        (v[m - 1] + v[m]) as f64 / 2.0
    }
}

const BRANCH: &str = "shadow-repo";
/// The branch as the master's schedulers name it: its last component is the
/// project, the record's branch.
const BB_BRANCH: &str = "projects/shadow-repo";

/// `test-a` is the sandbox's `linux64-build` on this branch; `test-b` its
/// `release-build` on every branch.
const MAPPING: &str = r#"
[[pair]]
branch = "shadow-repo"
label = "test-a"
builder = "linux64-build"

[[pair]]
label = "test-b"
builder = "release-build"
"#;

/// A task of the branch at `rev` as taskgraph makes it.
fn graph_task(task_queue_id: &str, label: &str, rev: &str, payload: Value) -> Value {
    let now = chrono::Utc::now();
    json!({
        "taskQueueId": task_queue_id,
        "schedulerId": "test",
        "created": now.to_rfc3339(),
        "deadline": (now + chrono::Duration::hours(1)).to_rfc3339(),
        "expires": (now + chrono::Duration::days(1)).to_rfc3339(),
        "payload": payload,
        "routes": [format!("tc-treeherder.v2.{BRANCH}.{rev}.7")],
        "tags": {"label": label, "project": BRANCH, "kind": "test"},
        "extra": {"treeherder": {"symbol": label, "groupSymbol": "T"}},
        "metadata": {"name": label, "description": "a migration test task",
                     "owner": "tests@example.com", "source": "https://example.com/tests"},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_branch_on_the_sandbox_master_gives_the_expected_figures() {
    let masters = LegacyMasters::default();
    let env = Env::start(
        MasterKind::Sandbox,
        Options {
            mounts: vec![
                bbb_migration::mount_with_masters(record_config(MAPPING), masters.clone()),
                bbb_queue::builtin::mount(),
            ],
            sandbox_builders: vec!["linux.only".into(), "linux.bridged".into()],
            ..Options::default()
        },
    )
    .await;
    masters.add("sandbox", env.master.clone());
    let root = env.q.root_url.clone();
    let (a_builder, b_builder) = ("linux64-build", "release-build");

    // Per revision, oldest first: Buildbot's own builds of linux64-build
    // (S, S, F, F), release-build (S, S, S, EXCEPTION) and linux.only (S);
    // the native tasks test-a (S, F, F, S), test-b (S, S, F, S) and lint (S);
    // on r3 and r4 a bridged task on linux.bridged.
    let revs = ["r1", "r2", "r3", "r4"];
    use BuildResult::{Exception, Failure, Success};
    let a_old = [Success, Success, Failure, Failure];
    let b_old = [Success, Success, Success, Exception];
    let a_new = ["succeed", "fail", "fail", "succeed"];
    let b_new = ["succeed", "succeed", "fail", "succeed"];
    let mut native: Vec<(String, &str, &str)> = Vec::new(); // (taskId, label, rev)
    let mut bridged = Vec::new();
    let mut own = 0;
    for (i, rev) in revs.iter().enumerate() {
        let d = 1000 + 500 * i as u64;
        env.schedule_own_build(a_builder, BB_BRANCH, rev, a_old[i], d)
            .await;
        env.schedule_own_build(b_builder, BB_BRANCH, rev, b_old[i], 1000)
            .await;
        env.schedule_own_build("linux.only", BB_BRANCH, rev, Success, 1000)
            .await;
        own += 3;
        for (label, how) in [
            ("test-a", a_new[i]),
            ("test-b", b_new[i]),
            ("lint", "succeed"),
        ] {
            let id = common::slug();
            let def = graph_task(&format!("built-in/{how}"), label, rev, json!({}));
            env.client.createTask(&id, &def).await.expect("createTask");
            native.push((id, label, rev));
        }
        if i >= 2 {
            let id = common::slug();
            let payload = json!({
                "buildername": "linux.bridged",
                "properties": {"product": "firefox", "sim_result": "SUCCESS", "sim_duration_ms": 1000},
                "sourcestamp": {"branch": BB_BRANCH, "revision": rev},
            });
            let def = graph_task(bbb_bridge::DEFAULT_TASK_QUEUE, "bridged-job", rev, payload);
            env.client.createTask(&id, &def).await.expect("createTask");
            bridged.push(id);
        }
        // Everything of this revision finished before the next one starts,
        // a second later (builds are timed in seconds): the window orders
        // the revisions as they were made.
        wait_finished(env.master.as_ref(), own + bridged.len()).await;
        for (id, _, _) in &native {
            env.wait_status(id, "resolved", |s| s.state.is_resolved())
                .await;
        }
        for id in &bridged {
            env.wait_status(id, "completed", |s| s.state.as_str() == "completed")
                .await;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }

    // The poller has read every build: the master's own recorded, the
    // bridge's passed over.
    let src = poll_until(
        "the poller read every build",
        async || source(&root, "sandbox").await,
        |s| s["ingested"] == 12 && s["skippedBridged"] == 2,
    )
    .await;
    assert_eq!(src["lastError"], Value::Null);
    assert_eq!(src["failures"], 0);
    // And the feed every resolved task: both pairs ran on all four
    // revisions, lint and the bridged job on the last one.
    poll_until(
        "every task recorded",
        async || {
            let mut both = Vec::new();
            for label in ["test-a", "test-b"] {
                let (_, p) = get(&root, &format!("branches/{BRANCH}/pairs/{label}")).await;
                both.push(p["bothRan"].clone());
            }
            let (_, jobs) = get(&root, &format!("branches/{BRANCH}/jobs")).await;
            let last = |label: &str, side: &str| {
                jobs["jobs"].as_array().and_then(|j| {
                    j.iter()
                        .find(|j| j["label"] == label)
                        .map(|j| j["last"][side]["revision"].clone())
                })
            };
            (both, last("lint", "native"), last("bridged-job", "bridged"))
        },
        |(both, lint, bridged)| {
            *both == [json!(4), json!(4)]
                && *lint == Some(json!("r4"))
                && *bridged == Some(json!("r4"))
        },
    )
    .await;
    let builds = finished(env.master.as_ref()).await;
    let mut statuses = std::collections::HashMap::new();
    for (id, _, _) in &native {
        let s: Value = env.client.status(id).await.expect("status");
        statuses.insert(id.clone(), s);
    }

    // Shares: test-a, test-b and lint native; bridged-job bridged; linux.only
    // Buildbot-only.
    let (status, body) = poll_until(
        "the shares",
        async || get(&root, "branches").await,
        |(_, b)| b["branches"][0]["counts"]["jobs"] == 5,
    )
    .await;
    assert_eq!(status, 200);
    let branch = &body["branches"][0];
    assert_eq!(branch["branch"], BRANCH);
    assert_eq!(
        branch["counts"],
        json!({"jobs": 5, "native": 3, "bridged": 1, "buildbotOnly": 1})
    );
    assert_eq!(
        branch["shares"],
        json!({"jobs": 1.0, "native": 0.6, "bridged": 0.2, "buildbotOnly": 0.2})
    );

    // Each pair compared by hand over the four revisions, then over the
    // last two.
    let verdict = |r: &str| match r {
        "SUCCESS" | "succeed" => 'P',
        "FAILURE" | "fail" => 'F',
        _ => '?',
    };
    for (label, builder, window) in [
        ("test-a", a_builder, 10),
        ("test-b", b_builder, 10),
        ("test-a", a_builder, 2),
        ("test-b", b_builder, 2),
    ] {
        let compared: Vec<&str> = revs.iter().rev().take(window).copied().collect();
        let (mut agree, mut ff, mut fp, mut inc) = (0, 0, 0, 0);
        let (mut old_t, mut new_t) = (Vec::new(), Vec::new());
        for rev in &compared {
            let build = builds
                .iter()
                .find(|b| b.builder == builder && b.revision.as_deref() == Some(rev))
                .expect("the build");
            let (task, _, _) = native
                .iter()
                .find(|(_, l, r)| *l == label && r == rev)
                .expect("the task");
            let run = &statuses[task]["status"]["runs"][0];
            let old = verdict(build.results.expect("a result").name());
            let new = verdict(if run["state"] == "completed" {
                "succeed"
            } else {
                "fail"
            });
            match (old, new) {
                ('P', 'P') | ('F', 'F') => agree += 1,
                ('P', 'F') => ff += 1,
                ('F', 'P') => fp += 1,
                _ => inc += 1,
            }
            old_t.push((build.finished - build.started) * 1000);
            new_t.push(ms(&run["resolved"]) - ms(&run["started"]));
        }
        let ratio = median(new_t) / median(old_t);
        let (status, pair) = get(
            &root,
            &format!("branches/{BRANCH}/pairs/{label}?revisions={window}"),
        )
        .await;
        assert_eq!(status, 200, "{pair}");
        assert_eq!(pair["builder"], builder);
        assert_eq!(pair["newSide"], "native");
        assert_eq!(pair["bothRan"], compared.len());
        assert_eq!(
            (
                &pair["agreeing"],
                &pair["falseFailures"],
                &pair["falsePasses"],
                &pair["inconclusive"]
            ),
            (&json!(agree), &json!(ff), &json!(fp), &json!(inc)),
            "{label} over {window}: {pair}"
        );
        assert!(ratio.is_finite(), "{label}: a ratio is defined");
        let got = pair["runtimeRatio"].as_f64().expect("a runtime ratio");
        // Equal but for the last bits a JSON number's parse may round.
        assert!(
            (got - ratio).abs() <= 4.0 * f64::EPSILON * got.abs().max(ratio.abs()),
            "{label}: {got} != {ratio}"
        );
    }
    // What the test expects of those, written out: test-a agrees twice, one
    // false failure (r2), one false pass (r4); test-b agrees twice, one false
    // failure (r3), one inconclusive (r4, EXCEPTION on Buildbot).
    let (_, a) = get(&root, &format!("branches/{BRANCH}/pairs/test-a")).await;
    assert_eq!(
        (&a["agreeing"], &a["falseFailures"], &a["falsePasses"]),
        (&json!(2), &json!(1), &json!(1))
    );
    let (_, b) = get(&root, &format!("branches/{BRANCH}/pairs/test-b")).await;
    assert_eq!(
        (&b["agreeing"], &b["falseFailures"], &b["inconclusive"]),
        (&json!(2), &json!(1), &json!(1))
    );
    // The bridged job is paired with its builder by the bridged tasks, and
    // compares with nothing: the bridge's builds are not Buildbot's own.
    let (status, p) = get(&root, &format!("branches/{BRANCH}/pairs/bridged-job")).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        (&p["builder"], &p["newSide"]),
        (&json!("linux.bridged"), &json!("bridged"))
    );
    assert_eq!(p["bothRan"], 0);
    let (_, jobs) = get(&root, &format!("branches/{BRANCH}/jobs")).await;
    let job = |name: &str| {
        jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["label"] == name || (j["label"].is_null() && j["builder"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("job {name} in {jobs}"))
    };
    assert_eq!(job("bridged-job")["runsOn"], "bridged");
    assert!(job("bridged-job")["last"].get("buildbot").is_none());
    assert_eq!(job("linux.only")["runsOn"], "buildbotOnly");
    assert_eq!(job("test-a")["runsOn"], "native");
    env.stop().await;
}

/// The record served by its own queue process on `url` (restartable),
/// polling `master` as `name`.
async fn record_service(
    url: &str,
    name: &str,
    master: &std::sync::Arc<dyn LegacyMaster>,
) -> TestQueue {
    let masters = LegacyMasters::default();
    masters.add(name, master.clone());
    TestQueue::with_mounts(
        TestOptions {
            database_url: Some(url.to_owned()),
            ..TestOptions::default()
        },
        vec![bbb_migration::mount_with_masters(
            record_config(""),
            masters,
        )],
    )
    .await
    .expect("the record's service")
}

async fn the_poller_ingests_each_own_build_once_across_a_restart(kind: MasterKind) {
    let env = Env::start(kind, Options::default()).await;
    // The record on PostgreSQL for the masters on MariaDB and Buildbot 4, on
    // SQLite for the sandbox.
    let dir = TempDir::new("bbb-migration-poller");
    let pg = match kind {
        MasterKind::Sandbox => None,
        _ => Some(PgDatabase::create("bbbmig").await.expect("a database")),
    };
    let url = match &pg {
        Some(pg) => pg.url().to_owned(),
        None => format!("sqlite://{}/record.sqlite", dir.path().display()),
    };
    let name = "legacy";
    let branch = "integration/mozilla-inbound";
    let (one, two) = (kind.builder(), kind.other_builder());

    let record = record_service(&url, name, &env.master).await;
    // Two builds of the master's own and one bridged task (payload branch
    // integration/mozilla-inbound).
    env.schedule_own_build(one, branch, "rev1", BuildResult::Success, 100)
        .await;
    env.schedule_own_build(two, branch, "rev1", BuildResult::Failure, 100)
        .await;
    let task = env.task(one, kind.script_success()).await;
    env.wait_status(&task, "completed", |s| s.state.as_str() == "completed")
        .await;
    let root = record.root_url.clone();
    poll_until(
        "the first builds read",
        async || source(&root, name).await,
        |s| s["ingested"] == 2 && s["skippedBridged"] == 1,
    )
    .await;
    record.stop().await;

    // While the record is down, two more of the master's own builds.
    env.schedule_own_build(one, branch, "rev2", BuildResult::Warnings, 100)
        .await;
    env.schedule_own_build(two, branch, "rev2", BuildResult::Success, 100)
        .await;
    wait_finished(env.master.as_ref(), 5).await;

    let record = record_service(&url, name, &env.master).await;
    let root = record.root_url.clone();
    let src = poll_until(
        "the builds made while it was down read",
        async || source(&root, name).await,
        |s| s["ingested"] == 4,
    )
    .await;
    // Polled again since: nothing more.
    let polled = src["lastPoll"].as_i64().expect("polled");
    let src = poll_until(
        "another poll",
        async || source(&root, name).await,
        |s| s["lastPoll"].as_i64() > Some(polled),
    )
    .await;
    assert_eq!(src["ingested"], 4, "{src}");
    assert_eq!(src["skippedBridged"], 1, "{src}");
    assert_eq!(src["lastError"], Value::Null);

    // The four own builds, once each, under the master's name; the bridged
    // one is a bridged task's run, not Buildbot's.
    let builds = finished(env.master.as_ref()).await;
    let own: Vec<&FinishedBuild> = builds.iter().filter(|b| !b.is_bridged()).collect();
    let bridged: Vec<&FinishedBuild> = builds.iter().filter(|b| b.is_bridged()).collect();
    assert_eq!((own.len(), bridged.len()), (4, 1), "{builds:#?}");
    assert_eq!(bridged[0].task_id.as_deref(), Some(task.as_str()));
    let (status, jobs) = get(&root, "branches/mozilla-inbound/jobs").await;
    assert_eq!(status, 200, "{jobs}");
    let mut seen: Vec<(String, String, String, String)> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            let last = &j["last"]["buildbot"];
            (
                j["builder"].as_str().unwrap_or_default().to_owned(),
                last["revision"].as_str().unwrap_or_default().to_owned(),
                last["result"].as_str().unwrap_or_default().to_owned(),
                last["sourceId"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let mut expected: Vec<(String, String, String, String)> = own
        .iter()
        .filter(|b| b.revision.as_deref() == Some("rev2"))
        .map(|b| {
            (
                b.builder.clone(),
                "rev2".to_owned(),
                if b.builder == one {
                    "warnings"
                } else {
                    "success"
                }
                .to_owned(),
                format!("{name}/{}", b.build_id.0),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(seen, expected);
    record.stop().await;
    env.stop().await;
    drop(pg);
}
