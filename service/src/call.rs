//! One authenticated call, as a handler gets it: the endpoint's name, its URL
//! parameters, who is calling with which scopes, the body and the query.

use crate::error::{ApiError, Result};
use crate::routes::Params;
use crate::scopes::{ScopeParams, ScopeTemplate};
use bbb_auth::ScopeExpr;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Who is calling and with which scopes, what they sent, and what the
/// endpoint requires.
#[derive(Debug)]
pub struct Call {
    /// The endpoint's name (`createTask`).
    pub name: &'static str,
    /// The URL parameters, in path order, as the service's parameter checks
    /// normalised them.
    pub params: Params,
    /// The authenticated client id (`None` for anonymous callers).
    pub client_id: Option<String>,
    /// The caller's expanded scopes.
    pub scopes: Vec<String>,
    /// The parsed body (`null` when empty).
    pub body: Value,
    /// Query parameters.
    pub query: HashMap<String, String>,
    /// Whether the request declared `application/json`.
    pub json_content_type: bool,
    pub(crate) template: Option<Arc<ScopeTemplate>>,
    pub(crate) authorized: Arc<AtomicBool>,
}

impl Call {
    /// The URL parameter `name` (empty if the route has none of that name).
    pub fn param(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    }

    /// The URL parameters as template parameters.
    pub fn url_params(&self) -> ScopeParams {
        self.params
            .iter()
            .fold(ScopeParams::new(), |p, (n, v)| p.set(n, v.clone()))
    }

    /// Check a scope expression; 403 `InsufficientScopes` with upstream's wording otherwise.
    pub fn authorize(&self, expr: &ScopeExpr) -> Result<()> {
        crate::scopes::authorize(self.client_id.as_deref(), &self.scopes, expr)?;
        self.authorized.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Check the endpoint's declared scopes, expanded with the URL parameters
    /// and `extra` (what the handler learnt: a task's `schedulerId`, a body's
    /// `routes`). An endpoint that declares none is an internal error.
    pub fn authorize_with(&self, extra: ScopeParams) -> Result<()> {
        let template = self.template.as_ref().ok_or_else(|| {
            ApiError::Internal(format!("{} declares no scopes to check", self.name))
        })?;
        let expr = template.expand(&self.url_params().merge(extra))?;
        self.authorize(&expr)
    }

    /// The body, for methods with an input schema: it must be JSON.
    pub fn input(&self) -> Result<&Value> {
        if !self.json_content_type || self.body.is_null() {
            return Err(ApiError::MalformedPayload(
                "This method requires a JSON body with `Content-Type: application/json`".into(),
            ));
        }
        Ok(&self.body)
    }

    /// The body as a `T` ([`Call::input`], then [`crate::validate::strict`]).
    pub fn input_as<T: DeserializeOwned>(&self) -> Result<T> {
        crate::validate::strict(self.input()?)
    }

    /// `limit` and `continuationToken` query parameters: (page size, keyset
    /// position); see [`crate::paging`].
    pub fn paging(&self) -> Result<(i64, Option<String>)> {
        crate::paging::paging(&self.query)
    }
}
