//! The scopes an endpoint requires, declared as upstream declares them: a scope
//! expression whose scopes name parameters in angle brackets
//! (`queue:get-task:<taskId>`), expanded for each call with the URL parameters
//! and whatever else the handler knows (a task's `schedulerId`, a body's
//! `routes`), then checked against the caller's scopes.

use crate::error::ApiError;
use bbb_auth::ScopeExpr;
use std::collections::HashMap;

/// A scope expression with parameters, as an endpoint declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScopeTemplate {
    /// One scope; each `<name>` in it is replaced by the parameter `name`.
    Scope(String),
    /// Every one of these.
    AllOf(Vec<ScopeTemplate>),
    /// At least one of these.
    AnyOf(Vec<ScopeTemplate>),
    /// Upstream's `{for: var, in: list, each: scope}`: the scope `each` once per
    /// element of the list parameter `list` (bound to `var`), spliced into the
    /// enclosing `AllOf` or `AnyOf`.
    ForEach {
        /// The name each element is bound to in `each`.
        var: String,
        /// The list parameter.
        list: String,
        /// The scope, with `<var>` and any other parameter.
        each: String,
    },
}

/// `scope`, which may name parameters: `queue:get-task:<taskId>`.
pub fn scope(scope: impl Into<String>) -> ScopeTemplate {
    ScopeTemplate::Scope(scope.into())
}

/// Every one of `parts`.
pub fn all_of(parts: impl IntoIterator<Item = ScopeTemplate>) -> ScopeTemplate {
    ScopeTemplate::AllOf(parts.into_iter().collect())
}

/// At least one of `parts`.
pub fn any_of(parts: impl IntoIterator<Item = ScopeTemplate>) -> ScopeTemplate {
    ScopeTemplate::AnyOf(parts.into_iter().collect())
}

/// The scope `each` for every element of the list parameter `list`, bound to
/// `var`: `for_each("route", "routes", "queue:route:<route>")`.
pub fn for_each(var: &str, list: &str, each: &str) -> ScopeTemplate {
    ScopeTemplate::ForEach {
        var: var.into(),
        list: list.into(),
        each: each.into(),
    }
}

/// The value of one template parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamValue {
    /// A string, for `<name>`.
    One(String),
    /// A list, for [`ScopeTemplate::ForEach`].
    List(Vec<String>),
}

/// The parameters a template is expanded with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeParams(HashMap<String, ParamValue>);

impl ScopeParams {
    /// No parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// With the string parameter `name`.
    pub fn set(mut self, name: &str, value: impl Into<String>) -> Self {
        self.0.insert(name.into(), ParamValue::One(value.into()));
        self
    }

    /// With the list parameter `name`.
    pub fn list<I, T>(mut self, name: &str, values: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let values = values.into_iter().map(Into::into).collect();
        self.0.insert(name.into(), ParamValue::List(values));
        self
    }

    /// The parameter `name`.
    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.0.get(name)
    }

    /// Every parameter of `other` added (replacing those of the same name).
    pub fn merge(mut self, other: ScopeParams) -> Self {
        self.0.extend(other.0);
        self
    }
}

impl ScopeTemplate {
    /// The names of the parameters this template needs.
    pub fn params(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_params(&mut out);
        out
    }

    fn collect_params(&self, out: &mut Vec<String>) {
        match self {
            ScopeTemplate::Scope(s) => out.extend(placeholders(s).map(str::to_string)),
            ScopeTemplate::AllOf(v) | ScopeTemplate::AnyOf(v) => {
                v.iter().for_each(|t| t.collect_params(out))
            }
            ScopeTemplate::ForEach { var, list, each } => {
                out.push(list.clone());
                out.extend(placeholders(each).filter(|p| p != var).map(str::to_string));
            }
        }
    }

    /// The scope expression for `params`. A parameter the template names and
    /// `params` lacks (or holds as the wrong kind) is the service's own bug: an
    /// internal error.
    pub fn expand(&self, params: &ScopeParams) -> Result<ScopeExpr, ApiError> {
        Ok(match self {
            ScopeTemplate::Scope(s) => ScopeExpr::Scope(substitute(s, params, None)?),
            ScopeTemplate::AllOf(v) => ScopeExpr::AllOf {
                all_of: expand_all(v, params)?,
            },
            ScopeTemplate::AnyOf(v) => ScopeExpr::AnyOf {
                any_of: expand_all(v, params)?,
            },
            f @ ScopeTemplate::ForEach { .. } => ScopeExpr::AllOf {
                all_of: expand_all(std::slice::from_ref(f), params)?,
            },
        })
    }
}

fn expand_all(v: &[ScopeTemplate], params: &ScopeParams) -> Result<Vec<ScopeExpr>, ApiError> {
    let mut out = Vec::with_capacity(v.len());
    for t in v {
        match t {
            ScopeTemplate::ForEach { var, list, each } => match params.get(list) {
                Some(ParamValue::List(items)) => {
                    for item in items {
                        out.push(ScopeExpr::Scope(substitute(
                            each,
                            params,
                            Some((var, item)),
                        )?));
                    }
                }
                _ => {
                    return Err(ApiError::Internal(format!(
                        "scope template: no list parameter {list:?}"
                    )));
                }
            },
            t => out.push(t.expand(params)?),
        }
    }
    Ok(out)
}

/// The names in angle brackets in `s`.
fn placeholders(s: &str) -> impl Iterator<Item = &str> {
    s.split('<')
        .skip(1)
        .filter_map(|rest| rest.split_once('>').map(|(name, _)| name))
}

/// `s` with each `<name>` replaced, in one pass (a value is never scanned again).
fn substitute(
    s: &str,
    params: &ScopeParams,
    bound: Option<(&str, &str)>,
) -> Result<String, ApiError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find('<') {
        let Some(len) = rest[start..].find('>') else {
            break;
        };
        let name = &rest[start + 1..start + len];
        out.push_str(&rest[..start]);
        match (bound, params.get(name)) {
            (Some((var, value)), _) if var == name => out.push_str(value),
            (_, Some(ParamValue::One(value))) => out.push_str(value),
            _ => {
                return Err(ApiError::Internal(format!(
                    "scope template {s:?}: no parameter {name:?}"
                )));
            }
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Check `expr` against `scopes`; otherwise 403 `InsufficientScopes` with
/// upstream's wording: who is calling, what is missing, what they have, and
/// the whole expression.
pub fn authorize(
    client_id: Option<&str>,
    scopes: &[String],
    expr: &ScopeExpr,
) -> Result<(), ApiError> {
    if expr.satisfied_by(scopes) {
        return Ok(());
    }
    let missing = expr.unsatisfied(scopes).unwrap_or_else(|| expr.clone());
    let pretty = |v: &ScopeExpr| serde_json::to_string_pretty(v).unwrap_or_default();
    Err(ApiError::InsufficientScopes(format!(
        "Client ID {} does not have sufficient scopes and is missing the following scopes:\n\n```\n{}\n```\n\nYou have the following scopes:\n\n```\n{}\n```\n\nThis request requires the client to satisfy the following scope expression:\n\n```\n{}\n```",
        client_id.unwrap_or("anonymous"),
        pretty(&missing),
        serde_json::to_string_pretty(scopes).unwrap_or_default(),
        pretty(expr)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_parameters_and_lists() {
        let t = all_of([
            for_each("scope", "scopes", "<scope>"),
            for_each("route", "routes", "queue:route:<route>"),
            scope("queue:scheduler-id:<schedulerId>"),
            any_of([for_each(
                "priority",
                "priorities",
                "queue:create-task:<priority>:<taskQueueId>",
            )]),
        ]);
        let params = ScopeParams::new()
            .list("scopes", ["a:<b>"])
            .list("routes", ["index.x", "index.y"])
            .set("schedulerId", "s")
            .list("priorities", ["highest", "high"])
            .set("taskQueueId", "p/w");
        let s = |x: &str| ScopeExpr::Scope(x.into());
        assert_eq!(
            t.expand(&params).unwrap(),
            ScopeExpr::AllOf {
                all_of: vec![
                    s("a:<b>"),
                    s("queue:route:index.x"),
                    s("queue:route:index.y"),
                    s("queue:scheduler-id:s"),
                    ScopeExpr::AnyOf {
                        any_of: vec![
                            s("queue:create-task:highest:p/w"),
                            s("queue:create-task:high:p/w"),
                        ]
                    },
                ]
            }
        );
        let mut names = t.params();
        names.sort();
        assert_eq!(
            names,
            [
                "priorities",
                "routes",
                "schedulerId",
                "scopes",
                "taskQueueId"
            ]
        );
    }

    #[test]
    fn a_missing_parameter_is_an_internal_error() {
        let e = scope("queue:get-task:<taskId>")
            .expand(&ScopeParams::new())
            .unwrap_err();
        assert!(e.is_internal(), "{e}");
        let e = all_of([for_each("r", "routes", "x:<r>")])
            .expand(&ScopeParams::new().set("routes", "not a list"))
            .unwrap_err();
        assert!(e.is_internal(), "{e}");
    }

    #[test]
    fn refusal_names_what_is_missing() {
        let expr = all_of([scope("a"), scope("b")])
            .expand(&ScopeParams::new())
            .unwrap();
        assert!(authorize(Some("c"), &["*".into()], &expr).is_ok());
        let e = authorize(Some("c"), &["a".into()], &expr).unwrap_err();
        assert_eq!(e.code(), "InsufficientScopes");
        let text = e.to_string();
        assert!(text.starts_with("Client ID c does not have sufficient scopes"));
        assert!(text.contains("missing the following scopes:\n\n```\n\"b\"\n```"));
    }
}
