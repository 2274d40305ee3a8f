//! The deployment and the credentials a command uses, from the usual
//! `TASKCLUSTER_*` variables.

use std::time::Duration;

use taskcluster::{ClientBuilder, Credentials, Queue};

use crate::{CliError, Result};

/// The variables every `bbb task` and `bbb group` command reads, for their
/// `--help`.
pub const ENV_HELP: &str = "\
Environment:
  TASKCLUSTER_ROOT_URL      the deployment's root URL (required)
  TASKCLUSTER_CLIENT_ID     the client id of the credentials (without it and the
                            access token, calls are made without credentials)
  TASKCLUSTER_ACCESS_TOKEN  their access token
  TASKCLUSTER_CERTIFICATE   the certificate of temporary credentials";

/// A queue client for one deployment, with the caller's credentials (or
/// none), and an HTTP client for logs.
pub struct Session {
    root_url: String,
    queue: Queue,
    http: reqwest_tc::Client,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("root_url", &self.root_url)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// From the process's environment: `TASKCLUSTER_ROOT_URL`, and
    /// `TASKCLUSTER_CLIENT_ID`, `TASKCLUSTER_ACCESS_TOKEN` and
    /// `TASKCLUSTER_CERTIFICATE` when set.
    pub fn from_env() -> Result<Session> {
        Session::from_lookup(|name| std::env::var(name).ok())
    }

    /// From the variables `lookup` gives (an empty value counts as unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Session> {
        let var = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let root_url = var("TASKCLUSTER_ROOT_URL").ok_or_else(|| {
            CliError("TASKCLUSTER_ROOT_URL must be set to the deployment's root URL".to_owned())
        })?;
        let credentials = match (
            var("TASKCLUSTER_CLIENT_ID"),
            var("TASKCLUSTER_ACCESS_TOKEN"),
        ) {
            (Some(client_id), Some(access_token)) => Some(match var("TASKCLUSTER_CERTIFICATE") {
                Some(certificate) => {
                    Credentials::new_with_certificate(client_id, access_token, certificate)
                }
                None => Credentials::new(client_id, access_token),
            }),
            (None, None) => None,
            _ => {
                return Err(CliError(
                    "TASKCLUSTER_CLIENT_ID and TASKCLUSTER_ACCESS_TOKEN must be set together"
                        .to_owned(),
                ));
            }
        };
        Session::new(&root_url, credentials)
    }

    /// For the deployment at `root_url` with `credentials` (`None`: calls
    /// without credentials).
    pub fn new(root_url: &str, credentials: Option<Credentials>) -> Result<Session> {
        let root_url = root_url.trim_end_matches('/').to_owned();
        let queue = queue(&root_url, credentials)?;
        let http = reqwest_tc::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| CliError(format!("cannot make an HTTP client: {e}")))?;
        Ok(Session {
            root_url,
            queue,
            http,
        })
    }

    /// The deployment's root URL.
    pub fn root_url(&self) -> &str {
        &self.root_url
    }

    /// The queue client, with the caller's credentials.
    pub(crate) fn queue(&self) -> &Queue {
        &self.queue
    }

    /// A queue client of the same deployment with other credentials (a
    /// claim's).
    pub(crate) fn queue_with(&self, credentials: Credentials) -> Result<Queue> {
        queue(&self.root_url, Some(credentials))
    }

    /// The HTTP client logs are streamed with (it follows redirects and
    /// never times a stream out).
    pub(crate) fn http(&self) -> &reqwest_tc::Client {
        &self.http
    }
}

fn queue(root_url: &str, credentials: Option<Credentials>) -> Result<Queue> {
    let mut builder = ClientBuilder::new(root_url);
    if let Some(credentials) = credentials {
        builder = builder.credentials(credentials);
    }
    Queue::new(builder).map_err(|e| CliError(format!("cannot make a queue client: {e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn the_root_url_is_required() {
        let error = Session::from_lookup(lookup(&[])).unwrap_err();
        assert!(error.0.contains("TASKCLUSTER_ROOT_URL"), "{error}");
        let error = Session::from_lookup(lookup(&[("TASKCLUSTER_ROOT_URL", "")])).unwrap_err();
        assert!(error.0.contains("TASKCLUSTER_ROOT_URL"), "{error}");
    }

    #[test]
    fn credentials_are_optional_but_whole() {
        let anonymous =
            Session::from_lookup(lookup(&[("TASKCLUSTER_ROOT_URL", "http://tc.example/")]))
                .unwrap();
        assert_eq!(anonymous.root_url(), "http://tc.example");
        let half = Session::from_lookup(lookup(&[
            ("TASKCLUSTER_ROOT_URL", "http://tc.example"),
            ("TASKCLUSTER_CLIENT_ID", "me"),
        ]))
        .unwrap_err();
        assert!(half.0.contains("together"), "{half}");
        Session::from_lookup(lookup(&[
            ("TASKCLUSTER_ROOT_URL", "http://tc.example"),
            ("TASKCLUSTER_CLIENT_ID", "me"),
            ("TASKCLUSTER_ACCESS_TOKEN", "secret"),
            ("TASKCLUSTER_CERTIFICATE", "{}"),
        ]))
        .unwrap();
    }
}
