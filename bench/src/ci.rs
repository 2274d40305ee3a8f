//! The CI benchmark: pushes delivered as GitHub-style push webhooks to the
//! CI service, each recorded in the push ledger and turned into a decision
//! task (the revision fetched into the clone cache, `.taskcluster.yml` read
//! and rendered with JSON-e, the task created through the queue as the
//! repository's role, then its action hooks brought in step). It measures, on SQLite and PostgreSQL, the latency
//! from the webhook call to the decision task's `task-defined` message,
//! pushes one at a time, and how many pushes per second a burst on several
//! branches is decided at.

use crate::queue::pct;
use bbb_ci::{CiConfig, Kind, Mode};
use bbb_pulse::Binding;
use bbb_queue::config::RoleConfig;
use bbb_queue::{Clock, QueueConfig};
use bbb_testdb::{PgDatabase, TempDir};
use futures::future::join_all;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Backends: `sqlite`, `postgres`.
    pub backends: Vec<String>,
    /// Pushes delivered one at a time, each waited for.
    pub sequential: usize,
    /// Pushes delivered in a burst.
    pub burst: usize,
    /// Branches the burst is spread over (each branch's pushes are decided in
    /// order; branches side by side).
    pub branches: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backends: vec!["sqlite".into(), "postgres".into()],
            sequential: 100,
            burst: 200,
            branches: 4,
        }
    }
}

/// The repository's public URL, its project and its webhook secret.
const URL: &str = "https://bench.example/bench/proj";
const PROJECT: &str = "proj";
const SECRET: &str = "bench-secret";

/// One decision task per push, tagged with the pushed revision.
const TASKCLUSTER_YML: &str = r#"version: 1
tasks:
  - taskId: '${ownTaskId}'
    taskGroupId: '${ownTaskId}'
    schedulerId: bench-level-1
    taskQueueId: bench/ci
    created: {$fromNow: ''}
    deadline: {$fromNow: '1 day'}
    payload: {}
    metadata:
      name: Decision Task
      description: 'push ${push.pushlog_id}'
      owner: '${push.owner}'
      source: '${repository.url}'
    tags:
      revision: '${push.revision}'
      branch: '${push.branch}'
"#;

/// A push to deliver: its branch, the head before it and its revision.
#[derive(Clone, Debug)]
struct Push {
    branch: String,
    before: String,
    after: String,
}

/// A git repository with every push the benchmark delivers already committed
/// (the deliveries then cost what a real push costs the service: a fetch of
/// the new revision, not the commit).
fn origin(dir: &Path, branches: usize, pushes: usize) -> anyhow::Result<(PathBuf, Vec<Push>)> {
    let path = dir.join("origin");
    git(
        dir,
        &[
            "init",
            "--quiet",
            "--initial-branch",
            "b0",
            path.to_str().unwrap_or("origin"),
        ],
    )?;
    std::fs::write(path.join(".taskcluster.yml"), TASKCLUSTER_YML)?;
    git(&path, &["add", ".taskcluster.yml"])?;
    commit(&path, "the project")?;
    let mut heads = Vec::new();
    for b in 0..branches {
        let name = format!("b{b}");
        if b > 0 {
            git(&path, &["branch", &name, "b0"])?;
        }
        heads.push(git(&path, &["rev-parse", &name])?);
    }
    let mut list = Vec::with_capacity(pushes);
    for i in 0..pushes {
        let b = i % branches;
        let name = format!("b{b}");
        git(&path, &["checkout", "--quiet", &name])?;
        std::fs::write(path.join("change"), format!("{i}\n"))?;
        git(&path, &["add", "change"])?;
        let after = commit(&path, &format!("change {i}"))?;
        list.push(Push {
            branch: name,
            before: std::mem::replace(&mut heads[b], after.clone()),
            after,
        });
    }
    Ok((path, list))
}

fn commit(path: &Path, message: &str) -> anyhow::Result<String> {
    git(
        path,
        &[
            "-c",
            "user.name=Bench",
            "-c",
            "user.email=bench@example.com",
            "commit",
            "--quiet",
            "-m",
            message,
        ],
    )?;
    git(path, &["rev-parse", "HEAD"])
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "git {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A queue with the CI service following the origin by webhook only.
struct Server {
    running: bbb_queue::Running,
    http: reqwest::Client,
    _pg: Option<PgDatabase>,
}

impl Server {
    async fn start(
        backend: &str,
        dir: &Path,
        origin: &Path,
        branches: usize,
    ) -> anyhow::Result<Server> {
        let mut pg = None;
        let database_url = if backend == "postgres" {
            pg.insert(PgDatabase::create("bbb_bench_ci").await?)
                .url()
                .to_owned()
        } else {
            format!("sqlite://{}/queue.sqlite", dir.display())
        };
        let mut cfg = QueueConfig {
            listen: "127.0.0.1:0".into(),
            database_url: database_url.into(),
            database_max_connections: 20,
            root_access_token: Some(bbb_queue::server::random_token().into()),
            blob_dir: dir.join("blobs"),
            ..QueueConfig::default()
        };
        cfg.auth.roles = vec![RoleConfig {
            role_id: "repo:bench.example/bench/proj:branch:*".into(),
            scopes: vec!["queue:create-task:*".into(), "queue:scheduler-id:*".into()],
        }];
        let ci: CiConfig = serde_json::from_value(json!({
            "poll_interval_ms": 3_600_000,
            "handle_interval_ms": 100,
            "cache_dir": dir.join("ci-cache"),
            "repositories": [{
                "project": PROJECT,
                "url": URL,
                "clone_url": origin,
                "kind": Kind::Git,
                "trust_domain": "bench",
                "level": 1,
                "poll": false,
                "webhook_secret": SECRET,
                "branches": (0..branches)
                    .map(|b| json!({"name": format!("b{b}"), "mode": Mode::Taskgraph}))
                    .collect::<Vec<_>>(),
            }],
        }))?;
        // As `bbb queue` serves it: with the auth and hooks services, which
        // the CI service keeps the repositories' action hooks and roles in.
        let mounts = vec![
            bbb_auth_api::mount(),
            bbb_hooks::mount(bbb_hooks::HooksConfig::default()),
            bbb_ci::mount(ci),
        ];
        let running = bbb_queue::start_with(cfg, Clock::system(), mounts).await?;
        Ok(Server {
            running,
            http: reqwest::Client::new(),
            _pg: pg,
        })
    }

    /// Delivers `push` as GitHub's `push` event.
    async fn deliver(&self, push: &Push) -> anyhow::Result<()> {
        let body = serde_json::to_vec(&json!({
            "ref": format!("refs/heads/{}", push.branch),
            "before": push.before,
            "after": push.after,
            "deleted": false,
            "pusher": {"name": "bench", "email": "bench@example.com"},
            "repository": {"html_url": URL},
        }))?;
        let url = format!("{}/api/ci/v1/github/{PROJECT}", self.running.root_url);
        let response = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", bbb_queue::validate::slugid())
            .header(
                "x-hub-signature-256",
                bbb_ci::webhook::sign(SECRET.as_bytes(), &body),
            )
            .body(body)
            .send()
            .await?;
        let status = response.status();
        anyhow::ensure!(
            status.is_success(),
            "webhook: {status} {}",
            response.text().await?
        );
        Ok(())
    }
}

/// When each revision's decision task was defined, as the bus tells.
struct Defined {
    consumer: bbb_pulse::Consumer,
    seen: HashMap<String, Instant>,
}

impl Defined {
    async fn new(s: &Server) -> anyhow::Result<Defined> {
        let exchange = format!("{}task-defined", s.running.queue.cfg.exchange_prefix);
        let consumer = s
            .running
            .bus
            .consume("bench/ci", &[Binding::new(exchange, "#")], 1024)
            .await?;
        Ok(Defined {
            consumer,
            seen: HashMap::new(),
        })
    }

    /// Waits until the decision task of every revision in `wanted` is
    /// defined (at most a minute each).
    async fn wait_for(&mut self, wanted: &[&str]) -> anyhow::Result<()> {
        while wanted.iter().any(|r| !self.seen.contains_key(*r)) {
            let d = tokio::time::timeout(Duration::from_secs(60), self.consumer.next())
                .await
                .map_err(|_| anyhow::anyhow!("no decision task within a minute"))?
                .ok_or_else(|| anyhow::anyhow!("the bus closed"))?;
            let at = Instant::now();
            let v: Value = d.json()?;
            d.ack().await?;
            if let Some(revision) = v["task"]["tags"]["revision"].as_str() {
                self.seen.entry(revision.to_owned()).or_insert(at);
            }
        }
        Ok(())
    }
}

/// Run the benchmark and print its figures.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let branches = opts.branches.max(1);
    println!(
        "ci: GitHub push webhook -> decision task defined; {} pushes one at a time, \
         then a burst of {} on {branches} branches",
        opts.sequential, opts.burst
    );
    for backend in &opts.backends {
        let dir = TempDir::new("bbb-bench-ci");
        let (origin, pushes) = origin(&dir.0, branches, opts.sequential + opts.burst)?;
        let s = Server::start(backend, &dir.0, &origin, branches).await?;
        let mut defined = Defined::new(&s).await?;
        let (sequential, burst) = pushes.split_at(opts.sequential);

        let mut latencies = Vec::with_capacity(sequential.len());
        for push in sequential {
            let sent = Instant::now();
            s.deliver(push).await?;
            defined.wait_for(&[&push.after]).await?;
            latencies.push(defined.seen[&push.after] - sent);
        }
        latencies.sort();

        // The burst: each branch's pushes delivered in order, branches at once.
        let started = Instant::now();
        let per_branch = (0..branches).map(|b| {
            let s = &s;
            let name = format!("b{b}");
            async move {
                for push in burst.iter().filter(|p| p.branch == name) {
                    s.deliver(push).await?;
                }
                anyhow::Ok(())
            }
        });
        for r in join_all(per_branch).await {
            r?;
        }
        let delivered = started.elapsed();
        let revisions: Vec<&str> = burst.iter().map(|p| p.after.as_str()).collect();
        defined.wait_for(&revisions).await?;
        let decided = revisions
            .iter()
            .map(|r| defined.seen[*r] - started)
            .max()
            .unwrap_or_default();
        println!(
            "{backend:8} push -> decision  p50 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms  ({} pushes one at a time)",
            pct(&latencies, 0.50),
            pct(&latencies, 0.99),
            pct(&latencies, 1.0),
            latencies.len()
        );
        println!(
            "{backend:8} burst           {:7.1} pushes/s decided  ({} pushes on {branches} branches: delivered in {:.2} s, all decided after {:.2} s)",
            burst.len() as f64 / decided.as_secs_f64().max(1e-9),
            burst.len(),
            delivered.as_secs_f64(),
            decided.as_secs_f64()
        );
        s.running.shutdown().await;
    }
    Ok(())
}
