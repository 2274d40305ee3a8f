//! The clients and roles in the queue's database, and the generation counter
//! every change moves (see the crate README).

use bbb_clock::Millis;
use bbb_service::{ApiError, Result};
use bbb_sqlstore::{Backend, ErrorClass};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Executor, Row, Transaction};

/// How long a repeated `createClient` with the same values still answers
/// with the client it created, as upstream's `create_client` does.
pub const CREATE_REPEAT_WINDOW_MS: Millis = 15 * 60 * 1000;

/// A client as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientRow {
    /// The client id.
    pub client_id: String,
    /// What the client is for (markdown).
    pub description: String,
    /// Its access token, the Hawk key.
    pub access_token: String,
    /// When it stops working.
    pub expires: Millis,
    /// Whether it is disabled.
    pub disabled: bool,
    /// Its scopes, unexpanded, as given.
    pub scopes: Vec<String>,
    /// When it was created.
    pub created: Millis,
    /// When it was last changed.
    pub last_modified: Millis,
    /// When it was last used, to within six hours.
    pub last_date_used: Millis,
    /// When its access token was last reset.
    pub last_rotated: Millis,
    /// Whether it may be deleted once expired.
    pub delete_on_expiration: bool,
}

impl std::fmt::Debug for ClientRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRow")
            .field("client_id", &self.client_id)
            .field("access_token", &"<redacted>")
            .field("expires", &self.expires)
            .field("disabled", &self.disabled)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// A role as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleRow {
    /// The role id.
    pub role_id: String,
    /// What the role is for (markdown).
    pub description: String,
    /// The scopes it grants, as given.
    pub scopes: Vec<String>,
    /// When it was created.
    pub created: Millis,
    /// When it was last changed.
    pub last_modified: Millis,
}

/// A change to one client: every field that is `Some` is set.
#[derive(Clone, Debug, Default)]
pub struct ClientChange {
    /// A new description.
    pub description: Option<String>,
    /// A new access token (which also sets `last_rotated`).
    pub access_token: Option<String>,
    /// A new expiry.
    pub expires: Option<Millis>,
    /// Disabled or enabled.
    pub disabled: Option<bool>,
    /// New scopes.
    pub scopes: Option<Vec<String>>,
    /// A new `deleteOnExpiration`.
    pub delete_on_expiration: Option<bool>,
}

/// What [`Store::create_client`] did.
#[derive(Debug)]
pub enum Created {
    /// The client is new.
    New(ClientRow),
    /// The same client was created moments ago: this is it.
    Repeated(ClientRow),
    /// Another client of that id exists.
    Conflict,
}

/// What a role change decided (see [`Store::modify_roles`]).
#[derive(Debug)]
pub enum RoleWrite {
    /// Add this role.
    Insert(RoleRow),
    /// Replace the role of this id.
    Update(RoleRow),
    /// Delete the role of this id, if it exists.
    Delete(String),
    /// Change nothing.
    Nothing,
}

/// The columns [`client_from_row`] reads.
const CLIENT_COLUMNS: &str = "client_id, description, access_token, expires, disabled, scopes, \
     created, last_modified, last_date_used, last_rotated, delete_on_expiration";
/// The columns [`role_from_row`] reads.
const ROLE_COLUMNS: &str = "role_id, description, scopes, created, last_modified";

fn scopes_from(text: &str) -> Result<Vec<String>> {
    Ok(serde_json::from_str(text)?)
}

fn client_from_row(row: &AnyRow) -> Result<ClientRow> {
    Ok(ClientRow {
        client_id: row.try_get("client_id")?,
        description: row.try_get("description")?,
        access_token: row.try_get("access_token")?,
        expires: row.try_get("expires")?,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        scopes: scopes_from(&row.try_get::<String, _>("scopes")?)?,
        created: row.try_get("created")?,
        last_modified: row.try_get("last_modified")?,
        last_date_used: row.try_get("last_date_used")?,
        last_rotated: row.try_get("last_rotated")?,
        delete_on_expiration: row.try_get::<i64, _>("delete_on_expiration")? != 0,
    })
}

fn role_from_row(row: &AnyRow) -> Result<RoleRow> {
    Ok(RoleRow {
        role_id: row.try_get("role_id")?,
        description: row.try_get("description")?,
        scopes: scopes_from(&row.try_get::<String, _>("scopes")?)?,
        created: row.try_get("created")?,
        last_modified: row.try_get("last_modified")?,
    })
}

/// The client `id`, read through `e`.
async fn client_by_id<'c, E: Executor<'c, Database = Any>>(
    e: E,
    id: &str,
) -> Result<Option<ClientRow>> {
    sqlx::query(&format!(
        "SELECT {CLIENT_COLUMNS} FROM auth_clients WHERE client_id = $1"
    ))
    .bind(id)
    .fetch_optional(e)
    .await?
    .as_ref()
    .map(client_from_row)
    .transpose()
}

/// Every role, by id, read through `e`.
async fn all_roles<'c, E: Executor<'c, Database = Any>>(e: E) -> Result<Vec<RoleRow>> {
    sqlx::query(&format!(
        "SELECT {ROLE_COLUMNS} FROM auth_roles ORDER BY role_id"
    ))
    .fetch_all(e)
    .await?
    .iter()
    .map(role_from_row)
    .collect()
}

/// The clients and roles of the auth service in the queue's database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// The store on `pool`, a database of `backend`.
    pub fn new(pool: AnyPool, backend: Backend) -> Store {
        Store { pool, backend }
    }

    /// Apply this service's migrations (versions 2001 and up), leaving the
    /// other services' versions alone.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        bbb_sqlstore::migrate_shared(
            &self.pool,
            self.backend,
            sqlx::migrate!("./migrations/sqlite"),
            sqlx::migrate!("./migrations/postgres"),
        )
        .await
        .map_err(|e| anyhow::anyhow!("auth migrations failed: {e}"))
    }

    /// Whether the database answers.
    pub async fn check(&self) -> Result<()> {
        sqlx::query("SELECT 1 AS one").fetch_one(&self.pool).await?;
        Ok(())
    }

    /// The generation: how many changes clients and roles have seen.
    pub async fn generation(&self) -> Result<i64> {
        let row = sqlx::query("SELECT generation FROM auth_generation WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("generation")?)
    }

    /// The generation, then every client and every role: the rows are at
    /// least as new as the generation says.
    pub async fn snapshot(&self) -> Result<(i64, Vec<ClientRow>, Vec<RoleRow>)> {
        let generation = self.generation().await?;
        let clients = sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM auth_clients ORDER BY client_id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(client_from_row)
        .collect::<Result<_>>()?;
        let roles = all_roles(&self.pool).await?;
        Ok((generation, clients, roles))
    }

    /// The client `id`, if stored.
    pub async fn client(&self, id: &str) -> Result<Option<ClientRow>> {
        client_by_id(&self.pool, id).await
    }

    /// Up to `limit` clients whose id starts with `prefix` and sorts after
    /// `after`, by id.
    pub async fn clients(&self, prefix: &str, after: &str, limit: i64) -> Result<Vec<ClientRow>> {
        sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM auth_clients \
             WHERE client_id > $1 AND substr(client_id, 1, CAST($2 AS INTEGER)) = $3 \
             ORDER BY client_id LIMIT $4"
        ))
        .bind(after)
        .bind(prefix.len() as i64)
        .bind(prefix)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(client_from_row)
        .collect()
    }

    /// Every stored role, by id.
    pub async fn roles(&self) -> Result<Vec<RoleRow>> {
        all_roles(&self.pool).await
    }

    /// Start a change: a transaction that has moved the generation, so every
    /// process reloads once it commits, and that holds the generation's row,
    /// so changes happen one after the other.
    async fn begin_change(&self) -> Result<Transaction<'static, Any>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE auth_generation SET generation = generation + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Create `client`, unless a client of its id exists: then it is the same
    /// client when it has the same scopes, expiry and description, is enabled
    /// and was created less than [`CREATE_REPEAT_WINDOW_MS`] before `now`.
    pub async fn create_client(&self, client: &ClientRow, now: Millis) -> Result<Created> {
        let mut tx = self.begin_change().await?;
        if let Some(existing) = client_by_id(&mut *tx, &client.client_id).await? {
            let same = existing.scopes == client.scopes
                && existing.expires == client.expires
                && existing.description == client.description
                && !existing.disabled
                && existing.created > now - CREATE_REPEAT_WINDOW_MS;
            return Ok(if same {
                Created::Repeated(existing)
            } else {
                Created::Conflict
            });
        }
        let inserted = sqlx::query(&format!(
            "INSERT INTO auth_clients ({CLIENT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&client.client_id)
        .bind(&client.description)
        .bind(&client.access_token)
        .bind(client.expires)
        .bind(i64::from(client.disabled))
        .bind(serde_json::to_string(&client.scopes)?)
        .bind(client.created)
        .bind(client.last_modified)
        .bind(client.last_date_used)
        .bind(client.last_rotated)
        .bind(i64::from(client.delete_on_expiration))
        .execute(&mut *tx)
        .await;
        match inserted.map_err(ApiError::from) {
            Err(ApiError::Database {
                class: ErrorClass::Conflict,
                ..
            }) => return Ok(Created::Conflict),
            r => r?,
        };
        tx.commit().await?;
        Ok(Created::New(client.clone()))
    }

    /// Apply `change` to the client `id` at `now`; `None` if there is no such
    /// client.
    pub async fn update_client(
        &self,
        id: &str,
        change: &ClientChange,
        now: Millis,
    ) -> Result<Option<ClientRow>> {
        let mut tx = self.begin_change().await?;
        let Some(mut c) = client_by_id(&mut *tx, id).await? else {
            return Ok(None);
        };
        let change = change.clone();
        if let Some(d) = change.description {
            c.description = d;
        }
        if let Some(t) = change.access_token {
            c.access_token = t;
            c.last_rotated = now;
        }
        if let Some(e) = change.expires {
            c.expires = e;
        }
        if let Some(d) = change.disabled {
            c.disabled = d;
        }
        if let Some(s) = change.scopes {
            c.scopes = s;
        }
        if let Some(d) = change.delete_on_expiration {
            c.delete_on_expiration = d;
        }
        c.last_modified = now;
        sqlx::query(
            "UPDATE auth_clients SET description = $2, access_token = $3, expires = $4, \
             disabled = $5, scopes = $6, last_modified = $7, last_rotated = $8, \
             delete_on_expiration = $9 WHERE client_id = $1",
        )
        .bind(&c.client_id)
        .bind(&c.description)
        .bind(&c.access_token)
        .bind(c.expires)
        .bind(i64::from(c.disabled))
        .bind(serde_json::to_string(&c.scopes)?)
        .bind(c.last_modified)
        .bind(c.last_rotated)
        .bind(i64::from(c.delete_on_expiration))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(c))
    }

    /// Delete the client `id`, if it exists.
    pub async fn delete_client(&self, id: &str) -> Result<()> {
        let mut tx = self.begin_change().await?;
        let deleted = sqlx::query("DELETE FROM auth_clients WHERE client_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() > 0 {
            tx.commit().await?;
        }
        Ok(())
    }

    /// Change the roles: `decide` gets every stored role and says what to
    /// write (after checking whatever it must, e.g. that the roles stay free
    /// of cycles) and what to answer. No other change to clients or roles
    /// happens in between.
    pub async fn modify_roles<T>(
        &self,
        decide: impl FnOnce(&[RoleRow]) -> Result<(RoleWrite, T)>,
    ) -> Result<T> {
        let mut tx = self.begin_change().await?;
        let roles = all_roles(&mut *tx).await?;
        let (write, answer) = decide(&roles)?;
        let written = match &write {
            RoleWrite::Insert(r) => sqlx::query(&format!(
                "INSERT INTO auth_roles ({ROLE_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
            ))
            .bind(&r.role_id)
            .bind(&r.description)
            .bind(serde_json::to_string(&r.scopes)?)
            .bind(r.created)
            .bind(r.last_modified)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            RoleWrite::Update(r) => sqlx::query(
                "UPDATE auth_roles SET description = $2, scopes = $3, last_modified = $4 \
                 WHERE role_id = $1",
            )
            .bind(&r.role_id)
            .bind(&r.description)
            .bind(serde_json::to_string(&r.scopes)?)
            .bind(r.last_modified)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            RoleWrite::Delete(id) => sqlx::query("DELETE FROM auth_roles WHERE role_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
            RoleWrite::Nothing => 0,
        };
        if written > 0 {
            tx.commit().await?;
        }
        Ok(answer)
    }

    /// Record that the clients `ids` were used at `now`, for those whose
    /// `lastDateUsed` is older than `stale_ms` (as upstream, which updates it
    /// at most every six hours). Not a change the processes reload for.
    pub async fn touch_used(&self, ids: &[String], now: Millis, stale_ms: Millis) -> Result<()> {
        for id in ids {
            sqlx::query(
                "UPDATE auth_clients SET last_date_used = $2 \
                 WHERE client_id = $1 AND last_date_used < $3",
            )
            .bind(id)
            .bind(now)
            .bind(now - stale_ms)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Delete the clients that expired before `now` and may be deleted then
    /// (`deleteOnExpiration`); how many went.
    pub async fn delete_expired(&self, now: Millis) -> Result<u64> {
        let mut tx = self.begin_change().await?;
        let deleted =
            sqlx::query("DELETE FROM auth_clients WHERE delete_on_expiration = 1 AND expires < $1")
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if deleted > 0 {
            tx.commit().await?;
        }
        Ok(deleted)
    }
}
