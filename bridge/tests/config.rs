//! `bbb config --print` shows the effective configuration of every section
//! with every secret masked, whether it came from the file or the
//! environment, including URLs too malformed to parse.

use std::process::Command;

/// Every secret the configuration below holds, none of which may be printed.
const SECRETS: &[&str] = &[
    "root-token",
    "client-token",
    "s3-key",
    "queue-db-pw",
    "mq-pw",
    "worker-token",
    "bridge-token",
    "state-db-pw",
    "sched/db@pw",
    "rest-pw",
    "selfserve-pw",
];

#[test]
fn config_print_masks_every_secret() {
    let dir = std::env::temp_dir().join(format!("bbb-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bbb.toml");
    std::fs::write(
        &file,
        r#"
[queue]
root_access_token = "root-token"
[queue.blob]
s3_secret_access_key = "s3-key"

[auth]
clients = [{ client_id = "ci", access_token = "client-token", scopes = ["*"] }]

[bridge]
selfserve_url = "http://bbb:selfserve-pw@buildapi/self-serve"
"#,
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bbb"));
    // Only what the test sets: nothing from the caller's environment.
    for (key, _) in std::env::vars() {
        if key.starts_with("BBB_") {
            cmd.env_remove(key);
        }
    }
    let output = cmd
        .arg("--config")
        .arg(&file)
        .args(["config", "--print"])
        .env("BBB_DATABASE_URL", "postgres://bbb:queue-db-pw@db/queue")
        .env("BBB_AMQP_URL", "amqp://bbb:mq-pw@mq/%2f")
        .env("BBB_QUEUE_ACCESS_TOKEN", "worker-token")
        .env(
            "BBB_STATE_DATABASE_URL",
            "postgres://bbb:state-db-pw@db/state",
        )
        // Unparsable: a '/' and an '@' in the password, unescaped.
        .env("BBB_SCHEDULERDB_URL", "mysql://bbb:sched/db@pw@db/sched")
        .env("BBB_BUILDBOT_USER", "bbb")
        .env("BBB_BUILDBOT_PASSWORD", "rest-pw")
        .output()
        .expect("run bbb config --print");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for secret in SECRETS {
        assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
        assert!(!stderr.contains(secret), "{secret} logged:\n{stderr}");
    }
    // The rest of each setting is shown, and each secret's place is marked.
    for shown in [
        "database_url = \"postgres://bbb:***@db/queue\"",
        "amqp_url = \"amqp://bbb:***@mq/%2f\"",
        "root_access_token = \"***\"",
        "s3_secret_access_key = \"***\"",
        "state_database_url = \"postgres://bbb:***@db/state\"",
        "schedulerdb_url = \"mysql://bbb:***@db/sched\"",
        "selfserve_url = \"http://bbb:***@buildapi/self-serve\"",
        "buildbot_password = \"***\"",
        "client_id = \"ci\"",
    ] {
        assert!(stdout.contains(shown), "{shown} missing:\n{stdout}");
    }
    // The worker's and the bridge's queue token (both BBB_QUEUE_ACCESS_TOKEN),
    // and the static client's.
    assert!(
        stdout.matches("access_token = \"***\"").count() >= 3,
        "{stdout}"
    );
}
