#![doc = include_str!("../README.md")]

mod db;
mod error;
mod model;

pub use db::{Backend, StateDb};
pub use error::{Result, StateError};
pub use model::{
    Change, Lease, MappingRow, NewSlot, RowResolution, RowState, SlotClaim, StartedBuild,
};
