//! Counters and latency histograms of the bridge, rendered in the Prometheus
//! text format for `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the handler latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Inner {
    counters: BTreeMap<(&'static str, String), u64>,
    histograms: BTreeMap<String, Histogram>,
    parked: std::collections::VecDeque<Parked>,
    reflector: Option<ReflectorPass>,
}

/// How many of the latest parked messages [`Metrics::parked`] keeps.
pub const PARKED_KEPT: usize = 20;

/// A message the TC listener parked, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Parked {
    /// When, ms since the epoch.
    pub at: i64,
    /// The queue it was taken from.
    pub queue: String,
    /// Why it cannot be handled.
    pub reason: String,
}

/// The reflector's last pass.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReflectorPass {
    /// When it ended, ms since the epoch.
    pub ended: i64,
    /// How long it took, ms.
    pub took_ms: i64,
    /// The time between passes, ms.
    pub interval_ms: i64,
    /// Passes this process ran.
    pub passes: u64,
}

/// The bridge's metrics. Cheap to update from any task; share it in an `Arc`.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Help text of each counter family.
const HELP: &[(&str, &str)] = &[
    (
        "bbb_bridge_events_total",
        "Events handled, by type and outcome.",
    ),
    (
        "bbb_bridge_build_requests_total",
        "Build requests injected into the legacy master.",
    ),
    (
        "bbb_bridge_resolutions_total",
        "Task runs resolved by the bridge, by resolution.",
    ),
    (
        "bbb_bridge_logs_total",
        "Build logs attached as public/logs/live_backing.log, by what they hold: the master's text, a reference to its log URL, or a note that none could be fetched.",
    ),
    ("bbb_bridge_reclaims_total", "Reclaims, by outcome."),
    (
        "bbb_bridge_reflector_actions_total",
        "Reflector repairs, by action.",
    ),
    ("bbb_bridge_errors_total", "Errors, by where they happened."),
    (
        "bbb_bridge_parked_total",
        "Messages parked because they cannot be handled, by queue.",
    ),
    (
        "bbb_bridge_run_exceptions_total",
        "Bridged runs the queue resolved as exceptions, by reason.",
    ),
];

impl Metrics {
    /// Adds one to `family{labels}`; `labels` is the inside of the braces,
    /// e.g. `type="task-pending",outcome="injected"`.
    pub fn inc(&self, family: &'static str, labels: impl Into<String>) {
        self.add(family, labels, 1);
    }

    /// Adds `n` to `family{labels}`.
    pub fn add(&self, family: &'static str, labels: impl Into<String>, n: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *inner.counters.entry((family, labels.into())).or_default() += n;
    }

    /// Counts one handled event and its latency.
    pub fn event(&self, kind: &str, outcome: &str, elapsed: Duration) {
        self.inc(
            "bbb_bridge_events_total",
            format!("type=\"{kind}\",outcome=\"{outcome}\""),
        );
        let seconds = elapsed.as_secs_f64();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let h = inner.histograms.entry(kind.to_owned()).or_default();
        h.count += 1;
        h.sum += seconds;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
    }

    /// Counts a parked message (`bbb_bridge_parked_total{queue}`) and keeps
    /// it with its reason among the latest [`PARKED_KEPT`].
    pub fn parked(&self, queue: &str, reason: &str, at: i64) {
        self.inc("bbb_bridge_parked_total", format!("queue=\"{queue}\""));
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.parked.len() == PARKED_KEPT {
            inner.parked.pop_front();
        }
        inner.parked.push_back(Parked {
            at,
            queue: queue.to_owned(),
            reason: reason.to_owned(),
        });
    }

    /// The latest parked messages, oldest first.
    pub fn recent_parked(&self) -> Vec<Parked> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.parked.iter().cloned().collect()
    }

    /// Records a reflector pass that ended at `ended` (ms) after `took`.
    pub fn reflector_pass(&self, ended: i64, took: Duration, interval: Duration) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let passes = inner.reflector.as_ref().map_or(0, |p| p.passes) + 1;
        inner.reflector = Some(ReflectorPass {
            ended,
            took_ms: i64::try_from(took.as_millis()).unwrap_or(i64::MAX),
            interval_ms: i64::try_from(interval.as_millis()).unwrap_or(i64::MAX),
            passes,
        });
    }

    /// The reflector's last pass in this process, if it ran one.
    pub fn last_reflector_pass(&self) -> Option<ReflectorPass> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.reflector.clone()
    }

    /// Every counter of `family`: its labels and value.
    pub fn family(&self, family: &str) -> Vec<(String, u64)> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .counters
            .iter()
            .filter(|((f, _), _)| *f == family)
            .map(|((_, l), v)| (l.clone(), *v))
            .collect()
    }

    /// Counts an error at `place` (`tc-listener`, `bb-listener`, `reflector`, ...).
    pub fn error(&self, place: &str) {
        self.inc("bbb_bridge_errors_total", format!("where=\"{place}\""));
    }

    /// The value of one counter (0 if never set).
    pub fn get(&self, family: &str, labels: &str) -> u64 {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .counters
            .iter()
            .find(|((f, l), _)| *f == family && l == labels)
            .map(|(_, v)| *v)
            .unwrap_or(0)
    }

    /// The sum of every counter of a family.
    pub fn total(&self, family: &str) -> u64 {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .counters
            .iter()
            .filter(|((f, _), _)| *f == family)
            .map(|(_, v)| *v)
            .sum()
    }

    /// Renders every metric, plus `bbb_bridge_rows{state}` from `rows`, in
    /// the Prometheus text format.
    pub fn render(&self, rows: &[(String, i64)]) -> String {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (family, help) in HELP {
            let _ = writeln!(out, "# HELP {family} {help}");
            let _ = writeln!(out, "# TYPE {family} counter");
            for ((f, labels), value) in &inner.counters {
                if f == family {
                    if labels.is_empty() {
                        let _ = writeln!(out, "{family} {value}");
                    } else {
                        let _ = writeln!(out, "{family}{{{labels}}} {value}");
                    }
                }
            }
        }
        let name = "bbb_bridge_handler_seconds";
        let _ = writeln!(out, "# HELP {name} Time to handle one event, by type.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (kind, h) in &inner.histograms {
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{type=\"{kind}\",le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{type=\"{kind}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "{name}_sum{{type=\"{kind}\"}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{type=\"{kind}\"}} {}", h.count);
        }
        let _ = writeln!(
            out,
            "# HELP bbb_bridge_rows Rows of the mapping database, by state."
        );
        let _ = writeln!(out, "# TYPE bbb_bridge_rows gauge");
        for (state, count) in rows {
            let _ = writeln!(out, "bbb_bridge_rows{{state=\"{state}\"}} {count}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_rows() {
        let m = Metrics::default();
        m.event("task-pending", "injected", Duration::from_millis(3));
        m.event("task-pending", "duplicate", Duration::from_millis(30));
        m.error("tc-listener");
        m.inc("bbb_bridge_parked_total", "queue=\"q\"");
        let text = m.render(&[("running".to_owned(), 4)]);
        assert!(
            text.contains("bbb_bridge_events_total{type=\"task-pending\",outcome=\"injected\"} 1")
        );
        assert!(
            text.contains(
                "bbb_bridge_handler_seconds_bucket{type=\"task-pending\",le=\"0.005\"} 1"
            )
        );
        assert!(
            text.contains("bbb_bridge_handler_seconds_bucket{type=\"task-pending\",le=\"0.05\"} 2")
        );
        assert!(text.contains("bbb_bridge_handler_seconds_count{type=\"task-pending\"} 2"));
        assert!(text.contains("bbb_bridge_errors_total{where=\"tc-listener\"} 1"));
        assert!(text.contains("bbb_bridge_parked_total{queue=\"q\"} 1"));
        assert!(text.contains("bbb_bridge_rows{state=\"running\"} 4"));
        assert_eq!(m.total("bbb_bridge_events_total"), 2);
        assert_eq!(m.get("bbb_bridge_errors_total", "where=\"tc-listener\""), 1);
    }

    #[test]
    fn keeps_the_latest_parked_messages_and_the_last_reflector_pass() {
        let m = Metrics::default();
        for i in 0..(PARKED_KEPT as i64 + 3) {
            m.parked("q", &format!("bad {i}"), i);
        }
        let parked = m.recent_parked();
        assert_eq!(parked.len(), PARKED_KEPT);
        assert_eq!(parked[0].reason, "bad 3");
        assert_eq!(m.get("bbb_bridge_parked_total", "queue=\"q\""), 23);
        assert_eq!(m.last_reflector_pass(), None);
        m.reflector_pass(10, Duration::from_millis(5), Duration::from_secs(60));
        m.reflector_pass(20, Duration::from_millis(7), Duration::from_secs(60));
        let p = m.last_reflector_pass().unwrap();
        assert_eq!(
            (p.ended, p.took_ms, p.interval_ms, p.passes),
            (20, 7, 60_000, 2)
        );
        assert_eq!(
            m.family("bbb_bridge_parked_total"),
            vec![("queue=\"q\"".to_owned(), 23)]
        );
    }
}
