//! Temporary credentials: certificates, their signatures, and issuing them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::AuthError;
use crate::hawk::{hmac_b64, hmac_sha256};
use crate::scopes::valid_scope;

/// The longest a certificate may be valid (`expiry - start`).
pub const MAX_CERTIFICATE_LIFETIME: TimeDelta = TimeDelta::days(31);
/// The clock skew allowed on certificate `start` and `expiry`.
pub const CERTIFICATE_SKEW: TimeDelta = TimeDelta::minutes(5);

/// A set of credentials as TaskCluster clients take them (`credentials` in the Python client,
/// `Credentials` in the Rust one).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// The client id to send in the Hawk `id`.
    pub client_id: String,
    /// The Hawk key.
    pub access_token: String,
    /// For temporary credentials, the certificate as a JSON string, exactly as the upstream
    /// clients expect in `credentials.certificate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("access_token", &"<redacted>")
            .field(
                "certificate",
                &self.certificate.as_ref().map(|_| "<certificate>"),
            )
            .finish()
    }
}

/// The certificate of temporary credentials, as serialised into `credentials.certificate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Certificate {
    pub version: u32,
    pub scopes: Vec<String>,
    pub start: i64,
    pub expiry: i64,
    pub seed: String,
    pub signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

/// The text a certificate signature covers. `named` is `(clientId, issuer)` for named
/// credentials.
pub(crate) fn signature_text(
    named: Option<(&str, &str)>,
    seed: &str,
    start: i64,
    expiry: i64,
    scopes: &[String],
) -> String {
    let mut lines = vec!["version:1".to_owned()];
    if let Some((client_id, issuer)) = named {
        lines.push(format!("clientId:{client_id}"));
        lines.push(format!("issuer:{issuer}"));
    }
    lines.push(format!("seed:{seed}"));
    lines.push(format!("start:{start}"));
    lines.push(format!("expiry:{expiry}"));
    lines.push("scopes:".to_owned());
    lines.extend(scopes.iter().cloned());
    lines.join("\n")
}

/// The Hawk key of temporary credentials: URL-safe base64 without padding of
/// HMAC-SHA256(issuer access token, seed).
pub(crate) fn temporary_key(issuer_access_token: &str, seed: &str) -> String {
    URL_SAFE_NO_PAD.encode(hmac_sha256(issuer_access_token.as_bytes(), seed.as_bytes()))
}

/// Certificate signature: standard base64 of HMAC-SHA256(issuer access token, text).
pub(crate) fn sign(issuer_access_token: &str, text: &str) -> String {
    hmac_b64(issuer_access_token, text)
}

/// A fresh 44-character seed: two random slugs (URL-safe base64 of 16 random bytes each).
fn new_seed() -> String {
    let a: [u8; 16] = rand::random();
    let b: [u8; 16] = rand::random();
    format!("{}{}", URL_SAFE_NO_PAD.encode(a), URL_SAFE_NO_PAD.encode(b))
}

/// Issue temporary credentials signed with the issuer's permanent credentials, as the
/// TaskCluster clients' `createTemporaryCredentials` / `create_named_temp_creds` do.
///
/// With `named_client_id`, the credentials are *named*: their client id is that name, the
/// certificate records the issuer, and the verifier requires the issuer to hold
/// `auth:create-client:<name>`. Without it they are used under the issuer's client id. The
/// verifier also requires the issuer's scopes to satisfy every scope in `scopes`.
///
/// Fails if `expiry` is not after `start`, if the validity exceeds 31 days, if a scope is not
/// valid, or if the name is empty or equal to the issuer's id.
pub fn create_temporary_credentials(
    issuer_client_id: &str,
    issuer_access_token: &str,
    named_client_id: Option<&str>,
    scopes: &[String],
    start: DateTime<Utc>,
    expiry: DateTime<Utc>,
) -> Result<Credentials, AuthError> {
    let bad = |m: &str| AuthError::InvalidCredentialsRequest(m.to_owned());
    if issuer_client_id.is_empty() || issuer_access_token.is_empty() {
        return Err(bad(
            "the issuer's client id and access token must not be empty",
        ));
    }
    if expiry <= start {
        return Err(bad("expiry must be after start"));
    }
    if expiry - start > MAX_CERTIFICATE_LIFETIME {
        return Err(bad(
            "temporary credentials may be valid for at most 31 days",
        ));
    }
    if let Some(scope) = scopes.iter().find(|s| !valid_scope(s)) {
        return Err(AuthError::InvalidScope {
            scope: scope.clone(),
            reason: "scopes may only contain printable ASCII characters".into(),
        });
    }
    if let Some(name) = named_client_id {
        if name.is_empty() {
            return Err(bad("the temporary client id must not be empty"));
        }
        if name == issuer_client_id {
            return Err(bad("the temporary client id must differ from the issuer's"));
        }
    }
    let seed = new_seed();
    let start_ms = start.timestamp_millis();
    let expiry_ms = expiry.timestamp_millis();
    let named = named_client_id.map(|name| (name, issuer_client_id));
    let signature = sign(
        issuer_access_token,
        &signature_text(named, &seed, start_ms, expiry_ms, scopes),
    );
    let cert = Certificate {
        version: 1,
        scopes: scopes.to_vec(),
        start: start_ms,
        expiry: expiry_ms,
        seed: seed.clone(),
        signature,
        issuer: named_client_id.map(|_| issuer_client_id.to_owned()),
    };
    Ok(Credentials {
        client_id: named_client_id.unwrap_or(issuer_client_id).to_owned(),
        access_token: temporary_key(issuer_access_token, &seed),
        certificate: Some(serde_json::to_string(&cert).expect("certificates serialise")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn signature_text_layout() {
        let scopes = vec!["a".to_string(), "b:*".to_string()];
        assert_eq!(
            signature_text(None, "S", 1, 2, &scopes),
            "version:1\nseed:S\nstart:1\nexpiry:2\nscopes:\na\nb:*"
        );
        assert_eq!(
            signature_text(Some(("new", "iss")), "S", 1, 2, &[]),
            "version:1\nclientId:new\nissuer:iss\nseed:S\nstart:1\nexpiry:2\nscopes:"
        );
    }

    #[test]
    fn unnamed_credentials() {
        let scopes = vec!["queue:x".to_string()];
        let c =
            create_temporary_credentials("iss", "tok", None, &scopes, t(1000), t(2000)).unwrap();
        assert_eq!(c.client_id, "iss");
        let cert: Certificate = serde_json::from_str(c.certificate.as_deref().unwrap()).unwrap();
        assert_eq!(cert.version, 1);
        assert_eq!(cert.seed.len(), 44);
        assert_eq!((cert.start, cert.expiry), (1_000_000, 2_000_000));
        assert_eq!(cert.issuer, None);
        assert_eq!(cert.scopes, scopes);
        assert_eq!(
            cert.signature,
            sign(
                "tok",
                &signature_text(None, &cert.seed, cert.start, cert.expiry, &scopes)
            )
        );
        assert_eq!(c.access_token, temporary_key("tok", &cert.seed));
        assert_eq!(c.access_token.len(), 43);
        assert!(!c.access_token.contains(['+', '/', '=']));
        let raw: serde_json::Value =
            serde_json::from_str(c.certificate.as_deref().unwrap()).unwrap();
        assert!(raw.get("issuer").is_none());
    }

    #[test]
    fn named_credentials() {
        let c = create_temporary_credentials("iss", "tok", Some("new"), &[], t(0), t(60)).unwrap();
        assert_eq!(c.client_id, "new");
        let cert: Certificate = serde_json::from_str(c.certificate.as_deref().unwrap()).unwrap();
        assert_eq!(cert.issuer.as_deref(), Some("iss"));
        assert_eq!(
            cert.signature,
            sign(
                "tok",
                &signature_text(Some(("new", "iss")), &cert.seed, 0, 60_000, &[])
            )
        );
    }

    #[test]
    fn seeds_differ() {
        let a = create_temporary_credentials("i", "t", None, &[], t(0), t(1)).unwrap();
        let b = create_temporary_credentials("i", "t", None, &[], t(0), t(1)).unwrap();
        assert_ne!(a.access_token, b.access_token);
    }

    #[test]
    fn rejected_requests() {
        let day = 86_400;
        assert!(create_temporary_credentials("i", "t", None, &[], t(0), t(31 * day)).is_ok());
        for (name, start, expiry) in [
            (None, 0, 31 * day + 1),
            (None, 10, 10),
            (None, 10, 5),
            (Some(""), 0, 1),
            (Some("i"), 0, 1),
        ] {
            assert!(matches!(
                create_temporary_credentials("i", "t", name, &[], t(start), t(expiry)),
                Err(AuthError::InvalidCredentialsRequest(_))
            ));
        }
        assert!(matches!(
            create_temporary_credentials("i", "t", None, &["\u{1}".into()], t(0), t(1)),
            Err(AuthError::InvalidScope { .. })
        ));
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = create_temporary_credentials("i", "secret", None, &[], t(0), t(1)).unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains(&c.access_token));
        assert!(!d.contains("signature"));
    }
}
