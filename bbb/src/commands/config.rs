//! `bbb config --print`: the effective configuration (file, then
//! environment), secrets masked.

use crate::config::{FileConfig, Printable};

/// Prints the effective configuration when `print` is set; otherwise only
/// checks that it reads.
pub fn run(file: &FileConfig, print: bool) -> anyhow::Result<()> {
    let queue = file.queue_config()?.masked();
    let mut worker = file.worker_config_unchecked()?;
    if !worker.access_token.is_empty() {
        worker.access_token = "***".into();
    }
    let bridge = file.bridge_config()?.masked();
    let hooks = file.hooks_config()?;
    if print {
        println!(
            "{}",
            toml::to_string_pretty(&Printable {
                queue,
                worker,
                bridge,
                hooks,
            })?
        );
    }
    Ok(())
}
