#![doc = include_str!("../README.md")]

pub mod api;
pub mod store;
pub mod sync;

pub use api::AuthApi;
pub use store::Store;
pub use sync::Reloader;

use bbb_queue::{Mount, Mounted, Shared};
use std::sync::Arc;

/// The auth service, to serve beside the queue ([`bbb_queue::start_with`]).
pub fn mount() -> Mount {
    Box::new(|shared| Box::pin(start(shared)))
}

/// Start the auth service on the queue's database and authenticator: apply
/// its migrations, load the stored clients and roles into the authenticator,
/// and give its routes and its reload loop.
pub async fn start(shared: Shared) -> anyhow::Result<Mounted> {
    let queue = shared.queue;
    let store = Store::new(queue.db.pool.clone(), queue.db.backend);
    store.migrate().await?;
    let reloader = Arc::new(Reloader::new(store.clone(), shared.auth.clone()));
    reloader
        .reload()
        .await
        .map_err(|e| anyhow::anyhow!("loading clients and roles: {e}"))?;
    let task = tokio::spawn(
        reloader
            .clone()
            .run(queue.clock.clone(), shared.stop.clone()),
    );
    let api = AuthApi {
        started: queue.clock.now_ms(),
        queue,
        store,
        auth: shared.auth,
        reloader,
    };
    Ok(Mounted {
        routes: api::service(api).routes_only(),
        tasks: vec![task],
    })
}
