#![doc = include_str!("../README.md")]

pub mod sandbox;

pub use crate::sandbox::{
    Clock, RunningBuild, SandboxBuilder, SandboxConfig, SandboxMaster, SandboxStats,
};
