//! The taskcluster proxy of a task (`features.taskclusterProxy`), as
//! upstream's `taskcluster-proxy`: an HTTP server on loopback, its URL in the
//! task's `TASKCLUSTER_PROXY_URL`, that forwards requests to the deployment
//! signed with the run's temporary credentials, so the task never holds them.
//!
//! * `/api/<service>/<version>/<path>` goes to
//!   `<rootUrl>/api/<service>/<version>/<path>` (the form clients use when
//!   given the proxy URL as root URL);
//! * `/<service>/<version>/<path>` (no dot in `<service>`) is the same,
//!   kept for old hard-coded URLs;
//! * `/<hostname>/<path>` goes to `https://<hostname>/<path>`;
//! * `POST /bewit` with a URL as body answers `303 See Other` to that URL
//!   signed with a bewit valid one hour.
//!
//! Requests carry `authorizedScopes`: the task's `scopes` plus
//! `queue:create-artifact:<taskId>/<runId>`, so the task cannot use the
//! claim's other scopes (reclaiming or resolving its own run). The
//! credentials are read at each request from a [`SharedCredentials`] the
//! worker renews on every reclaim. Redirects are passed back to the caller,
//! not followed; connection errors and 5xx answers are retried.
//!
//! When the task runs as a task user, only connections from that user (and
//! root) are accepted: the owner of the connecting socket is looked up in
//! `/proc/net/tcp` and `/proc/net/tcp6`, so another task on the same host
//! cannot use this task's proxy.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::livelog::serve_in_background;

/// Largest request body the proxy forwards (API calls carry JSON; artifact
/// content goes straight to the storage URLs, not through the proxy).
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Attempts for a request that fails to connect or gets a 5xx answer.
const ATTEMPTS: u32 = 5;

/// Temporary credentials of a run, as `claimWork`, `claimTask` and
/// `reclaimTask` return them. The access token is masked in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct TaskCredentials {
    /// Client id (`task-client/<taskId>/<runId>/on/...`).
    pub client_id: String,
    /// Access token.
    pub access_token: String,
    /// Certificate (JSON text), for temporary credentials.
    pub certificate: Option<String>,
}

impl fmt::Debug for TaskCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskCredentials")
            .field("client_id", &self.client_id)
            .field("access_token", &"***")
            .field("certificate", &self.certificate.is_some())
            .finish()
    }
}

impl TaskCredentials {
    /// Reads the `credentials` object of a claim or reclaim answer; `None`
    /// when it has no client id and access token.
    pub fn from_claim(creds: Option<&Value>) -> Option<TaskCredentials> {
        let creds = creds?;
        let field = |k: &str| creds.get(k).and_then(Value::as_str);
        let (client_id, access_token) = (field("clientId")?, field("accessToken")?);
        let certificate = match creds.get("certificate") {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(v @ Value::Object(_)) => Some(v.to_string()),
            _ => None,
        };
        Some(TaskCredentials {
            client_id: client_id.to_owned(),
            access_token: access_token.to_owned(),
            certificate,
        })
    }

    /// The same credentials for the `taskcluster` client.
    pub fn client(&self) -> taskcluster::Credentials {
        match &self.certificate {
            Some(cert) => taskcluster::Credentials::new_with_certificate(
                &self.client_id,
                &self.access_token,
                cert,
            ),
            None => taskcluster::Credentials::new(&self.client_id, &self.access_token),
        }
    }
}

/// A run's current credentials, shared by the worker (which replaces them
/// when it reclaims the task) and the task's proxy (which signs with them).
#[derive(Debug, Clone)]
pub struct SharedCredentials(Arc<RwLock<TaskCredentials>>);

impl SharedCredentials {
    /// Shares `creds`.
    pub fn new(creds: TaskCredentials) -> SharedCredentials {
        SharedCredentials(Arc::new(RwLock::new(creds)))
    }

    /// The current credentials.
    pub fn get(&self) -> TaskCredentials {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the credentials (after a reclaim).
    pub fn set(&self, creds: TaskCredentials) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = creds;
    }
}

/// A running proxy; it stops when dropped or [`TaskclusterProxy::stop`]ped.
#[derive(Debug)]
pub struct TaskclusterProxy {
    url: String,
    addr: SocketAddr,
    stop: CancellationToken,
}

struct ProxyState {
    root_url: String,
    creds: SharedCredentials,
    authorized_scopes: Vec<String>,
    http: reqwest_tc::Client,
}

impl TaskclusterProxy {
    /// Starts a proxy on a free loopback port for the deployment at
    /// `root_url`, signing with `creds` restricted to `authorized_scopes`.
    /// With `allowed_uid`, only connections from that uid and from root are
    /// accepted.
    pub async fn start(
        root_url: &str,
        creds: SharedCredentials,
        authorized_scopes: Vec<String>,
        allowed_uid: Option<u32>,
    ) -> std::io::Result<TaskclusterProxy> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let http = reqwest_tc::Client::builder()
            .redirect(reqwest_tc::redirect::Policy::none())
            .timeout(Duration::from_secs(15 * 60))
            .build()
            .map_err(std::io::Error::other)?;
        let state = Arc::new(ProxyState {
            root_url: root_url.trim_end_matches('/').to_owned(),
            creds,
            authorized_scopes,
            http,
        });
        let app = Router::new().fallback(handle).with_state(state);
        let stop = CancellationToken::new();
        let listener = VerifiedListener {
            inner: listener,
            allowed_uid,
        };
        serve_in_background(listener, app, stop.clone(), "taskcluster proxy");
        Ok(TaskclusterProxy {
            url: format!("http://{addr}"),
            addr,
            stop,
        })
    }

    /// The URL tasks use (`TASKCLUSTER_PROXY_URL`), `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections; requests in flight finish.
    pub fn stop(self) {}
}

impl Drop for TaskclusterProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Accepts only the connections whose socket belongs to the allowed uid or
/// to root, when a uid is given.
struct VerifiedListener {
    inner: TcpListener,
    allowed_uid: Option<u32>,
}

impl axum::serve::Listener for VerifiedListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(error = %e, "taskcluster proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(allowed) = self.allowed_uid else {
                return (stream, peer);
            };
            match peer_uid(peer) {
                Some(uid) if uid == allowed || uid == 0 => return (stream, peer),
                found => {
                    tracing::warn!(
                        peer = %peer,
                        uid = ?found,
                        allowed_uid = allowed,
                        "taskcluster proxy: connection from another user refused"
                    );
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// The uid owning the client end of a loopback TCP connection whose address
/// is `peer`, from `/proc/net/tcp` (and `tcp6`, where IPv4 clients of a
/// dual-stack socket appear as `::ffff:a.b.c.d`).
fn peer_uid(peer: SocketAddr) -> Option<u32> {
    let (v4, v6) = match peer.ip() {
        IpAddr::V4(ip) => (Some(ip), ip.to_ipv6_mapped()),
        IpAddr::V6(ip) => (ip.to_ipv4_mapped(), ip),
    };
    let port = peer.port();
    let mut tables = Vec::new();
    if let Some(ip) = v4 {
        let word = u32::from_ne_bytes(ip.octets());
        tables.push(("/proc/net/tcp", format!("{word:08X}:{port:04X}")));
    }
    let words: String = v6
        .octets()
        .chunks(4)
        .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    tables.push(("/proc/net/tcp6", format!("{words}:{port:04X}")));
    tables
        .into_iter()
        .find_map(|(table, local)| socket_owner(table, &local))
}

fn socket_owner(table: &str, local: &str) -> Option<u32> {
    let file = std::fs::File::open(table).ok()?;
    BufReader::new(file).lines().skip(1).find_map(|line| {
        let line = line.ok()?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.len() > 7 && fields[1].eq_ignore_ascii_case(local))
            .then(|| fields[7].parse().ok())
            .flatten()
    })
}

/// What signs a request: the credentials of the moment and the `ext` that
/// carries their certificate and the authorized scopes.
struct Signer {
    hawk: hawk::Credentials,
    ext: String,
    client_id: String,
    temporary_scopes: Option<Value>,
}

impl ProxyState {
    fn signer(&self) -> Result<Signer, String> {
        let creds = self.creds.get();
        let certificate: Option<Value> = match &creds.certificate {
            Some(text) => Some(
                serde_json::from_str(text)
                    .map_err(|e| format!("the certificate is not JSON: {e}"))?,
            ),
            None => None,
        };
        let temporary_scopes = certificate.as_ref().and_then(|c| c.get("scopes").cloned());
        let mut ext = json!({ "authorizedScopes": self.authorized_scopes });
        if let Some(cert) = certificate {
            ext["certificate"] = cert;
        }
        let ext = base64::engine::general_purpose::STANDARD.encode(ext.to_string());
        let key = hawk::Key::new(&creds.access_token, hawk::SHA256)
            .map_err(|e| format!("unusable access token: {e}"))?;
        Ok(Signer {
            hawk: hawk::Credentials {
                id: creds.client_id.clone(),
                key,
            },
            ext,
            client_id: creds.client_id,
            temporary_scopes,
        })
    }
}

impl Signer {
    /// The `Authorization` header for `method` on `url`.
    fn header(&self, method: &str, url: &reqwest_tc::Url) -> Result<String, String> {
        let (host, port, resource) = hawk_target(url)?;
        let header = hawk::RequestBuilder::new(method, host, port, &resource)
            .ext(self.ext.as_str())
            .request()
            .make_header(&self.hawk)
            .map_err(|e| format!("cannot sign the request: {e}"))?;
        Ok(format!("Hawk {header}"))
    }

    /// `url` with a `bewit` query parameter valid for `ttl`.
    fn bewit(&self, mut url: reqwest_tc::Url, ttl: Duration) -> Result<reqwest_tc::Url, String> {
        let (host, port, resource) = hawk_target(&url)?;
        let bewit = hawk::RequestBuilder::new("GET", host, port, &resource)
            .ext(self.ext.as_str())
            .request()
            .make_bewit_with_ttl(&self.hawk, ttl)
            .map_err(|e| format!("cannot sign the URL: {e}"))?
            .to_str();
        url.query_pairs_mut().append_pair("bewit", &bewit);
        Ok(url)
    }

    /// The `X-Taskcluster-*` headers upstream's proxy adds to every answer.
    fn add_headers(&self, headers: &mut HeaderMap, authorized_scopes: &[String]) {
        let mut set = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        };
        match &self.temporary_scopes {
            Some(scopes) => {
                set("x-taskcluster-proxy-temp-clientid", self.client_id.clone());
                set("x-taskcluster-proxy-temp-scopes", scopes.to_string());
            }
            None => set("x-taskcluster-proxy-perm-clientid", self.client_id.clone()),
        }
        set(
            "x-taskcluster-authorized-scopes",
            json!(authorized_scopes).to_string(),
        );
    }
}

fn hawk_target(url: &reqwest_tc::Url) -> Result<(&str, u16, String), String> {
    let host = url.host_str().ok_or("the URL has no host")?;
    let port = url.port_or_known_default().ok_or("the URL has no port")?;
    let resource = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    Ok((host, port, resource))
}

fn plain(status: StatusCode, text: String) -> Response {
    (status, text).into_response()
}

async fn handle(State(st): State<Arc<ProxyState>>, req: Request) -> Response {
    let signer = match st.signer() {
        Ok(s) => s,
        Err(e) => {
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Taskcluster Proxy has invalid credentials: {e}"),
            );
        }
    };
    let raw_path = req.uri().path().to_owned();
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let mut resp = if raw_path.starts_with("/bewit") {
        bewit(&signer, req).await
    } else if raw_path.starts_with("/credentials") {
        plain(
            StatusCode::NOT_FOUND,
            "this proxy's credentials are renewed by the worker\n".into(),
        )
    } else {
        let target = if raw_path.starts_with("/api") {
            api_target(&st.root_url, &raw_path, &query)
        } else {
            convert_path(&st.root_url, &raw_path, &query)
        };
        match target {
            Ok(target) => forward(&st, &signer, req, &target).await,
            Err(e) => {
                tracing::debug!(path = %raw_path, error = %e, "taskcluster proxy: no target");
                plain(StatusCode::NOT_FOUND, e)
            }
        }
    };
    signer.add_headers(resp.headers_mut(), &st.authorized_scopes);
    resp.headers_mut().insert(
        HeaderName::from_static("x-taskcluster-proxy-version"),
        HeaderValue::from_static(env!("CARGO_PKG_VERSION")),
    );
    resp
}

/// `/api/<service>/<version>/<path>` → `<root>/api/<service>/<version>/<path>`.
fn api_target(root_url: &str, raw_path: &str, query: &str) -> Result<String, String> {
    let parsed = raw_path.strip_prefix("/api/").and_then(|rest| {
        let (service, rest) = rest.split_once('/')?;
        let (version, path) = rest.split_once('/')?;
        Some((service, version, path))
    });
    match parsed {
        Some((service, version, path)) => {
            Ok(format!("{root_url}/api/{service}/{version}/{path}{query}"))
        }
        None => Err("invalid /api path".into()),
    }
}

/// `/<service>/<version>/<path>` → `<root>/api/<service>/<version>/<path>`
/// when `<service>` has no dot, `https://<service>/<path>` when it is a host
/// name.
fn convert_path(root_url: &str, raw_path: &str, query: &str) -> Result<String, String> {
    let rest = raw_path.strip_prefix('/').unwrap_or(raw_path);
    let (service, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !is_hostname(service) {
        return Err(format!(
            "Unknown taskcluster service: {service} is not a valid taskcluster service"
        ));
    }
    if service.contains('.') {
        return Ok(format!("https://{service}/{path}{query}"));
    }
    let (version, path) = path.split_once('/').unwrap_or((path, ""));
    Ok(format!("{root_url}/api/{service}/{version}/{path}{query}"))
}

fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Request headers not passed on: the hop-by-hop ones, and those the proxy
/// sets itself.
fn passed_on(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host"
            | "authorization"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    )
}

async fn forward(st: &ProxyState, signer: &Signer, req: Request, target: &str) -> Response {
    let method = req.method().clone();
    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Failed to generate proxy request (could not read http body) - {e}"),
            );
        }
    };
    let url = match reqwest_tc::Url::parse(target) {
        Ok(u) => u,
        Err(e) => return plain(StatusCode::NOT_FOUND, format!("{target}: {e}")),
    };
    tracing::debug!(method = %method, target, "taskcluster proxy: forwarding");
    let mut attempt = 0;
    let answer = loop {
        attempt += 1;
        let authorization = match signer.header(method.as_str(), &url) {
            Ok(a) => a,
            Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, e),
        };
        let mut request = st.http.request(method.clone(), url.clone());
        for (name, value) in headers.iter().filter(|(n, _)| passed_on(n)) {
            request = request.header(name, value);
        }
        let sent = request
            .header(header::AUTHORIZATION, authorization)
            .body(body.clone())
            .send()
            .await;
        let retry = match &sent {
            Ok(resp) => resp.status().is_server_error(),
            Err(e) => !e.is_timeout(),
        };
        if !retry || attempt >= ATTEMPTS {
            break sent;
        }
        tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt))).await;
    };
    let upstream = match answer {
        Ok(resp) => resp,
        Err(e) => {
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Failed during proxy request: {}", e.without_url()),
            );
        }
    };
    let mut resp = Response::builder().status(upstream.status());
    if let Some(h) = resp.headers_mut() {
        for (name, value) in upstream.headers() {
            if passed_on(name) || name == header::CONTENT_LENGTH {
                h.append(name, value.clone());
            }
        }
        if let Ok(v) = HeaderValue::from_str(target) {
            h.insert(HeaderName::from_static("x-taskcluster-endpoint"), v);
        }
    }
    resp.body(Body::from_stream(upstream.bytes_stream()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn bewit(signer: &Signer, req: Request) -> Response {
    let body = match axum::body::to_bytes(req.into_body(), 64 * 1024).await {
        Ok(b) => b,
        Err(e) => {
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Error reading body: {e}"),
            );
        }
    };
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    let signed = reqwest_tc::Url::parse(&text)
        .map_err(|e| e.to_string())
        .and_then(|url| signer.bewit(url, Duration::from_secs(3600)));
    match signed {
        Ok(url) => Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(header::LOCATION, url.as_str())
            .body(Body::from(url.to_string()))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        Err(e) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Error creating bewit url: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let root = "https://tc.example.com";
        let api = |path, query| api_target(root, path, query);
        let short = |path, query| convert_path(root, path, query);
        let cases = [
            (
                api("/api/queue/v1/task/abc", "?x=1"),
                Ok("/api/queue/v1/task/abc?x=1"),
            ),
            (
                api("/api/queue/v1/double//slash/a%2Fb", ""),
                Ok("/api/queue/v1/double//slash/a%2Fb"),
            ),
            (api("/api/queue", ""), Err("invalid /api path")),
            (
                short("/queue/v1/task/abc", ""),
                Ok("/api/queue/v1/task/abc"),
            ),
        ];
        for (got, want) in cases {
            let want = want.map(|p| format!("{root}{p}")).map_err(str::to_owned);
            assert_eq!(got, want);
        }
        assert_eq!(
            short("/hooks.example.com/v1/x", "?y").unwrap(),
            "https://hooks.example.com/v1/x?y"
        );
        assert!(short("/bad_name/v1/x", "").is_err());
        assert!(short("/", "").is_err());
    }

    #[test]
    fn credentials_from_claims() {
        let c = TaskCredentials::from_claim(Some(&json!({
            "clientId": "task-client/x/0/on/g/w/until/1",
            "accessToken": "secret-token",
            "certificate": "{\"version\":1}"
        })))
        .unwrap();
        assert_eq!(c.certificate.as_deref(), Some("{\"version\":1}"));
        assert!(!format!("{c:?}").contains("secret-token"));
        assert!(TaskCredentials::from_claim(Some(&json!({"clientId": "x"}))).is_none());
        assert!(TaskCredentials::from_claim(None).is_none());
        let shared = SharedCredentials::new(c.clone());
        let mut renewed = c;
        renewed.access_token = "renewed".into();
        shared.set(renewed.clone());
        assert_eq!(shared.get(), renewed);
    }

    #[test]
    fn own_sockets_are_found() {
        // A connected loopback socket of this process: its client end
        // belongs to this process's uid.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert_eq!(peer_uid(peer), Some(nix::unistd::geteuid().as_raw()));
        let unused = SocketAddr::from(([127, 0, 0, 1], 1));
        assert_eq!(peer_uid(unused), None);
    }
}
