//! Roles: list (three ways), get, create, update, delete. Every change is
//! checked against all the other roles, static and stored, for cycles.

use super::{AuthApi, check_description, check_scope_list, list_query, refuse_double_star};
use crate::store::{RoleRow, RoleWrite};
use bbb_auth::{AuthError, Role, RoleResolver, scope_compare, scope_satisfied};
use bbb_clock::fmt_ms;
use bbb_service::paging::encode_token;
use bbb_service::{ApiError, Call, Reply, Result, ScopeParams};
use serde::Deserialize;
use serde_json::{Value, json};

/// What a configured role's description says.
const STATIC_DESCRIPTION: &str = "Role from bbb's configuration\n---\n\nThis is a **static role** inserted into this deployment through static\nconfiguration. To modify this role you must contact the administrator who\ndeploys this instance.";

/// The body of `createRole` and `updateRole`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleInput {
    scopes: Vec<String>,
    description: String,
}

/// The body, checked as upstream's `create-role-request` schema checks it.
fn role_input(call: &Call) -> Result<RoleInput> {
    let input: RoleInput = call.input_as()?;
    check_scope_list(&input.scopes)?;
    check_description(&input.description)?;
    Ok(input)
}

/// A role as the API shows it, with what `assume:<roleId>` expands to.
fn role_json(api: &AuthApi, r: &RoleRow) -> Value {
    json!({
        "roleId": r.role_id,
        "scopes": r.scopes,
        "expandedScopes": api.auth.expand(&[format!("assume:{}", r.role_id)]),
        "description": r.description,
        "lastModified": fmt_ms(r.last_modified),
        "created": fmt_ms(r.created),
    })
}

/// Whether `id` is a configured role.
fn is_static(api: &AuthApi, id: &str) -> bool {
    api.auth.bootstrap().roles.iter().any(|r| r.role_id == id)
}

/// A configured role as a row (its dates are the service's start).
fn static_row(api: &AuthApi, r: &Role) -> RoleRow {
    RoleRow {
        role_id: r.role_id.clone(),
        description: STATIC_DESCRIPTION.into(),
        scopes: r.scopes.clone(),
        created: api.started,
        last_modified: api.started,
    }
}

/// Every role, configured and stored, by id.
async fn all_roles(api: &AuthApi) -> Result<Vec<RoleRow>> {
    let mut roles: Vec<RoleRow> = api
        .store
        .roles()
        .await?
        .into_iter()
        .filter(|r| !is_static(api, &r.role_id))
        .collect();
    roles.extend(
        api.auth
            .bootstrap()
            .roles
            .iter()
            .map(|r| static_row(api, r)),
    );
    roles.sort_by(|a, b| a.role_id.cmp(&b.role_id));
    Ok(roles)
}

/// Upstream's 400 `InputError` for a role set that cannot be: a cycle, or a
/// parameterised scope with two `<..>` or an ambiguous `*<..>`.
fn role_set_error(e: AuthError) -> ApiError {
    ApiError::Input(match e {
        AuthError::RoleCycle(ids) => {
            let patterns: Vec<String> = ids.iter().map(|id| format!("assume:{id}")).collect();
            format!(
                "Roles may not contain dependency cycles, found: '{}'",
                patterns.join("' -> '")
            )
        }
        AuthError::InvalidScope { scope, .. } if scope.matches("<..>").count() > 1 => {
            format!("parameterized scope '{scope}' contains multiple '<..>'")
        }
        AuthError::InvalidScope { scope, .. } if scope.contains("*<..>") => format!(
            "parameterized scope '{scope}' ends with '*<..>' which implies an ambiguous kleene"
        ),
        e => e.to_string(),
    })
}

/// Check that the configured roles, the stored ones and `changed` (new or
/// replacing the stored role of its id) can stand together.
fn check_role_set(api: &AuthApi, stored: &[RoleRow], changed: &RoleRow) -> Result<()> {
    let roles = api
        .auth
        .bootstrap()
        .roles
        .iter()
        .cloned()
        .chain(
            stored
                .iter()
                .filter(|r| r.role_id != changed.role_id && !is_static(api, &r.role_id))
                .map(|r| Role::new(r.role_id.clone(), r.scopes.iter().cloned())),
        )
        .chain([Role::new(
            changed.role_id.clone(),
            changed.scopes.iter().cloned(),
        )]);
    RoleResolver::new(roles.collect())
        .map(drop)
        .map_err(role_set_error)
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("Role with roleId '{id}' not found"))
}

fn exists(id: &str) -> ApiError {
    ApiError::Conflict(format!("Role with roleId '{id}' already exists"))
}

/// Upstream has no static roles; a configured role is refused as a static
/// client is: 400 `InputError`.
fn refuse_static(api: &AuthApi, id: &str) -> Result<()> {
    if is_static(api, id) {
        return Err(ApiError::Input(format!(
            "roleId \"{id}\" is a statically configured role. Contact your administrator \
             to change static roles."
        )));
    }
    Ok(())
}

/// `GET /roles/`: every role, in one answer.
pub async fn list_roles(api: AuthApi, _: Call) -> Result<Reply> {
    let roles = all_roles(&api).await?;
    Ok(Reply::json(Value::Array(
        roles.iter().map(|r| role_json(&api, r)).collect(),
    )))
}

/// The roles after the call's `continuationToken`, at most `limit` of them
/// (all without one), and the token of the rest.
async fn role_page(api: &AuthApi, call: &Call) -> Result<(Vec<RoleRow>, Option<String>)> {
    let (limit, after) = list_query(&call.query)?;
    let mut roles = all_roles(api).await?;
    if let Some(after) = after {
        roles.retain(|r| r.role_id > after);
    }
    let token = match limit {
        Some(n) if roles.len() > n => {
            roles.truncate(n);
            roles.last().map(|r| encode_token(&r.role_id))
        }
        _ => None,
    };
    Ok((roles, token))
}

/// `GET /roles2/`: roles, a page at a time when `limit` is given.
pub async fn list_roles2(api: AuthApi, call: Call) -> Result<Reply> {
    let (roles, token) = role_page(&api, &call).await?;
    let roles: Vec<Value> = roles.iter().map(|r| role_json(&api, r)).collect();
    Ok(Reply::json(bbb_service::paging::with_token(
        json!({ "roles": roles }),
        token,
    )))
}

/// `GET /roleids/`: role ids, a page at a time when `limit` is given.
pub async fn list_role_ids(api: AuthApi, call: Call) -> Result<Reply> {
    let (roles, token) = role_page(&api, &call).await?;
    let ids: Vec<&str> = roles.iter().map(|r| r.role_id.as_str()).collect();
    Ok(Reply::json(bbb_service::paging::with_token(
        json!({ "roleIds": ids }),
        token,
    )))
}

/// `GET /roles/<roleId>`.
pub async fn role(api: AuthApi, call: Call) -> Result<Reply> {
    let id = call.param("roleId");
    let role = all_roles(&api)
        .await?
        .into_iter()
        .find(|r| r.role_id == id)
        .ok_or_else(|| ApiError::NotFound("Role not found".into()))?;
    Ok(Reply::json(role_json(&api, &role)))
}

/// `PUT /roles/<roleId>`: a new role; the caller must hold the scopes it
/// grants. The same role again is answered as it is; another of that id is
/// a conflict.
pub async fn create_role(api: AuthApi, call: Call) -> Result<Reply> {
    let input = role_input(&call)?;
    let id = call.param("roleId");
    refuse_double_star(&input.scopes)?;
    call.authorize_with(ScopeParams::new().list("scopes", input.scopes.clone()))?;
    let mut scopes = input.scopes;
    scopes.sort_by(|a, b| scope_compare(a, b));
    if let Some(r) = api.auth.bootstrap().roles.iter().find(|r| r.role_id == id) {
        let existing = static_row(&api, r);
        if existing.description != input.description || existing.scopes != scopes {
            return Err(exists(id));
        }
        return Ok(Reply::json(role_json(&api, &existing)));
    }
    let now = api.now();
    let (role, new) = api
        .queue
        .retrying(|| {
            api.store.modify_roles(|stored| {
                if let Some(existing) = stored.iter().find(|r| r.role_id == id) {
                    if existing.description != input.description || existing.scopes != scopes {
                        return Err(exists(id));
                    }
                    return Ok((RoleWrite::Nothing, (existing.clone(), false)));
                }
                let role = RoleRow {
                    role_id: id.to_string(),
                    description: input.description.clone(),
                    scopes: scopes.clone(),
                    created: now,
                    last_modified: now,
                };
                check_role_set(&api, stored, &role)?;
                Ok((RoleWrite::Insert(role.clone()), (role, true)))
            })
        })
        .await?;
    if new {
        api.changed().await;
    }
    Ok(Reply::json(role_json(&api, &role)))
}

/// `POST /roles/<roleId>`: new scopes and description; the caller must hold
/// the scopes it adds (those the role's expansion did not already satisfy).
pub async fn update_role(api: AuthApi, call: Call) -> Result<Reply> {
    let input = role_input(&call)?;
    let id = call.param("roleId");
    refuse_double_star(&input.scopes)?;
    refuse_static(&api, id)?;
    let now = api.now();
    let role = api
        .queue
        .retrying(|| {
            api.store.modify_roles(|stored| {
                let existing = stored
                    .iter()
                    .find(|r| r.role_id == id)
                    .ok_or_else(|| not_found(id))?;
                let former = api.auth.expand(&existing.scopes);
                let added: Vec<String> = input
                    .scopes
                    .iter()
                    .filter(|s| !scope_satisfied(&former, s))
                    .cloned()
                    .collect();
                call.authorize_with(ScopeParams::new().list("scopesAdded", added))?;
                let role = RoleRow {
                    description: input.description.clone(),
                    scopes: input.scopes.clone(),
                    last_modified: now,
                    ..existing.clone()
                };
                check_role_set(&api, stored, &role)?;
                Ok((RoleWrite::Update(role.clone()), role))
            })
        })
        .await?;
    api.changed().await;
    Ok(Reply::json(role_json(&api, &role)))
}

/// `DELETE /roles/<roleId>`: whether or not it exists, 204.
pub async fn delete_role(api: AuthApi, call: Call) -> Result<Reply> {
    let id = call.param("roleId");
    refuse_static(&api, id)?;
    api.queue
        .retrying(|| {
            api.store
                .modify_roles(|_| Ok((RoleWrite::Delete(id.to_string()), ())))
        })
        .await?;
    api.changed().await;
    Ok(Reply::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_set_errors_read_as_upstream() {
        let e = role_set_error(AuthError::RoleCycle(vec![
            "a".into(),
            "b*".into(),
            "a".into(),
        ]));
        assert_eq!(e.code(), "InputError");
        assert_eq!(
            e.to_string(),
            "Roles may not contain dependency cycles, found: 'assume:a' -> 'assume:b*' -> 'assume:a'"
        );
        let invalid = |scope: &str| AuthError::InvalidScope {
            scope: scope.into(),
            reason: String::new(),
        };
        assert_eq!(
            role_set_error(invalid("x<..>y<..>")).to_string(),
            "parameterized scope 'x<..>y<..>' contains multiple '<..>'"
        );
        assert_eq!(
            role_set_error(invalid("x*<..>")).to_string(),
            "parameterized scope 'x*<..>' ends with '*<..>' which implies an ambiguous kleene"
        );
    }
}
