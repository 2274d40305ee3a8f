//! The hooks benchmark: `triggerHook` latency (the call, the template
//! rendered, the task created through the queue's API as the hook's role, the
//! firing recorded) and how late scheduled hooks fire, on SQLite and
//! PostgreSQL.

use crate::queue::pct;
use bbb_auth::Credentials;
use bbb_hooks::client::HawkClient;
use bbb_pulse::Binding;
use bbb_queue::config::RoleConfig;
use bbb_queue::{Clock, QueueConfig};
use bbb_testdb::{PgDatabase, TempDir};
use futures::future::join_all;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Backends: `sqlite`, `postgres`.
    pub backends: Vec<String>,
    /// `triggerHook` calls measured.
    pub triggers: usize,
    /// Concurrent callers.
    pub concurrency: usize,
    /// Hooks scheduled every second.
    pub cron_hooks: usize,
    /// How long the scheduled hooks run.
    pub cron_seconds: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backends: vec!["sqlite".into(), "postgres".into()],
            triggers: 1000,
            concurrency: 8,
            cron_hooks: 10,
            cron_seconds: 10,
        }
    }
}

/// A queue with the hooks service, and a root client for it.
struct Server {
    running: bbb_queue::Running,
    http: HawkClient,
    root: Credentials,
    _pg: Option<PgDatabase>,
    _dir: TempDir,
}

impl Server {
    async fn start(backend: &str) -> anyhow::Result<Server> {
        let dir = TempDir::new("bbb-bench-hooks");
        let mut pg = None;
        let database_url = if backend == "postgres" {
            pg.insert(PgDatabase::create("bbb_bench_hooks").await?)
                .url()
                .to_owned()
        } else {
            format!("sqlite://{}/queue.sqlite", dir.0.display())
        };
        let token = bbb_queue::server::random_token();
        let mut cfg = QueueConfig {
            listen: "127.0.0.1:0".into(),
            database_url: database_url.into(),
            database_max_connections: 20,
            root_access_token: Some(token.clone().into()),
            blob_dir: dir.0.join("blobs"),
            ..QueueConfig::default()
        };
        cfg.auth.roles = vec![RoleConfig {
            role_id: "hook-id:bench/*".into(),
            scopes: vec!["queue:create-task:*".into(), "queue:scheduler-id:*".into()],
        }];
        let hooks = bbb_hooks::HooksConfig::default();
        let running =
            bbb_queue::start_with(cfg, Clock::system(), vec![bbb_hooks::mount(hooks)]).await?;
        Ok(Server {
            http: HawkClient::new(&running.root_url, running.queue.clock.clone()),
            root: Credentials {
                client_id: "root".into(),
                access_token: token,
                certificate: None,
            },
            running,
            _pg: pg,
            _dir: dir,
        })
    }

    /// A hooks API call as root that must succeed.
    async fn hooks(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let url = self.http.url("hooks", path);
        let a = self
            .http
            .call(Some(&self.root), None, method, &url, body)
            .await
            .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(a.is_success(), "{method} {path}: {} {}", a.status, a.body);
        Ok(a.body)
    }
}

/// A hook creating one task per firing in `group` on `bench/hooks`.
fn hook(group: &str, schedule: &[&str]) -> Value {
    json!({
        "metadata": {"name": "bench", "description": "benchmark hook", "owner": "bench@example.com"},
        "schedule": schedule,
        "triggerSchema": {"type": "object"},
        "task": {
            "taskQueueId": "bench/hooks",
            "taskGroupId": group,
            "payload": {"firedBy": "${firedBy}"},
            "metadata": {"name": "bench", "description": "made by a hook", "owner": "bench@example.com", "source": "https://example.com/bench"},
        },
    })
}

/// `triggerHook` latencies with `concurrency` callers.
async fn triggers(s: &Server, opts: &Options) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let group = bbb_queue::validate::slugid();
    s.hooks("PUT", "hooks/bench/trigger", Some(&hook(&group, &[])))
        .await?;
    for _ in 0..20 {
        s.hooks("POST", "hooks/bench/trigger/trigger", Some(&json!({})))
            .await?;
    }
    let per = opts.triggers.div_ceil(opts.concurrency.max(1));
    let started = Instant::now();
    let loops = (0..opts.concurrency.max(1)).map(|_| async {
        let mut lat = Vec::with_capacity(per);
        for _ in 0..per {
            let t = Instant::now();
            s.hooks(
                "POST",
                "hooks/bench/trigger/trigger",
                Some(&json!({"n": 1})),
            )
            .await?;
            lat.push(t.elapsed());
        }
        anyhow::Ok(lat)
    });
    let mut all = Vec::new();
    for r in join_all(loops).await {
        all.extend(r?);
    }
    let wall = started.elapsed();
    all.sort();
    Ok((all, wall))
}

/// How late scheduled firings are: from the slot to the task's `task-defined`
/// message on the bus (end to end), and from the slot to the start of the
/// firing (the scheduler alone).
async fn cron_delays(s: &Server, opts: &Options) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let bus = &s.running.bus;
    let exchange = format!("{}task-defined", s.running.queue.cfg.exchange_prefix);
    let mut consumer = bus
        .consume("bench/hooks-cron", &[Binding::new(exchange, "#")], 256)
        .await?;
    let groups: Vec<String> = (0..opts.cron_hooks)
        .map(|_| bbb_queue::validate::slugid())
        .collect();
    for (i, g) in groups.iter().enumerate() {
        s.hooks(
            "PUT",
            &format!("hooks/bench/cron-{i}"),
            Some(&hook(g, &["* * * * * *"])),
        )
        .await?;
    }
    let until = Instant::now() + Duration::from_secs(opts.cron_seconds);
    let mut seen = Vec::new();
    while let Ok(Some(d)) =
        tokio::time::timeout_at(tokio::time::Instant::from_std(until), consumer.next()).await
    {
        let at = s.running.queue.clock.now_ms();
        let v: Value = d.json()?;
        d.ack().await?;
        let group = v["status"]["taskGroupId"].as_str().unwrap_or_default();
        if groups.iter().any(|g| g == group) {
            seen.push((
                v["status"]["taskId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                at,
            ));
        }
    }
    for (i, g) in groups.iter().enumerate() {
        s.hooks(
            "POST",
            &format!("hooks/bench/cron-{i}"),
            Some(&hook(g, &[])),
        )
        .await?;
    }
    let queue = &s.running.queue;
    let mut end_to_end = Vec::new();
    for (task_id, at) in &seen {
        if let Some(task) = queue.load_task(task_id).await? {
            let slot = bbb_queue::time::parse_ms(&task.def.created).unwrap_or(*at);
            end_to_end.push(Duration::from_millis((at - slot).max(0) as u64));
        }
    }
    let mut start = Vec::new();
    for i in 0..opts.cron_hooks {
        let fires = s
            .hooks("GET", &format!("hooks/bench/cron-{i}/last-fires"), None)
            .await?;
        for f in fires["lastFires"].as_array().into_iter().flatten() {
            let task_id = f["taskId"].as_str().unwrap_or_default();
            let fired = f["taskCreateTime"]
                .as_str()
                .and_then(bbb_queue::time::parse_ms);
            if let (Some(task), Some(fired)) = (queue.load_task(task_id).await?, fired) {
                let slot = bbb_queue::time::parse_ms(&task.def.created).unwrap_or(fired);
                start.push(Duration::from_millis((fired - slot).max(0) as u64));
            }
        }
    }
    end_to_end.sort();
    start.sort();
    Ok((end_to_end, start))
}

/// Run the benchmark and print its figures.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    println!(
        "hooks: {} triggerHook calls from {} callers; {} hooks every second for {} s",
        opts.triggers, opts.concurrency, opts.cron_hooks, opts.cron_seconds
    );
    for backend in &opts.backends {
        let s = Server::start(backend).await?;
        let (lat, wall) = triggers(&s, &opts).await?;
        println!(
            "{backend:8} triggerHook  p50 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms  ({:.0} calls/s)",
            pct(&lat, 0.50),
            pct(&lat, 0.99),
            pct(&lat, 1.0),
            lat.len() as f64 / wall.as_secs_f64()
        );
        let (end_to_end, start) = cron_delays(&s, &opts).await?;
        let firings = format!("slot to task-defined, {} firings", end_to_end.len());
        for (what, samples, note) in [
            ("cron delay", &end_to_end, firings.as_str()),
            ("cron start", &start, "slot to the firing's start"),
        ] {
            println!(
                "{backend:8} {what}   p50 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms  ({note})",
                pct(samples, 0.50),
                pct(samples, 0.99),
                pct(samples, 1.0),
            );
        }
        s.running.shutdown().await;
    }
    Ok(())
}
