//! `bbb bridge` and its single-role variants (`tc-listener`, `bb-listener`,
//! `reflector`), until SIGINT/SIGTERM or until a role stops.

use bbb_secret::SecretUrl;

use crate::config::FileConfig;
use crate::roles::{self, RoleSet};

/// Runs the roles of `set` on the configured legacy master.
pub async fn run(file: &FileConfig, set: RoleSet) -> anyhow::Result<()> {
    let cfg = file.bridge_config()?;
    cfg.validate().map_err(anyhow::Error::msg)?;
    if cfg.amqp_url.is_none() && cfg.buildbot_kind != bbb_bridge::BuildbotKind::Sandbox {
        anyhow::bail!(
            "BBB_AMQP_URL is required: the bridge reads the queue's Pulse exchanges \
             (and the masters' build events) from the broker"
        );
    }
    let bus = bbb_pulse::Bus::connect(cfg.amqp_url.as_ref().map(SecretUrl::expose)).await?;
    let master = roles::legacy_master(&cfg, &bus).await?;
    let running = roles::start(&cfg, set, bus.clone(), master).await?;
    if let Some(addr) = running.metrics_addr {
        println!("bbb bridge running; metrics on http://{addr}/metrics");
    }
    let failed = running.failed.clone();
    let role_failed = tokio::select! {
        _ = super::shutdown_signal() => false,
        _ = failed.cancelled() => true,
    };
    running.shutdown().await;
    bus.close().await;
    if role_failed {
        anyhow::bail!("a bridge role stopped; exiting so the supervisor restarts the process");
    }
    Ok(())
}
