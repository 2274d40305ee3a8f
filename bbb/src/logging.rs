//! Logging for every command: `tracing` events to standard error.
//!
//! - `BBB_LOG` is an `EnvFilter` directive list (`RUST_LOG` syntax). Without
//!   it, bbb's own crates log at INFO and every other crate at WARN, so
//!   libraries' chatter stays out of `bbb up`'s banner and of service logs.
//! - `BBB_LOG_FORMAT` is `text` (the default) or `json` (one object per line,
//!   with the current span's fields, for log shippers).
//! - Text gets colour codes only when standard error is a terminal: log files
//!   and pipes get plain text.
//!
//! The fields every event carries where they apply, and the other logging
//! conventions, are in ARCHITECTURE.md.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The crates of this workspace: they log at INFO by default.
pub const OWN_CRATES: &[&str] = &[
    "bbb",
    "bbb_auth",
    "bbb_auth_api",
    "bbb_bench",
    "bbb_bridge",
    "bbb_ci",
    "bbb_clock",
    "bbb_envlayer",
    "bbb_hooks",
    "bbb_buildbot",
    "bbb_index",
    "bbb_listeners",
    "bbb_login",
    "bbb_migration",
    "bbb_pulse",
    "bbb_queue",
    "bbb_reflector",
    "bbb_scenarios",
    "bbb_secret",
    "bbb_service",
    "bbb_sqlstore",
    "bbb_state",
    "bbb_taskcli",
    "bbb_testdb",
    "bbb_tcvalues",
    "bbb_web",
    "bbb_workers",
];

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Format {
    /// Reads a `BBB_LOG_FORMAT` value.
    pub fn parse(value: &str) -> anyhow::Result<Format> {
        match value.trim() {
            "" | "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            other => anyhow::bail!("BBB_LOG_FORMAT={other:?}: expected text or json"),
        }
    }
}

/// The filter used without `BBB_LOG`: WARN, and INFO for [`OWN_CRATES`].
pub fn default_filter() -> String {
    std::iter::once("warn".to_owned())
        .chain(OWN_CRATES.iter().map(|c| format!("{c}=info")))
        .collect::<Vec<_>>()
        .join(",")
}

/// Installs the global subscriber from `BBB_LOG` and `BBB_LOG_FORMAT`.
pub fn init() -> anyhow::Result<()> {
    let filter = match std::env::var("BBB_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .map_err(|e| anyhow::anyhow!("BBB_LOG={directives:?}: {e}"))?,
        _ => EnvFilter::new(default_filter()),
    };
    let format = Format::parse(&std::env::var("BBB_LOG_FORMAT").unwrap_or_default())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        Format::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        Format::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every package of the workspace logs at INFO by default: a new crate
    /// must be added to [`OWN_CRATES`].
    #[test]
    fn every_workspace_crate_is_an_own_crate() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let workspace: toml::Table =
            toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
        let members = workspace["workspace"]["members"].as_array().unwrap();
        for member in members {
            let manifest = root.join(member.as_str().unwrap()).join("Cargo.toml");
            let package: toml::Table =
                toml::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
            let name = package["package"]["name"]
                .as_str()
                .unwrap()
                .replace('-', "_");
            assert!(
                OWN_CRATES.contains(&name.as_str()),
                "{name} ({}) is missing from OWN_CRATES",
                manifest.display()
            );
        }
    }

    #[test]
    fn formats_and_the_default_filter() {
        assert_eq!(Format::parse("").unwrap(), Format::Text);
        assert_eq!(Format::parse("json").unwrap(), Format::Json);
        assert!(Format::parse("xml").is_err());
        let filter = default_filter();
        assert!(filter.starts_with("warn,"), "{filter}");
        assert!(filter.contains("bbb_queue=info"), "{filter}");
        EnvFilter::try_new(&filter).unwrap();
    }
}
