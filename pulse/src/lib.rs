//! See the crate README.
#![doc = include_str!("../README.md")]
