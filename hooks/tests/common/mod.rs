//! A queue with the hooks service beside it, its clients and roles, and calls
//! to both APIs with real Hawk credentials.

#![allow(dead_code)]

use bbb_hooks::client::{Answer, HawkClient};
use bbb_queue::config::RoleConfig;
pub use bbb_queue::testing::Who;
use bbb_queue::testing::{TestOptions, TestQueue, test_client};
use bbb_testdb::Backend;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The task queue hooks' tasks go to.
pub const TASK_QUEUE: &str = "bbb-test/hooks";
/// A scope only hook roles grant.
pub const GRANTED: &str = "secret:granted";

/// The clients besides `root`: (id, scopes).
pub fn clients() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        // May define and trigger the hooks of group `g`, not `other`.
        (
            "admin",
            vec![
                "hooks:modify-hook:g/*",
                "assume:hook-id:g/*",
                "hooks:trigger-hook:g/*",
                "hooks:get:g:*",
                "hooks:list-hooks:*",
                "hooks:status:g/*",
                "hooks:get-trigger-token:g/*",
                "hooks:reset-trigger-token:g/*",
                "hooks:list-last-fires:g/*",
            ],
        ),
        // May modify hooks but not assume their roles.
        ("modifier", vec!["hooks:modify-hook:*"]),
        // May trigger `g/ok` and nothing else: not even what the hook's role grants.
        ("trigger", vec!["hooks:trigger-hook:g/ok"]),
        ("nobody", vec![]),
    ]
}

/// The roles: `hook-id:g/ok` may create tasks on [`TASK_QUEUE`] with
/// [`GRANTED`]; `hook-id:g/weak` may create tasks but not grant it;
/// `anonymous` grants nothing.
pub fn roles() -> Vec<RoleConfig> {
    let create = [
        "queue:create-task:*",
        "queue:scheduler-id:*",
        "queue:create-task:project:*",
    ];
    vec![
        RoleConfig {
            role_id: "hook-id:g/ok".into(),
            scopes: create
                .iter()
                .map(|s| s.to_string())
                .chain([GRANTED.to_string()])
                .collect(),
        },
        RoleConfig {
            role_id: "hook-id:g/weak".into(),
            scopes: create.iter().map(|s| s.to_string()).collect(),
        },
        RoleConfig {
            role_id: "hook-id:g/*".into(),
            scopes: create.iter().map(|s| s.to_string()).collect(),
        },
        // Nothing for anonymous callers (the default role grants reads), so
        // every endpoint's own scope is what the tests check.
        RoleConfig {
            role_id: "anonymous".into(),
            scopes: vec![],
        },
    ]
}

/// A running queue with hooks, and a client for it.
pub struct Env {
    /// The queue.
    pub q: TestQueue,
    /// The HTTP client.
    pub http: HawkClient,
}

/// Options for the queue of [`Env::start`].
pub fn options(backend: Backend) -> TestOptions {
    TestOptions {
        postgres: backend == Backend::Postgres,
        clients: clients()
            .into_iter()
            .map(|(id, scopes)| test_client(id, &scopes))
            .collect(),
        roles: roles(),
        ..TestOptions::default()
    }
}

/// The hooks service's configuration in tests: a quick scheduler and
/// reconciliation.
pub fn hooks_config() -> bbb_hooks::HooksConfig {
    bbb_hooks::HooksConfig {
        scheduler_poll_ms: 200,
        reconcile_ms: 500,
        ..Default::default()
    }
}

impl Env {
    /// A queue with the hooks service, with `opts`.
    pub async fn start(opts: TestOptions) -> Env {
        let q = TestQueue::with_mounts(opts, vec![bbb_hooks::mount(hooks_config())])
            .await
            .expect("start the queue with hooks");
        let http = HawkClient::new(&q.root_url, q.clock.clone());
        Env { q, http }
    }

    /// The fixture of `on_both_backends!`.
    pub async fn on(backend: Backend, test: impl AsyncFnOnce(&Env)) {
        let env = Env::start(options(backend)).await;
        test(&env).await;
        env.q.stop().await;
    }

    /// `method <service>/v1/<path>` as `who`.
    pub async fn call(
        &self,
        who: Who,
        service: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Answer {
        let url = self.http.url(service, path);
        self.http
            .call(self.q.credentials(who).as_ref(), None, method, &url, body)
            .await
            .expect("the server answers")
    }

    /// A hooks API call.
    pub async fn hooks(&self, who: Who, method: &str, path: &str, body: Option<&Value>) -> Answer {
        self.call(who, "hooks", method, path, body).await
    }

    /// A hooks API call that must succeed; its body.
    pub async fn ok(&self, who: Who, method: &str, path: &str, body: Option<&Value>) -> Value {
        let a = self.hooks(who, method, path, body).await;
        assert_eq!(a.status, 200, "{method} {path}: {}", a.body);
        a.body
    }

    /// Create hook `g/id` with `def` as root.
    pub async fn create(&self, path: &str, def: &Value) -> Value {
        self.ok(Who::Root, "PUT", &format!("hooks/{path}"), Some(def))
            .await
    }

    /// `triggerHook` of hook `g/id` as root with `body`.
    pub async fn trigger(&self, path: &str, body: &Value) -> Answer {
        self.hooks(
            Who::Root,
            "POST",
            &format!("hooks/{path}/trigger"),
            Some(body),
        )
        .await
    }

    /// A task as the queue has it.
    pub async fn task(&self, task_id: &str) -> Value {
        let a = self
            .call(Who::Root, "queue", "GET", &format!("task/{task_id}"), None)
            .await;
        assert_eq!(a.status, 200, "task {task_id}: {}", a.body);
        a.body
    }

    /// The hook's firings, newest first (empty when it never fired).
    pub async fn fires(&self, path: &str) -> Vec<Value> {
        let a = self
            .hooks(Who::Root, "GET", &format!("hooks/{path}/last-fires"), None)
            .await;
        match a.status {
            200 => a.body["lastFires"].as_array().cloned().unwrap_or_default(),
            404 => Vec::new(),
            s => panic!("listLastFires {path}: {s} {}", a.body),
        }
    }

    /// The service still answers.
    pub async fn assert_alive(&self) {
        let a = self.hooks(Who::Anonymous, "GET", "ping", None).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["alive"], json!(true));
    }
}

/// A hook definition creating a task on [`TASK_QUEUE`] with `extra` merged
/// into its template.
pub fn hook_def(extra: Value) -> Value {
    let mut task = json!({
        "taskQueueId": TASK_QUEUE,
        "payload": {"firedBy": "${firedBy}"},
        "metadata": {
            "name": "hook task",
            "description": "made by a hook",
            "owner": "hooks@example.com",
            "source": "https://example.com/hooks",
        },
    });
    if let (Some(t), Some(e)) = (task.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            t.insert(k.clone(), v.clone());
        }
    }
    json!({
        "metadata": {"name": "a hook", "description": "for tests", "owner": "hooks@example.com"},
        "task": task,
        "triggerSchema": {"type": "object"},
    })
}

/// Wait (at most `secs` seconds, polling) until `check` gives something.
pub async fn wait_for<T>(secs: u64, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An error body's `code`, and that its message starts with `message`.
pub fn assert_error(a: &Answer, status: u16, code: &str, message: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.body["code"], json!(code), "{}", a.body);
    let text = a.body["message"].as_str().unwrap_or_default();
    assert!(
        text.starts_with(message),
        "message {text:?} does not start with {message:?}"
    );
    assert!(a.body["requestInfo"].is_object(), "{}", a.body);
}

/// An error body's message holds `part`.
pub fn assert_message_contains(a: &Answer, part: &str) {
    let text = a.body["message"].as_str().unwrap_or_default();
    assert!(text.contains(part), "message {text:?} lacks {part:?}");
}
