//! The process's health snapshot: its in-process figures (the counters of
//! [`Metrics`], the reflector's last pass, the latest parked messages),
//! written as one row per master and instance into the mapping database's
//! `bridge_health` table every few seconds, where the web UI's health page
//! reads every process of every master (they need not run where the web
//! UI runs).

use std::collections::BTreeMap;

use bbb_state::HealthRow;
use serde::{Deserialize, Serialize};

use crate::metrics::{Metrics, Parked, ReflectorPass};
use crate::{Bridge, BridgeResult};

/// How long a process's snapshot is kept after its last write (a process
/// gone that long is not shown any more).
pub const HEALTH_RETENTION_MS: i64 = 24 * 3600 * 1000;

/// One process's figures since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HealthSnapshot {
    /// Build requests injected into the master.
    pub injected: u64,
    /// Task runs the bridge resolved.
    pub resolved: u64,
    /// Claims renewed, by outcome (`ok`, `refused`, `not-running`, `error`).
    pub reclaims: BTreeMap<String, u64>,
    /// Bridged runs the queue resolved `claim-expired`.
    pub claim_expired: u64,
    /// Bridged runs the queue resolved `deadline-exceeded`.
    pub deadline_exceeded: u64,
    /// Rows past their task's deadline the reflector settled.
    pub past_deadline: u64,
    /// Errors, all places together.
    pub errors: u64,
    /// Messages parked.
    pub parked_total: u64,
    /// The latest parked messages and why, oldest first.
    pub parked: Vec<Parked>,
    /// The reflector's last pass, if this process runs the reflector.
    pub reflector: Option<ReflectorPass>,
}

/// The value inside the quotes of `name="value"` in a label set.
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &labels[start..];
    Some(&rest[..rest.find('"')?])
}

impl HealthSnapshot {
    /// The figures `metrics` hold now.
    pub fn of(metrics: &Metrics) -> HealthSnapshot {
        let exceptions = metrics.family("bbb_bridge_run_exceptions_total");
        let exception = |reason: &str| {
            exceptions
                .iter()
                .filter(|(l, _)| label(l, "reason") == Some(reason))
                .map(|(_, n)| n)
                .sum()
        };
        HealthSnapshot {
            injected: metrics.total("bbb_bridge_build_requests_total"),
            resolved: metrics.total("bbb_bridge_resolutions_total"),
            reclaims: metrics
                .family("bbb_bridge_reclaims_total")
                .into_iter()
                .filter_map(|(l, n)| Some((label(&l, "outcome")?.to_owned(), n)))
                .collect(),
            claim_expired: exception("claim-expired"),
            deadline_exceeded: exception("deadline-exceeded"),
            past_deadline: metrics.get("bbb_bridge_reflector_actions_total", "action=\"deadline\""),
            errors: metrics.total("bbb_bridge_errors_total"),
            parked_total: metrics.total("bbb_bridge_parked_total"),
            parked: metrics.recent_parked(),
            reflector: metrics.last_reflector_pass(),
        }
    }
}

impl Bridge {
    /// Write this process's snapshot (its row of `bridge_health`, replaced:
    /// writing it twice leaves one row); `started` is when the process
    /// started (ms). With `purge`, snapshots of processes silent for
    /// [`HEALTH_RETENTION_MS`] are deleted too.
    pub async fn write_health(&self, started: i64, purge: bool) -> BridgeResult<()> {
        let now = self.now();
        let snapshot = HealthSnapshot::of(&self.metrics);
        self.state
            .put_health(&HealthRow {
                master: self.settings.master.clone(),
                instance: self.settings.instance.clone(),
                started,
                updated: now,
                snapshot: serde_json::to_string(&snapshot).expect("serialisable"),
            })
            .await?;
        if purge {
            self.state
                .purge_health_before(now - HEALTH_RETENTION_MS)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_snapshot_takes_the_figures_the_health_page_shows() {
        let m = Metrics::default();
        m.inc("bbb_bridge_reclaims_total", "outcome=\"ok\"");
        m.inc("bbb_bridge_reclaims_total", "outcome=\"ok\"");
        m.inc("bbb_bridge_reclaims_total", "outcome=\"refused\"");
        m.inc(
            "bbb_bridge_run_exceptions_total",
            "reason=\"claim-expired\"",
        );
        m.inc(
            "bbb_bridge_run_exceptions_total",
            "reason=\"deadline-exceeded\"",
        );
        m.inc("bbb_bridge_run_exceptions_total", "reason=\"canceled\"");
        m.add(
            "bbb_bridge_reflector_actions_total",
            "action=\"deadline\"",
            3,
        );
        m.inc("bbb_bridge_build_requests_total", "");
        m.parked("bbb/tc", "the message has no status", 5);
        m.reflector_pass(9, Duration::from_millis(4), Duration::from_secs(60));
        let s = HealthSnapshot::of(&m);
        assert_eq!(s.reclaims["ok"], 2);
        assert_eq!(s.reclaims["refused"], 1);
        assert_eq!(
            (s.claim_expired, s.deadline_exceeded, s.past_deadline),
            (1, 1, 3)
        );
        assert_eq!((s.injected, s.parked_total, s.errors), (1, 1, 0));
        assert_eq!(s.parked[0].reason, "the message has no status");
        assert_eq!(s.reflector.as_ref().map(|r| r.took_ms), Some(4));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<HealthSnapshot>(&json).unwrap(), s);
        assert_eq!(
            serde_json::from_str::<HealthSnapshot>("{}").unwrap(),
            HealthSnapshot::default()
        );
    }
}
