//! When the loop starts work: what is owed (a sync, a compaction, an activation) and the
//! earliest each may start. Pure bookkeeping, no I/O; the loop passes in the time and whether
//! LISTEN is up.
//!
//! Compactions (incremental layout) are coalesced and rate-limited: one runs
//! `compaction_interval` after the first change that owes it, whatever came in between, and
//! never sooner than `compaction_interval` after the previous one; a request runs one as soon
//! as the work in hand is done.

use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::Recovery;
use crate::activate::Activation;

/// Why a compaction runs, for its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// A change owed one `compaction_interval` ago.
    Interval,
    /// An admin asked (`ipmanager compact`).
    Request,
    /// The agent does not know what dnsmasq holds (it just started, or a write failed).
    Start,
    /// The marker says the last agent left changes awaiting a compaction.
    Debt,
    /// The include file changed: the restart reads every file anyway.
    Include,
    /// Shard files were changed behind the agent's back (found at a periodic check).
    Drift,
}

impl Why {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Why::Interval => "interval",
            Why::Request => "request",
            Why::Start => "start",
            Why::Debt => "debt",
            Why::Include => "include",
            Why::Drift => "drift",
        }
    }
}

/// Work the loop may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Job {
    /// Snapshot, render, write what differs, then carry out `pending` with whatever the new
    /// files need; with `compact`, a compaction (incremental layout) for that reason.
    Sync {
        pending: Option<Activation>,
        compact: Option<Why>,
    },
    /// Retry an activation that is owed, without a new snapshot.
    Activate(Activation),
}

pub(super) struct Schedule {
    /// A change (or a reconnect, or the periodic resync) that no sync has read yet.
    dirty: bool,
    /// The activation dnsmasq owes the files on disk.
    pending: Option<Activation>,
    /// After failed work, nothing starts before this.
    not_before: Option<Instant>,
    backoff: Backoff,
    last_sync_start: Option<Instant>,
    /// Sync starts are at least this far apart; an isolated change never waits for it.
    burst_interval: Duration,
    compaction: Compaction,
}

/// When a compaction is owed (incremental layout only; the others never owe one).
struct Compaction {
    interval: Duration,
    /// When the first change that owes a compaction was applied.
    owed_since: Option<Instant>,
    /// When the last compaction started.
    last: Option<Instant>,
    /// A request no compaction has started for yet.
    requested: bool,
    /// The running work is a compaction that answers a request.
    answering: bool,
}

impl Compaction {
    /// The compaction owed, and when it may start (`None`: now).
    fn due(&self) -> Option<(Why, Option<Instant>)> {
        if self.requested {
            return Some((Why::Request, None));
        }
        let owed = self.owed_since?;
        let after_last = self.last.map(|last| last + self.interval);
        Some((Why::Interval, Some(owed + self.interval).max(after_last)))
    }
}

/// What a finished piece of work means for compactions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct CompactionState {
    /// dnsmasq now holds what a full read of the files gives (a compaction, or a restart).
    pub(super) compacted: bool,
    /// The files are written but dnsmasq does not serve all of them: a compaction is owed.
    pub(super) owed: bool,
}

impl Schedule {
    /// `pending` is the activation owed when the agent last stopped.
    pub(super) fn new(
        pending: Option<Activation>,
        max_backoff: Duration,
        burst_interval: Duration,
        compaction_interval: Duration,
    ) -> Schedule {
        Schedule {
            dirty: false,
            pending,
            not_before: None,
            backoff: Backoff::new(max_backoff),
            last_sync_start: None,
            burst_interval,
            compaction: Compaction {
                interval: compaction_interval,
                owed_since: None,
                last: None,
                requested: false,
                answering: false,
            },
        }
    }

    /// The data may have changed: a notification, or the periodic resync.
    pub(super) fn changed(&mut self) {
        self.dirty = true;
    }

    /// A new LISTEN connection: whatever happened while it was away needs a full resync, at
    /// once.
    pub(super) fn reconnected(&mut self) {
        self.dirty = true;
        self.not_before = None;
    }

    /// An admin asked for a compaction: one runs once the work in hand is done.
    pub(super) fn compaction_requested(&mut self) {
        self.compaction.requested = true;
    }

    /// The work to start next, and when it may start (`None`: now); `None` when nothing is
    /// wanted. Ask only while no work runs. A sync needs LISTEN first, so that no change
    /// between snapshot and LISTEN is lost; a retried activation needs no database, but waits
    /// while a sync is wanted, since that sync carries it out.
    ///
    /// A compaction is a sync too (it rewrites every shard from a fresh snapshot): when it is
    /// due it takes the place of the sync for a change; while it is not, changes sync as usual.
    pub(super) fn next(&self, connected: bool, now: Instant) -> Option<(Job, Option<Instant>)> {
        let later = |at: Option<Instant>| at.filter(|at| *at > now);
        let compaction = self.compaction.due();
        if connected {
            let sync = |compact| Job::Sync {
                pending: self.pending,
                compact,
            };
            let compact_at = compaction.map(|(why, at)| (why, later(self.not_before.max(at))));
            let burst_over = self.last_sync_start.map(|t| t + self.burst_interval);
            let change_at = self.dirty.then(|| later(self.not_before.max(burst_over)));
            // `None` is now, so it orders first.
            match (compact_at, change_at) {
                (Some((why, at)), change_at) if change_at.is_none_or(|change| at <= change) => {
                    return Some((sync(Some(why)), at));
                }
                (_, Some(at)) => return Some((sync(None), at)),
                _ => {}
            }
        } else if self.dirty {
            return None;
        }
        let owed = self.pending?;
        Some((Job::Activate(owed), later(self.not_before)))
    }

    /// `job` started at `now`.
    pub(super) fn started(&mut self, job: Job, now: Instant) {
        if let Job::Sync { compact, .. } = job {
            self.dirty = false;
            self.last_sync_start = Some(now);
            if compact.is_some() {
                // Any compaction that starts after a request answers it.
                self.compaction.answering |= std::mem::take(&mut self.compaction.requested);
            }
        }
    }

    /// The work ended, owing `pending`, having failed with the given recovery or not, leaving
    /// `state` for compactions. Returns whether it was a compaction that answers a request.
    pub(super) fn finished(
        &mut self,
        pending: Option<Activation>,
        failure: Option<Recovery>,
        state: CompactionState,
        now: Instant,
    ) -> bool {
        self.pending = pending;
        let answering = std::mem::take(&mut self.compaction.answering);
        if state.compacted {
            self.compaction.last = Some(now);
        }
        self.compaction.owed_since = match state.owed {
            true => self.compaction.owed_since.or(Some(now)),
            false => None,
        };
        let retry = answering && !state.compacted;
        match failure {
            None => {
                self.backoff.reset();
                self.not_before = None;
            }
            Some(Recovery::Resync) => {
                self.dirty = true;
                self.not_before = Some(now + self.backoff.next_delay());
                self.compaction.requested |= retry;
            }
            Some(Recovery::Reactivate) => {
                self.not_before = Some(now + self.backoff.next_delay());
                self.compaction.requested |= retry;
            }
            // Retrying the same snapshot would reject it again: a request is dropped (the
            // admin's `ipmanager compact` names this agent) and the next compaction waits for
            // the interval, so that a rejected file does not spin.
            Some(Recovery::AwaitChange) => {
                if retry || state.owed {
                    self.compaction.last = Some(now);
                }
            }
        }
        answering && state.compacted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BURST: Duration = Duration::from_millis(100);
    const MAX_BACKOFF: Duration = Duration::from_secs(1);
    const COMPACTION: Duration = Duration::from_secs(60);
    const NONE: CompactionState = CompactionState {
        compacted: false,
        owed: false,
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_sync_waits_for_the_connection_and_an_owed_activation_for_the_sync() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Some(Activation::Reload), MAX_BACKOFF, BURST, COMPACTION);
        // Owed from the last run: retried at once, no database needed.
        assert_eq!(
            s.next(false, t0),
            Some((Job::Activate(Activation::Reload), None))
        );
        s.changed();
        assert_eq!(
            s.next(false, t0),
            None,
            "no sync without LISTEN, no activation before it"
        );
        let sync = Job::Sync {
            pending: Some(Activation::Reload),
            compact: None,
        };
        assert_eq!(s.next(true, t0), Some((sync, None)));
        s.started(sync, t0);
        s.finished(None, None, NONE, t0 + ms(10));
        assert_eq!(s.next(true, t0 + ms(10)), None, "nothing left to do");
    }

    #[test]
    fn an_isolated_change_syncs_at_once_and_a_burst_waits_for_the_interval() {
        let t0 = Instant::now();
        let mut s = Schedule::new(None, MAX_BACKOFF, BURST, COMPACTION);
        s.changed();
        let sync = Job::Sync {
            pending: None,
            compact: None,
        };
        assert_eq!(s.next(true, t0), Some((sync, None)));
        s.started(sync, t0);
        s.changed();
        s.finished(None, None, NONE, t0 + ms(30));
        assert_eq!(s.next(true, t0 + ms(30)), Some((sync, Some(t0 + BURST))));
        assert_eq!(s.next(true, t0 + BURST), Some((sync, None)));
    }

    #[test]
    fn failures_are_retried_as_their_recovery_says_with_a_growing_backoff() {
        let t0 = Instant::now();
        let mut s = Schedule::new(None, MAX_BACKOFF, Duration::ZERO, COMPACTION);
        s.changed();
        let sync = Job::Sync {
            pending: None,
            compact: None,
        };
        s.started(sync, t0);
        s.finished(None, Some(Recovery::Resync), NONE, t0);
        assert_eq!(s.next(true, t0), Some((sync, Some(t0 + ms(100)))));
        s.started(sync, t0 + ms(100));
        s.finished(None, Some(Recovery::Resync), NONE, t0 + ms(100));
        assert_eq!(s.next(true, t0 + ms(100)), Some((sync, Some(t0 + ms(300)))));

        // The files are written; only the activation is retried, without a snapshot.
        s.started(sync, t0 + ms(300));
        let owed = Some(Activation::Restart);
        s.finished(owed, Some(Recovery::Reactivate), NONE, t0 + ms(300));
        let retry = Job::Activate(Activation::Restart);
        assert_eq!(
            s.next(true, t0 + ms(300)),
            Some((retry, Some(t0 + ms(700))))
        );

        // A rejected file waits for the next change, however long.
        s.started(retry, t0 + ms(700));
        s.finished(None, None, NONE, t0 + ms(700));
        s.changed();
        s.started(sync, t0 + ms(700));
        s.finished(None, Some(Recovery::AwaitChange), NONE, t0 + ms(710));
        assert_eq!(s.next(true, t0 + ms(10_000)), None);
        s.changed();
        assert_eq!(s.next(true, t0 + ms(10_000)), Some((sync, None)));
    }

    #[test]
    fn a_reconnect_resyncs_at_once_whatever_the_backoff() {
        let t0 = Instant::now();
        let mut s = Schedule::new(None, MAX_BACKOFF, Duration::ZERO, COMPACTION);
        s.changed();
        let sync = Job::Sync {
            pending: None,
            compact: None,
        };
        s.started(sync, t0);
        s.finished(None, Some(Recovery::Resync), NONE, t0);
        assert!(s.next(true, t0).is_some_and(|(_, at)| at.is_some()));
        s.reconnected();
        assert_eq!(s.next(true, t0), Some((sync, None)));
    }

    const OWED: CompactionState = CompactionState {
        compacted: false,
        owed: true,
    };
    const COMPACTED: CompactionState = CompactionState {
        compacted: true,
        owed: false,
    };

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn compact(why: Why) -> Job {
        Job::Sync {
            pending: None,
            compact: Some(why),
        }
    }

    #[test]
    fn a_compaction_runs_one_interval_after_the_first_change_that_owes_it_and_not_sooner_than_one_after_the_last(
    ) {
        let t0 = Instant::now();
        let mut s = Schedule::new(None, MAX_BACKOFF, Duration::ZERO, COMPACTION);
        let sync = Job::Sync {
            pending: None,
            compact: None,
        };
        s.changed();
        s.started(sync, t0);
        assert!(!s.finished(None, None, OWED, t0));
        assert_eq!(
            s.next(true, t0),
            Some((compact(Why::Interval), Some(t0 + COMPACTION)))
        );
        // A later change that owes one too is coalesced: the time stays.
        s.changed();
        assert_eq!(
            s.next(true, t0 + secs(10)),
            Some((sync, None)),
            "changes go first"
        );
        s.started(sync, t0 + secs(10));
        s.finished(None, None, OWED, t0 + secs(10));
        assert_eq!(
            s.next(true, t0 + secs(10)),
            Some((compact(Why::Interval), Some(t0 + COMPACTION)))
        );
        // Due: it takes the place of the sync for a change.
        s.changed();
        let due = t0 + COMPACTION;
        assert_eq!(s.next(true, due), Some((compact(Why::Interval), None)));
        s.started(compact(Why::Interval), due);
        assert!(
            !s.finished(None, None, COMPACTED, due),
            "no request answered"
        );
        assert_eq!(s.next(true, due), None);
        // Owed again at once: the rate limit holds it back to one interval after the last.
        s.changed();
        s.started(sync, due + secs(1));
        s.finished(None, None, OWED, due + secs(1));
        assert_eq!(
            s.next(true, due + secs(1)),
            Some((compact(Why::Interval), Some(due + secs(1) + COMPACTION)))
        );
        // A change that clears the debt (the host came back) clears the compaction.
        s.changed();
        s.started(sync, due + secs(2));
        s.finished(None, None, CompactionState::default(), due + secs(2));
        assert_eq!(s.next(true, due + secs(2)), None);
    }

    #[test]
    fn a_request_compacts_after_the_running_work_and_is_answered_once() {
        let t0 = Instant::now();
        let mut s = Schedule::new(None, MAX_BACKOFF, Duration::ZERO, COMPACTION);
        let sync = Job::Sync {
            pending: None,
            compact: None,
        };
        s.changed();
        s.started(sync, t0);
        s.compaction_requested();
        // The running sync does not answer it.
        assert!(!s.finished(None, None, CompactionState::default(), t0));
        assert_eq!(s.next(true, t0), Some((compact(Why::Request), None)));
        assert_eq!(s.next(false, t0), None, "a compaction needs the database");
        s.started(compact(Why::Request), t0);
        // A failed read: the request is retried after the backoff.
        s.finished(None, Some(Recovery::Resync), CompactionState::default(), t0);
        assert_eq!(
            s.next(true, t0),
            Some((compact(Why::Request), Some(t0 + ms(100))))
        );
        s.started(compact(Why::Request), t0 + ms(100));
        assert!(s.finished(None, None, COMPACTED, t0 + ms(100)));
        assert_eq!(s.next(true, t0 + ms(100)), None);
        // Requests ignore the rate limit.
        s.compaction_requested();
        assert_eq!(
            s.next(true, t0 + ms(200)),
            Some((compact(Why::Request), None))
        );
    }

    #[test]
    fn a_rejected_compaction_waits_for_the_interval_instead_of_spinning() {
        let t0 = Instant::now();
        let mut s = Schedule::new(None, MAX_BACKOFF, Duration::ZERO, COMPACTION);
        s.compaction_requested();
        s.started(compact(Why::Request), t0);
        s.finished(None, Some(Recovery::AwaitChange), OWED, t0);
        assert_eq!(
            s.next(true, t0),
            Some((compact(Why::Interval), Some(t0 + COMPACTION)))
        );
    }
}
