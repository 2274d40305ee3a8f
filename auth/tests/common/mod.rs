//! Helpers shared by the integration tests.

#![allow(dead_code)]

use bbb_auth::HawkRequest;

/// One HTTP request as a server received it.
#[derive(Clone, Debug)]
pub struct Captured {
    pub method: String,
    pub resource: String,
    pub host: String,
    pub port: u16,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Captured {
    /// The request in the form the authenticator takes.
    pub fn hawk(&self) -> HawkRequest<'_> {
        HawkRequest {
            method: &self.method,
            resource: &self.resource,
            host: &self.host,
            port: self.port,
            authorization: self.authorization.as_deref(),
            content_type: self.content_type.as_deref(),
            body: &self.body,
        }
    }
}

/// Split a `Host` header value into host and port.
pub fn split_host(host_header: &str, default_port: u16) -> (String, u16) {
    match host_header.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => {
            (h.to_owned(), p.parse().expect("port"))
        }
        _ => (host_header.to_owned(), default_port),
    }
}
