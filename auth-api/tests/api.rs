//! The auth service's endpoints on a real queue process's listener, on SQLite
//! and PostgreSQL: success, missing and insufficient scopes, bad input, the
//! configured clients and roles, role expansion, temporary credentials, and
//! clients created here calling the queue.

mod common;

use bbb_queue::testing::TestQueue;
use common::*;
use reqwest::Method;
use serde_json::{Value, json};

bbb_testdb::on_both_backends!(crate::common::on_without_anonymous_scopes;
    missing_and_insufficient_scopes,
);
bbb_testdb::on_both_backends!(crate::common::on;
    monitoring,
    client_lifecycle,
    created_clients_call_the_queue,
    list_clients_by_prefix_and_page,
    bad_input_is_refused_and_the_service_keeps_serving,
    configured_clients_and_roles_are_read_only,
    roles_expand_as_upstream,
    role_changes_that_close_a_cycle_are_refused,
    list_roles_in_pages,
    temporary_credentials_and_authorized_scopes,
    official_rust_client,
    housekeeping_records_use_and_deletes_expired_clients,
);

async fn monitoring(q: &TestQueue) {
    let a = anonymous(q);
    assert_eq!(a.get("/ping").await.ok()["alive"], true);
    assert_eq!(a.get("/__lbheartbeat__").await.ok(), json!({}));
    assert_eq!(a.get("/__heartbeat__").await.ok(), json!({}));
    let v = a.get("/__version__").await.ok();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let e = a.get("/no/such/method").await;
    assert_eq!((e.status, e.code()), (404, "ResourceNotFound"));
}

async fn client_lifecycle(q: &TestQueue) {
    let root = root(q);
    let body = client_body(&["queue:create-task:*", "assume:anonymous"]);
    let created = root
        .send(Method::PUT, "/clients/proj%2Fci%3Abot", &body)
        .await
        .ok();
    let token = created["accessToken"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 44);
    assert_eq!(created["clientId"], "proj/ci:bot");
    assert_eq!(created["disabled"], false);
    assert_eq!(created["deleteOnExpiration"], false);
    assert_eq!(created["description"], "a test client");
    assert_eq!(
        strings(&created["scopes"]),
        ["queue:create-task:*", "assume:anonymous"]
    );
    // expandedScopes: the client's scopes through the roles (here the
    // default anonymous role), without the anonymous role of every caller.
    let expanded = strings(&created["expandedScopes"]);
    assert!(
        expanded.contains(&"queue:get-task:*".to_string()),
        "{expanded:?}"
    );
    for field in [
        "created",
        "lastModified",
        "lastDateUsed",
        "lastRotated",
        "expires",
    ] {
        assert!(created[field].as_str().unwrap().ends_with('Z'), "{field}");
    }

    // Idempotent: the same call again answers the same client and token;
    // another client of that id is a conflict.
    let again = root
        .send(Method::PUT, "/clients/proj%2Fci%3Abot", &body)
        .await
        .ok();
    assert_eq!(again, created);
    let m = root
        .create_client("proj/ci:bot", &["other"])
        .await
        .err(409, "RequestConflict");
    assert!(m.starts_with("Client already exists"), "{m}");

    // Reading a client never shows its access token.
    let got = root.get("/clients/proj%2Fci%3Abot").await.ok();
    assert!(got.get("accessToken").is_none());
    assert_eq!(got["scopes"], created["scopes"]);

    // The client authenticates at once on this process.
    let bot = Caller::of(&q.root_url, &created);
    assert_eq!(bot.queue_accepts().await.status, 200);

    // updateClient: scopes given are replaced, the rest of the body applies.
    let mut body = client_body(&["queue:create-task:*"]);
    body["description"] = "updated".into();
    body["deleteOnExpiration"] = true.into();
    let updated = root
        .send(Method::POST, "/clients/proj%2Fci%3Abot", &body)
        .await
        .ok();
    assert_eq!(updated["description"], "updated");
    assert_eq!(updated["deleteOnExpiration"], true);
    assert_eq!(strings(&updated["scopes"]), ["queue:create-task:*"]);
    assert!(updated.get("accessToken").is_none());
    // Without scopes they stay; without deleteOnExpiration it is false.
    let mut body = client_body(&[]);
    body.as_object_mut().unwrap().remove("scopes");
    let updated = root
        .send(Method::POST, "/clients/proj%2Fci%3Abot", &body)
        .await
        .ok();
    assert_eq!(strings(&updated["scopes"]), ["queue:create-task:*"]);
    assert_eq!(updated["deleteOnExpiration"], false);

    // resetAccessToken: the old token stops working, the new one works.
    let reset = root.post_empty("/clients/proj%2Fci%3Abot/reset").await.ok();
    let new_token = reset["accessToken"].as_str().unwrap();
    assert_ne!(new_token, token);
    let m = bot.queue_accepts().await.err(401, "AuthenticationFailed");
    assert!(m.starts_with("Bad mac"), "{m}");
    let bot = Caller::of(&q.root_url, &reset);
    assert_eq!(bot.queue_accepts().await.status, 200);

    // disableClient / enableClient, each twice (idempotent).
    for _ in 0..2 {
        let d = root
            .post_empty("/clients/proj%2Fci%3Abot/disable")
            .await
            .ok();
        assert_eq!(d["disabled"], true);
    }
    let m = bot.queue_accepts().await.err(401, "AuthenticationFailed");
    assert!(
        m.starts_with("Client with clientId 'proj/ci:bot' is disabled"),
        "{m}"
    );
    for _ in 0..2 {
        let e = root
            .post_empty("/clients/proj%2Fci%3Abot/enable")
            .await
            .ok();
        assert_eq!(e["disabled"], false);
    }
    assert_eq!(bot.queue_accepts().await.status, 200);

    // deleteClient: 204, again 204; then it is unknown.
    for _ in 0..2 {
        let d = root.delete("/clients/proj%2Fci%3Abot").await;
        assert_eq!((d.status, d.body.clone()), (204, Value::Null));
    }
    let m = root
        .get("/clients/proj%2Fci%3Abot")
        .await
        .err(404, "ResourceNotFound");
    assert!(m.starts_with("Client not found"), "{m}");
    let m = bot.queue_accepts().await.err(401, "AuthenticationFailed");
    assert!(
        m.contains("Client with clientId 'proj/ci:bot' not found"),
        "{m}"
    );

    // An expired client cannot authenticate.
    let mut body = client_body(&[]);
    body["expires"] = "2020-01-01T00:00:00.000Z".into();
    let old = root.send(Method::PUT, "/clients/expired", &body).await.ok();
    let m = Caller::of(&q.root_url, &old)
        .queue_accepts()
        .await
        .err(401, "AuthenticationFailed");
    assert!(m.contains("has expired"), "{m}");
}

async fn created_clients_call_the_queue(q: &TestQueue) {
    let root = root(q);
    let queue_scopes = [
        "queue:create-task:highest:proj/auth-test",
        "queue:create-task:project:none",
        "queue:scheduler-id:-",
        "assume:role-for-queue",
    ];
    root.create_role("role-for-queue", &["queue:cancel-task:-/*"])
        .await
        .ok();
    let creator = root.new_client("task-creator", &queue_scopes).await;
    let task_id = bbb_service::validate::slugid();
    let now = chrono::Utc::now().timestamp_millis();
    let task = json!({
        "taskQueueId": "proj/auth-test",
        "created": bbb_clock::fmt_ms(now),
        "deadline": bbb_clock::fmt_ms(now + 3_600_000),
        "payload": {},
        "metadata": {"name": "t", "description": "d", "owner": "o@example.com", "source": "https://example.com"},
    });
    let created = creator
        .raw_at(
            "queue",
            Method::PUT,
            &format!("/task/{task_id}"),
            Some(&task.to_string()),
        )
        .await
        .ok();
    assert_eq!(created["status"]["state"], "pending");
    // A scope granted through a role created through the API.
    let cancelled = creator
        .raw_at(
            "queue",
            Method::POST,
            &format!("/task/{task_id}/cancel"),
            None,
        )
        .await
        .ok();
    assert_eq!(cancelled["status"]["state"], "exception");
    // Without the scope: the queue's 403.
    let other = bbb_service::validate::slugid();
    let mut task = task;
    task["taskQueueId"] = "proj/elsewhere".into();
    let m = creator
        .raw_at(
            "queue",
            Method::PUT,
            &format!("/task/{other}"),
            Some(&task.to_string()),
        )
        .await
        .err(403, "InsufficientScopes");
    assert!(
        m.contains("queue:create-task:highest:proj/elsewhere"),
        "{m}"
    );

    // Disabled, it cannot call the queue at all.
    root.post_empty("/clients/task-creator/disable").await.ok();
    let m = creator
        .raw_at("queue", Method::GET, &format!("/task/{task_id}"), None)
        .await
        .err(401, "AuthenticationFailed");
    assert!(m.contains("is disabled"), "{m}");
}

async fn list_clients_by_prefix_and_page(q: &TestQueue) {
    let root = root(q);
    for name in ["list/e", "list/a", "list/c", "list/b", "list/d", "other/x"] {
        root.create_client(name, &[]).await.ok();
    }
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/clients/?prefix=list%2F&limit=2".to_string();
        if let Some(t) = &token {
            path.push_str(&format!("&continuationToken={t}"));
        }
        let page = root.get(&path).await.ok();
        pages += 1;
        let clients = page["clients"].as_array().unwrap();
        assert!(clients.len() <= 2);
        for c in clients {
            assert!(c.get("accessToken").is_none());
            seen.push(c["clientId"].as_str().unwrap().to_string());
        }
        match page["continuationToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["list/a", "list/b", "list/c", "list/d", "list/e"]);
    assert!(pages >= 3);

    // Without a prefix: the configured clients are there too, in id order.
    let all = root.get("/clients/").await.ok();
    let ids: Vec<&str> = all["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["clientId"].as_str().unwrap())
        .collect();
    for id in [
        CONFIGURED,
        "root",
        "static/taskcluster/queue",
        "list/a",
        "other/x",
    ] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert!(all.get("continuationToken").is_none());

    // Prefix covering a configured client.
    let statics = root.get("/clients/?prefix=static%2F").await.ok();
    assert_eq!(
        statics["clients"][0]["clientId"],
        "static/taskcluster/queue"
    );

    root.get("/clients/?prefix=with%20space")
        .await
        .err(400, "InvalidRequestArguments");
    root.get("/clients/?continuationToken=%25%25")
        .await
        .err(400, "InputError");
    root.get("/clients/?limit=x")
        .await
        .err(400, "InvalidRequestArguments");
}

async fn missing_and_insufficient_scopes(q: &TestQueue) {
    let root = root(q);
    let nobody = anonymous(q);
    let target = root.create_client("target", &["a"]).await.ok();
    root.create_role("target-role", &["a"]).await.ok();
    let body = client_body(&["a"]).to_string();
    let role_body = json!({"description": "d", "scopes": ["a"]}).to_string();
    let scopes_body = json!({"scopes": ["a"]}).to_string();
    let calls: Vec<(Method, &str, Option<&str>, &str)> = vec![
        (Method::GET, "/clients/", None, "auth:list-clients"),
        (
            Method::GET,
            "/clients/target",
            None,
            "auth:get-client:target",
        ),
        (
            Method::PUT,
            "/clients/new",
            Some(&body),
            "auth:create-client:new",
        ),
        (
            Method::POST,
            "/clients/target",
            Some(&body),
            "auth:update-client:target",
        ),
        (
            Method::POST,
            "/clients/target/reset",
            None,
            "auth:reset-access-token:target",
        ),
        (
            Method::POST,
            "/clients/target/enable",
            None,
            "auth:enable-client:target",
        ),
        (
            Method::POST,
            "/clients/target/disable",
            None,
            "auth:disable-client:target",
        ),
        (
            Method::DELETE,
            "/clients/target",
            None,
            "auth:delete-client:target",
        ),
        (Method::GET, "/roles/", None, "auth:list-roles"),
        (Method::GET, "/roles2/", None, "auth:list-roles"),
        (Method::GET, "/roleids/", None, "auth:list-roles"),
        (
            Method::GET,
            "/roles/target-role",
            None,
            "auth:get-role:target-role",
        ),
        (
            Method::PUT,
            "/roles/new-role",
            Some(&role_body),
            "auth:create-role:new-role",
        ),
        (
            Method::POST,
            "/roles/target-role",
            Some(&role_body),
            "auth:update-role:target-role",
        ),
        (
            Method::DELETE,
            "/roles/target-role",
            None,
            "auth:delete-role:target-role",
        ),
        (
            Method::POST,
            "/scopes/expand",
            Some(&scopes_body),
            "auth:expand-scopes",
        ),
        (Method::GET, "/scopes/current", None, "auth:current-scopes"),
    ];
    // No credentials: the anonymous role lacks every one of them.
    for (method, path, body, scope) in &calls {
        let a = nobody.raw(method.clone(), path, *body).await;
        let m = a.err(403, "InsufficientScopes");
        assert!(m.contains(scope), "{method} {path}: {m}");
    }
    // A client with other scopes only: the same 403, naming it.
    let weak = root.new_client("weak", &["auth:get-client:other"]).await;
    for (method, path, body, scope) in &calls {
        let a = weak.raw(method.clone(), path, *body).await;
        assert!(a.body["requestInfo"]["method"].is_string());
        let m = a.err(403, "InsufficientScopes");
        assert!(m.contains("Client ID weak"), "{m}");
        assert!(m.contains(scope), "{method} {path}: {m}");
    }
    // Nothing changed.
    let still = root.get("/clients/target").await.ok();
    assert_eq!(still["scopes"], target["scopes"]);
    assert_eq!(still["disabled"], false);

    // Insufficient: allowed to create clients, but not to grant what it lacks.
    let creator = root
        .new_client(
            "creator",
            &[
                "auth:create-client:made/*",
                "auth:update-client:made/*",
                "own:*",
            ],
        )
        .await;
    creator.create_client("made/ok", &["own:x"]).await.ok();
    let refused = creator
        .create_client("made/too-much", &["own:x", "foreign:y"])
        .await;
    assert_eq!(refused.body["requestInfo"]["method"], "createClient");
    assert_eq!(
        refused.body["requestInfo"]["params"],
        json!({"clientId": "made/too-much"})
    );
    let m = refused.err(403, "InsufficientScopes");
    // Upstream's wording: only the missing part, then what the caller has,
    // then the whole expression.
    assert!(
        m.starts_with(
            "Client ID creator does not have sufficient scopes and is missing the following \
             scopes:\n\n```\n\"foreign:y\"\n```\n\nYou have the following scopes:"
        ),
        "{m}"
    );
    assert!(
        m.contains("\"auth:create-client:made/too-much\""),
        "the whole expression: {m}"
    );
    assert!(m.contains("* errorCode:  InsufficientScopes"), "{m}");
    creator
        .create_client("elsewhere", &["own:x"])
        .await
        .err(403, "InsufficientScopes");
    // updateClient needs only the scopes it adds: keeping one the caller
    // lacks is fine, adding one is not.
    root.update_client("made/ok", &["own:x", "foreign:y"])
        .await
        .ok();
    creator
        .update_client("made/ok", &["foreign:y", "own:z"])
        .await
        .ok();
    let m = creator
        .update_client("made/ok", &["foreign:y", "foreign:w"])
        .await
        .err(403, "InsufficientScopes");
    assert!(m.contains("foreign:w"), "{m}");

    // Roles: creating needs the role's scopes; updating only the added ones
    // the role's expansion did not hold.
    let role_maker = root
        .new_client(
            "role-maker",
            &[
                "auth:create-role:team-*",
                "auth:update-role:team-*",
                "own:*",
            ],
        )
        .await;
    role_maker.create_role("team-a", &["own:1"]).await.ok();
    let m = role_maker
        .create_role("team-b", &["own:1", "foreign:1"])
        .await
        .err(403, "InsufficientScopes");
    assert!(m.contains("foreign:1"), "{m}");
    root.update_role("team-a", &["own:1", "foreign:1"])
        .await
        .ok();
    role_maker
        .update_role("team-a", &["foreign:1", "own:2"])
        .await
        .ok();
    role_maker
        .update_role("team-a", &["foreign:2"])
        .await
        .err(403, "InsufficientScopes");
}

async fn bad_input_is_refused_and_the_service_keeps_serving(q: &TestQueue) {
    let root = root(q);
    let put = |path: &'static str, body: &'static str| {
        let root = root.clone();
        async move { root.raw(Method::PUT, path, Some(body)).await }
    };
    put("/clients/x", "{not json")
        .await
        .err(400, "MalformedPayload");
    put("/clients/x", r#"{"description": "d", "scopes": []}"#)
        .await
        .err(400, "InputValidationError");
    put(
        "/clients/x",
        r#"{"expires": "2030-01-01T00:00:00Z", "description": 5, "scopes": []}"#,
    )
    .await
    .err(400, "InputValidationError");
    put(
        "/clients/x",
        r#"{"expires": "2030-01-01T00:00:00Z", "description": "d", "scopes": "a"}"#,
    )
    .await
    .err(400, "InputValidationError");
    put(
        "/clients/x",
        r#"{"expires": "2030-01-01T00:00:00Z", "description": "d", "extra": 1}"#,
    )
    .await
    .err(400, "InputValidationError");
    put(
        "/clients/x",
        r#"{"expires": "next tuesday", "description": "d"}"#,
    )
    .await
    .err(400, "InputValidationError");
    put(
        "/clients/x",
        r#"{"expires": "2030-01-01T00:00:00Z", "description": "d", "scopes": ["a", "a"]}"#,
    )
    .await
    .err(400, "InputValidationError");
    let m = put(
        "/clients/x",
        r#"{"expires": "2030-01-01T00:00:00Z", "description": "d", "scopes": ["a**"]}"#,
    )
    .await
    .err(400, "InputError");
    assert!(m.starts_with("scopes must not end with `**`"), "{m}");
    root.raw(Method::PUT, "/clients/x", None)
        .await
        .err(400, "MalformedPayload");
    let long = json!({"expires": "2030-01-01T00:00:00Z", "description": "x".repeat(10241)});
    root.send(Method::PUT, "/clients/x", &long)
        .await
        .err(400, "InputValidationError");
    root.get("/clients/with%20space")
        .await
        .err(400, "InvalidRequestArguments");
    put("/roles/r", r#"{"description": "d"}"#)
        .await
        .err(400, "InputValidationError");
    put("/roles/r", r#"{"description": "d", "scopes": [1]}"#)
        .await
        .err(400, "InputValidationError");
    put("/roles/r", r#"{"description": "d", "scopes": ["x**"]}"#)
        .await
        .err(400, "InputError");
    root.raw(Method::POST, "/scopes/expand", Some(r#"{"scopes": "a"}"#))
        .await
        .err(400, "InputValidationError");
    root.raw(Method::POST, "/scopes/expand", Some("[]"))
        .await
        .err(400, "InputValidationError");

    // Unknown clients and roles.
    let m = root
        .get("/clients/nobody")
        .await
        .err(404, "ResourceNotFound");
    assert!(m.starts_with("Client not found"), "{m}");
    root.update_client("nobody", &[])
        .await
        .err(404, "ResourceNotFound");
    for action in ["reset", "enable", "disable"] {
        root.post_empty(&format!("/clients/nobody/{action}"))
            .await
            .err(404, "ResourceNotFound");
    }
    let m = root.get("/roles/nobody").await.err(404, "ResourceNotFound");
    assert!(m.starts_with("Role not found"), "{m}");
    let m = root
        .update_role("nobody", &[])
        .await
        .err(404, "ResourceNotFound");
    assert!(m.starts_with("Role with roleId 'nobody' not found"), "{m}");
    let d = root.delete("/roles/nobody").await;
    assert_eq!(d.status, 204);

    // Bad credentials are 401 here too.
    let wrong = Caller::new(&q.root_url, "root", "wrong-token");
    wrong
        .current_scopes()
        .await
        .err(401, "AuthenticationFailed");

    // Still serving, and nothing was created.
    assert_eq!(anonymous(q).get("/ping").await.ok()["alive"], true);
    root.get("/clients/x").await.err(404, "ResourceNotFound");
    root.get("/roles/r").await.err(404, "ResourceNotFound");
    root.create_client("x", &["a"]).await.ok();
}

async fn configured_clients_and_roles_are_read_only(q: &TestQueue) {
    let root = root(q);
    let c = root.get("/clients/configured").await.ok();
    assert_eq!(
        strings(&c["scopes"]),
        ["auth:current-scopes", "assume:anonymous"]
    );
    assert!(c.get("accessToken").is_none());
    assert!(
        c["description"]
            .as_str()
            .unwrap()
            .contains("**static client**")
    );
    assert!(c["expires"].as_str().unwrap() > "2999");
    let issuer = root.get("/clients/static%2Ftaskcluster%2Fqueue").await.ok();
    assert_eq!(strings(&issuer["scopes"]), ["*"]);

    // Changing them: upstream's 400 for static clients.
    let statics = ["static%2Ftaskcluster%2Fqueue", "root", CONFIGURED];
    for id in statics {
        let answers = [
            root.send(Method::POST, &format!("/clients/{id}"), &client_body(&[]))
                .await,
            root.post_empty(&format!("/clients/{id}/reset")).await,
            root.post_empty(&format!("/clients/{id}/enable")).await,
            root.post_empty(&format!("/clients/{id}/disable")).await,
            root.delete(&format!("/clients/{id}")).await,
        ];
        for a in answers {
            let m = a.err(400, "InputError");
            assert!(
                m.contains("Contact your administrator to change static clients."),
                "{m}"
            );
        }
    }
    let m = root
        .post_empty("/clients/static%2Ftaskcluster%2Fqueue/disable")
        .await
        .err(400, "InputError");
    assert!(
        m.starts_with(
            "clientId \"static/taskcluster/queue\" starts with \"static/\" which is reserved for statically configured clients."
        ),
        "{m}"
    );
    root.create_client("static/mine", &[])
        .await
        .err(400, "InputError");
    let m = root
        .create_client(CONFIGURED, &[])
        .await
        .err(409, "RequestConflict");
    assert!(m.starts_with("Client already exists"), "{m}");
    // They still work.
    let configured = Caller::new(&q.root_url, CONFIGURED, CONFIGURED_TOKEN);
    configured.current_scopes().await.ok();

    // The anonymous role is configured (the queue's default).
    let anon = root.get("/roles/anonymous").await.ok();
    assert!(strings(&anon["scopes"]).contains(&"queue:get-task:*".to_string()));
    assert!(strings(&anon["expandedScopes"]).contains(&"assume:anonymous".to_string()));
    let body = json!({"description": "d", "scopes": ["*"]});
    let m = root
        .send(Method::POST, "/roles/anonymous", &body)
        .await
        .err(400, "InputError");
    assert!(m.contains("statically configured role"), "{m}");
    root.delete("/roles/anonymous").await.err(400, "InputError");
    let m = root
        .send(Method::PUT, "/roles/anonymous", &body)
        .await
        .err(409, "RequestConflict");
    assert!(
        m.starts_with("Role with roleId 'anonymous' already exists"),
        "{m}"
    );
    // Listed with the stored roles.
    root.create_role("zz-stored", &["a"]).await.ok();
    let ids = root.get("/roleids/").await.ok();
    assert_eq!(strings(&ids["roleIds"]), ["anonymous", "zz-stored"]);
}

async fn roles_expand_as_upstream(q: &TestQueue) {
    let root = root(q);
    let role_a = root
        .create_role("a", &["x:1", "assume:b", "assume:repo:github.com/org/app"])
        .await
        .ok();
    // Scopes are stored sorted, as upstream; expandedScopes follow roles
    // that do not exist yet once they do.
    assert_eq!(
        strings(&role_a["scopes"]),
        ["assume:b", "assume:repo:github.com/org/app", "x:1"]
    );
    assert_eq!(
        strings(&role_a["expandedScopes"]),
        [
            "assume:a",
            "assume:b",
            "assume:repo:github.com/org/app",
            "x:1"
        ]
    );
    root.create_role("b", &["y:1", "assume:c"]).await.ok();
    root.create_role("c", &["z:*"]).await.ok();
    root.create_role("repo:github.com/*", &["secrets:get:<..>", "repo-member"])
        .await
        .ok();
    let want = [
        "assume:a",
        "assume:b",
        "assume:c",
        "assume:repo:github.com/org/app",
        "repo-member",
        "secrets:get:org/app",
        "x:1",
        "y:1",
        "z:*",
    ];
    assert_eq!(root.expand(&["assume:a"]).await, want);
    // Normalised: a star covers what it starts.
    assert_eq!(
        root.expand(&["assume:c", "z:9", "z:*"]).await,
        ["assume:c", "z:*"]
    );
    // A star assume grants every role it covers, a parameter ending in `*`
    // covers every value.
    assert_eq!(
        root.expand(&["assume:repo:github.com/other/*"]).await,
        [
            "assume:repo:github.com/other/*",
            "repo-member",
            "secrets:get:other/*"
        ]
    );
    let role_a = root.get("/roles/a").await.ok();
    assert_eq!(strings(&role_a["expandedScopes"]), want);

    // The same expansion is what requests are checked with: a client with
    // `assume:a` holds all of it (and the anonymous role).
    let client = root
        .new_client("holder", &["assume:a", "auth:current-scopes"])
        .await;
    let current = strings(&client.current_scopes().await.ok()["scopes"]);
    for s in want {
        assert!(current.contains(&s.to_string()), "{s} in {current:?}");
    }
    assert!(current.contains(&"assume:anonymous".to_string()));
    let with_anon = vec!["assume:a", "auth:current-scopes", "assume:anonymous"];
    let expanded = root.expand(&with_anon).await;
    assert_eq!(current, expanded);

    // Changing a role changes what every holder has, at once.
    root.update_role("c", &["w:1"]).await.ok();
    let current = strings(&client.current_scopes().await.ok()["scopes"]);
    assert!(current.contains(&"w:1".to_string()));
    assert!(!current.contains(&"z:*".to_string()));
    assert_eq!(root.delete("/roles/b").await.status, 204);
    let current = strings(&client.current_scopes().await.ok()["scopes"]);
    assert!(!current.contains(&"w:1".to_string()), "{current:?}");
    assert!(!current.contains(&"assume:c".to_string()), "{current:?}");
    assert_eq!(current, root.expand(&with_anon).await);

    // Idempotent createRole; a different role of that id conflicts.
    root.create_role("c2", &["q:2", "q:1"]).await.ok();
    root.create_role("c2", &["q:1", "q:2"]).await.ok();
    let m = root
        .create_role("c2", &["q:3"])
        .await
        .err(409, "RequestConflict");
    assert!(m.starts_with("Role with roleId 'c2' already exists"), "{m}");
}

async fn role_changes_that_close_a_cycle_are_refused(q: &TestQueue) {
    let root = root(q);
    root.create_role("ring-a", &["assume:ring-b"]).await.ok();
    root.create_role("ring-b", &["assume:ring-c"]).await.ok();
    let m = root
        .create_role("ring-c", &["assume:ring-a"])
        .await
        .err(400, "InputError");
    assert!(
        m.starts_with("Roles may not contain dependency cycles, found: '"),
        "{m}"
    );
    for id in ["'assume:ring-a'", "'assume:ring-b'", "'assume:ring-c'"] {
        assert!(m.contains(id), "{m}");
    }
    root.get("/roles/ring-c").await.err(404, "ResourceNotFound");
    root.create_role("ring-c", &["leaf"]).await.ok();
    let m = root
        .update_role("ring-c", &["assume:ring-*"])
        .await
        .err(400, "InputError");
    assert!(m.contains("dependency cycles"), "{m}");
    // Self-reference through a star role.
    root.create_role("self*", &["assume:self<..>x"])
        .await
        .err(400, "InputError");
    // Parameterised scopes upstream refuses.
    let m = root
        .create_role("p*", &["a<..>b<..>"])
        .await
        .err(400, "InputError");
    assert!(
        m.starts_with("parameterized scope 'a<..>b<..>' contains multiple '<..>'"),
        "{m}"
    );
    let m = root
        .create_role("p*", &["a*<..>"])
        .await
        .err(400, "InputError");
    assert!(m.contains("ambiguous kleene"), "{m}");
    // The ring still expands, and nothing was left half done.
    assert_eq!(
        root.expand(&["assume:ring-a"]).await,
        ["assume:ring-a", "assume:ring-b", "assume:ring-c", "leaf"]
    );
    assert_eq!(
        strings(&root.get("/roles/ring-c").await.ok()["scopes"]),
        ["leaf"]
    );
}

async fn list_roles_in_pages(q: &TestQueue) {
    let root = root(q);
    for id in ["r3", "r1", "r5", "r2", "r4"] {
        root.create_role(id, &[&format!("s:{id}")]).await.ok();
    }
    let all = root.get("/roles/").await.ok();
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["roleId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["anonymous", "r1", "r2", "r3", "r4", "r5"]);
    let r2 = all.as_array().unwrap()[2].clone();
    assert_eq!(strings(&r2["expandedScopes"]), ["assume:r2", "s:r2"]);
    assert_eq!(r2["description"], "a test role");

    let everything = root.get("/roles2/").await.ok();
    assert_eq!(everything["roles"].as_array().unwrap().len(), 6);
    assert!(everything.get("continuationToken").is_none());

    for (path, field) in [("/roles2/", "roles"), ("/roleids/", "roleIds")] {
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut p = format!("{path}?limit=4");
            if let Some(t) = &token {
                p.push_str(&format!("&continuationToken={t}"));
            }
            let page = root.get(&p).await.ok();
            let items = page[field].as_array().unwrap();
            assert!(items.len() <= 4);
            for item in items {
                let id = item.get("roleId").unwrap_or(item);
                seen.push(id.as_str().unwrap().to_string());
            }
            match page["continuationToken"].as_str() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        assert_eq!(seen, ["anonymous", "r1", "r2", "r3", "r4", "r5"], "{path}");
        root.get(&format!("{path}?limit=x"))
            .await
            .err(400, "InvalidRequestArguments");
        root.get(&format!("{path}?continuationToken=%25%25"))
            .await
            .err(400, "InputError");
    }
}

async fn temporary_credentials_and_authorized_scopes(q: &TestQueue) {
    let root = root(q);
    // Temporary credentials: currentScopes is the certificate's scopes
    // (and the anonymous role), not the issuer's.
    let temp = root.temporary(&["auth:current-scopes", "auth:create-client:temp/*", "t:1"]);
    let current = strings(&temp.current_scopes().await.ok()["scopes"]);
    assert!(current.contains(&"t:1".to_string()));
    assert!(current.contains(&"assume:anonymous".to_string()));
    assert!(!current.contains(&"*".to_string()), "{current:?}");
    // They may create clients with what they hold, not more.
    temp.create_client("temp/a", &["t:1"]).await.ok();
    temp.create_client("temp/b", &["t:2"])
        .await
        .err(403, "InsufficientScopes");
    temp.create_role("temp-role", &[])
        .await
        .err(403, "InsufficientScopes");

    // authorizedScopes: the request holds only those.
    let restricted = root.authorized(&["auth:current-scopes", "r:1"]);
    let current = strings(&restricted.current_scopes().await.ok()["scopes"]);
    assert!(current.contains(&"r:1".to_string()));
    assert!(!current.contains(&"*".to_string()), "{current:?}");
    restricted
        .create_client("restricted", &[])
        .await
        .err(403, "InsufficientScopes");
    // Restricting to scopes one lacks fails authentication.
    let configured = Caller::new(&q.root_url, CONFIGURED, CONFIGURED_TOKEN);
    configured
        .authorized(&["auth:current-scopes", "not-held"])
        .current_scopes()
        .await
        .err(401, "AuthenticationFailed");
    let current = strings(
        &configured
            .authorized(&["auth:current-scopes"])
            .current_scopes()
            .await
            .ok()["scopes"],
    );
    assert!(current.contains(&"auth:current-scopes".to_string()));

    // A client created through the API issues temporary credentials too.
    let issuer = root
        .new_client("issuer", &["auth:current-scopes", "i:*"])
        .await;
    let its_temp = issuer.temporary(&["auth:current-scopes", "i:1"]);
    let current = strings(&its_temp.current_scopes().await.ok()["scopes"]);
    assert!(current.contains(&"i:1".to_string()));
    assert!(!current.contains(&"i:*".to_string()));
    // ... until it is disabled.
    root.post_empty("/clients/issuer/disable").await.ok();
    let m = its_temp
        .current_scopes()
        .await
        .err(401, "AuthenticationFailed");
    assert!(m.contains("is disabled"), "{m}");
}

/// The crates.io `taskcluster` client's `Auth`, against this service.
async fn official_rust_client(q: &TestQueue) {
    use taskcluster::{Auth, ClientBuilder, Credentials, Retry};
    let builder = |creds: Option<Credentials>| {
        let mut b = ClientBuilder::new(&q.root_url).retry(Retry {
            retries: 0,
            ..Retry::default()
        });
        if let Some(c) = creds {
            b = b.credentials(c);
        }
        Auth::new(b).expect("client")
    };
    let auth = builder(Some(Credentials::new(
        &q.root_client_id,
        &q.root_access_token,
    )));
    auth.ping().await.unwrap();
    let created = auth
        .createClient(
            "rust/client",
            &client_body(&["auth:current-scopes", "rust:*"]),
        )
        .await
        .unwrap();
    let theirs = builder(Some(Credentials::new(
        "rust/client",
        created["accessToken"].as_str().unwrap(),
    )));
    let current = theirs.currentScopes().await.unwrap();
    assert!(strings(&current["scopes"]).contains(&"rust:*".to_string()));
    let listed = auth
        .listClients(Some("rust/"), None, Some("1"))
        .await
        .unwrap();
    assert_eq!(listed["clients"][0]["clientId"], "rust/client");
    auth.createRole(
        "rust-role",
        &json!({"description": "d", "scopes": ["rust:role"]}),
    )
    .await
    .unwrap();
    let expanded = auth
        .expandScopes(&json!({"scopes": ["assume:rust-role"]}))
        .await
        .unwrap();
    assert_eq!(
        strings(&expanded["scopes"]),
        ["assume:rust-role", "rust:role"]
    );
    auth.deleteRole("rust-role").await.unwrap();
    auth.deleteClient("rust/client").await.unwrap();
    let e = auth.client("rust/client").await.unwrap_err();
    assert_eq!(
        taskcluster::err_status_code(&e).map(|s| s.as_u16()),
        Some(404)
    );
}

/// The periodic housekeeping, run here by a second reloader on the server's
/// database (the server's own runs once a minute).
async fn housekeeping_records_use_and_deletes_expired_clients(q: &TestQueue) {
    use bbb_auth_api::{Reloader, Store};
    use std::sync::Arc;
    let root = root(q);
    let mut expired = client_body(&[]);
    expired["expires"] = "2020-01-01T00:00:00.000Z".into();
    expired["deleteOnExpiration"] = true.into();
    root.send(Method::PUT, "/clients/goes", &expired).await.ok();
    expired["deleteOnExpiration"] = false.into();
    root.send(Method::PUT, "/clients/stays", &expired)
        .await
        .ok();
    let used = root.create_client("used", &[]).await.ok();

    let db = &q.running.queue.db;
    let auth = Arc::new(
        bbb_auth::Authenticator::new(bbb_auth::AuthConfig::default()).expect("authenticator"),
    );
    let reloader = Reloader::new(Store::new(db.pool.clone(), db.backend), auth.clone());
    reloader.reload().await.expect("reload");
    let now = chrono::Utc::now();
    let header = bbb_auth::hawk_header(
        "used",
        used["accessToken"].as_str().unwrap(),
        None,
        None,
        "GET",
        "/",
        "h",
        80,
        None,
        now,
    );
    auth.authenticate(
        &bbb_auth::HawkRequest {
            method: "GET",
            resource: "/",
            host: "h",
            port: 80,
            authorization: Some(&header),
            ..Default::default()
        },
        now,
    )
    .expect("authenticates");
    // Seven hours on: the use is recorded (it is older than six hours).
    let later = now.timestamp_millis() + 7 * 3600 * 1000;
    reloader.housekeeping(later).await.expect("housekeeping");

    let used = root.get("/clients/used").await.ok();
    assert_eq!(used["lastDateUsed"], bbb_clock::fmt_ms(later));
    root.get("/clients/goes").await.err(404, "ResourceNotFound");
    root.get("/clients/stays").await.ok();
    // Nothing used since: nothing changes.
    reloader
        .housekeeping(later + 7 * 3600 * 1000)
        .await
        .expect("housekeeping");
    let again = root.get("/clients/used").await.ok();
    assert_eq!(again["lastDateUsed"], used["lastDateUsed"]);
}
