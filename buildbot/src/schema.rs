//! The Buildbot 0.8 scheduler-DB schema this crate writes and reads.
//!
//! [`SCHEMA_SQL`] is `schema/schedulerdb08.sql`: the 0.8 tables (as InnoDB)
//! plus three optional indexes. [`apply`] creates them in an empty database,
//! for tests, the sandbox and the simulator; a real master's database already
//! has them.

use mysql_async::prelude::Queryable;

use crate::error::Result;

/// The DDL of the scheduler-DB tables (`schema/schedulerdb08.sql`).
pub const SCHEMA_SQL: &str = include_str!("../schema/schedulerdb08.sql");

/// The statements of [`SCHEMA_SQL`], without comments.
pub fn statements() -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in SCHEMA_SQL.lines() {
        let code = match line.find("--") {
            Some(index) => &line[..index],
            None => line,
        };
        let code = code.trim_end();
        if code.trim().is_empty() {
            continue;
        }
        current.push_str(code);
        current.push('\n');
        if code.ends_with(';') {
            let statement = current.trim().trim_end_matches(';').to_owned();
            statements.push(statement);
            current.clear();
        }
    }
    statements
}

/// Creates the tables (and indexes) if they do not exist.
pub async fn apply(conn: &mut mysql_async::Conn) -> Result<()> {
    for statement in statements() {
        conn.query_drop(statement).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn splits_into_statements() {
        let statements = super::statements();
        assert_eq!(statements.len(), 8);
        assert!(statements[0].starts_with("CREATE TABLE IF NOT EXISTS sourcestamps"));
        assert!(statements.iter().all(|s| !s.contains("--")));
    }
}
