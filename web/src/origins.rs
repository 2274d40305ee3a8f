//! Which workers' live logs the task pages may stream through: the `[web]`
//! section's `live_log_origins`, plus the origin of the live-log server of a
//! native worker running in the same process (`bbb up`).
//!
//! A run's live log is a reference artifact whose URL whoever holds the
//! run's claim chooses; `/tasks/<taskId>/runs/<runId>/log` fetches it from
//! bbb's own address. Without a list of allowed origins, anyone with a claim
//! could make bbb request any URL it can reach (its own network, a cloud
//! metadata service) and read the answer: a server-side request forgery.

use std::sync::{Arc, RwLock};

use bbb_envlayer::{EnvError, Var, set_list};
use reqwest::Url;
use serde::{Deserialize, Serialize};

/// The `[web]` section of the configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSection {
    /// The origins (`scheme://host[:port]`) of the workers whose live logs
    /// the task pages may stream through. Empty by default: only the live log
    /// of a native worker in the same process (`bbb up`) is read.
    pub live_log_origins: Vec<String>,
}

impl WebSection {
    /// The `BBB_WEB_*` variables that override the section.
    pub const ENV: &'static [Var<WebSection>] = &[Var::new(
        "BBB_WEB_LIVE_LOG_ORIGINS",
        "comma-separated origins (scheme://host:port) of the workers whose live logs the task pages stream through (live_log_origins)",
        |c, v| set_list(&mut c.live_log_origins, v),
    )];

    /// Apply the `BBB_WEB_*` overrides of the process environment.
    pub fn apply_env(&mut self) -> Result<(), EnvError> {
        self.apply_vars(bbb_envlayer::from_env)
    }

    /// Apply the `BBB_WEB_*` overrides `lookup` gives; empty values are ignored.
    pub fn apply_vars(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<(), EnvError> {
        bbb_envlayer::apply(Self::ENV, self, lookup)
    }

    /// The allowed origins, each checked ([`configured_origin`]).
    pub fn live_log_origins(&self) -> Result<LiveLogOrigins, String> {
        let origins = self
            .live_log_origins
            .iter()
            .map(|o| configured_origin(o))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LiveLogOrigins(Arc::new(RwLock::new(origins))))
    }
}

/// The origin of an `http` or `https` URL (`scheme://host[:port]`, the port
/// left out when it is the scheme's default), or why it has none.
pub fn origin_of(url: &str) -> Result<String, String> {
    let parsed = Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(format!("{url:?} is not an http or https URL"));
    }
    Ok(parsed.origin().ascii_serialization())
}

/// An origin as the configuration names it: an `http` or `https` URL with
/// nothing after its host and port (a trailing `/` aside), written as
/// [`origin_of`] writes it.
pub fn configured_origin(text: &str) -> Result<String, String> {
    let origin = origin_of(text).map_err(|e| format!("[web] live_log_origins: {e}"))?;
    let parsed = Url::parse(text).map_err(|e| e.to_string())?;
    if parsed.path() != "/"
        || parsed.query().is_some()
        || parsed.fragment().is_some()
        || !parsed.username().is_empty()
        || parsed.password().is_some()
    {
        return Err(format!(
            "[web] live_log_origins: {text:?} is not an origin (scheme://host[:port], no path)"
        ));
    }
    Ok(origin)
}

/// The origins the live-log endpoint may fetch from. Clones share one list,
/// so an origin allowed after the web UI is mounted (a worker started later
/// in the same process: [`LiveLogOrigins::allow`]) counts at once.
#[derive(Clone, Debug, Default)]
pub struct LiveLogOrigins(Arc<RwLock<Vec<String>>>);

impl LiveLogOrigins {
    /// No origin allowed: no live log is read.
    pub fn none() -> LiveLogOrigins {
        LiveLogOrigins::default()
    }

    /// Allow the origin of `url` (e.g. a worker's live-log server's base
    /// URL); returns it.
    pub fn allow(&self, url: &str) -> Result<String, String> {
        let origin = origin_of(url)?;
        let mut list = self.0.write().unwrap_or_else(|e| e.into_inner());
        if !list.contains(&origin) {
            list.push(origin.clone());
        }
        Ok(origin)
    }

    /// Whether `url` is an `http` or `https` URL at one of the origins.
    pub fn allows(&self, url: &str) -> bool {
        let Ok(origin) = origin_of(url) else {
            return false;
        };
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&origin)
    }

    /// The origins allowed now.
    pub fn origins(&self) -> Vec<String> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bbb_envlayer::testing::{Sample, assert_each_variable_sets_its_field};

    #[test]
    fn origins_are_compared_as_browsers_compare_them() {
        let o = WebSection {
            live_log_origins: vec![
                "http://127.0.0.1:60023".into(),
                "https://Logs.Example.com/".into(),
            ],
        }
        .live_log_origins()
        .unwrap();
        assert_eq!(
            o.origins(),
            ["http://127.0.0.1:60023", "https://logs.example.com"]
        );
        assert!(o.allows("http://127.0.0.1:60023/log/abc"));
        assert!(o.allows("https://logs.example.com:443/log/abc?x=1"));
        for other in [
            "http://127.0.0.1:60024/log/abc",
            "https://127.0.0.1:60023/log/abc",
            "http://logs.example.com/log/abc",
            "https://logs.example.com.evil.example/log",
            "https://logs.example.com@169.254.169.254/latest/meta-data/",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(!o.allows(other), "{other}");
        }
        assert!(!LiveLogOrigins::none().allows("http://127.0.0.1:60023/log/abc"));
    }

    #[test]
    fn a_worker_started_later_is_allowed_in_every_clone() {
        let o = LiveLogOrigins::none();
        let seen_by_the_pages = o.clone();
        assert_eq!(
            o.allow("http://127.0.0.1:41234").unwrap(),
            "http://127.0.0.1:41234"
        );
        o.allow("http://127.0.0.1:41234/").unwrap();
        assert_eq!(seen_by_the_pages.origins(), ["http://127.0.0.1:41234"]);
        assert!(seen_by_the_pages.allows("http://127.0.0.1:41234/log/t"));
        assert!(o.allow("ftp://x").is_err());
    }

    #[test]
    fn what_is_not_an_origin_is_refused() {
        for bad in [
            "127.0.0.1:60023",
            "http://127.0.0.1:60023/log",
            "http://user@127.0.0.1",
            "http://127.0.0.1/?a",
            "ftp://example.com",
            "",
        ] {
            let s = WebSection {
                live_log_origins: vec![bad.into()],
            };
            assert!(s.live_log_origins().is_err(), "{bad}");
        }
    }

    #[test]
    fn environment() {
        let samples: Vec<Sample<WebSection>> = vec![(
            "BBB_WEB_LIVE_LOG_ORIGINS",
            "http://10.0.0.5:60023, https://logs.example.com",
            |c| c.live_log_origins == ["http://10.0.0.5:60023", "https://logs.example.com"],
        )];
        assert_each_variable_sets_its_field(WebSection::ENV, &samples);
    }
}
