//! See the crate README.
#![doc = include_str!("../README.md")]

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Milliseconds since the Unix epoch: how every timestamp is stored.
pub type Millis = i64;

/// The clock every decision reads. The system clock plus an offset that tests may
/// advance, so deadline and claim-expiry logic can be exercised without sleeping
/// for minutes; or, for tests that compare times exactly, a clock stopped at a
/// given time that moves only when advanced.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// Added to the system time; for a stopped clock, the time itself.
    offset_ms: Arc<AtomicI64>,
    stopped: bool,
}

impl Clock {
    /// The real time.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock stopped at `ms` (milliseconds since the epoch): it reads `ms`
    /// until [`Clock::advance`] moves it.
    pub fn stopped_at(ms: Millis) -> Self {
        Clock {
            offset_ms: Arc::new(AtomicI64::new(ms)),
            stopped: true,
        }
    }

    /// Now, in milliseconds since the epoch.
    pub fn now_ms(&self) -> Millis {
        let offset = self.offset_ms.load(Ordering::Relaxed);
        if self.stopped {
            offset
        } else {
            Utc::now().timestamp_millis() + offset
        }
    }

    /// Now, in whole seconds since the epoch (as Buildbot stores times).
    pub fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// Now, as a date.
    pub fn now(&self) -> DateTime<Utc> {
        from_ms(self.now_ms())
    }

    /// Move this clock (and every clone of it) forward.
    pub fn advance(&self, by: std::time::Duration) {
        self.offset_ms
            .fetch_add(by.as_millis() as i64, Ordering::Relaxed);
    }
}

/// A millisecond timestamp as a date.
pub fn from_ms(ms: Millis) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Format like JavaScript's `Date.toJSON()`: `2026-01-02T03:04:05.678Z`.
pub fn fmt_ms(ms: Millis) -> String {
    from_ms(ms).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parse an RFC 3339 date (any precision, any offset) to milliseconds, truncating
/// sub-millisecond digits like JavaScript does.
pub fn parse_ms(s: &str) -> Option<Millis> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc).timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_javascript() {
        let ms = parse_ms("2026-01-02T03:04:05.6789+01:00").unwrap();
        assert_eq!(fmt_ms(ms), "2026-01-02T02:04:05.678Z");
        assert_eq!(
            fmt_ms(parse_ms("2026-01-02T03:04:05Z").unwrap()),
            "2026-01-02T03:04:05.000Z"
        );
        assert!(parse_ms("yesterday").is_none());
    }

    #[test]
    fn a_stopped_clock_moves_only_when_advanced() {
        let c = Clock::stopped_at(1_700_000_000_500);
        let d = c.clone();
        assert_eq!(d.now_ms(), 1_700_000_000_500);
        assert_eq!(d.now_secs(), 1_700_000_000);
        assert_eq!(fmt_ms(d.now_ms()), "2023-11-14T22:13:20.500Z");
        c.advance(std::time::Duration::from_millis(600));
        assert_eq!(d.now_ms(), 1_700_000_001_100);
        assert_eq!(d.now_secs(), 1_700_000_001);
        assert_eq!(Clock::stopped_at(-1).now_secs(), -1);
    }

    #[test]
    fn clock_advances_for_all_clones() {
        let c = Clock::system();
        let d = c.clone();
        let before = d.now_ms();
        c.advance(std::time::Duration::from_secs(3600));
        assert!(d.now_ms() - before >= 3_600_000);
    }
}
