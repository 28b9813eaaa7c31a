//! Running SQL in tests: statements that must succeed, single values, and lock waits.

use std::time::Duration;

use tokio_postgres::types::FromSqlOwned;
use tokio_postgres::Client;

use super::wait_until;

const DEADLINE: Duration = Duration::from_secs(20);

/// A server error as `SQLSTATE: message (hint)`, for panic messages.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{}: {} (hint: {:?})",
            db.code().code(),
            db.message(),
            db.hint()
        ),
        None => e.to_string(),
    }
}

/// Runs `sql` (one or more statements), which must succeed.
pub async fn ok(client: &Client, sql: &str) {
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
}

/// The single value `sql` returns; `T` says its type (`Option<_>` where it may be NULL).
pub async fn scalar<T: FromSqlOwned>(client: &Client, sql: &str) -> T {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
        .get(0)
}

pub async fn backend_pid(client: &Client) -> i32 {
    scalar(client, "SELECT pg_backend_pid()").await
}

/// Waits until backend `pid` is blocked on a heavyweight lock (a table, row or transaction lock).
pub async fn wait_for_lock_wait(observer: &Client, pid: i32) {
    let waiting = wait_until(DEADLINE, || async move {
        observer
            .query_opt(
                "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
                &[&pid],
            )
            .await
            .map(|row| row.is_some())
            .unwrap_or(false)
    })
    .await;
    assert!(waiting, "backend {pid} never started waiting for a lock");
}
