//! The action and cron hooks bbb keeps for a repository, with the auth and
//! hooks services beside the CI service, on SQLite and PostgreSQL, with real
//! git repositories: the in-tree action hooks and their roles follow
//! `.taskcluster.yml` and the repository's configuration, an action hook
//! renders the action's task with `tasks_for: action`, and a `.cron.yml` job
//! becomes a scheduled hook that fires its cron decision task once per slot
//! (the clock driven, not waited for), also with two services on one
//! PostgreSQL database.

mod common;

use bbb_ci::Mode;
use bbb_ci::actions::tcyml_hash;
use bbb_testdb::{Backend, on_both_backends, wait_for};
use common::{AUTHOR, Env, PROJECT, URL, Who, World, repository};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

on_both_backends!(
    crate::common::World::on;
    action_hooks_and_roles_follow_the_repository,
    a_cron_job_fires_its_decision_task_at_its_time,
);

const GROUP: &str = "project-bbbtest";

fn enc(s: &str) -> String {
    s.replace('/', "%2F")
        .replace(':', "%3A")
        .replace('*', "%2A")
}

/// The ids of the hooks of [`GROUP`].
async fn hook_ids(env: &Env) -> BTreeSet<String> {
    let a = env
        .call(Who::Root, "hooks", "GET", &format!("hooks/{GROUP}"), None)
        .await;
    if a.status == 404 {
        return BTreeSet::new();
    }
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["hookId"].as_str().unwrap().to_owned())
        .collect()
}

/// Wait until the hooks of [`GROUP`] are exactly `want`.
async fn hooks_become(env: &Env, want: &[String]) {
    let want: BTreeSet<String> = want.iter().cloned().collect();
    wait_for(&format!("the hooks {want:?}"), || async {
        (hook_ids(env).await == want).then_some(())
    })
    .await;
}

/// A hook as the API shows it.
async fn hook(env: &Env, id: &str) -> Option<Value> {
    let a = env
        .call(
            Who::Root,
            "hooks",
            "GET",
            &format!("hooks/{GROUP}/{}", enc(id)),
            None,
        )
        .await;
    (a.status == 200).then_some(a.body)
}

/// A role's scopes, if it exists.
async fn role_scopes(env: &Env, id: &str) -> Option<Value> {
    let a = env
        .call(
            Who::Root,
            "auth",
            "GET",
            &format!("roles/{}", enc(id)),
            None,
        )
        .await;
    match a.status {
        200 => Some(a.body["scopes"].clone()),
        404 => None,
        s => panic!("role {id}: {s} {}", a.body),
    }
}

async fn role_becomes(env: &Env, id: &str, want: Option<Value>) {
    wait_for(&format!("the role {id} to be {want:?}"), || async {
        (role_scopes(env, id).await == want).then_some(())
    })
    .await;
}

fn action_ids(level: u8, perms: &[&str], hashes: &[&str]) -> Vec<String> {
    let mut v = Vec::new();
    for p in perms {
        for h in hashes {
            v.push(format!("in-tree-action-{level}-{p}/{h}"));
        }
    }
    v
}

/// What taskgraph's `actions.json` gives a hook for the action `retrigger`
/// on the task group `group_id` of a push of `revision`.
fn action_payload(group_id: &str, revision: &str) -> Value {
    json!({
        "decision": {
            "action": {
                "name": "retrigger", "title": "Retrigger", "description": "Run it again",
                "taskGroupId": group_id, "cb_name": "retrigger_action", "symbol": "rt",
            },
            "push": {
                "owner": AUTHOR, "revision": revision, "base_revision": revision,
                "pushlog_id": "1", "branch": "main",
            },
            "repository": {"url": URL, "project": PROJECT, "level": "1", "base_url": URL},
        },
        "user": {"input": {"times": 2}, "taskId": null, "taskGroupId": group_id},
    })
}

async fn action_hooks_and_roles_follow_the_repository(w: &World) {
    let origin = w.origin(&["dev", "old"]);
    let repo = repository(
        &origin,
        &[
            ("main", Mode::Taskgraph),
            ("dev", Mode::Shadow),
            ("old", Mode::Buildbot),
        ],
    );
    let env = w
        .start_with_hooks("a", vec![repo.clone()], &["generic", "release"])
        .await;
    let h1 = tcyml_hash(common::tcyml().as_bytes());
    // One hook per permission for the .taskcluster.yml of the followed
    // branches, and one role per permission at the repository's level.
    hooks_become(&env, &action_ids(1, &["generic", "release"], &[&h1])).await;
    for perm in ["generic", "release"] {
        role_becomes(
            &env,
            &format!("hook-id:{GROUP}/in-tree-action-1-{perm}/*"),
            Some(json!([format!(
                "assume:repo:git.example/bbb/proj:action:{perm}"
            )])),
        )
        .await;
    }
    role_becomes(
        &env,
        &format!("hook-id:{GROUP}/cron-proj/*"),
        Some(json!(["assume:repo:git.example/bbb/proj:cron:*"])),
    )
    .await;
    let def = hook(&env, &format!("in-tree-action-1-generic/{h1}"))
        .await
        .unwrap();
    assert_eq!(def["schedule"], json!([]));
    assert_eq!(def["task"]["in"]["$let"]["tasks_for"], "action");
    // The file's hash is in the context too (what names the hook).
    assert_eq!(def["task"]["in"]["$let"]["tcyml_hash"], h1.as_str());

    // Triggering it as actions.json says renders the action's task from
    // .taskcluster.yml with tasks_for action, created with the action role.
    let group_id = bbb_service::validate::slugid();
    let head = origin.head("main");
    let a = env
        .call(
            Who::Root,
            "hooks",
            "POST",
            &format!(
                "hooks/{GROUP}/{}/trigger",
                enc(&format!("in-tree-action-1-generic/{h1}"))
            ),
            Some(&action_payload(&group_id, &head)),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let task_id = a.body["status"]["taskId"].as_str().unwrap().to_owned();
    let task = env.task(&task_id).await;
    assert_eq!(task["taskGroupId"], group_id.as_str());
    assert_eq!(
        task["scopes"],
        json!(["assume:repo:git.example/bbb/proj:action:generic"])
    );
    assert_eq!(task["metadata"]["name"], "Action: Retrigger");
    assert_eq!(task["extra"]["parent"], group_id.as_str());
    assert_eq!(task["extra"]["treeherder"]["symbol"], "rt");
    let e = &task["payload"]["env"];
    assert_eq!(e["BBB_TASKS_FOR"], "action");
    assert_eq!(e["ACTION_CALLBACK"], "retrigger_action");
    assert_eq!(e["ACTION_TASK_GROUP_ID"], group_id.as_str());
    assert_eq!(
        serde_json::from_str::<Value>(e["ACTION_INPUT"].as_str().unwrap()).unwrap(),
        json!({"times": 2})
    );
    assert_eq!(e["BBB_REVISION"], head);
    assert_eq!(e["BBB_CLONE_URL"], origin.path.display().to_string());
    // A payload that is not actions.json's is refused by the trigger schema.
    let a = env
        .call(
            Who::Root,
            "hooks",
            "POST",
            &format!(
                "hooks/{GROUP}/{}/trigger",
                enc(&format!("in-tree-action-1-generic/{h1}"))
            ),
            Some(&json!({"decision": {}})),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.body);

    // A new .taskcluster.yml on a followed branch: new hooks; the old ones
    // stay (dev still has the old file, and decisions made with it).
    let changed = format!("{}\n# changed\n", common::tcyml());
    let h2 = tcyml_hash(changed.as_bytes());
    origin.commit("main", ".taskcluster.yml", &changed);
    let pushes = env.handled("main", 1).await;
    assert_eq!(pushes[0]["state"], "decided", "{}", pushes[0]);
    hooks_become(&env, &action_ids(1, &["generic", "release"], &[&h1, &h2])).await;

    // The repository moved to level 2 through the API: the hooks and roles
    // of level 1 go, those of level 2 come.
    let body = json!({
        "url": URL, "cloneUrl": origin.path.display().to_string(), "kind": "git",
        "trustDomain": "bbbtest", "level": 2,
        "branches": [
            {"name": "main", "mode": "taskgraph"},
            {"name": "dev", "mode": "shadow"},
            {"name": "old", "mode": "buildbot"},
        ],
    });
    env.ci("PUT", &format!("repositories/{PROJECT}"), Some(&body))
        .await;
    hooks_become(&env, &action_ids(2, &["generic", "release"], &[&h1, &h2])).await;
    role_becomes(
        &env,
        &format!("hook-id:{GROUP}/in-tree-action-1-generic/*"),
        None,
    )
    .await;
    role_becomes(
        &env,
        &format!("hook-id:{GROUP}/in-tree-action-2-generic/*"),
        Some(json!(["assume:repo:git.example/bbb/proj:action:generic"])),
    )
    .await;

    // Once no followed branch has had the old file for the retention time
    // (60 days), its hooks go.
    origin.commit("dev", ".taskcluster.yml", &changed);
    let pushes = env.handled("dev", 1).await;
    assert_eq!(pushes[0]["state"], "decided", "{}", pushes[0]);
    env.q.clock.advance(Duration::from_millis(61 * 86_400_000));
    hooks_become(&env, &action_ids(2, &["generic", "release"], &[&h2])).await;
    // What the last pass did is shown to those who may list repositories.
    let pass = env
        .call(Who::Client("manager"), "ci", "GET", "hooks-pass", None)
        .await;
    assert_eq!(pass.status, 200, "{}", pass.body);
    assert_eq!(pass.body["errors"], json!([]), "{}", pass.body);
    let denied = env
        .call(Who::Client("nobody"), "ci", "GET", "hooks-pass", None)
        .await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    env.stop().await;
}

/// A `.cron.yml` with the job `nightly` at `hour`:00 and one for another
/// project only.
fn cron_yml(hour: i64) -> String {
    format!(
        r#"jobs:
  - name: nightly
    job:
      type: decision-task
      treeherder-symbol: Nd
      target-tasks-method: nightly
    when:
      - {{hour: {hour}, minute: 0}}
  - name: elsewhere
    job: {{type: decision-task, treeherder-symbol: E, target-tasks-method: x}}
    run-on-projects: [another]
    when: [{{hour: 1, minute: 0}}]
"#
    )
}

/// The hook's status.
async fn status(env: &Env, id: &str) -> Value {
    env.call(
        Who::Root,
        "hooks",
        "GET",
        &format!("hooks/{GROUP}/{}/status", enc(id)),
        None,
    )
    .await
    .body
}

/// The hook's firings.
async fn fires(env: &Env, id: &str) -> Vec<Value> {
    let a = env
        .call(
            Who::Root,
            "hooks",
            "GET",
            &format!("hooks/{GROUP}/{}/last-fires", enc(id)),
            None,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["lastFires"].as_array().cloned().unwrap_or_default()
}

/// Wait for `env`'s cron hook of `nightly` on main at `hour`; its next slot.
async fn cron_hook_ready(env: &Env, hour: i64, revision: &str) -> i64 {
    let id = "cron-proj/main/nightly";
    let def = wait_for("the cron hook", || async {
        hook(env, id)
            .await
            .filter(|d| d["task"]["$let"]["push"]["revision"] == revision)
    })
    .await;
    assert_eq!(def["schedule"], json!([format!("0 0 {hour} * * *")]));
    // The hook's role is in force in this process (a process reads the
    // roles another made within a quarter of a second).
    wait_for("the cron role in force", || async {
        let body = json!({"scopes": [format!("assume:hook-id:{GROUP}/{id}")]});
        let a = env
            .call(Who::Root, "auth", "POST", "scopes/expand", Some(&body))
            .await;
        a.body["scopes"]
            .as_array()?
            .iter()
            .any(|s| s == "assume:repo:git.example/bbb/proj:cron:*")
            .then_some(())
    })
    .await;
    let s = status(env, id).await;
    bbb_clock::parse_ms(s["nextScheduledDate"].as_str().unwrap()).unwrap()
}

/// Check the cron decision task `task_id` created at `slot` for `revision`.
async fn assert_cron_task(env: &Env, task_id: &str, slot: i64, revision: &str) {
    let task = env.task(task_id).await;
    assert_eq!(task["created"], bbb_clock::fmt_ms(slot));
    assert_eq!(task["taskGroupId"], task_id);
    assert_eq!(
        task["scopes"],
        json!(["assume:repo:git.example/bbb/proj:cron:nightly"])
    );
    assert_eq!(task["metadata"]["owner"], "cron");
    assert_eq!(task["extra"]["treeherder"]["symbol"], "Nd");
    let e = &task["payload"]["env"];
    assert_eq!(e["BBB_TASKS_FOR"], "cron");
    assert_eq!(e["BBB_CRON_JOB"], "nightly");
    assert_eq!(e["BBB_CRON_ARGS"], "--target-tasks-method=nightly");
    assert_eq!(e["BBB_REVISION"], revision);
    assert_eq!(e["BBB_BRANCH"], "main");
}

/// Move `envs`' clocks to one second after `slot`, wait until the slot has
/// fired and the hook moved to the next: the firings.
async fn fire_slot(envs: &[&Env], slot: i64) -> Vec<Value> {
    let id = "cron-proj/main/nightly";
    for env in envs {
        let ahead = slot + 1000 - env.q.clock.now_ms();
        env.q.clock.advance(Duration::from_millis(ahead as u64));
    }
    let env = envs[0];
    wait_for("the slot to fire and the hook to move on", || async {
        let s = status(env, id).await;
        let next = s["nextScheduledDate"]
            .as_str()
            .and_then(bbb_clock::parse_ms)?;
        (next > slot).then_some(())
    })
    .await;
    fires(env, id).await
}

async fn a_cron_job_fires_its_decision_task_at_its_time(w: &World) {
    let origin = w.origin(&["old"]);
    let hour = (bbb_clock::Clock::system().now_ms() / 3_600_000 + 12) % 24;
    let head = origin.commit("main", ".cron.yml", &cron_yml(hour));
    origin.commit("old", ".cron.yml", &cron_yml(hour));
    let repo = repository(
        &origin,
        &[("main", Mode::Taskgraph), ("old", Mode::Buildbot)],
    );
    let env = w.start_with_hooks("a", vec![repo], &["generic"]).await;
    let slot = cron_hook_ready(&env, hour, &head).await;
    // Only main's job for this project: none for the buildbot branch.
    let ids = hook_ids(&env).await;
    let cron: Vec<&String> = ids.iter().filter(|i| i.starts_with("cron-")).collect();
    assert_eq!(cron, ["cron-proj/main/nightly"], "{ids:?}");

    let fired = fire_slot(&[&env], slot).await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0]["result"], "success", "{}", fired[0]);
    assert_eq!(fired[0]["firedBy"], "schedule");
    assert_cron_task(&env, fired[0]["taskId"].as_str().unwrap(), slot, &head).await;
    let fired_first = fired[0]["taskId"].clone();

    // A push moves the hook to the new head; but not while its next slot is
    // due within a minute (an update would move the hook past the slot):
    // the slot fires with the old head, and the hook moves after.
    let slot = bbb_clock::parse_ms(
        status(&env, "cron-proj/main/nightly").await["nextScheduledDate"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let ahead = slot - 30_000 - env.q.clock.now_ms();
    env.q.clock.advance(Duration::from_millis(ahead as u64));
    let next = origin.push("main", 1);
    env.handled("main", 1).await;
    wait_for("a pass to defer the update", || async {
        let a = env.call(Who::Root, "ci", "GET", "hooks-pass", None).await;
        let deferred = a.body["deferred"].as_array()?;
        deferred
            .iter()
            .any(|d| d == "project-bbbtest/cron-proj/main/nightly")
            .then_some(())
    })
    .await;
    let fired = fire_slot(&[&env], slot).await;
    assert_eq!(fired.len(), 2, "{fired:?}");
    let second = fired
        .iter()
        .find(|f| f["taskId"] != fired_first)
        .expect("the second slot's firing");
    assert_eq!(second["result"], "success", "{second}");
    assert_cron_task(&env, second["taskId"].as_str().unwrap(), slot, &head).await;
    cron_hook_ready(&env, hour, &next).await;
    let pass = env.ci("GET", "hooks-pass", None).await;
    assert_eq!(pass["errors"], json!([]), "{pass}");

    // A .cron.yml without the job takes the hook away.
    origin.commit("main", ".cron.yml", "jobs: []\n");
    env.handled("main", 2).await;
    wait_for("the cron hook to go", || async {
        (!hook_ids(&env).await.iter().any(|i| i.starts_with("cron-"))).then_some(())
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_services_on_one_database_fire_each_cron_slot_once() {
    World::on(Backend::Postgres, async |w: &World| {
        let origin = w.origin(&[]);
        let hour = (bbb_clock::Clock::system().now_ms() / 3_600_000 + 12) % 24;
        let head = origin.commit("main", ".cron.yml", &cron_yml(hour));
        let repo = repository(&origin, &[("main", Mode::Taskgraph)]);
        let a = w
            .start_with_hooks("a", vec![repo.clone()], &["generic"])
            .await;
        let b = w.start_with_hooks("b", vec![repo], &["generic"]).await;
        let slot = cron_hook_ready(&a, hour, &head).await;
        assert_eq!(cron_hook_ready(&b, hour, &head).await, slot);
        // Two slots, a day apart, each fired by whichever scheduler took it.
        let fired = fire_slot(&[&a, &b], slot).await;
        assert_eq!(fired.len(), 1, "{fired:?}");
        let next = slot + 86_400_000;
        let fired = fire_slot(&[&a, &b], next).await;
        assert_eq!(fired.len(), 2, "{fired:?}");
        let tasks: BTreeSet<&str> = fired
            .iter()
            .map(|f| f["taskId"].as_str().unwrap())
            .collect();
        assert_eq!(tasks.len(), 2);
        for f in &fired {
            assert_eq!(f["result"], "success", "{f}");
        }
        let by_time: Vec<i64> = {
            let mut v = Vec::new();
            for f in &fired {
                let t = a.task(f["taskId"].as_str().unwrap()).await;
                v.push(bbb_clock::parse_ms(t["created"].as_str().unwrap()).unwrap());
            }
            v.sort();
            v
        };
        assert_eq!(by_time, [slot, next]);
        for f in &fired {
            let id = f["taskId"].as_str().unwrap();
            let created =
                bbb_clock::parse_ms(a.task(id).await["created"].as_str().unwrap()).unwrap();
            assert_cron_task(&a, id, created, &head).await;
        }
        a.stop().await;
        b.stop().await;
    })
    .await;
}
