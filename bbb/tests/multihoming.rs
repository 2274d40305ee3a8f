//! Multihoming: the bridge's roles run as separate `bbb` processes, three
//! instances of each (TC listener, Buildbot listener, reflector), beside two
//! `bbb queue` processes on one PostgreSQL database, one shared mapping
//! database on PostgreSQL, a 0.8 scheduler DB on MariaDB played by the
//! legacy-master simulator, and one RabbitMQ vhost. A few hundred tasks with
//! scripted outcomes are submitted while one TC listener, one Buildbot
//! listener and one reflector are killed with SIGKILL; every task must end as
//! its script says, with exactly one build request, and no mapping row may be
//! left active.
//!
//! Needs PostgreSQL (`BBB_TEST_PG_URL`), MariaDB (`BBB_TEST_MYSQL_URL`) and
//! RabbitMQ with `rabbitmqctl` (`BBB_TEST_AMQP_BASE`), like the other
//! integration tests. `MULTIHOMING_LOG` sets the processes' `BBB_LOG` (default
//! `info,sqlx=warn`); their output is kept when the test fails.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bbb_bridge::TaskStatus;
use bbb_buildbot::simulator::{SimBuilder, Simulator, SimulatorConfig};
use bbb_state::{RowState, StateDb};
use mysql_async::prelude::Queryable;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// Tasks submitted.
const TASKS: usize = 300;
/// Tasks created at once while streaming them in.
const SUBMIT_BATCH: usize = 10;
/// Pause between batches (about 3 s for the whole stream, plus the calls).
const SUBMIT_PAUSE: Duration = Duration::from_millis(100);
/// The kills happen once this many tasks are submitted.
const KILL_AFTER: usize = TASKS / 2;
/// Instances of each bridge role.
const INSTANCES: usize = 3;
/// How long everything may take before the test gives up (not a timing
/// assertion: only a bound so a stuck run ends with a diagnosis).
const GIVE_UP: Duration = Duration::from_secs(480);

const BUILDERS: [&str; 4] = ["linux64-build", "linux64-test", "win64-build", "win64-test"];

/// One task's script and what it must end as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Script {
    Success,
    Failure,
    RetryThenSuccess,
}

impl Script {
    fn of(i: usize) -> Script {
        match i % 10 {
            3 | 8 => Script::Failure,
            6 => Script::RetryThenSuccess,
            _ => Script::Success,
        }
    }

    fn sim_result(self) -> &'static str {
        match self {
            Script::Success => "SUCCESS",
            Script::Failure => "FAILURE",
            Script::RetryThenSuccess => "RETRY,SUCCESS",
        }
    }

    /// The runs the task must end with: (state, reasonResolved).
    fn expected_runs(self) -> Vec<(&'static str, Option<&'static str>)> {
        match self {
            Script::Success => vec![("completed", Some("completed"))],
            Script::Failure => vec![("failed", Some("failed"))],
            Script::RetryThenSuccess => vec![
                ("exception", Some("worker-shutdown")),
                ("completed", Some("completed")),
            ],
        }
    }
}

/// A child process with its output files.
struct Proc {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    killed: bool,
}

/// Every child process of the test and its directory. Dropping it kills what
/// still runs; when the test failed, it keeps the directory and prints where
/// each process's output is.
struct Procs {
    dir: PathBuf,
    procs: Vec<Proc>,
}

impl Procs {
    fn new() -> Procs {
        let dir = std::env::temp_dir().join(format!(
            "bbb-multihoming-{}-{}",
            std::process::id(),
            bbb_queue::validate::slugid()
        ));
        std::fs::create_dir_all(&dir).expect("create the test directory");
        Procs { dir, procs: vec![] }
    }

    /// Starts `bbb <subcommand>` with `env`, in the test directory, its output in files.
    fn spawn(&mut self, name: &str, subcommand: &str, env: &[(&str, String)], config: &Path) {
        let stdout = self.dir.join(format!("{name}.stdout"));
        let stderr = self.dir.join(format!("{name}.stderr"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bbb"));
        cmd.arg("--config")
            .arg(config)
            .arg(subcommand)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("stdout file"))
            .stderr(File::create(&stderr).expect("stderr file"));
        // Only what the test sets: nothing from the caller's environment may
        // change a role's configuration.
        for (key, _) in std::env::vars() {
            if key.starts_with("BBB_") {
                cmd.env_remove(key);
            }
        }
        cmd.env(
            "BBB_LOG",
            std::env::var("MULTIHOMING_LOG").unwrap_or_else(|_| "info,sqlx=warn".to_owned()),
        );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start bbb");
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
            killed: false,
        });
    }

    fn get(&mut self, name: &str) -> &mut Proc {
        self.procs
            .iter_mut()
            .find(|p| p.name == name)
            .expect("a process of that name")
    }

    /// SIGKILLs the named process and reaps it.
    fn sigkill(&mut self, name: &str) {
        let p = self.get(name);
        let pid = Pid::from_raw(i32::try_from(p.child.id()).expect("pid"));
        kill(pid, Signal::SIGKILL).expect("SIGKILL");
        let status = p.child.wait().expect("reap");
        p.killed = true;
        println!("killed {name} (pid {pid}) with SIGKILL: {status}");
    }

    /// Fails the test if a process that was not killed has exited.
    fn check_alive(&mut self) {
        for p in &mut self.procs {
            if !p.killed
                && let Some(status) = p.child.try_wait().expect("try_wait")
            {
                panic!(
                    "{} exited unexpectedly ({status}); see {}",
                    p.name,
                    p.stderr.display()
                );
            }
        }
    }

    /// Waits until the process printed `needle` on stdout.
    async fn wait_stdout(&mut self, name: &str, needle: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let p = self.get(name);
            let mut text = String::new();
            if let Ok(mut f) = File::open(&p.stdout) {
                let _ = f.read_to_string(&mut text);
            }
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            if let Some(status) = p.child.try_wait().expect("try_wait") {
                panic!(
                    "{name} exited ({status}) before it was ready; see {}",
                    p.stderr.display()
                );
            }
            assert!(
                start.elapsed() < timeout,
                "{name} not ready after {timeout:?}; see {}",
                p.stderr.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Counts the log lines of every process that contain `needle`.
    fn count_in_logs(&self, needle: &str) -> usize {
        self.log_lines(needle).len()
    }

    /// The log lines of every process that contain `needle`.
    fn log_lines(&self, needle: &str) -> Vec<String> {
        self.procs
            .iter()
            .flat_map(|p| {
                std::fs::read_to_string(&p.stderr)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains(needle))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Sum of the reflectors' `redriven` counts (rows whose injecting
    /// instance died before recording a build request).
    fn redriven(&self) -> u64 {
        self.log_lines("reflector pass")
            .iter()
            .filter_map(|l| {
                let rest = &l[l.find("redriven: ")? + "redriven: ".len()..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u64>().ok()
            })
            .sum()
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if !p.killed {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "multihoming test failed; process output kept in {}:",
                self.dir.display()
            );
            for p in &self.procs {
                eprintln!(
                    "  {:<16} {}  {}",
                    p.name,
                    p.stdout.display(),
                    p.stderr.display()
                );
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Consumers of each queue of the vhost, from `rabbitmqctl list_queues`.
async fn queue_consumers(vhost: &str) -> HashMap<String, usize> {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args(["-q", "list_queues", "-p", vhost, "name", "consumers"])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("rabbitmqctl list_queues");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next()?;
            let n = parts.next()?.parse().ok()?;
            Some((name.to_owned(), n))
        })
        .collect()
}

fn queue_client(root_url: &str, token: &str) -> taskcluster::Queue {
    taskcluster::Queue::new(
        taskcluster::ClientBuilder::new(root_url)
            .credentials(taskcluster::Credentials::new("root", token)),
    )
    .expect("queue client")
}

fn task_definition(i: usize, script: Script, group: &str) -> Value {
    let now = chrono::Utc::now();
    // Builds are short, RETRY builds included: both builds of a retried
    // request may start before any listener recorded the first start, and
    // the bridge must still retry the run the RETRY'd build served.
    let duration_ms = match script {
        Script::RetryThenSuccess => 100 + (i * 37) % 400,
        _ => 100 + (i * 37) % 900,
    };
    json!({
        "taskQueueId": bbb_bridge::DEFAULT_TASK_QUEUE,
        "schedulerId": "multihoming",
        "taskGroupId": group,
        "created": now.to_rfc3339(),
        "deadline": (now + chrono::Duration::hours(2)).to_rfc3339(),
        "expires": (now + chrono::Duration::days(1)).to_rfc3339(),
        "retries": 5,
        "payload": {
            "buildername": BUILDERS[i % BUILDERS.len()],
            "properties": {
                "product": "firefox",
                "sim_result": script.sim_result(),
                "sim_duration_ms": duration_ms,
            },
            "sourcestamp": {
                "branch": "integration/mozilla-inbound",
                "revision": format!("{i:012x}"),
                "repository": "https://hg.mozilla.org/integration/mozilla-inbound",
            },
        },
        "metadata": {
            "name": format!("multihoming task {i}"),
            "description": "a bridged task of the multihoming test",
            "owner": "tests@example.com",
            "source": "https://example.com/bbb/multihoming",
        },
    })
}

async fn status_of(client: &taskcluster::Queue, task_id: &str) -> Option<TaskStatus> {
    let v = client.status(task_id).await.ok()?;
    TaskStatus::from_json(&v["status"]).ok()
}

/// Whether a status is final: the task is resolved (a RETRY's exception run
/// is followed by a pending run, so it is not final).
fn is_final(status: &TaskStatus) -> bool {
    matches!(status.state.as_str(), "completed" | "failed" | "exception")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_of_each_role_survive_sigkill_with_one_build_request_per_task() {
    let started = Instant::now();
    let vhost = bbb_pulse::testing::fresh_vhost("multihoming")
        .await
        .expect("a RabbitMQ vhost");
    let queue_pg = bbb_testdb::PgDatabase::create("bbb_mh_queue")
        .await
        .expect("the queue's PostgreSQL database");
    let queue_db = queue_pg.url().to_owned();
    let state_pg = bbb_testdb::PgDatabase::create("bbb_mh_state")
        .await
        .expect("the mapping PostgreSQL database");
    let state_db_url = state_pg.url().to_owned();
    let sched = bbb_buildbot::testing::fresh_database("multihoming")
        .await
        .expect("a scheduler DB on MariaDB");

    // The legacy master, in this process, publishing on the vhost.
    let sim_bus = bbb_pulse::Bus::connect(Some(&vhost.url))
        .await
        .expect("simulator bus");
    let builders: Vec<SimBuilder> = BUILDERS
        .iter()
        .map(|name| {
            let mut b = SimBuilder::new(*name);
            b.slots = 8;
            b
        })
        .collect();
    let sim = Simulator::start(SimulatorConfig::new(
        &sched.url,
        Some(sim_bus.clone()),
        builders,
    ))
    .await
    .expect("simulator");

    let mut procs = Procs::new();
    let config = procs.dir.join("bbb.toml");
    std::fs::write(
        &config,
        format!(
            "[queue]\n\
             database_max_connections = 8\n\
             \n\
             [bridge]\n\
             default_master_url = {:?}\n\
             poll_interval_s = 0.5\n\
             recheck_interval_s = 10\n",
            sim.web_url()
        ),
    )
    .expect("write the configuration");

    // Two queue processes on one database.
    let token = bbb_queue::server::random_token();
    let mut roots = Vec::new();
    for q in 0..2 {
        let name = format!("queue-{q}");
        let listen = format!("127.0.0.1:{}", free_port());
        procs.spawn(
            &name,
            "queue",
            &[
                ("BBB_LISTEN", listen.clone()),
                ("BBB_DATABASE_URL", queue_db.clone()),
                ("BBB_AMQP_URL", vhost.url.clone()),
                ("BBB_ROOT_ACCESS_TOKEN", token.clone()),
                ("BBB_RESOLVER_INTERVAL_MS", "200".to_owned()),
            ],
            &config,
        );
        let line = procs
            .wait_stdout(&name, "listening on", Duration::from_secs(60))
            .await;
        let root = line
            .rsplit(' ')
            .next()
            .expect("the root URL")
            .trim()
            .to_owned();
        roots.push(root);
        // The second queue migrates nothing; start it after the first one
        // created the tables.
    }

    // Three instances of each role, alternating between the queues.
    let mut names = Vec::new();
    for role in ["tc-listener", "bb-listener", "reflector"] {
        for i in 0..INSTANCES {
            let name = format!("{role}-{i}");
            procs.spawn(
                &name,
                role,
                &[
                    ("BBB_QUEUE_ROOT_URL", roots[i % roots.len()].clone()),
                    ("BBB_QUEUE_CLIENT_ID", "root".to_owned()),
                    ("BBB_QUEUE_ACCESS_TOKEN", token.clone()),
                    ("BBB_AMQP_URL", vhost.url.clone()),
                    ("BBB_STATE_DATABASE_URL", state_db_url.clone()),
                    ("BBB_BUILDBOT_KIND", "schedulerdb".to_owned()),
                    ("BBB_SCHEDULERDB_URL", sched.url.clone()),
                    ("BBB_BRIDGE_INSTANCE", name.clone()),
                    ("BBB_BRIDGE_MASTER", sim.master_name().to_owned()),
                    ("BBB_REFLECTOR_INTERVAL_S", "2".to_owned()),
                    ("BBB_METRICS_LISTEN", "127.0.0.1:0".to_owned()),
                ],
                &config,
            );
            names.push(name);
        }
    }
    for name in &names {
        procs
            .wait_stdout(name, "metrics on", Duration::from_secs(60))
            .await;
    }
    // The TC listeners consume the queue's events from shared durable queues,
    // the Buildbot listeners the master's: submit only once every instance
    // consumes from them (a message published before a queue exists is lost).
    let wanted = [
        "queue/bbb-bridge/task-pending",
        "queue/bbb-bridge/task-exception",
        "queue/bbb-bridge/buildbot-builds",
    ];
    let ready_by = Instant::now() + Duration::from_secs(60);
    loop {
        let consumers = queue_consumers(&vhost.name).await;
        if wanted
            .iter()
            .all(|q| consumers.get(*q).copied().unwrap_or(0) >= INSTANCES)
        {
            break;
        }
        assert!(
            Instant::now() < ready_by,
            "the bridge's queues lack consumers: {consumers:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let setup = started.elapsed();

    // Stream the tasks in through both queues; kill one instance of each role
    // half-way.
    let clients: Vec<Arc<taskcluster::Queue>> = roots
        .iter()
        .map(|r| Arc::new(queue_client(r, &token)))
        .collect();
    let group = bbb_queue::validate::slugid();
    let submitted = Arc::new(AtomicUsize::new(0));
    let plan: Vec<(String, Script)> = (0..TASKS)
        .map(|i| (bbb_queue::validate::slugid(), Script::of(i)))
        .collect();
    let submitter = {
        let plan = plan.clone();
        let clients = clients.clone();
        let submitted = submitted.clone();
        let group = group.clone();
        tokio::spawn(async move {
            for (b, chunk) in plan.chunks(SUBMIT_BATCH).enumerate() {
                let mut set = tokio::task::JoinSet::new();
                for (j, (task_id, script)) in chunk.iter().enumerate() {
                    let i = b * SUBMIT_BATCH + j;
                    let client = clients[i % clients.len()].clone();
                    let def = task_definition(i, *script, &group);
                    let task_id = task_id.clone();
                    set.spawn(async move {
                        client
                            .createTask(&task_id, &def)
                            .await
                            .unwrap_or_else(|e| panic!("createTask {task_id}: {e:#}"));
                    });
                }
                while let Some(r) = set.join_next().await {
                    r.expect("createTask");
                }
                submitted.fetch_add(chunk.len(), Ordering::SeqCst);
                tokio::time::sleep(SUBMIT_PAUSE).await;
            }
        })
    };
    let submit_start = Instant::now();
    while submitted.load(Ordering::SeqCst) < KILL_AFTER {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let victims = ["tc-listener-1", "bb-listener-2", "reflector-0"];
    for victim in victims {
        procs.sigkill(victim);
    }
    submitter.await.expect("every task submitted");
    let submit_time = submit_start.elapsed();

    // Wait until every task is resolved.
    let client = &clients[0];
    let mut open: Vec<usize> = (0..TASKS).collect();
    let mut finals: BTreeMap<usize, TaskStatus> = BTreeMap::new();
    let give_up = Instant::now() + GIVE_UP;
    let mut last_report = Instant::now();
    while !open.is_empty() {
        procs.check_alive();
        let mut still = Vec::new();
        for i in open {
            match status_of(client, &plan[i].0).await {
                Some(status) if is_final(&status) => {
                    finals.insert(i, status);
                }
                _ => still.push(i),
            }
        }
        open = still;
        if open.is_empty() {
            break;
        }
        if Instant::now() > give_up {
            let mut pending = Vec::new();
            for i in open.iter().take(10) {
                pending.push((plan[*i].0.clone(), status_of(client, &plan[*i].0).await));
            }
            panic!(
                "{} of {TASKS} tasks unresolved after {GIVE_UP:?}; some: {pending:#?}",
                open.len()
            );
        }
        if last_report.elapsed() > Duration::from_secs(15) {
            println!(
                "{:>5.1}s: {} of {TASKS} tasks resolved; simulator {:?}",
                started.elapsed().as_secs_f64(),
                TASKS - open.len(),
                sim.stats()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let resolve_time = submit_start.elapsed();

    // Every task ended as its script says.
    let mut wrong = Vec::new();
    for (i, status) in &finals {
        let (task_id, script) = &plan[*i];
        let runs: Vec<(&str, Option<&str>)> = status
            .runs
            .iter()
            .map(|r| (r.state.as_str(), r.reason_resolved.map(|r| r.as_str())))
            .collect();
        if runs != script.expected_runs() {
            wrong.push(format!("task {i} {task_id} ({script:?}): runs {runs:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} tasks ended otherwise than scripted:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // Exactly one build request per task, and none besides.
    let mut conn = sched.conn().await.expect("scheduler DB connection");
    let per_task: Vec<(Option<String>, u64)> = conn
        .query(
            "SELECT bs.external_idstring, COUNT(br.id) \
             FROM buildsets bs JOIN buildrequests br ON br.buildsetid = bs.id \
             GROUP BY bs.external_idstring",
        )
        .await
        .expect("count build requests");
    let total_requests: u64 = conn
        .query_first("SELECT COUNT(*) FROM buildrequests")
        .await
        .expect("count build requests")
        .unwrap_or(0);
    let total_builds: u64 = conn
        .query_first("SELECT COUNT(*) FROM builds")
        .await
        .expect("count builds")
        .unwrap_or(0);
    drop(conn);
    let per_task: HashMap<String, u64> = per_task
        .into_iter()
        .map(|(k, n)| (k.unwrap_or_default(), n))
        .collect();
    let mut miscounted = Vec::new();
    for (i, (task_id, _)) in plan.iter().enumerate() {
        let n = per_task
            .get(&format!("taskId:{task_id}"))
            .copied()
            .unwrap_or(0);
        if n != 1 {
            miscounted.push(format!("task {i} {task_id}: {n} build requests"));
        }
    }
    assert!(
        miscounted.is_empty(),
        "tasks without exactly one build request:\n{}",
        miscounted.join("\n")
    );
    assert_eq!(
        total_requests, TASKS as u64,
        "build requests in the scheduler DB besides the tasks' own"
    );

    // No mapping row left active. The rows are settled right after the queue
    // calls that resolve the runs, so give the last ones a moment.
    let state = StateDb::connect(&state_db_url, 2)
        .await
        .expect("mapping DB");
    let settle_by = Instant::now() + Duration::from_secs(120);
    let by_state = loop {
        let by_state = state.rows_by_state().await.expect("rows by state");
        if by_state
            .iter()
            .all(|(s, n)| *s == RowState::Resolved || *n == 0)
        {
            break by_state;
        }
        if Instant::now() > settle_by {
            let mut active = Vec::new();
            for (task_id, _) in &plan {
                for row in state.rows_for_task(task_id).await.expect("rows") {
                    if row.state != RowState::Resolved {
                        active.push(format!("{row:?}"));
                    }
                }
            }
            panic!(
                "mapping rows left active: {by_state:?}\n{}",
                active.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let rows: i64 = by_state.iter().map(|(_, n)| n).sum();
    let expected_rows: usize = plan.iter().map(|(_, s)| s.expected_runs().len()).sum();
    assert_eq!(
        rows as usize, expected_rows,
        "one mapping row per run: {by_state:?}"
    );
    procs.check_alive();
    state.close().await;

    let retried = plan
        .iter()
        .filter(|(_, s)| *s == Script::RetryThenSuccess)
        .count();
    let failed = plan.iter().filter(|(_, s)| *s == Script::Failure).count();
    println!(
        "multihoming: {TASKS} tasks ({} success, {failed} failure, {retried} retry-then-success) \
         through 2 queues and {INSTANCES} instances of each bridge role; killed {victims:?} \
         after {KILL_AFTER} submissions",
        TASKS - failed - retried
    );
    println!(
        "multihoming: {total_requests} build requests (1 per task), {total_builds} builds, \
         {rows} mapping rows all resolved; simulator {:?}; rows re-driven by the reflectors: {}, \
         of which requests recovered: {}",
        sim.stats(),
        procs.redriven(),
        procs.count_in_logs("build request recovered")
    );
    println!(
        "multihoming: setup {:.1}s, submission {:.1}s, all resolved {:.1}s after the first \
         submission, {:.1}s in all",
        setup.as_secs_f64(),
        submit_time.as_secs_f64(),
        resolve_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    drop(procs);
    sim.shutdown().await;
    sim_bus.close().await;
    let _ = sched.drop_database().await;
    drop((queue_pg, state_pg));
}
