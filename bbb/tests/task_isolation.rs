//! `bbb up` keeps its secrets out of its tasks' reach. A task of the
//! in-process native worker hunts for the root access token (kept in the
//! data directory), a token in bbb's environment (`BBB_QUEUE_ACCESS_TOKEN`)
//! and a client's token in the configuration file, everywhere it can read:
//! its environment, every `/proc/*/environ` and `/proc/*/cmdline`, bbb's
//! open files (`/proc/<parent>/fd`), the data directory (SQLite databases,
//! kept token, artifacts, other tasks' logs) and the configuration file.
//!
//! Running as root (as here and in CI), tasks run as task users and find
//! nothing but the canary, a world-readable file the test leaves to show the
//! hunt works; on SQLite and on PostgreSQL. With `run_tasks_as =
//! "current-user"`, the same hunt finds every secret, which shows it looks in
//! the right places. Not as root, bbb says that tasks run with its rights.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bbb_testdb::{PgDatabase, TempDir};
use serde_json::{Value, json};
use taskcluster::{ClientBuilder, Credentials, Queue};

/// The hunt. The secrets come in `HUNT` with letters and digits rotated, so
/// that no process's environment or command line holds them in clear; the
/// task decodes them into a file in its own directory and reports `FOUND
/// <place>` for each place holding one, and `readable <path>` for the
/// protected files it can read.
const HUNTER: &str = r#"
set -u
cd "$HOME"
printf '%s\n' "$HUNT" | tr 'N-ZA-Mn-za-m5-90-4' 'A-Za-z0-9' > pattern
echo "uid $(id -u)"
hunt() { if grep -a -q -F -f pattern "$1" 2>/dev/null; then echo "FOUND $1"; fi; }
env > environment
hunt environment
read=0
for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do
  if cat "$f" >/dev/null 2>&1; then read=$((read+1)); hunt "$f"; fi
done
echo "proc files read: $read"
if ls "/proc/$PPID/fd" >/dev/null 2>&1; then echo "parent fds: listed"; else echo "parent fds: denied"; fi
for f in /proc/$PPID/fd/*; do if [ -f "$f" ]; then hunt "$f"; fi; done
for f in "$CONFIG" "$CANARY" "$DATA/root-access-token" "$DATA/queue.sqlite" "$DATA/queue.sqlite-wal" "$DATA/bridge-state.sqlite" "$DATA/bridge-state.sqlite-wal"; do
  if cat "$f" >/dev/null 2>&1; then echo "readable $f"; fi
  hunt "$f"
done
grep -r -a -l -F -f pattern --exclude-dir="$(basename "$HOME")" "$DATA" 2>/dev/null | sed 's/^/FOUND /'
if ls "$DATA" >/dev/null 2>&1; then echo "data dir: listed"; else echo "data dir: denied"; fi
echo "hunt over"
"#;

/// Rotates letters by 13 and digits by 5 (its own inverse for `tr`).
fn rotate(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' => (((c as u8 - b'a') + 13) % 26 + b'a') as char,
            'A'..='Z' => (((c as u8 - b'A') + 13) % 26 + b'A') as char,
            '0'..='9' => (((c as u8 - b'0') + 5) % 10 + b'0') as char,
            other => other,
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

struct Up {
    child: Child,
    root_url: String,
    root_token: String,
    log: PathBuf,
}

impl Up {
    /// `bbb up` on a free port with `data` as data directory and `config`.
    async fn start(dir: &Path, config: &Path, env: &[(&str, &str)]) -> Up {
        let port = free_port();
        let log = dir.join("up.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bbb"));
        cmd.arg("--config")
            .arg(config)
            .args(["up", "--no-demo", "--data-dir"])
            .arg(dir.join("data"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (key, _) in std::env::vars() {
            if key.starts_with("BBB_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("BBB_LISTEN", format!("127.0.0.1:{port}"))
            .env("BBB_LOG", "info,sqlx=warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start bbb up");
        let root_url = format!("http://127.0.0.1:{port}");
        let token_file = dir.join("data").join("root-access-token");
        let give_up = Instant::now() + Duration::from_secs(60);
        let root_token = loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "bbb up exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let token = std::fs::read_to_string(&token_file).unwrap_or_default();
            if !token.trim().is_empty() {
                let q = Queue::new(ClientBuilder::new(&root_url)).unwrap();
                if q.ping().await.is_ok() {
                    break token.trim().to_owned();
                }
            }
            assert!(
                Instant::now() < give_up,
                "bbb up did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Up {
            child,
            root_url,
            root_token,
            log,
        }
    }

    fn queue(&self) -> Queue {
        Queue::new(
            ClientBuilder::new(&self.root_url)
                .credentials(Credentials::new("root", &self.root_token)),
        )
        .unwrap()
    }

    /// Runs a task on the native worker; returns its backing log.
    async fn run(&self, payload: Value) -> String {
        let q = self.queue();
        let task_id = bbb_queue::validate::slugid();
        let at = |s: i64| bbb_queue::time::fmt_ms(chrono::Utc::now().timestamp_millis() + s * 1000);
        q.createTask(
            &task_id,
            &json!({
                "taskQueueId": "bbb/native",
                "created": at(0),
                "deadline": at(600),
                "expires": at(3600),
                "payload": payload,
                "metadata": {"name": "hunt", "description": "looks for secrets", "owner": "tests@example.com", "source": "https://example.com/tests"},
            }),
        )
        .await
        .unwrap();
        let give_up = Instant::now() + Duration::from_secs(120);
        loop {
            let s = q.status(&task_id).await.unwrap();
            let state = s["status"]["state"].as_str().unwrap_or_default().to_owned();
            if state == "completed" || state == "failed" || state == "exception" {
                break;
            }
            assert!(Instant::now() < give_up, "the task did not finish: {s}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let url = q
            .getLatestArtifact_signed_url(
                &task_id,
                "public/logs/live_backing.log",
                Duration::from_secs(600),
            )
            .unwrap();
        let log = reqwest_tc::get(&url).await.unwrap().text().await.unwrap();
        assert!(log.contains("Result: completed"), "{log}");
        log
    }

    fn stop(mut self) -> String {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// What one hunt saw.
struct Hunt {
    log: String,
    found: Vec<String>,
    readable: Vec<String>,
    config: PathBuf,
    canary: PathBuf,
    data: PathBuf,
    bbb_log: String,
    _dir: TempDir,
}

/// Starts `bbb up` in a fresh directory (with `run_tasks_as` when given and
/// the queue on `database_url` when given) and runs the hunt.
async fn hunt(run_tasks_as: Option<&str>, database_url: Option<&str>) -> Hunt {
    let dir = TempDir::new("bbb-isolation");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let env_secret = format!("env-{}", bbb_queue::server::random_token());
    let config_secret = format!("config-{}", bbb_queue::server::random_token());
    let config = dir.path().join("bbb.toml");
    let worker = run_tasks_as
        .map(|m| format!("[worker]\nrun_tasks_as = \"{m}\"\n"))
        .unwrap_or_default();
    std::fs::write(
        &config,
        format!(
            "{worker}[[auth.clients]]\nclient_id = \"config-client\"\naccess_token = \"{config_secret}\"\nscopes = []\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let canary = dir.path().join("canary.txt");
    std::fs::write(&canary, format!("{config_secret}\n")).unwrap();
    std::fs::set_permissions(&canary, std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut env = vec![("BBB_QUEUE_ACCESS_TOKEN", env_secret.as_str())];
    if let Some(url) = database_url {
        env.push(("BBB_DATABASE_URL", url));
    }
    let up = Up::start(dir.path(), &config, &env).await;
    let data = dir.path().join("data");
    let secrets = [up.root_token.as_str(), &env_secret, &config_secret]
        .iter()
        .map(|s| rotate(s))
        .collect::<Vec<_>>()
        .join("\n");
    let log = up
        .run(json!({
            "command": [["sh", "-c", HUNTER]],
            "maxRunTime": 300,
            "env": {
                "HUNT": secrets,
                "CONFIG": config.display().to_string(),
                "CANARY": canary.display().to_string(),
                "DATA": data.display().to_string(),
            }
        }))
        .await;
    let bbb_log = up.stop();
    assert!(log.contains("\nhunt over\n"), "{log}");
    let lines = |prefix: &str| {
        log.lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    Hunt {
        found: lines("FOUND "),
        readable: lines("readable "),
        log,
        config,
        canary,
        data,
        bbb_log,
        _dir: dir,
    }
}

/// As root, the task finds nothing but the canary.
async fn task_users_find_no_secret(database_url: Option<&str>) {
    let h = hunt(None, database_url).await;
    if !is_root() {
        assert!(
            h.bbb_log.contains("tasks run as the worker's own user"),
            "{}",
            h.bbb_log
        );
        assert!(h.log.contains("runs as the worker's own user"), "{}", h.log);
        return;
    }
    let canary = h.canary.display().to_string();
    assert_eq!(h.found, vec![canary.clone()], "{}", h.log);
    assert_eq!(h.readable, vec![canary], "{}", h.log);
    assert_ne!(h.log.lines().find(|l| l.starts_with("uid ")), Some("uid 0"));
    for (line, expected) in [("parent fds: ", "denied"), ("data dir: ", "denied")] {
        let seen = h.log.lines().find_map(|l| l.strip_prefix(line));
        assert_eq!(seen, Some(expected), "{}", h.log);
    }
    // The hunt read the environment and command line of many processes.
    let read: usize = h
        .log
        .lines()
        .find_map(|l| l.strip_prefix("proc files read: "))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(read > 10, "{}", h.log);
    // What bbb made private.
    assert_eq!(mode(&h.data), 0o711);
    assert_eq!(mode(&h.data.join("root-access-token")), 0o600);
    assert_eq!(mode(&h.data.join("bridge-state.sqlite")), 0o600);
    assert_eq!(mode(&h.data.join("artifacts")), 0o700);
    if database_url.is_none() {
        assert_eq!(mode(&h.data.join("queue.sqlite")), 0o600);
    }
    assert_eq!(mode(&h.config), 0o600);
    assert!(
        h.bbb_log
            .contains("the configuration file was readable by other users"),
        "{}",
        h.bbb_log
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_users_find_no_secret_sqlite() {
    task_users_find_no_secret(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_users_find_no_secret_postgres() {
    let db = PgDatabase::create("bbb_isolation").await.unwrap();
    task_users_find_no_secret(Some(db.url())).await;
}

/// With the worker's own rights, the same hunt finds every secret: the
/// token in bbb's environment, the kept root token and the configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hunt_finds_the_secrets_of_the_current_user() {
    let h = hunt(Some("current-user"), None).await;
    assert!(h.log.contains("runs as the worker's own user"), "{}", h.log);
    assert!(
        h.bbb_log.contains("tasks run as the worker's own user"),
        "{}",
        h.bbb_log
    );
    let found = |needle: &str| h.found.iter().any(|f| f.contains(needle));
    assert!(found("/environ"), "{}", h.log);
    assert!(found("root-access-token"), "{}", h.log);
    assert!(found(&h.config.display().to_string()), "{}", h.log);
    assert!(found(&h.canary.display().to_string()), "{}", h.log);
    assert!(
        h.readable
            .contains(&h.data.join("root-access-token").display().to_string()),
        "{}",
        h.log
    );
    // The configuration keeps its mode: tasks run as its owner anyway.
    assert_eq!(mode(&h.config), 0o644);
}
