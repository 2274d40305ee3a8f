//! Requests made by the crates.io `taskcluster` client (version 114) verify with
//! `Authenticator`.
//!
//! A loopback HTTP listener records each request exactly as the client sent it; the
//! recorded method, request target, `Host`, content type, body and `Authorization` header
//! are then authenticated.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use bbb_auth::{AuthConfig, AuthError, Authenticator, Client, HawkRequest, Role, hawk_header};
use chrono::Utc;
use common::{Captured, split_host};
use serde_json::json;
use taskcluster::{ClientBuilder, Credentials, Queue, Retry};

const WORKER: (&str, &str) = ("project/worker", "worker-token-0123456789");
const ISSUER: (&str, &str) = ("static/queue", "issuer-token-0123456789");

fn authenticator() -> Authenticator {
    Authenticator::new(AuthConfig {
        clients: vec![
            Client::new(WORKER.0, WORKER.1, ["queue:get-task:*", "assume:worker:w"]),
            Client::new(
                ISSUER.0,
                ISSUER.1,
                ["auth:create-client:task-client/*", "queue:*"],
            ),
        ],
        roles: vec![
            Role::new("anonymous", ["queue:ping"]),
            Role::new("worker:*", ["queue:claim-work:<..>"]),
        ],
    })
    .unwrap()
}

/// A loopback server answering `{}` to every request and sending each request it got.
fn start_recorder() -> (String, mpsc::Receiver<Captured>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                continue;
            }
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or_default().to_owned();
            let resource = parts.next().unwrap_or_default().to_owned();
            let (mut host, mut authorization, mut content_type, mut length) =
                (String::new(), None, None, 0usize);
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (name, value) = h.split_once(':').unwrap();
                let value = value.trim().to_owned();
                match name.to_ascii_lowercase().as_str() {
                    "host" => host = value,
                    "authorization" => authorization = Some(value),
                    "content-type" => content_type = Some(value),
                    "content-length" => length = value.parse().unwrap(),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let (host, port) = split_host(&host, 80);
            let _ = tx.send(Captured {
                method,
                resource,
                host,
                port,
                authorization,
                content_type,
                body,
            });
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
            );
        }
    });
    (format!("http://127.0.0.1:{port}"), rx)
}

fn queue(root_url: &str, creds: Credentials, authorized: Option<&[&str]>) -> Queue {
    let mut b = ClientBuilder::new(root_url)
        .credentials(creds)
        .retry(Retry {
            retries: 0,
            ..Retry::default()
        })
        .timeout(Duration::from_secs(10));
    if let Some(scopes) = authorized {
        b = b.authorized_scopes(scopes.iter().copied());
    }
    Queue::new(b).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn recv(rx: &mpsc::Receiver<Captured>) -> Captured {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the client sent a request")
}

#[test]
fn permanent_credentials_get_put_post() {
    let auth = authenticator();
    let (root, rx) = start_recorder();
    let q = queue(&root, Credentials::new(WORKER.0, WORKER.1), None);
    let rt = runtime();

    rt.block_on(q.task("T1")).unwrap();
    let get = recv(&rx);
    assert_eq!(get.resource, "/api/queue/v1/task/T1");
    let id = auth.authenticate(&get.hawk(), Utc::now()).unwrap();
    assert_eq!(id.client_id.as_deref(), Some(WORKER.0));
    assert!(id.scopes.contains(&"queue:claim-work:w".to_string()));
    assert!(id.scopes.contains(&"queue:ping".to_string()));

    let task = json!({"provisionerId": "p", "workerType": "w", "metadata": {"name": "ü"}});
    rt.block_on(q.createTask("T1", &task)).unwrap();
    let put = recv(&rx);
    assert_eq!(put.method, "PUT");
    assert!(!put.body.is_empty());
    // the crate sends a payload hash when there is a body: it must match
    assert!(put.authorization.as_deref().unwrap().contains("hash="));
    auth.authenticate(&put.hawk(), Utc::now()).unwrap();
    let mut altered = put.clone();
    altered.body.push(b' ');
    assert_eq!(
        auth.authenticate(&altered.hawk(), Utc::now()).unwrap_err(),
        AuthError::PayloadHashMismatch
    );

    rt.block_on(q.reportCompleted("T1", "0")).unwrap();
    let post = recv(&rx);
    assert_eq!(post.method, "POST");
    assert!(post.body.is_empty());
    auth.authenticate(&post.hawk(), Utc::now()).unwrap();
}

#[test]
fn authorized_scopes_from_the_client_builder() {
    let auth = authenticator();
    let (root, rx) = start_recorder();
    let q = queue(
        &root,
        Credentials::new(WORKER.0, WORKER.1),
        Some(&["queue:get-task:T1"]),
    );
    runtime().block_on(q.task("T1")).unwrap();
    let id = auth.authenticate(&recv(&rx).hawk(), Utc::now()).unwrap();
    assert_eq!(
        id.scopes,
        vec!["assume:anonymous", "queue:get-task:T1", "queue:ping"]
    );

    let q = queue(
        &root,
        Credentials::new(WORKER.0, WORKER.1),
        Some(&["queue:create-task:x"]),
    );
    runtime().block_on(q.task("T1")).unwrap();
    assert!(matches!(
        auth.authenticate(&recv(&rx).hawk(), Utc::now()),
        Err(AuthError::AuthorizedScopesNotSatisfied { .. })
    ));
}

#[test]
fn named_temporary_credentials_from_the_crate() {
    let auth = authenticator();
    let (root, rx) = start_recorder();
    let issuer = Credentials::new(ISSUER.0, ISSUER.1);
    let name = "task-client/T1/0/on/wg/w1/until/1700000000";
    let temp = issuer
        .create_named_temp_creds(
            name,
            Duration::from_secs(3600),
            ["queue:resolve-task:T1/0", "queue:create-artifact:T1/0"],
        )
        .unwrap();
    let q = queue(&root, temp, None);
    runtime().block_on(q.reportCompleted("T1", "0")).unwrap();
    let id = auth.authenticate(&recv(&rx).hawk(), Utc::now()).unwrap();
    assert_eq!(id.client_id.as_deref(), Some(name));
    assert_eq!(
        id.scopes,
        vec![
            "assume:anonymous",
            "queue:create-artifact:T1/0",
            "queue:ping",
            "queue:resolve-task:T1/0",
        ]
    );
    let expires = id.expires.unwrap();
    let left = expires - Utc::now();
    assert!(left > chrono::TimeDelta::minutes(59) && left <= chrono::TimeDelta::hours(1));

    // a name outside auth:create-client:task-client/* is refused
    let other = issuer
        .create_named_temp_creds("someone-else", Duration::from_secs(60), ["queue:x"])
        .unwrap();
    let q = queue(&root, other, None);
    runtime().block_on(q.task("T1")).unwrap();
    let e = auth
        .authenticate(&recv(&rx).hawk(), Utc::now())
        .unwrap_err();
    assert!(
        e.to_string().contains("auth:create-client:someone-else"),
        "{e}"
    );
}

#[test]
fn unnamed_temporary_credentials_from_the_crate() {
    let auth = authenticator();
    let (root, rx) = start_recorder();
    let temp = Credentials::new(ISSUER.0, ISSUER.1)
        .create_temp_creds(Duration::from_secs(600), ["queue:get-artifact:private/*"])
        .unwrap();
    let q = queue(&root, temp.clone(), None);
    runtime().block_on(q.task("T1")).unwrap();
    let id = auth.authenticate(&recv(&rx).hawk(), Utc::now()).unwrap();
    assert_eq!(id.client_id.as_deref(), Some(ISSUER.0));
    assert!(
        id.scopes
            .contains(&"queue:get-artifact:private/*".to_string())
    );
    assert!(!id.scopes.contains(&"queue:*".to_string()));

    // the same credentials signed with this crate's own header builder
    let header = hawk_header(
        &temp.client_id,
        &temp.access_token,
        temp.certificate.as_deref(),
        None,
        "GET",
        "/x",
        "h",
        443,
        None,
        Utc::now(),
    );
    let req = HawkRequest {
        method: "GET",
        resource: "/x",
        host: "h",
        port: 443,
        authorization: Some(&header),
        ..HawkRequest::default()
    };
    assert_eq!(
        auth.authenticate(&req, Utc::now()).unwrap().scopes,
        id.scopes
    );
}

#[test]
fn certificates_issued_here_work_in_the_crate() {
    let auth = authenticator();
    let (root, rx) = start_recorder();
    let now = Utc::now();
    let ours = bbb_auth::create_temporary_credentials(
        ISSUER.0,
        ISSUER.1,
        Some("task-client/T2/0"),
        &["queue:resolve-task:T2/0".to_string()],
        now,
        now + chrono::TimeDelta::minutes(20),
    )
    .unwrap();
    let creds = Credentials::new_with_certificate(
        ours.client_id.clone(),
        ours.access_token.clone(),
        ours.certificate.clone().unwrap(),
    );
    let q = queue(&root, creds, None);
    runtime().block_on(q.reportCompleted("T2", "0")).unwrap();
    let id = auth.authenticate(&recv(&rx).hawk(), Utc::now()).unwrap();
    assert_eq!(id.client_id.as_deref(), Some("task-client/T2/0"));
    assert!(id.scopes.contains(&"queue:resolve-task:T2/0".to_string()));
}

#[test]
fn query_strings_are_not_signed_by_the_crate() {
    let (root, rx) = start_recorder();
    let q = queue(&root, Credentials::new(WORKER.0, WORKER.1), None);
    runtime()
        .block_on(q.listTaskGroup("G1", Some("a b/c"), Some("5")))
        .unwrap();
    let req = recv(&rx);
    assert!(req.resource.contains('?'), "{}", req.resource);
    // the crate signs the path only, so a strict server refuses the request...
    assert_eq!(
        authenticator()
            .authenticate(&req.hawk(), Utc::now())
            .unwrap_err(),
        AuthError::BadMac
    );
    // ...and the opt-in compatibility mode accepts it
    let lenient = authenticator().allow_unsigned_query(true);
    let id = lenient.authenticate(&req.hawk(), Utc::now()).unwrap();
    assert_eq!(id.client_id.as_deref(), Some(WORKER.0));
}

/// The path and query of a URL signed for `https://tc.example.com`.
fn path_of(signed_url: &str) -> String {
    let path = signed_url.strip_prefix("https://tc.example.com");
    path.expect("a URL of the queue").to_owned()
}

#[test]
fn signed_urls_from_the_crate() {
    let auth = authenticator();
    let q = queue(
        "https://tc.example.com",
        Credentials::new(WORKER.0, WORKER.1),
        None,
    );
    let url = q
        .getLatestArtifact_signed_url("T1", "private/log.txt", Duration::from_secs(600))
        .unwrap();
    let resource = path_of(&url);
    let req = HawkRequest {
        method: "GET",
        resource: &resource,
        host: "tc.example.com",
        port: 443,
        ..HawkRequest::default()
    };
    let id = auth.authenticate(&req, Utc::now()).unwrap();
    assert_eq!(id.client_id.as_deref(), Some(WORKER.0));
    assert!(matches!(
        auth.authenticate(&req, Utc::now() + chrono::TimeDelta::minutes(11)),
        Err(AuthError::BewitExpired(_))
    ));

    // signed URLs with a query string (the bewit is appended after it)
    let url = q
        .listTaskGroup_signed_url("G1", Some("tok"), Some("5"), Duration::from_secs(600))
        .unwrap();
    let resource = path_of(&url);
    let req = HawkRequest {
        resource: &resource,
        ..req
    };
    auth.authenticate(&req, Utc::now()).unwrap();

    // temporary credentials in a signed URL
    let temp = Credentials::new(ISSUER.0, ISSUER.1)
        .create_temp_creds(Duration::from_secs(600), ["queue:get-artifact:private/*"])
        .unwrap();
    let q = queue("https://tc.example.com", temp, None);
    let url = q
        .getLatestArtifact_signed_url("T1", "private/log.txt", Duration::from_secs(600))
        .unwrap();
    let resource = path_of(&url);
    let req = HawkRequest {
        resource: &resource,
        ..req
    };
    let id = auth.authenticate(&req, Utc::now()).unwrap();
    assert!(
        id.scopes
            .contains(&"queue:get-artifact:private/*".to_string())
    );
}
