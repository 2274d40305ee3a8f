//! Helpers shared by the worker's integration tests: reading a live log as
//! it streams.
#![allow(dead_code)]

use std::time::Duration;

/// How long a live log may stay silent before a test fails.
const STALL: Duration = Duration::from_secs(30);

/// Reads the streamed log `resp` into `seen` until it holds `text`; the log
/// must not end before.
pub async fn read_until(resp: &mut reqwest_tc::Response, seen: &mut Vec<u8>, text: &str) {
    while !String::from_utf8_lossy(seen).contains(text) {
        let chunk = next_chunk(resp)
            .await
            .unwrap_or_else(|| panic!("the live log ended before {text:?}"));
        seen.extend_from_slice(&chunk);
    }
}

/// Reads the rest of the streamed log `resp` into `seen`.
pub async fn read_to_end(resp: &mut reqwest_tc::Response, seen: &mut Vec<u8>) {
    while let Some(chunk) = next_chunk(resp).await {
        seen.extend_from_slice(&chunk);
    }
}

/// The next chunk of `resp`, `None` at its end.
async fn next_chunk(resp: &mut reqwest_tc::Response) -> Option<bytes::Bytes> {
    tokio::time::timeout(STALL, resp.chunk())
        .await
        .expect("live log stalled")
        .expect("read the live log")
}
