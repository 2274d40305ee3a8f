//! A real Buildbot 4.3 master (and workers) per test.

use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{TestDatabase, fresh_empty_database};
use crate::common::{PollOptions, PulseOptions};
use crate::error::{LegacyError, Result};
use crate::rest::RestMasterConfig;

/// The master configuration the test masters run (`test-master/master.cfg`).
const MASTER_CFG: &str = include_str!("../../test-master/master.cfg");
/// bbb's reporter plugin, installed next to it.
const REPORTER: &str = include_str!("../../reporter/bbb_reporter.py");

/// The exchange the test masters' reporter publishes to.
const TEST_EXCHANGE: &str = "exchange/build";
/// The queue the reporter pre-declares, and the adapter consumes.
const TEST_QUEUE: &str = "queue/bbb/buildbot-builds";

static SEQ: AtomicU64 = AtomicU64::new(0);

fn io_error(what: impl Into<String>) -> LegacyError {
    LegacyError::Io(io::Error::other(what.into()))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    }
}

/// The virtualenv holding Buildbot 4.3: `$BBB_BUILDBOT_VENV`, else
/// `<cargo target dir>/buildbot-venv`, made (or brought up to date) by
/// `scripts/buildbot-venv.sh`. The script runs once at a time across
/// processes (a file lock) and returns at once when the venv is current.
pub async fn buildbot_venv() -> Result<PathBuf> {
    if let Some(venv) = std::env::var_os("BBB_BUILDBOT_VENV") {
        let venv = PathBuf::from(venv);
        if !venv.join("bin/buildbot").exists() {
            return Err(io_error(format!(
                "BBB_BUILDBOT_VENV={} has no bin/buildbot",
                venv.display()
            )));
        }
        return Ok(venv);
    }
    tokio::task::spawn_blocking(|| {
        let target = target_dir();
        std::fs::create_dir_all(&target)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(target.join("buildbot-venv.lock"))?;
        lock.lock()?;
        let output = Command::new("bash")
            .arg(repo_root().join("scripts/buildbot-venv.sh"))
            .env("CARGO_TARGET_DIR", &target)
            .stdin(Stdio::null())
            .output()?;
        drop(lock);
        if !output.status.success() {
            return Err(io_error(format!(
                "scripts/buildbot-venv.sh failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(target.join("buildbot-venv"))
    })
    .await
    .map_err(|e| io_error(e.to_string()))?
}

/// What [`BuildbotMaster::start`] starts.
#[derive(Clone, Debug)]
pub struct BuildbotMasterOptions {
    /// Workers started and connected (named `worker-1`, `worker-2`, ...).
    pub workers: usize,
    /// Whether the master runs bbb's reporter plugin, publishing to its own
    /// RabbitMQ vhost.
    pub reporter: bool,
    /// How long the master and its workers may take to come up.
    pub start_timeout: Duration,
}

impl Default for BuildbotMasterOptions {
    /// One worker, the reporter on, three minutes to start.
    fn default() -> Self {
        Self {
            workers: 1,
            reporter: true,
            start_timeout: Duration::from_secs(180),
        }
    }
}

#[derive(Debug)]
struct WorkerProcess {
    name: String,
    dir: PathBuf,
    child: Option<Child>,
}

/// A Buildbot 4.3 master running for one test, from
/// `buildbot/test-master/master.cfg` with bbb's reporter plugin, on its own
/// MariaDB database (`mysql+pymysql`, InnoDB), its own RabbitMQ vhost, free
/// loopback ports and a temporary directory, with local workers that
/// connect to it. Builders (see `master.cfg`): `bbb-linux`, `bbb-mac`,
/// `bbb-win` on the workers, whose build sleeps `bb_sleep` seconds (plus
/// `bb_sleep_first` on a task's first attempt) and exits `bb_exit`; and
/// `bbb-offline`, whose worker never connects, so its requests stay
/// pending.
///
/// Each process runs in its own session (`setsid`), so stopping it also ends
/// the commands its builds started. [`stop`](Self::stop) (or dropping the value)
/// ends every process, removes the directory, and drops the database and the
/// vhost.
#[derive(Debug)]
pub struct BuildbotMaster {
    /// The REST API base URL, `http://127.0.0.1:<port>/api/v2`.
    pub api_url: String,
    /// The master's web URL, `http://127.0.0.1:<port>/`.
    pub master_url: String,
    /// AMQP URL of the vhost the reporter publishes to (with the reporter).
    pub amqp_url: Option<String>,
    /// The reporter's exchange.
    pub exchange: String,
    /// The durable queue the reporter declares and binds, so messages wait
    /// for the adapter.
    pub queue: String,
    /// The master's base directory.
    pub basedir: PathBuf,
    /// How long [`start`](Self::start) took.
    pub startup: Duration,
    dir: PathBuf,
    venv: PathBuf,
    pb_port: u16,
    http: reqwest::Client,
    master: Option<Child>,
    workers: Vec<WorkerProcess>,
    database: Option<TestDatabase>,
    vhost: Option<bbb_pulse::testing::TestVhost>,
}

fn free_port() -> Result<(TcpListener, u16)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    Ok((listener, port))
}

/// The pymysql URL of a test database, InnoDB.
fn pymysql_url(database: &TestDatabase) -> Result<String> {
    let mut url = url::Url::parse(&database.url).map_err(|e| io_error(e.to_string()))?;
    url.set_query(Some("storage_engine=InnoDB"));
    let text = url.to_string();
    Ok(match text.split_once("://") {
        Some((_, rest)) => format!("mysql+pymysql://{rest}"),
        None => text,
    })
}

/// Runs `program args...` in a new session (`setsid`), output to `log`.
fn spawn_session(program: &Path, args: &[&str], log: &Path) -> Result<Child> {
    let out = File::create(log)?;
    let err = out.try_clone()?;
    Ok(Command::new("setsid")
        .arg(program)
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()?)
}

/// The processes of session `sid` (from `/proc/<pid>/stat`).
fn session_members(sid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![sid];
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // "pid (comm) state ppid pgrp session ..."; comm may hold spaces.
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(3)?.parse::<u32>().ok()
                })
                == Some(sid)
        })
        .collect();
    if !pids.contains(&sid) {
        pids.push(sid);
    }
    pids
}

/// Sends `signal` (`TERM`, `KILL`) to the given processes (the shell's
/// `kill`, so no other tool is needed).
fn send_signal(signal: &str, pids: &[u32]) {
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    let _ = Command::new("sh")
        .args([
            "-c",
            &format!("kill -{signal} {} 2>/dev/null", list.join(" ")),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Sends `signal` to every process of the session led by `child`.
fn signal_session(child: &Child, signal: &str) {
    send_signal(signal, &session_members(child.id()));
}

/// Kills the session of `child` and reaps it.
fn kill_session(child: &mut Child) {
    signal_session(child, "KILL");
    let _ = child.kill();
    let _ = child.wait();
}

/// Asks the master to shut down (SIGTERM), killing it after `grace`.
fn stop_master(child: &mut Child, grace: Duration) {
    send_signal("TERM", &[child.id()]);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    kill_session(child);
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl BuildbotMaster {
    /// Creates the database, the vhost and the directory, runs
    /// `buildbot create-master`, starts the master and the workers from the
    /// Buildbot venv ([`buildbot_venv`]) and waits until the REST API
    /// answers and every worker is connected.
    pub async fn start(options: BuildbotMasterOptions) -> Result<BuildbotMaster> {
        let started = Instant::now();
        let venv = buildbot_venv().await?;
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "bbb-buildbot-{}-{seq}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        let basedir = dir.join("master");
        let mut master = BuildbotMaster {
            api_url: String::new(),
            master_url: String::new(),
            amqp_url: None,
            exchange: TEST_EXCHANGE.to_owned(),
            queue: TEST_QUEUE.to_owned(),
            basedir: basedir.clone(),
            startup: Duration::ZERO,
            dir,
            venv,
            pb_port: 0,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| io_error(e.to_string()))?,
            master: None,
            workers: Vec::new(),
            database: None,
            vhost: None,
        };
        let database = fresh_empty_database("bb4").await?;
        let db_url = pymysql_url(&database)?;
        master.database = Some(database);
        if options.reporter {
            let vhost = bbb_pulse::testing::fresh_vhost("bb4")
                .await
                .map_err(|e| io_error(format!("creating a RabbitMQ vhost: {e:#}")))?;
            master.amqp_url = Some(vhost.url.clone());
            master.vhost = Some(vhost);
        }

        let output = Command::new(master.venv.join("bin/buildbot"))
            .args(["create-master", "-q", &format!("--db={db_url}")])
            .arg(&basedir)
            .stdin(Stdio::null())
            .output()?;
        if !output.status.success() {
            return Err(io_error(format!(
                "buildbot create-master failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        std::fs::write(basedir.join("master.cfg"), MASTER_CFG)?;
        std::fs::write(basedir.join("bbb_reporter.py"), REPORTER)?;

        let deadline = Instant::now() + options.start_timeout;
        // A port picked free can be taken by another test before the master
        // binds it: then start again on new ports.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match master.start_master(&db_url, &options, deadline).await {
                Ok(()) => break,
                Err(error) if attempt < 3 && Instant::now() < deadline => {
                    tracing::warn!(%error, attempt, "Buildbot master did not start; trying new ports");
                }
                Err(error) => return Err(error),
            }
        }
        for index in 1..=options.workers {
            let name = format!("worker-{index}");
            let dir = master.dir.join(&name);
            let output = Command::new(master.venv.join("bin/buildbot-worker"))
                .args(["create-worker", "-q"])
                .arg(&dir)
                .args([&format!("127.0.0.1:{}", master.pb_port), &name, "pass"])
                .stdin(Stdio::null())
                .output()?;
            if !output.status.success() {
                return Err(io_error(format!(
                    "buildbot-worker create-worker failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                )));
            }
            master.workers.push(WorkerProcess {
                name,
                dir,
                child: None,
            });
        }
        for index in 0..master.workers.len() {
            master.spawn_worker(index)?;
        }
        for index in 0..master.workers.len() {
            master.wait_worker(index, true, deadline).await?;
        }
        master.startup = started.elapsed();
        tracing::info!(api = %master.api_url, startup = ?master.startup, "Buildbot master ready");
        Ok(master)
    }

    async fn start_master(
        &mut self,
        db_url: &str,
        options: &BuildbotMasterOptions,
        deadline: Instant,
    ) -> Result<()> {
        if let Some(mut child) = self.master.take() {
            kill_session(&mut child);
        }
        let (www, www_port) = free_port()?;
        let (pb, pb_port) = free_port()?;
        let workers: Vec<Value> = (1..=options.workers.max(1))
            .map(|i| json!({"name": format!("worker-{i}"), "password": "pass"}))
            .collect();
        let settings = json!({
            "title": "bbb test master",
            "www_port": www_port,
            "pb_port": pb_port,
            "db_url": db_url,
            "workers": workers,
            "offline_worker": "worker-offline",
            "amqp_url": self.amqp_url,
            "exchange": self.exchange,
            "queue": self.queue,
        });
        std::fs::write(
            self.basedir.join("bbb-master.json"),
            serde_json::to_vec_pretty(&settings)?,
        )?;
        self.pb_port = pb_port;
        self.master_url = format!("http://127.0.0.1:{www_port}/");
        self.api_url = format!("http://127.0.0.1:{www_port}/api/v2");
        let _ = std::fs::remove_file(self.basedir.join("twistd.pid"));
        drop((www, pb));
        let basedir = self.basedir.to_string_lossy().into_owned();
        self.master = Some(spawn_session(
            &self.venv.join("bin/buildbot"),
            &["start", "--nodaemon", &basedir],
            &self.dir.join("master.out"),
        )?);
        loop {
            if let Some(child) = self.master.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(io_error(format!(
                    "the Buildbot master exited ({status}):\n{}\n{}",
                    tail(&self.dir.join("master.out"), 20),
                    tail(&self.basedir.join("twistd.log"), 40)
                )));
            }
            if self.rest_ready().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io_error(format!(
                    "the Buildbot master did not answer on {} in time:\n{}",
                    self.api_url,
                    tail(&self.basedir.join("twistd.log"), 40)
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn get_json(&self, path: &str) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.api_url))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    async fn rest_ready(&self) -> bool {
        let Some(body) = self.get_json("/masters").await else {
            return false;
        };
        body.get("masters")
            .and_then(Value::as_array)
            .is_some_and(|masters| {
                masters
                    .iter()
                    .any(|m| m.get("active").and_then(Value::as_bool) == Some(true))
            })
    }

    async fn worker_connected(&self, name: &str) -> bool {
        let Some(body) = self.get_json(&format!("/workers?name={name}")).await else {
            return false;
        };
        body.pointer("/workers/0/connected_to")
            .and_then(Value::as_array)
            .is_some_and(|masters| !masters.is_empty())
    }

    fn spawn_worker(&mut self, index: usize) -> Result<()> {
        let worker = &mut self.workers[index];
        let _ = std::fs::remove_file(worker.dir.join("twistd.pid"));
        let dir = worker.dir.to_string_lossy().into_owned();
        worker.child = Some(spawn_session(
            &self.venv.join("bin/buildbot-worker"),
            &["start", "--nodaemon", &dir],
            &self.dir.join(format!("{}.out", worker.name)),
        )?);
        Ok(())
    }

    async fn wait_worker(
        &mut self,
        index: usize,
        connected: bool,
        deadline: Instant,
    ) -> Result<()> {
        loop {
            let name = self.workers[index].name.clone();
            if self.worker_connected(&name).await == connected {
                return Ok(());
            }
            if connected
                && let Some(child) = self.workers[index].child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                // Right after a kill the worker can refuse to start; again.
                tracing::warn!(worker = %name, %status, "worker exited; starting it again");
                self.spawn_worker(index)?;
            }
            if Instant::now() >= deadline {
                let what = if connected { "connect" } else { "disconnect" };
                return Err(io_error(format!(
                    "worker {name} did not {what} in time:\n{}",
                    tail(&self.dir.join(format!("{name}.out")), 20)
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The base directory of worker `index` (0-based).
    pub fn worker_dir(&self, index: usize) -> &Path {
        &self.workers[index].dir
    }

    /// Whether a build for `task_id` with `bb_sleep_first` has reached its
    /// first-attempt sleep on worker `index` (the marker `master.cfg`'s
    /// step leaves in the worker's directory). Killing the worker before
    /// that would make the retried build take the long sleep again.
    pub fn first_attempt_started(&self, index: usize, task_id: &str) -> bool {
        self.worker_dir(index)
            .join(".bbb-first-attempts")
            .join(task_id)
            .exists()
    }

    /// The workers' names (`worker-1`, ...).
    pub fn worker_names(&self) -> Vec<String> {
        self.workers.iter().map(|w| w.name.clone()).collect()
    }

    /// Kills worker `index` (0-based) with SIGKILL, with whatever its build
    /// was running, waits until the master has noticed (a build it was
    /// running ends RETRY and its request goes back to the queue), then
    /// starts the worker again and waits until it is connected.
    pub async fn kill_worker(&mut self, index: usize) -> Result<()> {
        self.stop_worker(index).await?;
        self.start_worker(index).await
    }

    /// Kills worker `index` (0-based) with SIGKILL and waits until the
    /// master has noticed. Its builders' requests then stay pending.
    pub async fn stop_worker(&mut self, index: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        if let Some(mut child) = self.workers[index].child.take() {
            kill_session(&mut child);
        }
        self.wait_worker(index, false, deadline).await
    }

    /// Starts worker `index` (0-based) again and waits until it is
    /// connected.
    pub async fn start_worker(&mut self, index: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        if self.workers[index].child.is_none() {
            self.spawn_worker(index)?;
        }
        self.wait_worker(index, true, deadline).await
    }

    /// A [`RestMasterConfig`] for this master: its REST API, REST polling
    /// every 200 ms looking back an hour, and no reporter messages (see
    /// [`pulse_options`](Self::pulse_options)).
    pub fn rest_config(&self) -> RestMasterConfig {
        let mut config = RestMasterConfig::new(&self.api_url);
        config.poll = Some(PollOptions {
            interval: Duration::from_millis(200),
            lookback: Duration::from_secs(3600),
        });
        config
    }

    /// Connects to the reporter's vhost and returns the [`PulseOptions`] for
    /// its exchange and queue. Fails when the master runs without the
    /// reporter.
    pub async fn pulse_options(&self) -> Result<PulseOptions> {
        let url = self
            .amqp_url
            .as_deref()
            .ok_or_else(|| io_error("this master runs without the reporter"))?;
        let bus = bbb_pulse::Bus::connect(Some(url)).await?;
        let mut options = PulseOptions::new(bus);
        options.exchange = self.exchange.clone();
        options.queue = self.queue.clone();
        Ok(options)
    }

    /// Stops the workers and the master, removes the directory, drops the
    /// database and the vhost.
    pub async fn stop(mut self) -> Result<()> {
        self.shutdown();
        if let Some(database) = self.database.take() {
            database.drop_database().await?;
        }
        if let Some(vhost) = self.vhost.take() {
            vhost
                .delete()
                .await
                .map_err(|e| io_error(format!("deleting the vhost: {e:#}")))?;
        }
        Ok(())
    }

    fn shutdown(&mut self) {
        for worker in &mut self.workers {
            if let Some(mut child) = worker.child.take() {
                kill_session(&mut child);
            }
        }
        if let Some(mut child) = self.master.take() {
            stop_master(&mut child, Duration::from_secs(10));
        }
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for BuildbotMaster {
    fn drop(&mut self) {
        self.shutdown();
        // The database and the vhost drop themselves afterwards.
    }
}
