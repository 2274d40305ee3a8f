#![doc = include_str!("../README.md")]

mod db;
mod error;
mod health;
mod model;

pub use db::{Backend, StateDb};
pub use error::{Result, StateError};
pub use health::{HealthRow, MasterRequests};
pub use model::{
    Change, Lease, MappingRow, NewSlot, RowResolution, RowState, SlotClaim, StartedBuild,
};
