//! Clients: list, get, create, update, reset the access token, enable,
//! disable, delete.

use super::{
    AuthApi, CLIENT_ID, CLIENT_ID_PATTERN, bad_query, check_description, check_scope_list,
    refuse_double_star,
};
use crate::store::{ClientChange, ClientRow, Created};
use bbb_auth::Client;
use bbb_clock::{Millis, fmt_ms, parse_ms};
use bbb_service::paging::{page, with_token};
use bbb_service::validate::{schema_error, slugid};
use bbb_service::{ApiError, Call, Reply, Result, ScopeParams};
use serde::Deserialize;
use serde_json::{Value, json};

/// What upstream appends to a static client's description.
const STATIC_NOTE: &str = "\n---\n\nThis is a **static client** inserted into this taskcluster deployment\nthrough static configuration. To modify this client you must contact the\nadministrator who deploys this taskcluster instance.";

/// How far in the future a static client without an expiry expires
/// (upstream: a thousand years).
const STATIC_LIFETIME_MS: Millis = 1000 * 36525 * 24 * 3600 * 10;

/// The body of `createClient` and `updateClient`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ClientInput {
    expires: String,
    description: String,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    delete_on_expiration: Option<bool>,
}

/// The body, checked as upstream's `create-client-request` schema checks it,
/// with its expiry.
fn client_input(call: &Call) -> Result<(ClientInput, Millis)> {
    let input: ClientInput = call.input_as()?;
    let expires = parse_ms(&input.expires)
        .ok_or_else(|| schema_error("/expires must match format \"date-time\""))?;
    check_description(&input.description)?;
    if let Some(scopes) = &input.scopes {
        check_scope_list(scopes)?;
    }
    Ok((input, expires))
}

/// A client as the API shows it: without its access token, with its scopes
/// expanded through the roles in force.
fn client_json(api: &AuthApi, c: &ClientRow) -> Value {
    json!({
        "clientId": c.client_id,
        "description": c.description,
        "expires": fmt_ms(c.expires),
        "created": fmt_ms(c.created),
        "lastModified": fmt_ms(c.last_modified),
        "lastDateUsed": fmt_ms(c.last_date_used),
        "lastRotated": fmt_ms(c.last_rotated),
        "deleteOnExpiration": c.delete_on_expiration,
        "scopes": c.scopes,
        "expandedScopes": api.auth.expand(&c.scopes),
        "disabled": c.disabled,
    })
}

/// [`client_json`] with the access token, for the two methods that show it.
fn client_json_with_token(api: &AuthApi, c: &ClientRow) -> Value {
    let mut v = client_json(api, c);
    v["accessToken"] = c.access_token.clone().into();
    v
}

/// A configured client as a row (its dates are the service's start).
fn static_row(api: &AuthApi, c: &Client) -> ClientRow {
    let what = if c.client_id.starts_with("static/taskcluster/") {
        "Internal client"
    } else {
        "Client from bbb's configuration"
    };
    ClientRow {
        client_id: c.client_id.clone(),
        description: format!("{what}{STATIC_NOTE}"),
        access_token: String::new(),
        expires: c
            .expires
            .map(|e| e.timestamp_millis())
            .unwrap_or(api.started + STATIC_LIFETIME_MS),
        disabled: false,
        scopes: c.scopes.clone(),
        created: api.started,
        last_modified: api.started,
        last_date_used: api.started,
        last_rotated: api.started,
        delete_on_expiration: false,
    }
}

/// The configured client `id`, if there is one.
fn static_client<'a>(api: &'a AuthApi, id: &str) -> Option<&'a Client> {
    api.auth
        .bootstrap()
        .clients
        .iter()
        .find(|c| c.client_id == id)
}

/// Upstream's refusal to change a static client: 400 `InputError`. A
/// configured client whose id does not start with `static/` is refused the
/// same way.
fn refuse_static(api: &AuthApi, id: &str) -> Result<()> {
    if id.starts_with("static/") {
        return Err(ApiError::Input(format!(
            "clientId \"{id}\" starts with \"static/\" which is reserved for statically \
             configured clients. Contact your administrator to change static clients."
        )));
    }
    if static_client(api, id).is_some() {
        return Err(ApiError::Input(format!(
            "clientId \"{id}\" is a statically configured client. Contact your \
             administrator to change static clients."
        )));
    }
    Ok(())
}

fn not_found() -> ApiError {
    ApiError::NotFound("Client not found".into())
}

/// A fresh access token: two slugids, as upstream makes them.
fn new_access_token() -> String {
    format!("{}{}", slugid(), slugid())
}

/// `GET /clients/`: the configured and the stored clients by id, those
/// starting with `prefix` if given, a page at a time.
pub async fn list_clients(api: AuthApi, call: Call) -> Result<Reply> {
    let prefix = match call.query.get("prefix") {
        Some(p) if !CLIENT_ID.is_match(p) => {
            return Err(bad_query("prefix", p, CLIENT_ID_PATTERN));
        }
        Some(p) => p.as_str(),
        None => "",
    };
    let (limit, after) = call.paging()?;
    let after = after.unwrap_or_default();
    let mut rows: Vec<ClientRow> = api
        .store
        .clients(prefix, &after, limit)
        .await?
        .into_iter()
        .filter(|r| static_client(&api, &r.client_id).is_none())
        .collect();
    rows.extend(
        api.auth
            .bootstrap()
            .clients
            .iter()
            .filter(|c| c.client_id.starts_with(prefix) && c.client_id > after)
            .map(|c| static_row(&api, c)),
    );
    rows.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    rows.truncate(limit as usize);
    let (rows, token) = page(rows, limit, |r| r.client_id.clone());
    let clients: Vec<Value> = rows.iter().map(|r| client_json(&api, r)).collect();
    Ok(Reply::json(with_token(
        json!({ "clients": clients }),
        token,
    )))
}

/// `GET /clients/<clientId>`.
pub async fn client(api: AuthApi, call: Call) -> Result<Reply> {
    let id = call.param("clientId");
    let row = match static_client(&api, id) {
        Some(c) => static_row(&api, c),
        None => api.store.client(id).await?.ok_or_else(not_found)?,
    };
    Ok(Reply::json(client_json(&api, &row)))
}

/// `PUT /clients/<clientId>`: a new client with a new access token; the
/// caller must hold the scopes it grants. The same call repeated within
/// fifteen minutes answers the same client.
pub async fn create_client(api: AuthApi, call: Call) -> Result<Reply> {
    let (input, expires) = client_input(&call)?;
    let id = call.param("clientId").to_string();
    if id.starts_with("static/") {
        refuse_static(&api, &id)?;
    }
    let scopes = input.scopes.unwrap_or_default();
    refuse_double_star(&scopes)?;
    call.authorize_with(ScopeParams::new().list("scopes", scopes.clone()))?;
    if static_client(&api, &id).is_some() {
        return Err(ApiError::Conflict("Client already exists".into()));
    }
    let now = api.now();
    let row = ClientRow {
        client_id: id,
        description: input.description,
        access_token: new_access_token(),
        expires,
        disabled: false,
        scopes,
        created: now,
        last_modified: now,
        last_date_used: now,
        last_rotated: now,
        delete_on_expiration: input.delete_on_expiration.unwrap_or(false),
    };
    let created = api
        .queue
        .retrying(|| api.store.create_client(&row, now))
        .await?;
    let client = match created {
        Created::New(c) => {
            api.changed().await;
            c
        }
        Created::Repeated(c) => c,
        Created::Conflict => return Err(ApiError::Conflict("Client already exists".into())),
    };
    Ok(Reply::json(client_json_with_token(&api, &client)))
}

/// Apply `change` to the stored client of the call's `clientId` and answer
/// it (with its access token when `with_token`).
async fn change_client(
    api: &AuthApi,
    call: &Call,
    change: ClientChange,
    with_token: bool,
) -> Result<Reply> {
    let id = call.param("clientId");
    let now = api.now();
    let client = api
        .queue
        .retrying(|| api.store.update_client(id, &change, now))
        .await?
        .ok_or_else(not_found)?;
    api.changed().await;
    Ok(Reply::json(if with_token {
        client_json_with_token(api, &client)
    } else {
        client_json(api, &client)
    }))
}

/// `POST /clients/<clientId>`: new description, expiry, scopes (when given)
/// and `deleteOnExpiration`; the caller must hold the scopes it adds.
pub async fn update_client(api: AuthApi, call: Call) -> Result<Reply> {
    let (input, expires) = client_input(&call)?;
    let id = call.param("clientId");
    refuse_static(&api, id)?;
    if let Some(scopes) = &input.scopes {
        refuse_double_star(scopes)?;
    }
    let existing = api.store.client(id).await?.ok_or_else(not_found)?;
    let added: Vec<String> = input
        .scopes
        .iter()
        .flatten()
        .filter(|s| !existing.scopes.contains(s))
        .cloned()
        .collect();
    call.authorize_with(ScopeParams::new().list("scopesAdded", added))?;
    let change = ClientChange {
        description: Some(input.description),
        expires: Some(expires),
        scopes: input.scopes,
        delete_on_expiration: Some(input.delete_on_expiration.unwrap_or(false)),
        ..ClientChange::default()
    };
    change_client(&api, &call, change, false).await
}

/// `POST /clients/<clientId>/reset`: a new access token, answered once.
pub async fn reset_access_token(api: AuthApi, call: Call) -> Result<Reply> {
    refuse_static(&api, call.param("clientId"))?;
    let change = ClientChange {
        access_token: Some(new_access_token()),
        ..ClientChange::default()
    };
    change_client(&api, &call, change, true).await
}

/// `POST /clients/<clientId>/enable`.
pub async fn enable_client(api: AuthApi, call: Call) -> Result<Reply> {
    set_disabled(api, call, false).await
}

/// `POST /clients/<clientId>/disable`: the client can no longer
/// authenticate, on any process within the poll interval.
pub async fn disable_client(api: AuthApi, call: Call) -> Result<Reply> {
    set_disabled(api, call, true).await
}

async fn set_disabled(api: AuthApi, call: Call, disabled: bool) -> Result<Reply> {
    refuse_static(&api, call.param("clientId"))?;
    let change = ClientChange {
        disabled: Some(disabled),
        ..ClientChange::default()
    };
    change_client(&api, &call, change, false).await
}

/// `DELETE /clients/<clientId>`: whether or not it exists, 204.
pub async fn delete_client(api: AuthApi, call: Call) -> Result<Reply> {
    let id = call.param("clientId");
    refuse_static(&api, id)?;
    api.queue.retrying(|| api.store.delete_client(id)).await?;
    api.changed().await;
    Ok(Reply::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_clients_live_a_thousand_years() {
        let years = STATIC_LIFETIME_MS as f64 / (365.25 * 24.0 * 3600.0 * 1000.0);
        assert!((years - 1000.0).abs() < 1e-9, "{years}");
        let token = new_access_token();
        assert_eq!(token.len(), 44);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }
}
