//! What every adapter shares: the options of its event sources (Pulse and
//! polling), the buildset reason that marks bridged requests, the branch
//! rule, and the wall clock in epoch seconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::messages::DEFAULT_BUILD_EXCHANGE;

/// The reason text of every buildset bbb creates. Treeherder recognises
/// bridged jobs by it and reads the task id from it: never change it.
pub const REASON_PREFIX: &str = "Created by BBB for task ";

/// Events from Pulse: Mozilla's `exchange/build` messages.
#[derive(Clone, Debug)]
pub struct PulseOptions {
    /// The bus the masters publish to.
    pub bus: bbb_pulse::Bus,
    /// The exchange ([`DEFAULT_BUILD_EXCHANGE`] unless the masters use another).
    pub exchange: String,
    /// The durable queue to consume from. Every bridge instance uses the same
    /// name, so the instances share (compete for) the messages.
    pub queue: String,
    /// Deliveries held unsettled at once.
    pub prefetch: u16,
}

impl PulseOptions {
    /// Defaults: exchange `exchange/build`, queue `queue/bbb/buildbot-builds`,
    /// prefetch 32.
    pub fn new(bus: bbb_pulse::Bus) -> Self {
        Self {
            bus,
            exchange: DEFAULT_BUILD_EXCHANGE.to_owned(),
            queue: "queue/bbb/buildbot-builds".to_owned(),
            prefetch: 32,
        }
    }
}

/// Events from polling the scheduler DB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollOptions {
    /// Time between polls.
    pub interval: Duration,
    /// How far back the first poll looks: changes at most this old when the
    /// stream starts are reported again, so a restarted consumer sees what
    /// happened while it was down.
    pub lookback: Duration,
}

impl Default for PollOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            lookback: Duration::from_secs(3600),
        }
    }
}

/// The reason of the buildset bbb creates for `task_id`.
pub(crate) fn buildset_reason(task_id: &str) -> String {
    format!("{REASON_PREFIX}{task_id}")
}

/// The current time in epoch seconds.
pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Mozilla's branch rule: strip trailing slashes; of a URL keep the path
/// without its surrounding slashes.
pub(crate) fn normalize_branch(branch: &str) -> String {
    let branch = branch.trim_end_matches('/');
    if branch.contains("://")
        && let Ok(url) = url::Url::parse(branch)
    {
        return url.path().trim_matches('/').to_owned();
    }
    branch.to_owned()
}

/// `base` with `segments` appended as path segments (each percent-encoded),
/// or [`LegacyError::InvalidUrl`](crate::LegacyError::InvalidUrl) naming the
/// base with its password masked.
pub(crate) fn url_with_segments(base: &str, segments: &[&str]) -> crate::Result<url::Url> {
    let invalid = |reason: String| crate::LegacyError::InvalidUrl {
        url: bbb_secret::mask_url(base),
        reason,
    };
    let mut url = url::Url::parse(base).map_err(|e| invalid(e.to_string()))?;
    url.path_segments_mut()
        .map_err(|()| invalid("cannot be a base URL".to_owned()))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::normalize_branch;

    #[test]
    fn branches_are_normalized_like_mozilla() {
        assert_eq!(
            normalize_branch("https://hg.mozilla.org/integration/mozilla-inbound/"),
            "integration/mozilla-inbound"
        );
        assert_eq!(
            normalize_branch("releases/mozilla-beta/"),
            "releases/mozilla-beta"
        );
        assert_eq!(normalize_branch("try/"), "try");
        assert_eq!(normalize_branch("https://host"), "");
    }
}
