//! Request validation shared by the services: the identifiers TaskCluster
//! uses, URL parameter checks and strict JSON bodies, each refused with
//! upstream's error code.

use crate::error::{ApiError, Result};
use regex::Regex;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::LazyLock;

static SLUGID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[A-Za-z0-9_-]{8}[Q-T][A-Za-z0-9_-][CGKOSWaeimquy26-][A-Za-z0-9_-]{10}[AQgw]$")
        .expect("regex")
});
static IDENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9_-]{1,38}$").expect("regex"));

/// Is `s` a slugid (taskId, taskGroupId)?
pub fn is_slugid(s: &str) -> bool {
    SLUGID.is_match(s)
}

/// Is `s` an identifier (provisionerId, schedulerId, workerGroup, workerId)?
pub fn is_identifier(s: &str) -> bool {
    IDENT.is_match(s)
}

/// A fresh "nice" slugid (a v4 UUID, URL-safe base64, first bit clear).
pub fn slugid() -> String {
    use base64::Engine;
    let mut b = *uuid::Uuid::new_v4().as_bytes();
    b[0] &= 0x7f;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Check a URL parameter, giving `InvalidRequestArguments` like upstream.
pub fn param(name: &str, value: &str, ok: bool) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(ApiError::InvalidRequestArguments(format!(
            "Invalid URL parameter `{name}`: {value:?} does not match the expected pattern"
        )))
    }
}

/// A 400 `InputValidationError` saying `msg`, as a schema mismatch reads.
pub fn schema_error(msg: impl Into<String>) -> ApiError {
    ApiError::InputValidation(format!("Schema validation error: {}", msg.into()))
}

/// `v` as a `T` (which should deny unknown fields, as upstream's schemas set
/// `additionalProperties: false`); a mismatch is 400 `InputValidationError`.
pub fn strict<T: DeserializeOwned>(v: &Value) -> Result<T> {
    serde_json::from_value(v.clone()).map_err(|e| schema_error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugids_match_the_pattern() {
        for _ in 0..1000 {
            let s = slugid();
            assert!(is_slugid(&s), "{s}");
        }
        assert!(!is_slugid("not-a-slug"));
    }

    #[test]
    fn strict_bodies() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Req {
            reason: String,
        }
        assert!(strict::<Req>(&serde_json::json!({"reason": "x"})).is_ok());
        let e = strict::<Req>(&serde_json::json!({"reason": "x", "other": 1})).unwrap_err();
        assert_eq!(e.code(), "InputValidationError");
        assert!(e.to_string().starts_with("Schema validation error: "));
        let e = param("taskId", "x", false).unwrap_err();
        assert_eq!(e.code(), "InvalidRequestArguments");
    }
}
