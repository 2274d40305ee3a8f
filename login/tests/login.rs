//! Sign-in and the OAuth2 endpoints against a real queue with the auth
//! service beside it, on SQLite and PostgreSQL: passwords, the trusted
//! proxy, sessions that cannot be forged, and a third-party tool's whole
//! OAuth2 flow ending in credentials the services accept.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bbb_login::{
    Login, LoginConfig, ProxyConfig, RegisteredClient, SESSION_COOKIE, SignedIn, UserConfig,
};
use bbb_queue::config::RoleConfig;
use bbb_queue::testing::{TestOptions, TestQueue};
use bbb_testdb::{Backend, on_both_backends};
use chrono::{TimeDelta, Utc};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::LazyLock;

const PASSWORD: &str = "correct horse battery staple";
const REDIRECT: &str = "https://tool.example.com/cb";

/// Alice's password hash (made once: Argon2 is slow on purpose).
static HASH: LazyLock<String> = LazyLock::new(|| bbb_login::hash_password(PASSWORD).unwrap());

fn registered(
    id: &str,
    response_type: &str,
    scope: &[&str],
    whitelisted: bool,
    max: &str,
) -> RegisteredClient {
    RegisteredClient {
        client_id: id.into(),
        response_type: response_type.into(),
        scope: scope.iter().map(|s| s.to_string()).collect(),
        redirect_uri: vec![REDIRECT.into()],
        whitelisted,
        max_expires: max.into(),
    }
}

/// Alice (a password user), the proxy header trusted from 127.0.0.1, and
/// the tools `tool` (code), `implicit` (token) and `trusted` (whitelisted).
fn config() -> LoginConfig {
    LoginConfig {
        users: vec![UserConfig {
            name: "alice".into(),
            password_hash: HASH.clone().into(),
        }],
        proxy: ProxyConfig {
            header: Some("X-Forwarded-User".into()),
            trusted: vec!["127.0.0.1".into()],
        },
        registered_clients: vec![
            registered(
                "tool",
                "code",
                &["queue:get-task:*", "queue:cancel-task:*", "secrets:get:x"],
                false,
                "1 day",
            ),
            registered("implicit", "token", &["queue:get-task:*"], false, "1 hour"),
            registered("trusted", "code", &["queue:get-task:*"], true, "15 minutes"),
        ],
        ..LoginConfig::default()
    }
}

/// What users may do: alice reads and cancels tasks and makes her own
/// clients (as upstream's `login-identity:*` roles let users do); anonymous
/// callers only ask what they may do.
fn roles() -> Vec<RoleConfig> {
    vec![
        RoleConfig {
            role_id: "login-identity:alice".into(),
            scopes: vec![
                "queue:get-task:*".into(),
                "queue:cancel-task:*".into(),
                "auth:create-client:alice/*".into(),
            ],
        },
        RoleConfig {
            role_id: "login-identity:*".into(),
            scopes: vec!["auth:create-client:<..>/*".into()],
        },
        RoleConfig {
            role_id: "anonymous".into(),
            scopes: vec!["auth:current-scopes".into()],
        },
    ]
}

struct Fixture {
    q: TestQueue,
    login: Login,
}

async fn start(backend: Backend, database_url: Option<String>) -> Fixture {
    let login = Login::new(config()).unwrap();
    let q = TestQueue::with_mounts(
        TestOptions {
            postgres: backend == Backend::Postgres,
            database_url,
            roles: roles(),
            ..Default::default()
        },
        vec![bbb_auth_api::mount(), bbb_login::mount(login.clone())],
    )
    .await
    .expect("start the queue with sign-in");
    Fixture { q, login }
}

async fn on(backend: Backend, test: impl AsyncFnOnce(&Fixture)) {
    let f = start(backend, None).await;
    test(&f).await;
    f.q.stop().await;
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A client whose connections come from `ip` (a loopback address).
fn http_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// The `name=value` of the `Set-Cookie` for `name`, if any.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

fn headers_with(cookie: &str) -> axum::http::HeaderMap {
    let mut h = axum::http::HeaderMap::new();
    h.insert(axum::http::header::COOKIE, cookie.parse().unwrap());
    h
}

/// The value of the hidden input `name` of a page.
fn field(html: &str, name: &str) -> String {
    let re = regex::Regex::new(&format!(r#"name="{name}"[^>]*? value="([^"]*)""#)).unwrap();
    re.captures(html)
        .unwrap_or_else(|| panic!("no field {name} in {html}"))[1]
        .replace("&amp;", "&")
}

fn location(r: &reqwest::Response) -> String {
    r.headers()[LOCATION].to_str().unwrap().to_owned()
}

fn query_of(url: &str, sep: char) -> HashMap<String, String> {
    let q = url.split_once(sep).map(|(_, q)| q).unwrap_or("");
    url::form_urlencoded::parse(q.as_bytes())
        .into_owned()
        .collect()
}

/// Signs alice in through the form; the session cookie.
async fn sign_in_with_form(f: &Fixture, password: &str, next: &str) -> reqwest::Response {
    let c = http();
    let form = c
        .get(format!("{}/login?next={}", f.q.root_url, urlencode(next)))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    let form_cookie = set_cookie(&form, "bbb-login-form").expect("the form's cookie");
    let html = form.text().await.unwrap();
    assert!(html.contains("<title>Sign in · bbb</title>"), "{html}");
    assert!(html.contains(r#"<label for="name">"#) && html.contains(r#"<label for="password">"#));
    assert!(html.contains(r#"href="/static/bbb.css""#));
    c.post(format!("{}/login", f.q.root_url))
        .header(COOKIE, form_cookie)
        .form(&[
            ("name", "alice"),
            ("password", password),
            ("form_token", &field(&html, "form_token")),
            ("next", &field(&html, "next")),
        ])
        .send()
        .await
        .unwrap()
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `GET <rootUrl>/api/<service>/v1/<path>` signed with `creds`: status and body.
async fn call(
    f: &Fixture,
    creds: &bbb_auth::Credentials,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}/api/{path}", f.q.root_url);
    let parsed = url::Url::parse(&url).unwrap();
    let bytes = body.map(|b| b.to_string());
    let header = bbb_auth::hawk_header(
        &creds.client_id,
        &creds.access_token,
        creds.certificate.as_deref(),
        None,
        method,
        parsed.path(),
        parsed.host_str().unwrap(),
        parsed.port().unwrap(),
        bytes.as_deref().map(|b| (b.as_bytes(), "application/json")),
        f.q.clock.now(),
    );
    let mut req = http()
        .request(method.parse().unwrap(), &url)
        .header("authorization", header);
    if let Some(b) = bytes {
        req = req.header("content-type", "application/json").body(b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The scopes of `creds` besides the anonymous role's.
async fn current_scopes(f: &Fixture, creds: &bbb_auth::Credentials) -> Vec<String> {
    let (status, body) = call(f, creds, "GET", "auth/v1/scopes/current", None).await;
    assert_eq!(status, 200, "{body}");
    let scopes: Vec<String> = serde_json::from_value(body["scopes"].clone()).unwrap();
    scopes
        .into_iter()
        .filter(|s| s != "assume:anonymous" && s != "auth:current-scopes")
        .collect()
}

async fn password_sign_in(f: &Fixture) {
    let wrong = sign_in_with_form(f, "not it", "/groups/x").await;
    assert_eq!(wrong.status(), 401);
    assert!(
        set_cookie(&wrong, SESSION_COOKIE).is_none(),
        "no session for a wrong password"
    );
    let html = wrong.text().await.unwrap();
    assert!(
        html.contains("The name or the password is wrong."),
        "{html}"
    );
    assert!(html.contains(r#"role="alert""#));

    let right = sign_in_with_form(f, PASSWORD, "/groups/x?y=1").await;
    assert_eq!(right.status(), 303);
    assert_eq!(location(&right), "/groups/x?y=1");
    let raw = right
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with(SESSION_COOKIE))
        .unwrap();
    assert!(
        raw.contains("HttpOnly") && raw.contains("SameSite=Lax"),
        "{raw}"
    );
    let cookie = set_cookie(&right, SESSION_COOKIE).unwrap();
    let who = f
        .login
        .signed_in(&headers_with(&cookie))
        .expect("signed in");
    assert_eq!(who.user, "alice");
    assert_eq!(who.credentials.client_id, "alice");
    assert!(who.expires > Utc::now() + TimeDelta::hours(11));

    // The session's credentials are alice's, as the services see them.
    let scopes = current_scopes(f, &who.credentials).await;
    for s in [
        "assume:login-identity:alice",
        "queue:get-task:*",
        "queue:cancel-task:*",
    ] {
        assert!(scopes.contains(&s.to_string()), "{scopes:?}");
    }
    assert!(
        !scopes.iter().any(|s| s.starts_with("queue:create-task")),
        "{scopes:?}"
    );

    // `next` only leads to local paths.
    let elsewhere = sign_in_with_form(f, PASSWORD, "https://evil.example.com/").await;
    assert_eq!(location(&elsewhere), "/");
    let elsewhere = sign_in_with_form(f, PASSWORD, "//evil.example.com/").await;
    assert_eq!(location(&elsewhere), "/");

    // A form posted without the form's own cookie (from another site) is refused.
    let forged = http()
        .post(format!("{}/login", f.q.root_url))
        .form(&[
            ("name", "alice"),
            ("password", PASSWORD),
            ("form_token", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(set_cookie(&forged, SESSION_COOKIE).is_none());

    let out = http()
        .get(format!("{}/logout", f.q.root_url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);
    let raw = out.headers()[SET_COOKIE].to_str().unwrap();
    assert!(
        raw.starts_with(&format!("{SESSION_COOKIE}=;")) && raw.contains("Max-Age=0"),
        "{raw}"
    );
}

/// A session cookie holding `who` as it is.
fn cookie_of(who: &SignedIn) -> String {
    format!(
        "{SESSION_COOKIE}={}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(who).unwrap())
    )
}

async fn forged_sessions_are_refused(f: &Fixture) {
    let alice = f.login.sign_in("alice").unwrap();
    let good = f.login.session_cookie(&alice);
    let good = good.split(';').next().unwrap();
    assert_eq!(
        f.login.signed_in(&headers_with(good)).unwrap().user,
        "alice"
    );

    // Alice's credentials under another name.
    let mut renamed = alice.clone();
    renamed.user = "root".into();
    assert!(
        f.login
            .signed_in(&headers_with(&cookie_of(&renamed)))
            .is_none()
    );

    // More scopes written into the certificate.
    let mut widened = alice.clone();
    let mut cert: Value =
        serde_json::from_str(alice.credentials.certificate.as_deref().unwrap()).unwrap();
    cert["scopes"] = json!(["*"]);
    widened.credentials.certificate = Some(cert.to_string());
    assert!(
        f.login
            .signed_in(&headers_with(&cookie_of(&widened)))
            .is_none()
    );

    // A later expiry in the cookie than in the credentials changes nothing,
    // and credentials that expired are no session.
    let issuer = f.q.running.queue.issuer.clone();
    let now = Utc::now();
    let expired = bbb_auth::create_temporary_credentials(
        &issuer.0,
        &issuer.1,
        Some("alice"),
        &["assume:login-identity:alice".into()],
        now - TimeDelta::hours(2),
        now - TimeDelta::minutes(10),
    )
    .unwrap();
    let stale = SignedIn {
        user: "alice".into(),
        credentials: expired,
        expires: now + TimeDelta::days(1),
    };
    assert!(
        f.login
            .signed_in(&headers_with(&cookie_of(&stale)))
            .is_none()
    );

    // Credentials signed with a secret that is not the issuer's.
    let made_up = bbb_auth::create_temporary_credentials(
        &issuer.0,
        "guessed",
        Some("alice"),
        &["assume:login-identity:alice".into()],
        now - TimeDelta::minutes(1),
        now + TimeDelta::hours(1),
    )
    .unwrap();
    let made_up = SignedIn {
        credentials: made_up,
        ..alice.clone()
    };
    assert!(
        f.login
            .signed_in(&headers_with(&cookie_of(&made_up)))
            .is_none()
    );

    for junk in [
        format!("{SESSION_COOKIE}=garbage"),
        format!("{SESSION_COOKIE}="),
        format!(
            "{SESSION_COOKIE}={}",
            URL_SAFE_NO_PAD.encode(b"{\"user\":\"alice\"}")
        ),
    ] {
        assert!(f.login.signed_in(&headers_with(&junk)).is_none(), "{junk}");
    }

    // The pages agree: a forged cookie gets the sign-in page, not consent.
    let r = http()
        .get(format!(
            "{}/login/oauth/authorize?response_type=code&client_id=tool&redirect_uri={}&scope=queue:get-task:*",
            f.q.root_url,
            urlencode(REDIRECT)
        ))
        .header(COOKIE, cookie_of(&renamed))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(
        location(&r).starts_with("/third-party?response_type=code"),
        "{}",
        location(&r)
    );
}

async fn proxy_header_only_from_trusted_peers(f: &Fixture) {
    let url = format!("{}/login?next=/tasks/abc", f.q.root_url);
    let trusted = http_from("127.0.0.1")
        .get(&url)
        .header("X-Forwarded-User", "carol")
        .send()
        .await
        .unwrap();
    assert_eq!(trusted.status(), 303);
    assert_eq!(location(&trusted), "/tasks/abc");
    let cookie = set_cookie(&trusted, SESSION_COOKIE).expect("carol is signed in");
    let carol = f.login.signed_in(&headers_with(&cookie)).unwrap();
    assert_eq!(carol.user, "carol");
    assert!(
        current_scopes(f, &carol.credentials)
            .await
            .contains(&"assume:login-identity:carol".to_string())
    );

    // The same header from a peer that is not trusted is ignored.
    let untrusted = http_from("127.0.0.2")
        .get(&url)
        .header("X-Forwarded-User", "carol")
        .send()
        .await
        .unwrap();
    assert_eq!(untrusted.status(), 200);
    assert!(set_cookie(&untrusted, SESSION_COOKIE).is_none());

    // A name that is not one is ignored even from the proxy.
    let odd = http_from("127.0.0.1")
        .get(&url)
        .header("X-Forwarded-User", "a/b")
        .send()
        .await
        .unwrap();
    assert_eq!(odd.status(), 200);
    assert!(set_cookie(&odd, SESSION_COOKIE).is_none());
}

/// Alice's browser: a session cookie.
fn browser(f: &Fixture) -> String {
    let alice = f.login.sign_in("alice").unwrap();
    f.login
        .session_cookie(&alice)
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

fn authorize_url(
    f: &Fixture,
    client: &str,
    response_type: &str,
    scope: &str,
    extra: &str,
) -> String {
    format!(
        "{}/login/oauth/authorize?response_type={response_type}&client_id={client}&redirect_uri={}&scope={}&state=abc123{extra}",
        f.q.root_url,
        urlencode(REDIRECT),
        urlencode(scope)
    )
}

/// Authorize `client` as alice up to the consent page; the page's HTML.
async fn consent_page(f: &Fixture, cookie: &str, url: &str) -> String {
    let r = http().get(url).header(COOKIE, cookie).send().await.unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    let to = location(&r);
    assert!(to.starts_with("/third-party?"), "{to}");
    let page = http()
        .get(format!("{}{to}", f.q.root_url))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    page.text().await.unwrap()
}

async fn decide(
    f: &Fixture,
    cookie: &str,
    html: &str,
    changes: &[(&str, &str)],
) -> reqwest::Response {
    let mut form: HashMap<String, String> = ["transaction_id", "clientId", "scope", "csrf"]
        .iter()
        .map(|k| (k.to_string(), field(html, k)))
        .collect();
    form.insert(
        "expires".into(),
        (Utc::now() + TimeDelta::hours(2)).to_rfc3339(),
    );
    form.insert("description".into(), "for the tests".into());
    for (k, v) in changes {
        form.insert(k.to_string(), v.to_string());
    }
    http()
        .post(format!("{}/login/oauth/authorize/decision", f.q.root_url))
        .header(COOKIE, cookie)
        .form(&form)
        .send()
        .await
        .unwrap()
}

async fn token(f: &Fixture, code: &str, redirect_uri: &str) -> (u16, Value) {
    let r = http()
        .post(format!("{}/login/oauth/token", f.q.root_url))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("client_id", "tool"),
        ])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn credentials(f: &Fixture, access_token: &str) -> (u16, Value) {
    let r = http()
        .get(format!("{}/login/oauth/credentials", f.q.root_url))
        .header("authorization", format!("Bearer {access_token}"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn oauth2_code_flow(f: &Fixture) {
    let cookie = browser(f);
    let scope = "queue:get-task:* queue:cancel-task:* secrets:get:x";
    let html = consent_page(
        f,
        &cookie,
        &authorize_url(f, "tool", "code", scope, "&expires=3+days"),
    )
    .await;
    assert!(
        html.contains("<title>Authorize a tool · bbb</title>"),
        "{html}"
    );
    assert!(html.contains("<strong>tool</strong>"));
    for s in scope.split(' ') {
        assert!(html.contains(&format!("<code>{s}</code>")), "{s}");
    }
    let client_id = field(&html, "clientId");
    assert!(
        client_id.starts_with("alice/tool-") && client_id.len() == "alice/tool-".len() + 6,
        "{client_id}"
    );

    let back = decide(f, &cookie, &html, &[]).await;
    assert_eq!(back.status(), 302);
    let to = location(&back);
    assert!(to.starts_with(&format!("{REDIRECT}?")), "{to}");
    let q = query_of(&to, '?');
    assert_eq!(q["state"], "abc123");
    let code = &q["code"];

    let (status, wrong_uri) = token(f, code, "https://elsewhere.example.com/cb").await;
    assert_eq!(
        (status, wrong_uri["error"].as_str()),
        (403, Some("invalid_grant"))
    );
    // The code was consumed by that attempt, as upstream's is.
    let (status, again) = token(f, code, REDIRECT).await;
    assert_eq!(
        (status, again["error"].as_str()),
        (403, Some("invalid_grant")),
        "{again}"
    );

    // A second round, exchanged properly.
    let html = consent_page(f, &cookie, &authorize_url(f, "tool", "code", scope, "")).await;
    let back = decide(f, &cookie, &html, &[]).await;
    let code = query_of(&location(&back), '?')["code"].clone();
    let (status, tok) = token(f, &code, REDIRECT).await;
    assert_eq!(status, 200, "{tok}");
    assert_eq!(tok["token_type"], "Bearer");
    let access_token = tok["access_token"].as_str().unwrap();

    let (status, got) = credentials(f, access_token).await;
    assert_eq!(status, 200, "{got}");
    let mut keys: Vec<&String> = got.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["credentials", "expires"]);
    let client_id = field(&html, "clientId");
    assert_eq!(got["credentials"]["clientId"], client_id.as_str());
    let expires = chrono::DateTime::parse_from_rfc3339(got["expires"].as_str().unwrap()).unwrap();
    let asked = Utc::now() + TimeDelta::hours(2);
    assert!(
        expires < asked && expires > asked - TimeDelta::minutes(2),
        "{expires}"
    );
    let creds = bbb_auth::Credentials {
        client_id: got["credentials"]["clientId"].as_str().unwrap().into(),
        access_token: got["credentials"]["accessToken"].as_str().unwrap().into(),
        certificate: None,
    };
    // Exactly the scopes asked that alice has (she has no secrets scope).
    let mut scopes = current_scopes(f, &creds).await;
    scopes.sort();
    assert_eq!(scopes, ["queue:cancel-task:*", "queue:get-task:*"]);
    let task = bbb_service::validate::slugid();
    let (status, _) = call(f, &creds, "GET", &format!("queue/v1/task/{task}"), None).await;
    assert_eq!(status, 404, "allowed, and the task does not exist");
    let (status, body) = call(
        f,
        &creds,
        "POST",
        &format!("queue/v1/task/{task}/runs/0/completed"),
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");

    // Asking again answers the same client (idempotent).
    let (status, twice) = credentials(f, access_token).await;
    assert_eq!(status, 200, "{twice}");
    assert_eq!(twice["credentials"], got["credentials"]);
}

async fn oauth2_implicit_whitelisted_and_refusals(f: &Fixture) {
    let cookie = browser(f);

    // Implicit (token) flow: the access token comes in the fragment.
    let html = consent_page(
        f,
        &cookie,
        &authorize_url(f, "implicit", "token", "queue:get-task:*", ""),
    )
    .await;
    let back = decide(f, &cookie, &html, &[]).await;
    let to = location(&back);
    assert!(to.starts_with(&format!("{REDIRECT}#")), "{to}");
    let q = query_of(&to, '#');
    assert_eq!(
        (q["token_type"].as_str(), q["state"].as_str()),
        ("Bearer", "abc123")
    );
    let (status, got) = credentials(f, &q["access_token"]).await;
    assert_eq!(status, 200, "{got}");
    // maxExpires (1 hour) caps the two hours asked.
    let expires = chrono::DateTime::parse_from_rfc3339(got["expires"].as_str().unwrap()).unwrap();
    assert!(expires <= Utc::now() + TimeDelta::hours(1), "{expires}");

    // A whitelisted tool asking its scopes skips the consent page.
    let r = http()
        .get(authorize_url(
            f,
            "trusted",
            "code",
            "queue:get-task:*",
            "&expires=5+minutes",
        ))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let q = query_of(&location(&r), '?');
    assert_eq!(q["state"], "abc123");
    let (status, tok) = token(f, &q["code"], REDIRECT).await;
    assert_eq!(status, 200, "{tok}");
    let (status, got) = credentials(f, tok["access_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{got}");
    let expires = chrono::DateTime::parse_from_rfc3339(got["expires"].as_str().unwrap()).unwrap();
    assert!(expires <= Utc::now() + TimeDelta::minutes(5), "{expires}");

    // Refusals that cannot go back to the tool: upstream's bodies.
    for (url, code) in [
        (
            authorize_url(f, "nobody", "code", "queue:get-task:*", ""),
            "unauthorized_client",
        ),
        (
            format!(
                "{}/login/oauth/authorize?response_type=code&client_id=tool&redirect_uri=bad&scope=x",
                f.q.root_url
            ),
            "unauthorized_client",
        ),
        (
            format!(
                "{}/login/oauth/authorize?client_id=tool&redirect_uri={}",
                f.q.root_url,
                urlencode(REDIRECT)
            ),
            "invalid_request",
        ),
        (
            format!(
                "{}/login/oauth/authorize?response_type=code&redirect_uri={}",
                f.q.root_url,
                urlencode(REDIRECT)
            ),
            "invalid_request",
        ),
    ] {
        let r = http()
            .get(&url)
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), 302, "{url}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], code, "{url}: {body}");
    }

    // Refusals that go back to the tool, with the state.
    let scope = "queue:get-task:* queue:cancel-task:* secrets:get:x";
    let html = consent_page(f, &cookie, &authorize_url(f, "tool", "code", scope, "")).await;
    let tampered = decide(f, &cookie, &html, &[("scope", "assume:* queue:* auth:*")]).await;
    let q = query_of(&location(&tampered), '?');
    assert_eq!(
        (q["error"].as_str(), q["state"].as_str()),
        ("invalid_scope", "abc123")
    );
    let denied = decide(f, &cookie, &html, &[("cancel", "1")]).await;
    assert_eq!(query_of(&location(&denied), '?')["error"], "access_denied");
    let html = consent_page(
        f,
        &cookie,
        &authorize_url(f, "tool", "code", "queue:get-task:*", ""),
    )
    .await;
    let narrower = decide(f, &cookie, &html, &[]).await;
    assert_eq!(
        query_of(&location(&narrower), '?')["error"],
        "invalid_scope"
    );
    let html = consent_page(
        f,
        &cookie,
        &authorize_url(f, "implicit", "code", "queue:get-task:*", ""),
    )
    .await;
    let wrong_type = decide(f, &cookie, &html, &[]).await;
    assert_eq!(
        query_of(&location(&wrong_type), '?')["error"],
        "unsupported_response_type"
    );

    // A decision with a made-up transaction, or without the form's token.
    let html = consent_page(f, &cookie, &authorize_url(f, "tool", "code", scope, "")).await;
    for change in [("transaction_id", "bad-transaction-id"), ("csrf", "nope")] {
        let r = decide(f, &cookie, &html, &[change]).await;
        assert_eq!(r.status(), 403, "{change:?}");
        assert_eq!(r.json::<Value>().await.unwrap()["name"], "ForbiddenError");
    }
    // Another user's browser cannot decide alice's transaction.
    let bob = f.login.sign_in("bob").unwrap();
    let bob = f
        .login
        .session_cookie(&bob)
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let mut bobs = html.clone();
    bobs = bobs.replace(&field(&html, "csrf"), &{
        let who = f.login.signed_in(&headers_with(&bob)).unwrap();
        f.login.csrf_token(&who)
    });
    assert_eq!(decide(f, &bob, &bobs, &[]).await.status(), 403);

    // Not signed in: to the sign-in page, and back.
    let r = http()
        .get(authorize_url(f, "tool", "code", scope, ""))
        .send()
        .await
        .unwrap();
    let to = location(&r);
    assert!(
        to.starts_with("/third-party?response_type=code&client_id=tool"),
        "{to}"
    );
    let r = http()
        .get(format!("{}{to}", f.q.root_url))
        .send()
        .await
        .unwrap();
    let to = location(&r);
    assert!(
        to.starts_with("/login?next=%2Flogin%2Foauth%2Fauthorize%3Fresponse_type"),
        "{to}"
    );

    // The token endpoint's own errors.
    let r = http()
        .post(format!("{}/login/oauth/token", f.q.root_url))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 501);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "unsupported_grant_type"
    );
    let r = http()
        .post(format!("{}/login/oauth/token", f.q.root_url))
        .form(&[("grant_type", "authorization_code")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
    let (status, bad) = token(f, "bad", REDIRECT).await;
    assert_eq!(
        (status, bad["error"].as_str()),
        (403, Some("invalid_grant"))
    );

    // Credentials for a token that is not one, or whose client expired.
    let (status, body) = credentials(f, "bm90IGEgdG9rZW4=").await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"name": "InputError", "message": "Could not generate credentials for this access token"})
    );
    let html = consent_page(
        f,
        &cookie,
        &authorize_url(f, "implicit", "token", "queue:get-task:*", ""),
    )
    .await;
    let back = decide(f, &cookie, &html, &[("expires", "2018/04/01")]).await;
    let q = query_of(&location(&back), '#');
    let (status, body) = credentials(f, &q["access_token"]).await;
    assert_eq!(status, 400);
    assert_eq!(body["name"], "InputError");
}

on_both_backends!(crate::on; password_sign_in, forged_sessions_are_refused, proxy_header_only_from_trusted_peers, oauth2_code_flow, oauth2_implicit_whitelisted_and_refusals);

/// Two bbb processes on one database: a code made at one is exchanged at the
/// other, whose credentials work at the first.
async fn two_processes(backend: Backend, test: impl AsyncFnOnce(&Fixture, &Fixture)) {
    let pg;
    let dir = bbb_testdb::TempDir::new("bbb-login-two");
    let url = match backend {
        Backend::Postgres => {
            pg = bbb_testdb::PgDatabase::create("bbblogin").await.unwrap();
            pg.url().to_owned()
        }
        Backend::Sqlite => format!("sqlite://{}/queue.sqlite", dir.path().display()),
    };
    let a = start(backend, Some(url.clone())).await;
    let b = start(backend, Some(url)).await;
    test(&a, &b).await;
    a.q.stop().await;
    b.q.stop().await;
}

async fn a_grant_made_at_one_process_is_taken_at_another(a: &Fixture, b: &Fixture) {
    let cookie = browser(a);
    let html = consent_page(
        a,
        &cookie,
        &authorize_url(
            a,
            "tool",
            "code",
            "queue:get-task:* queue:cancel-task:* secrets:get:x",
            "",
        ),
    )
    .await;
    // The consent is posted to the other process (same session, same transaction).
    let back = decide(b, &cookie, &html, &[]).await;
    let code = query_of(&location(&back), '?')["code"].clone();
    let (status, tok) = token(a, &code, REDIRECT).await;
    assert_eq!(status, 200, "{tok}");
    let (status, got) = credentials(b, tok["access_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{got}");
    let creds = bbb_auth::Credentials {
        client_id: got["credentials"]["clientId"].as_str().unwrap().into(),
        access_token: got["credentials"]["accessToken"].as_str().unwrap().into(),
        certificate: None,
    };
    // The other process learns of the new client from the database.
    bbb_queue::testing::wait_for("the other process to know the new client", || async {
        let (status, _) = call(a, &creds, "GET", "auth/v1/scopes/current", None).await;
        (status == 200).then_some(())
    })
    .await;
}

mod two {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite() {
        super::two_processes(
            bbb_testdb::Backend::Sqlite,
            super::a_grant_made_at_one_process_is_taken_at_another,
        )
        .await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres() {
        super::two_processes(
            bbb_testdb::Backend::Postgres,
            super::a_grant_made_at_one_process_is_taken_at_another,
        )
        .await
    }
}
