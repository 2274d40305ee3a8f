#![doc = include_str!("../README.md")]

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bbb_auth::Credentials;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "bbb-session";

/// A signed-in user and the credentials the UI uses for them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignedIn {
    /// The user's name, as in their role `login-identity:<user>`.
    pub user: String,
    /// Their temporary credentials.
    pub credentials: Credentials,
    /// When the credentials (and so the session) expire.
    pub expires: DateTime<Utc>,
}

/// Sign-in: tells who a request comes from.
#[derive(Clone, Debug, Default)]
pub struct Login {}

impl Login {
    /// The user a request comes from, if signed in and the session has not expired.
    pub fn signed_in(&self, headers: &HeaderMap) -> Option<SignedIn> {
        let session = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(name, _)| *name == SESSION_COOKIE)
            .map(|(_, value)| value)?;
        let bytes = URL_SAFE_NO_PAD.decode(session).ok()?;
        let signed_in: SignedIn = serde_json::from_slice(&bytes).ok()?;
        (signed_in.expires > Utc::now()).then_some(signed_in)
    }

    /// The `Set-Cookie` value that signs `who` in.
    pub fn session_cookie(&self, who: &SignedIn) -> String {
        let value = URL_SAFE_NO_PAD.encode(serde_json::to_vec(who).expect("serialisable"));
        let max_age = (who.expires - Utc::now()).num_seconds().max(0);
        format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}")
    }
}
