//! The task-group inspector's reads (`ops/inspect.rs`): a group's counts by
//! state, each task's `metadata.name` kept in the `name` column (written when
//! the task is created, backfilled by the migration for tasks made before
//! it) and the name filter reading that column, any case, its text matched
//! literally; on SQLite and PostgreSQL.

mod common;

use bbb_queue::ops::inspect::GroupFilter;
use bbb_queue::testing::TestQueue;
use bbb_tcvalues::TaskState;
use bbb_testdb::{PgDatabase, TempDir, on_both_backends};
use common::*;
use serde_json::json;
use sqlx::Row;

const TQ: &str = "prov/inspect";

on_both_backends!(
    bbb_queue::testing::TestQueue::on;
    names_are_written_when_tasks_are_created_and_filtered,
    counts_by_state,
);

/// The names of the tasks the filter `name` lets through, in taskId order.
async fn filtered(q: &TestQueue, group: &str, name: &str) -> Vec<String> {
    let filter = GroupFilter {
        state: None,
        name: Some(name.to_owned()),
    };
    let tasks = q
        .running
        .queue
        .group_tasks_filtered(group, &filter, "", 100)
        .await
        .unwrap();
    let mut names: Vec<String> = tasks.into_iter().map(|t| t.def.metadata.name).collect();
    names.sort();
    names
}

fn metadata(name: &str) -> serde_json::Value {
    json!({"name": name, "description": "d", "owner": "tests@example.com", "source": "https://example.com/tests"})
}

async fn names_are_written_when_tasks_are_created_and_filtered(q: &TestQueue) {
    let queue = root(q);
    let group = slug();
    let names = [
        "Build Linux",
        "test 50%_done",
        "test 500 done",
        "a_b",
        "axb",
        r"path\to",
    ];
    let mut ids = Vec::new();
    for name in names {
        let id = new_task(
            &queue,
            TQ,
            json!({"taskGroupId": group, "metadata": metadata(name)}),
        )
        .await;
        ids.push((id, name));
    }
    // Each task's name is in its column.
    let rows = sqlx::query("SELECT task_id, name FROM tasks WHERE task_group_id = $1")
        .bind(&group)
        .fetch_all(&q.running.queue.db.pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), names.len());
    for row in rows {
        let id: String = row.get("task_id");
        let name: String = row.get("name");
        let expected = ids.iter().find(|(i, _)| *i == id).unwrap().1;
        assert_eq!(name, expected);
    }

    // Any case; `%`, `_` and `\` match themselves only.
    assert_eq!(filtered(q, &group, "build").await, ["Build Linux"]);
    assert_eq!(filtered(q, &group, "LINUX").await, ["Build Linux"]);
    assert_eq!(filtered(q, &group, "50%").await, ["test 50%_done"]);
    assert_eq!(filtered(q, &group, "%_").await, ["test 50%_done"]);
    assert_eq!(filtered(q, &group, "a_b").await, ["a_b"]);
    assert_eq!(filtered(q, &group, r"h\t").await, [r"path\to"]);
    assert_eq!(
        filtered(q, &group, "test").await,
        ["test 50%_done", "test 500 done"]
    );
    assert!(filtered(q, &group, "nothing").await.is_empty());

    // The filter reads the column, not the definition.
    sqlx::query("UPDATE tasks SET name = 'renamed in its column' WHERE task_id = $1")
        .bind(&ids[4].0)
        .execute(&q.running.queue.db.pool)
        .await
        .unwrap();
    assert_eq!(filtered(q, &group, "renamed").await, ["axb"]);
    assert!(filtered(q, &group, "axb").await.is_empty());

    // State and name together, after a taskId.
    let filter = GroupFilter {
        state: Some(TaskState::Pending),
        name: Some("TEST".into()),
    };
    let mut sorted: Vec<&str> = ids
        .iter()
        .filter(|(_, n)| n.starts_with("test"))
        .map(|(i, _)| i.as_str())
        .collect();
    sorted.sort();
    let after_first = q
        .running
        .queue
        .group_tasks_filtered(&group, &filter, sorted[0], 100)
        .await
        .unwrap();
    assert_eq!(
        after_first
            .iter()
            .map(|t| t.task_id.as_str())
            .collect::<Vec<_>>(),
        [sorted[1]]
    );
}

async fn counts_by_state(q: &TestQueue) {
    let queue = root(q);
    let group = slug();
    let first = new_task(&queue, TQ, json!({"taskGroupId": group})).await;
    for _ in 0..3 {
        new_task(
            &queue,
            TQ,
            json!({"taskGroupId": group, "dependencies": [first]}),
        )
        .await;
    }
    // Another group's tasks are not counted.
    new_task(&queue, "prov/inspect-other", json!({})).await;
    claim_one(&queue, TQ, "w1").await;
    assert_eq!(
        q.running.queue.group_state_counts(&group).await.unwrap(),
        [("running".to_owned(), 1), ("unscheduled".to_owned(), 3)]
    );
    assert!(
        q.running
            .queue
            .group_state_counts(&slug())
            .await
            .unwrap()
            .is_empty()
    );
}

/// The migration that adds the `name` column fills it from the definitions
/// of the tasks already stored (an empty name for a definition without one).
async fn migrating_fills_in_names(url: &str) {
    let (pool, backend) = bbb_sqlstore::connect(url, 2).await.unwrap().unwrap();
    let mut before = match backend {
        bbb_sqlstore::Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
        bbb_sqlstore::Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
    };
    let names_at = before
        .migrations
        .iter()
        .position(|m| m.description.contains("task names"))
        .expect("the migration of task names");
    before.migrations = before.migrations[..names_at].to_vec().into();
    before.run(&pool).await.unwrap();
    let tasks = [
        ("A", json!({"metadata": {"name": "Build <Linux> \"x\""}})),
        ("B", json!({"metadata": {"name": "ünïcode 名前"}})),
        ("C", json!({"payload": {}})),
    ];
    for (id, def) in &tasks {
        sqlx::query(
            "INSERT INTO tasks (task_id, task_group_id, scheduler_id, project_id, task_queue_id, priority, \
             deadline, expires, retries_left, state, open, definition, runs) \
             VALUES ($1, 'g', '-', 'none', $2, 1, 0, 0, 0, 'pending', 1, $3, '[]')",
        )
        .bind(*id)
        .bind(TQ)
        .bind(def.to_string())
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let db = bbb_queue::db::Db::connect(url, 2).await.unwrap();
    db.migrate().await.unwrap();
    let rows = sqlx::query("SELECT task_id, name FROM tasks ORDER BY task_id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let got: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.get("task_id"), r.get("name")))
        .collect();
    let expected = [
        ("A", "Build <Linux> \"x\""),
        ("B", "ünïcode 名前"),
        ("C", ""),
    ]
    .map(|(i, n)| (i.to_owned(), n.to_owned()));
    assert_eq!(got, expected);
    db.pool.close().await;
}

#[tokio::test]
async fn migrating_fills_in_names_sqlite() {
    let dir = TempDir::new("bbb-queue-migration");
    migrating_fills_in_names(&format!("sqlite://{}/q.sqlite", dir.0.display())).await;
}

#[tokio::test]
async fn migrating_fills_in_names_postgres() {
    let db = PgDatabase::create("bbbq").await.unwrap();
    migrating_fills_in_names(db.url()).await;
}
