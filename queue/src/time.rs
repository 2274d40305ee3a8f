//! Time: the clock the whole queue reads (so tests can move it) and the date
//! format upstream uses, from [`bbb_clock`].

pub use bbb_clock::{Clock, Millis, fmt_ms, from_ms, parse_ms};
