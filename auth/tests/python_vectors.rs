//! Requests recorded from the PyPI `taskcluster` client (113.2.0) verify with
//! `Authenticator`.
//!
//! `data/python_vectors.json` was produced by `data/gen_python_vectors.py`: a loopback
//! server recorded each request exactly as the Python client sent it (URL-safe `ext` with
//! padding, a payload hash on every request, certificates embedded as objects, signed URLs
//! from `buildSignedUrl`). The vectors are replayed at the recorded time; Python is not
//! needed to run this test.

mod common;

use bbb_auth::{AuthConfig, AuthError, Authenticator, Client, HawkRequest, Role};
use chrono::{DateTime, TimeDelta, Utc};
use common::{Captured, split_host};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Vectors {
    generator: String,
    now: i64,
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Vector {
    name: String,
    method: String,
    resource: String,
    host: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: String,
    credentials: VectorCredentials,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VectorCredentials {
    client_id: String,
}

const ISSUER_TOKEN: &str = "issuer-secret-token-0123456789abcdef";
const WORKER_TOKEN: &str = "worker-secret-token-0123456789abcdef";

fn load() -> Vectors {
    serde_json::from_str(include_str!("data/python_vectors.json")).unwrap()
}

fn authenticator() -> Authenticator {
    Authenticator::new(AuthConfig {
        clients: vec![
            Client::new(
                "project/worker",
                WORKER_TOKEN,
                ["queue:get-task:*", "assume:project:worker"],
            ),
            Client::new(
                "static/issuer",
                ISSUER_TOKEN,
                ["auth:create-client:task-client/*", "queue:*"],
            ),
        ],
        roles: vec![
            Role::new("anonymous", ["queue:ping"]),
            Role::new("project:*", ["secrets:get:<..>"]),
        ],
    })
    .unwrap()
}

fn captured(v: &Vector) -> Captured {
    let (host, port) = split_host(&v.host, 80);
    Captured {
        method: v.method.clone(),
        resource: v.resource.clone(),
        host,
        port,
        authorization: v.authorization.clone(),
        content_type: v.content_type.clone(),
        body: v.body.as_bytes().to_vec(),
    }
}

fn expected_scopes(name: &str) -> Vec<&'static str> {
    match name {
        "permanent GET"
        | "permanent GET with query"
        | "permanent PUT with JSON body"
        | "permanent POST without body"
        | "bewit permanent" => vec![
            "assume:anonymous",
            "assume:project:worker",
            "queue:get-task:*",
            "queue:ping",
            "secrets:get:worker",
        ],
        "authorizedScopes" => vec!["assume:anonymous", "queue:get-task:T1", "queue:ping"],
        "named temporary credentials" => vec![
            "assume:anonymous",
            "queue:create-artifact:T1/0",
            "queue:ping",
            "queue:resolve-task:T1/0",
        ],
        "named temporary credentials with authorizedScopes" => {
            vec!["assume:anonymous", "queue:ping", "queue:resolve-task:T1/0"]
        }
        "unnamed temporary credentials" | "bewit unnamed temporary" => vec![
            "assume:anonymous",
            "queue:get-artifact:private/*",
            "queue:ping",
        ],
        other => panic!("no expectation for vector {other:?}"),
    }
}

fn now(vs: &Vectors) -> DateTime<Utc> {
    DateTime::from_timestamp(vs.now, 0).unwrap()
}

#[test]
fn every_python_vector_verifies() {
    let vs = load();
    assert!(vs.generator.contains("113."), "{}", vs.generator);
    assert_eq!(vs.vectors.len(), 10);
    let auth = authenticator();
    for v in &vs.vectors {
        let c = captured(v);
        let id = auth
            .authenticate(&c.hawk(), now(&vs))
            .unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(
            id.client_id.as_deref(),
            Some(v.credentials.client_id.as_str()),
            "{}",
            v.name
        );
        assert_eq!(id.scopes, expected_scopes(&v.name), "{}", v.name);
    }
}

#[test]
fn python_headers_have_the_documented_shape() {
    let vs = load();
    for v in vs.vectors.iter().filter(|v| v.authorization.is_some()) {
        let h = v.authorization.as_deref().unwrap();
        // the Python client always sends a payload hash and an ext
        assert!(h.contains("hash=\""), "{}", v.name);
        assert!(h.contains("ext=\""), "{}", v.name);
    }
    // at least one ext uses padding, and the certificates are embedded as objects
    let named = vs
        .vectors
        .iter()
        .find(|v| v.name == "named temporary credentials")
        .unwrap();
    let h = named.authorization.as_deref().unwrap();
    let ext = h.split("ext=\"").nth(1).unwrap().split('"').next().unwrap();
    assert!(ext.ends_with('='));
    assert!(!ext.contains(['+', '/']));
    use base64::Engine;
    let json: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE
            .decode(ext)
            .unwrap(),
    )
    .unwrap();
    assert!(json["certificate"].is_object());
}

#[test]
fn python_vectors_fail_when_altered() {
    let vs = load();
    let auth = authenticator();
    for v in &vs.vectors {
        let c = captured(v);

        // another path
        let mut other = c.clone();
        let end_of_path = other.resource.find('?').unwrap_or(other.resource.len());
        other.resource.insert(end_of_path, 'x');
        assert_eq!(
            auth.authenticate(&other.hawk(), now(&vs)).unwrap_err(),
            AuthError::BadMac,
            "{}",
            v.name
        );

        // another port
        let moved = HawkRequest {
            port: c.port + 1,
            ..c.hawk()
        };
        assert_eq!(
            auth.authenticate(&moved, now(&vs)).unwrap_err(),
            AuthError::BadMac,
            "{}",
            v.name
        );

        if v.authorization.is_some() {
            // too late
            assert!(
                matches!(
                    auth.authenticate(&c.hawk(), now(&vs) + TimeDelta::minutes(16)),
                    Err(AuthError::StaleTimestamp { .. })
                ),
                "{}",
                v.name
            );
            // a body the hash does not cover
            let body = HawkRequest {
                body: b"{\"x\":1}",
                ..c.hawk()
            };
            assert_eq!(
                auth.authenticate(&body, now(&vs)).unwrap_err(),
                AuthError::PayloadHashMismatch,
                "{}",
                v.name
            );
        } else {
            // signed URLs expire (the Python client signs for the requested 600 s)
            assert!(
                matches!(
                    auth.authenticate(&c.hawk(), now(&vs) + TimeDelta::minutes(11)),
                    Err(AuthError::BewitExpired(_))
                ),
                "{}",
                v.name
            );
        }
    }
}

#[test]
fn python_temporary_credentials_need_the_issuer() {
    let vs = load();
    // the same requests against a table where the issuer has a different secret
    let auth = Authenticator::new(AuthConfig {
        clients: vec![Client::new("static/issuer", "another-secret", ["*"])],
        roles: vec![],
    })
    .unwrap();
    for v in vs.vectors.iter().filter(|v| v.name.contains("temporary")) {
        let e = auth
            .authenticate(&captured(v).hawk(), now(&vs))
            .unwrap_err();
        assert!(
            matches!(e, AuthError::InvalidCertificate(ref m) if m.contains("signature")),
            "{}: {e}",
            v.name
        );
    }
    // and an issuer lacking the certificate's scopes cannot have issued them
    let auth = Authenticator::new(AuthConfig {
        clients: vec![Client::new(
            "static/issuer",
            ISSUER_TOKEN,
            ["auth:create-client:task-client/*"],
        )],
        roles: vec![],
    })
    .unwrap();
    let v = vs
        .vectors
        .iter()
        .find(|v| v.name == "named temporary credentials")
        .unwrap();
    let e = auth
        .authenticate(&captured(v).hawk(), now(&vs))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("doesn't satisfy all certificate scopes"),
        "{e}"
    );
}
