//! `bbb up`'s demo repository: a git repository in the data directory that
//! the CI service follows, so that a push to it produces a decision task and
//! a graph with no other setup. Its `.taskcluster.yml` is
//! `bbb/demo-repository/taskcluster.yml`: a decision task that publishes the
//! push's actions (`public/actions.json`: retrigger, rerun, cancel,
//! cancel-all), a native build and its test, and the same build on the
//! sandbox master through the bridge. Its first task is also the action task
//! the CI service's in-tree action hook runs when an action is fired.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

/// `git` as the CI service runs it; its error is the command's.
async fn git(dir: Option<&Path>, args: &[&str]) -> anyhow::Result<String> {
    let out = bbb_ci::git::git(dir, args)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}
use serde_json::Value;

/// The demo repository's project name.
pub const PROJECT: &str = "demo";
/// Its public URL (what its role and `repository.url` name).
pub const URL: &str = "https://bbb.localhost/demo";
/// The branch bbb schedules (mode `taskgraph`).
pub const BRANCH: &str = "main";
/// Its trust domain; its tasks' scheduler is `demo-level-1`.
pub const TRUST_DOMAIN: &str = "demo";

const TASKCLUSTER_YML: &str = include_str!("../demo-repository/taskcluster.yml");
const README: &str = include_str!("../demo-repository/README.md");

/// The repository bbb polls (bare) and the clone a newcomer pushes from.
#[derive(Clone, Debug)]
pub struct DemoRepository {
    /// `<data_dir>/demo.git`, the repository's `clone_url`.
    pub bare: PathBuf,
    /// `<data_dir>/demo`, a clone to commit and push from.
    pub work: PathBuf,
}

impl DemoRepository {
    /// Where the demo repository lives in `data_dir`.
    pub fn in_data_dir(data_dir: &Path) -> DemoRepository {
        DemoRepository {
            bare: data_dir.join("demo.git"),
            work: data_dir.join("demo"),
        }
    }

    /// The `[[ci.repositories]]` entry that follows it: polled every
    /// `poll_interval_ms` of `[ci]`, branch `main` in mode `taskgraph`.
    pub fn ci_repository(&self) -> toml::Table {
        let mut branch = toml::Table::new();
        branch.insert("name".into(), BRANCH.into());
        branch.insert("mode".into(), "taskgraph".into());
        let mut repo = toml::Table::new();
        repo.insert("project".into(), PROJECT.into());
        repo.insert("url".into(), URL.into());
        repo.insert("clone_url".into(), self.bare.display().to_string().into());
        repo.insert("kind".into(), "git".into());
        repo.insert("trust_domain".into(), TRUST_DOMAIN.into());
        repo.insert("level".into(), 1.into());
        repo.insert(
            "branches".into(),
            toml::Value::Array(vec![toml::Value::Table(branch)]),
        );
        repo
    }

    /// Makes the repository on the first start: the bare repository, the
    /// clone, and a first commit of `.taskcluster.yml` and a README pushed to
    /// `main` (the branch's starting point, not a push bbb decides). Kept as
    /// it is on later starts.
    pub async fn ensure(&self) -> anyhow::Result<()> {
        if self.bare.join("HEAD").exists() {
            return Ok(());
        }
        let bare = self.bare.display().to_string();
        git(
            None,
            &[
                "init",
                "--quiet",
                "--bare",
                "--initial-branch",
                BRANCH,
                &bare,
            ],
        )
        .await?;
        if self.work.exists() {
            std::fs::remove_dir_all(&self.work)
                .with_context(|| format!("removing {}", self.work.display()))?;
        }
        let work = self.work.display().to_string();
        git(None, &["clone", "--quiet", &bare, &work]).await?;
        git(Some(&self.work), &["checkout", "--quiet", "-B", BRANCH]).await?;
        std::fs::write(self.work.join(".taskcluster.yml"), TASKCLUSTER_YML)?;
        std::fs::write(self.work.join("README.md"), README)?;
        git(Some(&self.work), &["add", ".taskcluster.yml", "README.md"]).await?;
        self.commit("The demo project and its CI", false).await?;
        Ok(())
    }

    /// The head of `main` in the repository bbb polls.
    pub async fn head(&self) -> anyhow::Result<String> {
        let head = git(Some(&self.bare), &["rev-parse", BRANCH]).await?;
        Ok(head.trim().to_owned())
    }

    /// Commits (empty unless something is staged) and pushes to `main`;
    /// returns the new head.
    pub async fn commit(&self, message: &str, allow_empty: bool) -> anyhow::Result<String> {
        let mut args = vec![
            "-c",
            "user.name=bbb demo",
            "-c",
            "user.email=demo@bbb.localhost",
            "commit",
            "--quiet",
            "-m",
            message,
        ];
        if allow_empty {
            args.push("--allow-empty");
        }
        git(Some(&self.work), &args).await?;
        git(
            Some(&self.work),
            &["push", "--quiet", "origin", &format!("HEAD:{BRANCH}")],
        )
        .await?;
        let head = git(Some(&self.work), &["rev-parse", "HEAD"]).await?;
        Ok(head.trim().to_owned())
    }
}

/// What the demo's tasks may create: its two task queues, its scheduler,
/// its Treeherder routes.
const CREATE_SCOPES: &[&str] = &[
    "queue:create-task:low:bbb/native",
    "queue:create-task:low:buildbot-bridge/buildbot-bridge",
    "queue:scheduler-id:demo-level-1",
    "queue:route:tc-treeherder.v2.demo.*",
    "queue:create-task:project:none",
];

/// The roles of the demo repository, as a team's `repo:` roles: its pushes'
/// (`repo:bbb.localhost/demo:branch:*`: what its `.taskcluster.yml` creates,
/// and the actions its decision task may offer, the in-tree action hooks of
/// its trust domain at its level) and its action tasks'
/// (`repo:bbb.localhost/demo:action:*`: what the action callbacks do,
/// creating, rerunning and cancelling the demo's tasks).
pub fn roles() -> Vec<toml::Table> {
    let path = URL.trim_start_matches("https://");
    let branch: Vec<String> = CREATE_SCOPES
        .iter()
        .map(|s| s.to_string())
        .chain([format!(
            "in-tree:hook-action:project-{TRUST_DOMAIN}/in-tree-action-1-*"
        )])
        .collect();
    let action: Vec<String> = CREATE_SCOPES
        .iter()
        .map(|s| s.to_string())
        .chain([
            "queue:rerun-task:demo-level-1/*".to_owned(),
            "queue:cancel-task:demo-level-1/*".to_owned(),
        ])
        .collect();
    [("branch", branch), ("action", action)]
        .into_iter()
        .map(|(kind, scopes)| {
            let mut role = toml::Table::new();
            role.insert("role_id".into(), format!("repo:{path}:{kind}:*").into());
            role.insert(
                "scopes".into(),
                toml::Value::Array(scopes.into_iter().map(Into::into).collect()),
            );
            role
        })
        .collect()
}

/// The demo `bbb up` runs on the demo repository: once the CI service has
/// seen the branch's head, a commit is pushed, and the push's decision task
/// and graph are followed until every task is resolved. Failures are printed:
/// the demo must not stop bbb.
pub async fn push_and_follow(root_url: String, token: String, repo: DemoRepository) {
    if let Err(e) = run(&root_url, &token, &repo).await {
        println!("demo push: {e:#}");
    }
}

async fn run(root_url: &str, token: &str, repo: &DemoRepository) -> anyhow::Result<()> {
    let builder = || {
        taskcluster::ClientBuilder::new(root_url)
            .credentials(taskcluster::Credentials::new("root", token))
    };
    let client = builder().build()?;
    let get = |path: String| {
        let client = &client;
        async move {
            let response = client.request("GET", &path, None, None).await?;
            anyhow::Ok(response.json::<Value>().await?)
        }
    };
    // The push must come after the CI service has seen the branch's head
    // (its starting point, or a push made while bbb was stopped): a poll
    // that found two new commits would record one push of the last.
    let repository = format!("api/ci/v1/repositories/{PROJECT}");
    let head = repo.head().await?;
    let mut tries = Tries::new();
    loop {
        let r = get(repository.clone()).await?;
        let polled = r["branches"].as_array().is_some_and(|bs| {
            bs.iter()
                .any(|b| b["name"] == BRANCH && b["polledHead"] == head.as_str())
        });
        if polled {
            break;
        }
        tries
            .wait("the CI service to poll the demo repository")
            .await?;
    }
    let revision = repo.commit("A change to build", true).await?;
    println!(
        "demo push: {} to {PROJECT}/{BRANCH}",
        &revision[..12.min(revision.len())]
    );
    let pushes = format!("{repository}/pushes?branch={BRANCH}&limit=20");
    let mut tries = Tries::new();
    let decision = loop {
        let page = get(pushes.clone()).await?;
        let push = page["pushes"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["revision"] == revision.as_str()));
        match push.map(|p| (p["state"].as_str(), p)) {
            Some((Some("decided"), p)) => {
                break p["decisionTaskId"]
                    .as_str()
                    .context("a decided push without its decision task")?
                    .to_owned();
            }
            Some((Some("failed"), p)) => bail!("the push failed: {}", p["error"]),
            _ => tries.wait("the push's decision task").await?,
        }
    };
    println!("demo push: decision task {decision}");
    let queue = taskcluster::Queue::new(builder())?;
    let mut reported = std::collections::BTreeSet::new();
    let mut tries = Tries::new();
    loop {
        let group: Value = queue
            .listTaskGroup(&decision, None, None)
            .await
            .context("listing the push's task group")?;
        let tasks = group["tasks"].as_array().cloned().unwrap_or_default();
        let mut open = 0;
        for t in &tasks {
            let name = t["task"]["metadata"]["name"].as_str().unwrap_or("?");
            let state = t["status"]["state"].as_str().unwrap_or("?");
            if !matches!(state, "completed" | "failed" | "exception") {
                open += 1;
            } else if reported.insert(name.to_owned()) {
                let task_id = t["status"]["taskId"].as_str().unwrap_or("?");
                println!("demo push: {name} {state} ({task_id})");
            }
        }
        if tasks.len() >= 4 && open == 0 {
            break;
        }
        tries.wait("the push's graph to finish").await?;
    }
    println!("demo push: graph finished: {root_url}/api/queue/v1/task-group/{decision}/list");
    Ok(())
}

/// Waits between looks, for at most ten minutes in all.
struct Tries(u32);

impl Tries {
    fn new() -> Tries {
        Tries(0)
    }

    /// Sleeps 200 ms, or fails once ten minutes have gone by waiting for `what`.
    async fn wait(&mut self, what: &str) -> anyhow::Result<()> {
        self.0 += 1;
        if self.0 > 3000 {
            bail!("gave up waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(())
    }
}
