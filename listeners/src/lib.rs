#![doc = include_str!("../README.md")]

pub mod bb_listener;
pub mod tc_listener;
