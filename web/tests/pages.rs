//! The task-group inspector and the task page as HTML: counts, filters and
//! pages of a group, the dependency graph, a task's runs, artifacts and
//! logs, not-found pages, and every value escaped; on SQLite and PostgreSQL.

mod common;

use bbb_testdb::on_both_backends;
use common::*;

on_both_backends!(
    crate::common::Env::on;
    a_group_shows_its_tasks_by_state_with_filters_and_pages,
    a_selection_shows_its_dependency_graph,
    a_task_shows_its_runs_artifacts_and_log,
    unknown_and_invalid_ids_get_a_not_found_page,
    html_in_task_metadata_is_shown_as_text,
);

async fn a_group_shows_its_tasks_by_state_with_filters_and_pages(env: &Env) {
    let group = slug();
    // 205 tasks: one more page than fits, some of them running.
    let mut ids = Vec::new();
    for i in 0..205 {
        let id = if i == 0 { group.clone() } else { slug() };
        let name = if i % 50 == 7 {
            format!("build-{i}")
        } else {
            format!("test-{i}")
        };
        env.create(&id, &group, TASK_QUEUE, &name, &[]).await;
        ids.push(id);
    }
    for _ in 0..3 {
        env.claim(TASK_QUEUE).await;
    }
    let (status, html) = env.page(&format!("/groups/{group}"), None).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains(&format!("<title>Task group {group} · bbb</title>")),
        "{html}"
    );
    assert!(
        html.contains("all <span class=\"count\">205</span>"),
        "{html}"
    );
    assert!(
        html.contains("running <span class=\"count\">3</span>"),
        "{html}"
    );
    assert!(
        html.contains("pending <span class=\"count\">202</span>"),
        "{html}"
    );
    assert_eq!(
        html.matches("<tr>").count(),
        1 + bbb_web::PAGE_SIZE,
        "a header and a page of rows"
    );
    assert!(html.contains("rel=\"next\""), "a next page");
    let mut sorted = ids.clone();
    sorted.sort();
    let next = format!("after={}", sorted[bbb_web::PAGE_SIZE - 1]);
    assert!(html.contains(&next), "{next}");
    let (_, second) = env.page(&format!("/groups/{group}?{next}"), None).await;
    assert_eq!(second.matches("<tr>").count(), 1 + 5);
    assert!(!second.contains("rel=\"next\""));
    for id in &sorted[bbb_web::PAGE_SIZE..] {
        assert!(second.contains(id.as_str()), "{id} on the second page");
    }

    let (_, running) = env
        .page(&format!("/groups/{group}?state=running"), None)
        .await;
    assert_eq!(running.matches("<tr>").count(), 1 + 3);
    let (_, builds) = env.page(&format!("/groups/{group}?name=BUILD"), None).await;
    assert_eq!(
        builds.matches("<tr>").count(),
        1 + 4,
        "build-7, -57, -107 and -157: {builds}"
    );
    assert!(builds.contains(">build-57<"), "{builds}");
    let (_, none) = env
        .page(&format!("/groups/{group}?state=completed&name=build"), None)
        .await;
    assert!(none.contains("No task matches."), "{none}");
    let (_, literal) = env.page(&format!("/groups/{group}?name=%25"), None).await;
    assert!(
        literal.contains("No task matches."),
        "a % is not a wildcard"
    );
    let (status, bad) = env.page(&format!("/groups/{group}?state=done"), None).await;
    assert_eq!(status, 400);
    assert!(bad.contains("is not a task state"), "{bad}");
    // Without actions.json, the group says so.
    assert!(html.contains("published no actions"), "{html}");
}

async fn a_selection_shows_its_dependency_graph(env: &Env) {
    let group = slug();
    let (a, b, c, d) = (group.clone(), slug(), slug(), slug());
    env.create(&a, &group, TASK_QUEUE, "decision", &[]).await;
    env.create(&b, &group, TASK_QUEUE, "build", &[&a]).await;
    env.create(&c, &group, TASK_QUEUE, "test", &[&b]).await;
    env.create(&d, &group, TASK_QUEUE, "upload", &[&c]).await;
    let (status, html) = env.page(&format!("/groups/{group}?task={b}"), None).await;
    assert_eq!(status, 200, "{html}");
    let svg = &html[html.find("<svg").expect("a graph")..html.find("</svg>").unwrap()];
    for (id, name) in [
        (&a, "decision"),
        (&b, "build"),
        (&c, "test"),
        (&d, "upload"),
    ] {
        assert!(
            svg.contains(&format!("href=\"/tasks/{id}\"")),
            "{name} in the graph: {svg}"
        );
    }
    assert_eq!(svg.matches("<line").count(), 3, "three edges: {svg}");
    assert!(
        svg.contains("dependencies −1") && svg.contains("dependents +2"),
        "{svg}"
    );
    let (_, unknown) = env
        .page(&format!("/groups/{group}?task={}", slug()), None)
        .await;
    assert!(unknown.contains("was not found"), "{unknown}");
}

async fn a_task_shows_its_runs_artifacts_and_log(env: &Env) {
    let group = slug();
    let task = group.clone();
    env.create(&task, &group, TASK_QUEUE, "compile", &[]).await;
    let claim = env.claim(TASK_QUEUE).await;
    assert_eq!(claim["status"]["taskId"], task.as_str());
    let log = "line one\nline <two>\n";
    env.q
        .upload_s3(
            &task,
            0,
            "public/logs/live_backing.log",
            "text/plain",
            log.as_bytes(),
        )
        .await
        .unwrap();
    env.q
        .upload_s3(&task, 0, "public/build/app.txt", "text/plain", b"app")
        .await
        .unwrap();
    let (status, html) = env.page(&format!("/tasks/{task}"), None).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("<title>Task compile · bbb</title>"), "{html}");
    assert!(
        html.contains("Run 0: <span class=\"state running\">running</span>"),
        "{html}"
    );
    assert!(html.contains("web-test/w1"), "the worker: {html}");
    let link = format!(
        "{}/api/queue/v1/task/{task}/runs/0/artifacts/public/build/app.txt",
        env.q.root_url
    );
    assert!(html.contains(&link), "{html}");
    assert!(
        html.contains("&quot;taskQueueId&quot;: &quot;web-test/tasks&quot;")
            || html.contains("\"taskQueueId\": \"web-test/tasks\""),
        "the definition, pretty: {html}"
    );
    // Running without a live log: the page has no live log to follow, but the backing log is served.
    let res = env
        .browser
        .get(format!("{}/tasks/{task}/runs/0/log", env.q.root_url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(res.text().await.unwrap(), log);
    // The artifact link works for anyone (public/).
    let res = reqwest::get(&link).await.unwrap();
    assert_eq!(res.text().await.unwrap(), "app");

    env.root_ok(
        "POST",
        "queue",
        &format!("task/{task}/runs/0/completed"),
        None,
    )
    .await;
    let (_, html) = env.page(&format!("/tasks/{task}"), None).await;
    assert!(
        html.contains("data-src=\"/tasks/"),
        "the log is followed: {html}"
    );
    assert!(html.contains("data-live=\"false\""), "{html}");
    let (status, text) = env.page(&format!("/tasks/{task}/runs/0/log"), None).await;
    assert_eq!((status, text.as_str()), (200, log));
    let (status, _) = env.page(&format!("/tasks/{task}/runs/1/log"), None).await;
    assert_eq!(status, 404);
}

async fn unknown_and_invalid_ids_get_a_not_found_page(env: &Env) {
    for path in [
        format!("/tasks/{}", slug()),
        format!("/groups/{}", slug()),
        "/tasks/not-a-task-id".to_owned(),
        "/groups/%3Cscript%3E".to_owned(),
        format!("/tasks/{}/runs/0/log", slug()),
    ] {
        let (status, html) = env.page(&path, Some("alice")).await;
        assert_eq!(status, 404, "{path}: {html}");
        if !path.ends_with("/log") {
            assert!(
                html.contains("<title>Not found · bbb</title>"),
                "{path}: {html}"
            );
            assert!(html.contains("was not found."), "{path}: {html}");
            assert!(
                html.contains("Signed in as <strong>alice</strong>"),
                "{path}: {html}"
            );
            assert!(!html.contains("<script>"), "{path}: {html}");
        }
    }
}

async fn html_in_task_metadata_is_shown_as_text(env: &Env) {
    let group = slug();
    let evil = "<script>alert(1)</script>";
    let mut def = def(&group, TASK_QUEUE, evil, &[]);
    def["metadata"]["description"] = "<img src=x onerror=alert(2)>".into();
    def["tags"]["label"] = "\"><b>tag</b>".into();
    env.create_with(&group, def).await;
    for path in [
        format!("/groups/{group}"),
        format!("/tasks/{group}"),
        format!("/groups/{group}?task={group}"),
    ] {
        let (status, html) = env.page(&path, Some("alice")).await;
        assert_eq!(status, 200, "{path}");
        assert!(!html.contains(evil), "{path}: {html}");
        assert!(!html.contains("<img src=x"), "{path}");
        assert!(!html.contains("<b>tag</b>"), "{path}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}: {html}"
        );
    }
}
