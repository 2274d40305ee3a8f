//! The configuration as the binary shows it: `bbb config --print` prints the
//! effective configuration of every section with every secret masked,
//! whether it came from the file or the environment, including URLs too
//! malformed to parse; and each command's `--help` lists every environment
//! variable of the sections it reads.

use std::process::{Command, Output};

use bbb_bridge::BridgeConfig;
use bbb_hooks::HooksConfig;
use bbb_queue::QueueConfig;
use bbb_workers::WorkerConfig;

/// `bbb` with `args`, with only the `BBB_*` variables of `env`: nothing from
/// the caller's environment.
fn bbb(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bbb"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BBB_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run bbb")
}

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
    "builders-pw",
    "webhook-pw",
    "hg-pw",
    "hook-pw",
    "migration-pw",
    "c2FsdHNhbHQ$aGFzaGhh",
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

[[ci.repositories]]
project = "p"
url = "https://git.example/org/p"
kind = "git"
trust_domain = "t"
level = 1
webhook_secret = "webhook-pw"

[bridge]
selfserve_url = "http://bbb:selfserve-pw@buildapi/self-serve"
builders_url = "http://lists:builders-pw@buildapi/builders@all.json"

[[ci.repositories]]
project = "proj"
url = "https://hg.example/proj"
kind = "hg"
trust_domain = "t"
level = 1
webhook_secret = "hook-pw"
[login]
session_expires = "8 hours"
users = [{ name = "alice", password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA" }]
proxy = { header = "X-Forwarded-User", trusted = ["127.0.0.1"] }

[migration]
revisions = 20

[[migration.masters]]
name = "bb4-try"
buildbot_kind = "rest"
buildbot_url = "http://bb4-try:8010/api/v2"
buildbot_user = "bbb"
buildbot_password = "migration-pw"
"#,
    )
    .unwrap();
    let output = bbb(
        &["--config", file.to_str().unwrap(), "config", "--print"],
        &[
            ("BBB_DATABASE_URL", "postgres://bbb:queue-db-pw@db/queue"),
            ("BBB_AMQP_URL", "amqp://bbb:mq-pw@mq/%2f"),
            ("BBB_QUEUE_ACCESS_TOKEN", "worker-token"),
            (
                "BBB_STATE_DATABASE_URL",
                "postgres://bbb:state-db-pw@db/state",
            ),
            // Unparsable: a '/' and an '@' in the password, unescaped.
            ("BBB_SCHEDULERDB_URL", "mysql://bbb:sched/db@pw@db/sched"),
            ("BBB_BUILDBOT_URL", "http://bbb:rest-pw@bb:8010/api/v2"),
            ("BBB_BUILDBOT_USER", "bbb"),
            ("BBB_BUILDBOT_PASSWORD", "rest-pw"),
            ("BBB_CI_HGPUSHES_AMQP_URL", "amqp://hg:hg-pw@pulse/%2f"),
            ("BBB_CI_HGPUSHES_QUEUE", "queue/bbb/hg-test"),
            ("BBB_MIGRATION_POLL_INTERVAL_MS", "5000"),
        ],
    );
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
        // An '@' in the path is not part of the password, and stays.
        "builders_url = \"http://lists:***@buildapi/builders@all.json\"",
        "buildbot_url = \"http://bbb:***@bb:8010/api/v2\"",
        "buildbot_user = \"bbb\"",
        "buildbot_password = \"***\"",
        "client_id = \"ci\"",
        "webhook_secret = \"***\"",
        "trust_domain = \"t\"",
        "hgpushes_amqp_url = \"amqp://hg:***@pulse/%2f\"",
        "hgpushes_queue = \"queue/bbb/hg-test\"",
        // The [migration] section, the environment over the file.
        "[migration]",
        "revisions = 20",
        "poll_interval_ms = 5000",
        "name = \"bb4-try\"",
        // The [login] section: the hash masked, the rest shown.
        "password_hash = \"***\"",
        "name = \"alice\"",
        "header = \"X-Forwarded-User\"",
        "session_expires = \"8 hours\"",
    ] {
        assert!(stdout.contains(shown), "{shown} missing:\n{stdout}");
    }
    // The queue's and the bridge's broker.
    assert_eq!(
        stdout
            .matches("amqp_url = \"amqp://bbb:***@mq/%2f\"")
            .count(),
        2,
        "{stdout}"
    );
    // The worker's and the bridge's queue token (both BBB_QUEUE_ACCESS_TOKEN),
    // and the static client's.
    assert!(
        stdout.matches("access_token = \"***\"").count() >= 3,
        "{stdout}"
    );
}

#[test]
fn a_bad_variable_is_refused_by_name() {
    let output = bbb(
        &["config", "--print"],
        &[
            ("BBB_COMMIT_BATCH", "many"),
            ("BBB_QUEUE_ACCESS_TOKEN", "tok"),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("BBB_COMMIT_BATCH=\"many\": not a number"),
        "{stderr}"
    );
}

/// The names of the variables of a table.
fn names<C>(vars: &[bbb_envlayer::Var<C>]) -> Vec<&'static str> {
    vars.iter().map(|v| v.name).collect()
}

#[test]
fn every_variable_is_in_the_help_of_the_commands_that_read_it() {
    let queue = names(QueueConfig::ENV);
    let worker = names(WorkerConfig::ENV);
    let bridge = names(BridgeConfig::ENV);
    let hooks = names(HooksConfig::ENV);
    let ci = names(bbb_ci::CiConfig::ENV);
    let login = names(bbb_login::LoginConfig::ENV);
    // The [migration] section's (its table is the binary's own).
    let migration = [
        "BBB_MIGRATION_MAPPING_FILE",
        "BBB_MIGRATION_REVISIONS",
        "BBB_MIGRATION_POLL",
        "BBB_MIGRATION_POLL_INTERVAL_MS",
    ];
    let all: Vec<&str> = [
        &queue[..],
        &hooks[..],
        &ci[..],
        &worker[..],
        &bridge[..],
        &migration[..],
        &login[..],
    ]
    .concat();
    let queue_and_services: Vec<&str> =
        [&queue[..], &hooks[..], &ci[..], &migration[..], &login[..]].concat();
    let bridge_and_queue: Vec<&str> = [&queue[..], &bridge[..]].concat();
    for (command, vars) in [
        ("queue", &queue_and_services),
        ("worker", &worker),
        ("bridge", &bridge),
        ("tc-listener", &bridge),
        ("bb-listener", &bridge),
        ("reflector", &bridge),
        ("migrate", &bridge_and_queue),
        ("up", &all),
        ("config", &all),
    ] {
        let output = bbb(&[command, "--help"], &[]);
        assert!(output.status.success(), "bbb {command} --help failed");
        let help = String::from_utf8_lossy(&output.stdout);
        for var in vars {
            // One line per variable: its name, then its description.
            assert!(
                help.lines()
                    .any(|line| line.trim_start().starts_with(&format!("{var} "))),
                "{var} missing from bbb {command} --help:\n{help}"
            );
        }
    }
    let output = bbb(&["--help"], &[]);
    let help = String::from_utf8_lossy(&output.stdout);
    for var in ["BBB_CONFIG", "BBB_LOG", "BBB_LOG_FORMAT"] {
        assert!(help.contains(var), "{var} missing from bbb --help:\n{help}");
    }
}
