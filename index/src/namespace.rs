//! Index paths and namespaces: upstream's format (dot-separated words, no `/`)
//! and the split of a path into its namespace and its last word.

use bbb_service::ApiError;
use regex::Regex;
use std::sync::LazyLock;

/// Upstream's pattern of a namespace or an index path, as it prints it in errors.
pub const FORMAT: &str = r"^([a-zA-Z0-9_!~*'()%-]+\.)*[a-zA-Z0-9_!~*'()%-]+$";

static FORMAT_RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(FORMAT).expect("regex"));

/// Whether `s` is a valid namespace or index path.
pub fn is_valid(s: &str) -> bool {
    FORMAT_RE.is_match(s)
}

/// `a.b.c` as its namespace `a.b` and name `c`; a path without a dot is a
/// name in the root namespace `""`.
pub fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('.').unwrap_or(("", path))
}

/// The path of the name `name` in `namespace` (no dot when either is empty).
pub fn join(namespace: &str, name: &str) -> String {
    if namespace.is_empty() || name.is_empty() {
        format!("{namespace}{name}")
    } else {
        format!("{namespace}.{name}")
    }
}

/// The namespace `namespace` and every namespace above it, each as (parent,
/// name), from the top: `a.b` gives `("", "a")` and `("a", "b")`; the root
/// gives none.
pub fn with_ancestors(namespace: &str) -> Vec<(String, String)> {
    if namespace.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut parent = String::new();
    for word in namespace.split('.') {
        out.push((parent.clone(), word.to_string()));
        parent = join(&parent, word);
    }
    out
}

/// The URL parameter check of `namespace` and `indexPath`: upstream's message.
fn check(param: &str, value: &str) -> Result<String, ApiError> {
    if is_valid(value) {
        return Ok(value.to_string());
    }
    Err(ApiError::InvalidRequestArguments(format!(
        "Invalid URL patterns:\nURL parameter '{param}' given as '{value}' must match regular expression: '/{FORMAT}/'"
    )))
}

/// The check of the URL parameter `namespace`.
pub fn namespace_param(value: &str) -> Result<String, ApiError> {
    check("namespace", value)
}

/// The check of the URL parameter `indexPath`.
pub fn index_path_param(value: &str) -> Result<String, ApiError> {
    check("indexPath", value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        for ok in [
            "a",
            "a.b.c",
            "gecko-v2.mozilla-central.latest",
            "x_!~*'()%-",
        ] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in ["", ".", "a..b", "a.", ".a", "a/b", "a b", "ä"] {
            assert!(!is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn splits_and_joins() {
        assert_eq!(split("a.b.c"), ("a.b", "c"));
        assert_eq!(split("c"), ("", "c"));
        assert_eq!(join("a.b", "c"), "a.b.c");
        assert_eq!(join("", "c"), "c");
        assert_eq!(
            with_ancestors("a.b.c"),
            [
                ("".to_string(), "a".to_string()),
                ("a".to_string(), "b".to_string()),
                ("a.b".to_string(), "c".to_string()),
            ]
        );
        assert!(with_ancestors("").is_empty());
    }

    #[test]
    fn bad_parameters_get_upstreams_message() {
        let e = namespace_param("a..b").unwrap_err();
        assert_eq!(e.code(), "InvalidRequestArguments");
        assert_eq!(
            e.to_string(),
            "Invalid URL patterns:\nURL parameter 'namespace' given as 'a..b' must match \
             regular expression: '/^([a-zA-Z0-9_!~*'()%-]+\\.)*[a-zA-Z0-9_!~*'()%-]+$/'"
        );
        assert_eq!(index_path_param("a.b").unwrap(), "a.b");
    }
}
