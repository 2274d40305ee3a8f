//! Monitoring: `__heartbeat__` and `__version__` (the framework serves `ping`
//! and `__lbheartbeat__`).

use super::Api;
use crate::core::Queue;
use crate::error::Result;
use bbb_service::{Call, Reply};
use serde_json::{Value, json};

/// `__heartbeat__`: the database answers.
pub async fn heartbeat(api: Api, _: Call) -> Result<Reply> {
    api.queue.check_database().await?;
    Ok(Reply::json(json!({})))
}

/// `__version__`: the source, version and commit of this build.
pub async fn version(api: Api, _: Call) -> Result<Reply> {
    Ok(Reply::json(api.queue.version_info()))
}

impl Queue {
    /// What `__version__` answers, for the queue and the services beside it:
    /// the source, version and commit of this build.
    pub fn version_info(&self) -> Value {
        json!({
            "source": self.cfg.source_url,
            "version": env!("CARGO_PKG_VERSION"),
            "commit": option_env!("BBB_GIT_COMMIT").unwrap_or("unknown"),
            "build": "cargo",
        })
    }
}
