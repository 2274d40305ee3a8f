//! The task log and the HTTP server that streams it while the task runs.
//!
//! A [`TaskLog`] appends to a file and publishes its length; the
//! [`LiveLogServer`] serves `GET /log/<token>` by reading that file and
//! following it until the log is closed, so a reader connecting at any time
//! gets the whole log from its start and then new output as it is written.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How far the log file has been written, and whether it is complete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct LogState {
    len: u64,
    closed: bool,
}

/// An append-only task log backed by a file.
#[derive(Debug)]
pub struct TaskLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
    state: watch::Sender<LogState>,
}

impl TaskLog {
    /// Creates (or truncates) the log file at `path`, readable by its owner
    /// only.
    pub fn create(path: &Path) -> std::io::Result<Arc<TaskLog>> {
        let file = bbb_secret::create_private_file(path)?;
        let (state, _) = watch::channel(LogState::default());
        Ok(Arc::new(TaskLog {
            path: path.to_owned(),
            file: Mutex::new(file),
            state,
        }))
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends raw bytes. Write errors are reported once through `tracing`
    /// and otherwise ignored: a full disk must not kill the task.
    pub fn write(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if self.state.borrow().closed {
            return;
        }
        match file.write_all(data) {
            Ok(()) => self.state.send_modify(|s| s.len += data.len() as u64),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot write task log")
            }
        }
    }

    /// Appends a worker line, `[taskcluster <time>] <text>`.
    pub fn line(&self, text: &str) {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.write(format!("[taskcluster {now}] {text}\n").as_bytes());
    }

    /// Appends a warning line, `[taskcluster:warn <time>] <text>`.
    pub fn warning_line(&self, text: &str) {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.write(format!("[taskcluster:warn {now}] {text}\n").as_bytes());
    }

    /// Appends an error line, `[taskcluster:error] <text>`.
    pub fn error_line(&self, text: &str) {
        self.write(format!("[taskcluster:error] {text}\n").as_bytes());
    }

    /// Marks the log complete: live readers get the rest and then the end of
    /// the stream. Later writes are dropped.
    pub fn close(&self) {
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = file.sync_data();
        self.state.send_modify(|s| s.closed = true);
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.state.borrow().len
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the whole log back.
    pub fn contents(&self) -> std::io::Result<String> {
        let bytes = std::fs::read(&self.path)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn follow(&self) -> (PathBuf, watch::Receiver<LogState>) {
        (self.path.clone(), self.state.subscribe())
    }
}

type Registry = Arc<Mutex<HashMap<String, Arc<TaskLog>>>>;

/// HTTP server streaming task logs at `GET /log/<token>`.
#[derive(Clone)]
pub struct LiveLogServer {
    addr: SocketAddr,
    base_url: String,
    logs: Registry,
}

impl std::fmt::Debug for LiveLogServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveLogServer")
            .field("addr", &self.addr)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl LiveLogServer {
    /// Binds `listen` and serves until `stop` is cancelled. `public_url` is
    /// the base URL readers use; it defaults to `http://<bound address>`.
    pub async fn start(
        listen: &str,
        public_url: Option<&str>,
        stop: CancellationToken,
    ) -> std::io::Result<LiveLogServer> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let base_url = match public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => {
                let shown = if addr.ip().is_unspecified() {
                    SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
                } else {
                    addr
                };
                format!("http://{shown}")
            }
        };
        let logs: Registry = Arc::default();
        let app = Router::new()
            .route("/log/{token}", get(serve_log))
            .with_state(logs.clone());
        serve_in_background(listener, app, stop, "live log server");
        Ok(LiveLogServer {
            addr,
            base_url,
            logs,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL readers use (the published logs' URLs start with it).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Publishes a log; returns the URL it is readable at. The URL holds a
    /// random token, so it cannot be guessed from the task id.
    pub fn publish(&self, log: Arc<TaskLog>) -> (String, String) {
        let token = uuid::Uuid::new_v4().simple().to_string();
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), log);
        (format!("{}/log/{token}", self.base_url), token)
    }

    /// Stops serving a log (readers already connected finish normally).
    pub fn unpublish(&self, token: &str) {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
    }
}

/// Serves `app` on `listener` in a task of its own until `stop` is
/// cancelled (requests in flight finish); a failure is logged as `what`'s.
pub(crate) fn serve_in_background<L>(
    listener: L,
    app: Router,
    stop: CancellationToken,
    what: &'static str,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "{what} failed");
        }
    });
}

async fn serve_log(State(logs): State<Registry>, UrlPath(token): UrlPath<String>) -> Response {
    let log = logs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&token)
        .cloned();
    let Some(log) = log else {
        return (StatusCode::NOT_FOUND, "no such log\n").into_response();
    };
    let (path, state) = log.follow();
    drop(log);
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(_) => return (StatusCode::NOT_FOUND, "no such log\n").into_response(),
    };
    let stream = futures::stream::unfold(Some((file, state, 0u64)), |st| async move {
        let (mut file, mut state, mut pos) = st?;
        loop {
            let LogState { len, closed } = *state.borrow_and_update();
            if pos < len {
                let want = (len - pos).min(64 * 1024) as usize;
                let mut buf = vec![0u8; want];
                if let Err(e) = file.seek(std::io::SeekFrom::Start(pos)).await {
                    return Some((Err(e), None));
                }
                match file.read(&mut buf).await {
                    Ok(0) => {}
                    Ok(n) => {
                        buf.truncate(n);
                        pos += n as u64;
                        return Some((Ok(Bytes::from(buf)), Some((file, state, pos))));
                    }
                    Err(e) => return Some((Err(e), None)),
                }
            }
            if closed && pos >= len {
                return None;
            }
            if state.changed().await.is_err() {
                // The log was dropped; send what the file holds.
                let mut rest = Vec::new();
                file.seek(std::io::SeekFrom::Start(pos)).await.ok()?;
                file.read_to_end(&mut rest).await.ok()?;
                return (!rest.is_empty()).then(|| (Ok(Bytes::from(rest)), None));
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-content-type-options", "nosniff")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
