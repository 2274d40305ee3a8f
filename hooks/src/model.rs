//! What a hook is: its stored form, the definition the API shows, the checks
//! and defaults a `createHook`/`updateHook` body goes through, and the record
//! of one firing.

use crate::schema::{self, Problem};
use bbb_clock::Millis;
use bbb_service::ApiError;
use jsonschema::Validator;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::LazyLock;

/// A hook as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Hook {
    /// Its group.
    pub hook_group_id: String,
    /// Its id within the group (may contain `/`).
    pub hook_id: String,
    /// `{name, description, owner, emailOnError}`.
    pub metadata: Value,
    /// The JSON-e template of the task it creates.
    pub task: Value,
    /// The Pulse bindings whose messages fire it.
    pub bindings: Vec<HookBinding>,
    /// Cron patterns of the times it fires.
    pub schedule: Vec<String>,
    /// The schema trigger payloads must match.
    pub trigger_schema: Value,
    /// The secret of `triggerHookWithToken`.
    pub trigger_token: String,
    /// The taskId the next scheduled firing creates.
    pub next_task_id: String,
    /// When it is next scheduled to fire ([`crate::cron::NEVER_MS`] without a schedule).
    pub next_scheduled_date: Millis,
}

impl Hook {
    /// The hook definition the API answers with (upstream's `hook-definition`).
    pub fn definition(&self) -> Value {
        json!({
            "hookGroupId": self.hook_group_id,
            "hookId": self.hook_id,
            "bindings": self.bindings,
            "metadata": self.metadata,
            "task": self.task,
            "schedule": self.schedule,
            "triggerSchema": self.trigger_schema,
        })
    }

    /// The role the hook's tasks are created with, as a scope:
    /// `assume:hook-id:<hookGroupId>/<hookId>`.
    pub fn role_scope(&self) -> String {
        format!("assume:hook-id:{}/{}", self.hook_group_id, self.hook_id)
    }
}

/// A Pulse binding: messages on `exchange` whose routing key matches
/// `routingKeyPattern` fire the hook.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HookBinding {
    /// The exchange.
    pub exchange: String,
    /// An AMQP topic pattern.
    pub routing_key_pattern: String,
}

/// How a hook came to fire (`firedBy` in the JSON-e context and in
/// `listLastFires`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FiredBy {
    /// Its schedule.
    Schedule,
    /// A `triggerHook` call.
    TriggerHook,
    /// A `triggerHookWithToken` call.
    TriggerHookWithToken,
    /// A Pulse message matching its bindings.
    PulseMessage,
}

impl FiredBy {
    /// The upstream name.
    pub fn as_str(self) -> &'static str {
        match self {
            FiredBy::Schedule => "schedule",
            FiredBy::TriggerHook => "triggerHook",
            FiredBy::TriggerHookWithToken => "triggerHookWithToken",
            FiredBy::PulseMessage => "pulseMessage",
        }
    }
}

/// The record of one firing, as `listLastFires` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastFire {
    /// The hook's group.
    pub hook_group_id: String,
    /// The hook.
    pub hook_id: String,
    /// How it fired (upstream's name).
    pub fired_by: String,
    /// The taskId of the task it created or tried to create.
    pub task_id: String,
    /// When it fired.
    pub task_create_time: Millis,
    /// `success` or `error`.
    pub result: String,
    /// Why it failed (empty on success): upstream's JSON rendering of a
    /// failed call, or the text of a template error.
    pub error: String,
}

/// The trigger schema of a hook defined without one: only an empty payload.
pub fn default_trigger_schema() -> Value {
    json!({"type": "object", "additionalProperties": false})
}

/// The URL of one of this service's schemas under `root_url`, as error
/// messages name them.
pub fn schema_url(root_url: &str, name: &str) -> String {
    format!(
        "{}/schemas/hooks/v1/{name}.json#",
        root_url.trim_end_matches('/')
    )
}

/// Upstream's 400 `InputValidationError` for a body that does not match the
/// schema `name`.
pub fn input_validation_error(root_url: &str, name: &str, problems: &[Problem]) -> ApiError {
    ApiError::InputValidation(format!(
        "\nSchema Validation Failed!\nRejecting Schema: {}\nErrors:\n  * {}",
        schema_url(root_url, name),
        schema::errors_text(problems, "\n  * ")
    ))
}

/// The shape of a `createHook`/`updateHook` body (upstream's
/// `create-hook-request`).
static HOOK_REQUEST: LazyLock<Validator> = LazyLock::new(|| {
    let text = |max: u64| json!({"type": "string", "maxLength": max});
    let binding = json!({
        "type": "object",
        "properties": {
            "exchange": {"type": "string", "minLength": 1},
            "routingKeyPattern": {"type": "string", "minLength": 1},
        },
        "required": ["exchange", "routingKeyPattern"],
        "additionalProperties": false,
    });
    schema::compile(&json!({
        "type": "object",
        "properties": {
            "hookGroupId": {
                "type": "string", "minLength": 1, "maxLength": 1000,
                "pattern": "^[a-zA-Z0-9_-]*$",
            },
            "hookId": {
                "type": "string", "minLength": 1, "maxLength": 1000,
                "pattern": "^[a-zA-Z0-9_/-]*$",
            },
            "metadata": {
                "type": "object",
                "properties": {
                    "name": text(255),
                    "description": text(32768),
                    "owner": {"type": "string", "maxLength": 255, "format": "email"},
                    "emailOnError": {"type": "boolean"},
                },
                "required": ["name", "description", "owner"],
                "additionalProperties": false,
            },
            "bindings": {"type": "array", "uniqueItems": true, "items": binding},
            "schedule": {"type": "array", "uniqueItems": true, "items": {"type": "string"}},
            "task": {"type": "object"},
            "triggerSchema": {"type": "object"},
        },
        "required": ["metadata", "task"],
        "additionalProperties": false,
    }))
    .expect("the hook request schema compiles")
});

/// A `createHook`/`updateHook` body, checked against the request schema and
/// with upstream's defaults filled in (`schedule: []`, the default
/// `triggerSchema`, `metadata.emailOnError: true`). `bindings` stays absent
/// when the body has none: each method decides what that means.
pub fn hook_request(root_url: &str, body: &Value) -> Result<Value, ApiError> {
    let problems = schema::problems(&HOOK_REQUEST, body);
    if !problems.is_empty() {
        return Err(input_validation_error(
            root_url,
            "create-hook-request",
            &problems,
        ));
    }
    let mut def = body.clone();
    let obj = def
        .as_object_mut()
        .ok_or_else(|| ApiError::Internal("a checked hook request is not an object".into()))?;
    obj.entry("schedule").or_insert_with(|| json!([]));
    obj.entry("triggerSchema")
        .or_insert_with(default_trigger_schema);
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.entry("emailOnError").or_insert(Value::Bool(true));
    }
    Ok(def)
}

/// The bindings and schedule of a checked request (see [`hook_request`]).
pub fn bindings_and_schedule(def: &Value) -> (Option<Vec<HookBinding>>, Vec<String>) {
    let bindings = def
        .get("bindings")
        .and_then(|b| serde_json::from_value(b.clone()).ok());
    let schedule = def
        .get("schedule")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    (bindings, schedule)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Value {
        json!({
            "metadata": {"name": "n", "description": "d", "owner": "o@example.com"},
            "task": {"provisionerId": "p"},
        })
    }

    #[test]
    fn defaults_are_filled_in() {
        let def = hook_request("http://tc", &request()).unwrap();
        assert_eq!(def["schedule"], json!([]));
        assert_eq!(def["triggerSchema"], default_trigger_schema());
        assert_eq!(def["metadata"]["emailOnError"], json!(true));
        assert!(def.get("bindings").is_none());
    }

    #[test]
    fn bad_requests_read_as_upstreams() {
        let mut r = request();
        r["bindings"] = json!([{"exchange": "e"}]);
        r["extra"] = json!(1);
        let e = hook_request("http://tc/", &r).unwrap_err();
        assert_eq!(e.code(), "InputValidationError");
        assert_eq!(
            e.to_string(),
            "\nSchema Validation Failed!\nRejecting Schema: \
             http://tc/schemas/hooks/v1/create-hook-request.json#\nErrors:\n  \
             * data/bindings/0 must have required property 'routingKeyPattern'\n  \
             * data must NOT have additional properties"
        );
        let mut r = request();
        r["bindings"] = json!({"exchange": "e", "routingKeyPattern": "#"});
        let e = hook_request("http://tc", &r).unwrap_err();
        assert!(e.to_string().contains("data/bindings must be array"), "{e}");
    }
}
