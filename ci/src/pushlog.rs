//! Mercurial pushlogs: the pushes of an hg repository read from its
//! `json-pushes` (version 2, `full`, the format Mozilla's servers publish),
//! from the last pushlog id bbb took, which the database keeps
//! (`ci_repositories.pushlog_cursor`).
//!
//! Each pushlog push is one push: its head is the push's last changeset,
//! its branch that changeset's named branch, its owner the pushlog's user,
//! its date the pushlog's, its base revision the first changeset's first
//! parent; the ledger keys it by its pushlog id, which the decision context
//! gives as `push.pushlog_id`. Pushes are recorded in pushlog order and the
//! cursor moves past each one once it is recorded (or skipped: a branch bbb
//! does not follow, a push with no visible changeset), only forward, so
//! every push is recorded once whichever process reads the pushlog and
//! however often: a read that fails or stops half-way leaves the cursor at
//! the last push it recorded, and the next read goes on from there.
//!
//! The first read of a pushlog starts at its last push (like the head a git
//! branch has when bbb first sees it), unless a Pulse message names the
//! pushes to start from.

use crate::Ci;
use crate::store::{NewPush, Repository, Store};
use bbb_clock::Millis;
use serde::Deserialize;
use sqlx::Row;
use std::collections::BTreeMap;

/// How many pushes one request asks for (`endID - startID`).
pub const BATCH: i64 = 100;

/// A `json-pushes?version=2` answer.
#[derive(Clone, Debug, Deserialize)]
pub struct Page {
    /// The id of the last push the server has.
    pub lastpushid: i64,
    /// The pushes asked for, by id (a decimal string).
    #[serde(default)]
    pub pushes: BTreeMap<String, PushlogPush>,
}

/// One push of a pushlog.
#[derive(Clone, Debug, Deserialize)]
pub struct PushlogPush {
    /// Who pushed.
    pub user: String,
    /// When, seconds since the epoch (an integer on Mozilla's servers; a
    /// fraction is kept to the millisecond).
    pub date: f64,
    /// The changesets it added that are visible (with `full=1`), oldest
    /// first; the tip-most is last.
    #[serde(default)]
    pub changesets: Vec<Changeset>,
}

/// A changeset of a push (with `full=1`).
#[derive(Clone, Debug, Deserialize)]
pub struct Changeset {
    /// Its 40-digit hex id.
    pub node: String,
    /// Its named branch.
    #[serde(default = "default_branch")]
    pub branch: String,
    /// Its parents' ids.
    #[serde(default)]
    pub parents: Vec<String>,
}

fn default_branch() -> String {
    "default".into()
}

impl Page {
    /// The pushes, by id ascending.
    pub fn in_order(&self) -> Result<Vec<(i64, &PushlogPush)>, String> {
        let mut out = self
            .pushes
            .iter()
            .map(|(k, p)| {
                k.parse::<i64>()
                    .map(|id| (id, p))
                    .map_err(|_| format!("the pushlog names a push {k:?}, not a number"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|(id, _)| *id);
        Ok(out)
    }
}

/// `<base>/json-pushes?version=2&full=1&startID=<start>&endID=<end>`: the
/// pushes whose id is above `start` and at most `end`.
pub fn pushes_url(base: &str, start: i64, end: i64) -> String {
    format!("{base}/json-pushes?version=2&full=1&startID={start}&endID={end}")
}

/// Read the pushes above `start`, at most `end`, of the hgweb repository at
/// `base`.
pub async fn fetch(base: &str, start: i64, end: i64) -> Result<Page, String> {
    let url = pushes_url(base, start, end);
    let (status, body) = crate::hg::get(&url).await?;
    if status != 200 {
        return Err(format!(
            "GET {url}: {status} {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not a version 2 pushlog: {e}"))
}

impl Store {
    /// The id of the last pushlog push taken for `project`.
    pub async fn pushlog_cursor(&self, project: &str) -> crate::store::Result<Option<i64>> {
        let row = sqlx::query("SELECT pushlog_cursor FROM ci_repositories WHERE project = $1")
            .bind(project)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| r.try_get::<Option<i64>, _>("pushlog_cursor"))
            .transpose()?
            .flatten())
    }

    /// Start `project`'s pushlog after push `id`, unless it has started.
    pub async fn start_pushlog(&self, project: &str, id: i64) -> crate::store::Result<()> {
        sqlx::query(
            "UPDATE ci_repositories SET pushlog_cursor = $2 \
             WHERE project = $1 AND pushlog_cursor IS NULL",
        )
        .bind(project)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Move `project`'s pushlog cursor to `id`, never back.
    pub async fn advance_pushlog(&self, project: &str, id: i64) -> crate::store::Result<()> {
        sqlx::query(
            "UPDATE ci_repositories SET pushlog_cursor = $2 \
             WHERE project = $1 AND (pushlog_cursor IS NULL OR pushlog_cursor < $2)",
        )
        .bind(project)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl Ci {
    /// Read `repo`'s pushlog from its cursor to its end, recording each
    /// push (as from `source`: `poll` or `pulse`). A pushlog not read before
    /// starts after push `start_after` when given, else at its last push.
    /// Returns how many pushes were new.
    pub async fn poll_pushlog(
        &self,
        repo: &Repository,
        source: &'static str,
        start_after: Option<i64>,
    ) -> Result<usize, String> {
        let base = crate::hg::base_url(repo)?;
        let db = |e: bbb_service::ApiError| e.to_string();
        let mut cursor = match self.store.pushlog_cursor(&repo.project).await.map_err(db)? {
            Some(c) => c,
            None => {
                let start = match start_after {
                    Some(s) => s.max(0),
                    None => fetch(base, 0, 0).await?.lastpushid,
                };
                self.store
                    .start_pushlog(&repo.project, start)
                    .await
                    .map_err(db)?;
                tracing::info!(
                    ci.project = %repo.project, pushlog.id = start,
                    "following the pushlog from here"
                );
                match self.store.pushlog_cursor(&repo.project).await.map_err(db)? {
                    Some(c) => c,
                    None => return Err("the repository is no longer configured".into()),
                }
            }
        };
        let mut recorded = 0;
        loop {
            let end = cursor + BATCH;
            let page = fetch(base, cursor, end).await?;
            let pushes = page.in_order()?;
            if pushes.is_empty() {
                if page.lastpushid > end {
                    // No push in (cursor, end] though later ones exist: a gap.
                    self.store
                        .advance_pushlog(&repo.project, end)
                        .await
                        .map_err(db)?;
                    cursor = end;
                    continue;
                }
                return Ok(recorded);
            }
            for (id, p) in pushes {
                if id <= cursor || id > end {
                    continue;
                }
                if let Some(push) = new_push(repo, p, source) {
                    if self.record_pushlog_push(&push, id).await.map_err(db)? {
                        recorded += 1;
                    }
                } else {
                    tracing::info!(
                        ci.project = %repo.project, pushlog.id = id,
                        "the push has no visible changeset; skipped"
                    );
                }
                self.store
                    .advance_pushlog(&repo.project, id)
                    .await
                    .map_err(db)?;
                cursor = id;
            }
            if page.lastpushid <= cursor {
                return Ok(recorded);
            }
        }
    }

    /// Record the push `id` of a pushlog (once: the ledger keys it by its
    /// pushlog id) and wake the decision loop. Whether it was new; a push
    /// to a branch not followed is not recorded.
    pub async fn record_pushlog_push(&self, push: &NewPush, id: i64) -> crate::store::Result<bool> {
        let now: Millis = self.clock.now_ms();
        let new = self
            .store
            .record_keyed_push(push, &id.to_string(), Some(id), now)
            .await?;
        if let Some(ledger) = new {
            tracing::info!(
                ci.project = %push.project, ci.branch = %push.branch, push.id = ledger,
                pushlog.id = id, revision = %push.revision, source = push.source,
                "push recorded"
            );
            self.pushed.notify_one();
        }
        Ok(new.is_some())
    }
}

/// The push a pushlog push comes to, `None` when it has no visible
/// changeset.
pub fn new_push(repo: &Repository, p: &PushlogPush, source: &'static str) -> Option<NewPush> {
    let tip = p.changesets.last()?;
    Some(NewPush {
        project: repo.project.clone(),
        branch: tip.branch.clone(),
        revision: tip.node.clone(),
        base_revision: p
            .changesets
            .first()
            .and_then(|c| c.parents.first().cloned()),
        owner: p.user.clone(),
        pushdate: (p.date * 1000.0) as Millis,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_2_page_reads_in_order() {
        let page: Page = serde_json::from_str(
            r#"{"lastpushid": 12, "pushes": {
                "12": {"user": "b@x", "date": 20, "changesets": [
                    {"node": "c2", "branch": "beta", "parents": ["c1"], "desc": "d", "author": "A",
                     "tags": [], "files": ["f"]}]},
                "9": {"user": "a@x", "date": 10, "changesets": [
                    {"node": "c0", "branch": "default", "parents": ["0000"]},
                    {"node": "c1", "branch": "default", "parents": ["c0"]}]},
                "10": {"user": "a@x", "date": 11, "changesets": []}
            }}"#,
        )
        .unwrap();
        let pushes = page.in_order().unwrap();
        let ids: Vec<i64> = pushes.iter().map(|(i, _)| *i).collect();
        assert_eq!(ids, [9, 10, 12]);
        let repo = Repository::from_config(&crate::config::RepositoryConfig {
            project: "p".into(),
            url: "https://hg.example/p".into(),
            clone_url: None,
            kind: crate::Kind::Hg,
            trust_domain: "t".into(),
            level: 1,
            poll: true,
            webhook_secret: None,
            branches: vec![],
        });
        let push = new_push(&repo, pushes[0].1, "poll").unwrap();
        assert_eq!(
            (
                &*push.branch,
                &*push.revision,
                push.base_revision.as_deref()
            ),
            ("default", "c1", Some("0000"))
        );
        assert_eq!((&*push.owner, push.pushdate), ("a@x", 10_000));
        assert!(
            new_push(&repo, pushes[1].1, "poll").is_none(),
            "no changeset"
        );
        let beta = new_push(&repo, pushes[2].1, "pulse").unwrap();
        assert_eq!((&*beta.branch, beta.source), ("beta", "pulse"));
        assert_eq!(
            pushes_url("http://h/r", 9, 109),
            "http://h/r/json-pushes?version=2&full=1&startID=9&endID=109"
        );
        let bad: Page =
            serde_json::from_str(r#"{"lastpushid": 1, "pushes": {"x": {"user": "u", "date": 1}}}"#)
                .unwrap();
        assert!(bad.in_order().is_err());
    }
}
