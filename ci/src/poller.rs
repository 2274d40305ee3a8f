//! Polling repositories: every `poll_interval_ms`, each repository with
//! `poll` set: a Mercurial one's pushlog ([`crate::pushlog`]); for git,
//! `git ls-remote`, and a followed branch whose head moved since
//! the last poll gets a push recorded (revision fetched first, for its
//! author). The head a branch has when it is first seen is its starting
//! point, not a push. A failed poll is recorded on the repository (shown by
//! the API) and tried again after a backoff; the heads it did not record
//! stay as they were, so the next poll that works records the push.

use crate::store::{NewPush, Repository};
use crate::{Ci, Kind};
use bbb_clock::Millis;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::watch;

impl Ci {
    /// Poll `repo` once: record the pushes on its followed branches (for
    /// hg, those of its pushlog: [`Ci::poll_pushlog`]). Returns how many
    /// were new.
    pub async fn poll(&self, repo: &Repository) -> Result<usize, String> {
        if repo.kind == Kind::Hg {
            return self.poll_pushlog(repo, "poll", None).await;
        }
        let heads = crate::git::ls_remote(repo.fetch_url()).await?;
        let mut recorded = 0;
        for branch in &repo.branches {
            let Some(head) = heads.get(&branch.name) else {
                continue;
            };
            if branch.polled_head.as_deref() == Some(head.as_str()) {
                continue;
            }
            if branch.polled_head.is_some() {
                let clone = self.fetch(repo, head).await?;
                let commit = clone.commit(head).await?;
                let push = NewPush {
                    project: repo.project.clone(),
                    branch: branch.name.clone(),
                    revision: head.clone(),
                    base_revision: branch.polled_head.clone(),
                    owner: commit.author,
                    pushdate: self.clock.now_ms(),
                    source: "poll",
                };
                if self
                    .record(&push)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some()
                {
                    recorded += 1;
                }
            }
            self.store
                .set_polled_head(&repo.project, &branch.name, head)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(recorded)
    }
}

/// Poll every polled repository when it is due, until `stop` turns true.
pub async fn run(ci: Ci, mut stop: watch::Receiver<bool>) {
    let tick = Duration::from_millis(ci.cfg.poll_interval_ms.clamp(1, 1000));
    let mut due: HashMap<String, Millis> = HashMap::new();
    loop {
        match ci.store.repositories().await {
            Ok(repos) => {
                for repo in repos.iter().filter(|r| r.poll) {
                    if *stop.borrow() {
                        return;
                    }
                    let now = ci.clock.now_ms();
                    if due.get(&repo.project).is_some_and(|d| *d > now) {
                        continue;
                    }
                    let result = ci.poll(repo).await;
                    let now = ci.clock.now_ms();
                    let error = result.as_ref().err().map(String::as_str);
                    let failures = match ci.store.poll_ended(&repo.project, now, error).await {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::warn!(ci.project = %repo.project, error = %e, "recording a poll failed");
                            1
                        }
                    };
                    let wait = match &result {
                        Ok(_) => ci.cfg.poll_interval_ms as Millis,
                        Err(e) => {
                            let wait = ci.backoff(failures);
                            tracing::warn!(
                                ci.project = %repo.project, error = %e, retry_in_ms = wait,
                                "polling the repository failed"
                            );
                            wait
                        }
                    };
                    due.insert(repo.project.clone(), now + wait);
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the repositories to poll failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => return,
        }
    }
}
