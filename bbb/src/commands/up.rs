//! `bbb up`: the queue, one native worker and the bridge on a sandbox master,
//! in this process, on embedded defaults ([`FileConfig::with_up_defaults`]),
//! with a demo repository the CI service follows
//! ([`FileConfig::with_demo_repository`]).

use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::FileConfig;
use crate::demo;
use crate::demo_repo::{self, DemoRepository};
use crate::roles::{self, RoleSet};

/// Runs everything until SIGINT/SIGTERM, printing the root URL and
/// credentials; `demo` follows one bridged task from pending to resolved.
pub async fn run(file: FileConfig, data_dir: PathBuf, demo: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let tasks_dir_configured = file
        .worker
        .as_ref()
        .is_some_and(|w| w.contains_key("tasks_dir"));
    // The SQLite databases and the artifact store the defaults put in the
    // data directory.
    let mut private_dirs = Vec::new();
    if !file
        .queue
        .as_ref()
        .is_some_and(|q| q.contains_key("blob_dir"))
    {
        private_dirs.push("artifacts");
    }
    let mut private_files = Vec::new();
    if !file.queue_database_configured() {
        private_files.push("queue.sqlite");
    }
    if !file.bridge_state_configured() {
        private_files.push("bridge-state.sqlite");
    }
    let file = file.with_up_defaults(&data_dir);
    // The demo repository, unless the file names repositories of its own.
    let demo_repo = if file.ci_repositories_configured() {
        None
    } else {
        let repo = DemoRepository::in_data_dir(&data_dir);
        match repo.ensure().await {
            Ok(()) => Some(repo),
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "no demo repository");
                None
            }
        }
    };
    let file = match &demo_repo {
        Some(repo) => file.with_demo_repository(repo, &data_dir),
        None => file,
    };
    // Someone to sign in as, unless [login] says who signs in: the user
    // `admin`, whose password is made once and kept in the data directory.
    let up_user = if file.login_users_configured() {
        None
    } else {
        Some(kept_secret(&data_dir, UP_PASSWORD_FILE)?)
    };
    let file = match &up_user {
        Some(password) => file.with_login_user(UP_USER, password, UP_USER_SCOPES)?,
        None => file,
    };

    // Tasks run as other OS users unless the worker cannot switch users: the
    // data directory, the files in it and the configuration are kept from them.
    let mut wcfg = file.worker_config_unchecked()?;
    let run_as = bbb_workers::users::decide(wcfg.run_tasks_as).map_err(anyhow::Error::msg)?;
    let task_users = run_as.mode == bbb_workers::RunTasksAs::TaskUser;
    crate::private::secure_data_dir(&data_dir, task_users, &private_files, &private_dirs)
        .with_context(|| format!("securing {}", data_dir.display()))?;
    if task_users {
        file.keep_from_tasks();
    }
    // Task users must reach their directories: when a directory above the
    // data directory is closed to others (e.g. /root), task directories go
    // to a fresh directory in the system's temporary directory instead.
    let mut own_tasks_dir = None;
    if task_users
        && !tasks_dir_configured
        && let Err(why) = bbb_workers::users::reachable_by_others(&data_dir)
    {
        let dir = fresh_tasks_dir()?;
        tracing::info!(
            tasks_dir = %dir.display(),
            "task directories are not in the data directory: {why}"
        );
        wcfg.tasks_dir = dir.clone();
        own_tasks_dir = Some(dir);
    }

    let mut qcfg = file.queue_config()?;
    // Shown in the banner below: the user needs it.
    let token = match &qcfg.root_access_token {
        Some(t) => t.expose().clone(),
        None => kept_root_token(&data_dir)?,
    };
    qcfg.root_access_token = Some(token.clone().into());
    let legacy_masters = bbb_migration::LegacyMasters::default();
    let live_logs = file.live_log_origins()?;
    let mounts =
        crate::services::mounts_polling(&file, legacy_masters.clone(), true, live_logs.clone())?;
    let running = bbb_queue::start_with(qcfg, bbb_queue::Clock::system(), mounts).await?;

    wcfg.root_url = running.root_url.clone();
    wcfg.client_id = "root".into();
    wcfg.access_token = token.clone().into();
    let worker = bbb_workers::Worker::new(wcfg.clone()).await?;
    // The task pages stream this worker's live logs through.
    live_logs
        .allow(worker.livelog_url())
        .map_err(anyhow::Error::msg)?;
    let stop = CancellationToken::new();
    let worker_task = tokio::spawn(worker.run(stop.clone()));

    let mut bcfg = file.bridge_config()?;
    bcfg.queue_root_url = running.root_url.clone();
    bcfg.queue_client_id = "root".into();
    bcfg.queue_access_token = token.clone().into();
    let master = roles::legacy_master(&bcfg, &running.bus).await?;
    let migration = file.migration_section()?;
    crate::migration::add_bridge_master(&migration, &bcfg, &legacy_masters, master.clone());
    let bridge = roles::start(&bcfg, RoleSet::ALL, running.bus.clone(), master).await?;

    println!("bbb is up.");
    println!("  root URL:        {}", running.root_url);
    println!("  client id:       root");
    println!("  access token:    {token}");
    println!(
        "  native worker:   task queue {} (worker {}/{})",
        wcfg.task_queue_id, wcfg.worker_group, wcfg.worker_id
    );
    println!(
        "  bridge:          task queue {} -> {:?} master (metrics: {})",
        bcfg.task_queue_id,
        bcfg.buildbot_kind,
        bridge
            .metrics_addr
            .map(|a| format!("http://{a}/metrics"))
            .unwrap_or_else(|| "off".into())
    );
    if let Some(repo) = &demo_repo {
        println!(
            "  demo repository: {} (branch {}; each push gets a decision task and a graph:",
            repo.work.display(),
            demo_repo::BRANCH
        );
        println!(
            "                   git -C {0} commit --allow-empty -m change && git -C {0} push)",
            repo.work.display()
        );
    }
    match &up_user {
        Some(password) => println!(
            "  web UI:          {}/ (sign in as {UP_USER}, password {password})",
            running.root_url
        ),
        None => println!("  web UI:          {}/", running.root_url),
    }
    println!("  data directory:  {}", data_dir.display());
    println!();
    println!(
        "  export TASKCLUSTER_ROOT_URL={} TASKCLUSTER_CLIENT_ID=root TASKCLUSTER_ACCESS_TOKEN={token}",
        running.root_url
    );
    println!("Stop with Ctrl-C.");
    let demo_task = demo.then(|| {
        tokio::spawn(demo::bridged_task(
            running.root_url.clone(),
            token.clone(),
            bcfg.task_queue_id.clone(),
        ))
    });
    let demo_push = demo_repo.filter(|_| demo).map(|repo| {
        tokio::spawn(demo_repo::push_and_follow(
            running.root_url.clone(),
            token.clone(),
            repo,
        ))
    });
    let failed = bridge.failed.clone();
    tokio::select! {
        _ = super::shutdown_signal() => {}
        _ = failed.cancelled() => tracing::error!("a bridge role stopped; shutting down"),
    }
    for t in [demo_task, demo_push].into_iter().flatten() {
        t.abort();
    }
    bridge.shutdown().await;
    stop.cancel();
    match worker_task.await {
        Ok(Err(e)) => tracing::error!(error = %e, "worker stopped with an error"),
        Err(e) => tracing::error!(error = %e, "worker task failed"),
        Ok(Ok(())) => {}
    }
    running.shutdown().await;
    if let Some(dir) = own_tasks_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}

/// A new directory `bbb-tasks-<random>` in the system's temporary directory
/// (made here, so nobody else can have prepared it).
fn fresh_tasks_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::temp_dir();
    let mut last = None;
    for _ in 0..16 {
        let dir = base.join(format!(
            "bbb-tasks-{}",
            &bbb_queue::server::random_token()[..12]
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) => last = Some(e),
        }
    }
    Err(anyhow::anyhow!(
        "cannot create a task directory in {}: {}",
        base.display(),
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// The root client's access token kept in the data directory, made on the
/// first start.
fn kept_root_token(data_dir: &Path) -> anyhow::Result<String> {
    kept_secret(data_dir, "root-access-token")
}

/// The user `bbb up` signs in when `[login]` names nobody.
const UP_USER: &str = "admin";
/// Where its password is kept in the data directory.
const UP_PASSWORD_FILE: &str = "admin-password";
/// What the role `login-identity:admin` grants: all a user does in the
/// sandbox's services (tasks, hooks and actions, the index, the CI and
/// migration services, the repositories' roles, its own OAuth2 clients). Not
/// `*`: a role may not assume itself.
const UP_USER_SCOPES: &[&str] = &[
    "queue:*",
    "hooks:*",
    "index:*",
    "ci:*",
    "migration:*",
    "assume:repo:*",
    "auth:current-scopes",
    "auth:expand-scopes",
    "auth:list-clients",
    "auth:get-client:*",
    "auth:list-roles",
    "auth:get-role:*",
    "auth:create-client:admin/*",
    "auth:update-client:admin/*",
    "auth:delete-client:admin/*",
    "auth:reset-access-token:admin/*",
];

/// The secret kept in `data_dir/name`, made (random, readable by its owner
/// only) the first time.
fn kept_secret(data_dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = data_dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => {
            let t = bbb_queue::server::random_token();
            crate::private::write_private(&path, &t)
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(t)
        }
    }
}
