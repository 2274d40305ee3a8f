//! Real tasks through the native queue (`bbb_queue::testing::TestQueue`), on
//! SQLite and on PostgreSQL, claimed and run by real workers.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bbb_queue::testing::{TestOptions, TestQueue};
use bbb_workers::RunOutcome;
use serde_json::json;

use bbb_testdb::on_both_backends;
use common::{
    RunningWorker, Scratch, config, create_task, latest_artifact, one_worker, root, status,
    task_queue, wait_state,
};

on_both_backends!(
    bbb_queue::testing::TestQueue::on;
    success_with_logs_and_artifacts,
    failure,
    max_run_time_exceeded,
    retry_exit_code,
    malformed_payload,
    live_log_while_running_then_backing_log,
    shutdown_reports_worker_shutdown,
    two_workers_run_each_task_once,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_while_running_sqlite() {
    let q = TestQueue::with(TestOptions {
        claim_timeout_s: Some(3),
        ..Default::default()
    })
    .await
    .unwrap();
    cancel_while_running(&q).await;
    q.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_while_running_postgres() {
    let q = TestQueue::with(TestOptions {
        postgres: true,
        claim_timeout_s: Some(3),
        ..Default::default()
    })
    .await
    .unwrap();
    cancel_while_running(&q).await;
    q.stop().await;
}

async fn success_with_logs_and_artifacts(q: &TestQueue) {
    let (_scratch, tq, mut w) = one_worker(q).await;
    let task_id = create_task(
        q,
        &tq,
        json!({
            "command": [["sh", "-c", "echo hello from $TASK_ID; mkdir -p out/sub; echo a > out/a.txt; echo b > out/sub/b.txt; echo r > report.json"]],
            "maxRunTime": 60,
            "artifacts": [
                {"type": "file", "path": "report.json", "name": "public/report.json"},
                {"type": "directory", "path": "out", "name": "public/out"},
                {"type": "file", "path": "missing.txt", "name": "public/missing.txt"}
            ]
        }),
        0,
    )
    .await;
    let report = w.next_report().await;
    assert_eq!(report.task_id, task_id);
    assert_eq!(report.resolution, RunOutcome::Completed);
    let s = wait_state(q, &task_id, "completed").await;
    assert_eq!(s["runs"][0]["workerId"], "w1");

    let (code, log) = latest_artifact(q, &task_id, "public/logs/live_backing.log").await;
    assert_eq!(code, 200);
    assert!(log.contains(&format!("hello from {task_id}\n")), "{log}");
    assert!(log.contains("Result: completed"), "{log}");
    // live.log is now a link to the backing log.
    assert_eq!(
        latest_artifact(q, &task_id, "public/logs/live.log").await,
        (200, log.clone())
    );
    assert_eq!(
        latest_artifact(q, &task_id, "public/report.json").await,
        (200, "r\n".to_owned())
    );
    assert_eq!(
        latest_artifact(q, &task_id, "public/out/sub/b.txt").await,
        (200, "b\n".to_owned())
    );
    let (code, body) = latest_artifact(q, &task_id, "public/missing.txt").await;
    assert_eq!(code, 424, "{body}");
    assert!(body.contains("file-missing-on-worker"), "{body}");
    let listed = root(q)
        .listLatestArtifacts(&task_id, None, None)
        .await
        .unwrap();
    let names: HashSet<&str> = listed["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    for n in [
        "public/logs/live.log",
        "public/logs/live_backing.log",
        "public/report.json",
        "public/out/a.txt",
        "public/out/sub/b.txt",
        "public/missing.txt",
    ] {
        assert!(names.contains(n), "{n} not in {names:?}");
    }
    // The task directory and log file are gone.
    assert_eq!(std::fs::read_dir(&w.tasks_dir).unwrap().count(), 0);
    w.stop().await;
}

async fn failure(q: &TestQueue) {
    let (_scratch, tq, mut w) = one_worker(q).await;
    let task_id = w
        .run(
            q,
            &tq,
            json!({"command": [["sh", "-c", "echo broken >&2; exit 3"]], "maxRunTime": 60}),
            0,
            RunOutcome::Failed,
        )
        .await;
    wait_state(q, &task_id, "failed").await;
    let (_, log) = latest_artifact(q, &task_id, "public/logs/live_backing.log").await;
    assert!(
        log.contains("broken\n") && log.contains("Exit Code: 3"),
        "{log}"
    );
    w.stop().await;
}

async fn max_run_time_exceeded(q: &TestQueue) {
    let (_scratch, tq, mut w) = one_worker(q).await;
    let task_id = w
        .run(
            q,
            &tq,
            json!({"command": [["sh", "-c", "sleep 120 & wait"]], "maxRunTime": 1}),
            0,
            RunOutcome::Failed,
        )
        .await;
    wait_state(q, &task_id, "failed").await;
    let (_, log) = latest_artifact(q, &task_id, "public/logs/live_backing.log").await;
    assert!(log.contains("max run time exceeded"), "{log}");
    w.stop().await;
}

async fn retry_exit_code(q: &TestQueue) {
    let (_scratch, tq, mut w) = one_worker(q).await;
    let task_id = create_task(
        q,
        &tq,
        json!({"command": [["sh", "-c", "exit 75"]], "maxRunTime": 60, "onExitStatus": {"retry": [75]}}),
        1,
    )
    .await;
    for run in 0..2 {
        let r = w.next_report().await;
        assert_eq!((r.task_id.as_str(), r.run_id), (task_id.as_str(), run));
        assert_eq!(
            r.resolution,
            RunOutcome::Exception(bbb_workers::ExceptionReason::IntermittentTask)
        );
    }
    let s = wait_state(q, &task_id, "exception").await;
    let runs = s["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{s}");
    assert_eq!(runs[0]["reasonResolved"], "intermittent-task");
    assert_eq!(runs[1]["reasonCreated"], "task-retry");
    w.stop().await;
}

async fn malformed_payload(q: &TestQueue) {
    let (_scratch, tq, mut w) = one_worker(q).await;
    let task_id = w
        .run(
            q,
            &tq,
            json!({"command": [["true"]], "maxRunTime": 60, "env": {"N": 1}}),
            3,
            RunOutcome::Exception(bbb_workers::ExceptionReason::MalformedPayload),
        )
        .await;
    let s = wait_state(q, &task_id, "exception").await;
    assert_eq!(s["runs"].as_array().unwrap().len(), 1, "retried: {s}");
    assert_eq!(s["runs"][0]["reasonResolved"], "malformed-payload");
    let (code, log) = latest_artifact(q, &task_id, "public/logs/live_backing.log").await;
    assert_eq!(code, 200);
    assert!(
        log.contains(
            "malformed payload: payload.env.N: invalid type: integer `1`, expected a string"
        ),
        "{log}"
    );
    w.stop().await;
}

async fn live_log_while_running_then_backing_log(q: &TestQueue) {
    let scratch = Scratch::new();
    let go = scratch.0.join("go");
    let tq = task_queue();
    let mut w = RunningWorker::start(config(q, &tq, "w1", &scratch.0)).await;
    let task_id = create_task(
        q,
        &tq,
        json!({
            "command": [["sh", "-c", "echo waiting; i=0; while [ ! -e \"$GO\" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; echo released"]],
            "maxRunTime": 120,
            "env": {"GO": go.display().to_string()}
        }),
        0,
    )
    .await;
    wait_state(q, &task_id, "running").await;
    // live.log is a reference to the worker's live log server.
    let url = root(q)
        .getLatestArtifact_signed_url(&task_id, "public/logs/live.log", Duration::from_secs(600))
        .unwrap();
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut resp = loop {
        let resp = reqwest_tc::get(&url).await.unwrap();
        if resp.status() == 200 {
            break resp;
        }
        assert!(Instant::now() < give_up, "live log never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("\nwaiting\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
            .await
            .expect("live log stalled")
            .unwrap()
            .expect("live log ended while the task runs");
        seen.extend_from_slice(&chunk);
    }
    assert_eq!(status(q, &task_id).await["state"], "running");
    std::fs::write(&go, "").unwrap();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
        .await
        .expect("live log stalled")
        .unwrap()
    {
        seen.extend_from_slice(&chunk);
    }
    let live = String::from_utf8(seen).unwrap();
    assert!(
        live.contains("\nreleased\n") && live.contains("=== Task Finished ==="),
        "{live}"
    );
    assert_eq!(w.next_report().await.resolution, RunOutcome::Completed);
    wait_state(q, &task_id, "completed").await;
    let (code, backing) = latest_artifact(q, &task_id, "public/logs/live_backing.log").await;
    assert_eq!(code, 200);
    assert_eq!(backing, live, "backing log differs from what was streamed");
    assert_eq!(
        latest_artifact(q, &task_id, "public/logs/live.log").await,
        (200, live)
    );
    w.stop().await;
}

async fn cancel_while_running(q: &TestQueue) {
    let scratch = Scratch::new();
    let pid_file = scratch.shared("shared").join("pid");
    let tq = task_queue();
    let mut w = RunningWorker::start(config(q, &tq, "w1", &scratch.0)).await;
    let task_id = create_task(
        q,
        &tq,
        json!({
            "command": [["sh", "-c", "sleep 300 & echo $! > \"$PID_FILE\"; wait"]],
            "maxRunTime": 600,
            "env": {"PID_FILE": pid_file.display().to_string()}
        }),
        0,
    )
    .await;
    wait_state(q, &task_id, "running").await;
    let give_up = Instant::now() + Duration::from_secs(30);
    while !pid_file.exists()
        || std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .is_empty()
    {
        assert!(Instant::now() < give_up, "task never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    root(q).cancelTask(&task_id).await.unwrap();
    let report = w.next_report().await;
    assert_eq!(report.resolution, RunOutcome::ClaimLost);
    let s = status(q, &task_id).await;
    assert_eq!(s["state"], "exception");
    assert_eq!(s["runs"][0]["reasonResolved"], "canceled");
    let stat = format!("/proc/{pid}/stat");
    let running = std::fs::read_to_string(&stat)
        .map(|s| s.split_whitespace().nth(2) != Some("Z"))
        .unwrap_or(false);
    assert!(!running, "the task's process {pid} is still running");
    // Nothing was uploaded after the cancellation.
    let (code, _) = latest_artifact(q, &task_id, "public/logs/live_backing.log").await;
    assert_eq!(code, 404);
    w.stop().await;
}

async fn shutdown_reports_worker_shutdown(q: &TestQueue) {
    let (scratch, tq, w) = one_worker(q).await;
    let task_id = create_task(
        q,
        &tq,
        json!({"command": [["sh", "-c", "echo long job; sleep 300"]], "maxRunTime": 600}),
        2,
    )
    .await;
    wait_state(q, &task_id, "running").await;
    let mut reports = w.reports.resubscribe();
    // Stopping takes the grace period (1 s) plus uploads, not the task's 300 s
    // (which the runner's hang guard would turn into a failure).
    w.stop().await;
    let r = reports.recv().await.unwrap();
    assert_eq!(
        r.resolution,
        RunOutcome::Exception(bbb_workers::ExceptionReason::WorkerShutdown)
    );
    let s = wait_state(q, &task_id, "pending").await;
    let runs = s["runs"].as_array().unwrap();
    assert_eq!(runs[0]["reasonResolved"], "worker-shutdown");
    assert_eq!(runs[1]["reasonCreated"], "retry");
    let url = root(q)
        .getArtifact_signed_url(
            &task_id,
            "0",
            "public/logs/live_backing.log",
            Duration::from_secs(600),
        )
        .unwrap();
    let log = reqwest_tc::get(&url).await.unwrap().text().await.unwrap();
    assert!(
        log.contains("long job\n") && log.contains("worker shutdown"),
        "{log}"
    );

    // Another worker picks the retry up.
    let w2 = RunningWorker::start(config(q, &tq, "w2", &scratch.0)).await;
    let s = wait_state(q, &task_id, "running").await;
    assert_eq!(s["runs"][1]["workerId"], "w2");
    let mut reports = w2.reports.resubscribe();
    w2.stop().await;
    let r = reports.recv().await.unwrap();
    assert_eq!((r.task_id.as_str(), r.run_id), (task_id.as_str(), 1));
}

async fn two_workers_run_each_task_once(q: &TestQueue) {
    let scratch = Scratch::new();
    let marks = scratch.shared("marks");
    let tq = task_queue();
    let mut cfg1 = config(q, &tq, "w1", &scratch.0);
    cfg1.capacity = 3;
    let mut cfg2 = config(q, &tq, "w2", &scratch.0);
    cfg2.capacity = 3;
    let w1 = RunningWorker::start(cfg1).await;
    let w2 = RunningWorker::start(cfg2).await;
    let mut reports = [w1.reports.resubscribe(), w2.reports.resubscribe()];
    let n = 20;
    let mut ids = HashSet::new();
    for _ in 0..n {
        ids.insert(
            create_task(
                q,
                &tq,
                json!({
                    "command": [["sh", "-c", "echo x >> \"$MARKS/$TASK_ID\"; sleep 0.1"]],
                    "maxRunTime": 60,
                    "env": {"MARKS": marks.display().to_string()}
                }),
                0,
            )
            .await,
        );
    }
    let mut done = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(120);
    while done.len() < n {
        assert!(
            Instant::now() < give_up,
            "only {} of {n} tasks ran",
            done.len()
        );
        for rx in reports.iter_mut() {
            while let Ok(r) = rx.try_recv() {
                done.push(r);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w1.stop().await;
    w2.stop().await;
    let ran: Vec<&str> = done.iter().map(|r| r.task_id.as_str()).collect();
    let unique: HashSet<&str> = ran.iter().copied().collect();
    assert_eq!(ran.len(), n, "a task ran twice: {ran:?}");
    assert_eq!(unique.len(), n);
    assert!(
        done.iter()
            .all(|r| r.resolution == RunOutcome::Completed && r.run_id == 0)
    );
    for id in &ids {
        let mark = std::fs::read_to_string(marks.join(id)).unwrap();
        assert_eq!(mark, "x\n", "task {id} ran {} times", mark.lines().count());
        let s = status(q, id).await;
        assert_eq!(s["state"], "completed");
        assert_eq!(s["runs"].as_array().unwrap().len(), 1);
    }
}
