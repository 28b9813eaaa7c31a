//! The agent's own row in `ipmanager.agent_status`, written through `ipmanager.agent_report`, so
//! that `ipmanager.sync_status` and `ipmanager.change_applied` can answer "is my change live?".
//!
//! What an agent reports as applied is the `pg_current_snapshot()` of the REPEATABLE READ
//! transaction its files were rendered from (see [`super::take_snapshot_at`]): a committed change
//! is live on that agent exactly when its transaction is visible in that snapshot. The agent
//! reports it only once the files are on disk and dnsmasq has picked them up.
//!
//! An agent whose dnsmasq does not yet serve some hosts as its files say (the incremental
//! layout, until its next compaction) reports their ids with the snapshot, and a change touching
//! one of them does not count as applied there (`ipmanager.change_applied`).
//!
//! Writing status is best effort: the caller runs it beside the sync, never in its way.

use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;
use sha2::{Digest, Sha256};

use super::DbError;

const REPORT: &str = "\
    SELECT ipmanager.agent_report($1::text, $2::text, $3::text::interval, $4::text::pg_snapshot, \
           $5::text, $6::int4, $7::int4, $8::text, $9::text, $10::text, $11::timestamptz, \
           $12::text[], $13::text, $14::text, $15::int8[], $16::bool)";

/// What a sync put in place: the database state the files on disk (and in dnsmasq) describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// `pg_current_snapshot()::text` of the transaction the files were rendered from.
    pub db_snapshot: String,
    /// [`files_hash`] of the rendered files.
    pub files_hash: String,
    pub hosts: usize,
    pub rows_skipped: usize,
}

/// One call of `ipmanager.agent_report`. `applied` and `error` are only given when something
/// was applied or failed since the last report; a heartbeat carries neither (and
/// `Report { phase, ..Report::default() }` is one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// What the agent is doing, e.g. `in_sync` or `activation_failing`.
    pub phase: String,
    pub applied: Option<Applied>,
    /// The error chain of the latest failure.
    pub error: Option<String>,
    /// Ids of the hosts dnsmasq does not serve as the applied files say until the next
    /// compaction; `None` or empty: none. Stored only together with `applied` (it describes
    /// those files): a report without `applied` leaves the stored set as it is, so after a
    /// compaction report `applied` again with `Some(vec![])` (or `None`).
    pub pending_hosts: Option<Vec<i64>>,
    /// A compaction asked for on [`COMPACT_CHANNEL`](super::COMPACT_CHANNEL) is done (for layouts
    /// without compactions: the request was seen): sets `compacted_at`, which
    /// `ipmanager compact` waits for. Give it once per request.
    pub compacted: bool,
}

/// Writes the reports of one agent: its name, and what stays the same for the life of the process.
#[derive(Clone)]
pub struct StatusWriter {
    pool: Pool,
    name: String,
    heartbeat: Duration,
    host: Option<String>,
    version: String,
    started_at: SystemTime,
    /// The sites served (`None`: every subnet) and the DNS scope, for `agent_status`.
    sites: Option<Vec<String>>,
    dns_scope: &'static str,
    /// The `[dnsmasq] layout`; `None` until [`StatusWriter::layout`] sets it.
    layout: Option<&'static str>,
}

impl StatusWriter {
    /// `heartbeat` is how often the agent promises to report; the view counts an agent as alive
    /// while its last report is younger than three of them.
    pub fn new(pool: Pool, name: &str, heartbeat: Duration) -> StatusWriter {
        StatusWriter {
            pool,
            name: name.to_owned(),
            heartbeat,
            host: nix::unistd::gethostname()
                .ok()
                .and_then(|host| host.into_string().ok()),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: SystemTime::now(),
            sites: None,
            dns_scope: "sites",
            layout: None,
        }
    }

    /// Reports `sites` (`None`: every subnet) and `dns_scope` as what this agent serves.
    pub fn serving(self, sites: Option<Vec<String>>, dns_scope: &'static str) -> StatusWriter {
        StatusWriter {
            sites,
            dns_scope,
            ..self
        }
    }

    /// Reports `layout` (`"hostsfile"`, `"conf"` or `"incremental"`, as in `[dnsmasq] layout`;
    /// the database refuses others) as the way this agent feeds dnsmasq.
    pub fn layout(self, layout: &'static str) -> StatusWriter {
        StatusWriter {
            layout: Some(layout),
            ..self
        }
    }

    /// Upserts this agent's row. Fails when the schema has no `agent_report` yet (V2 not
    /// applied), when the login may not call it, or when another login owns the agent name.
    pub async fn report(&self, report: &Report) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(REPORT).await?;
        let heartbeat = format!("{} microseconds", self.heartbeat.as_micros());
        let applied = report.applied.as_ref();
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        client
            .execute(
                &statement,
                &[
                    &self.name,
                    &report.phase,
                    &heartbeat,
                    &applied.map(|a| a.db_snapshot.as_str()),
                    &applied.map(|a| a.files_hash.as_str()),
                    &applied.map(|a| count(a.hosts)),
                    &applied.map(|a| count(a.rows_skipped)),
                    &report.error,
                    &self.host,
                    &self.version,
                    &self.started_at,
                    &self.sites,
                    &self.dns_scope,
                    &self.layout,
                    &report.pending_hosts,
                    &report.compacted,
                ],
            )
            .await?;
        Ok(())
    }
}

/// SHA-256, lower-case hex, over `files` in the order given: for each file its name, a NUL byte,
/// its content and a NUL byte. The agent hashes its files in the order it writes them (hosts
/// file, addn-hosts file, include file) under their configured paths.
pub fn files_hash<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut hasher = Sha256::new();
    for (name, content) in files {
        hasher.update(name.as_bytes());
        hasher.update([0u8]);
        hasher.update(content);
        hasher.update([0u8]);
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_hash_separates_names_and_contents() {
        let empty = files_hash([]);
        assert_eq!(
            empty,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let a = files_hash([("a", b"bc".as_slice())]);
        let b = files_hash([("ab", b"c".as_slice())]);
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        // sha256("a\0bc\0")
        let mut hasher = Sha256::new();
        hasher.update(b"a\0bc\0");
        let expected: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(a, expected);
    }
}
