//! JSON Schema checks worded as upstream's validator (Ajv) words them: request
//! bodies against this service's schemas, trigger payloads against a hook's
//! `triggerSchema`, and a `triggerSchema` against the JSON Schema meta-schema.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::meta::MetaValidator;
use jsonschema::{Draft, ValidationError, Validator};
use serde_json::Value;
use std::sync::LazyLock;

/// One schema violation: where in the instance (a JSON pointer, empty for the
/// root) and what is wrong, in Ajv's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// JSON pointer to the offending value (`/bindings/0`).
    pub path: String,
    /// What is wrong (`must have required property 'exchange'`).
    pub message: String,
}

/// Ajv's `errorsText`: each problem as `data<path> <message>`, joined with
/// `separator`.
pub fn errors_text(problems: &[Problem], separator: &str) -> String {
    problems
        .iter()
        .map(|p| format!("data{} {}", p.path, p.message))
        .collect::<Vec<_>>()
        .join(separator)
}

/// A validator for `schema` (JSON Schema draft 7, as upstream's default, with
/// formats checked), or why `schema` cannot be one.
pub fn compile(schema: &Value) -> Result<Validator, String> {
    jsonschema::options()
        .with_draft(Draft::Draft7)
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| e.to_string())
}

/// Every violation of `validator` by `instance` (all of them, as upstream's
/// `allErrors`).
pub fn problems(validator: &Validator, instance: &Value) -> Vec<Problem> {
    validator.iter_errors(instance).flat_map(explain).collect()
}

/// Every violation of `schema` by `instance`; a schema that does not compile
/// is one problem saying why.
pub fn check(schema: &Value, instance: &Value) -> Vec<Problem> {
    match compile(schema) {
        Ok(v) => problems(&v, instance),
        Err(reason) => vec![Problem {
            path: String::new(),
            message: reason,
        }],
    }
}

/// What is wrong with `schema` as a JSON Schema: its violations of the draft 7
/// meta-schema, or, when it passes that but still cannot be compiled (an
/// unresolvable `$ref`, a bad regular expression), that reason. Empty when
/// `schema` is usable.
pub fn schema_problems(schema: &Value) -> Vec<Problem> {
    let found: Vec<Problem> = META.iter_errors(schema).flat_map(explain).collect();
    if !found.is_empty() {
        return found;
    }
    match compile(schema) {
        Ok(_) => Vec::new(),
        Err(reason) => vec![Problem {
            path: String::new(),
            message: reason,
        }],
    }
}

/// The draft 7 meta-schema's validator.
static META: LazyLock<MetaValidator<'static>> = LazyLock::new(jsonschema::draft7::meta::validator);

/// The problems one validation error stands for, in Ajv's words (Ajv reports
/// each unexpected property on its own).
fn explain(e: ValidationError<'_>) -> Vec<Problem> {
    let path = e.instance_path().as_str().to_owned();
    let one = |message: String| {
        vec![Problem {
            path: path.clone(),
            message,
        }]
    };
    match e.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|_| Problem {
                path: path.clone(),
                message: "must NOT have additional properties".into(),
            })
            .collect(),
        ValidationErrorKind::AdditionalItems { limit } => {
            one(format!("must NOT have more than {limit} items"))
        }
        ValidationErrorKind::AnyOf { .. } => one("must match a schema in anyOf".into()),
        ValidationErrorKind::OneOfNotValid { .. }
        | ValidationErrorKind::OneOfMultipleValid { .. } => {
            one("must match exactly one schema in oneOf".into())
        }
        ValidationErrorKind::Constant { .. } => one("must be equal to constant".into()),
        ValidationErrorKind::Contains => one("must contain at least 1 valid item(s)".into()),
        ValidationErrorKind::Enum { .. } => {
            one("must be equal to one of the allowed values".into())
        }
        ValidationErrorKind::ExclusiveMaximum { limit } => one(format!("must be < {limit}")),
        ValidationErrorKind::ExclusiveMinimum { limit } => one(format!("must be > {limit}")),
        ValidationErrorKind::Maximum { limit } => one(format!("must be <= {limit}")),
        ValidationErrorKind::Minimum { limit } => one(format!("must be >= {limit}")),
        ValidationErrorKind::FalseSchema => one("boolean schema is false".into()),
        ValidationErrorKind::Format { format } => one(format!("must match format \"{format}\"")),
        ValidationErrorKind::MaxItems { limit } => {
            one(format!("must NOT have more than {limit} items"))
        }
        ValidationErrorKind::MinItems { limit } => {
            one(format!("must NOT have fewer than {limit} items"))
        }
        ValidationErrorKind::MaxLength { limit } => {
            one(format!("must NOT have more than {limit} characters"))
        }
        ValidationErrorKind::MinLength { limit } => {
            one(format!("must NOT have fewer than {limit} characters"))
        }
        ValidationErrorKind::MaxProperties { limit } => {
            one(format!("must NOT have more than {limit} properties"))
        }
        ValidationErrorKind::MinProperties { limit } => {
            one(format!("must NOT have fewer than {limit} properties"))
        }
        ValidationErrorKind::MultipleOf { multiple_of } => {
            one(format!("must be multiple of {multiple_of}"))
        }
        ValidationErrorKind::Not { .. } => one("must NOT be valid".into()),
        ValidationErrorKind::Pattern { pattern } => {
            one(format!("must match pattern \"{pattern}\""))
        }
        ValidationErrorKind::PropertyNames { .. } => one("property name must be valid".into()),
        ValidationErrorKind::Required { property } => one(format!(
            "must have required property '{}'",
            property.as_str().unwrap_or_default()
        )),
        ValidationErrorKind::Type { kind } => one(format!("must be {}", type_names(kind))),
        ValidationErrorKind::UniqueItems => one("must NOT have duplicate items".into()),
        _ => one(e.to_string()),
    }
}

/// `string` or `string,number`, as Ajv names expected types.
fn type_names(kind: &TypeKind) -> String {
    match kind {
        TypeKind::Single(t) => t.to_string(),
        TypeKind::Multiple(set) => set
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(","),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn texts(schema: Value, instance: Value) -> String {
        let v = compile(&schema).unwrap();
        errors_text(&problems(&v, &instance), "; ")
    }

    #[test]
    fn messages_read_as_upstreams() {
        let schema = json!({
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "n": {"type": "integer", "minimum": 2},
                "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true},
                "mail": {"type": "string", "format": "email"},
            },
            "required": ["location"],
            "additionalProperties": false,
        });
        assert_eq!(
            texts(schema.clone(), json!({"location": 28})),
            "data/location must be string"
        );
        assert_eq!(
            texts(schema.clone(), json!({})),
            "data must have required property 'location'"
        );
        assert_eq!(
            texts(schema.clone(), json!({"location": "x", "a": 1, "b": 2})),
            "data must NOT have additional properties; data must NOT have additional properties"
        );
        assert_eq!(
            texts(schema.clone(), json!({"location": "x", "n": 1})),
            "data/n must be >= 2"
        );
        assert_eq!(
            texts(schema.clone(), json!({"location": "x", "tags": ["a", "a"]})),
            "data/tags must NOT have duplicate items"
        );
        assert_eq!(
            texts(schema, json!({"location": "x", "mail": "nope"})),
            "data/mail must match format \"email\""
        );
        assert_eq!(
            texts(json!({"type": ["string", "null"]}), json!(1)),
            "data must be null,string"
        );
    }

    #[test]
    fn schemas_are_checked_against_the_meta_schema() {
        assert!(schema_problems(&json!({"type": "object"})).is_empty());
        let bad = schema_problems(&json!({"type": "beer"}));
        assert!(!bad.is_empty());
        assert!(bad.iter().all(|p| p.path == "/type"), "{bad:?}");
        assert!(
            bad.iter().any(|p| p.message.starts_with("must ")),
            "{bad:?}"
        );
        let unresolvable = schema_problems(&json!({"$ref": "#/definitions/none"}));
        assert_eq!(unresolvable.len(), 1, "{unresolvable:?}");
    }
}
