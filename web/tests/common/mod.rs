//! A queue with the auth, hooks and web services beside it; signed-in users
//! (a session cookie holding temporary credentials for
//! `assume:login-identity:<user>`, as the sign-in will issue them); pages
//! read and forms posted as a browser does.

#![allow(dead_code)]

use bbb_auth::Credentials;
use bbb_hooks::client::{Answer, HawkClient};
use bbb_login::{Login, SignedIn};
use bbb_queue::config::RoleConfig;
use bbb_queue::testing::{TestOptions, TestQueue};
use bbb_testdb::Backend;
use serde_json::{Value, json};

/// The task queue test tasks wait on (no worker claims it but the tests).
pub const TASK_QUEUE: &str = "web-test/tasks";
/// The hook group action hooks are in.
pub const HOOK_GROUP: &str = "web-test";

/// The users' roles: `alice` may do everything the pages offer, `bob` nothing.
pub fn roles() -> Vec<RoleConfig> {
    let role = |id: &str, scopes: &[&str]| RoleConfig {
        role_id: id.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    };
    vec![
        role(
            "login-identity:alice",
            &[
                "queue:rerun-task:*",
                "queue:cancel-task:*",
                "queue:create-task:*",
                "queue:scheduler-id:*",
                "queue:route:*",
                "queue:claim-task:null-provisioner/human-decision",
                "queue:worker-id:human-decision/alice",
                "hooks:trigger-hook:web-test/*",
            ],
        ),
        role("login-identity:bob", &[]),
        role(
            "hook-id:web-test/*",
            &["queue:create-task:*", "queue:scheduler-id:*"],
        ),
    ]
}

/// A running queue with the services, and clients.
pub struct Env {
    /// The queue.
    pub q: TestQueue,
    /// Calls to the APIs.
    pub api: HawkClient,
    /// A browser without cookies of its own.
    pub browser: reqwest::Client,
    /// Each user's session cookie, made once (as a browser keeps it).
    sessions: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Env {
    /// The fixture of `on_both_backends!`.
    pub async fn on(backend: Backend, test: impl AsyncFnOnce(&Env)) {
        Env::on_with(
            backend,
            Login::default(),
            bbb_web::WebConfig::default(),
            test,
        )
        .await
    }

    /// [`Env::on`] with sign-in and the web UI configured as given.
    pub async fn on_with(
        backend: Backend,
        login: Login,
        cfg: bbb_web::WebConfig,
        test: impl AsyncFnOnce(&Env),
    ) {
        let opts = TestOptions {
            postgres: backend == Backend::Postgres,
            roles: roles(),
            ..TestOptions::default()
        };
        let hooks = bbb_hooks::HooksConfig {
            scheduler_poll_ms: 200,
            reconcile_ms: 500,
            ..Default::default()
        };
        let q = TestQueue::with_mounts(
            opts,
            vec![
                bbb_auth_api::mount(),
                bbb_hooks::mount(hooks),
                bbb_web::mount_with(login, cfg),
            ],
        )
        .await
        .expect("start the queue with the web UI");
        let api = HawkClient::new(&q.root_url, q.clock.clone());
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let env = Env {
            q,
            api,
            browser,
            sessions: Default::default(),
        };
        test(&env).await;
        env.q.stop().await;
    }

    /// The root client's credentials.
    pub fn root(&self) -> Credentials {
        Credentials {
            client_id: self.q.root_client_id.clone(),
            access_token: self.q.root_access_token.clone(),
            certificate: None,
        }
    }

    /// `method <service>/v1/<path>` as root.
    pub async fn root_call(
        &self,
        method: &str,
        service: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Answer {
        let url = self.api.url(service, path);
        self.api
            .call(Some(&self.root()), None, method, &url, body)
            .await
            .expect("the service answers")
    }

    /// As [`Env::root_call`], which must succeed; its body.
    pub async fn root_ok(
        &self,
        method: &str,
        service: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Value {
        let a = self.root_call(method, service, path, body).await;
        assert!(
            a.is_success(),
            "{method} {service} {path}: {} {}",
            a.status,
            a.body
        );
        a.body
    }

    /// The session cookie of `user` (`name=value`).
    pub fn session(&self, user: &str) -> String {
        let mut sessions = self.sessions.lock().unwrap();
        sessions
            .entry(user.to_owned())
            .or_insert_with(|| self.new_session(user))
            .clone()
    }

    /// A new session cookie for `user`.
    pub fn new_session(&self, user: &str) -> String {
        let now = chrono::Utc::now();
        let expires = now + chrono::TimeDelta::hours(1);
        let credentials = bbb_auth::create_temporary_credentials(
            &self.q.root_client_id,
            &self.q.root_access_token,
            None,
            &[format!("assume:login-identity:{user}")],
            now - chrono::TimeDelta::minutes(1),
            expires,
        )
        .unwrap();
        let cookie = Login::default().session_cookie(&SignedIn {
            user: user.into(),
            credentials,
            expires,
        });
        cookie.split(';').next().unwrap().to_owned()
    }

    /// A page as `user` (or nobody): its status and HTML.
    pub async fn page(&self, path: &str, user: Option<&str>) -> (u16, String) {
        let mut req = self.browser.get(format!("{}{path}", self.q.root_url));
        if let Some(u) = user {
            req = req.header("cookie", self.session(u));
        }
        let res = req.send().await.unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    /// A form posted as `user`: its status and HTML.
    pub async fn post(
        &self,
        path: &str,
        user: Option<&str>,
        fields: &[(&str, &str)],
    ) -> (u16, String) {
        let mut req = self
            .browser
            .post(format!("{}{path}", self.q.root_url))
            .form(fields);
        if let Some(u) = user {
            req = req.header("cookie", self.session(u));
        }
        let res = req.send().await.unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    /// A form posted as `user` with the token their page carries.
    pub async fn act(&self, path: &str, user: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let page = path.trim_end_matches("/act");
        let (_, html) = self.page(page, Some(user)).await;
        let token = csrf_of(&html);
        let mut all = vec![("csrf", token.as_str())];
        all.extend_from_slice(fields);
        self.post(path, Some(user), &all).await
    }

    /// Create task `task_id` (root) in `group` on `task_queue` named `name`.
    pub async fn create(
        &self,
        task_id: &str,
        group: &str,
        task_queue: &str,
        name: &str,
        deps: &[&str],
    ) {
        self.create_with(task_id, def(group, task_queue, name, deps))
            .await;
    }

    /// Create task `task_id` with the definition `def` (root).
    pub async fn create_with(&self, task_id: &str, def: Value) {
        self.root_ok("PUT", "queue", &format!("task/{task_id}"), Some(&def))
            .await;
    }

    /// Claim the one pending task of `task_queue` (root); its claim.
    pub async fn claim(&self, task_queue: &str) -> Value {
        let body = json!({"workerGroup": "web-test", "workerId": "w1", "tasks": 1});
        let r = self
            .root_ok(
                "POST",
                "queue",
                &format!("claim-work/{}", task_queue.replace('/', "%2F")),
                Some(&body),
            )
            .await;
        r["tasks"][0].clone()
    }

    /// A task's status (root).
    pub async fn status(&self, task_id: &str) -> Value {
        self.root_ok("GET", "queue", &format!("task/{task_id}/status"), None)
            .await["status"]
            .clone()
    }

    /// The task ids of a group (root).
    pub async fn group_ids(&self, group: &str) -> Vec<String> {
        let r = self
            .root_ok("GET", "queue", &format!("task-group/{group}/list"), None)
            .await;
        r["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["status"]["taskId"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// A task definition in `group` on `task_queue`.
pub fn def(group: &str, task_queue: &str, name: &str, deps: &[&str]) -> Value {
    let now = chrono::Utc::now().timestamp_millis();
    let at = |ms: i64| bbb_queue::time::fmt_ms(now + ms);
    json!({
        "taskQueueId": task_queue,
        "taskGroupId": group,
        "schedulerId": "web-test",
        "created": at(0),
        "deadline": at(3_600_000),
        "expires": at(86_400_000),
        "dependencies": deps,
        "payload": {},
        "routes": ["index.web-test.route"],
        "metadata": {"name": name, "description": "a task of the web tests", "owner": "web@example.com", "source": "https://example.com/web"},
        "tags": {"kind": "test"},
    })
}

/// A new task id.
pub fn slug() -> String {
    bbb_queue::validate::slugid()
}

/// The CSRF token a page's forms carry.
pub fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a token")
        + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_owned()
}

/// The task ids a result page lists as new.
pub fn created_in(html: &str) -> Vec<String> {
    let Some(start) = html.find("<ul class=\"created\">") else {
        return Vec::new();
    };
    let end = html[start..].find("</ul>").unwrap() + start;
    html[start..end]
        .split("href=\"/tasks/")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_owned())
        .collect()
}
