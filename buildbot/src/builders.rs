//! Builder validation: which builder names a master accepts.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use bbb_secret::{SecretUrl, mask_url};

use crate::error::{LegacyError, Result};

/// Where the list of accepted builder names comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BuilderSource {
    /// No list: every builder is accepted.
    #[default]
    Any,
    /// A fixed list.
    List(Vec<String>),
    /// A JSON document fetched over HTTP and cached for `refresh`: either a
    /// list of names (`["a", "b"]`) or an object with a `builders` object
    /// whose keys are the names, like Mozilla's `allthethings.json`.
    Url {
        /// Where to fetch it (its password, if any, masked in `Debug`).
        url: SecretUrl,
        /// How long a fetched list is used before fetching again (Mozilla's
        /// bridge used 300 s).
        refresh: Duration,
    },
}

/// Fetches and caches the builder list of a [`BuilderSource`].
#[derive(Debug)]
pub(crate) struct BuilderCatalog {
    source: BuilderSource,
    http: reqwest::Client,
    cache: Mutex<Option<(Instant, Vec<String>)>>,
}

impl BuilderCatalog {
    pub(crate) fn new(source: BuilderSource, http: reqwest::Client) -> Self {
        Self {
            source,
            http,
            cache: Mutex::new(None),
        }
    }

    pub(crate) async fn builders(&self) -> Result<Option<Vec<String>>> {
        match &self.source {
            BuilderSource::Any => Ok(None),
            BuilderSource::List(list) => Ok(Some(list.clone())),
            BuilderSource::Url { url, refresh } => {
                let mut cache = self.cache.lock().await;
                if let Some((fetched, list)) = cache.as_ref()
                    && fetched.elapsed() < *refresh
                {
                    return Ok(Some(list.clone()));
                }
                match self.fetch(url.expose()).await {
                    Ok(list) => {
                        *cache = Some((Instant::now(), list.clone()));
                        Ok(Some(list))
                    }
                    Err(error) => {
                        // A stale list beats refusing every task while the
                        // list's server is down.
                        if let Some((_, list)) = cache.as_ref() {
                            tracing::warn!(%url, %error, "builder list refresh failed, using the cached list");
                            return Ok(Some(list.clone()));
                        }
                        Err(error)
                    }
                }
            }
        }
    }

    async fn fetch(&self, url: &str) -> Result<Vec<String>> {
        let http_error = |reason: String| LegacyError::Http {
            url: mask_url(url),
            reason,
        };
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| http_error(e.to_string()))?;
        if !response.status().is_success() {
            return Err(http_error(format!("status {}", response.status())));
        }
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|e| http_error(e.to_string()))?;
        let list = parse_builder_list(&body).ok_or_else(|| {
            http_error("expected a JSON list of names or an object with \"builders\"".to_owned())
        })?;
        tracing::debug!(url = %mask_url(url), builders = list.len(), "fetched builder list");
        Ok(list)
    }
}

/// Reads a list of names or an `allthethings.json`-style object.
fn parse_builder_list(body: &serde_json::Value) -> Option<Vec<String>> {
    match body {
        serde_json::Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect(),
        serde_json::Value::Object(map) => match map.get("builders")? {
            serde_json::Value::Object(builders) => Some(builders.keys().cloned().collect()),
            list @ serde_json::Value::Array(_) => parse_builder_list(list),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_builder_list;
    use serde_json::json;

    #[test]
    fn parses_lists_and_allthethings() {
        assert_eq!(
            parse_builder_list(&json!(["a", "b"])),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(
            parse_builder_list(
                &json!({"builders": {"x": {}, "y": {"slavepool": 1}}, "slaves": {}})
            ),
            Some(vec!["x".to_owned(), "y".to_owned()])
        );
        assert_eq!(parse_builder_list(&json!({"other": 1})), None);
        assert_eq!(parse_builder_list(&json!([1])), None);
    }
}
