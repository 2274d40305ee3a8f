//! Rendering `.taskcluster.yml` into decision tasks, as upstream's decision
//! pipeline does: the file is YAML, `version: 1`, rendered whole with JSON-e
//! over a context of `tasks_for`, `push`, `repository`, `now`, `ownTaskId`
//! and `as_slugid`, and its `tasks` are the tasks to create.
//!
//! [`render_decision`] is the one entry point, for pushes (`github-push`,
//! `hg-push`) and, through [`DecisionContext::extra`], for actions and cron.
//!
//! `as_slugid(name)` gives one slugid per name, the same on every render of
//! the same push (derived from [`DecisionContext::seed`]), so a decision
//! rendered again creates the same tasks. The JSON-e renderer takes no
//! functions from outside, so calls with a literal name (`as_slugid("x")`,
//! the only form upstream's templates use) are rewritten into a lookup in a
//! context value before rendering; any other use is a render error.

use bbb_clock::{Millis, fmt_ms};
use regex::Regex;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::LazyLock;
use yaml_rust::{Yaml, YamlLoader};

/// Why a `.taskcluster.yml` gave no tasks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// It is not YAML (the parser's message).
    #[error(".taskcluster.yml is not valid YAML: {0}")]
    Yaml(String),
    /// Its `version` is not 1.
    #[error(".taskcluster.yml has version {0}; only version 1 is supported")]
    Version(String),
    /// JSON-e failed (its message).
    #[error("rendering .taskcluster.yml failed: {0}")]
    Render(String),
    /// The rendered `tasks` is not a list of objects.
    #[error("rendered .taskcluster.yml: {0}")]
    Shape(String),
}

/// What a `.taskcluster.yml` is rendered with.
#[derive(Clone, Debug)]
pub struct DecisionContext {
    /// `tasks_for`: `github-push`, `hg-push` (later `action`, `cron`).
    pub tasks_for: String,
    /// `push`: owner, revision, base_revision, branch, pushlog_id, pushdate.
    pub push: Value,
    /// `repository`: url, project, level (and clone_url when set).
    pub repository: Value,
    /// `now`: also the time `$fromNow` counts from.
    pub now: Millis,
    /// What `as_slugid` and `ownTaskId` are derived from: one value per
    /// decision (e.g. the repository, branch and push), so rendering it again
    /// gives the same ids.
    pub seed: String,
    /// More top-level context (for actions: `action`, `input`, `taskId`...).
    pub extra: Map<String, Value>,
}

impl DecisionContext {
    /// `as_slugid(name)` for this decision: a "nice" slugid (v4 UUID layout,
    /// first bit clear) from the SHA-256 of the seed and the name.
    pub fn as_slugid(&self, name: &str) -> String {
        stable_slugid(&format!("{}\n{name}", self.seed))
    }

    /// `ownTaskId`: `as_slugid("decision")`.
    pub fn own_task_id(&self) -> String {
        self.as_slugid("decision")
    }
}

/// A slugid that depends only on `seed`.
pub fn stable_slugid(seed: &str) -> String {
    use base64::Engine;
    let digest = Sha256::digest(seed.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    b[0] &= 0x7f;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The context value `as_slugid("x")` calls are rewritten to look up.
const SLUGIDS: &str = "__as_slugid";

static AS_SLUGID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"\bas_slugid\(\s*("([^"]*)"|'([^']*)')\s*\)"#).expect("regex"));

/// `s` with `as_slugid("name")` calls rewritten into `__as_slugid["name"]`,
/// the names collected; `None` when it has none.
fn rewrite(s: &str, names: &mut BTreeMap<String, ()>) -> Option<String> {
    if !AS_SLUGID.is_match(s) {
        return None;
    }
    for c in AS_SLUGID.captures_iter(s) {
        let name = c.get(2).or_else(|| c.get(3)).map_or("", |m| m.as_str());
        names.insert(name.to_owned(), ());
    }
    Some(
        AS_SLUGID
            .replace_all(s, format!("{SLUGIDS}[$1]"))
            .into_owned(),
    )
}

/// [`rewrite`] every string of `v`, keys too.
fn rewrite_slugids(v: &mut Value, names: &mut BTreeMap<String, ()>) {
    match v {
        Value::String(s) => {
            if let Some(new) = rewrite(s, names) {
                *s = new;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| rewrite_slugids(i, names)),
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (k, mut val) in old {
                rewrite_slugids(&mut val, names);
                let key = rewrite(&k, names).unwrap_or(k);
                map.insert(key, val);
            }
        }
        _ => {}
    }
}

/// Render `.taskcluster.yml` (its text) with `context`: the task definitions
/// of its `tasks`, each with its `taskId` (a task that names none gets
/// `ownTaskId`, or `as_slugid("task-<n>")` after the first).
pub fn render_decision(tcyml: &str, context: &DecisionContext) -> Result<Vec<Value>, RenderError> {
    let docs = YamlLoader::load_from_str(tcyml).map_err(|e| RenderError::Yaml(e.to_string()))?;
    let doc = docs
        .first()
        .ok_or_else(|| RenderError::Yaml("the file is empty".into()))?;
    let mut template = yaml_to_json(doc).map_err(RenderError::Yaml)?;
    match template.get("version") {
        Some(v) if v == &json!(1) => {}
        other => {
            return Err(RenderError::Version(
                other.map_or_else(|| "(none)".to_owned(), Value::to_string),
            ));
        }
    }
    let mut names = BTreeMap::new();
    rewrite_slugids(&mut template, &mut names);
    let own = context.own_task_id();
    let slugids: Map<String, Value> = names
        .into_keys()
        .map(|n| {
            let id = context.as_slugid(&n);
            (n, Value::String(id))
        })
        .collect();
    let now = Value::String(fmt_ms(context.now));
    let mut ctx = context.extra.clone();
    ctx.insert("tasks_for".into(), Value::String(context.tasks_for.clone()));
    ctx.insert("push".into(), context.push.clone());
    ctx.insert("repository".into(), context.repository.clone());
    ctx.insert("now".into(), now.clone());
    ctx.insert("ownTaskId".into(), Value::String(own.clone()));
    ctx.insert(SLUGIDS.into(), Value::Object(slugids));
    // The renderer sets `now` to the wall clock; a `$let` puts ours back in
    // scope for `${now}` and `$fromNow`.
    let wrapped = json!({"$let": {"now": now}, "in": template});
    let rendered = json_e::render(&wrapped, &Value::Object(ctx))
        .map_err(|e| RenderError::Render(e.to_string()))?;
    let tasks = match rendered.get("tasks") {
        Some(Value::Array(tasks)) => tasks.clone(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => {
            return Err(RenderError::Shape(format!(
                "`tasks` must be a list, not {other}"
            )));
        }
    };
    let mut out = Vec::with_capacity(tasks.len());
    for (n, mut task) in tasks.into_iter().enumerate() {
        let Some(obj) = task.as_object_mut() else {
            return Err(RenderError::Shape(format!("task {n} is not an object")));
        };
        if !obj.get("taskId").is_some_and(Value::is_string) {
            let id = if n == 0 {
                own.clone()
            } else {
                context.as_slugid(&format!("task-{n}"))
            };
            obj.insert("taskId".into(), Value::String(id));
        }
        out.push(task);
    }
    Ok(out)
}

/// The first document of a YAML text as JSON (`.taskcluster.yml`,
/// `.cron.yml`): the parser's message when it is not YAML or is empty.
pub fn load_yaml(text: &str) -> Result<Value, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    let doc = docs.first().ok_or_else(|| "the file is empty".to_owned())?;
    yaml_to_json(doc)
}

/// A YAML document as JSON (keys must be scalars; anchors are resolved by
/// the parser, and an unresolved alias is an error).
fn yaml_to_json(y: &Yaml) -> Result<Value, String> {
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => json!(i),
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("{r} is not a number JSON can hold"))?,
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => {
            Value::Array(items.iter().map(yaml_to_json).collect::<Result<_, _>>()?)
        }
        Yaml::Hash(h) => {
            let mut map = Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    Yaml::Real(r) => r.clone(),
                    other => return Err(format!("a mapping key must be a scalar, not {other:?}")),
                };
                map.insert(key, yaml_to_json(v)?);
            }
            Value::Object(map)
        }
        Yaml::Alias(_) => return Err("an alias the parser did not resolve".into()),
        Yaml::BadValue => return Err("a value the parser could not read".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> DecisionContext {
        DecisionContext {
            tasks_for: "github-push".into(),
            push: json!({"owner": "a@example.com", "revision": "abc", "branch": "main"}),
            repository: json!({"url": "https://git.example/o/p", "project": "p", "level": "1"}),
            now: bbb_clock::parse_ms("2026-05-01T10:00:00.000Z").unwrap(),
            seed: "p\nmain\nabc".into(),
            extra: Map::new(),
        }
    }

    #[test]
    fn tasks_render_with_the_context_and_stable_ids() {
        let yml = r#"
version: 1
tasks:
  - taskId: {$eval: 'as_slugid("decision")'}
    other: "${as_slugid('other')}"
    created: {$fromNow: ''}
    deadline: {$fromNow: '1 day'}
    who: '${push.owner} on ${repository.project} for ${tasks_for} at ${now}'
  - name: second
"#;
        let c = ctx();
        let tasks = render_decision(yml, &c).unwrap();
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[0]["taskId"], c.own_task_id());
        assert_eq!(tasks[0]["other"], c.as_slugid("other"));
        assert_ne!(c.as_slugid("other"), c.own_task_id());
        assert_eq!(tasks[0]["created"], "2026-05-01T10:00:00.000Z");
        assert_eq!(tasks[0]["deadline"], "2026-05-02T10:00:00.000Z");
        assert_eq!(
            tasks[0]["who"],
            "a@example.com on p for github-push at 2026-05-01T10:00:00.000Z"
        );
        assert_eq!(tasks[1]["taskId"], c.as_slugid("task-1"));
        assert!(bbb_service::validate::is_slugid(&c.own_task_id()));
        assert_eq!(render_decision(yml, &c).unwrap(), tasks);
        let other = DecisionContext {
            seed: "p\nmain\ndef".into(),
            ..ctx()
        };
        assert_ne!(other.own_task_id(), c.own_task_id());
    }

    #[test]
    fn broken_files_say_why() {
        let c = ctx();
        assert!(matches!(
            render_decision("tasks: [", &c),
            Err(RenderError::Yaml(_))
        ));
        assert_eq!(
            render_decision("version: 0\ntasks: []", &c),
            Err(RenderError::Version("0".into()))
        );
        let e = render_decision("version: 1\ntasks:\n  - {$eval: 'nosuch.x'}\n", &c).unwrap_err();
        assert!(
            matches!(&e, RenderError::Render(m) if m.contains("nosuch")),
            "{e}"
        );
        let e = render_decision("version: 1\ntasks: 3\n", &c).unwrap_err();
        assert!(matches!(e, RenderError::Shape(_)));
        assert_eq!(render_decision("version: 1\ntasks: []\n", &c), Ok(vec![]));
    }
}
