//! See the crate README.
#![doc = include_str!("../README.md")]

pub mod bridge;
pub mod ci;
pub mod client;
pub mod cpu;
pub mod hooks;
pub mod index;
pub mod queue;
pub mod web_dashboard;
pub mod web_group;
