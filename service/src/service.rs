//! A service: its endpoints (method, path pattern, name, scopes, handler), its
//! URL parameter checks, and the axum router that serves them under
//! `/api/<name>/<version>/` with authentication, error bodies, CORS and a span
//! per request.

use crate::call::Call;
use crate::cors;
use crate::error::{ApiError, Result, error_response};
use crate::reply::Reply;
use crate::routes::{Params, Pattern, segments};
use crate::scopes::{ScopeParams, ScopeTemplate};
use crate::trace;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use bbb_auth::{Authenticator, HawkRequest};
use bbb_clock::Clock;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The largest request body accepted (as upstream: 10 MB).
pub const BODY_LIMIT: usize = 10 * 1024 * 1024;

/// Checks one URL parameter and gives its normalised value (e.g. `runId`
/// `007` as `7`), or the 400 to answer.
pub type ParamCheck = fn(&str) -> Result<String>;

type BoxFuture = Pin<Box<dyn Future<Output = Result<Reply>> + Send>>;
type Handler<S> = Arc<dyn Fn(S, Call) -> BoxFuture + Send + Sync>;

/// An endpoint being declared: its method, path and name, and the scopes it
/// requires; [`Route::to`] gives it its handler.
#[derive(Clone, Debug)]
pub struct Route {
    method: Method,
    pattern: Pattern,
    name: &'static str,
    scopes: Option<Arc<ScopeTemplate>>,
}

/// `GET path` named `name`.
pub fn get(path: &str, name: &'static str) -> Route {
    Route::new(Method::GET, path, name)
}

/// `POST path` named `name`.
pub fn post(path: &str, name: &'static str) -> Route {
    Route::new(Method::POST, path, name)
}

/// `PUT path` named `name`.
pub fn put(path: &str, name: &'static str) -> Route {
    Route::new(Method::PUT, path, name)
}

/// `DELETE path` named `name`.
pub fn delete(path: &str, name: &'static str) -> Route {
    Route::new(Method::DELETE, path, name)
}

impl Route {
    /// `method path` (a [`Pattern`]) named `name`: the API method name that
    /// `requestInfo.method`, the logs and the span's `request.route` give.
    pub fn new(method: Method, path: &str, name: &'static str) -> Route {
        Route {
            method,
            pattern: Pattern::parse(path),
            name,
            scopes: None,
        }
    }

    /// The scopes a caller needs. When the template names only URL
    /// parameters, they are checked before the handler runs; otherwise the
    /// handler checks them with [`Call::authorize_with`], giving the rest. A
    /// handler that answers without having checked them answers an internal
    /// error instead, so a forgotten check cannot let a call through.
    pub fn scopes(mut self, template: ScopeTemplate) -> Route {
        self.scopes = Some(Arc::new(template));
        self
    }

    /// The endpoint, served by `handler`.
    pub fn to<S, H, F>(self, handler: H) -> Endpoint<S>
    where
        H: Fn(S, Call) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Reply>> + Send + 'static,
    {
        let auto = self.scopes.as_ref().is_some_and(|t| {
            let names: Vec<&str> = self.pattern.names().collect();
            t.params().iter().all(|p| names.contains(&p.as_str()))
        });
        Endpoint {
            auto,
            route: self,
            handler: Arc::new(move |s, c| Box::pin(handler(s, c))),
        }
    }
}

/// An endpoint: a [`Route`] with its handler.
pub struct Endpoint<S> {
    route: Route,
    auto: bool,
    handler: Handler<S>,
}

/// A service under construction; [`Service::router`] serves it.
pub struct Service<S> {
    api: Api<S>,
    routes: Router,
}

impl<S: Clone + Send + Sync + 'static> Service<S> {
    /// The service `name` (`queue`), API version `version` (`v1`), served
    /// under `/api/<name>/<version>/`. Handlers get a clone of `state`;
    /// callers are authenticated by `auth` at the time `clock` reads. It
    /// starts with upstream's `ping` (`{alive, uptime}`) and `lbheartbeat`
    /// (`{}`), which every service has.
    pub fn new(
        name: &str,
        version: &str,
        state: S,
        auth: Arc<Authenticator>,
        clock: Clock,
    ) -> Service<S> {
        let started = std::time::Instant::now();
        Service {
            api: Api {
                prefix: format!("/api/{name}/{version}"),
                state,
                auth,
                clock,
                checks: HashMap::new(),
                endpoints: Vec::new(),
            },
            routes: Router::new(),
        }
        .endpoint(get("/ping", "ping").to(move |_: S, _| async move {
            Ok(Reply::json(
                json!({"alive": true, "uptime": started.elapsed().as_secs_f64()}),
            ))
        }))
        .endpoint(
            get("/__lbheartbeat__", "lbheartbeat")
                .to(|_: S, _| async { Ok(Reply::json(json!({}))) }),
        )
    }

    /// Check the URL parameter `name` with `check` wherever a route has it,
    /// after authentication and before scopes and the handler.
    pub fn param(mut self, name: &str, check: ParamCheck) -> Service<S> {
        self.api.checks.insert(name.into(), check);
        self
    }

    /// Add an endpoint. Endpoints are tried in the order they were added;
    /// the first whose method and pattern match serves the call.
    pub fn endpoint(mut self, endpoint: Endpoint<S>) -> Service<S> {
        self.api.endpoints.push(endpoint);
        self
    }

    /// Add endpoints, in order.
    pub fn endpoints(mut self, endpoints: impl IntoIterator<Item = Endpoint<S>>) -> Service<S> {
        self.api.endpoints.extend(endpoints);
        self
    }

    /// Serve `routes` (plain axum routes outside the API, such as signed
    /// download URLs) beside the API, with the same CORS, limits and spans.
    pub fn routes(mut self, routes: Router) -> Service<S> {
        self.routes = self.routes.merge(routes);
        self
    }

    /// Where the API is served: `/api/<name>/<version>`.
    pub fn prefix(&self) -> &str {
        &self.api.prefix
    }

    /// The endpoint `method path` reaches (its name and raw URL parameters),
    /// `path` being below [`Service::prefix`].
    pub fn find(&self, method: &Method, path: &str) -> Option<(&'static str, Params)> {
        find(&self.api.endpoints, method, &segments(path)).map(|(e, p)| (e.route.name, p))
    }

    /// The axum router: the API, the extra routes, a JSON 404 for any other
    /// path, gzip, the body limit, CORS and a span per request.
    pub fn router(self) -> Router {
        let clock = self.api.clock.clone();
        serve_together([self.routes_only()], clock)
    }

    /// The API and the extra routes alone, to serve with other services on
    /// one listener through [`serve_together`].
    pub fn routes_only(self) -> Router {
        let prefix = self.api.prefix.clone();
        Router::new()
            .route(
                &format!("{prefix}/{{*rest}}"),
                axum::routing::any(dispatch::<S>),
            )
            .route(&format!("{prefix}/"), axum::routing::any(dispatch::<S>))
            .with_state(Arc::new(self.api))
            .merge(self.routes)
    }
}

/// Several services' [`Service::routes_only`] on one listener, as upstream
/// serves every service under one root URL: a JSON 404 for any other path,
/// gzip, the body limit, CORS and a span per request.
pub fn serve_together(services: impl IntoIterator<Item = Router>, clock: Clock) -> Router {
    services
        .into_iter()
        .fold(Router::new(), Router::merge)
        .fallback(move |uri: Uri| async move { not_found(&uri, &clock) })
        .layer(tower_http::compression::CompressionLayer::new())
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::map_response(cors::headers))
        .layer(axum::middleware::from_fn(trace::span))
}

/// What the dispatcher needs: the API's prefix, the state handlers get, how
/// callers are authenticated, the URL parameter checks and the endpoints.
struct Api<S> {
    prefix: String,
    state: S,
    auth: Arc<Authenticator>,
    clock: Clock,
    checks: HashMap<String, ParamCheck>,
    endpoints: Vec<Endpoint<S>>,
}

fn find<'e, S>(
    endpoints: &'e [Endpoint<S>],
    method: &Method,
    segs: &[String],
) -> Option<(&'e Endpoint<S>, Params)> {
    endpoints
        .iter()
        .filter(|e| e.route.method == *method)
        .find_map(|e| e.route.pattern.matches(segs).map(|p| (e, p)))
}

fn not_found(uri: &Uri, clock: &Clock) -> Response {
    error_response(
        &ApiError::NotFound(format!("No such route: {}", uri.path())),
        "unknown",
        json!({}),
        Value::Null,
        clock,
    )
}

fn host_and_port(headers: &HeaderMap) -> (String, u16) {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let (name, port) = match host.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || host.starts_with('[') => match p.parse::<u16>() {
            Ok(p) => (h.to_string(), Some(p)),
            Err(_) => (host.to_string(), None),
        },
        _ => (host.to_string(), None),
    };
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok());
    let fwd_port = headers
        .get("x-forwarded-port")
        .and_then(|h| h.to_str().ok())
        .and_then(|p| p.parse().ok());
    let port = fwd_port
        .or(if proto == Some("https") {
            Some(443)
        } else {
            None
        })
        .or(port)
        .unwrap_or(80);
    (name, port)
}

fn params_json(params: &[(String, String)]) -> Value {
    Value::Object(
        params
            .iter()
            .map(|(n, v)| (n.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// The body as JSON for `requestInfo.payload` (`null` when empty or not JSON).
fn payload(body: &Bytes) -> Value {
    if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).unwrap_or(Value::Null)
    }
}

async fn dispatch<S: Clone + Send + Sync + 'static>(
    State(svc): State<Arc<Api<S>>>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let clock = &svc.clock;
    let rest = uri
        .path()
        .strip_prefix(svc.prefix.as_str())
        .and_then(|p| p.strip_prefix('/'))
        .unwrap_or("");
    let segs = segments(rest);
    if method == Method::OPTIONS
        && svc
            .endpoints
            .iter()
            .any(|e| e.route.pattern.matches(&segs).is_some())
    {
        return cors::preflight();
    }
    let Some((endpoint, raw)) = find(&svc.endpoints, &method, &segs) else {
        return error_response(
            &ApiError::NotFound(format!("No such API method: {method} {}", uri.path())),
            "unknown",
            json!({}),
            Value::Null,
            clock,
        );
    };
    let name = endpoint.route.name;
    trace::record_route(name, &raw);
    let raw_params = params_json(&raw);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok());
    let json_content_type = content_type.is_some_and(|c| {
        c.trim()
            .to_ascii_lowercase()
            .starts_with("application/json")
    });
    let body_json = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => v,
            Err(e) => {
                return error_response(
                    &ApiError::MalformedPayload(format!("Failed to parse the JSON body: {e}")),
                    name,
                    raw_params,
                    Value::Null,
                    clock,
                );
            }
        }
    };

    // Authenticate: Hawk header or bewit, else anonymous.
    let (host, port) = host_and_port(&headers);
    let resource = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let hawk = HawkRequest {
        method: method.as_str(),
        resource,
        host: &host,
        port,
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok()),
        content_type,
        body: &body,
    };
    let identity = match svc.auth.authenticate(&hawk, clock.now()) {
        Ok(i) => i,
        Err(e) => {
            let mut r = error_response(
                &ApiError::Authentication(e.to_string()),
                name,
                raw_params,
                body_json,
                clock,
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("hawk"));
            return r;
        }
    };
    trace::record_client(identity.client_id.as_deref());

    let mut params = Vec::with_capacity(raw.len());
    for (n, v) in &raw {
        let v = match svc.checks.get(n) {
            Some(check) => match check(v) {
                Ok(v) => v,
                Err(e) => return error_response(&e, name, raw_params, body_json, clock),
            },
            None => v.clone(),
        };
        params.push((n.clone(), v));
    }
    let authorized = Arc::new(AtomicBool::new(false));
    let call = Call {
        name,
        params,
        client_id: identity.client_id,
        scopes: identity.scopes,
        body: body_json,
        query,
        json_content_type,
        template: endpoint.route.scopes.clone(),
        authorized: authorized.clone(),
    };
    if endpoint.auto
        && let Err(e) = call.authorize_with(ScopeParams::new())
    {
        return error_response(&e, name, raw_params, call.body, clock);
    }
    let result = (endpoint.handler)(svc.state.clone(), call)
        .await
        .and_then(|reply| {
            if endpoint.route.scopes.is_some() && !authorized.load(Ordering::Relaxed) {
                return Err(ApiError::Internal(format!(
                    "{name} answered without checking its scopes"
                )));
            }
            Ok(reply)
        });
    match result {
        Ok(reply) => reply.into_response(),
        Err(e) => {
            if !e.is_internal() {
                tracing::debug!(method = name, code = e.code(), "request refused");
            }
            error_response(&e, name, raw_params, payload(&body), clock)
        }
    }
}
