//! A git repository on disk, a queue with the CI service beside it on a
//! database the test keeps (so a test can restart the service, or run two
//! on one database), and calls to the APIs with real Hawk credentials.

#![allow(dead_code)]

use bbb_ci::config::{BranchConfig, CiConfig, Kind, Mode, RepositoryConfig};
use bbb_hooks::client::{Answer, HawkClient};
use bbb_queue::config::RoleConfig;
pub use bbb_queue::testing::Who;
use bbb_queue::testing::{TestOptions, TestQueue, test_client};
use bbb_testdb::{Backend, PgDatabase, TempDir, wait_for};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's public URL.
pub const URL: &str = "https://git.example/bbb/proj";
/// Its project name.
pub const PROJECT: &str = "proj";
/// Who commits.
pub const AUTHOR: &str = "alice@example.com";

/// The in-tree taskgraph test project's `.taskcluster.yml`.
pub fn tcyml() -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/taskgraph/project/.taskcluster.yml");
    std::fs::read_to_string(path).expect("the test project's .taskcluster.yml")
}

/// A git repository with a work tree, the remote the service polls.
pub struct Origin {
    /// Its directory.
    pub path: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Origin {
    /// A repository at `path` whose `main` has the test project's
    /// `.taskcluster.yml`, with branches `branches` made from it.
    pub fn create(path: PathBuf, branches: &[&str]) -> Origin {
        std::fs::create_dir_all(&path).unwrap();
        git(&path, &["init", "--quiet", "-b", "main"]);
        git(&path, &["config", "user.email", AUTHOR]);
        git(&path, &["config", "user.name", "Alice"]);
        let o = Origin { path };
        o.commit("main", ".taskcluster.yml", &tcyml());
        for b in branches {
            git(&o.path, &["branch", b, "main"]);
        }
        o
    }

    /// Commit `content` as `file` on `branch`: the new head.
    pub fn commit(&self, branch: &str, file: &str, content: &str) -> String {
        if git(&self.path, &["symbolic-ref", "--short", "HEAD"]) != branch {
            git(&self.path, &["checkout", "--quiet", branch]);
        }
        std::fs::write(self.path.join(file), content).unwrap();
        git(&self.path, &["add", "-A"]);
        git(
            &self.path,
            &[
                "commit",
                "--quiet",
                "-m",
                &format!("change {file} on {branch}"),
            ],
        );
        git(&self.path, &["rev-parse", "HEAD"])
    }

    /// A commit on `branch` that changes only a file of no consequence.
    pub fn push(&self, branch: &str, n: usize) -> String {
        self.commit(branch, "README", &format!("change {n}\n"))
    }

    /// The head of `branch`.
    pub fn head(&self, branch: &str) -> String {
        git(&self.path, &["rev-parse", branch])
    }
}

/// A repository configuration for [`URL`] fetched from `origin`.
pub fn repository(origin: &Origin, branches: &[(&str, Mode)]) -> RepositoryConfig {
    repository_at(URL, &origin.path.display().to_string(), Kind::Git, branches)
}

/// The polled repository [`PROJECT`] of `kind` at `url`, fetched from
/// `clone_url`, following `branches`.
pub fn repository_at(
    url: &str,
    clone_url: &str,
    kind: Kind,
    branches: &[(&str, Mode)],
) -> RepositoryConfig {
    RepositoryConfig {
        project: PROJECT.into(),
        url: url.into(),
        clone_url: Some(clone_url.into()),
        kind,
        trust_domain: "bbbtest".into(),
        level: 1,
        poll: true,
        webhook_secret: None,
        branches: branches
            .iter()
            .map(|(n, m)| BranchConfig {
                name: n.to_string(),
                mode: *m,
            })
            .collect(),
    }
}

/// What a test keeps across services: a directory and the database.
pub struct World {
    /// The backend.
    pub backend: Backend,
    /// Files: the origin, the SQLite database, the services' caches.
    pub dir: TempDir,
    pg: Option<PgDatabase>,
}

impl World {
    /// The fixture of `on_both_backends!`.
    pub async fn on(backend: Backend, test: impl AsyncFnOnce(&World)) {
        let pg = match backend {
            Backend::Postgres => Some(
                PgDatabase::create("bbbci")
                    .await
                    .expect("a PostgreSQL database"),
            ),
            Backend::Sqlite => None,
        };
        let w = World {
            backend,
            dir: TempDir::new("bbb-ci-test"),
            pg,
        };
        test(&w).await;
    }

    /// The database every service of the test uses.
    pub fn database_url(&self) -> String {
        match &self.pg {
            Some(pg) => pg.url().to_owned(),
            None => format!("sqlite://{}/ci.sqlite", self.dir.path().display()),
        }
    }

    /// An origin repository in the test's directory.
    pub fn origin(&self, branches: &[&str]) -> Origin {
        Origin::create(self.dir.path().join("origin"), branches)
    }

    /// A queue with the CI service, configured with `repos`, its clone cache
    /// named `name`.
    pub async fn start(&self, name: &str, repos: Vec<RepositoryConfig>) -> Env {
        self.start_with(name, repos, |_| {}).await
    }

    /// [`World::start`] with the configuration changed by `tweak`.
    pub async fn start_with(
        &self,
        name: &str,
        repos: Vec<RepositoryConfig>,
        tweak: impl FnOnce(&mut CiConfig),
    ) -> Env {
        let mut cfg = CiConfig {
            poll_interval_ms: 100,
            max_backoff_ms: 1000,
            handle_interval_ms: 100,
            cache_dir: Some(self.dir.path().join(format!("cache-{name}"))),
            repositories: repos,
            ..CiConfig::default()
        };
        tweak(&mut cfg);
        let opts = TestOptions {
            database_url: Some(self.database_url()),
            clients: clients()
                .into_iter()
                .map(|(id, scopes)| test_client(id, &scopes))
                .collect(),
            roles: ["git.example", "hg.example"]
                .iter()
                .map(|host| RoleConfig {
                    role_id: format!("repo:{host}/bbb/proj:branch:*"),
                    scopes: [
                        "queue:create-task:*",
                        "queue:scheduler-id:*",
                        "queue:route:*",
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                })
                .collect(),
            ..TestOptions::default()
        };
        let q = TestQueue::with_mounts(opts, vec![bbb_ci::mount(cfg)])
            .await
            .expect("start the queue with the CI service");
        let http = HawkClient::new(&q.root_url, q.clock.clone());
        Env { q, http }
    }
}

impl World {
    /// A queue with the auth service, the hooks service and the CI service
    /// configured with `repos` (its passes over the hooks every
    /// `sync_ms`), its clone cache named `name`; the repository's roles for
    /// its branches, actions and cron jobs.
    pub async fn start_with_hooks(
        &self,
        name: &str,
        repos: Vec<RepositoryConfig>,
        action_permissions: &[&str],
    ) -> Env {
        let cfg = CiConfig {
            poll_interval_ms: 100,
            max_backoff_ms: 1000,
            handle_interval_ms: 100,
            cache_dir: Some(self.dir.path().join(format!("cache-{name}"))),
            repositories: repos,
            action_permissions: action_permissions.iter().map(|p| p.to_string()).collect(),
            hooks_sync_interval_ms: 500,
            ..CiConfig::default()
        };
        let scopes: Vec<String> = [
            "queue:create-task:*",
            "queue:scheduler-id:*",
            "queue:route:*",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let opts = TestOptions {
            database_url: Some(self.database_url()),
            clients: clients()
                .into_iter()
                .map(|(id, scopes)| test_client(id, &scopes))
                .collect(),
            roles: ["branch", "action", "cron"]
                .iter()
                .map(|kind| RoleConfig {
                    role_id: format!("repo:git.example/bbb/proj:{kind}:*"),
                    scopes: scopes.clone(),
                })
                .collect(),
            ..TestOptions::default()
        };
        let hooks = bbb_hooks::HooksConfig {
            scheduler_poll_ms: 100,
            ..bbb_hooks::HooksConfig::default()
        };
        let mounts = vec![
            bbb_auth_api::mount(),
            bbb_hooks::mount(hooks),
            bbb_ci::mount(cfg),
        ];
        let q = TestQueue::with_mounts(opts, mounts)
            .await
            .expect("start the queue with the auth, hooks and CI services");
        let http = HawkClient::new(&q.root_url, q.clock.clone());
        Env { q, http }
    }
}

/// The clients besides `root`: (id, scopes).
pub fn clients() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        (
            "manager",
            vec![
                "ci:manage-repository:proj",
                "ci:get-repository:*",
                "ci:list-repositories",
                "ci:set-branch-mode:proj/dev",
            ],
        ),
        ("nobody", vec![]),
    ]
}

/// A queue with the CI service beside it.
pub struct Env {
    /// The queue.
    pub q: TestQueue,
    /// The HTTP client.
    pub http: HawkClient,
}

impl Env {
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

    /// A CI API call as root that must succeed: its body.
    pub async fn ci(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let a = self.call(Who::Root, "ci", method, path, body).await;
        assert_eq!(a.status, 200, "{method} {path}: {}", a.body);
        a.body
    }

    /// The pushes of `branch`, oldest first.
    pub async fn pushes(&self, branch: &str) -> Vec<Value> {
        let body = self
            .ci(
                "GET",
                &format!("repositories/{PROJECT}/pushes?branch={branch}"),
                None,
            )
            .await;
        let mut list = body["pushes"].as_array().cloned().unwrap_or_default();
        list.reverse();
        list
    }

    /// Wait until `branch` has `n` pushes, none of them pending: them.
    pub async fn handled(&self, branch: &str, n: usize) -> Vec<Value> {
        wait_for(&format!("{n} handled pushes on {branch}"), || async {
            let list = self.pushes(branch).await;
            (list.len() == n && list.iter().all(|p| p["state"] != "pending")).then_some(list)
        })
        .await
    }

    /// Wait until the poller has seen every branch's head.
    pub async fn polled(&self) {
        wait_for("every branch polled", || async {
            let repo = self
                .ci("GET", &format!("repositories/{PROJECT}"), None)
                .await;
            repo["branches"]
                .as_array()
                .is_some_and(|b| b.iter().all(|b| b["polledHead"].is_string()))
                .then_some(())
        })
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

    /// Stop the queue and the service.
    pub async fn stop(self) {
        self.q.stop().await;
    }
}

/// Check a decision task made by the test project's `.taskcluster.yml` for a
/// push of `revision` to `branch`.
pub fn assert_decision_task(task_id: &str, task: &Value, branch: &str, revision: &str) {
    assert_eq!(task["taskGroupId"], task_id, "{task}");
    assert_eq!(
        task["scopes"],
        serde_json::json!([format!("assume:repo:git.example/bbb/proj:branch:{branch}")])
    );
    assert_eq!(task["schedulerId"], "bbbtest-level-1");
    assert_eq!(task["taskQueueId"], "bbb/native");
    assert_eq!(task["metadata"]["owner"], AUTHOR);
    assert_eq!(task["metadata"]["name"], "Decision Task");
    let env = &task["payload"]["env"];
    assert_eq!(env["BBB_REVISION"], revision);
    assert_eq!(env["BBB_BRANCH"], branch);
    assert_eq!(env["BBB_TASKS_FOR"], "github-push");
    assert_eq!(env["BBB_PROJECT"], PROJECT);
    assert_eq!(env["BBB_REPOSITORY"], URL);
    assert_eq!(task["tags"]["kind"], "decision-task");
}
