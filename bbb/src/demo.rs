//! The demo `bbb up` runs: one bridged task, followed from pending to resolved.

use std::time::Duration;

use serde_json::{Value, json};

/// Creates a task for the sandbox builder `linux.build` and prints each state
/// its run goes through until it is resolved.
pub async fn bridged_task(root_url: String, token: String, task_queue_id: String) {
    if let Err(e) = run(&root_url, &token, &task_queue_id).await {
        println!("demo task: {e:#}");
    }
}

async fn run(root_url: &str, token: &str, task_queue_id: &str) -> anyhow::Result<()> {
    let queue = taskcluster::Queue::new(
        taskcluster::ClientBuilder::new(root_url)
            .credentials(taskcluster::Credentials::new("root", token)),
    )?;
    let task_id = bbb_queue::validate::slugid();
    let now = chrono::Utc::now();
    let def = json!({
        "taskQueueId": task_queue_id,
        "schedulerId": "bbb-demo",
        "taskGroupId": task_id,
        "created": now.to_rfc3339(),
        "deadline": (now + chrono::Duration::hours(1)).to_rfc3339(),
        "expires": (now + chrono::Duration::days(7)).to_rfc3339(),
        "payload": {
            "buildername": "linux.build",
            "properties": {"product": "firefox", "sim_duration_ms": 2000},
            "sourcestamp": {"branch": "integration/mozilla-inbound", "revision": "abcdef012345"}
        },
        "metadata": {
            "name": "bbb demo: a bridged build",
            "description": "Runs on the sandbox Buildbot master through the bridge",
            "owner": "bbb@example.com",
            "source": "https://github.com/bbb/bbb"
        }
    });
    let created: Value = queue.createTask(&task_id, &def).await?;
    println!("demo task {task_id} created on {task_queue_id} (builder linux.build)");
    // The state createTask answered (pending), then each state the run goes through.
    let mut last = created["status"]["state"]
        .as_str()
        .unwrap_or("pending")
        .to_owned();
    println!("demo task {task_id}: {last}");
    for _ in 0..600 {
        let status: Value = queue.status(&task_id).await?;
        let state = status["status"]["state"].as_str().unwrap_or("?").to_owned();
        if state != last {
            println!("demo task {task_id}: {state}");
            last = state.clone();
        }
        if matches!(state.as_str(), "completed" | "failed" | "exception") {
            println!(
                "demo task artifacts: {root_url}/api/queue/v1/task/{task_id}/runs/0/artifacts"
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
