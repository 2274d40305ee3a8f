//! The OAuth2 grants in the queue's database: authorization codes (used
//! once, within ten minutes) and access tokens (kept as their hash, valid
//! ten minutes), each with the user who granted it and the client to create
//! for the tool.

use bbb_clock::Millis;
use bbb_queue::db::Db;
use serde_json::Value;
use sha2::{Digest, Sha512};
use sqlx::Row;
use sqlx::any::AnyRow;

/// How long a code or an access token may be used (upstream's ten minutes,
/// as RFC 6749 §4.1.2 recommends for codes).
pub const GRANT_LIFETIME_MS: Millis = 10 * 60 * 1000;

/// How long after expiring a code or token is deleted (upstream's
/// `authorizationCodeExpirationDelay`).
pub const PURGE_DELAY_MS: Millis = 10 * 60 * 1000;

/// What a user granted a tool: upstream's row of `authorization_codes` and
/// `access_tokens`.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    /// The registered client (the tool).
    pub client_id: String,
    /// The redirect URI of the authorization request.
    pub redirect_uri: String,
    /// The user.
    pub identity: String,
    /// How the user signed in: `users` (a configured password user) or
    /// `proxy` (named by the trusted reverse proxy).
    pub identity_provider_id: String,
    /// When the code or token stops working (ms).
    pub expires: Millis,
    /// The client to create: `clientId`, `description`, `scopes`, `expires`,
    /// `deleteOnExpiration`.
    pub client_details: Value,
}

/// Apply sign-in's migrations (versions 6001 and up) to the queue's database.
pub async fn migrate(db: &Db) -> anyhow::Result<()> {
    bbb_sqlstore::migrate_shared(
        &db.pool,
        db.backend,
        sqlx::migrate!("./migrations/sqlite"),
        sqlx::migrate!("./migrations/postgres"),
    )
    .await
    .map_err(|e| anyhow::anyhow!("login migrations: {e}"))
}

/// The hash an access token is stored under: SHA-512, hex (upstream's `hash`).
pub fn hash_token(token: &str) -> String {
    Sha512::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const COLUMNS: &str =
    "client_id, redirect_uri, identity, identity_provider_id, expires, client_details";

fn grant_from(row: &AnyRow) -> anyhow::Result<Grant> {
    Ok(Grant {
        client_id: row.try_get("client_id")?,
        redirect_uri: row.try_get("redirect_uri")?,
        identity: row.try_get("identity")?,
        identity_provider_id: row.try_get("identity_provider_id")?,
        expires: row.try_get("expires")?,
        client_details: serde_json::from_str(&row.try_get::<String, _>("client_details")?)?,
    })
}

/// Insert `grant` into `table` under `key`.
async fn insert<'c, E>(e: E, table: &str, key: &str, grant: &Grant) -> anyhow::Result<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let key_column = if table == "login_access_tokens" {
        "hashed_access_token"
    } else {
        "code"
    };
    sqlx::query(&format!(
        "INSERT INTO {table} ({key_column}, {COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
    ))
    .bind(key)
    .bind(&grant.client_id)
    .bind(&grant.redirect_uri)
    .bind(&grant.identity)
    .bind(&grant.identity_provider_id)
    .bind(grant.expires)
    .bind(grant.client_details.to_string())
    .execute(e)
    .await?;
    Ok(())
}

/// Record an authorization code.
pub async fn create_authorization_code(db: &Db, code: &str, grant: &Grant) -> anyhow::Result<()> {
    insert(&db.pool, "login_authorization_codes", code, grant).await
}

/// Record an access token (under its hash).
pub async fn create_access_token(db: &Db, token: &str, grant: &Grant) -> anyhow::Result<()> {
    insert(&db.pool, "login_access_tokens", &hash_token(token), grant).await
}

/// Exchange `code` for the access token `token`: the code is consumed (it
/// can never be used again, whatever the outcome), and when it was made for
/// `redirect_uri` and has not expired at `now`, the token is recorded with
/// its grant, valid [`GRANT_LIFETIME_MS`]. `None`: no such code, or the code
/// does not fit. One transaction.
pub async fn exchange_code(
    db: &Db,
    code: &str,
    redirect_uri: Option<&str>,
    token: &str,
    now: Millis,
) -> anyhow::Result<Option<Grant>> {
    let mut tx = db.pool.begin().await?;
    let row = sqlx::query(&format!(
        "DELETE FROM login_authorization_codes WHERE code = $1 RETURNING {COLUMNS}"
    ))
    .bind(code)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        tx.commit().await?;
        return Ok(None);
    };
    let mut grant = grant_from(&row)?;
    if redirect_uri != Some(grant.redirect_uri.as_str()) || grant.expires < now {
        tx.commit().await?;
        return Ok(None);
    }
    grant.expires = now + GRANT_LIFETIME_MS;
    insert(&mut *tx, "login_access_tokens", &hash_token(token), &grant).await?;
    tx.commit().await?;
    Ok(Some(grant))
}

/// The grant of access token `token`, if it exists (expired or not).
pub async fn access_token(db: &Db, token: &str) -> anyhow::Result<Option<Grant>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM login_access_tokens WHERE hashed_access_token = $1"
    ))
    .bind(hash_token(token))
    .fetch_optional(&db.pool)
    .await?;
    row.as_ref().map(grant_from).transpose()
}

/// Delete the codes and tokens that expired [`PURGE_DELAY_MS`] before `now`;
/// how many.
pub async fn purge(db: &Db, now: Millis) -> anyhow::Result<u64> {
    let mut n = 0;
    for table in ["login_authorization_codes", "login_access_tokens"] {
        n += sqlx::query(&format!("DELETE FROM {table} WHERE expires < $1"))
            .bind(now - PURGE_DELAY_MS)
            .execute(&db.pool)
            .await?
            .rows_affected();
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_as_sha512_hex() {
        assert_eq!(
            hash_token("abc"),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }
}
