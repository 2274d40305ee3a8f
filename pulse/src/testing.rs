//! Helpers for tests that need a real RabbitMQ broker on this machine.
//!
//! Each test gets its own vhost from [`fresh_vhost`], so tests can run in
//! parallel without seeing each other's queues. Vhosts are created and
//! deleted with `rabbitmqctl`, which must be on `PATH` and allowed to talk to
//! the local node. The broker URL defaults to
//! `amqp://guest:guest@127.0.0.1:5672` and can be changed with the
//! `BBB_TEST_AMQP_BASE` environment variable (no trailing slash, no vhost).
//!
//! Tests that stop the broker take the broker lock exclusively through
//! [`exclusive_broker`]; every [`TestVhost`] from [`fresh_vhost`] holds it
//! shared. So on one machine, an outage test waits until no other test (of
//! any process) is using the broker, and other tests wait while it runs.

use std::fs::File;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

const DEFAULT_BASE: &str = "amqp://guest:guest@127.0.0.1:5672";
const USER_ENV: &str = "BBB_TEST_AMQP_USER";

static VHOST_SEQ: AtomicU64 = AtomicU64::new(0);

/// A vhost created for one test. It is deleted on drop (or explicitly with
/// [`TestVhost::delete`]).
#[derive(Debug)]
pub struct TestVhost {
    /// AMQP URL of the vhost, with credentials.
    pub url: String,
    /// The vhost name.
    pub name: String,
    delete_on_drop: bool,
    _lock: Option<File>,
}

impl TestVhost {
    /// Deletes the vhost now, reporting failures.
    pub async fn delete(mut self) -> anyhow::Result<()> {
        self.delete_on_drop = false;
        rabbitmqctl(&["delete_vhost", &self.name]).await
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        if self.delete_on_drop {
            delete_vhost_blocking(&self.name);
        }
    }
}

fn delete_vhost_blocking(name: &str) {
    let status = std::process::Command::new("rabbitmqctl")
        .args(["-q", "delete_vhost", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        tracing::warn!(vhost = name, "could not delete test vhost");
    }
}

fn base_url() -> String {
    std::env::var("BBB_TEST_AMQP_BASE").unwrap_or_else(|_| DEFAULT_BASE.to_owned())
}

/// The user that gets permissions on test vhosts: `BBB_TEST_AMQP_USER`, else
/// the user in the base URL, else `guest`.
fn test_user(base: &str) -> String {
    if let Ok(user) = std::env::var(USER_ENV) {
        return user;
    }
    base.split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .map(|(userinfo, _)| userinfo.split(':').next().unwrap_or("guest").to_owned())
        .unwrap_or_else(|| "guest".to_owned())
}

async fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let output = tokio::process::Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running rabbitmqctl")?;
    if !output.status.success() {
        bail!(
            "rabbitmqctl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn lock_path() -> PathBuf {
    std::env::temp_dir().join("bbb-test-rabbitmq-broker.lock")
}

async fn take_lock(exclusive: bool) -> anyhow::Result<File> {
    tokio::task::spawn_blocking(move || {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_path())
            .context("opening the broker lock file")?;
        if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        }
        .context("locking the broker lock file")?;
        Ok(file)
    })
    .await
    .context("joining the lock task")?
}

async fn create_vhost(prefix: &str) -> anyhow::Result<(String, String)> {
    let clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let name = format!(
        "test-{clean}-{}-{}-{nanos:x}",
        std::process::id(),
        VHOST_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    rabbitmqctl(&["add_vhost", &name]).await?;
    let base = base_url();
    let user = test_user(&base);
    if let Err(error) =
        rabbitmqctl(&["set_permissions", "-p", &name, &user, ".*", ".*", ".*"]).await
    {
        delete_vhost_blocking(&name);
        return Err(error);
    }
    // Only [a-z0-9-] in the name, so it needs no percent-encoding.
    let url = format!("{base}/{name}");
    Ok((name, url))
}

/// Creates a fresh vhost whose name starts with `test-<prefix>`, grants the
/// test user full permissions on it, and returns its URL. The vhost is
/// deleted when the returned value is dropped. Holds the broker lock shared
/// meanwhile (see the module docs).
pub async fn fresh_vhost(prefix: &str) -> anyhow::Result<TestVhost> {
    let lock = take_lock(false).await?;
    let (name, url) = create_vhost(prefix).await?;
    Ok(TestVhost {
        url,
        name,
        delete_on_drop: true,
        _lock: Some(lock),
    })
}

/// Exclusive control of the local broker, for tests that stop and restart
/// it. Dropping it starts the broker again if it is stopped (even when the
/// test panicked), waits until it is up, then deletes the vhosts it created.
#[derive(Debug)]
pub struct ExclusiveBroker {
    stopped: bool,
    vhosts: Vec<String>,
    _lock: File,
}

/// Takes the broker lock exclusively, waiting for every other holder.
pub async fn exclusive_broker() -> anyhow::Result<ExclusiveBroker> {
    let lock = take_lock(true).await?;
    Ok(ExclusiveBroker {
        stopped: false,
        vhosts: Vec::new(),
        _lock: lock,
    })
}

impl ExclusiveBroker {
    /// Like [`fresh_vhost`], but without the shared lock (this guard already
    /// holds it exclusively); the vhost is deleted when the guard is dropped,
    /// after the broker is running again.
    pub async fn fresh_vhost(&mut self, prefix: &str) -> anyhow::Result<TestVhost> {
        let (name, url) = create_vhost(prefix).await?;
        self.vhosts.push(name.clone());
        Ok(TestVhost {
            url,
            name,
            delete_on_drop: false,
            _lock: None,
        })
    }

    /// Stops the RabbitMQ application (`rabbitmqctl stop_app`): every client
    /// connection is closed and new ones are refused.
    pub async fn stop_app(&mut self) -> anyhow::Result<()> {
        self.stopped = true;
        rabbitmqctl(&["stop_app"]).await
    }

    /// Starts the RabbitMQ application again and waits until it accepts
    /// connections.
    pub async fn start_app(&mut self) -> anyhow::Result<()> {
        rabbitmqctl(&["start_app"]).await?;
        rabbitmqctl(&["await_startup", "--timeout", "60"]).await?;
        self.stopped = false;
        Ok(())
    }
}

impl Drop for ExclusiveBroker {
    fn drop(&mut self) {
        if self.stopped {
            for args in [
                &["-q", "start_app"][..],
                &["-q", "await_startup", "--timeout", "60"][..],
            ] {
                let status = std::process::Command::new("rabbitmqctl")
                    .args(args)
                    .stdout(Stdio::null())
                    .status();
                if !matches!(status, Ok(s) if s.success()) {
                    tracing::error!(?args, "could not restart the broker");
                }
            }
            // Give the listener a moment after the application reports ready.
            std::thread::sleep(Duration::from_millis(200));
        }
        for vhost in &self.vhosts {
            delete_vhost_blocking(vhost);
        }
    }
}
