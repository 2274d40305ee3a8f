//! End-to-end scenarios through the public API: the queue's own task credentials, roles seen
//! through authentication, signed URLs and error messages.

use bbb_auth::{
    AuthConfig, AuthError, Authenticator, Client, Credentials, HawkRequest, Identity, Role,
    ScopeExpr, bewit, create_temporary_credentials, hawk_header,
};
use chrono::{DateTime, TimeDelta, Utc};

const HOST: &str = "tc.example.com";

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000, 0).unwrap()
}

fn config() -> AuthConfig {
    AuthConfig {
        clients: vec![
            Client::new("static/taskcluster/queue", "queue-secret", ["*"]),
            Client::new(
                "project/ci/decision",
                "decision-secret",
                [
                    "assume:repo:github.com/org/*",
                    "queue:create-task:highest:ci/*",
                ],
            )
            .with_expires(t0() + TimeDelta::days(30)),
        ],
        roles: vec![
            Role::new(
                "anonymous",
                [
                    "queue:get-task:*",
                    "queue:get-artifact:public/*",
                    "queue:list-task-group:*",
                ],
            ),
            Role::new(
                "repo:github.com/org/*",
                ["assume:project:<..>", "queue:route:index.<..>.*"],
            ),
            Role::new("project:app", ["secrets:get:app/*"]),
        ],
    }
}

fn get<'a>(resource: &'a str, authorization: Option<&'a str>) -> HawkRequest<'a> {
    HawkRequest {
        method: "GET",
        resource,
        host: HOST,
        port: 443,
        authorization,
        ..HawkRequest::default()
    }
}

/// Permanent credentials (no certificate).
fn permanent(client_id: &str, access_token: &str) -> Credentials {
    Credentials {
        client_id: client_id.to_owned(),
        access_token: access_token.to_owned(),
        certificate: None,
    }
}

/// The Hawk header of `method` on `resource` at `now` with `creds` (no
/// authorized scopes), over `payload` (body and content type) if given.
fn sign(
    creds: &Credentials,
    method: &str,
    resource: &str,
    payload: Option<(&[u8], &str)>,
    now: DateTime<Utc>,
) -> String {
    hawk_header(
        &creds.client_id,
        &creds.access_token,
        creds.certificate.as_deref(),
        None,
        method,
        resource,
        HOST,
        443,
        payload,
        now,
    )
}

/// Signs a GET of `resource` with `creds` at `now` and authenticates it at
/// `now`.
fn authenticate_get(
    auth: &Authenticator,
    creds: &Credentials,
    resource: &str,
    now: DateTime<Utc>,
) -> Result<Identity, AuthError> {
    let header = sign(creds, "GET", resource, None, now);
    auth.authenticate(&get(resource, Some(&header)), now)
}

#[test]
fn task_credentials_as_the_queue_issues_them() {
    let auth = Authenticator::new(config()).unwrap();
    let taken_until = t0() + TimeDelta::minutes(20);
    let client_id = format!(
        "task-client/T1/0/on/wg/w1/until/{}",
        taken_until.timestamp()
    );
    let scopes: Vec<String> = [
        "queue:reclaim-task:T1/0",
        "queue:resolve-task:T1/0",
        "queue:create-artifact:T1/0",
        "secrets:get:app/token",
    ]
    .map(String::from)
    .to_vec();
    let creds = create_temporary_credentials(
        "static/taskcluster/queue",
        "queue-secret",
        Some(&client_id),
        &scopes,
        t0(),
        taken_until,
    )
    .unwrap();
    assert_eq!(creds.client_id, client_id);

    let body =
        br#"{"storageType":"s3","contentType":"text/plain","expires":"2030-01-01T00:00:00Z"}"#;
    let resource = "/api/queue/v1/task/T1/runs/0/artifacts/public%2Flogs%2Flive.log";
    let now = t0() + TimeDelta::minutes(5);
    let header = sign(
        &creds,
        "POST",
        resource,
        Some((body, "application/json")),
        now,
    );
    let req = HawkRequest {
        method: "POST",
        resource,
        host: HOST,
        port: 443,
        authorization: Some(&header),
        content_type: Some("application/json"),
        body,
    };
    let id = auth.authenticate(&req, now).unwrap();
    assert_eq!(id.client_id.as_deref(), Some(client_id.as_str()));
    assert_eq!(id.expires, Some(taken_until));
    assert!(id.satisfies(&ScopeExpr::all_of([
        "queue:create-artifact:T1/0",
        "queue:get-task:T1",
    ])));
    assert!(!id.satisfies(&ScopeExpr::scope("queue:create-artifact:T2/0")));
    let missing = ScopeExpr::all_of(["queue:create-artifact:T1/0", "queue:cancel-task:T1"])
        .unsatisfied(&id.scopes);
    assert_eq!(missing, Some(ScopeExpr::scope("queue:cancel-task:T1")));

    // past takenUntil plus the 5 minutes of certificate skew, the credentials are refused
    let later = taken_until + TimeDelta::minutes(6);
    let e = authenticate_get(&auth, &creds, "/api/queue/v1/task/T1", later).unwrap_err();
    assert!(matches!(e, AuthError::InvalidCertificate(_)), "{e}");
    assert!(e.to_string().contains("expiry"), "{e}");
}

#[test]
fn roles_through_authentication() {
    let auth = Authenticator::new(config()).unwrap();
    let decision = permanent("project/ci/decision", "decision-secret");
    let id = authenticate_get(&auth, &decision, "/x", t0()).unwrap();
    // assume:repo:github.com/org/* covers the parameterised role with parameter `*`, which in
    // turn covers project:app
    assert_eq!(
        id.scopes,
        vec![
            "assume:anonymous",
            "assume:project:*",
            "assume:repo:github.com/org/*",
            "queue:create-task:highest:ci/*",
            "queue:get-artifact:public/*",
            "queue:get-task:*",
            "queue:list-task-group:*",
            "queue:route:index.*",
            "secrets:get:app/*",
        ]
    );
    assert_eq!(id.expires, Some(t0() + TimeDelta::days(30)));
    assert_eq!(
        auth.expand(&["assume:repo:github.com/org/app".to_string()]),
        vec![
            "assume:project:app",
            "assume:repo:github.com/org/app",
            "queue:route:index.app.*",
            "secrets:get:app/*",
        ]
    );

    // the client's expiry applies
    let late = t0() + TimeDelta::days(31);
    assert_eq!(
        authenticate_get(&auth, &decision, "/x", late).unwrap_err(),
        AuthError::ClientExpired("project/ci/decision".into())
    );
}

#[test]
fn signed_artifact_urls_with_task_credentials() {
    let auth = Authenticator::new(config()).unwrap();
    let creds = create_temporary_credentials(
        "static/taskcluster/queue",
        "queue-secret",
        Some("task-client/T9/0/on/g/w/until/1"),
        &["queue:get-artifact:private/*".to_string()],
        t0(),
        t0() + TimeDelta::hours(1),
    )
    .unwrap();
    let path = "/api/queue/v1/task/T9/artifacts/private%2Fbuild.tar.gz";
    let b = bewit(
        &creds.client_id,
        &creds.access_token,
        creds.certificate.as_deref(),
        path,
        HOST,
        443,
        t0() + TimeDelta::minutes(15),
    );
    let resource = format!("{path}?bewit={b}");
    let id = auth.authenticate(&get(&resource, None), t0()).unwrap();
    assert_eq!(
        id.client_id.as_deref(),
        Some("task-client/T9/0/on/g/w/until/1")
    );
    assert!(id.satisfies(&ScopeExpr::scope("queue:get-artifact:private/build.tar.gz")));
    let e = auth
        .authenticate(&get(&resource, None), t0() + TimeDelta::minutes(15))
        .unwrap_err();
    assert!(e.to_string().starts_with("Access expired"), "{e}");
}

#[test]
fn error_messages_are_readable_and_keep_secrets() {
    let auth = Authenticator::new(config()).unwrap();
    let e = authenticate_get(
        &auth,
        &permanent("static/taskcluster/queue", "wrong-secret"),
        "/x",
        t0(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("Bad mac"), "{msg}");
    assert!(!msg.contains("queue-secret") && !msg.contains("wrong-secret"));

    let e = auth
        .authenticate(&get("/x", Some("Hawk id=\"x\", ts=\"1\"")), t0())
        .unwrap_err();
    assert!(e.to_string().contains("missing attribute"), "{e}");

    let e = Authenticator::new(AuthConfig {
        clients: vec![],
        roles: vec![Role::new("a", ["assume:b"]), Role::new("b", ["assume:a"])],
    })
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Roles may not contain dependency cycles, found: a -> b -> a"
    );
}
