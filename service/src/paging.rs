//! Continuation tokens: upstream's paging for list methods. A call passes
//! `limit` (page size, at most [`MAX_LIMIT`]) and the `continuationToken` of the
//! page before; a page that may have more after it carries a
//! `continuationToken`. The token is opaque to clients; here it is a keyset
//! position (the last key of the page) in URL-safe base64.

use crate::error::ApiError;
use serde_json::Value;
use std::collections::HashMap;

/// The largest page, and the page size when `limit` is not given.
pub const MAX_LIMIT: i64 = 1000;

/// An opaque continuation token for a keyset position.
pub fn encode_token(key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

/// The keyset position in a continuation token; 400 `InputError` for a token
/// this service did not make.
pub fn decode_token(t: &str) -> Result<String, ApiError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiError::Input(format!("Invalid continuationToken {t:?}")))
}

/// The `limit` and `continuationToken` query parameters: (page size, keyset
/// position). A `limit` that is not a positive integer is 400
/// `InvalidRequestArguments`; one above [`MAX_LIMIT`] is lowered to it.
pub fn paging(query: &HashMap<String, String>) -> Result<(i64, Option<String>), ApiError> {
    let limit = match query.get("limit") {
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| *l >= 1)
            .ok_or_else(|| {
                ApiError::InvalidRequestArguments(format!("limit {l:?} must be a positive integer"))
            })?
            .min(MAX_LIMIT),
        None => MAX_LIMIT,
    };
    let token = match query.get("continuationToken") {
        Some(t) if !t.is_empty() => Some(decode_token(t)?),
        _ => None,
    };
    Ok((limit, token))
}

/// A page of `items` fetched with `limit`, and its continuation token: a full
/// page gets one (the key of its last item), a short page is the last.
pub fn page<T>(items: Vec<T>, limit: i64, key: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
    let token = (items.len() as i64 == limit)
        .then(|| items.last().map(&key))
        .flatten()
        .map(|k| encode_token(&k));
    (items, token)
}

/// `v` with `continuationToken` set when there is one.
pub fn with_token(mut v: Value, token: Option<String>) -> Value {
    if let Some(t) = token {
        v["continuationToken"] = t.into();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn tokens_round_trip_and_foreign_tokens_are_refused() {
        let t = encode_token("proj/wt-1");
        assert_eq!(decode_token(&t).unwrap(), "proj/wt-1");
        let e = decode_token("%%%").unwrap_err();
        assert_eq!(e.code(), "InputError");
    }

    #[test]
    fn limits() {
        assert_eq!(paging(&query(&[])).unwrap(), (MAX_LIMIT, None));
        assert_eq!(paging(&query(&[("limit", "5000")])).unwrap().0, MAX_LIMIT);
        let t = encode_token("k");
        assert_eq!(
            paging(&query(&[("limit", "2"), ("continuationToken", &t)])).unwrap(),
            (2, Some("k".into()))
        );
        assert_eq!(
            paging(&query(&[("continuationToken", "")])).unwrap().1,
            None
        );
        for bad in ["0", "-1", "x"] {
            let e = paging(&query(&[("limit", bad)])).unwrap_err();
            assert_eq!(e.code(), "InvalidRequestArguments");
        }
    }

    #[test]
    fn a_full_page_has_a_token_a_short_one_not() {
        let (items, token) = page(vec!["a", "b"], 2, |s| s.to_string());
        assert_eq!(items, ["a", "b"]);
        assert_eq!(decode_token(token.as_deref().unwrap()).unwrap(), "b");
        let (_, token) = page(vec!["a"], 2, |s| s.to_string());
        assert_eq!(token, None);
        assert_eq!(with_token(json!({}), None), json!({}));
        assert_eq!(
            with_token(json!({}), Some("t".into())),
            json!({"continuationToken": "t"})
        );
    }
}
