//! The actions of a task group's decision task: taskgraph's
//! `public/actions.json` (version 1), shown as forms generated from each
//! action's input `schema` and fired as Treeherder fires them.
//!
//! - **Which decision task.** The task whose id is the group's id
//!   (taskgraph's decision task creates its graph in a group named after
//!   itself), and the `public/actions.json` of its latest run.
//! - **Which actions where.** As Treeherder's `taskInContext`: an action with
//!   an empty `context` acts on the whole group (shown on the group's page);
//!   one whose `context` has a tag set every key of which the task's `tags`
//!   hold with the same value acts on that task (shown on the task's page).
//!   Only the kinds `hook` and `task` are shown.
//! - **Firing.** The JSON-e context is the file's `variables` overridden by
//!   `taskGroupId` (the decision task), `taskId` (the task, or `null` for a
//!   group action) and `input` (from the form, checked against the schema).
//!   A `hook` action's `hookPayload` is rendered with it, the decision task's
//!   scopes (expanded through roles) must grant
//!   `in-tree:hook-action:<hookGroupId>/<hookId>`, and `triggerHook` is
//!   called with the signed-in user's credentials. A `task` action's `task`
//!   is rendered with `task` (the task's definition) and `ownTaskId` (a new
//!   id) too, and created with `createTask`, as the user.

use bbb_auth::scope_satisfied;
use bbb_login::SignedIn;
use bbb_queue::error::ApiError;
use maud::{Markup, html};
use serde_json::{Map, Value, json};

use super::acting::Outcome;
use super::encode;
use crate::{Web, counted};

/// The name of the artifact that lists a decision task's actions.
pub(crate) const ACTIONS_JSON: &str = "public/actions.json";

/// A decision task's actions.
#[derive(Clone, Debug)]
pub(crate) struct Actions {
    /// The decision task (the group's id).
    pub decision_task_id: String,
    /// The decision task's scopes, as defined.
    pub decision_scopes: Vec<String>,
    /// `variables`: the JSON-e context's defaults.
    pub variables: Map<String, Value>,
    /// The actions of kind `hook` or `task`, in the file's order.
    pub actions: Vec<Value>,
}

/// The bytes of an artifact, read in-process (`s3`: the blob store; a
/// reference: its URL), or `None` when the run has no such artifact.
pub(crate) async fn artifact_bytes(
    web: &Web,
    task_id: &str,
    run_id: i64,
    name: &str,
) -> Result<Option<Vec<u8>>, String> {
    counted(1);
    let a = match web.queue.artifact(task_id, run_id, name).await {
        Ok(a) => a,
        Err(ApiError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let url = match a.storage_type.as_str() {
        "s3" => {
            if let Some(local) = web.blobs.local() {
                return local
                    .get(task_id, run_id, name)
                    .await
                    .map_err(|e| format!("reading {name}: {e}"));
            }
            let now = web.queue.clock.now_ms();
            web.blobs.get_url(
                (task_id, run_id, name),
                now,
                now + bbb_queue::blob::GET_URL_TTL_MS,
            )
        }
        "reference" => a
            .details
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => return Ok(None),
    };
    let res = web
        .http
        .get(&url)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| format!("fetching {name}: {e}"))?;
    if !res.status().is_success() {
        return Err(format!("fetching {name}: HTTP {}", res.status()));
    }
    let bytes = res
        .bytes()
        .await
        .map_err(|e| format!("fetching {name}: {e}"))?;
    Ok(Some(bytes.to_vec()))
}

/// The actions of the decision task of `task_group_id`: `Ok(None)` when the
/// group has no decision task or it published no `actions.json`; `Err` when
/// the file cannot be read or is not version 1.
pub(crate) async fn load(web: &Web, task_group_id: &str) -> Result<Option<Actions>, String> {
    counted(1);
    let decision = match web.queue.load_task(task_group_id).await {
        Ok(Some(t)) => t,
        Ok(None) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let Some(run) = decision.last_run() else {
        return Ok(None);
    };
    let Some(bytes) = artifact_bytes(web, task_group_id, run.run_id, ACTIONS_JSON).await? else {
        return Ok(None);
    };
    let file: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{ACTIONS_JSON} is not JSON: {e}"))?;
    parse(task_group_id, decision.def.scopes.clone(), &file).map(Some)
}

/// The actions of an `actions.json` document.
pub(crate) fn parse(
    decision_task_id: &str,
    decision_scopes: Vec<String>,
    file: &Value,
) -> Result<Actions, String> {
    if file.get("version").and_then(Value::as_i64) != Some(1) {
        return Err(format!(
            "{ACTIONS_JSON} has version {}; only version 1 is understood",
            file.get("version").unwrap_or(&Value::Null)
        ));
    }
    let actions = file
        .get("actions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|a| matches!(a["kind"].as_str(), Some("hook" | "task")))
                .filter(|a| a["name"].is_string())
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    Ok(Actions {
        decision_task_id: decision_task_id.to_owned(),
        decision_scopes,
        variables: file
            .get("variables")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        actions,
    })
}

/// An action's context: its tag sets (none: a group action).
fn context(action: &Value) -> Vec<&Map<String, Value>> {
    action["context"]
        .as_array()
        .map(|c| c.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default()
}

impl Actions {
    /// The actions on the whole group (an empty `context`).
    pub(crate) fn for_group(&self) -> Vec<&Value> {
        self.actions
            .iter()
            .filter(|a| a["context"].as_array().is_none_or(Vec::is_empty))
            .collect()
    }

    /// The actions on a task with `tags` (Treeherder's `taskInContext`).
    pub(crate) fn for_task(&self, tags: &Map<String, Value>) -> Vec<&Value> {
        self.actions
            .iter()
            .filter(|a| {
                context(a).iter().any(|set| {
                    set.iter()
                        .all(|(k, v)| tags.get(k).is_some_and(|t| !is_falsy(t) && t == v))
                })
            })
            .collect()
    }
}

/// JavaScript's falsy values among JSON's (Treeherder checks `taskTags[tag] &&`).
fn is_falsy(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// The form of one action: a disclosure with its description, a field per
/// property of its input schema, and a submit button; posted to `post_to`.
pub(crate) fn form(action: &Value, post_to: &str, csrf: &str, index: usize) -> Markup {
    let name = action["name"].as_str().unwrap_or_default();
    let title = action["title"].as_str().unwrap_or(name);
    let description = action["description"].as_str().unwrap_or_default();
    let prefix = format!("a{index}");
    html! {
        details.action {
            summary { (title) }
            @if !description.is_empty() { p.description { (description) } }
            form method="post" action=(post_to) {
                input type="hidden" name=(crate::csrf::FIELD) value=(csrf);
                input type="hidden" name="do" value="action";
                input type="hidden" name="action" value=(name);
                (fields(&action["schema"], &prefix))
                button type="submit" { (title) }
            }
        }
    }
}

/// The fields of an input schema: one per property of an object schema
/// (integers and numbers as number inputs, booleans as checkboxes, strings
/// with `enum` as a choice, other strings as text, anything else as JSON),
/// or one JSON field for any other non-empty schema.
fn fields(schema: &Value, prefix: &str) -> Markup {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match schema["properties"].as_object() {
        Some(props) if schema["type"] == "object" || schema["type"].is_null() => html! {
            @for (key, prop) in props {
                (field(key, prop, required.contains(&key.as_str()), prefix))
            }
        },
        _ if has_schema(schema) => html! {
            div.field {
                label for=(format!("{prefix}-json")) { "Input (JSON)" }
                textarea id=(format!("{prefix}-json")) name="json" rows="4" {}
            }
        },
        _ => html! {},
    }
}

/// Whether an action asks for input at all.
fn has_schema(schema: &Value) -> bool {
    schema.as_object().is_some_and(|s| !s.is_empty())
}

fn field(key: &str, prop: &Value, required: bool, prefix: &str) -> Markup {
    let id = format!("{prefix}-{}", encode(key, false));
    let label = prop["title"].as_str().unwrap_or(key);
    let help = prop["description"].as_str().unwrap_or_default();
    let default = &prop["default"];
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let input = format!("input.{key}");
    let control = match (prop["type"].as_str(), prop["enum"].as_array()) {
        (_, Some(choices)) => html! {
            select id=(id) name=(input) required[required] {
                @if !required { option value="" { "—" } }
                @for c in choices {
                    option value=(scalar(c)) selected[c == default] { (scalar(c)) }
                }
            }
        },
        (Some("integer" | "number"), _) => html! {
            input type="number" id=(id) name=(input) value=(scalar(default))
                step=(if prop["type"] == "integer" { "1" } else { "any" })
                min=[prop["minimum"].as_f64().map(|m| m.to_string())]
                max=[prop["maximum"].as_f64().map(|m| m.to_string())]
                required[required];
        },
        (Some("boolean"), _) => html! {
            input type="checkbox" id=(id) name=(input) value="true" checked[default == &Value::Bool(true)];
        },
        (Some("string"), _) => html! {
            input type="text" id=(id) name=(input) value=(scalar(default)) required[required];
        },
        _ => html! {
            textarea id=(id) name=(format!("json.{key}")) rows="3" {
                @if !default.is_null() { (serde_json::to_string_pretty(default).unwrap_or_default()) }
            }
        },
    };
    html! {
        div.field {
            label for=(id) { (label) @if required { " (required)" } }
            (control)
            @if !help.is_empty() { small.help { (help) } }
        }
    }
}

/// The value of form field `key`.
pub(crate) fn form_value<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The action's input from its form, checked against its schema.
pub(crate) fn input_from_form(schema: &Value, form: &[(String, String)]) -> Result<Value, String> {
    let input = match schema["properties"].as_object() {
        Some(props) if schema["type"] == "object" || schema["type"].is_null() => {
            let mut out = Map::new();
            for (key, prop) in props {
                let value = if prop["enum"].is_array() {
                    let given = form_value(form, &format!("input.{key}")).unwrap_or_default();
                    prop["enum"]
                        .as_array()
                        .and_then(|c| c.iter().find(|c| enum_text(c) == given))
                        .cloned()
                } else {
                    match prop["type"].as_str() {
                        Some("boolean") => Some(Value::Bool(
                            form_value(form, &format!("input.{key}")) == Some("true"),
                        )),
                        Some(kind @ ("integer" | "number" | "string")) => {
                            let given =
                                form_value(form, &format!("input.{key}")).unwrap_or_default();
                            scalar_input(key, kind, given)?
                        }
                        _ => {
                            let given =
                                form_value(form, &format!("json.{key}")).unwrap_or_default();
                            if given.trim().is_empty() {
                                None
                            } else {
                                Some(
                                    serde_json::from_str(given)
                                        .map_err(|e| format!("{key}: not JSON ({e})"))?,
                                )
                            }
                        }
                    }
                };
                if let Some(v) = value {
                    out.insert(key.clone(), v);
                }
            }
            Value::Object(out)
        }
        _ if has_schema(schema) => {
            let given = form_value(form, "json").unwrap_or_default();
            if given.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(given).map_err(|e| format!("the input is not JSON ({e})"))?
            }
        }
        _ => json!({}),
    };
    if has_schema(schema) {
        let validator = jsonschema::validator_for(schema)
            .map_err(|e| format!("the action's schema is not valid: {e}"))?;
        let errors: Vec<String> = validator
            .iter_errors(&input)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
    }
    Ok(input)
}

fn enum_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One number or text field: `None` when left empty.
fn scalar_input(key: &str, kind: &str, given: &str) -> Result<Option<Value>, String> {
    let given = given.trim();
    if given.is_empty() {
        return Ok(None);
    }
    Ok(Some(match kind {
        "integer" => Value::from(
            given
                .parse::<i64>()
                .map_err(|_| format!("{key}: {given} is not a whole number"))?,
        ),
        "number" => Value::from(
            given
                .parse::<f64>()
                .map_err(|_| format!("{key}: {given} is not a number"))?,
        ),
        _ => Value::from(given),
    }))
}

/// Fire `action` of `acts` on `task` (`None`: the group) with `input`, as
/// `who`.
pub(crate) async fn fire(
    web: &Web,
    who: &SignedIn,
    acts: &Actions,
    action: &Value,
    task: Option<&bbb_queue::model::Task>,
    input: Value,
) -> Outcome {
    let mut ctx = acts.variables.clone();
    ctx.insert("taskGroupId".into(), acts.decision_task_id.clone().into());
    ctx.insert(
        "taskId".into(),
        task.map_or(Value::Null, |t| t.task_id.clone().into()),
    );
    ctx.insert("input".into(), input);
    let name = action["name"].as_str().unwrap_or_default();
    let expanded = web.auth.expand(&acts.decision_scopes);
    match action["kind"].as_str() {
        Some("hook") => {
            let (Some(hook_group), Some(hook_id)) =
                (action["hookGroupId"].as_str(), action["hookId"].as_str())
            else {
                return Outcome::refused(400, format!("Action {name} names no hook."));
            };
            let payload = match json_e::render(&action["hookPayload"], &Value::Object(ctx)) {
                Ok(p) => p,
                Err(e) => {
                    return Outcome::refused(
                        400,
                        format!("Rendering the hook payload of {name}: {e}"),
                    );
                }
            };
            let wanted = format!("in-tree:hook-action:{hook_group}/{hook_id}");
            if !scope_satisfied(&expanded, &wanted) {
                return Outcome::refused(
                    403,
                    format!(
                        "The decision task {} may not offer hook {hook_group}/{hook_id}: its scopes do not grant {wanted}.",
                        acts.decision_task_id
                    ),
                );
            }
            let url = web.hawk.url(
                "hooks",
                &format!(
                    "hooks/{}/{}/trigger",
                    encode(hook_group, false),
                    encode(hook_id, false)
                ),
            );
            let answer = web
                .hawk
                .call(Some(&who.credentials), None, "POST", &url, Some(&payload))
                .await;
            Outcome::from_answer(answer, |body| {
                let id = body["status"]["taskId"]
                    .as_str()
                    .or(body["taskId"].as_str())
                    .map(str::to_owned);
                (
                    format!("Action {name} fired through hook {hook_group}/{hook_id}."),
                    id.into_iter().collect(),
                )
            })
        }
        Some("task") => {
            let own = bbb_queue::validate::slugid();
            ctx.insert(
                "task".into(),
                task.map_or(Value::Null, bbb_queue::model::Task::definition),
            );
            ctx.insert("ownTaskId".into(), own.clone().into());
            let def = match json_e::render(&action["task"], &Value::Object(ctx)) {
                Ok(d) => d,
                Err(e) => {
                    return Outcome::refused(400, format!("Rendering the task of {name}: {e}"));
                }
            };
            let scopes: Vec<String> = def["scopes"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            if let Some(s) = scopes.iter().find(|s| !scope_satisfied(&expanded, s)) {
                return Outcome::refused(
                    403,
                    format!(
                        "The decision task {} may not offer an action task with scope {s}.",
                        acts.decision_task_id
                    ),
                );
            }
            let url = web.hawk.url("queue", &format!("task/{own}"));
            let answer = web
                .hawk
                .call(Some(&who.credentials), None, "PUT", &url, Some(&def))
                .await;
            Outcome::from_answer(answer, |_| {
                (
                    format!("Action {name} created its task."),
                    vec![own.clone()],
                )
            })
        }
        _ => Outcome::refused(
            400,
            format!("Action {name} is of a kind bbb does not fire."),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Value {
        json!({
            "version": 1,
            "variables": {"project": "demo"},
            "actions": [
                {"name": "cancel-all", "kind": "hook", "context": [], "title": "Cancel all",
                 "hookGroupId": "g", "hookId": "h", "hookPayload": {}},
                {"name": "retrigger", "kind": "hook", "context": [{}], "title": "Retrigger",
                 "hookGroupId": "g", "hookId": "h", "hookPayload": {},
                 "schema": {"type": "object", "properties": {
                     "times": {"type": "integer", "default": 1, "minimum": 1, "maximum": 100},
                     "downstream": {"type": "boolean", "default": false},
                     "priority": {"type": "string", "enum": ["low", "high"], "default": "low"},
                     "note": {"type": "string"},
                     "tasks": {"type": "array", "items": {"type": "string"}}},
                     "required": ["times"], "additionalProperties": false}},
                {"name": "linux-only", "kind": "task", "context": [{"platform": "linux"}], "task": {}},
                {"name": "other", "kind": "unknown", "context": []},
            ],
        })
    }

    #[test]
    fn actions_are_filtered_by_context_as_treeherder_does() {
        let acts = parse("G", vec![], &file()).unwrap();
        let names = |v: Vec<&Value>| {
            v.iter()
                .map(|a| a["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(acts.for_group()), ["cancel-all"]);
        let linux = json!({"platform": "linux"});
        assert_eq!(
            names(acts.for_task(linux.as_object().unwrap())),
            ["retrigger", "linux-only"]
        );
        let mac = json!({"platform": "mac"});
        assert_eq!(
            names(acts.for_task(mac.as_object().unwrap())),
            ["retrigger"]
        );
        assert!(parse("G", vec![], &json!({"version": 2, "actions": []})).is_err());
    }

    #[test]
    fn a_form_gives_the_input_its_schema_describes() {
        let acts = parse("G", vec![], &file()).unwrap();
        let schema = &acts.actions[1]["schema"];
        let form = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let input = input_from_form(
            schema,
            &form(&[
                ("input.times", "3"),
                ("input.downstream", "true"),
                ("input.priority", "high"),
                ("input.note", ""),
                ("json.tasks", "[\"a\"]"),
            ]),
        )
        .unwrap();
        assert_eq!(
            input,
            json!({"times": 3, "downstream": true, "priority": "high", "tasks": ["a"]})
        );
        let input = input_from_form(
            schema,
            &form(&[("input.times", "1"), ("input.priority", "low")]),
        )
        .unwrap();
        assert_eq!(
            input,
            json!({"times": 1, "downstream": false, "priority": "low"})
        );
        let err = input_from_form(schema, &form(&[("input.times", "x")])).unwrap_err();
        assert!(err.contains("not a whole number"), "{err}");
        let err = input_from_form(schema, &form(&[("input.times", "500")])).unwrap_err();
        assert!(err.contains("500"), "{err}");
        let err = input_from_form(schema, &form(&[])).unwrap_err();
        assert!(err.contains("times"), "{err}");
        assert_eq!(input_from_form(&Value::Null, &[]).unwrap(), json!({}));
    }

    #[test]
    fn a_form_escapes_what_the_file_says() {
        let action = json!({"name": "x", "title": "<script>alert(1)</script>", "kind": "hook",
                            "schema": {"type": "object", "properties": {"a\"b": {"type": "string", "default": "<b>"}}}});
        let html = form(&action, "/tasks/T/act", "tok", 0).into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("value=\"<b>\""), "{html}");
    }
}
