//! The `bbb` binary.
fn main() {}
