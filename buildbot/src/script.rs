//! How the builds of the simulator and of the sandbox master are scripted:
//! each builder has a default script ([`ScriptedBuilder`]), and a request's
//! properties override it.
//!
//! - `sim_result` ([`RESULT_PROPERTY`]): a result name (`SUCCESS`,
//!   `failure`, `CANCELED`, ...) or code (`2`, `"2"`), or a comma-separated
//!   string (`"RETRY,SUCCESS"`) or JSON list (`["RETRY", 0]`) of them, one
//!   per attempt, the last repeating;
//! - `sim_duration_ms` ([`DURATION_PROPERTY`]): the run time in
//!   milliseconds, a number or a string, or a list per attempt in the same
//!   way (`"100,600000"`); negative or unreadable values are ignored, and
//!   durations are capped at [`MAX_DURATION`].
//!
//! An unreadable script falls back to the builder's default.

use std::time::Duration;

use serde_json::Value;

use crate::types::BuildResult;

/// The request property that scripts build results.
pub const RESULT_PROPERTY: &str = "sim_result";

/// The request property that scripts build durations, in milliseconds.
pub const DURATION_PROPERTY: &str = "sim_duration_ms";

/// The longest scripted build duration; longer `sim_duration_ms` values are
/// cut to it.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// A builder of a simulated master, with its default script.
#[derive(Clone, Debug, PartialEq)]
pub struct ScriptedBuilder {
    /// The builder's name (`buildrequests.buildername`).
    pub name: String,
    /// Builds it runs at once. A builder with 0 slots never starts a build.
    pub slots: usize,
    /// Results of successive attempts of a request (the last repeats) when
    /// the request has no usable `sim_result` property. Empty means SUCCESS.
    pub results: Vec<BuildResult>,
    /// Run time of a build when the request has no usable `sim_duration_ms`
    /// property.
    pub duration: Duration,
}

impl ScriptedBuilder {
    /// A builder with 4 slots whose builds pass after 100 ms.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            slots: 4,
            results: vec![BuildResult::Success],
            duration: Duration::from_millis(100),
        }
    }

    /// The same builder with `slots` slots.
    pub fn with_slots(mut self, slots: usize) -> Self {
        self.slots = slots;
        self
    }

    /// The same builder with these default results (one per attempt, the
    /// last repeating).
    pub fn with_results(mut self, results: impl IntoIterator<Item = BuildResult>) -> Self {
        self.results = results.into_iter().collect();
        self
    }

    /// The same builder with this default build duration.
    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// The result and run time of attempt `attempt` (0-based) of a request
    /// whose property `name` is `property(name)`: its scripts, else this
    /// builder's defaults.
    pub fn script<'a>(
        &self,
        property: impl Fn(&str) -> Option<&'a Value>,
        attempt: usize,
    ) -> (BuildResult, Duration) {
        let result = property(RESULT_PROPERTY)
            .and_then(|script| script_result(script, attempt))
            .unwrap_or_else(|| self.result_for(attempt));
        let duration = property(DURATION_PROPERTY)
            .and_then(|script| script_duration(script, attempt))
            .unwrap_or(self.duration)
            .min(MAX_DURATION);
        (result, duration)
    }

    fn result_for(&self, attempt: usize) -> BuildResult {
        self.results
            .get(attempt)
            .or(self.results.last())
            .copied()
            .unwrap_or(BuildResult::Success)
    }
}

/// The item of a per-attempt script for `attempt`: a script is one value, a
/// comma-separated list or a JSON list, one item per attempt, the last one
/// repeating.
fn script_item(value: &Value, attempt: usize) -> Option<String> {
    let items: Vec<String> = match value {
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect(),
        Value::String(text) => text.split(',').map(str::to_owned).collect(),
        Value::Number(n) => vec![n.to_string()],
        _ => return None,
    };
    items.get(attempt).or(items.last()).cloned()
}

/// The scripted result of attempt `attempt` (0-based). `None` when the
/// script cannot be read.
pub fn script_result(value: &Value, attempt: usize) -> Option<BuildResult> {
    BuildResult::parse(&script_item(value, attempt)?)
}

/// The scripted run time of attempt `attempt` (0-based): milliseconds, at
/// most [`MAX_DURATION`]. `None` when the script cannot be read or is
/// negative.
pub fn script_duration(value: &Value, attempt: usize) -> Option<Duration> {
    let millis: f64 = script_item(value, attempt)?.trim().parse().ok()?;
    if !millis.is_finite() || millis < 0.0 {
        return None;
    }
    let limit = MAX_DURATION.as_millis() as f64;
    Some(Duration::from_millis(millis.min(limit).round() as u64))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn scripts_pick_per_attempt() {
        let script = json!("RETRY,SUCCESS");
        assert_eq!(script_result(&script, 0), Some(BuildResult::Retry));
        assert_eq!(script_result(&script, 1), Some(BuildResult::Success));
        assert_eq!(script_result(&script, 5), Some(BuildResult::Success));
        let spaced = json!("RETRY, SUCCESS");
        assert_eq!(script_result(&spaced, 1), Some(BuildResult::Success));
        assert_eq!(
            script_result(&json!(["FAILURE"]), 0),
            Some(BuildResult::Failure)
        );
        assert_eq!(
            script_result(&json!(["EXCEPTION", 2]), 1),
            Some(BuildResult::Failure)
        );
        assert_eq!(script_result(&json!(4), 0), Some(BuildResult::Exception));
        assert_eq!(script_result(&json!(6), 0), Some(BuildResult::Cancelled));
        for unreadable in [json!("bogus"), json!([]), json!(null), json!({"a": 1})] {
            assert_eq!(script_result(&unreadable, 0), None, "{unreadable}");
        }
        assert_eq!(
            script_duration(&json!("250"), 0),
            Some(Duration::from_millis(250))
        );
        let durations = json!("100,600000");
        assert_eq!(
            script_duration(&durations, 0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            script_duration(&durations, 3),
            Some(Duration::from_millis(600_000))
        );
    }

    #[test]
    fn durations_are_read_leniently() {
        assert_eq!(
            script_duration(&json!(250), 0),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            script_duration(&json!(" 40 "), 0),
            Some(Duration::from_millis(40))
        );
        assert_eq!(
            script_duration(&json!(1.6), 0),
            Some(Duration::from_millis(2))
        );
        assert_eq!(script_duration(&json!(-5), 0), None);
        assert_eq!(script_duration(&json!("soon"), 0), None);
        assert_eq!(script_duration(&json!(true), 0), None);
        assert_eq!(script_duration(&json!(1e300), 0), Some(MAX_DURATION));
    }

    #[test]
    fn requests_override_the_builder_per_attempt() {
        let builder = ScriptedBuilder::new("b")
            .with_results([BuildResult::Retry, BuildResult::Failure])
            .with_duration(Duration::from_millis(7));
        let none = |_: &str| None;
        assert_eq!(
            builder.script(none, 0),
            (BuildResult::Retry, Duration::from_millis(7))
        );
        assert_eq!(
            builder.script(none, 4),
            (BuildResult::Failure, Duration::from_millis(7))
        );
        let properties = json!({"sim_result": "bogus", "sim_duration_ms": "5,9"});
        let property = |name: &str| properties.get(name);
        assert_eq!(
            builder.script(property, 1),
            (BuildResult::Failure, Duration::from_millis(9))
        );
        assert!(
            ScriptedBuilder::new("c").with_results([]).script(none, 0).0 == BuildResult::Success
        );
    }
}
