//! Keeping the action and cron hooks and their roles in step with the
//! repositories, as upstream's ci-admin does: a pass works out every hook
//! and role bbb should have ([`crate::actions`], [`crate::cron`]) from the
//! repositories, the `.taskcluster.yml` and `.cron.yml` at the head of each
//! followed `shadow` or `taskgraph` branch and the `.taskcluster.yml`s seen
//! recently, and then makes the hooks and auth services hold exactly that
//! through their APIs (`createHook`, `updateHook`, `removeHook`,
//! `createRole`, `updateRole`, `deleteRole`), signed as [`CLIENT_ID`].
//!
//! What a pass manages, in the group `project-<td>` of each trust domain a
//! repository has: the hooks `in-tree-action-<level>-<perm>/<hash>`, the hooks
//! `cron-<project>/...` of the repositories, and the roles `hook-id:` of
//! both. Anything else is left alone. A pass changes only what differs, so
//! passes of several processes agree; a repository whose heads or files
//! could not be read keeps its cron hooks as they are until a pass reads
//! them. A scheduled hook whose next slot is due within [`DUE_GUARD_MS`] is
//! not updated in that pass (an update moves the hook to the slot after the
//! present: its due slot would be lost); the next pass updates it.
//!
//! Passes run every `hooks_sync_interval_ms`, at once after the service
//! starts, after a repository or a branch's mode is changed through the
//! API, and after each push whose `.taskcluster.yml` the decision loop read.

use crate::actions::{self, SeenTcyml};
use crate::store::Repository;
use crate::{Ci, cron, git};
use bbb_auth::Credentials;
use bbb_clock::{Clock, Millis};
use bbb_hooks::client::{Answer, HawkClient, IssuedCredentials};
use regex::Regex;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The client id the service manages hooks and roles as.
pub const CLIENT_ID: &str = "static/bbb/ci";

/// The scopes of [`CLIENT_ID`]'s credentials for managing hooks and roles
/// (a role may only be given scopes its maker has: `assume:repo:*`).
pub const CLIENT_SCOPES: [&str; 10] = [
    "assume:repo:*",
    "assume:hook-id:project-*",
    "hooks:modify-hook:project-*",
    "hooks:list-hooks:project-*",
    "hooks:status:project-*",
    "auth:list-roles",
    "auth:get-role:hook-id:project-*",
    "auth:create-role:hook-id:project-*",
    "auth:update-role:hook-id:project-*",
    "auth:delete-role:hook-id:project-*",
];

/// A scheduled hook due sooner than this is not updated in a pass.
pub const DUE_GUARD_MS: Millis = 60_000;

static ACTION_HOOK: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^in-tree-action-[0-9]+-[^/]+/[0-9a-f]{10}$").expect("regex"));

/// Calls the hooks and auth services, and keeps what this process's last
/// pass did.
#[derive(Clone)]
pub struct Admin {
    client: HawkClient,
    creds: IssuedCredentials,
    last: Arc<Mutex<Option<Value>>>,
}

/// A path segment percent-encoded (everything but unreserved characters).
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Admin {
    /// A client of the services under `root_url`, with credentials issued by
    /// `issuer` (the queue's client id and secret).
    pub fn new(root_url: &str, issuer: Arc<(String, String)>, clock: Clock) -> Admin {
        Admin {
            client: HawkClient::new(root_url, clock.clone()),
            creds: IssuedCredentials::new(issuer, CLIENT_ID, &CLIENT_SCOPES, clock),
            last: Arc::default(),
        }
    }

    /// What this process's last pass did (see [`Report::to_json`]), if one
    /// ran.
    pub fn last_pass(&self) -> Option<Value> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_last_pass(&self, v: Value) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
    }

    fn creds(&self) -> Result<Credentials, String> {
        self.creds.get()
    }

    async fn call(
        &self,
        service: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let url = self.client.url(service, path);
        self.client
            .call(Some(&self.creds()?), None, method, &url, body)
            .await
            .map_err(|e| format!("{method} {service} {path}: {e}"))
    }

    /// `call` that must succeed (2xx): its body.
    async fn ok(
        &self,
        service: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let a = self.call(service, method, path, body).await?;
        if a.is_success() {
            Ok(a.body)
        } else {
            Err(format!(
                "{method} {service} {path}: {} {}",
                a.status,
                a.body.get("message").and_then(Value::as_str).unwrap_or("")
            ))
        }
    }
}

/// What a pass wants the services to hold.
#[derive(Debug, Default)]
pub struct Wanted {
    /// Hook definitions by (group, id).
    pub hooks: BTreeMap<(String, String), Value>,
    /// Role scopes and descriptions by role id.
    pub roles: BTreeMap<String, (Vec<String>, String)>,
    /// The groups managed.
    pub groups: BTreeSet<String>,
    /// Cron hook prefixes managed, by group: (prefix, whether its hooks may
    /// be removed — not when the repository could not be read).
    pub cron_prefixes: BTreeMap<String, Vec<(String, bool)>>,
}

/// What a pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Hooks created.
    pub created: Vec<String>,
    /// Hooks updated.
    pub updated: Vec<String>,
    /// Hooks removed.
    pub removed: Vec<String>,
    /// Scheduled hooks left for the next pass because a slot was due.
    pub deferred: Vec<String>,
    /// Roles created, updated or removed.
    pub roles: Vec<String>,
    /// What could not be done or read (the next pass tries again).
    pub errors: Vec<String>,
}

impl Report {
    /// The API's view of a pass that ended at `at` (`Err`: why it stopped).
    pub fn to_json(outcome: &Result<Report, String>, at: Millis) -> Value {
        match outcome {
            Ok(r) => json!({
                "time": bbb_clock::fmt_ms(at),
                "created": r.created, "updated": r.updated, "removed": r.removed,
                "deferred": r.deferred, "roles": r.roles, "errors": r.errors,
            }),
            Err(e) => json!({"time": bbb_clock::fmt_ms(at), "errors": [e]}),
        }
    }
}

/// The files at the head of one branch.
struct Head {
    branch: String,
    revision: String,
    /// `.taskcluster.yml`, parsed, and its hash ([`actions::tcyml_hash`]).
    tcyml: Option<(Value, String)>,
    cron: Option<String>,
}

impl Ci {
    /// Read the head of every followed `shadow`/`taskgraph` branch of `repo`
    /// and its `.taskcluster.yml` (recorded as seen) and `.cron.yml`; `None`
    /// for a kind of repository that is not read here (Mercurial: its
    /// decided pushes still record their `.taskcluster.yml`).
    async fn read_heads(&self, repo: &Repository) -> Result<Option<Vec<Head>>, String> {
        if repo.kind != crate::Kind::Git {
            return Ok(None);
        }
        let deciding: Vec<&str> = repo
            .branches
            .iter()
            .filter(|b| b.mode.decides())
            .map(|b| b.name.as_str())
            .collect();
        if deciding.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let remote = git::ls_remote(repo.fetch_url()).await?;
        let mut heads = Vec::new();
        for branch in deciding {
            let Some(revision) = remote.get(branch) else {
                continue;
            };
            let clone = self.fetch(repo, revision).await?;
            let tcyml = match clone.file(revision, ".taskcluster.yml").await? {
                Some(bytes) => {
                    self.note_tcyml(&repo.project, &bytes)
                        .await
                        .map_err(|e| e.to_string())?;
                    crate::decision::load_yaml(&String::from_utf8_lossy(&bytes))
                        .ok()
                        .map(|t| (t, actions::tcyml_hash(&bytes)))
                }
                None => None,
            };
            let cron = clone
                .file(revision, ".cron.yml")
                .await?
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            heads.push(Head {
                branch: branch.to_owned(),
                revision: revision.clone(),
                tcyml,
                cron,
            });
        }
        Ok(Some(heads))
    }

    /// Work out every hook and role wanted; what could not be read goes in
    /// `errors`.
    pub async fn wanted(&self, errors: &mut Vec<String>) -> Result<Wanted, String> {
        let repos = self.store.repositories().await.map_err(|e| e.to_string())?;
        let mut w = Wanted::default();
        for repo in &repos {
            let group = actions::hook_group(&repo.trust_domain);
            w.groups.insert(group.clone());
            let prefix = cron::hook_prefix(&repo.project);
            let mut removable = true;
            w.roles.insert(
                cron::role_id(&repo.trust_domain, &repo.project),
                (
                    cron::role_scopes(repo),
                    format!(
                        "The cron jobs of {}: what their decision tasks may have",
                        repo.project
                    ),
                ),
            );
            match self.read_heads(repo).await {
                Ok(None) => removable = false,
                Ok(Some(heads)) => {
                    for head in heads {
                        let Some(text) = &head.cron else { continue };
                        let Some((tcyml, hash)) = &head.tcyml else {
                            errors.push(format!(
                                "{} {}: .cron.yml without a readable .taskcluster.yml",
                                repo.project, head.branch
                            ));
                            removable = false;
                            continue;
                        };
                        let jobs = match cron::jobs(text, &repo.project) {
                            Ok((jobs, skipped)) => {
                                for s in skipped {
                                    tracing::debug!(ci.project = %repo.project, ci.branch = %head.branch, "cron job left out: {s}");
                                }
                                jobs
                            }
                            Err(e) => {
                                errors.push(format!("{} {}: {e}", repo.project, head.branch));
                                removable = false;
                                continue;
                            }
                        };
                        for job in &jobs {
                            match cron::cron_hook(
                                repo,
                                &head.branch,
                                &head.revision,
                                tcyml,
                                hash,
                                job,
                            ) {
                                Ok(def) => {
                                    let id = def["hookId"].as_str().unwrap_or_default().to_owned();
                                    w.hooks.insert((group.clone(), id), def);
                                }
                                Err(e) => {
                                    errors.push(format!(
                                        "{} {}: .taskcluster.yml: {e}",
                                        repo.project, head.branch
                                    ));
                                    removable = false;
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    errors.push(format!("{}: {e}", repo.project));
                    removable = false;
                }
            }
            w.cron_prefixes
                .entry(group)
                .or_default()
                .push((prefix, removable));
        }
        // Action hooks: every .taskcluster.yml seen within the retention time.
        let keep_ms = (self.cfg.action_hook_retention_days as i64).saturating_mul(86_400_000);
        let seen = self
            .seen_tcymls(self.clock.now_ms().saturating_sub(keep_ms))
            .await
            .map_err(|e| e.to_string())?;
        let mut by_level: BTreeMap<(String, i64), Vec<&Repository>> = BTreeMap::new();
        for r in &repos {
            by_level
                .entry((r.trust_domain.clone(), r.level))
                .or_default()
                .push(r);
        }
        // (td, level, hash) → (template, projects)
        let mut templates: BTreeMap<(String, i64, String), (Value, Vec<String>)> = BTreeMap::new();
        for SeenTcyml {
            project,
            hash,
            tcyml,
            ..
        } in &seen
        {
            let Some(repo) = repos.iter().find(|r| &r.project == project) else {
                continue;
            };
            let task = crate::decision::load_yaml(tcyml).and_then(|t| actions::first_task(&t));
            let task = match task {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(ci.project = %project, hash = %hash, "no action hook: {e}");
                    continue;
                }
            };
            let entry = templates
                .entry((repo.trust_domain.clone(), repo.level, hash.clone()))
                .or_insert((task, Vec::new()));
            entry.1.push(project.clone());
        }
        for ((td, level, hash), (task, projects)) in &templates {
            let clone_urls: BTreeMap<String, String> = by_level
                .get(&(td.clone(), *level))
                .into_iter()
                .flatten()
                .filter_map(|r| {
                    r.clone_url
                        .as_ref()
                        .map(|c| (r.url.trim_end_matches('/').to_owned(), c.clone()))
                })
                .collect();
            for perm in &self.cfg.action_permissions {
                let def = actions::action_hook(td, *level, perm, hash, task, &clone_urls, projects);
                let id = def["hookId"].as_str().unwrap_or_default().to_owned();
                w.hooks.insert((actions::hook_group(td), id), def);
            }
        }
        for ((td, level), repos) in &by_level {
            for perm in &self.cfg.action_permissions {
                w.roles.insert(
                    actions::action_role_id(td, *level, perm),
                    (
                        actions::action_role_scopes(repos, perm),
                        format!(
                            "The in-tree actions `{perm}` of {td}'s repositories at level {level}"
                        ),
                    ),
                );
            }
        }
        Ok(w)
    }

    /// One pass: the hooks and roles made to be what [`Ci::wanted`] says.
    pub async fn sync_hooks(&self) -> Result<Report, String> {
        let mut report = Report::default();
        let w = self.wanted(&mut report.errors).await?;
        self.apply_roles(&w, &mut report).await?;
        for group in &w.groups {
            self.apply_group(&w, group, &mut report).await?;
        }
        Ok(report)
    }

    async fn apply_roles(&self, w: &Wanted, report: &mut Report) -> Result<(), String> {
        let admin = &self.admin;
        let list = admin.ok("auth", "GET", "roles/", None).await?;
        let existing: BTreeMap<String, &Value> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| Some((r["roleId"].as_str()?.to_owned(), r)))
            .collect();
        let managed = |id: &str| {
            w.groups.iter().any(|g| {
                id.starts_with(&format!("hook-id:{g}/in-tree-action-"))
                    || id.starts_with(&format!("hook-id:{g}/cron-"))
            })
        };
        for id in existing.keys() {
            if managed(id) && !w.roles.contains_key(id) {
                match admin
                    .ok("auth", "DELETE", &format!("roles/{}", enc(id)), None)
                    .await
                {
                    Ok(_) => report.roles.push(format!("removed {id}")),
                    Err(e) => report.errors.push(e),
                }
            }
        }
        for (id, (scopes, description)) in &w.roles {
            let body = json!({"description": description, "scopes": scopes});
            let path = format!("roles/{}", enc(id));
            let result = match existing.get(id) {
                None => admin
                    .ok("auth", "PUT", &path, Some(&body))
                    .await
                    .map(|_| "created"),
                Some(cur) => {
                    let mut have: Vec<String> = cur["scopes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect();
                    have.sort();
                    if &have == scopes && cur["description"] == body["description"] {
                        continue;
                    }
                    admin
                        .ok("auth", "POST", &path, Some(&body))
                        .await
                        .map(|_| "updated")
                }
            };
            match result {
                Ok(what) => report.roles.push(format!("{what} {id}")),
                Err(e) => report.errors.push(e),
            }
        }
        Ok(())
    }

    async fn apply_group(
        &self,
        w: &Wanted,
        group: &str,
        report: &mut Report,
    ) -> Result<(), String> {
        let admin = &self.admin;
        let a = admin
            .call("hooks", "GET", &format!("hooks/{}", enc(group)), None)
            .await?;
        let list = match a.status {
            404 => Vec::new(),
            s if (200..300).contains(&s) => a.body["hooks"].as_array().cloned().unwrap_or_default(),
            s => return Err(format!("listHooks {group}: {s} {}", a.body)),
        };
        let existing: BTreeMap<String, Value> = list
            .into_iter()
            .filter_map(|h| Some((h["hookId"].as_str()?.to_owned(), h)))
            .collect();
        let prefixes = w.cron_prefixes.get(group).cloned().unwrap_or_default();
        for id in existing.keys() {
            if w.hooks.contains_key(&(group.to_owned(), id.clone())) {
                continue;
            }
            let removable = ACTION_HOOK.is_match(id)
                || prefixes
                    .iter()
                    .any(|(p, ok)| *ok && id.starts_with(p.as_str()));
            if !removable {
                continue;
            }
            let path = format!("hooks/{}/{}", enc(group), enc(id));
            match admin.ok("hooks", "DELETE", &path, None).await {
                Ok(_) => report.removed.push(format!("{group}/{id}")),
                Err(e) => report.errors.push(e),
            }
        }
        for ((g, id), def) in &w.hooks {
            if g != group {
                continue;
            }
            let path = format!("hooks/{}/{}", enc(g), enc(id));
            let name = format!("{g}/{id}");
            match existing.get(id) {
                None => match admin.call("hooks", "PUT", &path, Some(def)).await {
                    Ok(a) if a.is_success() => report.created.push(name),
                    // Another process made it meanwhile: the next pass compares.
                    Ok(a) if a.status == 409 => {}
                    Ok(a) => report
                        .errors
                        .push(format!("createHook {name}: {} {}", a.status, a.body)),
                    Err(e) => report.errors.push(e),
                },
                Some(cur) if same_hook(cur, def) => {}
                Some(_) => {
                    if def["schedule"].as_array().is_some_and(|s| !s.is_empty()) {
                        let status = admin
                            .ok("hooks", "GET", &format!("{path}/status"), None)
                            .await;
                        let due = match &status {
                            Ok(s) => s["nextScheduledDate"]
                                .as_str()
                                .and_then(bbb_clock::parse_ms)
                                .is_some_and(|at| at <= self.clock.now_ms() + DUE_GUARD_MS),
                            Err(_) => true,
                        };
                        if due {
                            report.deferred.push(name);
                            continue;
                        }
                    }
                    match admin.ok("hooks", "POST", &path, Some(def)).await {
                        Ok(_) => report.updated.push(name),
                        Err(e) => report.errors.push(e),
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether the hook `cur` (as the API shows it) is the definition `want`.
fn same_hook(cur: &Value, want: &Value) -> bool {
    ["metadata", "task", "schedule", "triggerSchema", "bindings"]
        .iter()
        .all(|k| cur.get(*k) == want.get(*k))
}

/// Run passes until `stop` turns true: at once, every
/// `hooks_sync_interval_ms`, and when woken (sooner after a pass that could
/// not do everything: the poll interval doubled per such pass in a row).
pub async fn run(ci: Ci, mut stop: watch::Receiver<bool>) {
    let mut failures = 0i64;
    loop {
        if *stop.borrow() {
            return;
        }
        let outcome = ci.sync_hooks().await;
        ci.admin
            .set_last_pass(Report::to_json(&outcome, ci.clock.now_ms()));
        let wait = match outcome {
            Ok(r) => {
                if !(r.created.is_empty()
                    && r.updated.is_empty()
                    && r.removed.is_empty()
                    && r.roles.is_empty())
                {
                    tracing::info!(
                        created = ?r.created, updated = ?r.updated, removed = ?r.removed,
                        roles = ?r.roles, "action and cron hooks brought in step"
                    );
                }
                for e in &r.errors {
                    tracing::warn!(error = %e, "keeping the action and cron hooks in step");
                }
                if r.errors.is_empty() && r.deferred.is_empty() {
                    failures = 0;
                    ci.cfg.hooks_sync_interval_ms
                } else {
                    failures += 1;
                    (ci.backoff(failures - 1) as u64).min(ci.cfg.hooks_sync_interval_ms)
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "keeping the action and cron hooks in step failed");
                failures += 1;
                (ci.backoff(failures - 1) as u64).min(ci.cfg.hooks_sync_interval_ms)
            }
        };
        tokio::select! {
            _ = ci.hooks_changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(wait.max(1))) => {}
            _ = stop.changed() => return,
        }
    }
}
