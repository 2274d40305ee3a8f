//! The live-log endpoint reads only the workers the configuration allows: a
//! live log at an allowed origin streams through; one anywhere else (a URL
//! whoever holds the claim chose) is never requested, and the answer says
//! why; a redirect from an allowed origin to another is not followed. On
//! SQLite and PostgreSQL.

mod common;

use axum::Router;
use axum::http::{StatusCode, Uri, header};
use axum::response::IntoResponse;
use bbb_testdb::Backend;
use common::*;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const LOG: &str = "line 1\nline 2\n";

/// A worker's live-log server on a port of its own: `/log/ok` serves
/// [`LOG`], `/log/elsewhere` redirects to `elsewhere`; every request counted.
struct LogServer {
    origin: String,
    requests: Arc<AtomicUsize>,
}

async fn log_server(elsewhere: Option<String>) -> LogServer {
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    let app = Router::new().fallback(move |uri: Uri| {
        let (counted, elsewhere) = (counted.clone(), elsewhere.clone());
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            match uri.path() {
                "/log/ok" => LOG.into_response(),
                "/log/elsewhere" => (
                    StatusCode::FOUND,
                    [(header::LOCATION, elsewhere.unwrap_or_default())],
                )
                    .into_response(),
                _ => StatusCode::NOT_FOUND.into_response(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    LogServer { origin, requests }
}

/// A running task on [`TASK_QUEUE`] whose `public/logs/live.log` is `url`.
async fn running_task_with_live_log(env: &Env, url: &str) -> String {
    let task = slug();
    env.create(&task, &task, TASK_QUEUE, "follow me", &[]).await;
    env.claim(TASK_QUEUE).await;
    let expires = bbb_queue::time::fmt_ms(chrono::Utc::now().timestamp_millis() + 3_600_000);
    env.root_ok(
        "POST",
        "queue",
        &format!("task/{task}/runs/0/artifacts/public/logs/live.log"),
        Some(&json!({"storageType": "reference", "url": url, "expires": expires, "contentType": "text/plain"})),
    )
    .await;
    task
}

async fn log_of(env: &Env, task: &str) -> (u16, String) {
    env.page(&format!("/tasks/{task}/runs/0/log"), None).await
}

async fn only_allowed_workers_are_read(backend: Backend) {
    let forbidden = log_server(None).await;
    let allowed = log_server(Some(format!("{}/log/ok", forbidden.origin))).await;
    let origins = bbb_web::LiveLogOrigins::none();
    let cfg = bbb_web::WebConfig {
        live_log_origins: origins.clone(),
        ..bbb_web::WebConfig::default()
    };
    let test = async |env: &Env| {
        // Allowed after the web UI is mounted, as `bbb up` allows its
        // worker's once the worker runs.
        origins.allow(&allowed.origin).unwrap();

        // Elsewhere: a clear refusal, and no request made.
        let url = format!("{}/log/ok", forbidden.origin);
        let task = running_task_with_live_log(env, &url).await;
        let (status, text) = log_of(env, &task).await;
        assert_eq!(status, 403, "{text}");
        assert!(text.contains("not from an allowed worker"), "{text}");
        assert!(text.contains(&url), "{text}");
        assert!(text.contains("live_log_origins"), "{text}");
        // The cloud's metadata service is no different.
        let task =
            running_task_with_live_log(env, "http://169.254.169.254/latest/meta-data/").await;
        assert_eq!(log_of(env, &task).await.0, 403);

        // An allowed origin streams through.
        let task = running_task_with_live_log(env, &format!("{}/log/ok", allowed.origin)).await;
        let res = env
            .browser
            .get(format!("{}/tasks/{task}/runs/0/log", env.q.root_url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(res.text().await.unwrap(), LOG);
        assert_eq!(allowed.requests.load(Ordering::SeqCst), 1);

        // An allowed origin's redirect elsewhere is not followed.
        let task =
            running_task_with_live_log(env, &format!("{}/log/elsewhere", allowed.origin)).await;
        let (status, text) = log_of(env, &task).await;
        assert_eq!(status, 404, "{text}");
        assert_eq!(allowed.requests.load(Ordering::SeqCst), 2);

        // The page's script shows the refusal's text.
        let (_, html) = env.page(&format!("/tasks/{task}"), None).await;
        assert!(html.contains("r.status === 403"), "{html}");

        assert_eq!(
            forbidden.requests.load(Ordering::SeqCst),
            0,
            "a worker outside the allowed origins is never requested"
        );
    };
    Env::on_with(backend, bbb_login::Login::default(), cfg, test).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_allowed_workers_are_read_sqlite() {
    only_allowed_workers_are_read(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_allowed_workers_are_read_postgres() {
    only_allowed_workers_are_read(Backend::Postgres).await
}
