//! The agent's status reports to the database (`ipmanager.agent_report`, see
//! [`crate::db::status`]): what must go out, and the one write in flight.
//!
//! A report runs beside the work, one at a time, owned by the loop like the work itself: a slow
//! or failing status write never delays files or activation. What a failed write carried is kept
//! and merged into the next one, so an applied snapshot or an error is never lost.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use super::backoff::{is_due, wake_at, Backoff};
use super::worker::Outcome;
use super::{error_chain, Phase, SyncError};
use crate::db::status::{Applied, Report, StatusWriter};
use crate::db::DbError;

/// Longest a status report may take before it counts as failed; the sync never waits for it.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

type ReportTask = Pin<Box<dyn Future<Output = Result<(), DbError>> + Send>>;

/// What the next status report must carry besides the phase: kept until a write succeeds, so
/// that an applied snapshot or an error is not lost to a failed write or to a newer report.
#[derive(Debug, Default)]
pub(super) struct Unsent {
    /// The files now served, with the hosts dnsmasq does not serve as they say (incremental
    /// layout; `None`: none): the database takes the two only together.
    applied: Option<(Applied, Option<Vec<i64>>)>,
    error: Option<String>,
    /// A compaction that answers a request is done.
    compacted: bool,
}

impl Unsent {
    /// The answer to a compaction request.
    pub(super) fn compacted() -> Unsent {
        Unsent {
            compacted: true,
            ..Unsent::default()
        }
    }

    /// `self` with anything newer on top.
    fn under(self, newer: Option<Unsent>) -> Unsent {
        match newer {
            None => self,
            Some(newer) => Unsent {
                applied: newer.applied.or(self.applied),
                error: newer.error.or(self.error),
                compacted: newer.compacted || self.compacted,
            },
        }
    }
}

/// The status write, if one is in flight.
enum Write {
    /// No write in flight; the next may start once `not_before` (after a failure) has passed.
    Idle { not_before: Option<Instant> },
    InFlight {
        task: ReportTask,
        /// What the write carries, put back under `unsent` if it fails.
        sending: Unsent,
    },
}

/// What [`Reports::next`] waited for.
pub(super) enum ReportEvent {
    /// The write in flight ended; the reports are ready for the next one.
    Finished(Result<(), DbError>),
    /// The backoff after a failed write has passed.
    RetryDue,
}

/// The loop's bookkeeping for status reports.
pub(super) struct Reports {
    writer: StatusWriter,
    /// Owed to the database; `None` when everything is written.
    unsent: Option<Unsent>,
    write: Write,
    /// A failed write is retried after a backoff capped at the heartbeat interval.
    backoff: Backoff,
    /// The files on disk while the activation they need is owed: they count as applied only
    /// once it succeeds.
    on_disk: Option<Applied>,
}

impl Reports {
    pub(super) fn new(writer: StatusWriter, heartbeat: Duration) -> Reports {
        Reports {
            writer,
            unsent: None,
            write: Write::Idle { not_before: None },
            backoff: Backoff::new(heartbeat),
            on_disk: None,
        }
    }

    /// Queues a report; a heartbeat is `Unsent::default()`.
    pub(super) fn queue(&mut self, report: Unsent) {
        self.unsent = Some(self.unsent.take().unwrap_or_default().under(Some(report)));
    }

    /// Queues what a piece of work means for the database's view of this agent. A snapshot
    /// counts as applied only when its files are on disk and dnsmasq has been told (or nothing
    /// had to change); while an activation is owed, the applied snapshot stays where it was.
    pub(super) fn queue_outcome(&mut self, outcome: &Outcome) {
        let report = match &outcome.result {
            Ok(()) => {
                let on_disk = self.on_disk.take();
                Unsent {
                    applied: match &outcome.rendered {
                        Some(rendered) => {
                            Some((rendered.applied.clone(), rendered.pending_hosts.clone()))
                        }
                        // A retried activation: what it activated is what the failed one left,
                        // and after it dnsmasq has read every file whole.
                        None => on_disk.map(|applied| (applied, None)),
                    },
                    error: None,
                    compacted: false,
                }
            }
            Err(error) => {
                match error {
                    // The files of this snapshot are all on disk (or were already); dnsmasq
                    // has not seen them yet.
                    SyncError::Activate(_) => {
                        if let Some(rendered) = &outcome.rendered {
                            self.on_disk = Some(rendered.applied.clone());
                        }
                    }
                    // Some files may have been replaced: nothing known is on disk.
                    SyncError::File(_) | SyncError::Panicked { .. } => self.on_disk = None,
                    // Nothing was written.
                    _ => {}
                }
                Unsent {
                    applied: None,
                    error: Some(error_chain(error)),
                    compacted: false,
                }
            }
        };
        self.queue(report);
    }

    /// Starts writing what is owed, with the current phase, unless a write is in flight or
    /// backing off. Reports need the database: call it only while connected.
    pub(super) fn start_due(&mut self, phase: Phase) {
        let Write::Idle { not_before } = self.write else {
            return;
        };
        if !is_due(not_before) {
            return;
        }
        let Some(unsent) = self.unsent.take() else {
            return;
        };
        let (applied, pending_hosts) = unsent.applied.clone().unzip();
        let report = Report {
            phase: phase.as_str().to_owned(),
            applied,
            error: unsent.error.clone(),
            pending_hosts: pending_hosts.flatten(),
            compacted: unsent.compacted,
        };
        let writer = self.writer.clone();
        self.write = Write::InFlight {
            task: Box::pin(async move {
                match tokio::time::timeout(REPORT_TIMEOUT, writer.report(&report)).await {
                    Ok(result) => result,
                    Err(_) => Err(DbError::Timeout(REPORT_TIMEOUT)),
                }
            }),
            sending: unsent,
        };
    }

    /// A new connection: the first report after an outage goes out at once.
    pub(super) fn reconnected(&mut self) {
        self.backoff.reset();
        if let Write::Idle { not_before } = &mut self.write {
            *not_before = None;
        }
    }

    /// Waits for the write in flight to end, or, while `connected` with a report owed, for the
    /// backoff after a failed write to pass. Cancel-safe: the write stays in flight.
    pub(super) async fn next(&mut self, connected: bool) -> ReportEvent {
        match &mut self.write {
            Write::InFlight { task, sending } => {
                let result = task.as_mut().await;
                let sent = std::mem::take(sending);
                match &result {
                    Ok(()) => {
                        self.backoff.reset();
                        self.write = Write::Idle { not_before: None };
                    }
                    Err(_) => {
                        self.unsent = Some(sent.under(self.unsent.take()));
                        self.write = Write::Idle {
                            not_before: Some(self.backoff.next_at()),
                        };
                    }
                }
                ReportEvent::Finished(result)
            }
            Write::Idle { not_before } if connected && self.unsent.is_some() => {
                wake_at(*not_before).await;
                ReportEvent::RetryDue
            }
            Write::Idle { .. } => std::future::pending().await,
        }
    }
}
