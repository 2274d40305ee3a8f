//! The `[ci]` section of the configuration file: how often to poll, where to
//! keep fetched revisions, and the repositories (`[[ci.repositories]]`).

use bbb_envlayer::Var;
use bbb_secret::{Secret, SecretUrl};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How the CI service runs and which repositories it starts with. Every key
/// has a default that works on one machine.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CiConfig {
    /// How often each git repository is polled, in milliseconds.
    pub poll_interval_ms: u64,
    /// The longest wait between attempts after polls or decisions failed, in
    /// milliseconds (the wait doubles from `poll_interval_ms` up to this).
    pub max_backoff_ms: u64,
    /// How often the pushes not yet handled are looked for, in milliseconds
    /// (a push this process records is handled at once).
    pub handle_interval_ms: u64,
    /// Where bare clones of the repositories are kept, to read files at a
    /// revision (default: `bbb-ci` in the system's temporary directory).
    pub cache_dir: Option<PathBuf>,
    /// The repositories written to the database when the service starts
    /// (those the API made are kept as they are).
    pub repositories: Vec<RepositoryConfig>,
    /// The action permissions the in-tree action hooks are made for, in
    /// every trust domain and level (taskgraph's default is `generic`).
    pub action_permissions: Vec<String>,
    /// How long the action hooks of a `.taskcluster.yml` no followed branch
    /// has any more are kept, in days since it was last seen.
    pub action_hook_retention_days: u64,
    /// How often the action and cron hooks and their roles are brought in
    /// step with the repositories, in milliseconds (also at once after a
    /// change through the API or a decided push).
    pub hooks_sync_interval_ms: u64,
    /// The AMQP broker whose `hgpushes_exchange` tells of Mercurial pushes
    /// (Pulse); without it no such messages are consumed.
    pub hgpushes_amqp_url: Option<SecretUrl>,
    /// The exchange Mercurial servers publish pushes on, in the
    /// `exchange/hgpushes/v2` format.
    pub hgpushes_exchange: String,
    /// The durable queue bbb consumes `hgpushes_exchange` through (bound to
    /// every routing key); its bad messages go to `<queue>.parked`.
    pub hgpushes_queue: String,
}

impl Default for CiConfig {
    fn default() -> Self {
        CiConfig {
            poll_interval_ms: 60_000,
            max_backoff_ms: 15 * 60_000,
            handle_interval_ms: 5_000,
            cache_dir: None,
            repositories: Vec::new(),
            action_permissions: vec!["generic".into()],
            action_hook_retention_days: 60,
            hooks_sync_interval_ms: 5 * 60_000,
            hgpushes_amqp_url: None,
            hgpushes_exchange: "exchange/hgpushes/v2".into(),
            hgpushes_queue: "queue/bbb/hgpushes".into(),
        }
    }
}

impl CiConfig {
    /// The `BBB_CI_*` variables that override the file (`bbb --help` lists
    /// them from here).
    pub const ENV: &'static [Var<CiConfig>] = &[
        Var::new(
            "BBB_CI_POLL_INTERVAL_MS",
            "how often each repository is polled, ms (poll_interval_ms)",
            |c, v| positive(&mut c.poll_interval_ms, v),
        ),
        Var::new(
            "BBB_CI_MAX_BACKOFF_MS",
            "longest wait after failed polls or decisions, ms (max_backoff_ms)",
            |c, v| positive(&mut c.max_backoff_ms, v),
        ),
        Var::new(
            "BBB_CI_HANDLE_INTERVAL_MS",
            "how often pushes recorded elsewhere are looked for, ms (handle_interval_ms)",
            |c, v| positive(&mut c.handle_interval_ms, v),
        ),
        Var::new(
            "BBB_CI_CACHE_DIR",
            "where bare clones are kept (cache_dir)",
            |c, v| {
                c.cache_dir = Some(PathBuf::from(v));
                Ok(())
            },
        ),
        Var::secret(
            "BBB_CI_HGPUSHES_AMQP_URL",
            "AMQP URL of the broker whose exchange tells of Mercurial pushes (hgpushes_amqp_url; \
             default: none, no such messages are consumed)",
            |c, v| {
                c.hgpushes_amqp_url = Some(SecretUrl::new(v));
                Ok(())
            },
        ),
        Var::new(
            "BBB_CI_HGPUSHES_EXCHANGE",
            "the exchange of Mercurial push messages (hgpushes_exchange; default \
             exchange/hgpushes/v2)",
            |c, v| {
                c.hgpushes_exchange = v.to_owned();
                Ok(())
            },
        ),
        Var::new(
            "BBB_CI_HGPUSHES_QUEUE",
            "the queue Mercurial push messages are consumed through (hgpushes_queue; default \
             queue/bbb/hgpushes)",
            |c, v| {
                c.hgpushes_queue = v.to_owned();
                Ok(())
            },
        ),
    ];

    /// Apply the `BBB_CI_*` variables of the environment.
    pub fn apply_env(&mut self) -> Result<(), String> {
        self.apply_vars(bbb_envlayer::from_env)
    }

    /// Apply the `BBB_CI_*` overrides `lookup` gives; empty values are ignored.
    pub fn apply_vars(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        bbb_envlayer::apply(Self::ENV, self, lookup).map_err(|e| e.to_string())
    }

    /// The directory of bare clones.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("bbb-ci"))
    }
}

/// Sets `slot` to the value read as a number above zero.
fn positive(slot: &mut u64, value: &str) -> Result<(), String> {
    match bbb_envlayer::number(value)? {
        0 => Err("not a positive number".to_owned()),
        n => {
            *slot = n;
            Ok(())
        }
    }
}

/// Which version-control system a repository uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Git: polled with `git ls-remote`, or told by GitHub-style push webhooks.
    Git,
    /// Mercurial: its pushlog (`json-pushes`) polled, or read when an
    /// `exchange/hgpushes/v2` message tells of a push.
    Hg,
}

impl Kind {
    /// `git` or `hg`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Git => "git",
            Kind::Hg => "hg",
        }
    }

    /// The kind `s` names.
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "git" => Some(Kind::Git),
            "hg" => Some(Kind::Hg),
            _ => None,
        }
    }

    /// The `tasks_for` of a push to a repository of this kind.
    pub fn tasks_for(self) -> &'static str {
        match self {
            Kind::Git => "github-push",
            Kind::Hg => "hg-push",
        }
    }
}

/// Who schedules a branch's jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Buildbot's schedulers schedule it; bbb records its pushes only.
    Buildbot,
    /// bbb creates decision tasks too, for comparison; Buildbot stays the
    /// source of truth.
    Shadow,
    /// bbb creates decision tasks; Buildbot's schedulers are off for it.
    Taskgraph,
}

impl Mode {
    /// `buildbot`, `shadow` or `taskgraph`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Buildbot => "buildbot",
            Mode::Shadow => "shadow",
            Mode::Taskgraph => "taskgraph",
        }
    }

    /// The mode `s` names.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "buildbot" => Some(Mode::Buildbot),
            "shadow" => Some(Mode::Shadow),
            "taskgraph" => Some(Mode::Taskgraph),
            _ => None,
        }
    }

    /// Whether pushes on a branch in this mode get decision tasks.
    pub fn decides(self) -> bool {
        self != Mode::Buildbot
    }
}

/// One repository of `[[ci.repositories]]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// The project name (`repository.project` in `.taskcluster.yml`), unique.
    pub project: String,
    /// The public URL (`https://host/path`): `repository.url`, and the
    /// repository's role `repo:<host>/<path>:branch:<branch>`.
    pub url: String,
    /// Where to fetch from when not `url` (a mirror, a local path):
    /// `repository.clone_url`.
    #[serde(default)]
    pub clone_url: Option<String>,
    /// `git` or `hg`.
    pub kind: Kind,
    /// The trust domain (`gecko`, `comm`, ...).
    pub trust_domain: String,
    /// The SCM level, 1 to 3.
    pub level: u8,
    /// Whether to poll the remote (default true; webhooks work either way).
    #[serde(default = "yes")]
    pub poll: bool,
    /// The secret GitHub-style push webhooks are signed with; without one,
    /// webhooks are refused.
    #[serde(default)]
    pub webhook_secret: Option<Secret<String>>,
    /// The branches bbb follows and their modes.
    #[serde(default)]
    pub branches: Vec<BranchConfig>,
}

fn yes() -> bool {
    true
}

/// A branch and its mode.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BranchConfig {
    /// The branch's name (`main`, `release/1.0`).
    pub name: String,
    /// Who schedules it.
    pub mode: Mode,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_section_reads() {
        let cfg: CiConfig = toml::from_str(
            r#"
            poll_interval_ms = 500
            [[repositories]]
            project = "proj"
            url = "https://git.example/org/proj"
            kind = "git"
            trust_domain = "bbbtest"
            level = 1
            webhook_secret = "s3cret"
            branches = [{ name = "main", mode = "taskgraph" }, { name = "old", mode = "buildbot" }]
            "#,
        )
        .unwrap();
        assert_eq!(cfg.poll_interval_ms, 500);
        let r = &cfg.repositories[0];
        assert_eq!(r.kind, Kind::Git);
        assert!(r.poll);
        assert_eq!(r.webhook_secret.as_ref().unwrap().expose(), "s3cret");
        assert_eq!(format!("{:?}", r.webhook_secret), "Some(***)");
        assert_eq!(r.branches[1].mode, Mode::Buildbot);
        let mut over = cfg.clone();
        over.apply_vars(|name| match name {
            "BBB_CI_POLL_INTERVAL_MS" => Some("250".into()),
            "BBB_CI_CACHE_DIR" => Some("/var/cache/bbb-ci".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(over.poll_interval_ms, 250);
        assert_eq!(over.cache_dir(), PathBuf::from("/var/cache/bbb-ci"));
        assert_eq!(over.max_backoff_ms, cfg.max_backoff_ms);
        let zero = cfg
            .clone()
            .apply_vars(|n| (n == "BBB_CI_POLL_INTERVAL_MS").then(|| "0".into()));
        assert!(zero.is_err());
        let bad = toml::from_str::<CiConfig>(
            "[[repositories]]\nproject = 'p'\nurl = 'u'\nkind = 'svn'\ntrust_domain = 't'\nlevel = 1\n",
        );
        assert!(bad.is_err());
    }
}
