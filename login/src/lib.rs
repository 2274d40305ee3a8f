#![doc = include_str!("../README.md")]

pub mod config;
pub mod duration;
mod oauth2;
mod pages;
pub mod password;
pub mod proxy;
pub mod store;

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bbb_auth::{Authenticator, Credentials, HawkRequest, ScopeExpr};
use bbb_clock::Clock;
use bbb_queue::{Mount, Mounted, Shared};
use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use config::{LoginConfig, ProxyConfig, RegisteredClient, UserConfig};
pub use pages::page;
pub use password::hash_password;

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "bbb-session";

/// How long before `now` a user's credentials start (upstream's
/// `temporaryCredentials.startOffset`, for clock skew).
pub const START_OFFSET: TimeDelta = TimeDelta::minutes(15);

/// How much sooner than their certificate a session and an OAuth2 client's
/// credentials are said to expire, so they are renewed in time (upstream's
/// 30 seconds).
pub const EXPIRES_MARGIN: TimeDelta = TimeDelta::seconds(30);

/// A signed-in user and the credentials the UI uses for them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignedIn {
    /// The user's name, as in their role `login-identity:<user>`.
    pub user: String,
    /// Their temporary credentials.
    pub credentials: Credentials,
    /// When the credentials (and so the session) expire.
    pub expires: DateTime<Utc>,
}

/// Where a request came from: the peer address of the connection (known
/// when the server is served with `ConnectInfo<SocketAddr>`, as bbb's is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// What sign-in needs from the running queue: set once, when the first
/// service holding this [`Login`] is mounted ([`Login::attach`]).
struct Attached {
    /// Verifies the credentials of session cookies.
    auth: Arc<Authenticator>,
    /// The client id and secret that issue users' credentials (the queue's
    /// own issuer, shared by every process on the database).
    issuer: Arc<(String, String)>,
    /// The queue's clock.
    clock: Clock,
    /// The public root URL (cookies are `Secure` when it is `https`).
    root_url: String,
}

struct Inner {
    cfg: LoginConfig,
    trusted: Vec<proxy::Network>,
    attached: OnceLock<Attached>,
}

/// Sign-in: tells who a request comes from, signs users in and issues their
/// credentials. Clones share everything.
#[derive(Clone)]
pub struct Login {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("users", &self.inner.cfg.users.len())
            .field("proxy", &self.inner.cfg.proxy)
            .field("attached", &self.inner.attached.get().is_some())
            .finish()
    }
}

impl Default for Login {
    /// No users, no proxy, no OAuth2 clients: nobody can sign in, but a
    /// session made with [`Login::sign_in`] or [`Login::session_cookie`] is
    /// recognised.
    fn default() -> Self {
        Login::new(LoginConfig::default()).expect("the default configuration is valid")
    }
}

impl Login {
    /// Sign-in as `cfg` configures it (checked with [`LoginConfig::validate`]).
    pub fn new(cfg: LoginConfig) -> Result<Login, String> {
        cfg.validate()?;
        let trusted = cfg
            .proxy
            .trusted
            .iter()
            .filter_map(|t| proxy::Network::parse(t))
            .collect();
        Ok(Login {
            inner: Arc::new(Inner {
                cfg,
                trusted,
                attached: OnceLock::new(),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LoginConfig {
        &self.inner.cfg
    }

    /// Give sign-in what it needs from the running queue: its authenticator
    /// (to verify sessions), its issuer and clock. Every service that holds
    /// this `Login` calls it when mounted; the first call counts.
    pub fn attach(&self, shared: &Shared) {
        let _ = self.inner.attached.set(Attached {
            auth: shared.auth.clone(),
            issuer: shared.queue.issuer.clone(),
            clock: shared.queue.clock.clone(),
            root_url: shared.root_url.clone(),
        });
    }

    fn attached(&self) -> Option<&Attached> {
        self.inner.attached.get()
    }

    /// The current time on the queue's clock.
    fn now(&self) -> DateTime<Utc> {
        self.attached().map_or_else(Utc::now, |a| a.clock.now())
    }

    /// The user a request comes from, if its session cookie holds
    /// credentials that verify (signature, issuer and expiry, with the
    /// queue's authenticator) and carry `assume:login-identity:<user>`. A
    /// cookie that was altered, expired or made up is ignored.
    pub fn signed_in(&self, headers: &HeaderMap) -> Option<SignedIn> {
        let value = cookie(headers, SESSION_COOKIE)?;
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        let who: SignedIn = serde_json::from_slice(&bytes).ok()?;
        let a = self.attached()?;
        let now = a.clock.now();
        if who.expires <= now || !config::valid_user(&who.user) {
            return None;
        }
        let identity = verify(&a.auth, &who.credentials, now)?;
        let role = ScopeExpr::scope(format!("assume:login-identity:{}", who.user));
        (identity.satisfies(&role) && identity.expires.is_none_or(|e| e > now)).then_some(who)
    }

    /// [`Login::signed_in`], or else the user a trusted reverse proxy names
    /// (when `peer` is one of the trusted addresses), signed in now.
    pub fn signed_in_or_proxied(&self, headers: &HeaderMap, peer: Peer) -> Option<SignedIn> {
        let proxied = self.proxy_user(headers, peer);
        match self.signed_in(headers) {
            Some(who) if proxied.as_ref().is_none_or(|p| *p == who.user) => Some(who),
            _ => self.sign_in(&proxied?).ok(),
        }
    }

    /// Who a request comes from as every page sees it, and the `Set-Cookie`
    /// value to answer with when a session had to be made for them: the user
    /// a trusted reverse proxy names (when `peer` is trusted) wins over a
    /// session cookie of anyone else, and is signed in now unless the cookie
    /// is already theirs (the cookie set, their next requests carry it and
    /// no new credentials are made for them); otherwise the session cookie's
    /// user ([`Login::signed_in`]).
    pub fn session(&self, headers: &HeaderMap, peer: Peer) -> (Option<SignedIn>, Option<String>) {
        let cookie = self.signed_in(headers);
        let Some(user) = self.proxy_user(headers, peer) else {
            return (cookie, None);
        };
        if let Some(who) = cookie.filter(|c| c.user == user) {
            return (Some(who), None);
        }
        match self.sign_in(&user) {
            Ok(who) => {
                let set = self.session_cookie(&who);
                (Some(who), Some(set))
            }
            Err(e) => {
                tracing::error!(user, error = %e, "signing in a proxied user");
                (None, None)
            }
        }
    }

    /// The user the trusted reverse proxy names in its header, when the
    /// request comes from a trusted peer; `None` otherwise (the header of
    /// anyone else is ignored).
    pub fn proxy_user(&self, headers: &HeaderMap, peer: Peer) -> Option<String> {
        let name = self.inner.cfg.proxy.header.as_deref()?;
        let ip = peer.0?;
        if !self.inner.trusted.iter().any(|n| n.contains(ip)) {
            return None;
        }
        let user = headers.get(name)?.to_str().ok()?.trim();
        config::valid_user(user).then(|| user.to_owned())
    }

    /// The configured user `name` if `password` is theirs. An unknown name
    /// costs as much as a wrong password.
    pub fn check_password(&self, name: &str, password: &str) -> bool {
        let user = self.inner.cfg.users.iter().find(|u| u.name == name);
        let hash: &str = match user {
            Some(u) => u.password_hash.expose(),
            None => password::decoy_hash(),
        };
        password::verify_password(password, hash) && user.is_some()
    }

    /// Whether `name` is a configured (password) user.
    pub fn is_user(&self, name: &str) -> bool {
        self.inner.cfg.users.iter().any(|u| u.name == name)
    }

    /// Sign `user` in: temporary credentials for `assume:login-identity:<user>`,
    /// named `<user>` and issued by the queue's issuer as upstream's web
    /// server issues a user's (starting [`START_OFFSET`] ago, lasting the
    /// configured `session_expires`); the session ends [`EXPIRES_MARGIN`]
    /// before they do. Fails before the queue is attached.
    pub fn sign_in(&self, user: &str) -> Result<SignedIn, String> {
        if !config::valid_user(user) {
            return Err(format!("{user:?} is not a user name"));
        }
        let a = self
            .attached()
            .ok_or("sign-in is not attached to a queue")?;
        let now = a.clock.now();
        let expiry = duration::from_now(&self.inner.cfg.session_expires, now)?;
        let credentials = bbb_auth::create_temporary_credentials(
            &a.issuer.0,
            &a.issuer.1,
            Some(user),
            &[format!("assume:login-identity:{user}")],
            now - START_OFFSET,
            expiry,
        )
        .map_err(|e| e.to_string())?;
        Ok(SignedIn {
            user: user.to_owned(),
            credentials,
            expires: expiry - EXPIRES_MARGIN,
        })
    }

    /// The `Set-Cookie` value that signs `who` in: `HttpOnly`, `SameSite=Lax`
    /// (so a third-party tool's redirect to the OAuth2 authorization page
    /// arrives signed in, while no other site's form posts carry it),
    /// `Secure` when the root URL is `https`, until the session expires.
    pub fn session_cookie(&self, who: &SignedIn) -> String {
        let value = URL_SAFE_NO_PAD.encode(serde_json::to_vec(who).expect("serialisable"));
        let max_age = (who.expires - self.now()).num_seconds().max(0);
        format!(
            "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{}",
            self.secure()
        )
    }

    /// The `Set-Cookie` value that signs out.
    pub fn signed_out_cookie(&self) -> String {
        format!(
            "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
            self.secure()
        )
    }

    /// `; Secure` when the root URL is `https`.
    fn secure(&self) -> &'static str {
        match self.attached() {
            Some(a) if a.root_url.starts_with("https:") => "; Secure",
            _ => "",
        }
    }

    /// The token a form posted by `who` must carry (a hidden field): bound to
    /// their session, which no other site can read.
    pub fn csrf_token(&self, who: &SignedIn) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(who.credentials.access_token.as_bytes())
            .expect("HMAC takes any key");
        mac.update(b"bbb-login csrf");
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Whether `token` is [`Login::csrf_token`] of `who`.
    pub fn check_csrf(&self, who: &SignedIn, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.csrf_token(who).as_bytes().ct_eq(token.as_bytes()))
    }
}

/// Middleware (for `axum::middleware::from_fn_with_state(login, ...)`) that
/// makes every handler behind it see the user a trusted reverse proxy names,
/// through the session cookie it reads with [`Login::signed_in`]: when the
/// proxied user's session is not the request's, one is made
/// ([`Login::session`]), the request's session cookie replaced by it (a
/// session of another user never reaches the handler) and the response sets
/// it, unless the handler set a session cookie of its own (signing out). A
/// request from a peer that is not trusted passes unchanged.
pub async fn proxied_sessions(
    axum::extract::State(login): axum::extract::State<Login>,
    peer: Peer,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if login.proxy_user(request.headers(), peer).is_none() {
        return next.run(request).await;
    }
    let (who, set) = login.session(request.headers(), peer);
    let Some(set) = set else {
        // The cookie is the proxied user's already, or no session could be
        // made: then no other user's either.
        if who.is_none() {
            replace_session(request.headers_mut(), None);
        }
        return next.run(request).await;
    };
    let pair = set.split(';').next().unwrap_or_default().to_owned();
    replace_session(request.headers_mut(), Some(&pair));
    let mut response = next.run(request).await;
    let prefix = format!("{SESSION_COOKIE}=");
    let handler_set_one = response
        .headers()
        .get_all(axum::http::header::SET_COOKIE)
        .iter()
        .any(|v| v.as_bytes().starts_with(prefix.as_bytes()));
    if !handler_set_one && let Ok(v) = axum::http::HeaderValue::from_str(&set) {
        response
            .headers_mut()
            .append(axum::http::header::SET_COOKIE, v);
    }
    response
}

/// Replaces the session cookie of a request's `Cookie` headers by `pair`
/// (`name=value`), or removes it; the other cookies are kept.
fn replace_session(headers: &mut HeaderMap, pair: Option<&str>) {
    let mut kept: Vec<String> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .filter(|c| c.split_once('=').is_none_or(|(n, _)| n != SESSION_COOKIE))
        .map(str::to_owned)
        .collect();
    kept.extend(pair.map(str::to_owned));
    headers.remove(COOKIE);
    if !kept.is_empty()
        && let Ok(v) = axum::http::HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(COOKIE, v);
    }
}

/// The value of cookie `name` in `headers`.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

/// Verifies `creds` as the services would verify a request signed with them
/// (a request to nowhere, signed and checked at `now`): who they are, with
/// their expanded scopes.
fn verify(
    auth: &Authenticator,
    creds: &Credentials,
    now: DateTime<Utc>,
) -> Option<bbb_auth::Identity> {
    const RESOURCE: &str = "/login/session";
    const HOST: &str = "session.bbb.invalid";
    let header = bbb_auth::hawk_header(
        &creds.client_id,
        &creds.access_token,
        creds.certificate.as_deref(),
        None,
        "GET",
        RESOURCE,
        HOST,
        443,
        None,
        now,
    );
    auth.authenticate(
        &HawkRequest {
            method: "GET",
            resource: RESOURCE,
            host: HOST,
            port: 443,
            authorization: Some(&header),
            content_type: None,
            body: b"",
        },
        now,
    )
    .ok()
}

/// How often expired authorization codes and access tokens are deleted.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// Sign-in served beside the queue: `/login`, `/logout`, the OAuth2
/// endpoints for third-party tools (`/login/oauth/...`) and their consent
/// page (`/third-party`), with the tables of authorization codes and access
/// tokens in the queue's database.
pub fn mount(login: Login) -> Mount {
    Box::new(move |shared: Shared| {
        Box::pin(async move {
            login.attach(&shared);
            store::migrate(&shared.queue.db).await?;
            let state = pages::LoginState {
                login: login.clone(),
                db: shared.queue.db.clone(),
                clock: shared.queue.clock.clone(),
                auth: shared.auth.clone(),
                issuer: shared.queue.issuer.clone(),
                root_url: shared.root_url.clone(),
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap_or_default(),
            };
            let db = shared.queue.db.clone();
            let clock = shared.queue.clock.clone();
            let mut stop = shared.stop.clone();
            let purge = tokio::spawn(async move {
                loop {
                    if let Err(e) = store::purge(&db, clock.now_ms()).await {
                        tracing::warn!(error = %e, "purging expired OAuth2 codes and tokens");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(PURGE_INTERVAL) => {}
                        _ = stop.changed() => return,
                    }
                }
            });
            Ok(Mounted {
                routes: pages::routes(state),
                tasks: vec![purge],
            })
        })
    })
}
