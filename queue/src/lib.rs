//! See the crate README.
#![doc = include_str!("../README.md")]

pub mod api;
pub mod batch;
pub mod blob;
pub mod builtin;
pub mod config;
pub mod core;
pub mod db;
pub mod error;
pub mod events;
pub mod facade;
pub mod feeds;
pub mod model;
pub mod ops;
pub mod resolvers;
pub mod s3;
pub mod server;
pub mod sigv4;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod validate;
pub mod writes;

pub use config::QueueConfig;
pub use core::Queue;
pub use error::ApiError;
pub use server::{Mount, Mounted, Running, Shared, start, start_with};
pub use time::Clock;
