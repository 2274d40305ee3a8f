//! See the crate README.
#![doc = include_str!("../README.md")]

pub mod config;
pub mod engine;
pub mod error;
pub mod livelog;
pub mod payload;
pub mod worker;

pub use config::WorkerConfig;
pub use engine::{
    AbortReason, AbortSignal, Artifact, ArtifactContent, ExceptionReason, RunOutcome, TaskContext,
    TaskDir, TaskOutcome, run_task,
};
pub use error::{ConfigError, PayloadError, QueueCallError};
pub use livelog::{LiveLogServer, TaskLog};
pub use payload::Payload;
pub use worker::{TaskReport, Worker};
