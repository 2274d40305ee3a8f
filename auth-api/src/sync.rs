//! Keeping the [`Authenticator`]'s dynamic clients and roles equal to the
//! database's, in every process: a reload after each local change, and a
//! loop that reloads when the generation moves (another process changed
//! something) and does the periodic housekeeping.

use crate::store::{ClientRow, RoleRow, Store};
use bbb_auth::{AuthConfig, Authenticator, Client, Role};
use bbb_clock::{Clock, Millis, from_ms};
use bbb_service::Result;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, watch};

/// How often the loop reads the generation.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How often the loop records which clients were used and deletes expired ones.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(60);
/// A client's `lastDateUsed` is updated when it is older than this (upstream's six hours).
pub const LAST_USED_STALE_MS: Millis = 6 * 3600 * 1000;

/// The authenticator and the database, and which generation the
/// authenticator holds.
pub struct Reloader {
    store: Store,
    auth: Arc<Authenticator>,
    loaded: Mutex<Option<i64>>,
}

/// The authenticator's form of a stored client.
fn to_client(row: &ClientRow) -> Client {
    Client::new(
        row.client_id.clone(),
        row.access_token.clone(),
        row.scopes.iter().cloned(),
    )
    .with_expires(from_ms(row.expires))
    .with_disabled(row.disabled)
}

impl Reloader {
    /// Keep `auth` in step with `store`.
    pub fn new(store: Store, auth: Arc<Authenticator>) -> Reloader {
        Reloader {
            store,
            auth,
            loaded: Mutex::new(None),
        }
    }

    /// Load every client and role now (after a change made here, so the
    /// next request sees it).
    pub async fn reload(&self) -> Result<()> {
        let mut loaded = self.loaded.lock().await;
        self.load(&mut loaded).await
    }

    /// Load every client and role if the generation moved since the last
    /// load; whether it did.
    pub async fn reload_if_changed(&self) -> Result<bool> {
        let mut loaded = self.loaded.lock().await;
        if *loaded == Some(self.store.generation().await?) {
            return Ok(false);
        }
        self.load(&mut loaded).await?;
        Ok(true)
    }

    async fn load(&self, loaded: &mut Option<i64>) -> Result<()> {
        let (generation, clients, roles) = self.store.snapshot().await?;
        let dynamic = AuthConfig {
            clients: clients.iter().map(to_client).collect(),
            roles: roles
                .iter()
                .map(|r: &RoleRow| Role::new(r.role_id.clone(), r.scopes.iter().cloned()))
                .collect(),
        };
        if let Err(e) = self.auth.set_dynamic(dynamic) {
            // Only a configuration that changed under stored roles gets here
            // (the API refuses such changes): keep what is in force, say so
            // once per generation.
            tracing::error!(error = %e, generation, "stored clients and roles refused; keeping the previous ones");
        }
        *loaded = Some(generation);
        Ok(())
    }

    /// Record the stored clients used since the last call (their
    /// `lastDateUsed`), and delete the expired ones that may be deleted.
    pub async fn housekeeping(&self, now: Millis) -> Result<()> {
        let static_ids: Vec<&str> = self
            .auth
            .bootstrap()
            .clients
            .iter()
            .map(|c| c.client_id.as_str())
            .collect();
        let used: Vec<String> = self
            .auth
            .take_used()
            .into_iter()
            .filter(|id| !static_ids.contains(&id.as_str()))
            .collect();
        self.store
            .touch_used(&used, now, LAST_USED_STALE_MS)
            .await?;
        let expired = self.store.delete_expired(now).await?;
        if expired > 0 {
            tracing::info!(clients = expired, "deleted expired clients");
            self.reload().await?;
        }
        Ok(())
    }

    /// Until `stop` turns true: reload within [`POLL_INTERVAL`] of a change
    /// made by any process, and do the housekeeping every
    /// [`HOUSEKEEPING_INTERVAL`]. Database errors are logged and tried again
    /// at the next tick.
    pub async fn run(self: Arc<Self>, clock: Clock, mut stop: watch::Receiver<bool>) {
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                _ = poll.tick() => {
                    if let Err(e) = self.reload_if_changed().await {
                        tracing::warn!(error = %e, "reading the auth generation failed; retrying");
                    }
                }
                _ = housekeeping.tick() => {
                    if let Err(e) = self.housekeeping(clock.now_ms()).await {
                        tracing::warn!(error = %e, "auth housekeeping failed; retrying");
                    }
                }
                changed = stop.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
