//! The dynamic part of an `Authenticator`: clients and roles replaced while it
//! serves, over a static configuration that stays.

use bbb_auth::{
    AuthConfig, AuthError, Authenticator, Client, HawkRequest, Identity, Role, ScopeExpr,
    create_temporary_credentials, hawk_header,
};
use chrono::{DateTime, TimeDelta, Utc};

const HOST: &str = "auth.example.com";
const PORT: u16 = 443;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn call(auth: &Authenticator, id: &str, token: &str) -> Result<Identity, AuthError> {
    call_with(auth, id, token, None)
}

/// A request signed by `id` with `token` and, for temporary credentials, `certificate`.
fn call_with(
    auth: &Authenticator,
    id: &str,
    token: &str,
    certificate: Option<&str>,
) -> Result<Identity, AuthError> {
    let h = hawk_header(
        id,
        token,
        certificate,
        None,
        "GET",
        "/api/auth/v1/scopes/current",
        HOST,
        PORT,
        None,
        now(),
    );
    auth.authenticate(
        &HawkRequest {
            method: "GET",
            resource: "/api/auth/v1/scopes/current",
            host: HOST,
            port: PORT,
            authorization: Some(&h),
            ..HawkRequest::default()
        },
        now(),
    )
}

fn bootstrap() -> Authenticator {
    Authenticator::new(AuthConfig {
        clients: vec![Client::new("root", "root-token", ["*"])],
        roles: vec![
            Role::new("anonymous", ["public:read"]),
            Role::new("static-role", ["assume:dyn-role"]),
        ],
    })
    .unwrap()
}

fn v(scopes: &[&str]) -> Vec<String> {
    scopes.iter().map(|s| s.to_string()).collect()
}

#[test]
fn dynamic_clients_and_roles_replace_each_other_and_keep_the_static_ones() {
    let auth = bootstrap();
    assert_eq!(
        call(&auth, "dyn", "dyn-token").unwrap_err(),
        AuthError::UnknownClient("dyn".into())
    );
    // A static role may name a role that does not exist yet.
    assert_eq!(
        auth.expand(&v(&["assume:static-role"])),
        v(&["assume:dyn-role", "assume:static-role"])
    );

    auth.set_dynamic(AuthConfig {
        clients: vec![Client::new("dyn", "dyn-token", ["assume:static-role"])],
        roles: vec![Role::new("dyn-role", ["queue:create-task:*"])],
    })
    .unwrap();
    let id = call(&auth, "dyn", "dyn-token").unwrap();
    assert_eq!(id.client_id.as_deref(), Some("dyn"));
    assert_eq!(
        id.scopes,
        v(&[
            "assume:anonymous",
            "assume:dyn-role",
            "assume:static-role",
            "public:read",
            "queue:create-task:*"
        ])
    );
    assert_eq!(
        auth.client_scopes("dyn").unwrap(),
        v(&[
            "assume:dyn-role",
            "assume:static-role",
            "queue:create-task:*"
        ])
    );
    assert!(call(&auth, "root", "root-token").is_ok());

    // The next set replaces the previous one whole.
    auth.set_dynamic(AuthConfig {
        clients: vec![Client::new("other", "other-token", ["a"])],
        roles: vec![],
    })
    .unwrap();
    assert_eq!(
        call(&auth, "dyn", "dyn-token").unwrap_err(),
        AuthError::UnknownClient("dyn".into())
    );
    assert!(call(&auth, "other", "other-token").is_ok());
    assert_eq!(
        auth.expand(&v(&["assume:static-role"])),
        v(&["assume:dyn-role", "assume:static-role"])
    );
    assert_eq!(auth.bootstrap().clients.len(), 1);
}

#[test]
fn a_dynamic_client_or_role_cannot_shadow_a_static_one() {
    let auth = bootstrap();
    auth.set_dynamic(AuthConfig {
        clients: vec![Client::new("root", "stolen", ["*"])],
        roles: vec![Role::new("anonymous", ["*"])],
    })
    .unwrap();
    assert_eq!(
        call(&auth, "root", "stolen").unwrap_err(),
        AuthError::BadMac
    );
    assert!(call(&auth, "root", "root-token").is_ok());
    assert_eq!(
        auth.anonymous_scopes(),
        v(&["assume:anonymous", "public:read"])
    );
}

#[test]
fn an_invalid_dynamic_set_changes_nothing() {
    let auth = bootstrap();
    auth.set_dynamic(AuthConfig {
        clients: vec![Client::new("dyn", "dyn-token", ["a"])],
        roles: vec![],
    })
    .unwrap();
    // A cycle through the static role.
    let e = auth
        .set_dynamic(AuthConfig {
            clients: vec![],
            roles: vec![Role::new("dyn-role", ["assume:static-role"])],
        })
        .unwrap_err();
    assert!(matches!(e, AuthError::RoleCycle(_)), "{e}");
    let e = auth
        .set_dynamic(AuthConfig {
            clients: vec![
                Client::new("twice", "t", ["a"]),
                Client::new("twice", "u", ["a"]),
            ],
            roles: vec![],
        })
        .unwrap_err();
    assert!(matches!(e, AuthError::InvalidClient { .. }), "{e}");
    assert!(call(&auth, "dyn", "dyn-token").is_ok());
}

#[test]
fn disabled_and_expired_clients_cannot_authenticate_nor_issue_credentials() {
    let auth = bootstrap();
    auth.set_dynamic(AuthConfig {
        clients: vec![
            Client::new("off", "off-token", ["*"]).with_disabled(true),
            Client::new("old", "old-token", ["*"]).with_expires(now() - TimeDelta::seconds(1)),
        ],
        roles: vec![],
    })
    .unwrap();
    assert_eq!(
        call(&auth, "off", "off-token").unwrap_err(),
        AuthError::ClientDisabled("off".into())
    );
    assert_eq!(
        AuthError::ClientDisabled("off".into()).to_string(),
        "Client with clientId 'off' is disabled"
    );
    assert_eq!(
        call(&auth, "old", "old-token").unwrap_err(),
        AuthError::ClientExpired("old".into())
    );
    let temp = create_temporary_credentials(
        "off",
        "off-token",
        None,
        &v(&["a"]),
        now() - TimeDelta::minutes(1),
        now() + TimeDelta::minutes(10),
    )
    .unwrap();
    let e = call_with(
        &auth,
        &temp.client_id,
        &temp.access_token,
        temp.certificate.as_deref(),
    )
    .unwrap_err();
    assert_eq!(e, AuthError::ClientDisabled("off".into()));

    // Enabled again, it works.
    auth.set_dynamic(AuthConfig {
        clients: vec![Client::new("off", "off-token", ["*"])],
        roles: vec![],
    })
    .unwrap();
    let id = call(&auth, "off", "off-token").unwrap();
    assert!(id.satisfies(&ScopeExpr::scope("anything")));
}

#[test]
fn used_clients_are_reported_once() {
    let auth = bootstrap();
    auth.set_dynamic(AuthConfig {
        clients: vec![
            Client::new("a", "a-token", ["x"]),
            Client::new("b", "b-token", ["x"]),
        ],
        roles: vec![],
    })
    .unwrap();
    assert!(auth.take_used().is_empty());
    call(&auth, "a", "a-token").unwrap();
    call(&auth, "a", "a-token").unwrap();
    call(&auth, "root", "root-token").unwrap();
    let mut used = auth.take_used();
    used.sort();
    assert_eq!(used, v(&["a", "root"]));
    assert!(auth.take_used().is_empty());
}
