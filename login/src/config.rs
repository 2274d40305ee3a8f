//! The `[login]` section of the configuration file: who may sign in (users
//! with password hashes, the identity a trusted reverse proxy passes on), how
//! long a session lasts, and the OAuth2 clients (third-party tools) that may
//! ask users for credentials.

use crate::duration::from_now_offset;
use bbb_envlayer::{EnvError, Var, set_list, set_some};
use bbb_secret::Secret;
use serde::{Deserialize, Serialize};

/// A user who signs in with a password.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserConfig {
    /// The user's name: their identity, so their role is
    /// `login-identity:<name>`. Letters, digits and `!@:.+|_-` (the
    /// characters of a client id, without `/`).
    pub name: String,
    /// The password's hash, a PHC string (`$argon2id$...`, as `bbb login
    /// hash-password` prints). Masked when printed.
    pub password_hash: Secret<String>,
}

/// The identity a trusted reverse proxy passes on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// The request header naming the user, e.g. `X-Forwarded-User`; none:
    /// no proxy sign-in.
    pub header: Option<String>,
    /// The peer addresses the header is believed from: addresses
    /// (`127.0.0.1`, `::1`) or networks (`10.0.0.0/8`). A request from
    /// elsewhere carrying the header is treated as if it had none.
    pub trusted: Vec<String>,
}

/// A third-party tool that may ask users for credentials through the OAuth2
/// endpoints: upstream's `registeredClients` entry (the camelCase keys of
/// upstream's `REGISTERED_CLIENTS` are accepted too).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegisteredClient {
    /// The OAuth2 `client_id` the tool sends.
    #[serde(alias = "clientId")]
    pub client_id: String,
    /// `code` (authorization code grant) or `token` (implicit grant).
    #[serde(alias = "responseType")]
    pub response_type: String,
    /// The scopes the tool asks for: exactly these, or the request is refused.
    pub scope: Vec<String>,
    /// Where the user's browser may be sent back to.
    #[serde(alias = "redirectUri")]
    pub redirect_uri: Vec<String>,
    /// Skip the consent page (the tool is trusted by the deployment).
    pub whitelisted: bool,
    /// The longest the credentials may last, upstream's duration format
    /// (`1 year`, `3 days`, `15 minutes`).
    #[serde(alias = "maxExpires")]
    pub max_expires: String,
}

/// `[login]`: sign-in for the web UI and third-party tools.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginConfig {
    /// How long a session (and its temporary credentials) lasts, upstream's
    /// duration format (default `12 hours`, at most 31 days).
    pub session_expires: String,
    /// Users signing in with a password.
    pub users: Vec<UserConfig>,
    /// The identity a trusted reverse proxy passes on.
    pub proxy: ProxyConfig,
    /// Third-party tools using the OAuth2 endpoints.
    pub registered_clients: Vec<RegisteredClient>,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            session_expires: "12 hours".into(),
            users: Vec::new(),
            proxy: ProxyConfig::default(),
            registered_clients: Vec::new(),
        }
    }
}

/// Sets `slot` from a JSON array.
fn set_json<T: serde::de::DeserializeOwned>(slot: &mut T, value: &str) -> Result<(), String> {
    *slot = serde_json::from_str(value).map_err(|e| format!("not the expected JSON: {e}"))?;
    Ok(())
}

impl LoginConfig {
    /// The `BBB_LOGIN_*` variables that override the `[login]` section, in
    /// the order they are applied and listed by `--help`.
    pub const ENV: &'static [Var<LoginConfig>] = &[
        Var::secret(
            "BBB_LOGIN_USERS",
            "users, JSON: [{\"name\": ..., \"password_hash\": \"$argon2id$...\"}] (users)",
            |c, v| set_json(&mut c.users, v),
        ),
        Var::new(
            "BBB_LOGIN_PROXY_HEADER",
            "header a trusted reverse proxy names the user in, e.g. X-Forwarded-User (proxy.header)",
            |c, v| set_some(&mut c.proxy.header, v),
        ),
        Var::new(
            "BBB_LOGIN_PROXY_TRUSTED",
            "comma-separated peer addresses or networks the proxy header is believed from (proxy.trusted)",
            |c, v| set_list(&mut c.proxy.trusted, v),
        ),
        Var::new(
            "BBB_LOGIN_SESSION_EXPIRES",
            "how long a session lasts, e.g. `12 hours` (session_expires)",
            |c, v| {
                from_now_offset(v)?;
                c.session_expires = v.to_owned();
                Ok(())
            },
        ),
        Var::new(
            "BBB_LOGIN_REGISTERED_CLIENTS",
            "OAuth2 clients, JSON as upstream's REGISTERED_CLIENTS (registered_clients)",
            |c, v| set_json(&mut c.registered_clients, v),
        ),
    ];

    /// Apply the `BBB_LOGIN_*` environment variables.
    pub fn apply_env(&mut self) -> Result<(), EnvError> {
        self.apply_vars(bbb_envlayer::from_env)
    }

    /// Apply the `BBB_LOGIN_*` overrides `lookup` gives; empty values are ignored.
    pub fn apply_vars(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<(), EnvError> {
        bbb_envlayer::apply(Self::ENV, self, lookup)
    }

    /// Checks what the types do not: user names, password hashes, proxy
    /// addresses, durations and the registered clients.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for u in &self.users {
            if !valid_user(&u.name) {
                return Err(format!(
                    "login user {:?}: a name is letters, digits and !@:.+|_- (at most 64)",
                    u.name
                ));
            }
            if !names.insert(u.name.as_str()) {
                return Err(format!("login user {:?} is listed twice", u.name));
            }
            crate::password::check_hash(u.password_hash.expose())
                .map_err(|e| format!("login user {:?}: password_hash: {e}", u.name))?;
        }
        if let Some(h) = &self.proxy.header
            && axum::http::HeaderName::from_bytes(h.as_bytes()).is_err()
        {
            return Err(format!("login proxy header {h:?} is not a header name"));
        }
        for t in &self.proxy.trusted {
            crate::proxy::Network::parse(t)
                .ok_or_else(|| format!("login proxy trusted {t:?}: not an address or a network"))?;
        }
        let now = chrono::Utc::now();
        let session = from_now_offset(&self.session_expires)
            .map_err(|e| format!("login session_expires: {e}"))?
            .from(now)
            - now;
        if session < chrono::TimeDelta::minutes(1) || session > bbb_auth::MAX_CERTIFICATE_LIFETIME {
            return Err(format!(
                "login session_expires {:?}: between a minute and 31 days",
                self.session_expires
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for c in &self.registered_clients {
            let what = format!("login registered client {:?}", c.client_id);
            if c.client_id.is_empty() || !ids.insert(c.client_id.as_str()) {
                return Err(format!("{what}: empty or listed twice"));
            }
            if c.response_type != "code" && c.response_type != "token" {
                return Err(format!("{what}: response_type must be code or token"));
            }
            if c.redirect_uri.is_empty() {
                return Err(format!("{what}: no redirect_uri"));
            }
            for uri in &c.redirect_uri {
                url::Url::parse(uri).map_err(|e| format!("{what}: redirect_uri {uri:?}: {e}"))?;
            }
            if let Some(s) = c.scope.iter().find(|s| !bbb_auth::valid_scope(s)) {
                return Err(format!("{what}: scope {s:?} is not valid"));
            }
            from_now_offset(&c.max_expires).map_err(|e| format!("{what}: max_expires: {e}"))?;
        }
        Ok(())
    }
}

/// Whether `name` may be a user's name: the characters of a client id
/// except `/` (which separates a user's OAuth2 clients from their name).
pub fn valid_user(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!@:.+|_-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bbb_envlayer::testing::{
        Sample, assert_bad_values_are_refused, assert_each_variable_sets_its_field,
    };

    #[test]
    fn defaults_masking_and_upstream_keys() {
        let c: LoginConfig = serde_json::from_value(serde_json::json!({
            "users": [{"name": "alice", "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"}],
            "registered_clients": [{"clientId": "th", "responseType": "code", "scope": ["a"],
                "redirectUri": ["https://th.example.com/cb"], "whitelisted": false, "maxExpires": "1 year"}],
        }))
        .unwrap();
        assert_eq!(c.session_expires, "12 hours");
        assert_eq!(c.registered_clients[0].max_expires, "1 year");
        let printed = serde_json::to_string(&c).unwrap();
        assert!(!printed.contains("argon2"), "{printed}");
        assert!(!format!("{c:?}").contains("argon2"));
        c.validate().unwrap();
    }

    #[test]
    fn bad_sections_are_refused() {
        let bad = [
            serde_json::json!({"users": [{"name": "a/b", "password_hash": "x"}]}),
            serde_json::json!({"users": [{"name": "a", "password_hash": "plain"}]}),
            serde_json::json!({"proxy": {"header": "X-User", "trusted": ["nowhere"]}}),
            serde_json::json!({"session_expires": "soon"}),
            serde_json::json!({"registered_clients": [{"client_id": "t", "response_type": "id_token",
                "redirect_uri": ["https://e.com/"], "max_expires": "1 day"}]}),
        ];
        for b in bad {
            let c: LoginConfig = serde_json::from_value(b.clone()).unwrap();
            assert!(c.validate().is_err(), "{b}");
        }
    }

    #[test]
    fn environment() {
        const USERS: &str = r#"[{"name":"bob","password_hash":"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"}]"#;
        const CLIENTS: &str = r#"[{"clientId":"t","responseType":"token","scope":[],"redirectUri":["https://e.com/"],"whitelisted":true,"maxExpires":"1 day"}]"#;
        let samples: Vec<Sample<LoginConfig>> = vec![
            ("BBB_LOGIN_USERS", USERS, |c| {
                c.users.len() == 1 && c.users[0].name == "bob"
            }),
            ("BBB_LOGIN_PROXY_HEADER", "X-Forwarded-User", |c| {
                c.proxy.header.as_deref() == Some("X-Forwarded-User")
            }),
            ("BBB_LOGIN_PROXY_TRUSTED", "127.0.0.1, 10.0.0.0/8", |c| {
                c.proxy.trusted == ["127.0.0.1", "10.0.0.0/8"]
            }),
            ("BBB_LOGIN_SESSION_EXPIRES", "2 hours", |c| {
                c.session_expires == "2 hours"
            }),
            ("BBB_LOGIN_REGISTERED_CLIENTS", CLIENTS, |c| {
                c.registered_clients.len() == 1 && c.registered_clients[0].whitelisted
            }),
        ];
        assert_each_variable_sets_its_field(LoginConfig::ENV, &samples);
        assert_bad_values_are_refused(
            LoginConfig::ENV,
            &[
                ("BBB_LOGIN_SESSION_EXPIRES", "whenever"),
                ("BBB_LOGIN_REGISTERED_CLIENTS", "{}"),
            ],
        );
    }
}
