//! `bbb config --print`: the effective configuration (file, then
//! environment), secrets masked.

use crate::config::{FileConfig, Printable};

/// Prints the effective configuration when `print` is set; otherwise only
/// checks that it reads. Secrets print themselves masked (`bbb_secret`).
pub fn run(file: &FileConfig, print: bool) -> anyhow::Result<()> {
    let printable = Printable {
        queue: file.queue_config()?,
        worker: file.worker_config_unchecked()?,
        bridge: file.bridge_config()?,
        hooks: file.hooks_config()?,
        ci: file.ci_config()?,
        migration: file.migration_section()?,
        login: file.login_config()?,
        web: file.web_section()?,
    };
    if print {
        println!("{}", toml::to_string_pretty(&printable)?);
    }
    Ok(())
}
