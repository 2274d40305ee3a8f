//! Tasks run as OS users of their own (the tests run as root, so the worker
//! defaults to `run_tasks_as = "task-user"`): two tasks cannot reach each
//! other's directories, processes or proxy, their users and what they left
//! in the temporary directories go when they end, and the worker uploads as
//! artifacts only files the task user owns. When the tests do not run as
//! root, the worker cannot switch users and says so in every task log.

mod common;

use std::os::unix::fs::PermissionsExt;

use bbb_queue::testing::TestQueue;
use bbb_workers::RunOutcome;
use serde_json::json;

use common::{
    RunningWorker, Scratch, backing_log, config, create_task, is_root, latest_artifact, logged,
    one_worker, task_queue, wait_for_file,
};

/// Writes its secrets and proxy URL, then waits until the other task probed
/// them.
const HOLDER: &str = r#"
set -eu
echo "uid $(id -u)"
echo top-secret-of-the-holder > "$HOME/secret.txt"
touch "$LEFTOVER"
code=$(curl -s -o /dev/null -w '%{http_code}' "$TASKCLUSTER_PROXY_URL/api/queue/v1/task/$TASK_ID")
echo "own proxy $code"
printf 'home %s\npid %s\nproxy %s\n' "$HOME" "$$" "$TASKCLUSTER_PROXY_URL" > "$SHARED/holder.tmp"
mv "$SHARED/holder.tmp" "$SHARED/holder"
i=0; while [ ! -e "$SHARED/done" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
"#;

/// Tries to read the holder's directory, environment and proxy.
const PROBER: &str = r#"
set -u
echo "uid $(id -u)"
i=0; while [ ! -e "$SHARED/holder" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
home=$(sed -n 's/^home //p' "$SHARED/holder")
pid=$(sed -n 's/^pid //p' "$SHARED/holder")
proxy=$(sed -n 's/^proxy //p' "$SHARED/holder")
yes_no() { if "$@" >/dev/null 2>&1; then echo yes; else echo no; fi; }
echo "read the secret: $(yes_no cat "$home/secret.txt")"
echo "list the directory: $(yes_no ls "$home")"
echo "read the environment: $(yes_no cat "/proc/$pid/environ")"
echo "signal the process: $(yes_no kill -0 "$pid")"
code=$(curl -s -o /dev/null -w '%{http_code}' "$proxy/api/queue/v1/task/$TASK_ID")
echo "use the proxy: $code"
touch "$SHARED/done"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_tasks_cannot_reach_each_other() {
    let q = TestQueue::sqlite().await;
    let scratch = Scratch::new();
    let shared = scratch.shared("shared");
    let leftover = std::env::temp_dir().join(format!("bbb-leftover-{}", uuid::Uuid::new_v4()));
    let tq = task_queue();
    let mut cfg = config(&q, &tq, "w1", &scratch.0);
    cfg.capacity = 2;
    let mut w = RunningWorker::start(cfg).await;
    let holder = create_task(
        &q,
        &tq,
        json!({
            "command": [["sh", "-c", HOLDER]],
            "maxRunTime": 120,
            "features": {"taskclusterProxy": true},
            "env": {"SHARED": shared.display().to_string(), "LEFTOVER": leftover.display().to_string()}
        }),
        0,
    )
    .await;
    wait_for_file(&shared.join("holder")).await;
    let prober = create_task(
        &q,
        &tq,
        json!({
            "command": [["sh", "-c", PROBER]],
            "maxRunTime": 120,
            "env": {"SHARED": shared.display().to_string()}
        }),
        0,
    )
    .await;
    for _ in 0..2 {
        assert_eq!(w.next_report().await.resolution, RunOutcome::Completed);
    }
    let holder_log = backing_log(&q, &holder).await;
    let prober_log = backing_log(&q, &prober).await;
    let holder_uid: u32 = logged(&holder_log, "uid ").unwrap().parse().unwrap();
    let prober_uid: u32 = logged(&prober_log, "uid ").unwrap().parse().unwrap();
    assert_eq!(
        logged(&holder_log, "own proxy "),
        Some("200"),
        "{holder_log}"
    );
    assert!(
        !prober_log.contains("top-secret-of-the-holder"),
        "{prober_log}"
    );

    if !is_root() {
        // The worker cannot switch users: both tasks run as this user, and
        // each log says so.
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!((holder_uid, prober_uid), (me, me));
        for log in [&holder_log, &prober_log] {
            assert!(
                log.contains("[taskcluster:warn ") && log.contains("runs as the worker's own user"),
                "{log}"
            );
        }
        w.stop().await;
        q.stop().await;
        return;
    }

    assert!(holder_uid != 0 && prober_uid != 0 && holder_uid != prober_uid);
    let users: Vec<String> = [&holder_log, &prober_log]
        .iter()
        .map(|log| {
            let (_, rest) = log
                .split_once("] Running as task user ")
                .expect("no task user line");
            rest.split_whitespace().next().unwrap().to_owned()
        })
        .collect();
    assert!(users.iter().all(|u| u.starts_with("task_")), "{users:?}");
    for (what, expected) in [
        ("read the secret: ", "no"),
        ("list the directory: ", "no"),
        ("read the environment: ", "no"),
        ("signal the process: ", "no"),
        // The holder's proxy refuses the connection: curl reports no status.
        ("use the proxy: ", "000"),
    ] {
        assert_eq!(logged(&prober_log, what), Some(expected), "{prober_log}");
    }
    // The users, their leftovers and their directories are gone.
    for user in &users {
        assert_eq!(nix::unistd::User::from_name(user).unwrap(), None, "{user}");
    }
    assert!(!leftover.exists(), "{} was left", leftover.display());
    assert_eq!(std::fs::read_dir(&w.tasks_dir).unwrap().count(), 0);
    let mode = std::fs::metadata(&w.tasks_dir)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o711);
    w.stop().await;
    q.stop().await;
}

/// Links files it cannot read into its artifacts, beside one of its own.
const THIEF: &str = r#"
set -u
ln -s "$SECRET" stolen.txt
mkdir loot
echo mine > loot/mine.txt
ln -s "$SECRET" loot/stolen.txt
ln "$SECRET" hard.txt 2>/dev/null || true
echo "reads the secret: $(if cat "$SECRET" >/dev/null 2>&1; then echo yes; else echo no; fi)"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_files_of_the_task_user_are_uploaded() {
    let q = TestQueue::sqlite().await;
    let (scratch, tq, mut w) = one_worker(&q).await;
    let secret = scratch.0.join("worker-secret.txt");
    std::fs::write(&secret, "the worker's secret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (task_id, log) = w
        .complete(
            &q,
            &tq,
            json!({
                "command": [["sh", "-c", THIEF]],
                "maxRunTime": 60,
                "env": {"SECRET": secret.display().to_string()},
                "artifacts": [
                    {"type": "file", "path": "stolen.txt", "name": "public/stolen.txt"},
                    {"type": "file", "path": "hard.txt", "name": "public/hard.txt", "optional": true},
                    {"type": "directory", "path": "loot", "name": "public/loot"}
                ]
            }),
        )
        .await;
    assert_eq!(
        latest_artifact(&q, &task_id, "public/loot/mine.txt").await,
        (200, "mine\n".to_owned())
    );
    let names = [
        "public/stolen.txt",
        "public/loot/stolen.txt",
        "public/hard.txt",
    ];
    if is_root() {
        assert_eq!(logged(&log, "reads the secret: "), Some("no"), "{log}");
        for name in names {
            let (code, body) = latest_artifact(&q, &task_id, name).await;
            assert!(!body.contains("the worker's secret"), "{name}: {body}");
            if name != "public/hard.txt" {
                assert_eq!(code, 424, "{name}: {body}");
                assert!(body.contains("file-not-readable-on-worker"), "{body}");
            }
        }
        assert!(
            log.contains(
                "artifact public/stolen.txt: cannot read \"stolen.txt\": it belongs to uid 0"
            ),
            "{log}"
        );
    } else {
        // With the worker's own rights, the task reads what the worker reads.
        assert_eq!(logged(&log, "reads the secret: "), Some("yes"), "{log}");
        assert_eq!(
            latest_artifact(&q, &task_id, "public/stolen.txt").await,
            (200, "the worker's secret\n".to_owned())
        );
    }
    assert!(!log.contains("the worker's secret"), "{log}");
    w.stop().await;
    q.stop().await;
}
