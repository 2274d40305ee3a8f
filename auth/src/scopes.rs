//! Scope strings, scope satisfaction, scope expressions and scope-set normalisation.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::AuthError;

/// Whether the held scope `have` satisfies the required scope `required`.
///
/// A scope satisfies another if the two are equal, or if it ends in `*` and `required` starts
/// with everything before that `*` (the empty remainder counts, so `queue:*` satisfies `queue:`
/// and `*` satisfies everything). A `*` anywhere else is an ordinary character.
pub fn scope_matches(have: &str, required: &str) -> bool {
    match have.strip_suffix('*') {
        Some(prefix) => required.starts_with(prefix),
        None => have == required,
    }
}

/// Whether any scope in `have` satisfies `required` (see [`scope_matches`]).
pub fn scope_satisfied(have: &[String], required: &str) -> bool {
    have.iter().any(|s| scope_matches(s, required))
}

/// Whether `scope` is a valid scope string: printable ASCII (0x20 to 0x7e) only.
pub fn valid_scope(scope: &str) -> bool {
    scope.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// Check every scope with [`valid_scope`] and reject scopes ending in `**`, as TaskCluster
/// does for the scopes of roles, clients and tasks.
pub fn validate_scopes<S: AsRef<str>>(scopes: &[S]) -> Result<(), AuthError> {
    for scope in scopes {
        let scope = scope.as_ref();
        if !valid_scope(scope) {
            return Err(AuthError::InvalidScope {
                scope: scope.to_owned(),
                reason: "scopes may only contain printable ASCII characters".into(),
            });
        }
        if scope.ends_with("**") {
            return Err(AuthError::InvalidScope {
                scope: scope.to_owned(),
                reason: "scopes must not end with `**`".into(),
            });
        }
    }
    Ok(())
}

/// The TaskCluster scope ordering: ordinary string order, except that a trailing `*` sorts
/// before the end of the string, so `a*` < `a` < `a(` < `aa`.
///
/// In a list sorted this way every star scope comes directly before the scopes it satisfies,
/// which is what [`normalize_scopes`] relies on.
pub fn scope_compare(a: &str, b: &str) -> Ordering {
    let (a_base, a_star) = match a.strip_suffix('*') {
        Some(base) => (base, true),
        None => (a, false),
    };
    let (b_base, b_star) = match b.strip_suffix('*') {
        Some(base) => (base, true),
        None => (b, false),
    };
    if a_star != b_star && a_base == b_base {
        return if a_star {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    a_base.cmp(b_base)
}

/// Normalise a scope set: sort it with [`scope_compare`], remove duplicates, and remove every
/// scope that is satisfied by another (star) scope of the set.
///
/// Two normalised sets grant the same authority exactly when they are equal.
pub fn normalize_scopes(mut scopes: Vec<String>) -> Vec<String> {
    scopes.sort_unstable_by(|a, b| scope_compare(a, b));
    let mut out: Vec<String> = Vec::with_capacity(scopes.len());
    for scope in scopes {
        if let Some(last) = out.last()
            && scope_matches(last, &scope)
        {
            continue;
        }
        out.push(scope);
    }
    out
}

/// A scope expression, as used by TaskCluster API methods to state which scopes they need.
///
/// It serialises exactly like TaskCluster's: a plain string for one scope, `{"AllOf": [..]}`
/// or `{"AnyOf": [..]}` for combinations. `AllOf` of nothing is always satisfied, `AnyOf` of
/// nothing never is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ScopeExpr {
    /// A single required scope.
    Scope(String),
    /// Every sub-expression must be satisfied.
    AllOf {
        /// The sub-expressions.
        #[serde(rename = "AllOf")]
        all_of: Vec<ScopeExpr>,
    },
    /// At least one sub-expression must be satisfied.
    AnyOf {
        /// The sub-expressions.
        #[serde(rename = "AnyOf")]
        any_of: Vec<ScopeExpr>,
    },
}

impl ScopeExpr {
    /// An expression requiring one scope.
    pub fn scope(scope: impl Into<String>) -> Self {
        ScopeExpr::Scope(scope.into())
    }

    /// An expression requiring all of `exprs`.
    pub fn all_of<I, E>(exprs: I) -> Self
    where
        I: IntoIterator<Item = E>,
        E: Into<ScopeExpr>,
    {
        ScopeExpr::AllOf {
            all_of: exprs.into_iter().map(Into::into).collect(),
        }
    }

    /// An expression requiring at least one of `exprs`.
    pub fn any_of<I, E>(exprs: I) -> Self
    where
        I: IntoIterator<Item = E>,
        E: Into<ScopeExpr>,
    {
        ScopeExpr::AnyOf {
            any_of: exprs.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether the scope set `have` satisfies this expression.
    pub fn satisfied_by(&self, have: &[String]) -> bool {
        match self {
            ScopeExpr::Scope(s) => scope_satisfied(have, s),
            ScopeExpr::AllOf { all_of } => all_of.iter().all(|e| e.satisfied_by(have)),
            ScopeExpr::AnyOf { any_of } => any_of.iter().any(|e| e.satisfied_by(have)),
        }
    }

    /// The part of this expression that `have` does not satisfy, or `None` if it is satisfied.
    ///
    /// Satisfied scopes are dropped; an `AllOf` keeps only its unsatisfied members, an `AnyOf`
    /// is kept whole (with its members reduced) because any one of them would do; a
    /// combination left with one member is replaced by that member. This is the text a 403
    /// `InsufficientScopes` message shows as "missing".
    pub fn unsatisfied(&self, have: &[String]) -> Option<ScopeExpr> {
        match self {
            ScopeExpr::Scope(s) => (!scope_satisfied(have, s)).then(|| self.clone()),
            ScopeExpr::AllOf { all_of } => {
                let mut missing: Vec<ScopeExpr> =
                    all_of.iter().filter_map(|e| e.unsatisfied(have)).collect();
                match missing.len() {
                    0 => None,
                    1 => missing.pop(),
                    _ => Some(ScopeExpr::AllOf { all_of: missing }),
                }
            }
            ScopeExpr::AnyOf { any_of } => {
                let mut missing = Vec::with_capacity(any_of.len());
                for e in any_of {
                    missing.push(e.unsatisfied(have)?);
                }
                if missing.len() == 1 {
                    missing.pop()
                } else {
                    Some(ScopeExpr::AnyOf { any_of: missing })
                }
            }
        }
    }

    /// Whether every scope in the expression is a valid scope string (see [`valid_scope`]).
    pub fn is_valid(&self) -> bool {
        match self {
            ScopeExpr::Scope(s) => valid_scope(s),
            ScopeExpr::AllOf { all_of: v } | ScopeExpr::AnyOf { any_of: v } => {
                v.iter().all(ScopeExpr::is_valid)
            }
        }
    }
}

impl From<&str> for ScopeExpr {
    fn from(s: &str) -> Self {
        ScopeExpr::Scope(s.to_owned())
    }
}

impl From<String> for ScopeExpr {
    fn from(s: String) -> Self {
        ScopeExpr::Scope(s)
    }
}

impl From<&String> for ScopeExpr {
    fn from(s: &String) -> Self {
        ScopeExpr::Scope(s.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(scopes: &[&str]) -> Vec<String> {
        scopes.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_and_star_suffix_satisfaction() {
        assert!(scope_satisfied(&v(&["queue:x"]), "queue:x"));
        assert!(!scope_satisfied(&v(&["queue:x"]), "queue:xy"));
        assert!(scope_satisfied(&v(&["queue:*"]), "queue:x"));
        assert!(scope_satisfied(&v(&["queue:*"]), "queue:"));
        assert!(scope_satisfied(&v(&["queue:*"]), "queue:*"));
        assert!(!scope_satisfied(&v(&["queue:*"]), "queue"));
        assert!(scope_satisfied(&v(&["*"]), "anything at all"));
        assert!(scope_satisfied(&v(&["*"]), ""));
        assert!(!scope_satisfied(&[], "x"));
    }

    #[test]
    fn star_in_the_middle_is_literal() {
        assert!(!scope_satisfied(&v(&["queue:*:x"]), "queue:a:x"));
        assert!(scope_satisfied(&v(&["queue:*:x"]), "queue:*:x"));
        // a required scope ending in * is only satisfied by a scope covering that literal star
        assert!(!scope_satisfied(&v(&["queue:a"]), "queue:*"));
        assert!(scope_satisfied(&v(&["queue:**"]), "queue:*x"));
        assert!(!scope_satisfied(&v(&["queue:**"]), "queue:x"));
    }

    #[test]
    fn validity() {
        assert!(valid_scope("queue:create-task:highest:proj/*"));
        assert!(valid_scope(""));
        assert!(valid_scope("with space"));
        assert!(!valid_scope("tab\there"));
        assert!(!valid_scope("ü"));
        assert!(validate_scopes(&["a", "b*"]).is_ok());
        let err = validate_scopes(&["a", "b**"]).unwrap_err();
        assert!(matches!(err, AuthError::InvalidScope { ref scope, .. } if scope == "b**"));
        assert!(validate_scopes(&["new\nline"]).is_err());
    }

    #[test]
    fn compare_puts_star_first() {
        let mut s = v(&["b", "aa", "a(", "a", "a*", "", "*"]);
        s.sort_by(|a, b| scope_compare(a, b));
        assert_eq!(s, v(&["*", "", "a*", "a", "a(", "aa", "b"]));
    }

    #[test]
    fn normalize_sorts_dedups_and_drops_covered() {
        assert_eq!(
            normalize_scopes(v(&["q:1", "a", "q:*", "a", "q:2", "q", "b*", "bc"])),
            v(&["a", "b*", "q", "q:*"])
        );
        assert_eq!(normalize_scopes(v(&["x", "*", "y"])), v(&["*"]));
        assert_eq!(normalize_scopes(vec![]), Vec::<String>::new());
        // "a**" covers "a*x" but "a*" covers both
        assert_eq!(normalize_scopes(v(&["a*x", "a**"])), v(&["a**"]));
        assert_eq!(normalize_scopes(v(&["a*x", "a**", "a*"])), v(&["a*"]));
    }

    #[test]
    fn expressions_serialise_like_upstream() {
        let e = ScopeExpr::all_of([
            ScopeExpr::scope("a"),
            ScopeExpr::any_of(["b", "c"]),
            ScopeExpr::all_of(Vec::<ScopeExpr>::new()),
        ]);
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(
            j,
            json!({"AllOf": ["a", {"AnyOf": ["b", "c"]}, {"AllOf": []}]})
        );
        let back: ScopeExpr = serde_json::from_value(j).unwrap();
        assert_eq!(back, e);
        let s: ScopeExpr = serde_json::from_value(json!("x")).unwrap();
        assert_eq!(s, ScopeExpr::scope("x"));
        let any: ScopeExpr = serde_json::from_value(json!({"AnyOf": []})).unwrap();
        assert_eq!(any, ScopeExpr::AnyOf { any_of: vec![] });
        assert!(serde_json::from_value::<ScopeExpr>(json!(5)).is_err());
    }

    #[test]
    fn expression_satisfaction() {
        let have = v(&["a", "q:*"]);
        assert!(ScopeExpr::scope("q:x").satisfied_by(&have));
        assert!(ScopeExpr::all_of(["a", "q:1"]).satisfied_by(&have));
        assert!(!ScopeExpr::all_of(["a", "b"]).satisfied_by(&have));
        assert!(ScopeExpr::any_of(["b", "a"]).satisfied_by(&have));
        assert!(!ScopeExpr::any_of(["b", "c"]).satisfied_by(&have));
        assert!(ScopeExpr::all_of(Vec::<ScopeExpr>::new()).satisfied_by(&[]));
        assert!(!ScopeExpr::any_of(Vec::<ScopeExpr>::new()).satisfied_by(&have));
    }

    #[test]
    fn unsatisfied_reports_the_missing_part() {
        let have = v(&["a", "q:*"]);
        assert_eq!(ScopeExpr::scope("a").unsatisfied(&have), None);
        assert_eq!(
            ScopeExpr::scope("b").unsatisfied(&have),
            Some(ScopeExpr::scope("b"))
        );
        assert_eq!(
            ScopeExpr::all_of(["a", "b", "q:1", "c"]).unsatisfied(&have),
            Some(ScopeExpr::all_of(["b", "c"]))
        );
        assert_eq!(
            ScopeExpr::all_of(["a", "b"]).unsatisfied(&have),
            Some(ScopeExpr::scope("b"))
        );
        assert_eq!(ScopeExpr::any_of(["b", "a"]).unsatisfied(&have), None);
        assert_eq!(
            ScopeExpr::any_of([ScopeExpr::all_of(["a", "b"]), ScopeExpr::scope("c")])
                .unsatisfied(&have),
            Some(ScopeExpr::any_of(["b", "c"]))
        );
        assert_eq!(
            ScopeExpr::any_of(Vec::<ScopeExpr>::new()).unsatisfied(&have),
            Some(ScopeExpr::any_of(Vec::<ScopeExpr>::new()))
        );
        assert_eq!(
            ScopeExpr::all_of(Vec::<ScopeExpr>::new()).unsatisfied(&have),
            None
        );
    }
}
