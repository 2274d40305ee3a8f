//! The queue's operations, one file per area. Each runs in one transaction that
//! commits the state change with its outbox messages.

pub mod artifacts;
pub mod claims;
pub mod coalesce;
pub mod groups;
pub mod inspect;
pub mod task_queues;
pub mod tasks;
pub mod workers;
