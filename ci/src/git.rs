//! Git through the `git` program: the heads of a remote (`git ls-remote`),
//! and a bare clone per repository in the cache directory, fetched to read
//! files and commits at a revision.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;

/// Longest a git command may run.
const GIT_TIMEOUT: Duration = Duration::from_secs(300);

/// Run `git args` (in `dir` if given), without a terminal to prompt on and
/// for at most five minutes: its standard output, or an error naming the
/// command with its standard error.
pub async fn git(dir: Option<&Path>, args: &[&str]) -> Result<Vec<u8>, String> {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(GIT_TIMEOUT, cmd.output())
        .await
        .map_err(|_| format!("git {} took longer than {GIT_TIMEOUT:?}", args.join(" ")))?
        .map_err(|e| format!("running git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {} failed ({}): {}",
            args.first().copied().unwrap_or_default(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

/// The branches of the remote at `url` and their heads.
pub async fn ls_remote(url: &str) -> Result<BTreeMap<String, String>, String> {
    let out = git(None, &["ls-remote", "--heads", "--", url]).await?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| {
            let (sha, name) = l.split_once('\t')?;
            Some((name.strip_prefix("refs/heads/")?.to_owned(), sha.to_owned()))
        })
        .collect())
}

/// A commit's author email and time (ms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// The author's email.
    pub author: String,
    /// The commit time, ms.
    pub time_ms: i64,
}

/// A bare clone of one repository.
#[derive(Clone, Debug)]
pub struct Clone {
    dir: PathBuf,
}

impl Clone {
    /// The clone of project `project` under `cache_dir` (made on first fetch).
    pub fn new(cache_dir: &Path, project: &str) -> Clone {
        let safe: String = project
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Clone {
            dir: cache_dir.join(format!("{safe}.git")),
        }
    }

    /// Fetch every branch of `url` into the clone, unless it has `revision`
    /// already.
    pub async fn fetch(&self, url: &str, revision: &str) -> Result<(), String> {
        if !self.dir.join("HEAD").exists() {
            std::fs::create_dir_all(&self.dir)
                .map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
            git(Some(&self.dir), &["init", "--quiet", "--bare"]).await?;
        }
        let want = format!("{revision}^{{commit}}");
        if git(Some(&self.dir), &["cat-file", "-e", &want])
            .await
            .is_ok()
        {
            return Ok(());
        }
        git(
            Some(&self.dir),
            &[
                "fetch",
                "--quiet",
                "--prune",
                "--",
                url,
                "+refs/heads/*:refs/heads/*",
            ],
        )
        .await?;
        git(Some(&self.dir), &["cat-file", "-e", &want])
            .await
            .map(drop)
            .map_err(|_| format!("revision {revision} is not on any branch of {url}"))
    }

    /// The file `path` at `revision` (fetched), or `None` when it has none.
    pub async fn file(&self, revision: &str, path: &str) -> Result<Option<Vec<u8>>, String> {
        let spec = format!("{revision}:{path}");
        if git(Some(&self.dir), &["cat-file", "-e", &spec])
            .await
            .is_err()
        {
            return Ok(None);
        }
        git(Some(&self.dir), &["cat-file", "blob", &spec])
            .await
            .map(Some)
    }

    /// The author and time of `revision` (fetched).
    pub async fn commit(&self, revision: &str) -> Result<CommitInfo, String> {
        let out = git(
            Some(&self.dir),
            &["log", "-1", "--format=%ae%x00%ct", revision, "--"],
        )
        .await?;
        let text = String::from_utf8_lossy(&out);
        let (author, time) = text
            .trim_end()
            .split_once('\0')
            .ok_or_else(|| format!("unexpected git log output {text:?}"))?;
        Ok(CommitInfo {
            author: author.to_owned(),
            time_ms: time.parse::<i64>().map_err(|e| e.to_string())? * 1000,
        })
    }
}
