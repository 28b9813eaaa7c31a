//! What the agent is doing, as the loop publishes it: the [`Status`] that [`super::Agent::status`]
//! watches, the log lines that go with its changes, and the text the service manager shows.

use std::collections::HashSet;
use std::time::SystemTime;

use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::error_chain;
use super::worker::{Incremental, Outcome};
use crate::activate::Activation;
use crate::db::DbError;
use crate::notify::Notifier;
use crate::render::{HostChangeDetails, Skipped};

/// Newly skipped rows logged one by one per regeneration; the rest are counted.
const MAX_SKIPPED_LOGGED: usize = 20;

/// What the agent is doing, for logs, tests and the service manager.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Phase {
    #[default]
    Starting,
    /// The database cannot be reached; retrying with backoff.
    DatabaseUnreachable,
    /// The files match the last snapshot and dnsmasq has been told.
    InSync,
    /// Reading or writing failed; retrying with backoff.
    SyncFailing,
    /// The files are written but dnsmasq could not be made to pick them up; retrying.
    ActivationFailing,
    /// A new file failed a check; dnsmasq keeps the old one until the next change or resync.
    FilesRejected,
}

impl Phase {
    /// The name reported in `ipmanager.agent_status.phase`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::DatabaseUnreachable => "database_unreachable",
            Phase::InSync => "in_sync",
            Phase::SyncFailing => "sync_failing",
            Phase::ActivationFailing => "activation_failing",
            Phase::FilesRejected => "files_rejected",
        }
    }
}

/// A running account of the agent's work; read it through [`super::Agent::status`].
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub phase: Phase,
    /// Change notifications received on the current and all earlier connections.
    pub notifications: u64,
    /// Snapshots taken, rendered and compared with the files on disk.
    pub regenerations: u64,
    /// Syncs that replaced at least one file.
    pub writes: u64,
    /// Successful reloads and restarts.
    pub activations: u64,
    pub hosts_served: usize,
    pub rows_skipped: usize,
    /// When the files on disk last matched a fresh snapshot, with dnsmasq activated.
    pub last_in_sync: Option<SystemTime>,
    /// When a file was last replaced or dnsmasq last activated.
    pub last_applied: Option<SystemTime>,
    pub last_error: Option<String>,
    /// Status reports written to `ipmanager.agent_status`.
    pub status_reports: u64,
    /// Why the last status report failed (schema without `agent_report`, permission denied, an
    /// agent name used by another login, ...); `None` once a report succeeds again.
    pub status_error: Option<String>,
    /// Incremental layout: the hosts whose reservation dnsmasq does not serve as the files say
    /// until the next compaction (sorted ids; empty: none).
    pub awaiting_compaction: Vec<i64>,
    /// Incremental layout: compactions done (dnsmasq re-read every shard file).
    pub compactions: u64,
    pub last_compaction: Option<SystemTime>,
}

/// The sending side of [`Status`]. Each change logs what it means, once: a failure once per
/// change of phase, a failed status report once per distinct error.
pub(super) struct StatusBoard {
    sender: watch::Sender<Status>,
}

impl StatusBoard {
    pub(super) fn new() -> StatusBoard {
        StatusBoard {
            sender: watch::Sender::new(Status::default()),
        }
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<Status> {
        self.sender.subscribe()
    }

    pub(super) fn phase(&self) -> Phase {
        self.sender.borrow().phase
    }

    pub(super) fn notifications(&self) -> u64 {
        self.sender.borrow().notifications
    }

    pub(super) fn set_notifications(&self, count: u64) {
        self.sender.send_modify(|s| s.notifications = count);
    }

    /// Logs and publishes what a piece of work did.
    pub(super) fn record(&self, outcome: &Outcome, previously_skipped: &mut HashSet<Skipped>) {
        if let Some(rendered) = &outcome.rendered {
            debug!(
                hosts = rendered.hosts_served,
                skipped = rendered.skipped.len(),
                files_written = outcome.written.files.len(),
                snapshot = ?rendered.snapshot_time,
                render_and_write = ?rendered.write_time,
                "regenerated"
            );
            log_newly_skipped(&rendered.skipped, previously_skipped);
            *previously_skipped = rendered.skipped.iter().cloned().collect();
        }
        let applied = !outcome.written.files.is_empty() || outcome.activated.is_some();
        if applied {
            log_applied(outcome);
        }
        let incremental = outcome.incremental.as_ref();
        let in_sync = outcome.result.is_ok() && outcome.pending.is_none();
        self.sender.send_modify(|s| {
            if let Some(rendered) = &outcome.rendered {
                s.regenerations += 1;
                s.hosts_served = rendered.hosts_served;
                s.rows_skipped = rendered.skipped.len();
            }
            if !outcome.written.files.is_empty() {
                s.writes += 1;
            }
            if outcome.activated.is_some() {
                s.activations += 1;
            }
            if applied {
                s.last_applied = Some(SystemTime::now());
            }
            if in_sync && outcome.rendered.is_some() {
                s.last_in_sync = Some(SystemTime::now());
            }
            if let Some(incremental) = incremental {
                s.awaiting_compaction.clone_from(&incremental.pending_hosts);
                if incremental.compacted.is_some() {
                    s.compactions += 1;
                    s.last_compaction = Some(SystemTime::now());
                }
            }
        });
        if in_sync {
            self.set_phase_ok();
        }
    }

    pub(super) fn report_written(&self) {
        let mut recovered = false;
        self.sender.send_modify(|s| {
            s.status_reports += 1;
            recovered = s.status_error.take().is_some();
        });
        if recovered {
            info!("this agent's status is written to the database again");
        }
    }

    /// Logs a failed status report once per distinct error, not once per heartbeat.
    pub(super) fn report_failed(&self, error: &DbError) {
        let message = error_chain(error);
        let changed = self.sender.send_if_modified(|s| {
            let changed = s.status_error.as_deref() != Some(message.as_str());
            s.status_error = Some(message.clone());
            changed
        });
        if changed {
            warn!(
                error = %message,
                "cannot write this agent's status to ipmanager.agent_status; the files are \
                 still kept in sync, but `ipmanager status` cannot see this agent"
            );
        }
    }

    /// Tells the service manager what the agent is doing (sent only when the text changes), and
    /// that it is ready once the first snapshot is on disk and dnsmasq has been told.
    pub(super) fn notify(&self, notifier: &mut Notifier) {
        let s = self.sender.borrow();
        let text = status_text(&s);
        // A retried activation alone can reach InSync; ready means a snapshot is on disk.
        let ready = s.phase == Phase::InSync && s.last_in_sync.is_some();
        drop(s);
        notifier.status(&text);
        if ready {
            notifier.ready();
        }
    }

    /// Logs a failure once per change of phase, not once per retry.
    pub(super) fn set_phase(&self, phase: Phase, error: &(dyn std::error::Error + 'static)) {
        let message = error_chain(error);
        let changed = self.sender.send_if_modified(|s| {
            let changed = s.phase != phase;
            s.phase = phase;
            s.last_error = Some(message.clone());
            changed
        });
        if changed {
            warn!(phase = ?phase, error = %message, "retrying with backoff until this clears");
        }
    }

    fn set_phase_ok(&self) {
        if self.phase() == Phase::InSync {
            return;
        }
        self.sender.send_modify(|s| {
            s.phase = Phase::InSync;
            s.last_error = None;
        });
        let s = self.sender.borrow();
        info!(
            hosts = s.hosts_served,
            skipped = s.rows_skipped,
            "in sync: dnsmasq's files match the database"
        );
    }
}

/// Each bad row is reported once, not at every regeneration, and a flood of them (a bulk load
/// that bypassed the triggers) does not bury the log.
fn log_newly_skipped(skipped: &[Skipped], previously_skipped: &HashSet<Skipped>) {
    let new: Vec<&Skipped> = skipped
        .iter()
        .filter(|s| !previously_skipped.contains(*s))
        .collect();
    for s in new.iter().take(MAX_SKIPPED_LOGGED) {
        warn!(row = ?s.row, reason = %s.reason, "row not served: it fails validation");
    }
    if new.len() > MAX_SKIPPED_LOGGED {
        warn!(
            more = new.len() - MAX_SKIPPED_LOGGED,
            "more rows not served; `ipmanager render` lists them all"
        );
    }
}

/// The one line per change put in place: which files, which hosts, which activation; with
/// the incremental layout, the compaction or the shards written without a signal.
fn log_applied(outcome: &Outcome) {
    let none = HostChangeDetails::default();
    let hosts = outcome.written.host_changes.as_ref().unwrap_or(&none);
    match outcome.incremental.as_ref() {
        Some(Incremental {
            compacted: Some(compaction),
            ..
        }) => info!(
            why = compaction.why.as_str(),
            files = outcome.written.files.len(),
            took = ?compaction.took,
            activation = outcome.activated.map(Activation::as_str),
            "compacted: dnsmasq re-read every shard"
        ),
        Some(incremental) => info!(
            shards = ?outcome.written.files,
            hosts_added = hosts.counts.added,
            hosts_removed = hosts.counts.removed,
            hosts_changed = hosts.counts.changed,
            added = ?hosts.added_text(),
            removed = ?hosts.removed_text(),
            changed = ?hosts.changed_text(),
            awaiting_compaction = incremental.pending_hosts.len(),
            "applied incrementally, without a signal"
        ),
        None => log_applied_files(outcome, hosts),
    }
}

fn log_applied_files(outcome: &Outcome, hosts: &HostChangeDetails) {
    info!(
        files = ?outcome.written.files,
        hosts_added = hosts.counts.added,
        hosts_removed = hosts.counts.removed,
        hosts_changed = hosts.counts.changed,
        added = ?hosts.added_text(),
        removed = ?hosts.removed_text(),
        changed = ?hosts.changed_text(),
        activation = outcome.activated.map(Activation::as_str),
        "applied"
    );
}

/// The service manager's one-line STATUS for `status`.
fn status_text(s: &Status) -> String {
    let error = s.last_error.as_deref().unwrap_or("unknown error");
    match s.phase {
        Phase::Starting => "starting: connecting to the database".to_owned(),
        Phase::DatabaseUnreachable => format!("database unreachable, retrying: {error}"),
        Phase::InSync => {
            let mut text = format!("in sync: {} hosts", s.hosts_served);
            if s.rows_skipped > 0 {
                text.push_str(&format!(" ({} rows skipped)", s.rows_skipped));
            }
            if !s.awaiting_compaction.is_empty() {
                text.push_str(&format!(
                    ", {} hosts await a compaction",
                    s.awaiting_compaction.len()
                ));
            }
            if let Some(at) = s.last_applied {
                text.push_str(&format!(
                    ", last change applied {}",
                    humantime::format_rfc3339_seconds(at)
                ));
            }
            text
        }
        Phase::SyncFailing => format!("sync failing, retrying: {error}"),
        Phase::ActivationFailing => format!("activation failing, retrying: {error}"),
        Phase::FilesRejected => {
            format!("files rejected by check, dnsmasq keeps the old ones: {error}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_status_says_how_many_hosts_await_a_compaction() {
        let mut s = Status {
            phase: Phase::InSync,
            hosts_served: 12,
            ..Status::default()
        };
        assert_eq!(status_text(&s), "in sync: 12 hosts");
        s.awaiting_compaction = vec![3, 9];
        assert_eq!(
            status_text(&s),
            "in sync: 12 hosts, 2 hosts await a compaction"
        );
    }
}
