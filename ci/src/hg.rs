//! Mercurial repositories over HTTP, as hgweb serves them: files at a
//! revision through `<url>/raw-file/<rev>/<path>` (how upstream's hg-push
//! decision reads `.taskcluster.yml`), and the pushlog through
//! `<url>/json-pushes` ([`crate::pushlog`]).
//!
//! bbb reads Mercurial files over HTTP rather than keeping a clone: a
//! pushlog is an hgweb command, so every repository bbb can follow serves
//! `raw-file` too; a file is one request, where a clone of a large
//! repository (mozilla-central) is gigabytes per replica; and no `hg`
//! program is needed where bbb runs.

use crate::store::Repository;
use crate::{Ci, Kind};
use std::sync::OnceLock;
use std::time::Duration;

/// Longest an HTTP request to a Mercurial server may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// The HTTP client every request to Mercurial servers goes through.
pub fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .user_agent(concat!("bbb-ci/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client")
    })
}

/// The hgweb URL of `repo` (its `clone_url`, else its `url`, without a
/// trailing `/`), which must be `http://` or `https://`.
pub fn base_url(repo: &Repository) -> Result<&str, String> {
    let url = repo.fetch_url().trim_end_matches('/');
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(url)
    } else {
        Err(format!(
            "the Mercurial repository {} is read over HTTP (hgweb), but its URL is {url}",
            repo.project
        ))
    }
}

/// `GET url`: the status and body, or an error naming the URL.
pub async fn get(url: &str) -> Result<(u16, Vec<u8>), String> {
    let res = client()
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = res.status().as_u16();
    let body = res
        .bytes()
        .await
        .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
    Ok((status, body.to_vec()))
}

/// The file `path` at `revision` of the hgweb repository at `base`: its
/// bytes, `None` when the revision has no such file (hgweb's 404 "not found
/// in manifest"), an error otherwise (an unknown revision, as on a mirror
/// that has not replicated the push yet, is an error that may pass).
pub async fn raw_file(base: &str, revision: &str, path: &str) -> Result<Option<Vec<u8>>, String> {
    let url = format!("{base}/raw-file/{revision}/{path}");
    let (status, body) = get(&url).await?;
    match status {
        200 => Ok(Some(body)),
        404 if String::from_utf8_lossy(&body).contains("not found in manifest") => Ok(None),
        _ => Err(format!(
            "GET {url}: {status} {}",
            String::from_utf8_lossy(&body).trim()
        )),
    }
}

impl Ci {
    /// The file `path` at `revision` of `repo`, `None` when it has none:
    /// for git from this process's clone (fetched first), for hg from hgweb.
    /// An error may pass (tried again later).
    pub async fn read_file(
        &self,
        repo: &Repository,
        revision: &str,
        path: &str,
    ) -> Result<Option<Vec<u8>>, String> {
        match repo.kind {
            Kind::Git => self.fetch(repo, revision).await?.file(revision, path).await,
            Kind::Hg => raw_file(base_url(repo)?, revision, path).await,
        }
    }
}
