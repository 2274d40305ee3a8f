//! A user a trusted reverse proxy names is signed in on every page, not only
//! at `/login`: from a trusted peer the proxy's user wins over any session
//! cookie of another user, gets a session cookie on the first page (so later
//! pages make no new credentials) and can post the forms of that page; from
//! any other peer the header is ignored. On SQLite and PostgreSQL.

mod common;

use bbb_login::{Login, LoginConfig, ProxyConfig, SESSION_COOKIE};
use bbb_testdb::{Backend, on_both_backends};
use common::*;
use reqwest::header::{COOKIE, SET_COOKIE};

const HEADER: &str = "X-Forwarded-User";

/// Sign-in that believes [`HEADER`] from 127.0.0.1 only.
fn login() -> Login {
    Login::new(LoginConfig {
        proxy: ProxyConfig {
            header: Some(HEADER.into()),
            trusted: vec!["127.0.0.1".into()],
        },
        ..LoginConfig::default()
    })
    .unwrap()
}

async fn on(backend: Backend, test: impl AsyncFnOnce(&Env)) {
    Env::on_with(backend, login(), bbb_web::WebConfig::default(), test).await
}

on_both_backends!(crate::on; the_proxied_user_is_signed_in_on_every_page);

/// A browser whose connections come from `ip` (a loopback address).
fn browser_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// A page loaded from `client` with the proxy's `user` and `cookie`: its
/// status, HTML and the session cookie it sets (`name=value`).
async fn load(
    env: &Env,
    client: &reqwest::Client,
    path: &str,
    user: Option<&str>,
    cookie: Option<&str>,
) -> (u16, String, Option<String>) {
    let mut req = client.get(format!("{}{path}", env.q.root_url));
    if let Some(u) = user {
        req = req.header(HEADER, u);
    }
    if let Some(c) = cookie {
        req = req.header(COOKIE, c);
    }
    let res = req.send().await.unwrap();
    let set = res
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{SESSION_COOKIE}=")))
        .map(|v| v.split(';').next().unwrap().to_owned());
    (res.status().as_u16(), res.text().await.unwrap(), set)
}

fn signed_in_as(html: &str) -> Option<String> {
    let at = html.find("Signed in as <strong>")? + "Signed in as <strong>".len();
    Some(html[at..].split('<').next().unwrap().to_owned())
}

async fn the_proxied_user_is_signed_in_on_every_page(env: &Env) {
    let task = slug();
    env.create(&task, &task, TASK_QUEUE, "proxied", &[]).await;
    let trusted = browser_from("127.0.0.1");
    let untrusted = browser_from("127.0.0.2");
    let pages = [
        "/health".to_owned(),
        format!("/groups/{task}"),
        format!("/tasks/{task}"),
    ];

    for path in &pages {
        // From the proxy, without a cookie: signed in, and given a session.
        let (status, html, set) = load(env, &trusted, path, Some("alice"), None).await;
        assert_eq!(status, 200, "{path}: {html}");
        assert_eq!(signed_in_as(&html).as_deref(), Some("alice"), "{path}");
        let cookie = set.unwrap_or_else(|| panic!("{path}: a session cookie is set"));

        // With it: the same session, no new one made.
        let (_, html, set) = load(env, &trusted, path, Some("alice"), Some(&cookie)).await;
        assert_eq!(signed_in_as(&html).as_deref(), Some("alice"), "{path}");
        assert_eq!(set, None, "{path}: the session is kept");

        // Another user's session does not win over the proxy's user.
        let bob = env.new_session("bob");
        let (_, html, set) = load(env, &trusted, path, Some("alice"), Some(&bob)).await;
        assert_eq!(signed_in_as(&html).as_deref(), Some("alice"), "{path}");
        assert!(set.is_some(), "{path}: bob's session is replaced");

        // From a peer that is not trusted the header counts for nothing.
        let (status, html, set) = load(env, &untrusted, path, Some("alice"), None).await;
        assert_eq!(status, 200, "{path}: {html}");
        assert_eq!(signed_in_as(&html), None, "{path}");
        assert_eq!(set, None, "{path}");
        let (_, html, set) = load(env, &untrusted, path, Some("alice"), Some(&bob)).await;
        assert_eq!(signed_in_as(&html).as_deref(), Some("bob"), "{path}");
        assert_eq!(set, None, "{path}");
        // Nor does a name that is not one, even from the proxy.
        let (_, html, set) = load(env, &trusted, path, Some("a/b"), None).await;
        assert_eq!(signed_in_as(&html), None, "{path}");
        assert_eq!(set, None, "{path}");
    }

    // The forms of the first page work with the session it set: alice
    // cancels the task, as herself.
    let path = format!("/tasks/{task}");
    let (_, html, set) = load(env, &trusted, &path, Some("alice"), None).await;
    let cookie = set.unwrap();
    let token = csrf_of(&html);
    let res = trusted
        .post(format!("{}{path}/act", env.q.root_url))
        .header(HEADER, "alice")
        .header(COOKIE, &cookie)
        .form(&[("csrf", token.as_str()), ("do", "cancel")])
        .send()
        .await
        .unwrap();
    let set = res
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .any(|v| v.to_str().unwrap().starts_with(SESSION_COOKIE));
    let (status, html) = (res.status().as_u16(), res.text().await.unwrap());
    assert_eq!(status, 200, "{html}");
    assert!(!set, "no new session");
    assert_eq!(env.status(&task).await["state"], "exception", "{html}");

    // The same form from a peer that is not trusted, without a session,
    // is refused.
    let res = untrusted
        .post(format!("{}{path}/act", env.q.root_url))
        .header(HEADER, "alice")
        .form(&[("csrf", token.as_str()), ("do", "rerun")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}
