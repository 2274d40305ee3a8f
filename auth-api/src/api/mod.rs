//! The HTTP API at `<rootUrl>/api/auth/v1/`: upstream's client, role and
//! scope endpoints on the service framework ([`bbb_service`]).

mod clients;
mod roles;
mod scopes;

use crate::store::Store;
use crate::sync::Reloader;
use bbb_auth::Authenticator;
use bbb_clock::Millis;
use bbb_queue::Queue;
use bbb_service::validate::{param, schema_error};
use bbb_service::{ApiError, Result, Service, all_of, delete, for_each, get, post, put, scope};
use regex::Regex;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

/// The pattern of a `clientId` (upstream's, for the URL and `prefix`).
pub const CLIENT_ID_PATTERN: &str = "^[A-Za-z0-9!@/:.+|_-]+$";
/// The pattern of a `roleId` (printable ASCII).
pub const ROLE_ID_PATTERN: &str = "^[\\x20-\\x7e]+$";
/// The longest description upstream's schemas allow.
pub const MAX_DESCRIPTION: usize = 10240;

static CLIENT_ID: LazyLock<Regex> = LazyLock::new(|| Regex::new(CLIENT_ID_PATTERN).expect("regex"));
static ROLE_ID: LazyLock<Regex> = LazyLock::new(|| Regex::new(ROLE_ID_PATTERN).expect("regex"));

/// What every handler gets.
#[derive(Clone)]
pub struct AuthApi {
    /// The queue this service is served beside: its database, clock and
    /// configuration.
    pub queue: Queue,
    /// Clients and roles in the database.
    pub store: Store,
    /// The authenticator every service on the listener shares.
    pub auth: Arc<Authenticator>,
    /// Reloads the authenticator after a change.
    pub reloader: Arc<Reloader>,
    /// When the service started: the dates of the static clients and roles.
    pub started: Millis,
}

impl AuthApi {
    /// Now, by the queue's clock.
    fn now(&self) -> Millis {
        self.queue.clock.now_ms()
    }

    /// Make a change made here visible to this process's next request at
    /// once (the other processes see it within the poll interval). The
    /// change is committed whatever happens here, so a failure is logged,
    /// not answered.
    async fn changed(&self) {
        if let Err(e) = self.reloader.reload().await {
            tracing::warn!(error = %e, "reloading clients and roles after a change failed");
        }
    }
}

/// The 400 `InvalidRequestArguments` of a query parameter that does not
/// match its pattern, worded as upstream.
fn bad_query(name: &str, value: &str, pattern: &str) -> ApiError {
    ApiError::InvalidRequestArguments(format!(
        "Query-string parameter: {name}=\"{value}\" does not match expression: /{pattern}/"
    ))
}

/// The `scopes` of a body: valid scope strings, no repeats (upstream's
/// `uniqueItems`), or 400 `InputValidationError`.
fn check_scope_list(scopes: &[String]) -> Result<()> {
    for (i, s) in scopes.iter().enumerate() {
        if !bbb_auth::valid_scope(s) {
            return Err(schema_error(format!(
                "/scopes/{i} must match pattern \"^[\\x20-\\x7e]*$\""
            )));
        }
        if let Some(j) = scopes[..i].iter().position(|t| t == s) {
            return Err(schema_error(format!(
                "/scopes must NOT have duplicate items (items ## {i} and {j} are identical)"
            )));
        }
    }
    Ok(())
}

/// A body's `description`: at most [`MAX_DESCRIPTION`] characters.
fn check_description(description: &str) -> Result<()> {
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(schema_error(format!(
            "/description must NOT have more than {MAX_DESCRIPTION} characters"
        )));
    }
    Ok(())
}

/// Upstream refuses scopes ending in `**` before checking anything else.
fn refuse_double_star(scopes: &[String]) -> Result<()> {
    if scopes.iter().any(|s| s.ends_with("**")) {
        return Err(ApiError::Input("scopes must not end with `**`".into()));
    }
    Ok(())
}

/// The list parameters' optional `limit` (upstream: digits; none or `0` for
/// everything) and `continuationToken`.
fn list_query(query: &HashMap<String, String>) -> Result<(Option<usize>, Option<String>)> {
    let limit = match query.get("limit") {
        None => None,
        Some(l) => match l.parse::<usize>() {
            Ok(0) => None,
            Ok(n) if l.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(bad_query("limit", l, "^[0-9]+$")),
        },
    };
    let token = match query.get("continuationToken") {
        Some(t) if !t.is_empty() => Some(bbb_service::paging::decode_token(t)?),
        _ => None,
    };
    Ok((limit, token))
}

/// The auth service's endpoints and URL parameter checks.
pub fn service(api: AuthApi) -> Service<AuthApi> {
    let auth = api.auth.clone();
    let clock = api.queue.clock.clone();
    Service::new("auth", "v1", api, auth, clock)
        .param("clientId", |v| {
            param("clientId", v, CLIENT_ID.is_match(v)).map(|()| v.to_string())
        })
        .param("roleId", |v| {
            param("roleId", v, ROLE_ID.is_match(v)).map(|()| v.to_string())
        })
        .endpoints([
            get("/__heartbeat__", "heartbeat").to(scopes::heartbeat),
            get("/__version__", "version").to(scopes::version),
            get("/clients/", "listClients")
                .scopes(scope("auth:list-clients"))
                .to(clients::list_clients),
            get("/clients/<clientId>", "client")
                .scopes(scope("auth:get-client:<clientId>"))
                .to(clients::client),
            put("/clients/<clientId>", "createClient")
                .scopes(all_of([
                    scope("auth:create-client:<clientId>"),
                    for_each("scope", "scopes", "<scope>"),
                ]))
                .to(clients::create_client),
            post("/clients/<clientId>/reset", "resetAccessToken")
                .scopes(scope("auth:reset-access-token:<clientId>"))
                .to(clients::reset_access_token),
            post("/clients/<clientId>", "updateClient")
                .scopes(all_of([
                    scope("auth:update-client:<clientId>"),
                    for_each("scope", "scopesAdded", "<scope>"),
                ]))
                .to(clients::update_client),
            post("/clients/<clientId>/enable", "enableClient")
                .scopes(scope("auth:enable-client:<clientId>"))
                .to(clients::enable_client),
            post("/clients/<clientId>/disable", "disableClient")
                .scopes(scope("auth:disable-client:<clientId>"))
                .to(clients::disable_client),
            delete("/clients/<clientId>", "deleteClient")
                .scopes(scope("auth:delete-client:<clientId>"))
                .to(clients::delete_client),
            get("/roles/", "listRoles")
                .scopes(scope("auth:list-roles"))
                .to(roles::list_roles),
            get("/roles2/", "listRoles2")
                .scopes(scope("auth:list-roles"))
                .to(roles::list_roles2),
            get("/roleids/", "listRoleIds")
                .scopes(scope("auth:list-roles"))
                .to(roles::list_role_ids),
            get("/roles/<roleId>", "role")
                .scopes(scope("auth:get-role:<roleId>"))
                .to(roles::role),
            put("/roles/<roleId>", "createRole")
                .scopes(all_of([
                    scope("auth:create-role:<roleId>"),
                    for_each("scope", "scopes", "<scope>"),
                ]))
                .to(roles::create_role),
            post("/roles/<roleId>", "updateRole")
                .scopes(all_of([
                    scope("auth:update-role:<roleId>"),
                    for_each("scope", "scopesAdded", "<scope>"),
                ]))
                .to(roles::update_role),
            delete("/roles/<roleId>", "deleteRole")
                .scopes(scope("auth:delete-role:<roleId>"))
                .to(roles::delete_role),
            post("/scopes/expand", "expandScopes")
                .scopes(scope("auth:expand-scopes"))
                .to(scopes::expand_scopes),
            get("/scopes/current", "currentScopes")
                .scopes(scope("auth:current-scopes"))
                .to(scopes::current_scopes),
        ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `list_query` of one query parameter (none for `("", "")`).
    fn one(name: &str, value: &str) -> Result<(Option<usize>, Option<String>)> {
        let mut query = HashMap::new();
        if !name.is_empty() {
            query.insert(name.to_string(), value.to_string());
        }
        list_query(&query)
    }

    #[test]
    fn list_limits_as_upstream() {
        assert_eq!(one("", "").unwrap(), (None, None));
        assert_eq!(one("limit", "0").unwrap(), (None, None));
        assert_eq!(one("limit", "3").unwrap().0, Some(3));
        for bad in ["-1", "x", "+3", " 3"] {
            let e = one("limit", bad).unwrap_err();
            assert_eq!(e.code(), "InvalidRequestArguments", "{bad}");
        }
        let e = one("continuationToken", "%%").unwrap_err();
        assert_eq!(e.code(), "InputError");
    }

    #[test]
    fn scope_lists_and_descriptions() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_scope_list(&v(&["a", "b*"])).is_ok());
        let e = check_scope_list(&v(&["a", "b", "a"])).unwrap_err();
        assert_eq!(e.code(), "InputValidationError");
        assert!(e.to_string().contains("items ## 2 and 0"));
        let e = check_scope_list(&v(&["caf\u{e9}"])).unwrap_err();
        assert_eq!(e.code(), "InputValidationError");
        assert!(refuse_double_star(&v(&["a**"])).is_err());
        assert!(refuse_double_star(&v(&["a*"])).is_ok());
        assert!(check_description(&"x".repeat(MAX_DESCRIPTION)).is_ok());
        assert!(check_description(&"x".repeat(MAX_DESCRIPTION + 1)).is_err());
    }

    #[test]
    fn id_patterns() {
        assert!(CLIENT_ID.is_match("static/taskcluster/queue"));
        assert!(CLIENT_ID.is_match("mozilla-auth0/ad|Mozilla-LDAP|me/x"));
        assert!(!CLIENT_ID.is_match("with space"));
        assert!(ROLE_ID.is_match("repo:github.com/org/*"));
        assert!(ROLE_ID.is_match("with space"));
        assert!(!ROLE_ID.is_match("caf\u{e9}"));
    }
}
