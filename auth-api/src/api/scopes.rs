//! Scopes (`expandScopes`, `currentScopes`) and monitoring (`__heartbeat__`,
//! `__version__`; the framework serves `ping` and `__lbheartbeat__`).

use super::{AuthApi, check_scope_list};
use bbb_service::{Call, Reply, Result};
use serde::Deserialize;
use serde_json::json;

/// Upstream's `scopeset` schema.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeSet {
    scopes: Vec<String>,
}

/// `POST /scopes/expand`: the scopes with everything their roles grant, by
/// the same expansion every request's credentials go through.
pub async fn expand_scopes(api: AuthApi, call: Call) -> Result<Reply> {
    let input: ScopeSet = call.input_as()?;
    check_scope_list(&input.scopes)?;
    Ok(Reply::json(
        json!({ "scopes": api.auth.expand(&input.scopes) }),
    ))
}

/// `GET /scopes/current`: the scopes this request holds, after temporary
/// credentials, `authorizedScopes`, roles and the anonymous role.
pub async fn current_scopes(_: AuthApi, call: Call) -> Result<Reply> {
    Ok(Reply::json(json!({ "scopes": call.scopes })))
}

/// `__heartbeat__`: the database answers.
pub async fn heartbeat(api: AuthApi, _: Call) -> Result<Reply> {
    api.store.check().await?;
    Ok(Reply::json(json!({})))
}

/// `__version__`: the source, version and commit of this build.
pub async fn version(api: AuthApi, _: Call) -> Result<Reply> {
    Ok(Reply::json(json!({
        "source": api.queue.cfg.source_url,
        "version": env!("CARGO_PKG_VERSION"),
        "commit": option_env!("BBB_GIT_COMMIT").unwrap_or("unknown"),
        "build": "cargo",
    })))
}
