//! See the crate README.
#![doc = include_str!("../README.md")]

pub mod call;
pub mod cors;
pub mod error;
pub mod paging;
pub mod reply;
pub mod routes;
pub mod scopes;
pub mod service;
pub mod trace;
pub mod validate;

pub use call::Call;
pub use error::{ApiError, Result, error_response};
pub use reply::Reply;
pub use scopes::{ScopeParams, ScopeTemplate, all_of, any_of, for_each, scope};
pub use service::{
    BODY_LIMIT, Endpoint, ParamCheck, Route, Service, delete, get, post, put, serve_together,
};
