//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use bbb_buildbot::{
    BuildRequestSpec, BuildResult, LegacyError, LegacyEvent, LegacyEventStream, LegacyMaster,
    SourceStamp,
};
use futures::StreamExt;

/// A spec for `task_id` on `builder` with a few properties.
pub fn spec(task_id: &str, builder: &str) -> BuildRequestSpec {
    let mut properties = BTreeMap::new();
    properties.insert("product".to_owned(), serde_json::json!("firefox"));
    BuildRequestSpec {
        task_id: task_id.to_owned(),
        run_id: 0,
        buildername: builder.to_owned(),
        properties,
        sourcestamp: SourceStamp {
            branch: Some("https://hg.mozilla.org/integration/mozilla-inbound/".to_owned()),
            revision: Some("abcdef0123456789".to_owned()),
            repository: "https://hg.mozilla.org/integration/mozilla-inbound".to_owned(),
            project: "mozilla-inbound".to_owned(),
        },
        priority: 0,
        submitted_at: 1_700_000_000,
    }
}

/// Reads events until one matches, failing after `timeout`. Returns the
/// match and everything read before it.
pub async fn wait_for(
    stream: &mut LegacyEventStream,
    timeout: Duration,
    mut matches: impl FnMut(&LegacyEvent) -> bool,
) -> (LegacyEvent, Vec<LegacyEvent>) {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let event = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no matching event within {timeout:?}; saw {seen:#?}"))
            .expect("event stream ended");
        if matches(&event) {
            return (event, seen);
        }
        seen.push(event);
    }
}

/// Checks that `event` completes a request with `results`, claimed by a
/// build (or not, `claimed: false`).
pub fn assert_completed(event: &LegacyEvent, results: BuildResult, claimed: bool) {
    assert!(
        matches!(event, LegacyEvent::RequestCompleted { results: r, claimed: c, .. } if *r == results && *c == claimed),
        "{event:?}"
    );
}

/// Installs a test subscriber once (RUST_LOG controls it).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Submits a request for `task_id` on `builder`, which the master does not
/// have, and checks that it is refused as an unknown builder and that no
/// request was stored.
pub async fn assert_unknown_builder_refused(
    master: &impl LegacyMaster,
    task_id: &str,
    builder: &str,
) {
    let error = master
        .submit(&spec(task_id, builder))
        .await
        .expect_err("an unknown builder is refused");
    assert!(
        matches!(&error, LegacyError::UnknownBuilder(name) if name == builder),
        "{error:?}"
    );
    assert!(
        master
            .find_requests_for_task(task_id)
            .await
            .unwrap()
            .is_empty()
    );
}
