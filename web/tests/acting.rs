//! What the pages' forms do, with the signed-in user's credentials: the
//! actions of a decision task's `actions.json` fired through hooks as
//! Treeherder fires them, rerun, cancel and retrigger straight through the
//! queue for a group without actions, a human decision made; refusals shown
//! with the service's message; on SQLite and PostgreSQL.

mod common;

use bbb_testdb::on_both_backends;
use common::*;
use serde_json::{Value, json};

on_both_backends!(
    crate::common::Env::on;
    a_group_without_actions_reruns_cancels_and_retriggers_through_the_queue,
    forms_need_a_signed_in_user_and_their_token,
    actions_are_fired_through_hooks_as_the_user,
    a_human_decision_is_made_by_a_user_with_the_scopes,
);

async fn a_group_without_actions_reruns_cancels_and_retriggers_through_the_queue(env: &Env) {
    let group = slug();
    let (a, b, c) = (group.clone(), slug(), slug());
    env.create(&a, &group, TASK_QUEUE, "first", &[]).await;
    env.create(&b, &group, TASK_QUEUE, "second", &[&a]).await;
    env.create(&c, &group, TASK_QUEUE, "third", &[&b]).await;
    let (_, page) = env.page(&format!("/tasks/{b}"), Some("alice")).await;
    assert!(page.contains("go straight to the queue"), "{page}");
    assert!(
        page.contains(">Retrigger</button>")
            && page.contains(">Cancel</button>")
            && page.contains(">Rerun</button>"),
        "{page}"
    );

    // bob may not: the queue's refusal is the page.
    let (status, html) = env
        .act(&format!("/tasks/{a}/act"), "bob", &[("do", "cancel")])
        .await;
    assert_eq!(status, 403, "{html}");
    assert!(html.contains("InsufficientScopes"), "{html}");
    assert!(html.contains("role=\"alert\""), "{html}");
    assert_eq!(env.status(&a).await["state"], "pending");

    let (status, html) = env
        .act(&format!("/tasks/{a}/act"), "alice", &[("do", "cancel")])
        .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("is exception (cancelTask)"), "{html}");
    assert_eq!(
        env.status(&a).await["runs"][0]["reasonResolved"],
        "canceled"
    );
    let (status, html) = env
        .act(&format!("/tasks/{a}/act"), "alice", &[("do", "rerun")])
        .await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(env.status(&a).await["state"], "pending");

    // Retrigger b alone: a new task, no dependencies, no routes, no retries.
    let (status, html) = env
        .act(&format!("/tasks/{b}/act"), "alice", &[("do", "retrigger")])
        .await;
    assert_eq!(status, 200, "{html}");
    let new = created_in(&html);
    assert_eq!(new.len(), 1, "{html}");
    let clone = env
        .root_ok("GET", "queue", &format!("task/{}", new[0]), None)
        .await;
    assert_eq!(clone["dependencies"], json!([]));
    assert_eq!(clone["routes"], json!([]));
    assert_eq!(clone["retries"], 0);
    assert_eq!(clone["taskGroupId"], group.as_str());
    assert_eq!(clone["metadata"]["name"], "second");
    assert_eq!(
        env.status(&new[0]).await["state"],
        "pending",
        "nothing to wait for"
    );

    // With its dependents, exact: b' waits for a as b does, c' for b'.
    let (status, html) = env
        .act(
            &format!("/tasks/{b}/act"),
            "alice",
            &[
                ("do", "retrigger"),
                ("exact", "true"),
                ("dependents", "true"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{html}");
    let new = created_in(&html);
    assert_eq!(new.len(), 2, "{html}");
    let b2 = env
        .root_ok("GET", "queue", &format!("task/{}", new[0]), None)
        .await;
    let c2 = env
        .root_ok("GET", "queue", &format!("task/{}", new[1]), None)
        .await;
    assert_eq!(b2["metadata"]["name"], "second");
    assert_eq!(b2["dependencies"], json!([a]));
    assert_eq!(b2["routes"], json!(["index.web-test.route"]));
    assert_eq!(c2["metadata"]["name"], "third");
    assert_eq!(c2["dependencies"], json!([new[0]]));
    assert_eq!(env.group_ids(&group).await.len(), 6);
}

async fn forms_need_a_signed_in_user_and_their_token(env: &Env) {
    let group = slug();
    env.create(&group, &group, TASK_QUEUE, "only", &[]).await;
    let path = format!("/tasks/{group}/act");
    let (status, html) = env.post(&path, None, &[("do", "cancel")]).await;
    assert_eq!(status, 401, "{html}");
    assert!(html.contains("Sign in"), "{html}");
    let (status, html) = env.post(&path, Some("alice"), &[("do", "cancel")]).await;
    assert_eq!(status, 403, "{html}");
    assert!(html.contains("does not belong to your session"), "{html}");
    // bob's token is not alice's.
    let (_, bobs) = env.page(&format!("/tasks/{group}"), Some("bob")).await;
    let token = csrf_of(&bobs);
    let (status, _) = env
        .post(&path, Some("alice"), &[("csrf", &token), ("do", "cancel")])
        .await;
    assert_eq!(status, 403);
    assert_eq!(env.status(&group).await["state"], "pending");
    // Signed out, a task's page offers no form.
    let (_, page) = env.page(&format!("/tasks/{group}"), None).await;
    assert!(page.contains("to act on this task"), "{page}");
    assert!(!page.contains("<form method=\"post\""), "{page}");
}

/// A hook that makes a task in the group the payload names, recording
/// what it was given.
async fn action_hook(env: &Env, hook_id: &str) {
    let def = json!({
        "metadata": {"name": "an action hook", "description": "for the web tests", "owner": "web@example.com"},
        "task": {
            "taskQueueId": "web-test/actions",
            "taskGroupId": "${payload.user.taskGroupId}",
            "schedulerId": "web-test",
            "payload": {"given": {"$eval": "payload"}},
            "metadata": {"name": "action task", "description": "made by an action", "owner": "web@example.com", "source": "https://example.com/web"},
        },
        "triggerSchema": {"type": "object"},
    });
    env.root_ok(
        "PUT",
        "hooks",
        &format!("hooks/{HOOK_GROUP}/{hook_id}"),
        Some(&def),
    )
    .await;
}

/// A decision task (the group's id) that published `actions`, resolved.
async fn decision_with_actions(env: &Env, actions: Value, scopes: &[&str]) -> String {
    let group = slug();
    let mut d = def(&group, "web-test/decision", "Decision Task", &[]);
    d["scopes"] = json!(scopes);
    env.create_with(&group, d).await;
    let claim = env.claim("web-test/decision").await;
    assert_eq!(claim["status"]["taskId"], group.as_str());
    let body = serde_json::to_vec(&actions).unwrap();
    env.q
        .upload_s3(&group, 0, "public/actions.json", "application/json", &body)
        .await
        .unwrap();
    env.root_ok(
        "POST",
        "queue",
        &format!("task/{group}/runs/0/completed"),
        None,
    )
    .await;
    group
}

fn actions_json() -> Value {
    let payload = json!({
        "decision": {"action": "from the decision"},
        "user": {"input": {"$eval": "input"}, "taskId": {"$eval": "taskId"}, "taskGroupId": {"$eval": "taskGroupId"}, "project": {"$eval": "project"}},
    });
    json!({
        "version": 1,
        "variables": {"project": "web", "taskGroupId": "overridden"},
        "actions": [
            {"name": "retrigger", "title": "Retrigger", "kind": "hook", "context": [{"kind": "test"}],
             "description": "Create a clone of the task.",
             "hookGroupId": HOOK_GROUP, "hookId": "act", "hookPayload": payload,
             "schema": {"type": "object", "properties": {
                 "times": {"type": "integer", "default": 1, "minimum": 1, "maximum": 5, "title": "Times"},
                 "downstream": {"type": "boolean", "default": false}},
                 "required": ["times"], "additionalProperties": false}},
            {"name": "cancel-all", "title": "Cancel all", "kind": "hook", "context": [],
             "hookGroupId": HOOK_GROUP, "hookId": "act", "hookPayload": payload, "schema": {}},
            {"name": "elsewhere", "title": "Elsewhere", "kind": "hook", "context": [{}],
             "hookGroupId": HOOK_GROUP, "hookId": "other", "hookPayload": payload},
            {"name": "builds-only", "title": "Builds only", "kind": "hook", "context": [{"kind": "build"}],
             "hookGroupId": HOOK_GROUP, "hookId": "act", "hookPayload": payload},
        ],
    })
}

async fn actions_are_fired_through_hooks_as_the_user(env: &Env) {
    action_hook(env, "act").await;
    action_hook(env, "other").await;
    let group = decision_with_actions(
        env,
        actions_json(),
        &[&format!("in-tree:hook-action:{HOOK_GROUP}/act")],
    )
    .await;
    let task = slug();
    env.create(&task, &group, TASK_QUEUE, "a test", &[]).await;

    let (_, page) = env.page(&format!("/tasks/{task}"), Some("alice")).await;
    assert!(page.contains("<summary>Retrigger</summary>"), "{page}");
    assert!(page.contains("<summary>Elsewhere</summary>"), "{page}");
    assert!(
        !page.contains("Builds only") && !page.contains("Cancel all"),
        "only the task's context: {page}"
    );
    assert!(
        page.contains("type=\"number\"") && page.contains("type=\"checkbox\""),
        "{page}"
    );
    assert!(!page.contains("go straight to the queue"), "{page}");
    let (_, gpage) = env.page(&format!("/groups/{group}"), Some("alice")).await;
    assert!(
        gpage.contains("<summary>Cancel all</summary>")
            && !gpage.contains("<summary>Retrigger</summary>"),
        "{gpage}"
    );

    let act = format!("/tasks/{task}/act");
    let fire = |user: &'static str, times: &'static str| {
        let act = act.clone();
        async move {
            env.act(
                &act,
                user,
                &[
                    ("do", "action"),
                    ("action", "retrigger"),
                    ("input.times", times),
                    ("input.downstream", "true"),
                ],
            )
            .await
        }
    };
    let (status, html) = fire("bob", "2").await;
    assert_eq!(status, 403, "{html}");
    assert!(
        html.contains("InsufficientScopes") && html.contains("hooks:trigger-hook:web-test/act"),
        "{html}"
    );
    let (status, html) = fire("alice", "9").await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("The input is not valid"), "{html}");
    let before = env.group_ids(&group).await.len();
    let (status, html) = fire("alice", "2").await;
    assert_eq!(status, 200, "{html}");
    let new = created_in(&html);
    assert_eq!(new.len(), 1, "{html}");
    let made = env
        .root_ok("GET", "queue", &format!("task/{}", new[0]), None)
        .await;
    assert_eq!(made["taskGroupId"], group.as_str());
    assert_eq!(
        made["payload"]["given"],
        json!({
            "decision": {"action": "from the decision"},
            "user": {"input": {"times": 2, "downstream": true}, "taskId": task, "taskGroupId": group, "project": "web"},
        })
    );
    assert_eq!(env.group_ids(&group).await.len(), before + 1);

    // The decision task may not offer a hook its scopes do not name.
    let (status, html) = env
        .act(&act, "alice", &[("do", "action"), ("action", "elsewhere")])
        .await;
    assert_eq!(status, 403, "{html}");
    assert!(html.contains("may not offer hook web-test/other"), "{html}");
    // An action of another context is not this task's.
    let (status, _) = env
        .act(
            &act,
            "alice",
            &[("do", "action"), ("action", "builds-only")],
        )
        .await;
    assert_eq!(status, 404);

    // A group action: taskId null.
    let (status, html) = env
        .act(
            &format!("/groups/{group}/act"),
            "alice",
            &[("do", "action"), ("action", "cancel-all")],
        )
        .await;
    assert_eq!(status, 200, "{html}");
    let new = created_in(&html);
    let made = env
        .root_ok("GET", "queue", &format!("task/{}", new[0]), None)
        .await;
    assert_eq!(made["payload"]["given"]["user"]["taskId"], Value::Null);
    assert_eq!(made["payload"]["given"]["user"]["input"], json!({}));
}

async fn a_human_decision_is_made_by_a_user_with_the_scopes(env: &Env) {
    let group = slug();
    let (go, stop) = (group.clone(), slug());
    env.create(
        &go,
        &group,
        "null-provisioner/human-decision",
        "ship it?",
        &[],
    )
    .await;
    env.create(
        &stop,
        &group,
        "null-provisioner/human-decision",
        "ship that?",
        &[],
    )
    .await;
    let (_, page) = env.page(&format!("/tasks/{go}"), Some("alice")).await;
    assert!(
        page.contains("Complete (go ahead)") && page.contains("Fail (stop)"),
        "{page}"
    );

    let (status, html) = env
        .act(&format!("/tasks/{go}/act"), "bob", &[("do", "complete")])
        .await;
    assert_eq!(status, 403, "{html}");
    assert!(
        html.contains("InsufficientScopes")
            && html.contains("queue:claim-task:null-provisioner/human-decision"),
        "{html}"
    );
    assert_eq!(env.status(&go).await["state"], "pending");

    let (status, html) = env
        .act(&format!("/tasks/{go}/act"), "alice", &[("do", "complete")])
        .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("resolved by alice"), "{html}");
    let s = env.status(&go).await;
    assert_eq!(s["state"], "completed");
    assert_eq!(
        (&s["runs"][0]["workerGroup"], &s["runs"][0]["workerId"]),
        (&json!("human-decision"), &json!("alice"))
    );
    let (status, html) = env
        .act(&format!("/tasks/{go}/act"), "alice", &[("do", "fail")])
        .await;
    assert_eq!(status, 409, "no second decision: {html}");

    let (status, html) = env
        .act(&format!("/tasks/{stop}/act"), "alice", &[("do", "fail")])
        .await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(env.status(&stop).await["state"], "failed");
}
