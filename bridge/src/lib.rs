#![doc = include_str!("../README.md")]

mod actions;
mod config;
pub mod health;
mod metrics;
mod outcome;
pub mod payload;
pub mod queue_client;

pub use crate::actions::{
    ActionIds, Bridge, BridgeError, BridgeResult, BridgeSettings, Clock, DEFAULT_TASK_QUEUE,
    LOG_CONTENT_TYPE, LOG_NAME, Outcome,
};
pub use crate::config::{BridgeConfig, BuildbotKind};
pub use crate::metrics::{Metrics, PARKED_KEPT, Parked, ReflectorPass};
pub use crate::queue_client::{QueueClient, RunInfo, TaskStatus, TcError};
