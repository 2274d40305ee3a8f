//! The hooks API against a real queue on SQLite and PostgreSQL: every
//! endpoint's success, its scopes, bad input, and firing by `triggerHook`
//! and `triggerHookWithToken`.

mod common;

use bbb_testdb::on_both_backends;
use common::{Env, GRANTED, TASK_QUEUE, Who, assert_error, assert_message_contains, hook_def};
use serde_json::{Value, json};

on_both_backends!(
    crate::common::Env::on;
    hooks_are_created_read_listed_updated_and_removed,
    creating_the_same_hook_again_is_idempotent_another_is_a_conflict,
    every_endpoint_checks_its_scopes,
    bad_input_gets_upstreams_errors,
    trigger_hook_creates_the_task_with_the_hooks_role,
    a_task_scope_the_role_lacks_fails_and_is_recorded,
    a_template_that_fails_to_render_is_recorded,
    trigger_payloads_and_task_ids_are_checked,
    trigger_tokens_fire_the_hook_and_can_be_reset,
    last_fires_are_paged_newest_first,
);

async fn hooks_are_created_read_listed_updated_and_removed(env: &Env) {
    let ping = env.ok(Who::Anonymous, "GET", "ping", None).await;
    assert_eq!(ping["alive"], json!(true));
    let def = hook_def(json!({}));
    let created = env.create("g/h1", &def).await;
    assert_eq!(created["hookGroupId"], "g");
    assert_eq!(created["hookId"], "h1");
    assert_eq!(created["schedule"], json!([]));
    assert_eq!(created["metadata"]["emailOnError"], json!(true));
    assert!(created.get("bindings").is_none(), "{created}");

    // A hook id may hold `/` (one encoded path segment).
    env.create("g/nested%2Fhook", &def).await;
    env.create("other/h", &def).await;

    let got = env.ok(Who::Root, "GET", "hooks/g/h1", None).await;
    assert_eq!(
        got,
        json!({
            "hookGroupId": "g", "hookId": "h1", "bindings": [], "schedule": [],
            "metadata": created["metadata"], "task": def["task"],
            "triggerSchema": {"type": "object"},
        })
    );
    let nested = env
        .ok(Who::Root, "GET", "hooks/g/nested%2Fhook", None)
        .await;
    assert_eq!(nested["hookId"], "nested/hook");

    let groups = env.ok(Who::Root, "GET", "hooks", None).await;
    assert_eq!(groups, json!({"groups": ["g", "other"]}));
    let list = env.ok(Who::Root, "GET", "hooks/g", None).await;
    let ids: Vec<&str> = list["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["hookId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["h1", "nested/hook"]);

    let status = env.ok(Who::Root, "GET", "hooks/g/h1/status", None).await;
    assert_eq!(status, json!({"lastFire": {"result": "no-fire"}}));

    // Update: a schedule and bindings; the status shows the next date.
    let mut update = def.clone();
    update["schedule"] = json!(["0 0 3 * * *"]);
    update["bindings"] = json!([{"exchange": "exchange/bbb-test/x", "routingKeyPattern": "#"}]);
    update["metadata"]["name"] = json!("renamed");
    let updated = env.ok(Who::Root, "POST", "hooks/g/h1", Some(&update)).await;
    assert_eq!(updated["metadata"]["name"], "renamed");
    assert_eq!(updated["schedule"], json!(["0 0 3 * * *"]));
    let status = env.ok(Who::Root, "GET", "hooks/g/h1/status", None).await;
    let next = status["nextScheduledDate"].as_str().unwrap();
    assert!(next.ends_with("T03:00:00.000Z"), "{status}");
    // Without bindings, an update keeps them.
    let mut no_bindings = update.clone();
    no_bindings.as_object_mut().unwrap().remove("bindings");
    let kept = env
        .ok(Who::Root, "POST", "hooks/g/h1", Some(&no_bindings))
        .await;
    assert_eq!(kept["bindings"], update["bindings"]);

    assert_eq!(
        env.ok(Who::Root, "DELETE", "hooks/g/h1", None).await,
        json!({})
    );
    let gone = env.hooks(Who::Root, "GET", "hooks/g/h1", None).await;
    assert_error(&gone, 404, "ResourceNotFound", "No such hook");
    // Removing again is no error.
    env.ok(Who::Root, "DELETE", "hooks/g/h1", None).await;
    env.ok(Who::Root, "DELETE", "hooks/g/nested%2Fhook", None)
        .await;
    let empty = env.hooks(Who::Root, "GET", "hooks/g", None).await;
    assert_error(&empty, 404, "ResourceNotFound", "No such group");
    let groups = env.ok(Who::Root, "GET", "hooks", None).await;
    assert_eq!(groups, json!({"groups": ["other"]}));
}

async fn creating_the_same_hook_again_is_idempotent_another_is_a_conflict(env: &Env) {
    let mut def = hook_def(json!({}));
    def["bindings"] = json!([]);
    env.create("g/same", &def).await;
    let again = env.create("g/same", &def).await;
    assert_eq!(again["hookId"], "same");
    // Leaving out what is stored as the default is the same definition too.
    let mut implicit = def.clone();
    implicit.as_object_mut().unwrap().remove("bindings");
    env.create("g/same", &implicit).await;

    let mut other = def.clone();
    other["metadata"]["name"] = json!("another");
    let a = env
        .hooks(Who::Root, "PUT", "hooks/g/same", Some(&other))
        .await;
    assert_error(&a, 409, "RequestConflict", "hook `g/same` already exists.");
}

async fn every_endpoint_checks_its_scopes(env: &Env) {
    let def = hook_def(json!({}));
    env.create("g/ok", &def).await;
    let (nobody, trigger) = (Who::Client("nobody"), Who::Client("trigger"));
    let (admin, modifier) = (Who::Client("admin"), Who::Client("modifier"));
    let body = Some(def.clone());
    // (who, "METHOD path", body, a scope the call lacks)
    let cases = [
        (Who::Anonymous, "GET hooks", None, "hooks:list-hooks:"),
        (nobody, "GET hooks/g", None, "hooks:list-hooks:g"),
        (nobody, "GET hooks/g/ok", None, "hooks:get:g:ok"),
        (nobody, "GET hooks/g/ok/status", None, "hooks:status:g/ok"),
        (
            modifier,
            "PUT hooks/g/new",
            body.clone(),
            "assume:hook-id:g/new",
        ),
        (
            admin,
            "PUT hooks/other/new",
            body.clone(),
            "hooks:modify-hook:other/new",
        ),
        (
            modifier,
            "POST hooks/g/ok",
            body.clone(),
            "assume:hook-id:g/ok",
        ),
        (nobody, "DELETE hooks/g/ok", None, "hooks:modify-hook:g/ok"),
        (
            trigger,
            "POST hooks/g/other/trigger",
            Some(json!({})),
            "hooks:trigger-hook:g/other",
        ),
        (
            trigger,
            "GET hooks/g/ok/token",
            None,
            "hooks:get-trigger-token:g/ok",
        ),
        (
            trigger,
            "POST hooks/g/ok/token",
            None,
            "hooks:reset-trigger-token:g/ok",
        ),
        (
            trigger,
            "GET hooks/g/ok/last-fires",
            None,
            "hooks:list-last-fires:g/ok",
        ),
    ];
    for (who, call, body, missing) in cases {
        let (method, path) = call.split_once(' ').unwrap();
        let a = env.hooks(who, method, path, body.as_ref()).await;
        assert_error(&a, 403, "InsufficientScopes", "Client ID ");
        let text = a.body["message"].as_str().unwrap();
        assert!(text.contains(missing), "{method} {path}: {text}");
    }
    // The hook was neither changed nor removed.
    let got = env.ok(Who::Root, "GET", "hooks/g/ok", None).await;
    assert_eq!(got["task"], def["task"]);
    // With the scopes, the same calls work.
    let mut def2 = def.clone();
    def2["metadata"]["name"] = json!("by admin");
    env.ok(Who::Client("admin"), "PUT", "hooks/g/admins", Some(&def2))
        .await;
    env.ok(Who::Client("admin"), "GET", "hooks/g/admins/token", None)
        .await;
    env.assert_alive().await;
}

async fn bad_input_gets_upstreams_errors(env: &Env) {
    let def = hook_def(json!({}));
    let url = env.http.url("hooks", "hooks/g/bad");
    // Not JSON.
    let raw = reqwest::Client::new()
        .put(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["code"], "MalformedPayload");

    // Wrong shapes and types.
    let mut no_routing_key = def.clone();
    no_routing_key["bindings"] = json!([{"exchange": "exchange/x"}]);
    let a = env
        .hooks(Who::Root, "PUT", "hooks/g/bad", Some(&no_routing_key))
        .await;
    assert_error(
        &a,
        400,
        "InputValidationError",
        "\nSchema Validation Failed!",
    );
    let text = a.body["message"].as_str().unwrap();
    assert!(
        text.contains("/schemas/hooks/v1/create-hook-request.json#")
            && text.contains("data/bindings/0 must have required property 'routingKeyPattern'"),
        "{text}"
    );
    for (field, value, says) in [
        (
            "bindings",
            json!({"exchange": "e", "routingKeyPattern": "#"}),
            "data/bindings must be array",
        ),
        ("task", json!("a string"), "data/task must be object"),
        ("schedule", json!([1]), "data/schedule/0 must be string"),
        (
            "nonsense",
            json!(1),
            "data must NOT have additional properties",
        ),
    ] {
        let mut bad = def.clone();
        bad[field] = value;
        let a = env.hooks(Who::Root, "PUT", "hooks/g/bad", Some(&bad)).await;
        assert_error(
            &a,
            400,
            "InputValidationError",
            "\nSchema Validation Failed!",
        );
        assert_message_contains(&a, says);
    }
    let a = env
        .hooks(Who::Root, "PUT", "hooks/g/bad", Some(&json!({"task": {}})))
        .await;
    assert_message_contains(&a, "data must have required property 'metadata'");

    // URL parameters.
    let a = env.hooks(Who::Root, "PUT", "hooks/g!/x", Some(&def)).await;
    assert_error(&a, 400, "InvalidRequestArguments", "");
    // Ids in the body that are not the URL's.
    let mut ids = def.clone();
    ids["hookId"] = json!("other");
    let a = env.hooks(Who::Root, "PUT", "hooks/g/bad", Some(&ids)).await;
    assert_error(&a, 400, "InputError", "Hook Ids do not match");
    let mut ids = def.clone();
    ids["hookGroupId"] = json!("other");
    let a = env.hooks(Who::Root, "PUT", "hooks/g/bad", Some(&ids)).await;
    assert_error(&a, 400, "InputError", "Hook Group Ids do not match");
    // A schedule that is no cron pattern.
    let mut cron = def.clone();
    cron["schedule"] = json!(["0 0 3 0 * *"]);
    let a = env
        .hooks(Who::Root, "PUT", "hooks/g/bad", Some(&cron))
        .await;
    assert_error(&a, 400, "InputError", "");
    assert_message_contains(&a, " in 0 0 3 0 * *");
    // A trigger schema that is no JSON schema.
    let mut schema = def.clone();
    schema["triggerSchema"] = json!({"type": "beer"});
    let a = env
        .hooks(Who::Root, "PUT", "hooks/g/bad", Some(&schema))
        .await;
    assert_error(
        &a,
        400,
        "InputError",
        "triggerSchema is not a valid JSON schema:\n * Property /type must",
    );
    // A denied exchange.
    let mut denied = def.clone();
    denied["bindings"] = json!([{
        "exchange": "exchange/taskcluster-queue/v1/task-created",
        "routingKeyPattern": "#",
    }]);
    let a = env
        .hooks(Who::Root, "PUT", "hooks/g/bad", Some(&denied))
        .await;
    assert_error(
        &a,
        400,
        "InputError",
        "One or more of the exchanges below have been denied access to hooks\n[{\"exchange\":",
    );
    // None of these made a hook.
    let a = env.hooks(Who::Root, "GET", "hooks/g/bad", None).await;
    assert_error(&a, 404, "ResourceNotFound", "No such hook");

    // Unknown hooks.
    for (method, path, body) in [
        ("POST", "hooks/g/none", Some(def.clone())),
        ("GET", "hooks/g/none/status", None),
        ("POST", "hooks/g/none/trigger", Some(json!({}))),
        ("GET", "hooks/g/none/token", None),
        ("POST", "hooks/g/none/token", None),
        ("POST", "hooks/g/none/trigger/sometoken", Some(json!({}))),
    ] {
        let a = env.hooks(Who::Root, method, path, body.as_ref()).await;
        assert_error(&a, 404, "ResourceNotFound", "No such hook");
    }
    let a = env
        .hooks(Who::Root, "GET", "hooks/g/none/last-fires", None)
        .await;
    assert_error(&a, 404, "ResourceNotFound", "No such hook or never fired");
    // A trigger payload that is not an object.
    env.create("g/p", &def).await;
    let a = env.trigger("g/p", &json!([1])).await;
    assert_error(
        &a,
        400,
        "InputValidationError",
        "\nSchema Validation Failed!",
    );
    assert_message_contains(&a, "trigger-hook.json#");
    env.assert_alive().await;
}

/// The single firing recorded for `path`.
async fn only_fire(env: &Env, path: &str) -> Value {
    let fires = env.fires(path).await;
    assert_eq!(fires.len(), 1, "{fires:?}");
    fires[0].clone()
}

async fn trigger_hook_creates_the_task_with_the_hooks_role(env: &Env) {
    // The task asks for a scope only the hook's role has.
    let def = hook_def(json!({
        "scopes": [GRANTED],
        "payload": {"by": "${clientId}", "via": "${firedBy}", "v": "${payload.v}"},
    }));
    env.create("g/ok", &def).await;
    let reply = env
        .ok(
            Who::Client("trigger"),
            "POST",
            "hooks/g/ok/trigger",
            Some(&json!({"v": 7})),
        )
        .await;
    let task_id = reply["taskId"].as_str().unwrap().to_owned();
    assert_eq!(
        reply,
        json!({"taskId": task_id, "status": {"taskId": task_id}})
    );
    let task = env.task(&task_id).await;
    assert_eq!(task["scopes"], json!([GRANTED]));
    assert_eq!(task["taskQueueId"], TASK_QUEUE);
    assert_eq!(
        task["payload"],
        json!({"by": "trigger", "via": "triggerHook", "v": "7"})
    );
    assert_eq!(task["taskGroupId"], json!(task_id));
    let created = bbb_clock::parse_ms(task["created"].as_str().unwrap()).unwrap();
    let deadline = bbb_clock::parse_ms(task["deadline"].as_str().unwrap()).unwrap();
    let expires = bbb_clock::parse_ms(task["expires"].as_str().unwrap()).unwrap();
    assert_eq!(deadline - created, 24 * 3600 * 1000);
    assert_eq!(expires - created, 30 * 24 * 3600 * 1000);

    let fire = only_fire(env, "g/ok").await;
    assert_eq!(fire["taskId"], json!(task_id));
    assert_eq!(fire["firedBy"], "triggerHook");
    assert_eq!(fire["result"], "success");
    assert_eq!(fire["error"], "");
    assert_eq!(fire["taskState"], "pending");
    let status = env.ok(Who::Root, "GET", "hooks/g/ok/status", None).await;
    assert_eq!(status["lastFire"]["result"], "success");
    assert_eq!(status["lastFire"]["taskId"], json!(task_id));
}

async fn a_task_scope_the_role_lacks_fails_and_is_recorded(env: &Env) {
    env.create("g/weak", &hook_def(json!({"scopes": [GRANTED]})))
        .await;
    let a = env.trigger("g/weak", &json!({})).await;
    assert_error(
        &a,
        403,
        "InsufficientScopes",
        "The role `hook-id:g/weak` does not have sufficient scopes to create the task:\n\n",
    );
    assert_message_contains(&a, GRANTED);
    let fire = only_fire(env, "g/weak").await;
    assert_eq!(fire["result"], "error");
    assert_eq!(fire["taskState"], "unknown");
    let error: Value = serde_json::from_str(fire["error"].as_str().unwrap()).unwrap();
    assert_eq!(error["statusCode"], 403);
    assert_eq!(error["code"], "InsufficientScopes");
    assert_eq!(error["body"]["requestInfo"]["method"], "createTask");
    let status = env.ok(Who::Root, "GET", "hooks/g/weak/status", None).await;
    assert_eq!(status["lastFire"]["result"], "error");
    assert_eq!(status["lastFire"]["error"]["code"], "InsufficientScopes");
    // The task was not created.
    let missing = env
        .call(
            Who::Root,
            "queue",
            "GET",
            &format!("task/{}", fire["taskId"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(missing.status, 404);

    // Another refusal of the queue is a 400 naming the call.
    env.create(
        "g/invalid",
        &hook_def(json!({"taskQueueId": "not a queue"})),
    )
    .await;
    let a = env.trigger("g/invalid", &json!({})).await;
    assert_error(&a, 400, "InputError", "While calling createTask: ");
    assert_eq!(only_fire(env, "g/invalid").await["result"], "error");
    env.assert_alive().await;
}

async fn a_template_that_fails_to_render_is_recorded(env: &Env) {
    env.create(
        "g/broken",
        &hook_def(json!({"payload": {"$eval": "nosuch + 1"}})),
    )
    .await;
    let a = env.trigger("g/broken", &json!({})).await;
    assert_error(&a, 400, "InputError", "While firing hook:\n\n");
    let fire = only_fire(env, "g/broken").await;
    assert_eq!(fire["result"], "error");
    assert!(fire["error"].as_str().unwrap().contains("nosuch"), "{fire}");
    let status = env
        .ok(Who::Root, "GET", "hooks/g/broken/status", None)
        .await;
    assert!(
        status["lastFire"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nosuch"),
        "{status}"
    );
    env.assert_alive().await;
}

async fn trigger_payloads_and_task_ids_are_checked(env: &Env) {
    let mut def = hook_def(json!({}));
    // A template that only sometimes makes a task.
    def["task"] = json!({"$if": "payload.go", "then": hook_def(json!({}))["task"]});
    def["triggerSchema"] = json!({
        "type": "object",
        "properties": {"go": {"type": "boolean"}, "taskId": {"type": "string"}},
        "required": ["go"],
        "additionalProperties": false,
    });
    env.create("g/p", &def).await;
    let a = env.trigger("g/p", &json!({"go": 1, "x": 2})).await;
    assert_error(&a, 400, "InputError", "");
    let text = a.body["message"].as_str().unwrap();
    assert!(
        text.starts_with("data/go must be boolean; data must NOT have additional properties")
            || text
                .starts_with("data must NOT have additional properties; data/go must be boolean"),
        "{text}"
    );
    let a = env
        .trigger("g/p", &json!({"go": true, "taskId": "nope"}))
        .await;
    assert_error(&a, 400, "InputError", "Invalid taskId format: nope");
    assert!(env.fires("g/p").await.is_empty());

    // Nothing rendered: no task, nothing recorded.
    let none = env
        .ok(
            Who::Root,
            "POST",
            "hooks/g/p/trigger",
            Some(&json!({"go": false})),
        )
        .await;
    assert_eq!(none, json!({}));
    assert!(env.fires("g/p").await.is_empty());

    // The taskId given is the task's.
    let task_id = bbb_service::validate::slugid();
    let body = json!({"go": true, "taskId": task_id});
    let reply = env
        .ok(Who::Root, "POST", "hooks/g/p/trigger", Some(&body))
        .await;
    assert_eq!(reply["taskId"], json!(task_id));
    assert_eq!(env.task(&task_id).await["taskGroupId"], json!(task_id));
    // Again, later: another task under that id, which the queue refuses (as
    // upstream's does); the record of the task's creation stays.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let again = env.trigger("g/p", &body).await;
    assert_error(
        &again,
        400,
        "InputError",
        "While calling createTask: RequestConflict",
    );
    let fire = only_fire(env, "g/p").await;
    assert_eq!(
        (&fire["taskId"], &fire["result"]),
        (&json!(task_id), &json!("success"))
    );
}

async fn trigger_tokens_fire_the_hook_and_can_be_reset(env: &Env) {
    env.create("g/tok", &hook_def(json!({}))).await;
    let token = env.ok(Who::Root, "GET", "hooks/g/tok/token", None).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Same token until reset.
    let again = env.ok(Who::Root, "GET", "hooks/g/tok/token", None).await;
    assert_eq!(again["token"], json!(token));
    let reply = env
        .ok(
            Who::Anonymous,
            "POST",
            &format!("hooks/g/tok/trigger/{token}"),
            Some(&json!({})),
        )
        .await;
    let task = env.task(reply["taskId"].as_str().unwrap()).await;
    assert_eq!(task["payload"]["firedBy"], "triggerHookWithToken");
    assert_eq!(
        only_fire(env, "g/tok").await["firedBy"],
        "triggerHookWithToken"
    );

    let wrong = env
        .hooks(
            Who::Anonymous,
            "POST",
            "hooks/g/tok/trigger/wrong",
            Some(&json!({})),
        )
        .await;
    assert_error(&wrong, 401, "AuthenticationFailed", "invalid hook token");

    let reset = env.ok(Who::Root, "POST", "hooks/g/tok/token", None).await;
    let new = reset["token"].as_str().unwrap().to_owned();
    assert_ne!(new, token);
    assert_eq!(
        env.ok(Who::Root, "GET", "hooks/g/tok/token", None).await["token"],
        json!(new)
    );
    let old = env
        .hooks(
            Who::Anonymous,
            "POST",
            &format!("hooks/g/tok/trigger/{token}"),
            Some(&json!({})),
        )
        .await;
    assert_error(&old, 401, "AuthenticationFailed", "invalid hook token");
    env.ok(
        Who::Anonymous,
        "POST",
        &format!("hooks/g/tok/trigger/{new}"),
        Some(&json!({})),
    )
    .await;
    assert_eq!(env.fires("g/tok").await.len(), 2);
}

async fn last_fires_are_paged_newest_first(env: &Env) {
    env.create("g/many", &hook_def(json!({}))).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = env
            .ok(Who::Root, "POST", "hooks/g/many/trigger", Some(&json!({})))
            .await;
        ids.push(r["taskId"].as_str().unwrap().to_owned());
        // Distinct creation times, so newest first is one order.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let first = env
        .ok(Who::Root, "GET", "hooks/g/many/last-fires?limit=2", None)
        .await;
    let page: Vec<&str> = first["lastFires"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["taskId"].as_str().unwrap())
        .collect();
    assert_eq!(page, [ids[2].as_str(), ids[1].as_str()]);
    let token = first["continuationToken"].as_str().unwrap();
    let second = env
        .ok(
            Who::Root,
            "GET",
            &format!("hooks/g/many/last-fires?limit=2&continuationToken={token}"),
            None,
        )
        .await;
    assert_eq!(second["lastFires"][0]["taskId"], json!(ids[0]));
    assert_eq!(second["lastFires"].as_array().unwrap().len(), 1);
    assert!(second.get("continuationToken").is_none());
    let bad = env
        .hooks(
            Who::Root,
            "GET",
            "hooks/g/many/last-fires?continuationToken=x",
            None,
        )
        .await;
    assert_error(&bad, 400, "InputError", "Invalid continuationToken");
}
