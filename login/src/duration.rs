//! Upstream's relative times (`taskcluster.fromNow`): `3 days`, `1 year`,
//! `15 minutes`, `- 15 min`, as in the registered clients' `maxExpires` and
//! the `expires` parameter of the OAuth2 authorization request.

use chrono::{DateTime, Months, TimeDelta, Utc};
use regex::Regex;
use std::sync::LazyLock;

/// Upstream's expression (the TaskCluster clients' `fromNow`).
static OFFSET: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(\s*(-|\+))?",
        r"(\s*(\d+)\s*y((ears?)|r)?)?",
        r"(\s*(\d+)\s*mo(nths?)?)?",
        r"(\s*(\d+)\s*w((eeks?)|k)?)?",
        r"(\s*(\d+)\s*d(ays?)?)?",
        r"(\s*(\d+)\s*h((ours?)|r)?)?",
        r"(\s*(\d+)\s*m(in(utes?)?)?)?",
        r"(\s*(\d+)\s*s(ec(onds?)?)?)?",
        r"\s*$"
    ))
    .expect("the offset expression compiles")
});

/// A parsed relative time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offset {
    negative: bool,
    months: u32,
    rest: TimeDelta,
}

impl Offset {
    /// `base` moved by the offset (years and months by the calendar, as
    /// upstream does).
    pub fn from(&self, base: DateTime<Utc>) -> DateTime<Utc> {
        let months = Months::new(self.months);
        if self.negative {
            base.checked_sub_months(months).unwrap_or(base) - self.rest
        } else {
            base.checked_add_months(months).unwrap_or(base) + self.rest
        }
    }
}

/// Parses `text` as upstream's `fromNow` does; an expression it would refuse
/// is an error.
pub fn from_now_offset(text: &str) -> Result<Offset, String> {
    let caps = OFFSET
        .captures(text)
        .ok_or_else(|| format!("{text:?} is not a relative time such as `3 days`"))?;
    let n = |i: usize| -> Result<i64, String> {
        caps.get(i)
            .map_or(Ok(0), |m| m.as_str().parse::<i64>())
            .map_err(|_| format!("{text:?}: a number is too large"))
    };
    let (years, months) = (n(4)?, n(8)?);
    let months = u32::try_from(years * 12 + months).map_err(|_| format!("{text:?}: too far"))?;
    let secs = n(11)? * 7 * 86_400 + n(15)? * 86_400 + n(18)? * 3600 + n(22)? * 60 + n(26)?;
    Ok(Offset {
        negative: caps.get(2).is_some_and(|m| m.as_str() == "-"),
        months,
        rest: TimeDelta::try_seconds(secs).ok_or_else(|| format!("{text:?}: too far"))?,
    })
}

/// `now` moved by `text` (upstream's `fromNow(text)`).
pub fn from_now(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    Ok(from_now_offset(text)?.from(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().into()
    }

    #[test]
    fn upstream_expressions() {
        let now = at("2026-01-31T12:00:00Z");
        for (text, expected) in [
            ("3 days", "2026-02-03T12:00:00Z"),
            ("1 year", "2027-01-31T12:00:00Z"),
            ("15 minutes", "2026-01-31T12:15:00Z"),
            ("- 15 min", "2026-01-31T11:45:00Z"),
            ("2w 1d 3h 4m 5s", "2026-02-15T15:04:05Z"),
            ("10 seconds", "2026-01-31T12:00:10Z"),
            ("", "2026-01-31T12:00:00Z"),
        ] {
            assert_eq!(from_now(text, now).unwrap(), at(expected), "{text}");
        }
        for bad in ["soon", "3 fortnights", "3 days ago"] {
            assert!(from_now(bad, now).is_err(), "{bad}");
        }
    }
}
