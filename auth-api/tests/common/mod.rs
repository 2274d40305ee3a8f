//! Helpers of the auth service's tests: a queue serving the auth service on
//! SQLite or PostgreSQL, and a caller signing requests as the official
//! clients do (Hawk, optionally with a certificate or `authorizedScopes`).
#![allow(dead_code)]

use bbb_queue::config::{ClientConfig, RoleConfig};
use bbb_queue::testing::{TestOptions, TestQueue};
use bbb_testdb::Backend;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

/// A configured client every server of these tests has.
pub const CONFIGURED: &str = "configured";
/// Its access token.
pub const CONFIGURED_TOKEN: &str = "configured-token-0123456789";

/// A queue serving the auth service, on a fresh database of `backend` (or
/// on `database_url`, to share one).
pub async fn server(backend: Backend, database_url: Option<String>) -> TestQueue {
    server_with_roles(backend, database_url, vec![]).await
}

/// [`server`] with configured `roles` (an `anonymous` one replaces the
/// default anonymous role).
pub async fn server_with_roles(
    backend: Backend,
    database_url: Option<String>,
    roles: Vec<RoleConfig>,
) -> TestQueue {
    TestQueue::with_mounts(
        TestOptions {
            postgres: backend == Backend::Postgres,
            database_url,
            clients: vec![ClientConfig {
                client_id: CONFIGURED.into(),
                access_token: CONFIGURED_TOKEN.into(),
                scopes: vec!["auth:current-scopes".into(), "assume:anonymous".into()],
                expires: None,
            }],
            roles,
            ..TestOptions::default()
        },
        vec![bbb_auth_api::mount()],
    )
    .await
    .expect("start the queue with the auth service")
}

/// The fixture of `on_both_backends!`: a fresh server on `backend`.
pub async fn on(backend: Backend, test: impl AsyncFnOnce(&TestQueue)) {
    let q = server(backend, None).await;
    test(&q).await;
    q.stop().await;
}

/// Like [`on`], with an `anonymous` role that grants nothing (the default one
/// grants reads), so that every endpoint's own scope is checked.
pub async fn on_without_anonymous_scopes(backend: Backend, test: impl AsyncFnOnce(&TestQueue)) {
    let anonymous = RoleConfig {
        role_id: "anonymous".into(),
        scopes: vec![],
    };
    let q = server_with_roles(backend, None, vec![anonymous]).await;
    test(&q).await;
    q.stop().await;
}

/// Who calls: a client id and access token, maybe a certificate and
/// `authorizedScopes`; or nobody.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// The root URL.
    pub root_url: String,
    /// `None` for anonymous calls.
    pub client_id: Option<String>,
    /// The access token.
    pub access_token: String,
    /// A temporary-credentials certificate.
    pub certificate: Option<String>,
    /// `authorizedScopes` to restrict the call to.
    pub authorized_scopes: Option<Vec<String>>,
}

/// What a call answered.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body as JSON (`null` when empty).
    pub body: Value,
}

impl Answer {
    /// The TaskCluster error code.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    /// The error message.
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }

    /// The body, insisting on a 200.
    pub fn ok(self) -> Value {
        assert_eq!(self.status, 200, "{}", self.body);
        self.body
    }

    /// Insist on an error status and code; the message.
    pub fn err(self, status: u16, code: &str) -> String {
        assert_eq!((self.status, self.code()), (status, code), "{}", self.body);
        self.message().to_string()
    }
}

/// The root client of `q`.
pub fn root(q: &TestQueue) -> Caller {
    Caller::new(&q.root_url, &q.root_client_id, &q.root_access_token)
}

/// No credentials.
pub fn anonymous(q: &TestQueue) -> Caller {
    Caller {
        root_url: q.root_url.clone(),
        ..Caller::default()
    }
}

impl Caller {
    /// The client `id` with `token`.
    pub fn new(root_url: &str, id: &str, token: &str) -> Caller {
        Caller {
            root_url: root_url.into(),
            client_id: Some(id.into()),
            access_token: token.into(),
            ..Caller::default()
        }
    }

    /// The credentials of a `createClient` or `resetAccessToken` answer.
    pub fn of(root_url: &str, answer: &Value) -> Caller {
        Caller::new(
            root_url,
            answer["clientId"].as_str().expect("clientId"),
            answer["accessToken"].as_str().expect("accessToken"),
        )
    }

    /// Temporary credentials issued by this caller for `scopes`, valid for an hour.
    pub fn temporary(&self, scopes: &[&str]) -> Caller {
        let now = chrono::Utc::now();
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        let c = bbb_auth::create_temporary_credentials(
            self.client_id.as_deref().expect("a client"),
            &self.access_token,
            None,
            &scopes,
            now - chrono::TimeDelta::minutes(1),
            now + chrono::TimeDelta::hours(1),
        )
        .expect("temporary credentials");
        Caller {
            root_url: self.root_url.clone(),
            client_id: Some(c.client_id),
            access_token: c.access_token,
            certificate: c.certificate,
            authorized_scopes: None,
        }
    }

    /// This caller restricted to `scopes`.
    pub fn authorized(&self, scopes: &[&str]) -> Caller {
        Caller {
            authorized_scopes: Some(scopes.iter().map(|s| s.to_string()).collect()),
            ..self.clone()
        }
    }

    /// `method` `<rootUrl>/api/auth/v1<path>` with `body` as it is (so bad
    /// JSON can be sent), signed over it.
    pub async fn raw(&self, method: Method, path: &str, body: Option<&str>) -> Answer {
        self.raw_at("auth", method, path, body).await
    }

    /// As [`Caller::raw`], to the service `service`.
    pub async fn raw_at(
        &self,
        service: &str,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> Answer {
        let resource = format!("/api/{service}/v1{path}");
        let url = url::Url::parse(&format!("{}{resource}", self.root_url)).expect("url");
        let host = url.host_str().expect("host").to_string();
        let port = url.port_or_known_default().expect("port");
        let mut req = reqwest::Client::new()
            .request(method.clone(), url)
            .timeout(Duration::from_secs(30));
        let content_type = "application/json";
        if let Some(id) = &self.client_id {
            let header = bbb_auth::hawk_header(
                id,
                &self.access_token,
                self.certificate.as_deref(),
                self.authorized_scopes.as_deref(),
                method.as_str(),
                &resource,
                &host,
                port,
                body.map(|b| (b.as_bytes(), content_type)),
                chrono::Utc::now(),
            );
            req = req.header("authorization", header);
        }
        if let Some(b) = body {
            req = req.header("content-type", content_type).body(b.to_string());
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        Answer { status, body }
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> Answer {
        self.raw(Method::GET, path, None).await
    }

    /// `method` `path` with the JSON `body`.
    pub async fn send(&self, method: Method, path: &str, body: &Value) -> Answer {
        self.raw(method, path, Some(&body.to_string())).await
    }

    /// POST `path` without a body.
    pub async fn post_empty(&self, path: &str) -> Answer {
        self.raw(Method::POST, path, None).await
    }

    /// DELETE `path`.
    pub async fn delete(&self, path: &str) -> Answer {
        self.raw(Method::DELETE, path, None).await
    }

    /// `createClient` of `id` with `scopes`.
    pub async fn create_client(&self, id: &str, scopes: &[&str]) -> Answer {
        self.send(
            Method::PUT,
            &format!("/clients/{}", enc(id)),
            &client_body(scopes),
        )
        .await
    }

    /// A client this caller creates with `scopes`, as a caller.
    pub async fn new_client(&self, id: &str, scopes: &[&str]) -> Caller {
        Caller::of(&self.root_url, &self.create_client(id, scopes).await.ok())
    }

    /// `updateClient` of `id` to `scopes`.
    pub async fn update_client(&self, id: &str, scopes: &[&str]) -> Answer {
        self.send(
            Method::POST,
            &format!("/clients/{}", enc(id)),
            &client_body(scopes),
        )
        .await
    }

    /// `updateRole` of `id` to `scopes`.
    pub async fn update_role(&self, id: &str, scopes: &[&str]) -> Answer {
        self.send(
            Method::POST,
            &format!("/roles/{}", enc(id)),
            &json!({"description": "an updated role", "scopes": scopes}),
        )
        .await
    }

    /// `createRole` of `id` with `scopes`.
    pub async fn create_role(&self, id: &str, scopes: &[&str]) -> Answer {
        self.send(
            Method::PUT,
            &format!("/roles/{}", enc(id)),
            &json!({"description": "a test role", "scopes": scopes}),
        )
        .await
    }

    /// `currentScopes`.
    pub async fn current_scopes(&self) -> Answer {
        self.get("/scopes/current").await
    }

    /// `expandScopes` of `scopes`.
    pub async fn expand(&self, scopes: &[&str]) -> Vec<String> {
        let v = self
            .send(Method::POST, "/scopes/expand", &json!({ "scopes": scopes }))
            .await
            .ok();
        strings(&v["scopes"])
    }

    /// The queue's `listTaskQueues`, which needs no scopes: whether this
    /// caller authenticates with the queue.
    pub async fn queue_accepts(&self) -> Answer {
        self.raw_at("queue", Method::GET, "/task-queues", None)
            .await
    }
}

/// A `createClient`/`updateClient` body: an hour's expiry, a description, `scopes`.
pub fn client_body(scopes: &[&str]) -> Value {
    json!({
        "expires": bbb_clock::fmt_ms(chrono::Utc::now().timestamp_millis() + 3_600_000),
        "description": "a test client",
        "scopes": scopes,
    })
}

/// A URL path segment, percent-encoded as the official clients encode it.
pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// A JSON array of strings as a vector.
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}
