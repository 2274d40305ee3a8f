//! `group list --format-string`: upstream's Go templates, for what a task
//! listing needs: literal text and field paths such as
//! `{{ .Status.TaskID }}`. A field is found in the listing entry (the
//! `listTaskGroup` JSON, `{"status": …, "task": …}`) by its name without
//! regard to case, so Go's field names (`TaskID`, `TaskGroupID`,
//! `Metadata`) find the JSON keys (`taskId`, `taskGroupId`, `metadata`).
//! A missing field prints `<no value>`, as Go's templates print a missing
//! map key; `{{ . }}` prints the whole entry as JSON.

use serde_json::Value;

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Vec<String>),
}

impl Template {
    /// Parses `source`; anything but text and field paths is refused.
    pub(crate) fn parse(source: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find("{{") {
            let inside = &rest[open + 2..];
            let close = inside
                .find("}}")
                .ok_or_else(|| format!("template: unclosed action in {source:?}"))?;
            let mut action = &inside[..close];
            // `{{- ` and ` -}}` trim the white space before and after, as Go's.
            let mut text = &rest[..open];
            if let Some(trimmed) = action.strip_prefix("- ") {
                action = trimmed;
                text = text.trim_end();
            }
            if !text.is_empty() {
                parts.push(Part::Text(text.to_owned()));
            }
            rest = &inside[close + 2..];
            if let Some(trimmed) = action.strip_suffix(" -") {
                action = trimmed;
                rest = rest.trim_start();
            }
            parts.push(Part::Field(field_path(action.trim())?));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// The template applied to `entry`.
    pub(crate) fn render(&self, entry: &Value) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field(path) => {
                    let mut value = Some(entry);
                    for name in path {
                        value = value.and_then(|v| field(v, name));
                    }
                    match value {
                        None | Some(Value::Null) => out.push_str("<no value>"),
                        Some(Value::String(text)) => out.push_str(text),
                        Some(other) => out.push_str(&other.to_string()),
                    }
                }
            }
        }
        out
    }
}

/// `.A.B` → `["A", "B"]`; `.` → `[]`.
fn field_path(action: &str) -> Result<Vec<String>, String> {
    let Some(path) = action.strip_prefix('.') else {
        return Err(format!(
            "template: only field paths such as {{{{ .Status.TaskID }}}} are supported, not {{{{ {action} }}}}"
        ));
    };
    if path.is_empty() {
        return Ok(Vec::new());
    }
    path.split('.')
        .map(|name| {
            if !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                Ok(name.to_owned())
            } else {
                Err(format!("template: bad field path {{{{ {action} }}}}"))
            }
        })
        .collect()
}

/// The member of `value` named `name`, without regard to case.
fn field<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    let object = value.as_object()?;
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::args::DEFAULT_LIST_FORMAT;

    fn entry() -> Value {
        json!({
            "status": {"taskId": "T1", "state": "pending", "runs": [], "workerType": "w"},
            "task": {"metadata": {"name": "build linux"}, "taskGroupId": "G"},
        })
    }

    #[test]
    fn the_default_format_prints_id_name_and_state() {
        let template = Template::parse(DEFAULT_LIST_FORMAT).unwrap();
        assert_eq!(template.render(&entry()), "T1 build linux pending");
    }

    #[test]
    fn fields_text_and_missing_values() {
        let template =
            Template::parse("{{.Task.TaskGroupID}}/{{ .Status.Runs }} {{- .Nope.X -}}!").unwrap();
        assert_eq!(template.render(&entry()), "G/[]<no value>!");
        assert_eq!(Template::parse("plain").unwrap().render(&entry()), "plain");
        let whole = Template::parse("{{ . }}").unwrap().render(&json!({"a": 1}));
        assert_eq!(whole, r#"{"a":1}"#);
    }

    #[test]
    fn other_actions_are_refused() {
        for bad in [
            "{{ if .A }}x{{ end }}",
            "{{ .A",
            "{{ .A..B }}",
            "{{ printf \"%s\" .A }}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
