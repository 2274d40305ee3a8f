//! Clients, the authenticator, and verification of Hawk-signed requests.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::AuthError;
use crate::certificate::{
    CERTIFICATE_SKEW, MAX_CERTIFICATE_LIFETIME, sign, signature_text, temporary_key,
};
use crate::hawk::{
    Normalized, ct_eq, decode_base64_any, has_bewit, parse_bewit, parse_header, payload_hash,
};
use crate::roles::{Role, RoleResolver};
use crate::scopes::{ScopeExpr, normalize_scopes, valid_scope, validate_scopes};

/// How far a Hawk timestamp may be from the server clock.
pub const TIMESTAMP_SKEW: TimeDelta = TimeDelta::minutes(15);
/// The scope every caller implicitly holds.
pub const ANONYMOUS_SCOPE: &str = "assume:anonymous";

/// A permanent client: an id, its secret access token, its scopes, an optional expiry and
/// whether it is disabled.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Client {
    /// The client id (the Hawk `id`).
    pub client_id: String,
    /// The secret access token (the Hawk key).
    pub access_token: String,
    /// The client's scopes, before role expansion.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// When the client stops being valid; `None` for never.
    #[serde(default)]
    pub expires: Option<DateTime<Utc>>,
    /// A disabled client cannot authenticate (nor issue temporary credentials).
    #[serde(default)]
    pub disabled: bool,
}

impl Client {
    /// A client that never expires.
    pub fn new<I, S>(
        client_id: impl Into<String>,
        access_token: impl Into<String>,
        scopes: I,
    ) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Client {
            client_id: client_id.into(),
            access_token: access_token.into(),
            scopes: scopes.into_iter().map(Into::into).collect(),
            expires: None,
            disabled: false,
        }
    }

    /// The same client, expiring at `expires`.
    pub fn with_expires(mut self, expires: DateTime<Utc>) -> Self {
        self.expires = Some(expires);
        self
    }

    /// The same client, disabled or not.
    pub fn with_disabled(mut self, disabled: bool) -> Self {
        self.disabled = disabled;
        self
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id)
            .field("access_token", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("expires", &self.expires)
            .field("disabled", &self.disabled)
            .finish()
    }
}

/// The static configuration of an [`Authenticator`]: clients and roles.
///
/// What anonymous callers may do is the role `anonymous`: every caller, authenticated or not,
/// implicitly holds `assume:anonymous`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthConfig {
    /// The permanent clients.
    #[serde(default)]
    pub clients: Vec<Client>,
    /// The roles.
    #[serde(default)]
    pub roles: Vec<Role>,
}

/// One HTTP request to authenticate, as the server received it.
#[derive(Clone, Copy, Debug, Default)]
pub struct HawkRequest<'a> {
    /// The HTTP method, e.g. `GET`.
    pub method: &'a str,
    /// The raw request target (path and query) exactly as received, still percent-encoded.
    pub resource: &'a str,
    /// The host the client addressed (from the `Host` header, without the port).
    pub host: &'a str,
    /// The port the client addressed (from `Host`, `X-Forwarded-Port`, or the scheme).
    pub port: u16,
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a str>,
    /// The `Content-Type` header, if any.
    pub content_type: Option<&'a str>,
    /// The raw request body.
    pub body: &'a [u8],
}

/// Who made a request and what they may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The client id the request was made with (for named temporary credentials, the
    /// temporary name); `None` for anonymous requests.
    pub client_id: Option<String>,
    /// The caller's scopes, fully expanded and normalised, always including what the
    /// `anonymous` role grants.
    pub scopes: Vec<String>,
    /// When the credentials stop being valid, if they expire.
    pub expires: Option<DateTime<Utc>>,
}

impl Identity {
    /// Whether the caller was not authenticated.
    pub fn is_anonymous(&self) -> bool {
        self.client_id.is_none()
    }

    /// Whether the caller's scopes satisfy `expr`.
    pub fn satisfies(&self, expr: &ScopeExpr) -> bool {
        expr.satisfied_by(&self.scopes)
    }
}

/// A known client, its scopes expanded once, when first needed.
struct ClientEntry {
    client: Client,
    /// `expand(client.scopes)`: what the client may delegate through certificates.
    expanded: OnceLock<Vec<String>>,
    /// `expand(client.scopes + assume:anonymous)`: the scopes of a plain request.
    with_anonymous: OnceLock<Vec<String>>,
    /// Whether a request authenticated with it (directly or as the issuer of temporary
    /// credentials) since [`Authenticator::take_used`] last looked.
    used: AtomicBool,
}

impl ClientEntry {
    fn new(client: Client) -> Self {
        ClientEntry {
            client,
            expanded: OnceLock::new(),
            with_anonymous: OnceLock::new(),
            used: AtomicBool::new(false),
        }
    }

    fn expanded(&self, resolver: &RoleResolver) -> &[String] {
        self.expanded
            .get_or_init(|| resolver.expand(&self.client.scopes))
    }

    fn with_anonymous(&self, resolver: &RoleResolver) -> &[String] {
        self.with_anonymous.get_or_init(|| {
            let mut scopes = self.client.scopes.clone();
            scopes.push(ANONYMOUS_SCOPE.to_owned());
            resolver.expand(&scopes)
        })
    }

    fn mark_used(&self) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }
}

/// The clients and roles in force: the static ones the authenticator was built with plus the
/// dynamic ones last given to [`Authenticator::set_dynamic`]. Replaced whole, never changed.
struct Tables {
    clients: HashMap<String, ClientEntry>,
    resolver: Arc<RoleResolver>,
    anonymous: Vec<String>,
}

impl Tables {
    /// Validate and prepare `clients` and `roles` (see [`Authenticator::new`]).
    fn build(clients: Vec<Client>, roles: Vec<Role>) -> Result<Tables, AuthError> {
        let resolver = RoleResolver::new(roles)?;
        let anonymous = resolver.expand(&[ANONYMOUS_SCOPE.to_owned()]);
        let mut entries = HashMap::with_capacity(clients.len());
        for client in clients {
            check_client(&client)?;
            if entries.contains_key(&client.client_id) {
                return Err(invalid_client(&client.client_id, "defined more than once"));
            }
            entries.insert(client.client_id.clone(), ClientEntry::new(client));
        }
        Ok(Tables {
            clients: entries,
            resolver: Arc::new(resolver),
            anonymous,
        })
    }
}

/// Check one client: a non-empty id usable in a Hawk header, a non-empty access token and
/// valid scopes.
fn check_client(client: &Client) -> Result<(), AuthError> {
    let id = client.client_id.as_str();
    if id.is_empty() {
        return Err(invalid_client(id, "the client id is empty"));
    }
    if !id
        .chars()
        .all(|c| (' '..='~').contains(&c) && c != '"' && c != '\\')
    {
        return Err(invalid_client(
            id,
            "client ids may only contain printable ASCII characters other than `\"` and `\\`",
        ));
    }
    if client.access_token.is_empty() {
        return Err(invalid_client(id, "the access token is empty"));
    }
    validate_scopes(&client.scopes)
}

/// What the `ext` attribute carries.
#[derive(Default)]
struct Ext {
    certificate: Option<Map<String, Value>>,
    authorized_scopes: Option<Vec<String>>,
}

/// The key, scopes and expiry that a request is checked and authorised with.
struct Loaded<'a> {
    key: Cow<'a, str>,
    scopes: Cow<'a, [String]>,
    expires: Option<DateTime<Utc>>,
}

/// Verifies Hawk-signed requests (headers and bewits) against a table of clients and roles,
/// the way the TaskCluster auth service does, and computes the caller's scopes.
///
/// The table is the static configuration it was built with, plus the dynamic clients and
/// roles (those an auth service keeps in a database) last given to
/// [`Authenticator::set_dynamic`], which replaces them at once for every later request. It is
/// `Send + Sync`: build it once and share it.
pub struct Authenticator {
    bootstrap: AuthConfig,
    tables: RwLock<Arc<Tables>>,
    allow_unsigned_query: bool,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tables = self.tables();
        f.debug_struct("Authenticator")
            .field("clients", &tables.clients.keys().collect::<Vec<_>>())
            .field("resolver", &tables.resolver)
            .field("allow_unsigned_query", &self.allow_unsigned_query)
            .finish()
    }
}

fn invalid_client(client_id: &str, reason: &str) -> AuthError {
    AuthError::InvalidClient {
        client_id: client_id.to_owned(),
        reason: reason.to_owned(),
    }
}

fn cert_err(m: impl Into<String>) -> AuthError {
    AuthError::InvalidCertificate(m.into())
}

impl Authenticator {
    /// Build an authenticator from its static configuration: validates the roles (see
    /// [`RoleResolver::new`]) and the clients (unique, non-empty ids usable in a Hawk header,
    /// non-empty access tokens, valid scopes not ending in `**`). A client's scopes are
    /// expanded once, when it first authenticates.
    pub fn new(cfg: AuthConfig) -> Result<Self, AuthError> {
        let tables = Tables::build(cfg.clients.clone(), cfg.roles.clone())?;
        Ok(Authenticator {
            bootstrap: cfg,
            tables: RwLock::new(Arc::new(tables)),
            allow_unsigned_query: false,
        })
    }

    /// Replace the dynamic clients and roles: from now on every request is checked against
    /// the static configuration plus `dynamic`. A dynamic client or role with the id of a
    /// static one is ignored (the static one stays). The whole set is validated as
    /// [`Authenticator::new`] validates its configuration, together with the static roles
    /// (so a dynamic role may not close a cycle through a static one); on an error nothing
    /// changes.
    pub fn set_dynamic(&self, dynamic: AuthConfig) -> Result<(), AuthError> {
        let static_clients: HashSet<&str> = self
            .bootstrap
            .clients
            .iter()
            .map(|c| c.client_id.as_str())
            .collect();
        let static_roles: HashSet<&str> = self
            .bootstrap
            .roles
            .iter()
            .map(|r| r.role_id.as_str())
            .collect();
        let clients = self.bootstrap.clients.iter().cloned().chain(
            dynamic
                .clients
                .into_iter()
                .filter(|c| !static_clients.contains(c.client_id.as_str())),
        );
        let roles = self.bootstrap.roles.iter().cloned().chain(
            dynamic
                .roles
                .into_iter()
                .filter(|r| !static_roles.contains(r.role_id.as_str())),
        );
        let tables = Tables::build(clients.collect(), roles.collect())?;
        *self.tables.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tables);
        Ok(())
    }

    /// The static configuration this authenticator was built with.
    pub fn bootstrap(&self) -> &AuthConfig {
        &self.bootstrap
    }

    /// The ids of the clients that authenticated a request (directly or as the issuer of
    /// temporary credentials) since the last call, each once.
    pub fn take_used(&self) -> Vec<String> {
        self.tables()
            .clients
            .values()
            .filter(|e| e.used.swap(false, Ordering::Relaxed))
            .map(|e| e.client.client_id.clone())
            .collect()
    }

    /// The tables in force now.
    fn tables(&self) -> Arc<Tables> {
        Arc::clone(&self.tables.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Also accept header-signed requests whose MAC covers only the path, not the query
    /// string (checked only after the MAC over the full request target fails).
    ///
    /// The TaskCluster Rust client (crate `taskcluster`) signs `url.path()` without the query,
    /// so its paginated calls fail against a strict server. Enabling this makes them work, at
    /// the price that the query of such requests is not protected by the signature. Off by
    /// default, matching TaskCluster.
    pub fn allow_unsigned_query(mut self, allow: bool) -> Self {
        self.allow_unsigned_query = allow;
        self
    }

    /// Expand `scopes` through the roles in force (static and dynamic) and normalise them.
    pub fn expand(&self, scopes: &[String]) -> Vec<String> {
        self.tables().resolver.expand(scopes)
    }

    /// The role resolver in force (static and dynamic roles).
    pub fn resolver(&self) -> Arc<RoleResolver> {
        Arc::clone(&self.tables().resolver)
    }

    /// The scopes of anonymous callers: the expansion of `assume:anonymous`.
    pub fn anonymous_scopes(&self) -> Vec<String> {
        self.tables().anonymous.clone()
    }

    /// The expanded scopes of a known client (without the anonymous role), if it exists.
    pub fn client_scopes(&self, client_id: &str) -> Option<Vec<String>> {
        let tables = self.tables();
        let entry = tables.clients.get(client_id)?;
        Some(entry.expanded(&tables.resolver).to_vec())
    }

    /// Authenticate one HTTP request.
    ///
    /// No `Authorization` header and no bewit: the caller is anonymous, with the scopes of
    /// `assume:anonymous`. Otherwise the Hawk header (or the bewit in the query string) is
    /// verified at time `now`, including any certificate and `authorizedScopes` in its `ext`,
    /// and the caller's fully expanded scopes are returned. Every failure is an
    /// [`AuthError`] whose message is fit for a 401 response.
    pub fn authenticate(
        &self,
        req: &HawkRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<Identity, AuthError> {
        let header = req.authorization.filter(|h| !h.trim().is_empty());
        let bewit = has_bewit(req.resource);
        let tables = self.tables();
        match (header, bewit) {
            (Some(_), true) => Err(AuthError::MultipleAuthentications),
            (Some(header), false) => self.authenticate_header(&tables, req, header, now),
            (None, true) => authenticate_bewit(&tables, req, now),
            (None, false) => Ok(Identity {
                client_id: None,
                scopes: tables.anonymous.clone(),
                expires: None,
            }),
        }
    }

    fn authenticate_header(
        &self,
        tables: &Tables,
        req: &HawkRequest<'_>,
        header: &str,
        now: DateTime<Utc>,
    ) -> Result<Identity, AuthError> {
        let attrs = parse_header(header)?;
        let ext = parse_ext(attrs.ext.as_deref())?;
        let loaded = tables.load(&attrs.id, ext, now)?;

        let mut normalized = Normalized {
            kind: "header",
            ts: &attrs.ts,
            nonce: &attrs.nonce,
            method: req.method,
            resource: req.resource,
            host: req.host,
            port: req.port,
            hash: attrs.hash.as_deref().unwrap_or(""),
            ext: attrs.ext.as_deref().unwrap_or(""),
            app: attrs.app.as_deref(),
            dlg: attrs.dlg.as_deref(),
        };
        let mut ok = ct_eq(&normalized.mac(&loaded.key), &attrs.mac);
        if !ok
            && self.allow_unsigned_query
            && let Some((path, _)) = req.resource.split_once('?')
        {
            normalized.resource = path;
            ok = ct_eq(&normalized.mac(&loaded.key), &attrs.mac);
        }
        if !ok {
            return Err(AuthError::BadMac);
        }

        let ts: i64 = attrs
            .ts
            .parse()
            .map_err(|_| AuthError::MalformedHeader("ts is not a number".into()))?;
        let now_s = now.timestamp();
        if (ts - now_s).abs() > TIMESTAMP_SKEW.num_seconds() {
            return Err(AuthError::StaleTimestamp {
                ts,
                now: now_s,
                skew_secs: TIMESTAMP_SKEW.num_seconds(),
            });
        }

        if let Some(hash) = &attrs.hash
            && !ct_eq(&payload_hash(req.content_type, req.body), hash)
        {
            return Err(AuthError::PayloadHashMismatch);
        }

        Ok(Identity {
            client_id: Some(attrs.id),
            scopes: loaded.scopes.into_owned(),
            expires: loaded.expires,
        })
    }
}

/// Authenticate a request carrying a bewit.
fn authenticate_bewit(
    tables: &Tables,
    req: &HawkRequest<'_>,
    now: DateTime<Utc>,
) -> Result<Identity, AuthError> {
    if !req.method.eq_ignore_ascii_case("GET") && !req.method.eq_ignore_ascii_case("HEAD") {
        return Err(AuthError::InvalidBewit(
            "only GET and HEAD requests may be authenticated with a bewit".into(),
        ));
    }
    let bewit = parse_bewit(req.resource)?;
    if bewit.exp.saturating_mul(1000) <= now.timestamp_millis() {
        let when = DateTime::from_timestamp(bewit.exp, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| bewit.exp.to_string());
        return Err(AuthError::BewitExpired(when));
    }
    let ext = parse_ext(Some(&bewit.ext))?;
    let loaded = tables.load(&bewit.id, ext, now)?;
    let exp = bewit.exp.to_string();
    let mac = Normalized {
        kind: "bewit",
        ts: &exp,
        nonce: "",
        method: "GET",
        resource: &bewit.resource,
        host: req.host,
        port: req.port,
        hash: "",
        ext: &bewit.ext,
        app: None,
        dlg: None,
    }
    .mac(&loaded.key);
    if !ct_eq(&mac, &bewit.mac) {
        return Err(AuthError::BadMac);
    }
    Ok(Identity {
        client_id: Some(bewit.id),
        scopes: loaded.scopes.into_owned(),
        expires: loaded.expires,
    })
}

impl Tables {
    /// Find the key and compute the scopes for Hawk id `name` with the given `ext`.
    fn load(&self, name: &str, ext: Ext, now: DateTime<Utc>) -> Result<Loaded<'_>, AuthError> {
        // For named temporary credentials the Hawk id is the new name and the certificate
        // says who issued it; the issuer's secret is the one that matters.
        let issuer_id = match ext.certificate.as_ref().and_then(|c| c.get("issuer")) {
            None | Some(Value::Null) => name,
            Some(Value::String(s)) if s.is_empty() => name,
            Some(Value::String(s)) => {
                if s == name {
                    return Err(cert_err(
                        "ext.certificate.issuer must differ from the supplied clientId",
                    ));
                }
                s.as_str()
            }
            Some(_) => return Err(cert_err("ext.certificate.issuer must be a string")),
        };
        let entry = self
            .clients
            .get(issuer_id)
            .ok_or_else(|| AuthError::UnknownClient(issuer_id.to_owned()))?;
        if entry.client.disabled {
            return Err(AuthError::ClientDisabled(issuer_id.to_owned()));
        }
        if entry.client.expires.is_some_and(|e| e < now) {
            return Err(AuthError::ClientExpired(issuer_id.to_owned()));
        }
        entry.mark_used();

        if ext.certificate.is_none() && ext.authorized_scopes.is_none() {
            return Ok(Loaded {
                key: Cow::Borrowed(&entry.client.access_token),
                scopes: Cow::Borrowed(entry.with_anonymous(&self.resolver)),
                expires: entry.client.expires,
            });
        }

        let mut key = Cow::Borrowed(entry.client.access_token.as_str());
        let mut expires = entry.client.expires;
        let expanded = entry.expanded(&self.resolver);
        let mut scopes: Vec<String> = expanded.to_vec();

        if let Some(cert) = &ext.certificate {
            let checked = check_certificate(cert, name, issuer_id, entry, expanded, now)?;
            key = Cow::Owned(checked.key);
            expires = Some(match expires {
                Some(e) if e < checked.expiry => e,
                _ => checked.expiry,
            });
            scopes = checked.scopes;
        }

        if let Some(authorized) = ext.authorized_scopes {
            scopes.push(ANONYMOUS_SCOPE.to_owned());
            let have = self.resolver.expand(&scopes);
            if !ScopeExpr::all_of(&authorized).satisfied_by(&have) {
                return Err(AuthError::AuthorizedScopesNotSatisfied {
                    have: have.join("\n"),
                    authorized: authorized.join("\n"),
                });
            }
            scopes = authorized;
        }

        scopes.push(ANONYMOUS_SCOPE.to_owned());
        Ok(Loaded {
            key,
            scopes: Cow::Owned(self.resolver.expand(&scopes)),
            expires,
        })
    }
}

/// A certificate that passed every check.
struct CheckedCertificate {
    key: String,
    expiry: DateTime<Utc>,
    scopes: Vec<String>,
}

/// A JSON number that is a whole number of milliseconds.
fn millis(v: Option<&Value>, field: &str) -> Result<i64, AuthError> {
    let n = match v {
        Some(Value::Number(n)) => n,
        _ => {
            return Err(cert_err(format!(
                "ext.certificate.{field} must be a number"
            )));
        }
    };
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(cert_err(format!(
            "ext.certificate.{field} must be a whole number of milliseconds"
        ))),
    }
}

/// Validate a certificate issued by `entry` and used under Hawk id `name`.
fn check_certificate(
    cert: &Map<String, Value>,
    name: &str,
    issuer_id: &str,
    entry: &ClientEntry,
    issuer_scopes: &[String],
    now: DateTime<Utc>,
) -> Result<CheckedCertificate, AuthError> {
    match cert.get("version") {
        Some(Value::Number(n)) if n.as_f64() == Some(1.0) => {}
        _ => return Err(cert_err("ext.certificate.version must be 1")),
    }
    let seed = match cert.get("seed") {
        Some(Value::String(s)) => s.as_str(),
        _ => return Err(cert_err("ext.certificate.seed must be a string")),
    };
    if seed.chars().count() != 44 {
        return Err(cert_err("ext.certificate.seed must be 44 characters"));
    }
    let start = millis(cert.get("start"), "start")?;
    let expiry = millis(cert.get("expiry"), "expiry")?;
    let scopes: Vec<String> = match cert.get("scopes") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| match s {
                Value::String(s) if valid_scope(s) => Ok(s.clone()),
                _ => Err(cert_err(
                    "ext.certificate.scopes must be an array of valid scopes",
                )),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(cert_err("ext.certificate.scopes must be an array")),
    };

    let now_ms = now.timestamp_millis();
    let skew_ms = CERTIFICATE_SKEW.num_milliseconds();
    if start > now_ms + skew_ms {
        return Err(cert_err("ext.certificate.start > now"));
    }
    if expiry < now_ms - skew_ms {
        return Err(cert_err("ext.certificate.expiry < now"));
    }
    if expiry - start > MAX_CERTIFICATE_LIFETIME.num_milliseconds() {
        return Err(cert_err("ext.certificate cannot last longer than 31 days"));
    }

    let named = issuer_id != name;
    if named {
        let create = format!("auth:create-client:{name}");
        if !ScopeExpr::scope(create.as_str()).satisfied_by(issuer_scopes) {
            return Err(cert_err(format!(
                "ext.certificate issuer `{issuer_id}` doesn't have `{create}` for supplied clientId"
            )));
        }
        match cert.get("clientId") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == name => {}
            Some(_) => {
                return Err(cert_err(
                    "ext.certificate.clientId does not match the supplied clientId",
                ));
            }
        }
    } else if cert.contains_key("clientId") {
        return Err(cert_err(
            "ext.certificate.clientId must only be used with ext.certificate.issuer",
        ));
    }

    if !ScopeExpr::all_of(&scopes).satisfied_by(issuer_scopes) {
        return Err(cert_err(format!(
            "ext.certificate issuer `{issuer_id}` doesn't satisfy all certificate scopes {}. \
             The temporary credentials were not generated correctly.",
            scopes.join(", ")
        )));
    }

    let text = signature_text(
        named.then_some((name, issuer_id)),
        seed,
        start,
        expiry,
        &scopes,
    );
    let expected = sign(&entry.client.access_token, &text);
    let valid = matches!(cert.get("signature"), Some(Value::String(s)) if ct_eq(s, &expected));
    if !valid {
        return Err(cert_err(if named {
            "ext.certificate.signature is not valid, or wrong clientId provided"
        } else {
            "ext.certificate.signature is not valid"
        }));
    }

    let expiry = DateTime::from_timestamp_millis(expiry)
        .ok_or_else(|| cert_err("ext.certificate.expiry is out of range"))?;
    Ok(CheckedCertificate {
        key: temporary_key(&entry.client.access_token, seed),
        expiry,
        scopes: normalize_scopes(scopes),
    })
}

/// Decode the `ext` attribute: base64 (either alphabet, padding optional) of a JSON object.
fn parse_ext(ext: Option<&str>) -> Result<Ext, AuthError> {
    let ext = match ext {
        None | Some("") => return Ok(Ext::default()),
        Some(e) => e,
    };
    let bytes = decode_base64_any(ext)
        .ok_or_else(|| AuthError::InvalidExt("Failed to parse ext: not base64".into()))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|_| AuthError::InvalidExt("Failed to parse ext: not JSON".into()))?;
    let Value::Object(mut obj) = value else {
        return Err(AuthError::InvalidExt("ext must be a JSON object".into()));
    };
    let certificate = match obj.remove("certificate") {
        None | Some(Value::Null) => None,
        Some(Value::Object(c)) => Some(c),
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(c)) => Some(c),
            _ => return Err(cert_err("ext.certificate must be a JSON object")),
        },
        Some(_) => return Err(cert_err("ext.certificate must be a JSON object")),
    };
    let authorized_scopes = match obj.remove("authorizedScopes") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .into_iter()
                .map(|s| match s {
                    Value::String(s) if valid_scope(&s) => Ok(s),
                    _ => Err(AuthError::InvalidExt(
                        "ext.authorizedScopes must be an array of valid scopes".into(),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => {
            return Err(AuthError::InvalidExt(
                "ext.authorizedScopes must be an array".into(),
            ));
        }
    };
    Ok(Ext {
        certificate,
        authorized_scopes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{bewit, create_temporary_credentials, hawk_header};
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

    const HOST: &str = "queue.example.com";
    const PORT: u16 = 443;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn now() -> DateTime<Utc> {
        t(1_800_000_000)
    }

    fn v(scopes: &[&str]) -> Vec<String> {
        scopes.iter().map(|s| s.to_string()).collect()
    }

    const ISSUER: (&str, &str) = ("issuer", "issuer-token");
    const LIMITED: (&str, &str) = ("limited-issuer", "limited-token");

    fn auth() -> Authenticator {
        Authenticator::new(AuthConfig {
            clients: vec![
                Client::new("worker", "worker-token", ["assume:worker-pool:p/w", "own"]),
                Client::new("issuer", "issuer-token", ["*"]),
                Client::new(
                    "limited-issuer",
                    "limited-token",
                    ["queue:resolve-task:*", "auth:create-client:limited/*"],
                ),
                Client::new("old", "old-token", ["x"]).with_expires(t(1_700_000_000)),
                Client::new("soon", "soon-token", ["x"]).with_expires(t(1_800_000_100)),
            ],
            roles: vec![
                Role::new("anonymous", ["queue:get-task:*"]),
                Role::new("worker-pool:*", ["queue:claim-work:<..>"]),
            ],
        })
        .unwrap()
    }

    fn req<'a>(
        method: &'a str,
        resource: &'a str,
        authorization: Option<&'a str>,
    ) -> HawkRequest<'a> {
        HawkRequest {
            method,
            resource,
            host: HOST,
            port: PORT,
            authorization,
            content_type: None,
            body: b"",
        }
    }

    fn sign(id: &str, key: &str, method: &str, resource: &str) -> String {
        hawk_header(
            id,
            key,
            None,
            None,
            method,
            resource,
            HOST,
            PORT,
            None,
            now(),
        )
    }

    /// `worker`'s header for a POST of `/r` with `body` of `content_type`.
    fn sign_body(body: &[u8], content_type: &str) -> String {
        hawk_header(
            "worker",
            "worker-token",
            None,
            None,
            "POST",
            "/r",
            HOST,
            PORT,
            Some((body, content_type)),
            now(),
        )
    }

    /// A header with a hand-made ext value.
    fn sign_with_ext(id: &str, key: &str, ext: &str) -> String {
        let ts = now().timestamp().to_string();
        let mac = Normalized {
            kind: "header",
            ts: &ts,
            nonce: "abc",
            method: "GET",
            resource: "/r",
            host: HOST,
            port: PORT,
            hash: "",
            ext,
            app: None,
            dlg: None,
        }
        .mac(key);
        format!(r#"Hawk id="{id}", ts="{ts}", nonce="abc", ext="{ext}", mac="{mac}""#)
    }

    fn err(r: Result<Identity, AuthError>) -> AuthError {
        r.expect_err("expected an authentication failure")
    }

    #[test]
    fn anonymous_requests() {
        let a = auth();
        let id = a.authenticate(&req("GET", "/r", None), now()).unwrap();
        assert!(id.is_anonymous());
        assert_eq!(id.scopes, v(&["assume:anonymous", "queue:get-task:*"]));
        assert_eq!(id.expires, None);
        let blank = a
            .authenticate(&req("GET", "/r", Some("  ")), now())
            .unwrap();
        assert!(blank.is_anonymous());
        assert_eq!(a.anonymous_scopes(), id.scopes.as_slice());
    }

    #[test]
    fn permanent_client_header() {
        let a = auth();
        let h = sign("worker", "worker-token", "GET", "/r?x=1");
        let id = a
            .authenticate(&req("GET", "/r?x=1", Some(&h)), now())
            .unwrap();
        assert_eq!(id.client_id.as_deref(), Some("worker"));
        assert_eq!(
            id.scopes,
            v(&[
                "assume:anonymous",
                "assume:worker-pool:p/w",
                "own",
                "queue:claim-work:p/w",
                "queue:get-task:*",
            ])
        );
        assert!(id.satisfies(&ScopeExpr::all_of(["own", "queue:get-task:abc"])));
        assert_eq!(id.expires, None);
        assert_eq!(
            a.client_scopes("worker").unwrap(),
            v(&["assume:worker-pool:p/w", "own", "queue:claim-work:p/w"]).as_slice()
        );
    }

    #[test]
    fn mac_covers_method_resource_host_and_port() {
        let a = auth();
        let h = sign("worker", "worker-token", "GET", "/r?x=1");
        for r in [
            req("POST", "/r?x=1", Some(&h)),
            req("GET", "/r?x=2", Some(&h)),
            req("GET", "/r", Some(&h)),
            HawkRequest {
                host: "other.example.com",
                ..req("GET", "/r?x=1", Some(&h))
            },
            HawkRequest {
                port: 80,
                ..req("GET", "/r?x=1", Some(&h))
            },
        ] {
            assert_eq!(err(a.authenticate(&r, now())), AuthError::BadMac, "{r:?}");
        }
        // host comparison is case-insensitive, method too
        let ok = HawkRequest {
            host: "QUEUE.example.com",
            ..req("get", "/r?x=1", Some(&h))
        };
        assert!(a.authenticate(&ok, now()).is_ok());
        let wrong_key = sign("worker", "not-the-token", "GET", "/r");
        assert_eq!(
            err(a.authenticate(&req("GET", "/r", Some(&wrong_key)), now())),
            AuthError::BadMac
        );
    }

    #[test]
    fn unknown_expired_and_malformed() {
        let a = auth();
        let h = sign("nobody", "x", "GET", "/r");
        let e = err(a.authenticate(&req("GET", "/r", Some(&h)), now()));
        assert_eq!(e, AuthError::UnknownClient("nobody".into()));
        assert_eq!(e.to_string(), "Client with clientId 'nobody' not found");
        let h = sign("old", "old-token", "GET", "/r");
        assert_eq!(
            err(a.authenticate(&req("GET", "/r", Some(&h)), now())),
            AuthError::ClientExpired("old".into())
        );
        let e = err(a.authenticate(&req("GET", "/r", Some("Hawk id=\"x\"")), now()));
        assert!(matches!(e, AuthError::MalformedHeader(_)));
        // a client that expires later reports its expiry
        let h = sign("soon", "soon-token", "GET", "/r");
        let id = a.authenticate(&req("GET", "/r", Some(&h)), now()).unwrap();
        assert_eq!(id.expires, Some(t(1_800_000_100)));
    }

    #[test]
    fn timestamp_skew() {
        let a = auth();
        let h = sign("worker", "worker-token", "GET", "/r");
        let r = req("GET", "/r", Some(&h));
        for delta in [-900, 0, 900] {
            assert!(
                a.authenticate(&r, now() + TimeDelta::seconds(delta))
                    .is_ok(),
                "{delta}"
            );
        }
        for delta in [-901, 901, 86_400] {
            assert!(
                matches!(
                    a.authenticate(&r, now() + TimeDelta::seconds(delta)),
                    Err(AuthError::StaleTimestamp { .. })
                ),
                "{delta}"
            );
        }
    }

    #[test]
    fn payload_hash_checked_when_present() {
        let a = auth();
        let body = br#"{"a":1}"#;
        let h = sign_body(body, "application/json");
        let good = HawkRequest {
            content_type: Some("application/json; charset=utf-8"),
            body,
            ..req("POST", "/r", Some(&h))
        };
        assert!(a.authenticate(&good, now()).is_ok());
        let tampered = HawkRequest {
            body: br#"{"a":2}"#,
            ..good
        };
        assert_eq!(
            err(a.authenticate(&tampered, now())),
            AuthError::PayloadHashMismatch
        );
        let other_type = HawkRequest {
            content_type: Some("text/plain"),
            ..good
        };
        assert_eq!(
            err(a.authenticate(&other_type, now())),
            AuthError::PayloadHashMismatch
        );

        // hash over an empty body with no content type (what the Python client sends for
        // bodiless POSTs)
        let h = sign_body(b"", "");
        assert!(a.authenticate(&req("POST", "/r", Some(&h)), now()).is_ok());

        // no hash in the header: the body is not checked
        let h = sign("worker", "worker-token", "POST", "/r");
        let unhashed = HawkRequest {
            body: b"anything",
            ..req("POST", "/r", Some(&h))
        };
        assert!(a.authenticate(&unhashed, now()).is_ok());
    }

    #[test]
    fn ext_in_any_base64_form() {
        let a = auth();
        let json = r#"{"authorizedScopes":["own"]}"#;
        for ext in [
            STANDARD.encode(json),
            STANDARD_NO_PAD.encode(json),
            URL_SAFE.encode(json),
            URL_SAFE_NO_PAD.encode(json),
        ] {
            let h = sign_with_ext("worker", "worker-token", &ext);
            let id = a.authenticate(&req("GET", "/r", Some(&h)), now()).unwrap();
            assert_eq!(
                id.scopes,
                v(&["assume:anonymous", "own", "queue:get-task:*"]),
                "{ext}"
            );
        }
        // an empty object is fine
        let h = sign_with_ext("worker", "worker-token", "e30=");
        assert!(a.authenticate(&req("GET", "/r", Some(&h)), now()).is_ok());
        for bad in [
            STANDARD.encode("not json"),
            STANDARD.encode("[1]"),
            "%%%".to_owned(),
            STANDARD.encode(r#"{"authorizedScopes":"own"}"#),
            STANDARD.encode(r#"{"authorizedScopes":[1]}"#),
        ] {
            let h = sign_with_ext("worker", "worker-token", &bad);
            let e = a.authenticate(&req("GET", "/r", Some(&h)), now());
            assert!(
                matches!(
                    e,
                    Err(AuthError::InvalidExt(_)) | Err(AuthError::MalformedHeader(_))
                ),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn authorized_scopes() {
        let a = auth();
        let worker = crate::Credentials {
            client_id: "worker".into(),
            access_token: "worker-token".into(),
            certificate: None,
        };
        let restrict = |scopes: &[&str]| sign_as(&worker, Some(&v(scopes)));
        let h = restrict(&["queue:claim-work:p/w"]);
        let id = a.authenticate(&req("GET", "/r", Some(&h)), now()).unwrap();
        // own is gone, the anonymous role comes back
        assert_eq!(
            id.scopes,
            v(&[
                "assume:anonymous",
                "queue:claim-work:p/w",
                "queue:get-task:*"
            ])
        );
        // anonymous scopes may be authorized even though the client doesn't list them
        let h = restrict(&["queue:get-task:abc"]);
        assert!(a.authenticate(&req("GET", "/r", Some(&h)), now()).is_ok());
        // an empty list leaves only the anonymous role
        let h = restrict(&[]);
        let id = a.authenticate(&req("GET", "/r", Some(&h)), now()).unwrap();
        assert_eq!(id.scopes, a.anonymous_scopes());
        let h = restrict(&["own", "admin"]);
        let e = err(a.authenticate(&req("GET", "/r", Some(&h)), now()));
        assert!(matches!(e, AuthError::AuthorizedScopesNotSatisfied { .. }));
        assert!(e.to_string().contains("admin"));
        assert!(!e.to_string().contains("worker-token"));
    }

    /// Temporary credentials issued by `(client id, access token)`.
    fn temp(
        (issuer, token): (&str, &str),
        name: Option<&str>,
        scopes: &[&str],
        start: i64,
        expiry: i64,
    ) -> crate::Credentials {
        create_temporary_credentials(issuer, token, name, &v(scopes), t(start), t(expiry)).unwrap()
    }

    /// A header for a GET of `/r` with `c`, restricted to `authorized`.
    fn sign_as(c: &crate::Credentials, authorized: Option<&[String]>) -> String {
        hawk_header(
            &c.client_id,
            &c.access_token,
            c.certificate.as_deref(),
            authorized,
            "GET",
            "/r",
            HOST,
            PORT,
            None,
            now(),
        )
    }

    /// Authenticates a GET of `/r` signed with `c` (no authorized scopes).
    fn get_with(a: &Authenticator, c: &crate::Credentials) -> Result<Identity, AuthError> {
        a.authenticate(&req("GET", "/r", Some(&sign_as(c, None))), now())
    }

    /// The scope most temporary credentials here carry.
    const RESOLVE_T0: &str = "queue:resolve-task:T/0";

    #[test]
    fn unnamed_temporary_credentials() {
        let a = auth();
        let n = now().timestamp();
        let c = temp(ISSUER, None, &[RESOLVE_T0], n - 60, n + 3600);
        let id = get_with(&a, &c).unwrap();
        assert_eq!(id.client_id.as_deref(), Some("issuer"));
        assert_eq!(
            id.scopes,
            v(&[
                "assume:anonymous",
                "queue:get-task:*",
                "queue:resolve-task:T/0"
            ])
        );
        assert_eq!(id.expires, Some(t(n + 3600)));
        // signing with the issuer's own token instead of the temporary key fails
        let wrong = crate::Credentials {
            client_id: ISSUER.0.to_owned(),
            access_token: ISSUER.1.to_owned(),
            ..c.clone()
        };
        assert_eq!(err(get_with(&a, &wrong)), AuthError::BadMac);
    }

    #[test]
    fn named_temporary_credentials() {
        let a = auth();
        let n = now().timestamp();
        let c = temp(LIMITED, Some("limited/w1"), &[RESOLVE_T0], n, n + 60);
        let id = get_with(&a, &c).unwrap();
        assert_eq!(id.client_id.as_deref(), Some("limited/w1"));
        assert!(id.scopes.contains(&"queue:resolve-task:T/0".to_string()));

        // the issuer lacks auth:create-client:<name>
        let c = temp(LIMITED, Some("other/w1"), &[RESOLVE_T0], n, n + 60);
        let e = err(get_with(&a, &c));
        assert!(e.to_string().contains("auth:create-client:other/w1"), "{e}");

        // the issuer lacks a certificate scope
        let create_task = "queue:create-task:x";
        let c = temp(LIMITED, Some("limited/w2"), &[create_task], n, n + 60);
        let e = err(get_with(&a, &c));
        assert!(matches!(e, AuthError::InvalidCertificate(_)), "{e}");

        // presenting named credentials under another name breaks the signature
        let c = temp(ISSUER, Some("task-client/a"), &["x"], n, n + 60);
        let renamed = crate::Credentials {
            client_id: "task-client/b".into(),
            ..c.clone()
        };
        let e = err(get_with(&a, &renamed));
        assert!(e.to_string().contains("signature is not valid"), "{e}");

        // the name may not be the issuer itself
        let mut cert: Value = serde_json::from_str(c.certificate.as_deref().unwrap()).unwrap();
        cert["issuer"] = "task-client/a".into();
        let same = crate::Credentials {
            certificate: Some(cert.to_string()),
            ..c.clone()
        };
        let e = err(get_with(&a, &same));
        assert!(e.to_string().contains("must differ"), "{e}");

        // unknown issuer
        let ghost = ("ghost", "ghost-token");
        let c = temp(ghost, Some("task-client/a"), &["x"], n, n + 60);
        let e = err(get_with(&a, &c));
        assert_eq!(e, AuthError::UnknownClient("ghost".into()));
    }

    #[test]
    fn certificate_client_id_field() {
        let a = auth();
        let n = now().timestamp();
        let with_client_id = |c: &crate::Credentials, id: &str| {
            let mut cert: Value = serde_json::from_str(c.certificate.as_deref().unwrap()).unwrap();
            cert["clientId"] = id.into();
            crate::Credentials {
                certificate: Some(cert.to_string()),
                ..c.clone()
            }
        };
        let named = temp(ISSUER, Some("task-client/a"), &["x"], n, n + 60);
        let ok = with_client_id(&named, "task-client/a");
        assert!(get_with(&a, &ok).is_ok());
        let mismatch = with_client_id(&named, "task-client/b");
        let e = err(get_with(&a, &mismatch));
        assert!(e.to_string().contains("clientId"), "{e}");
        let unnamed = temp(ISSUER, None, &["x"], n, n + 60);
        let bad = with_client_id(&unnamed, "issuer");
        let e = err(get_with(&a, &bad));
        assert!(
            e.to_string()
                .contains("only be used with ext.certificate.issuer"),
            "{e}"
        );
    }

    #[test]
    fn certificate_time_and_shape_checks() {
        let a = auth();
        let n = now().timestamp();
        let check = |start: i64, expiry: i64| {
            let c = temp(ISSUER, None, &["x"], start, expiry);
            get_with(&a, &c)
        };
        assert!(check(n + 300, n + 600).is_ok());
        assert!(check(n - 600, n - 300).is_ok());
        assert!(
            check(n + 301, n + 600)
                .unwrap_err()
                .to_string()
                .contains("start > now")
        );
        assert!(
            check(n - 600, n - 301)
                .unwrap_err()
                .to_string()
                .contains("expiry < now")
        );

        // fields are checked before the signature, so hand-made certificates show each error
        let base = temp(ISSUER, None, &["x"], n, n + 60);
        let cert: Value = serde_json::from_str(base.certificate.as_deref().unwrap()).unwrap();
        let edits: Vec<(&str, Value, &str)> = vec![
            ("version", 2.into(), "version must be 1"),
            ("seed", "short".into(), "44 characters"),
            ("seed", 5.into(), "seed must be a string"),
            ("start", "0".into(), "start must be a number"),
            ("expiry", Value::Null, "expiry must be a number"),
            ("scopes", "x".into(), "scopes must be an array"),
            ("scopes", serde_json::json!(["ü"]), "valid scopes"),
            ("expiry", ((n + 32 * 86_400) * 1000).into(), "31 days"),
            ("signature", "AAAA".into(), "signature is not valid"),
            (
                "scopes",
                serde_json::json!(["x", "y"]),
                "signature is not valid",
            ),
        ];
        for (field, value, message) in edits {
            let mut c = cert.clone();
            c[field] = value;
            let creds = crate::Credentials {
                certificate: Some(c.to_string()),
                ..base.clone()
            };
            let e = err(get_with(&a, &creds));
            assert!(
                matches!(e, AuthError::InvalidCertificate(_)),
                "{field}: {e}"
            );
            assert!(e.to_string().contains(message), "{field}: {e}");
        }
    }

    #[test]
    fn certificate_as_json_string_in_ext() {
        let a = auth();
        let n = now().timestamp();
        let c = temp(ISSUER, None, &["x"], n, n + 60);
        let ext_json = serde_json::json!({ "certificate": c.certificate.clone().unwrap() });
        let ext = STANDARD.encode(ext_json.to_string());
        let h = sign_with_ext(&c.client_id, &c.access_token, &ext);
        let id = a.authenticate(&req("GET", "/r", Some(&h)), now()).unwrap();
        assert!(id.scopes.contains(&"x".to_string()));
    }

    #[test]
    fn temporary_credentials_with_authorized_scopes() {
        let a = auth();
        let n = now().timestamp();
        let c = temp(ISSUER, None, &["a:*"], n, n + 60);
        let h = sign_as(&c, Some(&v(&["a:1"])));
        let id = a.authenticate(&req("GET", "/r", Some(&h)), now()).unwrap();
        assert_eq!(
            id.scopes,
            v(&["a:1", "assume:anonymous", "queue:get-task:*"])
        );
        // authorizedScopes are checked against the certificate scopes, not the issuer's
        let h = sign_as(&c, Some(&v(&["b"])));
        assert!(matches!(
            a.authenticate(&req("GET", "/r", Some(&h)), now()),
            Err(AuthError::AuthorizedScopesNotSatisfied { .. })
        ));
    }

    #[test]
    fn effective_expiry_is_the_earlier_one() {
        let a = Authenticator::new(AuthConfig {
            clients: vec![Client::new("i", "tok", ["*"]).with_expires(now() + TimeDelta::hours(1))],
            roles: vec![],
        })
        .unwrap();
        let n = now().timestamp();
        for (cert_expiry, expected) in
            [(n + 60, t(n + 60)), (n + 7200, now() + TimeDelta::hours(1))]
        {
            let c = temp(("i", "tok"), None, &["x"], n, cert_expiry);
            let id = get_with(&a, &c).unwrap();
            assert_eq!(id.expires, Some(expected));
        }
    }

    #[test]
    fn bewits() {
        let a = auth();
        let exp = now() + TimeDelta::minutes(15);
        let b = bewit("worker", "worker-token", None, "/a/b?x=1", HOST, PORT, exp);
        let resource = format!("/a/b?x=1&bewit={b}");
        let id = a.authenticate(&req("GET", &resource, None), now()).unwrap();
        assert_eq!(id.client_id.as_deref(), Some("worker"));
        assert!(id.scopes.contains(&"own".to_string()));
        assert!(a.authenticate(&req("HEAD", &resource, None), now()).is_ok());

        // bewit first, other parameters after it
        let b2 = bewit("worker", "worker-token", None, "/a/b?x=1", HOST, PORT, exp);
        let reordered = format!("/a/b?bewit={b2}&x=1");
        assert!(a.authenticate(&req("GET", &reordered, None), now()).is_ok());

        assert!(matches!(
            a.authenticate(&req("GET", &resource, None), exp),
            Err(AuthError::BewitExpired(_))
        ));
        assert!(matches!(
            a.authenticate(&req("POST", &resource, None), now()),
            Err(AuthError::InvalidBewit(_))
        ));
        let tampered = format!("/a/b?x=2&bewit={b}");
        assert_eq!(
            err(a.authenticate(&req("GET", &tampered, None), now())),
            AuthError::BadMac
        );
        let h = sign("worker", "worker-token", "GET", &resource);
        assert_eq!(
            err(a.authenticate(&req("GET", &resource, Some(&h)), now())),
            AuthError::MultipleAuthentications
        );
        assert!(matches!(
            a.authenticate(&req("GET", "/a?bewit=!!", None), now()),
            Err(AuthError::InvalidBewit(_))
        ));

        // temporary credentials in a bewit
        let n = now().timestamp();
        let c = temp(ISSUER, None, &["queue:get-artifact:private/*"], n, n + 60);
        let b = bewit(
            &c.client_id,
            &c.access_token,
            c.certificate.as_deref(),
            "/art",
            HOST,
            PORT,
            exp,
        );
        let id = a
            .authenticate(&req("GET", &format!("/art?bewit={b}"), None), now())
            .unwrap();
        assert!(
            id.scopes
                .contains(&"queue:get-artifact:private/*".to_string())
        );
    }

    #[test]
    fn query_less_signatures_only_when_allowed() {
        let h = sign("worker", "worker-token", "GET", "/list");
        let strict = auth();
        assert_eq!(
            err(strict.authenticate(&req("GET", "/list?limit=5", Some(&h)), now())),
            AuthError::BadMac
        );
        let lenient = auth().allow_unsigned_query(true);
        assert!(
            lenient
                .authenticate(&req("GET", "/list?limit=5", Some(&h)), now())
                .is_ok()
        );
        // the path is still covered
        assert_eq!(
            err(lenient.authenticate(&req("GET", "/other?limit=5", Some(&h)), now())),
            AuthError::BadMac
        );
    }

    #[test]
    fn configuration_is_validated() {
        let bad = |clients: Vec<Client>| {
            Authenticator::new(AuthConfig {
                clients,
                roles: vec![],
            })
        };
        assert!(matches!(
            bad(vec![Client::new("c", "t", ["a**"])]),
            Err(AuthError::InvalidScope { .. })
        ));
        assert!(matches!(
            bad(vec![
                Client::new("c", "t", ["a"]),
                Client::new("c", "u", ["b"])
            ]),
            Err(AuthError::InvalidClient { .. })
        ));
        assert!(matches!(
            bad(vec![Client::new("", "t", ["a"])]),
            Err(AuthError::InvalidClient { .. })
        ));
        assert!(matches!(
            bad(vec![Client::new("c", "", ["a"])]),
            Err(AuthError::InvalidClient { .. })
        ));
        assert!(matches!(
            bad(vec![Client::new("c\"", "t", ["a"])]),
            Err(AuthError::InvalidClient { .. })
        ));
        assert!(matches!(
            Authenticator::new(AuthConfig {
                clients: vec![],
                roles: vec![Role::new("r", ["a**"])]
            }),
            Err(AuthError::InvalidScope { .. })
        ));
        let c = Client::new("c", "secret-token", ["a"]);
        assert!(!format!("{c:?}").contains("secret-token"));
        let a = Authenticator::new(AuthConfig {
            clients: vec![c],
            roles: vec![],
        })
        .unwrap();
        assert!(!format!("{a:?}").contains("secret-token"));
    }

    #[test]
    fn config_deserialises_from_camel_case() {
        let cfg: AuthConfig = serde_json::from_value(serde_json::json!({
            "clients": [{"clientId": "c", "accessToken": "t", "scopes": ["a"], "expires": "2030-01-01T00:00:00Z"}],
            "roles": [{"roleId": "anonymous", "scopes": ["b"]}]
        }))
        .unwrap();
        assert_eq!(
            cfg.clients[0].expires,
            Some("2030-01-01T00:00:00Z".parse().unwrap())
        );
        assert_eq!(cfg.roles[0], Role::new("anonymous", ["b"]));
    }
}
