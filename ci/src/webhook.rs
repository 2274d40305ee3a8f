//! The GitHub-compatible push webhook, `POST <rootUrl>/api/ci/v1/github/<project>`:
//! a `push` event signed with the repository's webhook secret
//! (`X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body, hex>`) records
//! the push to a followed branch. A request whose signature is missing or
//! wrong is refused (401) before its body is read for anything else, and
//! leaves no trace but a log line. `ping` events are answered; other events,
//! deleted branches and branches bbb does not follow are acknowledged and
//! ignored.

use crate::Ci;
use crate::store::NewPush;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bbb_service::{ApiError, error_response};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// The path below the root URL.
pub const PATH: &str = "/api/ci/v1/github/{project}";

/// The webhook's route.
pub fn routes(ci: Ci) -> Router {
    Router::new()
        .route(PATH, axum::routing::post(receive))
        .with_state(ci)
}

/// Whether `signature` (the header's value) is `sha256=` and the HMAC-SHA256
/// of `body` under `secret`, compared in constant time.
pub fn signature_matches(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Some(hex) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Some(given) = decode_hex(hex) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// The `X-Hub-Signature-256` value of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

async fn receive(
    State(ci): State<Ci>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(&ci, &project, &headers, &body).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => error_response(
            &e,
            "githubWebhook",
            json!({"project": project}),
            Value::Null,
            &ci.clock,
        ),
    }
}

async fn handle(
    ci: &Ci,
    project: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, ApiError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let repo = ci
        .store
        .repository(project)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("No repository {project}")))?;
    let Some(secret) = &repo.webhook_secret else {
        return Err(ApiError::Authentication(format!(
            "Repository {project} has no webhook secret; webhooks are refused"
        )));
    };
    if !signature_matches(
        secret.expose().as_bytes(),
        body,
        header("x-hub-signature-256"),
    ) {
        tracing::warn!(ci.project = %project, "webhook refused: bad or missing X-Hub-Signature-256");
        return Err(ApiError::Authentication(
            "X-Hub-Signature-256 does not match the body and the repository's secret".into(),
        ));
    }
    let event = header("x-github-event");
    if event == "ping" {
        return Ok(json!({"recorded": false, "reason": "ping"}));
    }
    if event != "push" {
        return Ok(json!({"recorded": false, "reason": format!("event {event:?} is not a push")}));
    }
    if repo.kind == crate::Kind::Hg {
        // Its pushes come from its pushlog, keyed by pushlog id: one
        // recorded from here too would be recorded twice.
        return Ok(
            json!({"recorded": false, "reason": "a Mercurial repository's pushes come from its pushlog"}),
        );
    }
    let payload: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::MalformedPayload(format!("the body is not JSON: {e}")))?;
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let Some(branch) = payload["ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("refs/heads/"))
    else {
        return Ok(json!({"recorded": false, "reason": "not a branch"}));
    };
    let Some(after) = text(&payload["after"]).filter(|a| a.chars().any(|c| c != '0')) else {
        return Ok(json!({"recorded": false, "reason": "the branch was deleted"}));
    };
    if !after.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::Input(format!(
            "`after` {after:?} is not a revision"
        )));
    }
    let before = text(&payload["before"]).filter(|b| b.chars().any(|c| c != '0'));
    let owner = text(&payload["pusher"]["email"])
        .or_else(|| text(&payload["pusher"]["name"]))
        .unwrap_or_else(|| "unknown".into());
    if repo.branch(branch).is_none() {
        return Ok(
            json!({"recorded": false, "reason": format!("branch {branch} is not followed")}),
        );
    }
    let push = NewPush {
        project: repo.project.clone(),
        branch: branch.to_owned(),
        revision: after,
        base_revision: before,
        owner,
        pushdate: ci.clock.now_ms(),
        source: "webhook",
    };
    Ok(match ci.record(&push).await? {
        Some(id) => json!({"recorded": true, "pushId": id}),
        None => json!({"recorded": false, "reason": "already recorded"}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        let s = sign(b"key", b"body");
        assert!(signature_matches(b"key", b"body", &s));
        assert!(!signature_matches(b"other", b"body", &s));
        assert!(!signature_matches(b"key", b"body!", &s));
        assert!(!signature_matches(
            b"key",
            b"body",
            s.trim_start_matches("sha256=")
        ));
        assert!(!signature_matches(b"key", b"body", "sha256=zz"));
        // GitHub's documented example.
        assert_eq!(
            sign(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
