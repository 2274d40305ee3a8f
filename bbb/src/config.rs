//! The configuration file: one TOML document with a section per role, plus the
//! `BBB_*` environment overrides each role documents.

use anyhow::Context;
use bbb_bridge::BridgeConfig;
use bbb_hooks::HooksConfig;
use bbb_queue::QueueConfig;
use bbb_workers::WorkerConfig;

use crate::demo_repo::DemoRepository;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What `bbb up` runs besides the queue and the worker, for its `--help`.
const UP_HELP: &str = "\
`bbb up` also runs the bridge (TC listener, Buildbot listener, reflector) on the task
queue buildbot-bridge/buildbot-bridge against an in-memory sandbox Buildbot master with
the builders linux.build, linux.test, win.build and win.test, and submits one demo task.
Unless [ci] names repositories, the CI service follows a demo git repository it creates in
the data directory (demo.git, with a clone in demo/): each push to its main branch gets a
decision task and a graph; at start a demo push shows one (skip both demos with --no-demo).
A [bridge] section in --config may point it at a real master.
Without BBB_ROOT_ACCESS_TOKEN, the root client's token is generated once and kept in the
data directory.";

/// The variables of [`QueueConfig::ENV`], for `--help`.
pub fn queue_env_help() -> String {
    bbb_envlayer::help(
        "Environment (overrides the [queue] section of --config):",
        QueueConfig::ENV,
    )
}

/// The variables of [`WorkerConfig::ENV`], for `--help`.
pub fn worker_env_help() -> String {
    bbb_envlayer::help(
        "Environment (overrides the [worker] section of --config):",
        WorkerConfig::ENV,
    )
}

/// The variables of [`BridgeConfig::ENV`], for `--help`.
pub fn bridge_env_help() -> String {
    bbb_envlayer::help(
        "Environment (overrides the [bridge] section of --config):",
        BridgeConfig::ENV,
    )
}

/// The variables of [`HooksConfig::ENV`], for `--help`.
pub fn hooks_env_help() -> String {
    bbb_envlayer::help(
        "Environment (overrides the [hooks] section of --config):",
        HooksConfig::ENV,
    )
}

/// The variables of [`bbb_ci::CiConfig::ENV`], for `--help`.
pub fn ci_env_help() -> String {
    bbb_envlayer::help(
        "Environment (overrides the [ci] section of --config):",
        bbb_ci::CiConfig::ENV,
    )
}

/// The variables of [`MigrationSection::ENV`](crate::migration::MigrationSection::ENV), for `--help`.
pub fn migration_env_help() -> String {
    bbb_envlayer::help(
        "Environment (overrides the [migration] section of --config):",
        crate::migration::MigrationSection::ENV,
    )
}

/// The variables of [`bbb_login::LoginConfig::ENV`], for `--help`.
pub fn login_env_help() -> String {
    bbb_envlayer::help(
        "Environment (overrides the [login] section of --config):",
        bbb_login::LoginConfig::ENV,
    )
}

/// The variables of [`bbb_web::WebSection::ENV`], for `--help`.
pub fn web_env_help() -> String {
    bbb_envlayer::help(
        "Environment (overrides the [web] section of --config):",
        bbb_web::WebSection::ENV,
    )
}

/// `--help` of `bbb queue`: the queue's variables and those of the services
/// it serves beside it.
pub fn queue_and_services_env_help() -> String {
    [
        queue_env_help(),
        hooks_env_help(),
        ci_env_help(),
        migration_env_help(),
        login_env_help(),
        web_env_help(),
    ]
    .join("\n\n")
}

/// `--help` of `bbb migrate`, which reads the queue's and the bridge's
/// sections (their databases).
pub fn migrate_env_help() -> String {
    [queue_env_help(), bridge_env_help()].join("\n\n")
}

/// `--help` of the commands that read every section (`up`, `config`): the
/// variables of each.
pub fn all_env_help() -> String {
    [
        queue_env_help(),
        hooks_env_help(),
        ci_env_help(),
        worker_env_help(),
        bridge_env_help(),
        migration_env_help(),
        login_env_help(),
        web_env_help(),
    ]
    .join("\n\n")
}

/// `--help` of `bbb up`.
pub fn up_help() -> String {
    format!("{UP_HELP}\n\n{}", all_env_help())
}

/// The file as read: sections kept as TOML values so defaults apply per key.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[queue]`.
    pub queue: Option<toml::Table>,
    /// `[auth]`: clients and roles of the queue (same as `[queue.auth]`).
    pub auth: Option<toml::Table>,
    /// `[worker]`.
    pub worker: Option<toml::Table>,
    /// `[bridge]`.
    pub bridge: Option<toml::Table>,
    /// `[hooks]`.
    pub hooks: Option<toml::Table>,
    /// `[ci]`: repositories, push sources and decision tasks.
    pub ci: Option<toml::Table>,
    /// `[migration]`: the migration record and the legacy masters it polls.
    pub migration: Option<toml::Table>,
    /// `[login]`: users, the trusted proxy, OAuth2 clients.
    pub login: Option<toml::Table>,
    /// `[web]`: the web UI (the workers whose live logs it reads).
    pub web: Option<toml::Table>,
    /// The file it was read from.
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// What `bbb config --print` shows.
#[derive(Serialize)]
pub struct Printable {
    /// The queue section.
    pub queue: QueueConfig,
    /// The worker section.
    pub worker: WorkerConfig,
    /// The bridge section.
    pub bridge: BridgeConfig,
    /// The hooks section.
    pub hooks: HooksConfig,
    /// The CI section (repositories, push sources).
    pub ci: bbb_ci::CiConfig,
    /// The migration section.
    pub migration: crate::migration::MigrationSection,
    /// The sign-in section (password hashes masked).
    pub login: bbb_login::LoginConfig,
    /// The web UI's section.
    pub web: bbb_web::WebSection,
}

impl FileConfig {
    /// Read `path`, or nothing.
    pub fn load(path: Option<&Path>) -> anyhow::Result<FileConfig> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut file: FileConfig =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        file.path = Some(path.to_owned());
        Ok(file)
    }

    /// Makes the file readable by its owner only when tasks run as other OS
    /// users: it may hold access tokens. Changing its mode is logged; failing
    /// to is a warning, as the tasks could then read it.
    pub fn keep_from_tasks(&self) {
        let Some(path) = &self.path else {
            return;
        };
        match crate::private::restrict(path, 0o600) {
            Ok(Some(old)) => tracing::warn!(
                path = %path.display(),
                "the configuration file was readable by other users (mode {old:o}); it is now 0600, \
                 as tasks run as other users and it may hold secrets"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                path = %path.display(),
                error = %e,
                "cannot make the configuration file private: tasks may read the secrets in it"
            ),
        }
    }

    /// The queue's configuration: file, then environment.
    pub fn queue_config(&self) -> anyhow::Result<QueueConfig> {
        let mut table = self.queue.clone().unwrap_or_default();
        if let Some(auth) = &self.auth {
            table.insert("auth".into(), toml::Value::Table(auth.clone()));
        }
        let mut cfg: QueueConfig = toml::Value::Table(table)
            .try_into()
            .context("the [queue] section")?;
        cfg.apply_env()?;
        Ok(cfg)
    }

    /// The hooks service's configuration: file, then environment.
    pub fn hooks_config(&self) -> anyhow::Result<HooksConfig> {
        let table = self.hooks.clone().unwrap_or_default();
        let mut cfg: HooksConfig = toml::Value::Table(table)
            .try_into()
            .context("the [hooks] section")?;
        cfg.apply_env().map_err(anyhow::Error::msg)?;
        Ok(cfg)
    }

    /// The migration record's section: file, then environment.
    pub fn migration_section(&self) -> anyhow::Result<crate::migration::MigrationSection> {
        let table = self.migration.clone().unwrap_or_default();
        let mut cfg: crate::migration::MigrationSection = toml::Value::Table(table)
            .try_into()
            .context("the [migration] section")?;
        cfg.apply_env()?;
        Ok(cfg)
    }

    /// Sign-in's configuration (`[login]`): file, then environment, checked.
    pub fn login_config(&self) -> anyhow::Result<bbb_login::LoginConfig> {
        let table = self.login.clone().unwrap_or_default();
        let mut cfg: bbb_login::LoginConfig = toml::Value::Table(table)
            .try_into()
            .context("the [login] section")?;
        cfg.apply_env()?;
        cfg.validate().map_err(anyhow::Error::msg)?;
        Ok(cfg)
    }

    /// The web UI's section (`[web]`): file, then environment, checked.
    pub fn web_section(&self) -> anyhow::Result<bbb_web::WebSection> {
        let table = self.web.clone().unwrap_or_default();
        let mut cfg: bbb_web::WebSection = toml::Value::Table(table)
            .try_into()
            .context("the [web] section")?;
        cfg.apply_env()?;
        cfg.live_log_origins().map_err(anyhow::Error::msg)?;
        Ok(cfg)
    }

    /// The origins whose live logs the web UI reads (`[web]`
    /// `live_log_origins`), one shared list a worker in the same process adds
    /// its own to ([`bbb_web::LiveLogOrigins::allow`]).
    pub fn live_log_origins(&self) -> anyhow::Result<bbb_web::LiveLogOrigins> {
        self.web_section()?
            .live_log_origins()
            .map_err(anyhow::Error::msg)
    }

    /// Whether the file or the environment says who may sign in (users or
    /// a proxy); `bbb up` adds its own user only when nothing does.
    pub fn login_users_configured(&self) -> bool {
        std::env::var_os("BBB_LOGIN_USERS").is_some()
            || std::env::var_os("BBB_LOGIN_PROXY_HEADER").is_some()
            || self.login.as_ref().is_some_and(|l| {
                l.contains_key("users") || l.get("proxy").and_then(|p| p.get("header")).is_some()
            })
    }

    /// `bbb up`'s user as a layer below the file: `name` with the Argon2
    /// hash of `password`, and the role `login-identity:<name>` granting
    /// `scopes`, added to `[auth]`'s roles unless the file defines it.
    pub fn with_login_user(
        mut self,
        name: &str,
        password: &str,
        scopes: &[&str],
    ) -> anyhow::Result<FileConfig> {
        let hash = bbb_login::hash_password(password).map_err(anyhow::Error::msg)?;
        let mut user = toml::Table::new();
        user.insert("name".into(), name.into());
        user.insert("password_hash".into(), hash.into());
        self.login
            .get_or_insert_with(toml::Table::new)
            .insert("users".into(), toml::Value::Array(vec![user.into()]));
        let role_id = format!("login-identity:{name}");
        let roles = self
            .auth
            .get_or_insert_with(toml::Table::new)
            .entry("roles")
            .or_insert_with(|| toml::Value::Array(vec![]));
        if let Some(roles) = roles.as_array_mut()
            && !roles
                .iter()
                .any(|r| r.get("role_id").and_then(|v| v.as_str()) == Some(role_id.as_str()))
        {
            let mut role = toml::Table::new();
            role.insert("role_id".into(), role_id.into());
            role.insert(
                "scopes".into(),
                toml::Value::Array(scopes.iter().map(|s| (*s).into()).collect()),
            );
            roles.push(role.into());
        }
        Ok(self)
    }

    /// The CI service's configuration (`[ci]`, its `[[ci.repositories]]`):
    /// file, then environment.
    pub fn ci_config(&self) -> anyhow::Result<bbb_ci::CiConfig> {
        let table = self.ci.clone().unwrap_or_default();
        let mut cfg: bbb_ci::CiConfig = toml::Value::Table(table)
            .try_into()
            .context("the [ci] section")?;
        cfg.apply_env().map_err(anyhow::Error::msg)?;
        Ok(cfg)
    }

    /// The worker's configuration: file, then environment, checked.
    pub fn worker_config(&self) -> anyhow::Result<WorkerConfig> {
        let cfg = self.worker_config_unchecked()?;
        cfg.validate()
            .map_err(|e| anyhow::anyhow!("worker configuration: {e}"))?;
        Ok(cfg)
    }

    /// The bridge's configuration: file, then environment (not yet validated:
    /// `bbb up` fills in the queue and the master).
    pub fn bridge_config(&self) -> anyhow::Result<BridgeConfig> {
        let table = self.bridge.clone().unwrap_or_default();
        let mut cfg: BridgeConfig = toml::Value::Table(table)
            .try_into()
            .context("the [bridge] section")?;
        cfg.apply_env()?;
        Ok(cfg)
    }

    /// `bbb up`'s embedded defaults as a layer below the file: every key the
    /// file leaves out gets its value here, and the environment still
    /// overrides both (it is applied when a section is read). The queue and
    /// the bridge's mapping database on SQLite files, artifacts and task
    /// directories in `data_dir`, the bridge on the sandbox master with
    /// `/metrics` on a free port, the worker on the task queue `bbb/native`.
    pub fn with_up_defaults(mut self, data_dir: &Path) -> FileConfig {
        let sqlite = |name: &str| format!("sqlite://{}", data_dir.join(name).display());
        let path = |name: &str| data_dir.join(name).display().to_string();
        layer(
            &mut self.queue,
            [
                ("database_url", sqlite("queue.sqlite")),
                ("blob_dir", path("artifacts")),
            ],
        );
        layer(
            &mut self.worker,
            [
                ("task_queue_id", "bbb/native".to_owned()),
                ("tasks_dir", path("tasks")),
            ],
        );
        layer(
            &mut self.bridge,
            [
                ("state_database_url", sqlite("bridge-state.sqlite")),
                ("buildbot_kind", "sandbox".to_owned()),
                ("metrics_listen", "127.0.0.1:0".to_owned()),
            ],
        );
        self
    }

    /// Whether the file names CI repositories (`bbb up` adds its demo
    /// repository only when it does not).
    pub fn ci_repositories_configured(&self) -> bool {
        self.ci
            .as_ref()
            .is_some_and(|c| c.contains_key("repositories"))
    }

    /// `bbb up`'s demo repository as a layer below the file: the CI service
    /// follows it (polled every 2 s unless `[ci]` says otherwise, bare clones
    /// in the data directory) and its roles (pushes, actions) are added to
    /// `[auth]`'s roles.
    pub fn with_demo_repository(mut self, demo: &DemoRepository, data_dir: &Path) -> FileConfig {
        let ci = self.ci.get_or_insert_with(toml::Table::new);
        ci.entry("poll_interval_ms").or_insert(2000.into());
        ci.entry("cache_dir")
            .or_insert_with(|| data_dir.join("ci-cache").display().to_string().into());
        ci.entry("repositories")
            .or_insert_with(|| toml::Value::Array(vec![demo.ci_repository().into()]));
        let auth = self.auth.get_or_insert_with(toml::Table::new);
        let roles = auth
            .entry("roles")
            .or_insert_with(|| toml::Value::Array(vec![]));
        if let Some(roles) = roles.as_array_mut() {
            for role in crate::demo_repo::roles() {
                if !roles
                    .iter()
                    .any(|r| r.get("role_id") == role.get("role_id"))
                {
                    roles.push(role.into());
                }
            }
        }
        self
    }

    /// Whether the file or the environment names the queue's database.
    pub fn queue_database_configured(&self) -> bool {
        std::env::var_os("BBB_DATABASE_URL").is_some()
            || self
                .queue
                .as_ref()
                .is_some_and(|q| q.get("database_url").is_some())
    }

    /// Whether the file or the environment names the bridge's mapping database.
    pub fn bridge_state_configured(&self) -> bool {
        std::env::var_os("BBB_STATE_DATABASE_URL").is_some()
            || self
                .bridge
                .as_ref()
                .is_some_and(|b| b.get("state_database_url").is_some())
    }

    /// The worker's configuration without the completeness check (`bbb up` fills in the rest).
    pub fn worker_config_unchecked(&self) -> anyhow::Result<WorkerConfig> {
        let table = self.worker.clone().unwrap_or_default();
        let mut cfg: WorkerConfig = toml::Value::Table(table)
            .try_into()
            .context("the [worker] section")?;
        cfg.apply_env()?;
        Ok(cfg)
    }
}

/// Sets each `(key, value)` of `defaults` in `section` where the key is absent.
fn layer<const N: usize>(section: &mut Option<toml::Table>, defaults: [(&str, String); N]) {
    let table = section.get_or_insert_with(toml::Table::new);
    for (key, value) in defaults {
        table
            .entry(key)
            .or_insert_with(|| toml::Value::String(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_defaults_fill_only_what_the_file_leaves_out() {
        let file: FileConfig = toml::from_str(
            "[queue]\ndatabase_url = \"postgres://db/queue\"\n[bridge]\nbuildbot_kind = \"rest\"\n",
        )
        .unwrap();
        let file = file.with_up_defaults(Path::new("/data"));
        let queue = file.queue.as_ref().unwrap();
        assert_eq!(queue["database_url"].as_str(), Some("postgres://db/queue"));
        assert_eq!(queue["blob_dir"].as_str(), Some("/data/artifacts"));
        let bridge = file.bridge.as_ref().unwrap();
        assert_eq!(bridge["buildbot_kind"].as_str(), Some("rest"));
        assert_eq!(
            bridge["state_database_url"].as_str(),
            Some("sqlite:///data/bridge-state.sqlite")
        );
        let worker = file.worker.as_ref().unwrap();
        assert_eq!(worker["task_queue_id"].as_str(), Some("bbb/native"));
        assert_eq!(worker["tasks_dir"].as_str(), Some("/data/tasks"));
    }

    #[test]
    fn the_demo_repository_is_followed_with_its_roles() {
        let file: FileConfig = toml::from_str(
            "[ci]\nmax_backoff_ms = 1000\n[auth]\nroles = [{ role_id = \"anonymous\", scopes = [] }]\n",
        )
        .unwrap();
        assert!(!file.ci_repositories_configured());
        let demo = DemoRepository::in_data_dir(Path::new("/data"));
        let file = file.with_demo_repository(&demo, Path::new("/data"));
        let ci = file.ci_config().unwrap();
        assert_eq!((ci.poll_interval_ms, ci.max_backoff_ms), (2000, 1000));
        assert_eq!(ci.cache_dir(), Path::new("/data/ci-cache"));
        let repo = &ci.repositories[0];
        assert_eq!(repo.project, "demo");
        assert_eq!(repo.clone_url.as_deref(), Some("/data/demo.git"));
        assert_eq!(repo.branches[0].mode, bbb_ci::Mode::Taskgraph);
        let queue = file.queue_config().unwrap();
        let roles: Vec<_> = queue
            .auth
            .roles
            .iter()
            .map(|r| r.role_id.as_str())
            .collect();
        assert_eq!(
            roles,
            [
                "anonymous",
                "repo:bbb.localhost/demo:branch:*",
                "repo:bbb.localhost/demo:action:*"
            ]
        );
        // Its pushes may offer the actions of its trust domain's hooks.
        assert!(
            queue.auth.roles[1]
                .scopes
                .iter()
                .any(|s| s == "in-tree:hook-action:project-demo/in-tree-action-1-*")
        );
        // Twice is once.
        let again = file.with_demo_repository(&demo, Path::new("/data"));
        assert_eq!(again.queue_config().unwrap().auth.roles.len(), 3);
        assert_eq!(again.ci_config().unwrap().repositories.len(), 1);
    }
}
