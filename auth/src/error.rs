//! The error type of this crate.

/// Everything that can go wrong while configuring the authenticator, verifying a request or
/// issuing temporary credentials.
///
/// The `Display` text is meant for the `message` of a 401 `AuthenticationFailed` response (or,
/// for configuration errors, for an operator). It never contains an access token, a temporary
/// key, a MAC or a certificate signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The `Authorization` header is not a well-formed Hawk header.
    #[error("Invalid Hawk Authorization header: {0}")]
    MalformedHeader(String),

    /// The request carries a bewit that cannot be used.
    #[error("Invalid bewit: {0}")]
    InvalidBewit(String),

    /// The bewit's expiry time has passed.
    #[error("Access expired: the bewit expired at {0}")]
    BewitExpired(String),

    /// The request carries both an `Authorization` header and a `bewit` query parameter.
    #[error("Multiple authentications: the request has both an Authorization header and a bewit")]
    MultipleAuthentications,

    /// No client with this id is configured.
    #[error("Client with clientId '{0}' not found")]
    UnknownClient(String),

    /// The client is disabled.
    #[error("Client with clientId '{0}' is disabled")]
    ClientDisabled(String),

    /// The client's `expires` time has passed.
    #[error("Client with clientId '{0}' has expired")]
    ClientExpired(String),

    /// The MAC does not match: wrong access token, or the request was altered, or it was signed
    /// for another method, resource, host or port.
    #[error(
        "Bad mac: the request signature does not match (check the access token, and that the method, path, query, host and port are the ones signed)"
    )]
    BadMac,

    /// The Hawk timestamp is more than the allowed skew away from the server clock.
    #[error(
        "Stale timestamp: the request timestamp {ts} is more than {skew_secs} seconds away from the server time {now}"
    )]
    StaleTimestamp {
        /// The timestamp the client sent (Unix seconds).
        ts: i64,
        /// The server time (Unix seconds).
        now: i64,
        /// The allowed skew in seconds.
        skew_secs: i64,
    },

    /// The header's payload hash does not match the request body and content type.
    #[error("Bad payload hash: the body (or its content type) does not match the signed hash")]
    PayloadHashMismatch,

    /// The Hawk `ext` attribute is not base64-encoded JSON of the expected shape.
    #[error("Invalid ext: {0}")]
    InvalidExt(String),

    /// The temporary-credentials certificate in `ext` is invalid.
    #[error("Invalid certificate: {0}")]
    InvalidCertificate(String),

    /// The credentials do not hold every scope listed in `authorizedScopes`.
    #[error(
        "Supplied credentials do not satisfy authorizedScopes; credentials have scopes:\n\n```\n{have}\n```\n\nauthorizedScopes are:\n\n```\n{authorized}\n```"
    )]
    AuthorizedScopesNotSatisfied {
        /// The (expanded) scopes the credentials hold, one per line.
        have: String,
        /// The requested `authorizedScopes`, one per line.
        authorized: String,
    },

    /// A scope is not a valid scope string (printable ASCII only), or a role or client holds
    /// a scope ending in `**`.
    #[error("Invalid scope {scope:?}: {reason}")]
    InvalidScope {
        /// The offending scope.
        scope: String,
        /// Why it is rejected.
        reason: String,
    },

    /// The role table is invalid (duplicate or invalid role id).
    #[error("Invalid role {role_id:?}: {reason}")]
    InvalidRole {
        /// The offending role id.
        role_id: String,
        /// Why it is rejected.
        reason: String,
    },

    /// The roles form a dependency cycle (checked with every parameter taken as `*`).
    #[error("Roles may not contain dependency cycles, found: {}", .0.join(" -> "))]
    RoleCycle(Vec<String>),

    /// The client table is invalid (duplicate or empty client id, empty access token).
    #[error("Invalid client {client_id:?}: {reason}")]
    InvalidClient {
        /// The offending client id.
        client_id: String,
        /// Why it is rejected.
        reason: String,
    },

    /// Temporary credentials cannot be created from these arguments.
    #[error("Cannot create temporary credentials: {0}")]
    InvalidCredentialsRequest(String),
}
