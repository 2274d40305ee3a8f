//! Schedules: a hook's list of cron patterns and the next time they name.
//!
//! Patterns have five or six fields (seconds first, optional), read in UTC,
//! with ranges, steps, lists, month and weekday names, `L`, `W`, `#` and the
//! `@daily`-style nicknames.

use bbb_clock::{Millis, from_ms};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// The next date of a hook without a schedule: far in the future,
/// `4000-02-01T00:00:00.000Z`, as upstream.
pub const NEVER_MS: Millis = 64_063_267_200_000;

/// Parse one pattern; the error says what is wrong with it.
pub fn parse(pattern: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(pattern)
        .map_err(|e| e.to_string())
}

/// The earliest time after `reference` (strictly) that one of `schedule`'s
/// patterns names, or [`NEVER_MS`] for an empty schedule (or patterns that
/// name no time at all).
pub fn next_date(schedule: &[String], reference: Millis) -> Millis {
    // Patterns name whole seconds: search from the second `reference` is in.
    let from = from_ms(reference - reference.rem_euclid(1000));
    schedule
        .iter()
        .filter_map(|p| parse(p).ok())
        .filter_map(|c| c.find_next_occurrence(&from, false).ok())
        .map(|d| d.timestamp_millis())
        .min()
        .unwrap_or(NEVER_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bbb_clock::{fmt_ms, parse_ms};

    fn next(schedule: &[&str], at: &str) -> String {
        let schedule: Vec<String> = schedule.iter().map(|s| s.to_string()).collect();
        fmt_ms(next_date(&schedule, parse_ms(at).unwrap()))
    }

    #[test]
    fn six_fields_seconds_first_in_utc() {
        assert_eq!(
            next(&["0 0 3 * * *"], "2026-05-01T10:00:00.000Z"),
            "2026-05-02T03:00:00.000Z"
        );
        assert_eq!(
            next(&["* * * * * *"], "2026-05-01T10:00:00.000Z"),
            "2026-05-01T10:00:01.000Z"
        );
        assert_eq!(
            next(&["* * * * * *"], "2026-05-01T10:00:00.400Z"),
            "2026-05-01T10:00:01.000Z"
        );
        assert_eq!(
            next(&["*/15 * * * *"], "2026-05-01T10:01:00.000Z"),
            "2026-05-01T10:15:00.000Z"
        );
    }

    #[test]
    fn the_earliest_of_several_patterns() {
        // Weekdays at 9:00 and 21:00, weekends at noon; 2026-05-02 is a Saturday.
        let schedule = ["0 0 9,21 * * 1-5", "0 0 12 * * 0,6"];
        assert_eq!(
            next(&schedule, "2026-05-01T22:00:00.000Z"),
            "2026-05-02T12:00:00.000Z"
        );
        assert_eq!(
            next(&schedule, "2026-05-01T10:00:00.000Z"),
            "2026-05-01T21:00:00.000Z"
        );
    }

    #[test]
    fn no_schedule_is_far_away() {
        assert_eq!(
            next(&[], "2026-05-01T10:00:00.000Z"),
            "4000-02-01T00:00:00.000Z"
        );
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "0 0 3 0 * *",
            "nope",
            "",
            "* * * * * * 2030",
            "61 * * * * *",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        for good in ["0 0 1 * * *", "@daily", "0 0 12 * * MON-FRI", "0 0 0 L * *"] {
            assert!(parse(good).is_ok(), "{good:?} refused");
        }
    }
}
