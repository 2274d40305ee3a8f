//! A small service built on the framework, called through its router: error
//! bodies, authentication, scope refusal, CORS preflight, continuation tokens
//! and the span each request runs in.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use bbb_auth::{AuthConfig, Authenticator, Client, Role, hawk_header};
use bbb_clock::Clock;
use bbb_service::paging::{page, with_token};
use bbb_service::validate::{is_slugid, param, slugid};
use bbb_service::{ApiError, Call, Reply, ScopeParams, Service, all_of, get, post, put, scope};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

const HOST: &str = "notes.example.com";
const WRITER: Option<(&str, &str)> = Some(("writer", "writer-secret"));
const ROOT: Option<(&str, &str)> = Some(("root", "root-secret"));

#[derive(Clone, Default)]
struct Notes(Arc<Mutex<BTreeMap<String, (String, String)>>>);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNote {
    owner: String,
    text: String,
}

async fn note(notes: Notes, call: Call) -> bbb_service::Result<Reply> {
    let id = call.param("noteId");
    let notes = notes.0.lock().unwrap();
    let (owner, text) = notes
        .get(id)
        .ok_or_else(|| ApiError::NotFound(format!("Note {id} not found")))?;
    Ok(Reply::json(
        json!({"noteId": id, "owner": owner, "text": text}),
    ))
}

async fn create_note(notes: Notes, call: Call) -> bbb_service::Result<Reply> {
    let body: NewNote = call.input_as()?;
    call.authorize_with(ScopeParams::new().set("owner", body.owner.clone()))?;
    let id = call.param("noteId").to_string();
    notes
        .0
        .lock()
        .unwrap()
        .insert(id.clone(), (body.owner, body.text));
    Ok(Reply::json(json!({"noteId": id})))
}

async fn list_notes(notes: Notes, call: Call) -> bbb_service::Result<Reply> {
    let (limit, token) = call.paging()?;
    let after = token.unwrap_or_default();
    let ids: Vec<String> = notes
        .0
        .lock()
        .unwrap()
        .keys()
        .filter(|k| **k > after)
        .take(limit as usize)
        .cloned()
        .collect();
    let (ids, next) = page(ids, limit, Clone::clone);
    Ok(Reply::json(with_token(json!({"notes": ids}), next)))
}

/// Declares scopes that need the body, then forgets to check them.
async fn forgetful(_: Notes, _: Call) -> bbb_service::Result<Reply> {
    Ok(Reply::json(json!({"done": true})))
}

async fn broken(_: Notes, _: Call) -> bbb_service::Result<Reply> {
    Err(ApiError::Internal(
        "the secret database password is hunter2".into(),
    ))
}

fn router() -> Router {
    let auth = Authenticator::new(AuthConfig {
        clients: vec![
            Client::new(
                "writer",
                "writer-secret",
                ["notes:create:*", "notes:owner:me"],
            ),
            Client::new("root", "root-secret", ["*"]),
        ],
        roles: vec![Role::new("anonymous", ["notes:get:*", "notes:list"])],
    })
    .unwrap();
    Service::new(
        "notes",
        "v1",
        Notes::default(),
        Arc::new(auth),
        Clock::system(),
    )
    .param("noteId", |v| {
        param("noteId", v, is_slugid(v)).map(|()| v.to_string())
    })
    .endpoint(
        get("/notes", "listNotes")
            .scopes(scope("notes:list"))
            .to(list_notes),
    )
    .endpoint(
        get("/note/<noteId>", "note")
            .scopes(scope("notes:get:<noteId>"))
            .to(note),
    )
    .endpoint(
        put("/note/<noteId>", "createNote")
            .scopes(all_of([
                scope("notes:create:<noteId>"),
                scope("notes:owner:<owner>"),
            ]))
            .to(create_note),
    )
    .endpoint(
        post("/forgetful", "forgetful")
            .scopes(scope("notes:forget:<what>"))
            .to(forgetful),
    )
    .endpoint(get("/broken", "broken").to(broken))
    .router()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn send(router: &Router, request: Request<Body>) -> Answer {
    let r = router.clone().oneshot(request).await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)))
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// A request, signed as `client` when given, with `body` as JSON.
fn request(
    method: Method,
    path: &str,
    client: Option<(&str, &str)>,
    body: Option<Value>,
) -> Request<Body> {
    let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
    let mut r = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(header::HOST, HOST);
    if bytes.is_some() {
        r = r.header(header::CONTENT_TYPE, "application/json");
    }
    if let Some((id, secret)) = client {
        let auth = hawk_header(
            id,
            secret,
            None,
            None,
            method.as_str(),
            path,
            HOST,
            80,
            bytes.as_deref().map(|b| (b, "application/json")),
            chrono::Utc::now(),
        );
        r = r.header(header::AUTHORIZATION, auth);
    }
    r.body(bytes.map(Body::from).unwrap_or_else(Body::empty))
        .unwrap()
}

fn assert_error(a: &Answer, status: u16, code: &str, method: &str) {
    assert_eq!(a.status.as_u16(), status, "{}", a.body);
    assert_eq!(a.body["code"], code, "{}", a.body);
    assert_eq!(a.body["requestInfo"]["method"], method, "{}", a.body);
    let keys: Vec<&str> = a
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["code", "message", "requestInfo"]);
    let message = a.body["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("* errorCode:  {code}\n* statusCode: {status}")),
        "{message}"
    );
    assert_eq!(
        a.headers[header::CONTENT_TYPE],
        "application/json; charset=utf-8"
    );
}

#[tokio::test]
async fn error_bodies() {
    let r = router();
    let a = send(
        &r,
        request(Method::GET, "/api/notes/v1/nothing", None, None),
    )
    .await;
    assert_error(&a, 404, "ResourceNotFound", "unknown");
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .starts_with("No such API method: GET /api/notes/v1/nothing")
    );
    let a = send(
        &r,
        request(Method::DELETE, "/api/notes/v1/notes", None, None),
    )
    .await;
    assert_error(&a, 404, "ResourceNotFound", "unknown");
    let a = send(&r, request(Method::GET, "/elsewhere", None, None)).await;
    assert_error(&a, 404, "ResourceNotFound", "unknown");

    let a = send(
        &r,
        request(Method::GET, "/api/notes/v1/note/not-a-slug", None, None),
    )
    .await;
    assert_error(&a, 400, "InvalidRequestArguments", "note");
    assert_eq!(
        a.body["requestInfo"]["params"],
        json!({"noteId": "not-a-slug"})
    );

    let id = slugid();
    let path = format!("/api/notes/v1/note/{id}");
    let mut bad_json = request(Method::PUT, &path, None, None);
    *bad_json.body_mut() = Body::from("{not json");
    let a = send(&r, bad_json).await;
    assert_error(&a, 400, "MalformedPayload", "createNote");

    let a = send(&r, request(Method::PUT, &path, WRITER, None)).await;
    assert_error(&a, 400, "MalformedPayload", "createNote");
    let wrong = json!({"owner": "me", "text": "x", "colour": "red"});
    let a = send(&r, request(Method::PUT, &path, WRITER, Some(wrong.clone()))).await;
    assert_error(&a, 400, "InputValidationError", "createNote");
    assert_eq!(a.body["requestInfo"]["params"], json!({"noteId": id}));
    assert_eq!(a.body["requestInfo"]["payload"], wrong);

    let a = send(&r, request(Method::GET, &path, None, None)).await;
    assert_error(&a, 404, "ResourceNotFound", "note");
    assert!(a.body["message"].as_str().unwrap().starts_with(&format!(
        "Note {id} not found\n\n---\n\n* method:     note\n"
    )));

    let a = send(&r, request(Method::GET, "/api/notes/v1/broken", None, None)).await;
    assert_error(&a, 500, "InternalServerError", "broken");
    let message = a.body["message"].as_str().unwrap();
    let incident = message
        .strip_prefix("Internal Server Error, incidentId ")
        .and_then(|m| m.split_once(".\n\n---\n\n"))
        .map(|(incident, _)| incident)
        .unwrap_or_else(|| panic!("{message}"));
    uuid::Uuid::parse_str(incident).unwrap();
    assert!(!a.body.to_string().contains("hunter2"), "{}", a.body);
}

#[tokio::test]
async fn authentication_and_scopes() {
    let r = router();
    let id = slugid();
    let path = format!("/api/notes/v1/note/{id}");
    let note = json!({"owner": "me", "text": "hello"});

    let a = send(
        &r,
        request(
            Method::PUT,
            &path,
            Some(("writer", "wrong")),
            Some(note.clone()),
        ),
    )
    .await;
    assert_error(&a, 401, "AuthenticationFailed", "createNote");
    assert_eq!(a.headers[header::WWW_AUTHENTICATE], "hawk");

    // Checked before the handler: the anonymous role lacks notes:create.
    let a = send(&r, request(Method::PUT, &path, None, Some(note.clone()))).await;
    assert_error(&a, 403, "InsufficientScopes", "createNote");
    let message = a.body["message"].as_str().unwrap();
    assert!(
        message.starts_with("Client ID anonymous does not have sufficient scopes"),
        "{message}"
    );
    assert!(
        message.contains(&format!("\"notes:create:{id}\"")),
        "{message}"
    );

    // Checked by the handler with the body's owner: writer may write as "me" only.
    let other = json!({"owner": "you", "text": "hello"});
    let a = send(&r, request(Method::PUT, &path, WRITER, Some(other))).await;
    assert_error(&a, 403, "InsufficientScopes", "createNote");
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("notes:owner:you")
    );
    let a = send(&r, request(Method::PUT, &path, WRITER, Some(note))).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body, json!({"noteId": id}));

    let a = send(&r, request(Method::GET, &path, None, None)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["text"], "hello");

    // A handler that never checks the scopes it declared does not answer.
    let a = send(
        &r,
        request(Method::POST, "/api/notes/v1/forgetful", ROOT, None),
    )
    .await;
    assert_error(&a, 500, "InternalServerError", "forgetful");
}

#[tokio::test]
async fn cors_preflight_and_headers() {
    let r = router();
    let path = format!("/api/notes/v1/note/{}", slugid());
    let a = send(&r, request(Method::OPTIONS, &path, None, None)).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(a.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let methods = a.headers[header::ACCESS_CONTROL_ALLOW_METHODS]
        .to_str()
        .unwrap();
    assert!(methods.split(',').any(|m| m == "PUT"), "{methods}");
    let headers = a.headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap();
    assert!(
        headers.split(',').any(|h| h == "Authorization"),
        "{headers}"
    );
    assert_eq!(a.headers[header::ACCESS_CONTROL_MAX_AGE], "900");

    let a = send(
        &r,
        request(Method::OPTIONS, "/api/notes/v1/nothing", None, None),
    )
    .await;
    assert_eq!(a.status, 404);

    for path in [path.as_str(), "/api/notes/v1/ping", "/elsewhere"] {
        let a = send(&r, request(Method::GET, path, None, None)).await;
        assert_eq!(
            a.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "*",
            "{path}"
        );
    }
}

#[tokio::test]
async fn continuation_tokens() {
    let r = router();
    let mut ids: Vec<String> = (0..5).map(|_| slugid()).collect();
    for id in &ids {
        let body = json!({"owner": "me", "text": id});
        let a = send(
            &r,
            request(
                Method::PUT,
                &format!("/api/notes/v1/note/{id}"),
                ROOT,
                Some(body),
            ),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    ids.sort();

    let mut seen = Vec::new();
    let mut path = "/api/notes/v1/notes?limit=2".to_string();
    let mut pages = 0;
    loop {
        let a = send(&r, request(Method::GET, &path, None, None)).await;
        assert_eq!(a.status, 200, "{}", a.body);
        pages += 1;
        for id in a.body["notes"].as_array().unwrap() {
            seen.push(id.as_str().unwrap().to_string());
        }
        match a.body["continuationToken"].as_str() {
            Some(t) => path = format!("/api/notes/v1/notes?limit=2&continuationToken={t}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);

    let a = send(
        &r,
        request(
            Method::GET,
            "/api/notes/v1/notes?continuationToken=%25%25",
            None,
            None,
        ),
    )
    .await;
    assert_error(&a, 400, "InputError", "listNotes");
    let a = send(
        &r,
        request(Method::GET, "/api/notes/v1/notes?limit=0", None, None),
    )
    .await;
    assert_error(&a, 400, "InvalidRequestArguments", "listNotes");
}

/// A span's fields by name.
type SpanFields = HashMap<String, String>;

/// The name and fields of every span that closed.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<(String, SpanFields)>>>);

struct Fields(SpanFields);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
}

impl<S> tracing_subscriber::Layer<S> for Spans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields(HashMap::new());
        attrs.record(&mut fields);
        ctx.span(id).unwrap().extensions_mut().insert(fields);
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let span = ctx.span(id).unwrap();
        let mut ext = span.extensions_mut();
        if let Some(fields) = ext.get_mut::<Fields>() {
            values.record(fields);
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let span = ctx.span(&id).unwrap();
        let fields = span
            .extensions()
            .get::<Fields>()
            .map(|f| f.0.clone())
            .unwrap_or_default();
        self.0
            .lock()
            .unwrap()
            .push((span.name().to_string(), fields));
    }
}

#[tokio::test]
async fn each_request_runs_in_a_span_with_its_fields() {
    use tracing_subscriber::layer::SubscriberExt;
    let spans = Spans::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let r = router();
    let id = slugid();
    let path = format!("/api/notes/v1/note/{id}");
    let body = json!({"owner": "me", "text": "x"});
    send(&r, request(Method::PUT, &path, WRITER, Some(body))).await;
    send(
        &r,
        request(Method::GET, &format!("{path}?bewit=nope"), None, None),
    )
    .await;

    let requests: Vec<SpanFields> = spans
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(name, _)| name == "request")
        .map(|(_, f)| f.clone())
        .collect();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let created = &requests[0];
    assert_eq!(created["request.method"], "PUT");
    assert_eq!(created["request.path"], path);
    assert_eq!(created["request.route"], "createNote");
    assert_eq!(created["client.id"], "writer");
    assert_eq!(created["status"], "200");
    assert!(created["duration_ms"].parse::<f64>().unwrap() >= 0.0);
    assert!(!created.contains_key("task.id"));

    // A bad bewit: the span still says what was asked, and never the query.
    let refused = &requests[1];
    assert_eq!(refused["request.method"], "GET");
    assert_eq!(refused["request.path"], path);
    assert_eq!(refused["request.route"], "note");
    assert_eq!(refused["status"], "401");
    assert!(!refused.contains_key("client.id"));
}

#[tokio::test]
async fn task_and_run_parameters_reach_the_span() {
    use tracing_subscriber::layer::SubscriberExt;
    let spans = Spans::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let auth = Authenticator::new(AuthConfig {
        clients: vec![],
        roles: vec![Role::new("anonymous", ["runs:*"])],
    })
    .unwrap();
    let r = Service::new("runs", "v1", (), Arc::new(auth), Clock::system())
        .endpoint(
            get("/task/<taskId>/runs/<runId>", "run")
                .scopes(scope("runs:get:<taskId>/<runId>"))
                .to(|(), call: Call| async move {
                    Ok(Reply::json(json!({"runId": call.param("runId")})))
                }),
        )
        .router();
    let a = send(
        &r,
        request(Method::GET, "/api/runs/v1/task/T/runs/3", None, None),
    )
    .await;
    assert_eq!(a.body, json!({"runId": "3"}));
    let fields = spans
        .0
        .lock()
        .unwrap()
        .iter()
        .find(|(name, _)| name == "request")
        .map(|(_, f)| f.clone())
        .unwrap();
    assert_eq!(fields["task.id"], "T");
    assert_eq!(fields["run.id"], "3");
    assert_eq!(fields["client.id"], "anonymous");
    assert_eq!(fields["request.route"], "run");
}
