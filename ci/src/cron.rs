//! Cron: a branch's `.cron.yml` (taskgraph's format) made into scheduled
//! hooks that create cron decision tasks.
//!
//! Each `decision-task` job of the `.cron.yml` at the head of a followed
//! `shadow` or `taskgraph` branch becomes one hook, in the group
//! `project-<trust domain>`, with the id `cron-<project>/<branch>/<job>`
//! (characters a hook id may not have made `_`), whose schedule is the job's
//! `when` as six-field cron patterns ([`schedule`]) and whose task is the first
//! task of the branch head's `.taskcluster.yml` wrapped in a JSON-e `$let`
//! giving it upstream's cron context: `tasks_for: cron`, `push` (the head,
//! owner `cron`), `repository`, `cron` (`task_id`, `job_name`, `job_symbol`,
//! `quoted_args`, `input`) and `ownTaskId` (the firing's taskId). The hooks
//! service fires it once per slot with `now` the slot's time, as the
//! repository's role for its cron jobs: the hooks' role
//! `hook-id:project-<td>/cron-<project>/*` grants
//! `assume:repo:<host>/<path>:cron:*`.

use crate::actions::{OWNER, first_task, hook_group};
use crate::store::Repository;
use regex::Regex;
use serde_json::{Value, json};
use std::sync::LazyLock;

/// One job of a `.cron.yml`.
#[derive(Clone, Debug, PartialEq)]
pub struct CronJob {
    /// Its name (`cron.job_name`).
    pub name: String,
    /// Its treeherder symbol (`cron.job_symbol`).
    pub symbol: String,
    /// The arguments of `taskgraph decision` it adds.
    pub args: Vec<String>,
    /// When it runs, as the hooks' cron patterns.
    pub schedule: Vec<String>,
}

const WEEKDAYS: [(&str, &str); 7] = [
    ("Monday", "Mon"),
    ("Tuesday", "Tue"),
    ("Wednesday", "Wed"),
    ("Thursday", "Thu"),
    ("Friday", "Fri"),
    ("Saturday", "Sat"),
    ("Sunday", "Sun"),
];

/// One `when` entry (`{hour, minute, day, weekday}`, each optional) as a
/// six-field pattern (seconds first, UTC): a missing `minute` is every
/// quarter hour (upstream's cron task runs every fifteen minutes), a
/// missing hour, day or weekday any. A minute must be a multiple of 15.
pub fn pattern(when: &Value) -> Result<String, String> {
    let obj = when
        .as_object()
        .ok_or_else(|| format!("a `when` entry is not a mapping: {when}"))?;
    if let Some(k) = obj
        .keys()
        .find(|k| !["hour", "minute", "day", "weekday"].contains(&k.as_str()))
    {
        return Err(format!("`when` has an unknown key {k:?}"));
    }
    let int = |k: &str, lo: i64, hi: i64| -> Result<Option<i64>, String> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .filter(|n| (lo..=hi).contains(n))
                .map(Some)
                .ok_or_else(|| format!("`{k}` must be a whole number from {lo} to {hi}, not {v}")),
        }
    };
    let minute = match int("minute", 0, 59)? {
        Some(m) if m % 15 != 0 => {
            return Err(format!(
                "`minute` {m}: cron jobs run on multiples of 15 minutes past the hour"
            ));
        }
        Some(m) => m.to_string(),
        None => "0,15,30,45".into(),
    };
    let hour = int("hour", 0, 23)?.map_or("*".into(), |h| h.to_string());
    let day = int("day", 1, 31)?.map_or("*".into(), |d| d.to_string());
    let weekday = match obj.get("weekday") {
        None | Some(Value::Null) => "*".to_owned(),
        Some(Value::String(w)) => WEEKDAYS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(w))
            .map(|(_, short)| (*short).to_owned())
            .ok_or_else(|| format!("`weekday` {w:?} is not a day's name"))?,
        Some(v) => return Err(format!("`weekday` must be a day's name, not {v}")),
    };
    Ok(format!("0 {minute} {hour} {day} * {weekday}"))
}

/// A `when` (a list of entries, or `{by-project: {<project or regex>:
/// [...], default: [...]}}`) for `project`, as distinct patterns.
pub fn schedule(when: Option<&Value>, project: &str) -> Result<Vec<String>, String> {
    let list = match when {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(o)) if o.contains_key("by-project") => {
            let by = o["by-project"]
                .as_object()
                .ok_or("`by-project` is not a mapping")?;
            let chosen = by.get(project).or_else(|| {
                by.iter()
                    .filter(|(k, _)| *k != "default")
                    .find(|(k, _)| {
                        Regex::new(&format!("^(?:{k})$")).is_ok_and(|r| r.is_match(project))
                    })
                    .map(|(_, v)| v)
                    .or_else(|| by.get("default"))
            });
            match chosen {
                Some(v) => v.clone(),
                None => return Ok(Vec::new()),
            }
        }
        Some(v) => v.clone(),
    };
    let items = list.as_array().ok_or("`when` is not a list")?;
    let mut out: Vec<String> = Vec::new();
    for w in items {
        let p = pattern(w)?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// `arg` quoted for a shell as Python's `shlex.quote` does.
pub fn shell_quote(arg: &str) -> String {
    static SAFE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_@%+=:,./-]+$").expect("regex"));
    if SAFE.is_match(arg) {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r#"'"'"'"#))
    }
}

/// The `taskgraph decision` arguments of a `decision-task` job, as upstream's
/// cron decision makes them.
fn arguments(job: &Value) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(m) = job.get("target-tasks-method").and_then(Value::as_str) {
        args.push(format!("--target-tasks-method={m}"));
    }
    if let Some(b) = job.get("optimize-target-tasks").and_then(Value::as_bool) {
        args.push(format!("--optimize-target-tasks={b}"));
    }
    if job.get("include-push-tasks").is_some() {
        args.push("--include-push-tasks".into());
    }
    if let Some(kinds) = job.get("rebuild-kinds").and_then(Value::as_array) {
        for k in kinds.iter().filter_map(Value::as_str) {
            args.push(format!("--rebuild-kind={k}"));
        }
    }
    args
}

/// The jobs of a `.cron.yml` (its text) that run for `project`: the
/// `decision-task` jobs whose `run-on-projects` (if any) names it and whose
/// `when` names a time. Other job types (`trigger-action`) are left out,
/// named in the second list with why.
pub fn jobs(text: &str, project: &str) -> Result<(Vec<CronJob>, Vec<String>), String> {
    let doc = crate::decision::load_yaml(text).map_err(|e| format!(".cron.yml: {e}"))?;
    let list = doc
        .get("jobs")
        .and_then(Value::as_array)
        .ok_or(".cron.yml has no `jobs` list")?;
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for j in list {
        let name = j
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!(".cron.yml: a job without a name: {j}"))?;
        if out.iter().any(|c: &CronJob| c.name == name) {
            return Err(format!(".cron.yml: two jobs are named {name:?}"));
        }
        if let Some(on) = j.get("run-on-projects").and_then(Value::as_array)
            && !on.iter().any(|p| p.as_str() == Some(project))
        {
            continue;
        }
        let job = j.get("job").cloned().unwrap_or(Value::Null);
        match job.get("type").and_then(Value::as_str) {
            Some("decision-task") => {}
            other => {
                skipped.push(format!(
                    "{name}: job type {} is not supported",
                    other.unwrap_or("(none)")
                ));
                continue;
            }
        }
        let symbol = job
            .get("treeherder-symbol")
            .and_then(Value::as_str)
            .ok_or_else(|| format!(".cron.yml: job {name} has no treeherder-symbol"))?;
        let schedule =
            schedule(j.get("when"), project).map_err(|e| format!(".cron.yml: job {name}: {e}"))?;
        if schedule.is_empty() {
            skipped.push(format!("{name}: no time for this project"));
            continue;
        }
        out.push(CronJob {
            name: name.to_owned(),
            symbol: symbol.to_owned(),
            args: arguments(&job),
            schedule,
        });
    }
    Ok((out, skipped))
}

/// `s` with what a hook id may not have made `_`.
fn id_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The prefix of every cron hook of `project`: `cron-<project>/`.
pub fn hook_prefix(project: &str) -> String {
    format!("cron-{}/", id_part(project))
}

/// The id of the hook of `job` on `branch` of `project`.
pub fn hook_id(project: &str, branch: &str, job: &str) -> String {
    format!(
        "{}{}/{}",
        hook_prefix(project),
        id_part(branch),
        id_part(job)
    )
}

/// The role of `project`'s cron hooks.
pub fn role_id(trust_domain: &str, project: &str) -> String {
    format!(
        "hook-id:{}/{}*",
        hook_group(trust_domain),
        hook_prefix(project)
    )
}

/// The scopes of that role: `assume:repo:<host>/<path>:cron:*`.
pub fn role_scopes(repo: &Repository) -> Vec<String> {
    vec![format!("assume:repo:{}:cron:*", repo.role_path())]
}

/// The scheduled hook of `job` on `branch` of `repo`, whose head is
/// `revision` with `tcyml` (parsed; `hash`: its [`crate::actions::tcyml_hash`]):
/// the definition of `createHook`.
pub fn cron_hook(
    repo: &Repository,
    branch: &str,
    revision: &str,
    tcyml: &Value,
    hash: &str,
    job: &CronJob,
) -> Result<Value, String> {
    let task = first_task(tcyml)?;
    let group = hook_group(&repo.trust_domain);
    let id = hook_id(&repo.project, branch, &job.name);
    let mut repository = json!({
        "url": repo.url,
        "project": repo.project,
        "level": repo.level.to_string(),
        "type": repo.kind.as_str(),
    });
    if let Some(c) = &repo.clone_url {
        repository["clone_url"] = json!(c);
    }
    let quoted: Vec<String> = job.args.iter().map(|a| shell_quote(a)).collect();
    let template = json!({
        "$let": {
            "tasks_for": "cron",
            "push": {
                "owner": "cron",
                "branch": branch,
                "revision": revision,
                "base_revision": revision,
                "pushlog_id": "0",
                "pushdate": 0,
            },
            "repository": repository,
            "cron": {
                "task_id": {"$eval": "taskId"},
                "job_name": job.name,
                "job_symbol": job.symbol,
                "quoted_args": quoted.join(" "),
                "input": {},
            },
            "ownTaskId": {"$eval": "taskId"},
            "tcyml_hash": hash,
        },
        "in": task,
    });
    Ok(json!({
        "hookGroupId": group,
        "hookId": id,
        "metadata": {
            "name": format!("{group}/{id}"),
            "description": format!(
                "The cron job {} of `.cron.yml` on branch {branch} of {}, at revision \
                 {revision}: a decision task with `tasks_for: cron`. Kept by bbb's CI service.",
                job.name, repo.project
            ),
            "owner": OWNER,
            "emailOnError": true,
        },
        "bindings": [],
        "schedule": job.schedule,
        "task": template,
        "triggerSchema": {"type": "object", "additionalProperties": false},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_entries_become_six_field_patterns() {
        assert_eq!(
            pattern(&json!({"hour": 3, "minute": 0})).unwrap(),
            "0 0 3 * * *"
        );
        assert_eq!(
            pattern(&json!({"hour": 16, "minute": 45})).unwrap(),
            "0 45 16 * * *"
        );
        assert_eq!(
            pattern(&json!({"hour": 10})).unwrap(),
            "0 0,15,30,45 10 * * *"
        );
        assert_eq!(
            pattern(&json!({"weekday": "Sunday", "hour": 0, "minute": 0})).unwrap(),
            "0 0 0 * * Sun"
        );
        assert_eq!(
            pattern(&json!({"day": 1, "hour": 5, "minute": 30})).unwrap(),
            "0 30 5 1 * *"
        );
        assert!(pattern(&json!({"minute": 10})).unwrap_err().contains("15"));
        assert!(pattern(&json!({"hour": 24})).is_err());
        assert!(pattern(&json!({"weekday": "Funday"})).is_err());
        assert!(pattern(&json!({"month": 1})).is_err());
        for p in [
            "0 0 3 * * *",
            "0 0,15,30,45 10 * * *",
            "0 0 0 * * Sun",
            "0 30 5 1 * *",
        ] {
            bbb_hooks::cron::parse(p).unwrap();
        }
    }

    #[test]
    fn by_project_picks_the_projects_times() {
        let when = json!({"by-project": {
            "proj": [{"hour": 1, "minute": 0}],
            "rel.*": [{"hour": 2, "minute": 0}],
            "default": [{"hour": 3, "minute": 0}, {"hour": 3, "minute": 0}],
        }});
        assert_eq!(schedule(Some(&when), "proj").unwrap(), ["0 0 1 * * *"]);
        assert_eq!(schedule(Some(&when), "release").unwrap(), ["0 0 2 * * *"]);
        assert_eq!(schedule(Some(&when), "other").unwrap(), ["0 0 3 * * *"]);
    }

    #[test]
    fn a_cron_yml_reads_as_taskgraphs() {
        let text = r#"
jobs:
  - name: nightly
    job:
      type: decision-task
      treeherder-symbol: Nd
      target-tasks-method: nightly
      optimize-target-tasks: false
      rebuild-kinds: [toolchain]
    when:
      - {hour: 3, minute: 0}
  - name: elsewhere
    job: {type: decision-task, treeherder-symbol: E, target-tasks-method: x}
    run-on-projects: [other]
    when: [{hour: 1}]
  - name: act
    job: {type: trigger-action, action-name: foo}
    when: [{hour: 1}]
"#;
        let (jobs, skipped) = jobs(text, "proj").unwrap();
        assert_eq!(
            jobs,
            vec![CronJob {
                name: "nightly".into(),
                symbol: "Nd".into(),
                args: vec![
                    "--target-tasks-method=nightly".into(),
                    "--optimize-target-tasks=false".into(),
                    "--rebuild-kind=toolchain".into(),
                ],
                schedule: vec!["0 0 3 * * *".into()],
            }]
        );
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(super::jobs("jobs: 3", "p").is_err());
        assert_eq!(shell_quote("a b'c"), r#"'a b'"'"'c'"#);
        assert_eq!(shell_quote("--x=y"), "--x=y");
        assert_eq!(
            hook_id("my.proj", "release/1.0", "nightly"),
            "cron-my_proj/release_1_0/nightly"
        );
    }
}
