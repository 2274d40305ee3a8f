//! See the crate README.
#![doc = include_str!("../README.md")]

pub mod config;
pub mod engine;
pub mod error;
pub mod livelog;
pub mod payload;
pub mod proxy;
pub mod users;
pub mod worker;

pub use config::WorkerConfig;
pub use engine::{
    AbortReason, AbortSignal, Artifact, ArtifactContent, ExceptionReason, RunOutcome, TaskContext,
    TaskDir, TaskOutcome, open_artifact, run_task,
};
pub use error::{ConfigError, PayloadError, QueueCallError};
pub use livelog::{LiveLogServer, TaskLog};
pub use payload::Payload;
pub use proxy::{SharedCredentials, TaskCredentials, TaskclusterProxy};
pub use users::{RunAsDecision, RunTasksAs, TaskUser, TaskUsers};
pub use worker::{TaskReport, Worker};
