//! The process engine with real processes, no queue.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bbb_testdb::TempDir;
use bbb_workers::{
    AbortReason, AbortSignal, ArtifactContent, ExceptionReason, LiveLogServer, RunOutcome,
    TaskContext, TaskDir, TaskLog, TaskOutcome, run_task,
};
use common::{read_to_end, read_until};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn ctx() -> TaskContext {
    TaskContext {
        task_id: "fQmtH2ZNQ6ePyX1U0XYbrA".into(),
        run_id: 2,
        task_group_id: "group0ZNQ6ePyX1U0XYbrA".into(),
        worker_group: "test-group".into(),
        worker_id: "test-worker".into(),
        root_url: "http://queue.invalid".into(),
        task_expires: Some(chrono::Utc::now() + chrono::Duration::days(1)),
        max_run_time_cap: 3600,
        user: None,
        proxy_url: None,
    }
}

struct Run {
    outcome: TaskOutcome,
    log: String,
    dir: TaskDir,
    _scratch: TempDir,
}

async fn run(payload: Value) -> Run {
    let scratch = TempDir::new("bbb-engine-test");
    let dir = TaskDir::create(&scratch.0, "task").unwrap();
    let log = TaskLog::create(&scratch.0.join("task.log")).unwrap();
    let outcome = run_task(&ctx(), &payload, &dir, &log, &AbortSignal::new()).await;
    log.close();
    Run {
        outcome,
        log: log.contents().unwrap(),
        dir,
        _scratch: scratch,
    }
}

#[tokio::test]
async fn success_writes_header_output_and_footer() {
    let r = run(json!({"command": [["echo", "hello world"]], "maxRunTime": 30})).await;
    assert_eq!(r.outcome.resolution, RunOutcome::Completed, "{}", r.log);
    assert_eq!(r.outcome.exit_code, Some(0));
    for needle in [
        "Worker Group: test-group",
        "Worker ID: test-worker",
        "Task ID: fQmtH2ZNQ6ePyX1U0XYbrA",
        "Run ID: 2",
        "Task started at ",
        // No task user given: the commands run with the caller's rights.
        "[taskcluster:warn ",
        "This task runs as the worker's own user",
        "Executing command 0: echo 'hello world'",
        "\nhello world\n",
        "=== Task Finished ===",
        "Result: completed",
        "Task Duration: ",
    ] {
        assert!(r.log.contains(needle), "missing {needle:?} in\n{}", r.log);
    }
    assert!(r.log.starts_with("[taskcluster "), "{}", r.log);
}

#[tokio::test]
async fn non_zero_exit_fails_with_stderr_in_the_log() {
    let r =
        run(json!({"command": [["sh", "-c", "echo oops >&2; exit 3"]], "maxRunTime": 30})).await;
    assert_eq!(r.outcome.resolution, RunOutcome::Failed);
    assert_eq!(r.outcome.exit_code, Some(3));
    assert!(r.log.contains("\noops\n"), "{}", r.log);
    assert!(r.log.contains("Exit Code: 3"), "{}", r.log);
    assert!(r.log.contains("Result: failed"), "{}", r.log);
}

#[tokio::test]
async fn max_run_time_kills_the_whole_process_group() {
    // Were the group not killed, this would wait out `sleep 600` and the runner's
    // hang guard would fail the test.
    let r = run(json!({
        "command": [["sh", "-c", "sh -c 'sleep 600' & echo $! > grandchild.pid; echo started; wait"]],
        "maxRunTime": 1
    }))
    .await;
    assert_eq!(r.outcome.resolution, RunOutcome::Failed, "{}", r.log);
    assert!(
        r.log.contains("max run time exceeded"),
        "log does not say why:\n{}",
        r.log
    );
    let pid = std::fs::read_to_string(r.dir.path().join("grandchild.pid")).unwrap();
    let stat = format!("/proc/{}/stat", pid.trim());
    // Reparented to init and reaped, or at worst a zombie: not running.
    let mut gone = false;
    for _ in 0..50 {
        match std::fs::read_to_string(&stat) {
            Err(_) => gone = true,
            Ok(s) => gone = s.split_whitespace().nth(2) == Some("Z"),
        }
        if gone {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "grandchild {pid} still running");
}

#[tokio::test]
async fn retry_exit_code_is_an_intermittent_task() {
    let r = run(json!({
        "command": [["sh", "-c", "exit 5"]],
        "maxRunTime": 30,
        "onExitStatus": {"retry": [4, 5]}
    }))
    .await;
    assert_eq!(
        r.outcome.resolution,
        RunOutcome::Exception(ExceptionReason::IntermittentTask)
    );
    assert!(r.log.contains("onExitStatus.retry"), "{}", r.log);
    let r = run(json!({
        "command": [["sh", "-c", "exit 6"]],
        "maxRunTime": 30,
        "onExitStatus": {"retry": [4, 5]}
    }))
    .await;
    assert_eq!(r.outcome.resolution, RunOutcome::Failed);
}

#[tokio::test]
async fn malformed_payloads_are_explained_in_the_log() {
    let cases = [
        (json!(null), "payload must be a JSON object, got null"),
        (json!({"command": [["true"]]}), "missing field `maxRunTime`"),
        (
            json!({"command": [["true"]], "maxRunTime": "ten"}),
            "payload.maxRunTime: invalid type: string \"ten\", expected u64",
        ),
        (
            json!({"command": [["true"]], "maxRunTime": 99999}),
            "out of range (1 to 3600 seconds)",
        ),
        (
            json!({"command": [["true"]], "maxRunTime": 5, "image": "ubuntu"}),
            "unknown field `image`",
        ),
    ];
    for (payload, expected) in cases {
        let r = run(payload.clone()).await;
        assert_eq!(
            r.outcome.resolution,
            RunOutcome::Exception(ExceptionReason::MalformedPayload),
            "{payload}"
        );
        assert!(
            r.log.contains("[taskcluster:error] malformed payload: ") && r.log.contains(expected),
            "{payload}: expected {expected:?} in\n{}",
            r.log
        );
        assert!(r.log.contains("Result: exception/malformed-payload"));
        assert!(!r.log.contains("Executing command"));
        assert!(!r.log.contains("runs as the worker's own user"));
    }
}

#[tokio::test]
async fn environment_is_clean_and_has_task_variables() {
    let r = run(json!({
        "command": [["sh", "-c", "env | sort"]],
        "maxRunTime": 30,
        "env": {"GREETING": "hi there", "RUN_ID": "overridden", "SHELL": "/bin/bash"}
    }))
    .await;
    assert_eq!(r.outcome.resolution, RunOutcome::Completed, "{}", r.log);
    let dir = r.dir.path().display().to_string();
    for needle in [
        "GREETING=hi there\n".to_owned(),
        "TASK_ID=fQmtH2ZNQ6ePyX1U0XYbrA\n".to_owned(),
        // As upstream: the payload may override defaults such as SHELL, not
        // the task's identity.
        "RUN_ID=2\n".to_owned(),
        "SHELL=/bin/bash\n".to_owned(),
        "TASK_GROUP_ID=group0ZNQ6ePyX1U0XYbrA\n".to_owned(),
        "TASKCLUSTER_ROOT_URL=http://queue.invalid\n".to_owned(),
        format!("TASK_WORKDIR={dir}\n"),
        format!("HOME={dir}\n"),
    ] {
        assert!(r.log.contains(&needle), "missing {needle:?} in\n{}", r.log);
    }
    assert!(!r.log.contains("RUN_ID=overridden"), "{}", r.log);
    let allowed = [
        "GREETING",
        "TASK_ID",
        "RUN_ID",
        "TASK_GROUP_ID",
        "TASKCLUSTER_ROOT_URL",
        "TASK_WORKDIR",
        "HOME",
        "PATH",
        "LANG",
        "LC_ALL",
        "TZ",
        "USER",
        "LOGNAME",
        "SHELL",
        "PWD",
        "SHLVL",
        "_",
    ];
    for line in r.log.lines().filter(|l| !l.starts_with("[taskcluster")) {
        let name = line.split('=').next().unwrap();
        assert!(
            allowed.contains(&name),
            "unexpected variable {name} leaked into the task"
        );
    }
}

#[tokio::test]
async fn commands_run_in_order_and_stop_at_the_first_failure() {
    let r = run(json!({
        "command": [["sh", "-c", "echo one > order.txt"], ["sh", "-c", "echo two >> order.txt; cat order.txt; exit 1"], ["sh", "-c", "echo three"]],
        "maxRunTime": 30
    }))
    .await;
    assert_eq!(r.outcome.resolution, RunOutcome::Failed);
    assert!(r.log.contains("one\ntwo\n"), "{}", r.log);
    assert!(r.log.contains("Executing command 1"));
    assert!(!r.log.contains("Executing command 2"), "{}", r.log);
    assert!(!r.log.contains("three"));
}

#[tokio::test]
async fn a_missing_program_fails_the_task() {
    let r = run(json!({"command": [["/nonexistent/program"]], "maxRunTime": 30})).await;
    assert_eq!(r.outcome.resolution, RunOutcome::Failed);
    assert!(r.log.contains("cannot start command 0"), "{}", r.log);
}

#[tokio::test]
async fn artifacts_files_directories_and_missing_ones() {
    let in_an_hour = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let r = run(json!({
        "command": [["sh", "-c", "mkdir -p out/sub && echo a > out/a.txt && echo b > out/sub/b.json && echo r > report.html"]],
        "maxRunTime": 30,
        "artifacts": [
            {"type": "file", "path": "report.html", "name": "public/report.html"},
            {"type": "directory", "path": "out", "name": "public/out", "expires": in_an_hour},
            {"type": "file", "path": "missing.txt", "name": "public/missing.txt"},
            {"type": "file", "path": "optional.txt", "optional": true},
            {"type": "directory", "path": "nodir"},
            {"type": "file", "path": "out", "name": "public/not-a-file"}
        ]
    }))
    .await;
    assert_eq!(r.outcome.resolution, RunOutcome::Completed, "{}", r.log);
    let arts = &r.outcome.artifacts;
    let names: Vec<&str> = arts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "public/report.html",
            "public/out/a.txt",
            "public/out/sub/b.json",
            "public/missing.txt",
            "nodir",
            "public/not-a-file"
        ]
    );
    match &arts[0].content {
        ArtifactContent::File {
            content_type, size, ..
        } => {
            assert_eq!(content_type, "text/html; charset=utf-8");
            assert_eq!(*size, 2);
        }
        other => panic!("{other:?}"),
    }
    // Default expiry: the task's.
    assert!(arts[0].expires.unwrap() > chrono::Utc::now() + chrono::Duration::hours(23));
    assert_eq!(
        arts[1]
            .expires
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        in_an_hour
    );
    match &arts[2].content {
        ArtifactContent::File {
            content_type, path, ..
        } => {
            assert_eq!(content_type, "application/json");
            assert_eq!(std::fs::read_to_string(path).unwrap(), "b\n");
        }
        other => panic!("{other:?}"),
    }
    for (i, reason) in [
        (3, "file-missing-on-worker"),
        (4, "file-missing-on-worker"),
        (5, "invalid-resource-on-worker"),
    ] {
        match &arts[i].content {
            ArtifactContent::Error { reason: r, message } => {
                assert_eq!(*r, reason);
                assert!(!message.is_empty());
            }
            other => panic!("{i}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn artifacts_are_collected_after_a_failure_too() {
    let r = run(json!({
        "command": [["sh", "-c", "echo x > result.txt; exit 2"]],
        "maxRunTime": 30,
        "artifacts": [{"type": "file", "path": "result.txt"}]
    }))
    .await;
    assert_eq!(r.outcome.resolution, RunOutcome::Failed);
    assert_eq!(r.outcome.artifacts.len(), 1);
    assert!(matches!(
        r.outcome.artifacts[0].content,
        ArtifactContent::File { .. }
    ));
}

#[tokio::test]
async fn abort_kills_the_task_and_keeps_no_artifacts() {
    let scratch = TempDir::new("bbb-engine-test");
    let dir = TaskDir::create(&scratch.0, "task").unwrap();
    let log = TaskLog::create(&scratch.0.join("task.log")).unwrap();
    let abort = AbortSignal::new();
    let payload = json!({
        "command": [["sleep", "600"]],
        "maxRunTime": 900,
        "artifacts": [{"type": "file", "path": "x"}]
    });
    let ctx = ctx();
    let aborter = abort.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        aborter.abort(AbortReason::ClaimLost);
        aborter.abort(AbortReason::WorkerShutdown);
    });
    let outcome = run_task(&ctx, &payload, &dir, &log, &abort).await;
    assert_eq!(outcome.resolution, RunOutcome::ClaimLost);
    assert!(outcome.artifacts.is_empty());
    assert_eq!(abort.reason(), Some(AbortReason::ClaimLost));

    let abort = AbortSignal::new();
    abort.abort(AbortReason::WorkerShutdown);
    let outcome = run_task(&ctx, &payload, &dir, &log, &abort).await;
    assert_eq!(
        outcome.resolution,
        RunOutcome::Exception(ExceptionReason::WorkerShutdown)
    );
    assert!(log.contents().unwrap().contains("worker shutdown"));
}

#[tokio::test]
async fn task_directory_is_fresh_and_removed() {
    let scratch = TempDir::new("bbb-engine-test");
    let stale = scratch.0.join("task");
    std::fs::create_dir_all(stale.join("left-over")).unwrap();
    let dir = TaskDir::create(&scratch.0, "task").unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "not fresh"
    );
    let log = TaskLog::create(&scratch.0.join("task.log")).unwrap();
    let payload = json!({
        "command": [["sh", "-c", "mkdir -p ro/deep && touch ro/deep/f && chmod 0500 ro/deep ro"]],
        "maxRunTime": 30
    });
    let outcome = run_task(&ctx(), &payload, &dir, &log, &AbortSignal::new()).await;
    assert_eq!(outcome.resolution, RunOutcome::Completed);
    let path = dir.path().to_owned();
    assert!(path.join("ro/deep/f").exists());
    dir.remove().unwrap();
    assert!(!path.exists(), "task directory left behind");

    let dir = TaskDir::create(&scratch.0, "dropped").unwrap();
    let path = dir.path().to_owned();
    std::fs::write(path.join("f"), "x").unwrap();
    drop(dir);
    assert!(!path.exists(), "task directory left behind on drop");
}

#[tokio::test]
async fn live_log_is_readable_while_running_and_complete_afterwards() {
    let scratch = TempDir::new("bbb-engine-test");
    let stop = CancellationToken::new();
    let server = LiveLogServer::start("127.0.0.1:0", None, stop.clone())
        .await
        .unwrap();
    let dir = TaskDir::create(&scratch.0, "task").unwrap();
    let go = dir.path().join("go");
    let log = TaskLog::create(&scratch.0.join("task.log")).unwrap();
    let (url, token) = server.publish(log.clone());
    assert!(
        url.starts_with(&format!("http://{}/log/", server.addr())),
        "{url}"
    );

    let payload = json!({
        "command": [["sh", "-c", "echo first line; i=0; while [ ! -e go ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; echo second line"]],
        "maxRunTime": 60
    });
    let task_log: Arc<TaskLog> = log.clone();
    let task = tokio::spawn(async move {
        let outcome = run_task(&ctx(), &payload, &dir, &task_log, &AbortSignal::new()).await;
        task_log.close();
        (outcome, dir)
    });

    let client = reqwest_tc::Client::new();
    let mut resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/plain; charset=utf-8"
    );
    let mut seen = Vec::new();
    read_until(&mut resp, &mut seen, "\nfirst line\n").await;
    assert!(!task.is_finished(), "the task should still be running");
    assert!(!String::from_utf8_lossy(&seen).contains("\nsecond line\n"));

    // A second reader joining now gets the log from its start.
    let mut late = client.get(&url).send().await.unwrap();

    std::fs::write(&go, "").unwrap();
    read_to_end(&mut resp, &mut seen).await;
    let (outcome, dir) = task.await.unwrap();
    assert_eq!(outcome.resolution, RunOutcome::Completed);
    let full = log.contents().unwrap();
    assert_eq!(String::from_utf8_lossy(&seen), full);
    assert!(full.contains("second line\n") && full.contains("=== Task Finished ==="));
    let mut late_body = Vec::new();
    while let Some(chunk) = late.chunk().await.unwrap() {
        late_body.extend_from_slice(&chunk);
    }
    assert_eq!(String::from_utf8_lossy(&late_body), full);

    // After the log is unpublished it is gone from the server.
    server.unpublish(&token);
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    dir.remove().unwrap();
    stop.cancel();
}
