//! One classification of database errors for both engines, read from the
//! error codes the engines report (never from message text).

use sqlx::error::{DatabaseError, ErrorKind};

/// What a failed statement means for the code that ran it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The transaction lost a race with another one and may simply be run
    /// again: a deadlock (PostgreSQL `40P01`), a serialization failure
    /// (`40001`), or SQLite's `SQLITE_BUSY` / `SQLITE_LOCKED` (and their
    /// extended codes).
    Retryable,
    /// A unique constraint refused the row: PostgreSQL `23505`, SQLite
    /// `SQLITE_CONSTRAINT_UNIQUE` or `SQLITE_CONSTRAINT_PRIMARYKEY`.
    Conflict,
    /// Anything else: a bug, a missing table, a lost connection, a timeout.
    Other,
}

/// PostgreSQL's SQLSTATE for a detected deadlock.
const PG_DEADLOCK_DETECTED: &str = "40P01";
/// PostgreSQL's SQLSTATE for a serialization failure.
const PG_SERIALIZATION_FAILURE: &str = "40001";
/// SQLite's primary result code `SQLITE_BUSY`.
const SQLITE_BUSY: i64 = 5;
/// SQLite's primary result code `SQLITE_LOCKED`.
const SQLITE_LOCKED: i64 = 6;

impl ErrorClass {
    /// The class of `e`. Errors that did not come from the database engine
    /// (I/O, pool timeouts, decoding) are [`ErrorClass::Other`].
    pub fn of(e: &sqlx::Error) -> ErrorClass {
        match e {
            sqlx::Error::Database(d) => ErrorClass::of_database(d.as_ref()),
            _ => ErrorClass::Other,
        }
    }

    /// The class of an error the engine reported.
    pub fn of_database(d: &dyn DatabaseError) -> ErrorClass {
        if d.kind() == ErrorKind::UniqueViolation {
            return ErrorClass::Conflict;
        }
        if let Some(pg) = d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
            return match pg.code() {
                PG_DEADLOCK_DETECTED | PG_SERIALIZATION_FAILURE => ErrorClass::Retryable,
                _ => ErrorClass::Other,
            };
        }
        if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
            // The code is SQLite's extended result code; its low byte is the primary one.
            let primary = d
                .code()
                .and_then(|c| c.parse::<i64>().ok())
                .map(|c| c & 0xff);
            return match primary {
                Some(SQLITE_BUSY | SQLITE_LOCKED) => ErrorClass::Retryable,
                _ => ErrorClass::Other,
            };
        }
        ErrorClass::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect;
    use bbb_testdb::PgDatabase;
    use sqlx::{AnyPool, Executor};

    /// The class of the error `sql` fails with on `pool`, and its text.
    async fn class_of(pool: &AnyPool, sql: &str) -> (ErrorClass, String) {
        let e = pool.execute(sql).await.expect_err(sql);
        (ErrorClass::of(&e), e.to_string())
    }

    /// The extended code of an engine's error.
    fn code(e: &sqlx::Error) -> Option<String> {
        e.as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned())
    }

    /// A SQLite file in a fresh directory, removed with the directory.
    struct SqliteFile(bbb_testdb::TempDir);

    impl SqliteFile {
        fn new() -> SqliteFile {
            SqliteFile(bbb_testdb::TempDir::new("bbb-sqlstore"))
        }

        fn url(&self) -> String {
            format!("sqlite://{}/t.sqlite", self.0.path().display())
        }
    }

    async fn make_table(pool: &AnyPool) {
        pool.execute(
            "CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT NOT NULL UNIQUE, n BIGINT NOT NULL)",
        )
        .await
        .unwrap();
        pool.execute("INSERT INTO t (id, name, n) VALUES (1, 'a', 0), (2, 'b', 0)")
            .await
            .unwrap();
    }

    /// Unique violations (of a primary key and of a UNIQUE column) are
    /// conflicts, other failures are other, on both engines.
    #[tokio::test]
    async fn conflicts_and_other_errors_on_both_engines() {
        let file = SqliteFile::new();
        let pg = PgDatabase::create("bbb_sqlstore").await.unwrap();
        for url in [file.url(), pg.url().to_owned()] {
            let (pool, _) = connect(&url, 2).await.unwrap().unwrap();
            make_table(&pool).await;
            for sql in [
                "INSERT INTO t (id, name, n) VALUES (1, 'c', 0)",
                "INSERT INTO t (id, name, n) VALUES (3, 'a', 0)",
            ] {
                let (class, text) = class_of(&pool, sql).await;
                assert_eq!(class, ErrorClass::Conflict, "{url}: {sql}: {text}");
            }
            for sql in [
                "INSERT INTO t (id, name, n) VALUES (4, NULL, 0)",
                "SELECT * FROM no_such_table",
                "SELEKT 1",
            ] {
                let (class, text) = class_of(&pool, sql).await;
                assert_eq!(class, ErrorClass::Other, "{url}: {sql}: {text}");
            }
            pool.close().await;
            let e = pool.execute("SELECT 1").await.unwrap_err();
            assert_eq!(ErrorClass::of(&e), ErrorClass::Other, "{e}");
        }
    }

    /// A write while another connection holds the write lock fails
    /// `SQLITE_BUSY` (with no busy timeout), and a write in a transaction
    /// whose snapshot another connection's commit made stale fails
    /// `SQLITE_BUSY_SNAPSHOT`: both retryable.
    #[tokio::test]
    async fn sqlite_busy_is_retryable() {
        let file = SqliteFile::new();
        let (first, _) = connect(&file.url(), 1).await.unwrap().unwrap();
        make_table(&first).await;
        let (second, _) = connect(&file.url(), 1).await.unwrap().unwrap();
        second.execute("PRAGMA busy_timeout = 0").await.unwrap();

        let mut holder = first.acquire().await.unwrap();
        holder.execute("BEGIN IMMEDIATE").await.unwrap();
        holder
            .execute("UPDATE t SET n = n + 1 WHERE id = 1")
            .await
            .unwrap();
        let e = second
            .execute("UPDATE t SET n = n + 1 WHERE id = 2")
            .await
            .unwrap_err();
        assert_eq!(code(&e).as_deref(), Some("5"), "SQLITE_BUSY: {e}");
        assert_eq!(ErrorClass::of(&e), ErrorClass::Retryable, "{e}");
        holder.execute("ROLLBACK").await.unwrap();

        // WAL: a read transaction's snapshot goes stale when another
        // connection commits; its first write then fails at once.
        holder.execute("BEGIN").await.unwrap();
        holder
            .execute("SELECT n FROM t WHERE id = 1")
            .await
            .unwrap();
        second
            .execute("UPDATE t SET n = n + 1 WHERE id = 2")
            .await
            .unwrap();
        let e = holder
            .execute("UPDATE t SET n = n + 1 WHERE id = 1")
            .await
            .unwrap_err();
        assert_eq!(
            code(&e).as_deref(),
            Some("517"),
            "SQLITE_BUSY_SNAPSHOT: {e}"
        );
        assert_eq!(ErrorClass::of(&e), ErrorClass::Retryable, "{e}");
        holder.execute("ROLLBACK").await.unwrap();
    }

    /// A serialization failure and a deadlock on PostgreSQL are retryable.
    #[tokio::test]
    async fn postgres_serialization_failures_and_deadlocks_are_retryable() {
        let pg = PgDatabase::create("bbb_sqlstore").await.unwrap();
        let (pool, _) = connect(pg.url(), 4).await.unwrap().unwrap();
        make_table(&pool).await;

        // A repeatable-read transaction updates a row that another
        // transaction changed after its snapshot was taken.
        let mut old = pool.acquire().await.unwrap();
        old.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            .await
            .unwrap();
        old.execute("SELECT n FROM t WHERE id = 1").await.unwrap();
        pool.execute("UPDATE t SET n = n + 1 WHERE id = 1")
            .await
            .unwrap();
        let e = old
            .execute("UPDATE t SET n = n + 1 WHERE id = 1")
            .await
            .unwrap_err();
        assert_eq!(code(&e).as_deref(), Some(PG_SERIALIZATION_FAILURE), "{e}");
        assert_eq!(ErrorClass::of(&e), ErrorClass::Retryable, "{e}");
        old.execute("ROLLBACK").await.unwrap();
        drop(old);

        // Each of two transactions holds the row the other one wants next:
        // PostgreSQL aborts one of them.
        let mut a = pool.acquire().await.unwrap();
        let mut b = pool.acquire().await.unwrap();
        a.execute("BEGIN").await.unwrap();
        b.execute("BEGIN").await.unwrap();
        a.execute("UPDATE t SET n = n + 1 WHERE id = 1")
            .await
            .unwrap();
        b.execute("UPDATE t SET n = n + 1 WHERE id = 2")
            .await
            .unwrap();
        let a_wants_2 = tokio::spawn(async move {
            let r = a.execute("UPDATE t SET n = n + 1 WHERE id = 2").await;
            (a, r.err())
        });
        let b_error = b.execute("UPDATE t SET n = n + 1 WHERE id = 1").await.err();
        b.execute("ROLLBACK").await.unwrap();
        let (mut a, a_error) = a_wants_2.await.unwrap();
        a.execute("ROLLBACK").await.unwrap();
        let errors: Vec<sqlx::Error> = [a_error, b_error].into_iter().flatten().collect();
        assert_eq!(errors.len(), 1, "one side is aborted: {errors:?}");
        let e = &errors[0];
        assert_eq!(code(e).as_deref(), Some(PG_DEADLOCK_DETECTED), "{e}");
        assert_eq!(ErrorClass::of(e), ErrorClass::Retryable, "{e}");
        drop((a, b));
        pool.close().await;
    }
}
