#![doc = include_str!("../README.md")]

pub mod api;
pub mod client;
pub mod config;
pub mod creator;
pub mod cron;
pub mod db;
pub mod listeners;
pub mod model;
pub mod scheduler;
pub mod schema;

pub use config::HooksConfig;

use bbb_clock::Clock;
use bbb_pulse::{Bus, Message};
use bbb_queue::{Mount, Mounted, Shared};
use bbb_service::ApiError;
use creator::TaskCreator;
use db::Store;
use regex::Regex;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::Notify;

/// The exchanges the service announces changed hooks on (upstream's).
pub const EXCHANGE_PREFIX: &str = "exchange/taskcluster-hooks/v1/";

/// What every handler and background loop of the service shares.
#[derive(Clone)]
pub struct Hooks {
    /// The hooks tables.
    pub store: Store,
    /// Fires hooks.
    pub creator: TaskCreator,
    /// The queue served beside this service (for the states of fired tasks).
    pub queue: bbb_queue::Queue,
    /// The event bus.
    pub bus: Bus,
    /// The configuration.
    pub cfg: Arc<HooksConfig>,
    /// The public root URL.
    pub root_url: String,
    /// The clock.
    pub clock: Clock,
    /// Wakes this process's scheduler when a hook changed.
    pub schedule_changed: Arc<Notify>,
    /// Wakes this process's binding reconciliation when a hook changed.
    pub bindings_changed: Arc<Notify>,
    denylist: Arc<Vec<Regex>>,
}

impl Hooks {
    /// The service's state on `shared` (its database, bus, clock and root URL).
    pub fn new(cfg: HooksConfig, shared: &Shared) -> anyhow::Result<Hooks> {
        let denylist = cfg
            .denylist
            .iter()
            .map(|d| {
                Regex::new(&format!("^(?:{d})"))
                    .map_err(|e| anyhow::anyhow!("hooks denylist entry {d:?}: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let queue = shared.queue.clone();
        Ok(Hooks {
            store: Store::new(queue.db.pool.clone(), queue.db.backend),
            creator: TaskCreator::new(&shared.root_url, queue.issuer.clone(), queue.clock.clone()),
            clock: queue.clock.clone(),
            queue,
            bus: shared.bus.clone(),
            cfg: Arc::new(cfg),
            root_url: shared.root_url.clone(),
            schedule_changed: Arc::default(),
            bindings_changed: Arc::default(),
            denylist: Arc::new(denylist),
        })
    }

    /// A hook was created, updated or deleted (`what`: the exchange's name):
    /// wake this process's loops and announce it on the bus, as upstream.
    pub async fn changed(&self, group: &str, id: &str, what: &str) -> Result<(), ApiError> {
        self.schedule_changed.notify_one();
        self.bindings_changed.notify_one();
        self.bus
            .publish(&[Message {
                exchange: format!("{EXCHANGE_PREFIX}{what}"),
                routing_key: "_".into(),
                cc: Vec::new(),
                payload: json!({"hookGroupId": group, "hookId": id}),
            }])
            .await
            .map_err(|e| ApiError::Internal(format!("announcing {what}: {e}")))
    }
}

/// Serve the hooks service beside the queue (see [`bbb_queue::start_with`]):
/// its tables migrated, its API, its scheduler and its Pulse listeners.
pub fn mount(cfg: HooksConfig) -> Mount {
    Box::new(move |shared: Shared| Box::pin(start(cfg, shared)))
}

/// What [`mount`] runs once the queue's database, bus and authenticator exist.
pub async fn start(cfg: HooksConfig, shared: Shared) -> anyhow::Result<Mounted> {
    let hooks = Hooks::new(cfg, &shared)?;
    hooks.store.migrate().await?;
    let routes = api::service(hooks.clone(), shared.auth.clone()).routes_only();
    let tasks = vec![
        tokio::spawn(scheduler::run(hooks.clone(), shared.stop.clone())),
        tokio::spawn(listeners::run(hooks, shared.stop.clone())),
    ];
    Ok(Mounted { routes, tasks })
}
