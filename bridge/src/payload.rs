//! The bridged task's payload, validated as the original bridge's schema did,
//! and the checks the TC listener makes before injecting a build request.

use std::collections::BTreeMap;

use bbb_buildbot::{BuildRequestSpec, SourceStamp, priority_for_task};
use regex::Regex;
use serde_json::Value;

/// A validated payload: `{buildername, properties: {product, ...}, sourcestamp?}`.
#[derive(Clone, Debug, PartialEq)]
pub struct BridgePayload {
    /// The builder to run on.
    pub buildername: String,
    /// Build properties; always holds a non-empty `product`.
    pub properties: BTreeMap<String, Value>,
    /// What to build.
    pub sourcestamp: SourceStamp,
}

/// Validates a task's `payload`. The message is meant for the task's log.
///
/// Rules (the original bridge's payload schema): the payload is an object with
/// no keys besides `buildername`, `properties` and `sourcestamp`; `buildername`
/// is a non-empty string; `properties` is an object whose `product` is a
/// non-empty string (a build without it cannot upload its log, so it would
/// never finish); `sourcestamp`, when present, is an object with a `branch` of
/// at least 3 characters and optional string `revision`, `repository`,
/// `project`.
pub fn parse_payload(payload: &Value) -> Result<BridgePayload, String> {
    let object = payload
        .as_object()
        .ok_or("the payload must be a JSON object")?;
    if let Some(key) = object
        .keys()
        .find(|k| !matches!(k.as_str(), "buildername" | "properties" | "sourcestamp"))
    {
        return Err(format!(
            "payload.{key} is not allowed (allowed: buildername, properties, sourcestamp)"
        ));
    }
    let buildername = match object.get("buildername") {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        Some(_) => return Err("payload.buildername must be a non-empty string".to_owned()),
        None => return Err("payload.buildername is required".to_owned()),
    };
    let properties = match object.get("properties") {
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return Err("payload.properties must be an object".to_owned()),
        None => return Err("payload.properties is required".to_owned()),
    };
    match properties.get("product") {
        Some(Value::String(p)) if !p.is_empty() => {}
        _ => {
            return Err("payload.properties.product is required (a non-empty string)".to_owned());
        }
    }
    let sourcestamp = match object.get("sourcestamp") {
        None => SourceStamp::default(),
        Some(Value::Object(ss)) => {
            let text = |key: &str| -> Result<Option<String>, String> {
                match ss.get(key) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    Some(_) => Err(format!("payload.sourcestamp.{key} must be a string")),
                }
            };
            if let Some(key) = ss
                .keys()
                .find(|k| !matches!(k.as_str(), "branch" | "revision" | "repository" | "project"))
            {
                return Err(format!("payload.sourcestamp.{key} is not allowed"));
            }
            let branch = text("branch")?.ok_or("payload.sourcestamp.branch is required")?;
            if branch.chars().count() < 3 {
                return Err("payload.sourcestamp.branch must be at least 3 characters".to_owned());
            }
            SourceStamp {
                branch: Some(branch),
                revision: text("revision")?,
                repository: text("repository")?.unwrap_or_default(),
                project: text("project")?.unwrap_or_default(),
            }
        }
        Some(_) => return Err("payload.sourcestamp must be an object".to_owned()),
    };
    Ok(BridgePayload {
        buildername,
        properties: properties.into_iter().collect(),
        sourcestamp,
    })
}

/// Builders that need a scope, and builders the bridge leaves alone.
#[derive(Clone, Debug, Default)]
pub struct BuilderRules {
    /// A builder matching any of these (whole-name regexes) runs only for a
    /// task whose scopes satisfy `buildbot-bridge:builder-name:<builder>` or
    /// `project:releng:buildbot-bridge:builder-name:<builder>`.
    pub restricted: Vec<Regex>,
    /// A builder matching any of these is ignored: the bridge neither injects
    /// nor resolves its tasks (another system handles them). Ignoring wins
    /// over the restriction check.
    pub ignored: Vec<Regex>,
}

impl BuilderRules {
    /// Compiles whole-name patterns (`^` and `$` are added).
    pub fn new(restricted: &[String], ignored: &[String]) -> Result<BuilderRules, regex::Error> {
        let compile = |patterns: &[String]| -> Result<Vec<Regex>, regex::Error> {
            patterns
                .iter()
                .map(|p| Regex::new(&format!("^(?:{p})$")))
                .collect()
        };
        Ok(BuilderRules {
            restricted: compile(restricted)?,
            ignored: compile(ignored)?,
        })
    }

    /// Whether the bridge ignores this builder.
    pub fn is_ignored(&self, buildername: &str) -> bool {
        self.ignored.iter().any(|r| r.is_match(buildername))
    }

    /// Whether a task with `scopes` may use this builder.
    pub fn is_authorized(&self, buildername: &str, scopes: &[String]) -> bool {
        if !self.restricted.iter().any(|r| r.is_match(buildername)) {
            return true;
        }
        [
            format!("buildbot-bridge:builder-name:{buildername}"),
            format!("project:releng:buildbot-bridge:builder-name:{buildername}"),
        ]
        .iter()
        .any(|required| bbb_auth::scope_satisfied(scopes, required))
    }
}

/// The task's `scopes`, as strings.
pub fn task_scopes(task: &Value) -> Vec<String> {
    task.get("scopes")
        .and_then(Value::as_array)
        .map(|scopes| {
            scopes
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The build request for one run of a bridged task.
pub fn build_request_spec(
    task_id: &str,
    run_id: u32,
    task: &Value,
    payload: &BridgePayload,
    scheduled_ms: i64,
) -> BuildRequestSpec {
    BuildRequestSpec {
        task_id: task_id.to_owned(),
        run_id,
        buildername: payload.buildername.clone(),
        properties: payload.properties.clone(),
        sourcestamp: payload.sourcestamp.clone(),
        // The queue validated the task's priority; a task without one (or
        // from a queue that spells it otherwise) gets the default, `lowest`.
        priority: priority_for_task(
            task.get("priority")
                .and_then(Value::as_str)
                .and_then(|p| p.parse().ok())
                .unwrap_or_default(),
        ),
        submitted_at: scheduled_ms.div_euclid(1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_a_full_payload() {
        let p = parse_payload(&json!({
            "buildername": "linux64 build",
            "properties": {"product": "firefox", "who": "me"},
            "sourcestamp": {"branch": "integration/mozilla-inbound", "revision": "abc",
                            "repository": "https://hg.mozilla.org/x"}
        }))
        .unwrap();
        assert_eq!(p.buildername, "linux64 build");
        assert_eq!(p.properties["who"], json!("me"));
        assert_eq!(
            p.sourcestamp.branch.as_deref(),
            Some("integration/mozilla-inbound")
        );
        assert_eq!(p.sourcestamp.revision.as_deref(), Some("abc"));
        assert_eq!(p.sourcestamp.project, "");
    }

    #[test]
    fn refuses_bad_payloads_with_a_reason() {
        let cases = [
            (json!([]), "JSON object"),
            (
                json!({"properties": {"product": "f"}}),
                "buildername is required",
            ),
            (
                json!({"buildername": "", "properties": {"product": "f"}}),
                "non-empty",
            ),
            (json!({"buildername": "b"}), "properties is required"),
            (json!({"buildername": "b", "properties": {}}), "product"),
            (
                json!({"buildername": "b", "properties": {"product": ""}}),
                "product",
            ),
            (
                json!({"buildername": "b", "properties": {"product": "f"}, "x": 1}),
                "payload.x",
            ),
            (
                json!({"buildername": "b", "properties": {"product": "f"}, "sourcestamp": {}}),
                "branch is required",
            ),
            (
                json!({"buildername": "b", "properties": {"product": "f"},
                       "sourcestamp": {"branch": "ab"}}),
                "at least 3",
            ),
        ];
        for (payload, wanted) in cases {
            let err = parse_payload(&payload).unwrap_err();
            assert!(err.contains(wanted), "{payload}: {err}");
        }
    }

    #[test]
    fn restricted_builders_need_a_scope() {
        let rules =
            BuilderRules::new(&["release-.*".to_owned()], &["ignored-.*".to_owned()]).unwrap();
        let none: Vec<String> = vec![];
        assert!(rules.is_authorized("linux", &none));
        assert!(!rules.is_authorized("release-firefox", &none));
        for scope in [
            "buildbot-bridge:builder-name:release-firefox",
            "buildbot-bridge:builder-name:release-*",
            "buildbot-bridge:builder-name:*",
            "project:releng:buildbot-bridge:builder-name:release-firefox",
            "project:releng:buildbot-bridge:builder-name:release-*",
            "project:releng:buildbot-bridge:builder-name:*",
        ] {
            assert!(
                rules.is_authorized("release-firefox", &[scope.to_owned()]),
                "{scope}"
            );
        }
        assert!(!rules.is_authorized(
            "release-firefox",
            &["buildbot-bridge:builder-name:release-fennec".to_owned()]
        ));
        assert!(rules.is_ignored("ignored-builder"));
        assert!(!rules.is_ignored("not-ignored-builder"));
    }

    #[test]
    fn spec_uses_the_run_scheduled_time_and_priority() {
        let payload =
            parse_payload(&json!({"buildername": "b", "properties": {"product": "f"}})).unwrap();
        let spec = build_request_spec(
            "t",
            2,
            &json!({"priority": "high"}),
            &payload,
            1_700_000_000_999,
        );
        assert_eq!(spec.priority, 1);
        assert_eq!(spec.submitted_at, 1_700_000_000);
        assert_eq!(spec.run_id, 2);
    }
}
