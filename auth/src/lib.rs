#![doc = include_str!("../README.md")]

mod authenticator;
mod certificate;
mod error;
mod hawk;
mod roles;
mod scopes;

pub use authenticator::{
    ANONYMOUS_SCOPE, AuthConfig, Authenticator, Client, HawkRequest, Identity, TIMESTAMP_SKEW,
};
pub use certificate::{
    CERTIFICATE_SKEW, Credentials, MAX_CERTIFICATE_LIFETIME, create_temporary_credentials,
};
pub use error::AuthError;
pub use hawk::{bewit, hawk_header, payload_hash};
pub use roles::{Role, RoleResolver};
pub use scopes::{
    ScopeExpr, normalize_scopes, scope_compare, scope_matches, scope_satisfied, valid_scope,
    validate_scopes,
};
