//! Applies the SQL files in `sql/` in order and records them, so that re-running is a no-op.
//!
//! refinery does the bookkeeping (checksums, order, one transaction per file); an advisory lock
//! serialises concurrent `ipmanager migrate` runs against the same database.

use tokio_postgres::Client;

use super::DbError;

mod embedded {
    refinery::embed_migrations!("sql");
}

/// Where refinery records applied files; inside our schema so that one `DROP SCHEMA` cleans up.
const HISTORY_TABLE: &str = "ipmanager.schema_history";
/// Any constant works; it only has to be the same for every ipmanager.
const MIGRATE_LOCK_KEY: i64 = 0x6970_6d67_6d69_6772; // "ipmgmigr"

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Names of the files applied by this run, in order (`V1__initial_schema`, …).
    pub applied: Vec<String>,
}

/// Brings the schema up to date. Safe to run concurrently and repeatedly.
pub async fn migrate(client: &mut Client) -> Result<MigrationReport, DbError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK_KEY])
        .await?;
    let result = run_locked(client).await;
    let unlocked = client
        .batch_execute(&format!(
            "RESET client_min_messages; SELECT pg_advisory_unlock({MIGRATE_LOCK_KEY})"
        ))
        .await;
    let report = result?;
    unlocked?;
    Ok(report)
}

async fn run_locked(client: &mut Client) -> Result<MigrationReport, DbError> {
    // `IF NOT EXISTS` statements (ours, the files', refinery's history table) make the server
    // send NOTICEs such as 'schema "ipmanager" already exists, skipping', which the driver
    // logs: noise on every run. Warnings and errors still come through.
    client
        .batch_execute("SET client_min_messages = warning")
        .await?;
    // refinery creates its history table before the first file runs, so the schema must exist.
    client
        .batch_execute("CREATE SCHEMA IF NOT EXISTS ipmanager")
        .await?;
    let mut runner = embedded::migrations::runner();
    runner.set_migration_table_name(HISTORY_TABLE);
    let report = runner.run_async(client).await?;
    Ok(MigrationReport {
        applied: report
            .applied_migrations()
            .iter()
            .map(|m| format!("V{}__{}", m.version(), m.name()))
            .collect(),
    })
}
