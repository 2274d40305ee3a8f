//! An internal error reaches the client as upstream's `InternalServerError`
//! body with an incident id and nothing of the database's text; the full error
//! is logged at ERROR under that incident id.

mod common;

use bbb_queue::testing::TestQueue;
use common::*;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, OnceLock};

/// Everything logged at ERROR in this test process, as JSON lines.
fn error_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::ERROR)
            .with_writer(move || Sink(sink.clone()))
            .init();
        log
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The logged events whose `incident.id` is `incident`.
fn logged(incident: &str) -> Vec<Value> {
    let log = error_log();
    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["incident.id"] == incident)
        .collect()
}

async fn a_database_failure_shows_only_an_incident_id(q: &TestQueue) {
    error_log();
    let queue = root(q);
    let id = new_task(&queue, "prov/incident", json!({})).await;
    sqlx::query("DROP TABLE artifacts")
        .execute(&q.running.queue.db.pool)
        .await
        .unwrap();

    // listArtifacts needs no credentials (the anonymous role may list).
    let r = reqwest::get(format!(
        "{}/api/queue/v1/task/{id}/runs/0/artifacts",
        q.root_url
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 500);
    let body: Value = r.json().await.unwrap();
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["code", "message", "requestInfo"], "{body}");
    assert_eq!(body["code"], "InternalServerError");
    assert_eq!(body["requestInfo"]["method"], "listArtifacts");
    assert_eq!(body["requestInfo"]["params"]["taskId"], id.as_str());
    let message = body["message"].as_str().unwrap();
    let incident = message
        .strip_prefix("Internal Server Error, incidentId ")
        .and_then(|m| m.split_once(".\n\n---\n\n"))
        .map(|(incident, _)| incident)
        .unwrap_or_else(|| panic!("no incident id in {message:?}"));
    uuid::Uuid::parse_str(incident).unwrap();
    assert!(
        message.contains("* errorCode:  InternalServerError"),
        "{message}"
    );
    assert!(message.contains("* statusCode: 500"), "{message}");
    let text = body.to_string().to_lowercase();
    for leak in [
        "database",
        "sqlite",
        "postgres",
        "no such table",
        "does not exist",
        "relation",
        "select",
        "from artifacts",
        "(code: ",
        "42p01",
    ] {
        assert!(!text.contains(leak), "{leak:?} in {body}");
    }

    // The log has the whole error under the same incident id.
    let events = logged(incident);
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event["level"], "ERROR");
    assert_eq!(event["fields"]["method"], "listArtifacts");
    let error = event["fields"]["error"].as_str().unwrap();
    assert!(
        error.starts_with("database: ")
            && error.contains("artifacts")
            && (error.contains("no such table") || error.contains("does not exist")),
        "{error}"
    );
}

bbb_testdb::on_both_backends!(bbb_queue::testing::TestQueue::on; a_database_failure_shows_only_an_incident_id);
