//! Errors: the queue's operations fail with the service framework's
//! [`ApiError`], whose variants are upstream's error codes (a refused call
//! names its 400, 404 or 409 where it is decided) plus internal failures, of
//! which failed statements are classified once ([`ApiError::is_retryable_db`]
//! decides whether a transaction runs again). The HTTP layer renders them as
//! upstream's error body; an internal error's text never reaches a client.

pub use bbb_service::error::{ApiError, Result};
