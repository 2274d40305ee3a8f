//! `exchange/hgpushes/v2` messages as a push source: when
//! `hgpushes_amqp_url` is set, bbb consumes `hgpushes_exchange` (every
//! routing key) through the durable queue `hgpushes_queue`. A
//! `changegroup.1` message names the repository (`repo_url`) and its new
//! pushlog pushes; bbb reads that repository's pushlog from its cursor
//! ([`Ci::poll_pushlog`]), so the pushlog gives the order and exactly-once,
//! and acknowledges the message only once the pushes are recorded. A read
//! that fails is recorded on the repository like a failed poll and tried
//! again after the same backoff, the message held meanwhile (returned to
//! the queue if the service stops).
//!
//! Other message types (`newrepo.1`, `obsolete.1`, and any added later) and
//! messages for repositories bbb does not follow are acknowledged and
//! logged: the exchange carries every repository of the server. A message
//! that is not JSON or not in the format is parked (`<queue>.parked`, its
//! reason in a header), never dropped silently.

use crate::store::Repository;
use crate::{Ci, Kind};
use bbb_pulse::{Binding, Bus, Delivery};
use serde_json::Value;
use std::time::Duration;
use tokio::sync::watch;

/// Messages taken from the queue at a time.
const PREFETCH: u16 = 4;

/// What an `exchange/hgpushes/v2` message asks of bbb.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HgPushes {
    /// A `changegroup.1`: the repository's URL and the pushlog ids of its
    /// new pushes (possibly none).
    Pushes {
        /// `data.repo_url`.
        repo_url: String,
        /// `data.pushlog_pushes[].pushid`.
        push_ids: Vec<i64>,
    },
    /// Another type, nothing to do: the type.
    Other(String),
}

/// Read a message body of `exchange/hgpushes/v2` (`{"payload": {"type",
/// "data"}}`); the error says what is wrong with it.
pub fn parse(body: &Value) -> Result<HgPushes, String> {
    let payload = body
        .get("payload")
        .filter(|p| p.is_object())
        .ok_or("the message has no payload object")?;
    let kind = payload
        .get("type")
        .and_then(Value::as_str)
        .ok_or("the payload has no type")?;
    if kind != "changegroup.1" {
        return Ok(HgPushes::Other(kind.to_owned()));
    }
    let data = payload
        .get("data")
        .filter(|d| d.is_object())
        .ok_or("the changegroup.1 message has no data object")?;
    let repo_url = data
        .get("repo_url")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or("the changegroup.1 message has no repo_url")?;
    let pushes = match data.get("pushlog_pushes") {
        Some(Value::Array(a)) => a.iter().collect::<Vec<_>>(),
        Some(o @ Value::Object(_)) => vec![o],
        _ => return Err("the changegroup.1 message has no pushlog_pushes list".into()),
    };
    let push_ids = pushes
        .iter()
        .map(|p| {
            p.get("pushid")
                .and_then(Value::as_i64)
                .ok_or_else(|| format!("a pushlog_pushes entry has no integer pushid: {p}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HgPushes::Pushes {
        repo_url: repo_url.to_owned(),
        push_ids,
    })
}

/// Whether `url` names `repo` (its `url` or `clone_url`, a trailing `/`
/// aside).
pub fn names(repo: &Repository, url: &str) -> bool {
    let url = url.trim_end_matches('/');
    repo.url.trim_end_matches('/') == url
        || repo
            .clone_url
            .as_deref()
            .is_some_and(|c| c.trim_end_matches('/') == url)
}

/// Consume the configured exchange until `stop` turns true (nothing when no
/// broker is configured).
pub async fn run(ci: Ci, mut stop: watch::Receiver<bool>) {
    let Some(url) = ci.cfg.hgpushes_amqp_url.clone() else {
        return;
    };
    let bindings = [Binding::new(ci.cfg.hgpushes_exchange.clone(), "#")];
    let mut failures = 0;
    let (bus, mut consumer) = loop {
        let attempt = async {
            let bus = Bus::connect(Some(url.expose())).await?;
            let consumer = bus
                .consume(&ci.cfg.hgpushes_queue, &bindings, PREFETCH)
                .await?;
            Ok::<_, bbb_pulse::BusError>((bus, consumer))
        };
        match attempt.await {
            Ok(c) => break c,
            Err(e) => {
                failures += 1;
                let wait = ci.backoff(failures);
                tracing::warn!(
                    amqp.url = %url, error = %e, retry_in_ms = wait,
                    "consuming the Mercurial push messages failed"
                );
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    };
    tracing::info!(
        exchange = %ci.cfg.hgpushes_exchange, queue = %ci.cfg.hgpushes_queue,
        "consuming Mercurial push messages"
    );
    loop {
        let delivery = tokio::select! {
            d = consumer.next() => d,
            _ = stop.changed() => break,
        };
        let Some(delivery) = delivery else { break };
        handle(&ci, delivery, &mut stop).await;
        if *stop.borrow() {
            break;
        }
    }
    bus.close().await;
}

/// Settle one message: park it when malformed, acknowledge it once its
/// repository's pushes are recorded (or when it asks nothing of bbb).
async fn handle(ci: &Ci, delivery: Delivery, stop: &mut watch::Receiver<bool>) {
    let parsed = delivery
        .json::<Value>()
        .map_err(|e| format!("not JSON: {e}"))
        .and_then(|v| parse(&v));
    let (repo_url, push_ids) = match parsed {
        Err(reason) => {
            let reason = format!("not an exchange/hgpushes/v2 message: {reason}");
            if let Err(e) = delivery.park(&reason).await {
                tracing::warn!(error = %e, "parking a Mercurial push message failed");
            }
            return;
        }
        Ok(HgPushes::Other(kind)) => {
            tracing::debug!(message.type = %kind, "Mercurial message of another type ignored");
            settle(delivery.ack().await);
            return;
        }
        Ok(HgPushes::Pushes { repo_url, push_ids }) => (repo_url, push_ids),
    };
    let mut failures = 0;
    loop {
        let outcome = match ci.store.repositories().await {
            Err(e) => Err(format!("reading the repositories: {e}")),
            Ok(repos) => {
                match repos
                    .into_iter()
                    .find(|r| r.kind == Kind::Hg && names(r, &repo_url))
                {
                    None => {
                        tracing::info!(
                            repo_url = %repo_url,
                            "a push message for a repository bbb does not follow; ignored"
                        );
                        settle(delivery.ack().await);
                        return;
                    }
                    Some(repo) => {
                        let start = push_ids.iter().min().map(|id| id - 1);
                        let result = ci.poll_pushlog(&repo, "pulse", start).await;
                        let now = ci.clock.now_ms();
                        let error = result.as_ref().err().map(String::as_str);
                        match ci.store.poll_ended(&repo.project, now, error).await {
                            Ok(n) => failures = n,
                            Err(e) => tracing::warn!(
                                ci.project = %repo.project, error = %e,
                                "recording a poll failed"
                            ),
                        }
                        result.map(|n| (repo.project, n))
                    }
                }
            }
        };
        match outcome {
            Ok((project, n)) => {
                tracing::info!(
                    ci.project = %project, recorded = n, pushlog.ids = ?push_ids,
                    "push message handled"
                );
                settle(delivery.ack().await);
                return;
            }
            Err(e) => {
                let wait = ci.backoff(failures.max(1));
                tracing::warn!(
                    repo_url = %repo_url, error = %e, retry_in_ms = wait,
                    "reading the pushlog a message names failed"
                );
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                    // Unsettled, the message goes back to the queue.
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

fn settle(result: Result<(), bbb_pulse::BusError>) {
    if let Err(e) = result {
        tracing::warn!(error = %e, "acknowledging a Mercurial push message failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_read() {
        let m = json!({"payload": {"type": "changegroup.1", "data": {
            "repo_url": "https://hg.example/r", "heads": ["abc"], "source": "serve",
            "pushlog_pushes": [{"time": 1, "pushid": 7, "user": "u",
                "push_json_url": "x", "push_full_json_url": "y"}]}}});
        assert_eq!(
            parse(&m).unwrap(),
            HgPushes::Pushes {
                repo_url: "https://hg.example/r".into(),
                push_ids: vec![7]
            }
        );
        let other = json!({"payload": {"type": "newrepo.1", "data": {"repo_url": "u"}}});
        assert_eq!(parse(&other).unwrap(), HgPushes::Other("newrepo.1".into()));
        for bad in [
            json!({}),
            json!({"payload": {"data": {}}}),
            json!({"payload": {"type": "changegroup.1"}}),
            json!({"payload": {"type": "changegroup.1", "data": {"pushlog_pushes": []}}}),
            json!({"payload": {"type": "changegroup.1", "data": {"repo_url": "u"}}}),
            json!({"payload": {"type": "changegroup.1", "data": {"repo_url": "u",
                "pushlog_pushes": [{"pushid": "seven"}]}}}),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
    }
}
