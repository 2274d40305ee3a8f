//! The token every form that acts carries, against cross-site requests: an
//! HMAC of the user's name keyed with their session's access token, which
//! only the session cookie (HttpOnly, SameSite=Strict) holds. A page from
//! elsewhere can neither read the cookie nor compute the token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bbb_login::SignedIn;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The name of the form field that carries the token.
pub(crate) const FIELD: &str = "csrf";

fn mac(who: &SignedIn) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(who.credentials.access_token.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(b"bbb-web-csrf\n");
    mac.update(who.user.as_bytes());
    mac
}

/// The token of `who`'s session.
pub(crate) fn token(who: &SignedIn) -> String {
    URL_SAFE_NO_PAD.encode(mac(who).finalize().into_bytes())
}

/// Whether `given` is the token of `who`'s session (compared in constant time).
pub(crate) fn valid(who: &SignedIn, given: &str) -> bool {
    match URL_SAFE_NO_PAD.decode(given) {
        Ok(bytes) => mac(who).verify_slice(&bytes).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bbb_auth::Credentials;

    fn who(token: &str) -> SignedIn {
        SignedIn {
            user: "alice".into(),
            credentials: Credentials {
                client_id: "root".into(),
                access_token: token.into(),
                certificate: None,
            },
            expires: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_token_is_valid_for_its_session_only() {
        let t = token(&who("secret-a"));
        assert!(valid(&who("secret-a"), &t));
        assert!(!valid(&who("secret-b"), &t));
        assert!(!valid(&who("secret-a"), "not base64!"));
        assert!(!valid(&who("secret-a"), ""));
    }
}
