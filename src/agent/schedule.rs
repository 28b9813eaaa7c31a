//! When the loop starts work: what is owed (a sync, an activation) and the earliest each may
//! start. Pure bookkeeping, no I/O; the loop passes in the time and whether LISTEN is up.

use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::Recovery;
use crate::activate::Activation;

/// Work the loop may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Job {
    /// Snapshot, render, write what differs, then carry out `pending` with whatever the new
    /// files need.
    Sync { pending: Option<Activation> },
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
}

impl Schedule {
    /// `pending` is the activation owed when the agent last stopped.
    pub(super) fn new(
        pending: Option<Activation>,
        max_backoff: Duration,
        burst_interval: Duration,
    ) -> Schedule {
        Schedule {
            dirty: false,
            pending,
            not_before: None,
            backoff: Backoff::new(max_backoff),
            last_sync_start: None,
            burst_interval,
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

    /// The work to start next, and when it may start (`None`: now); `None` when nothing is
    /// wanted. Ask only while no work runs. A sync needs LISTEN first, so that no change
    /// between snapshot and LISTEN is lost; a retried activation needs no database, but waits
    /// while a sync is wanted, since that sync carries it out.
    pub(super) fn next(&self, connected: bool, now: Instant) -> Option<(Job, Option<Instant>)> {
        let later = |at: Option<Instant>| at.filter(|at| *at > now);
        if self.dirty {
            if !connected {
                return None;
            }
            let burst_over = self.last_sync_start.map(|t| t + self.burst_interval);
            let job = Job::Sync {
                pending: self.pending,
            };
            return Some((job, later(self.not_before.max(burst_over))));
        }
        let owed = self.pending?;
        Some((Job::Activate(owed), later(self.not_before)))
    }

    /// `job` started at `now`.
    pub(super) fn started(&mut self, job: Job, now: Instant) {
        if let Job::Sync { .. } = job {
            self.dirty = false;
            self.last_sync_start = Some(now);
        }
    }

    /// The work ended, owing `pending`, having failed with the given recovery or not.
    pub(super) fn finished(
        &mut self,
        pending: Option<Activation>,
        failure: Option<Recovery>,
        now: Instant,
    ) {
        self.pending = pending;
        match failure {
            None => {
                self.backoff.reset();
                self.not_before = None;
            }
            Some(Recovery::Resync) => {
                self.dirty = true;
                self.not_before = Some(now + self.backoff.next_delay());
            }
            Some(Recovery::Reactivate) => self.not_before = Some(now + self.backoff.next_delay()),
            // Retrying the same snapshot would reject it again.
            Some(Recovery::AwaitChange) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BURST: Duration = Duration::from_millis(100);
    const MAX_BACKOFF: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_sync_waits_for_the_connection_and_an_owed_activation_for_the_sync() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Some(Activation::Reload), MAX_BACKOFF, BURST);
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
        };
        assert_eq!(s.next(true, t0), Some((sync, None)));
        s.started(sync, t0);
        s.finished(None, None, t0 + ms(10));
        assert_eq!(s.next(true, t0 + ms(10)), None, "nothing left to do");
    }

    #[test]
    fn an_isolated_change_syncs_at_once_and_a_burst_waits_for_the_interval() {
        let t0 = Instant::now();
        let mut s = Schedule::new(None, MAX_BACKOFF, BURST);
        s.changed();
        let sync = Job::Sync { pending: None };
        assert_eq!(s.next(true, t0), Some((sync, None)));
        s.started(sync, t0);
        s.changed();
        s.finished(None, None, t0 + ms(30));
        assert_eq!(s.next(true, t0 + ms(30)), Some((sync, Some(t0 + BURST))));
        assert_eq!(s.next(true, t0 + BURST), Some((sync, None)));
    }

    #[test]
    fn failures_are_retried_as_their_recovery_says_with_a_growing_backoff() {
        let t0 = Instant::now();
        let mut s = Schedule::new(None, MAX_BACKOFF, Duration::ZERO);
        s.changed();
        let sync = Job::Sync { pending: None };
        s.started(sync, t0);
        s.finished(None, Some(Recovery::Resync), t0);
        assert_eq!(s.next(true, t0), Some((sync, Some(t0 + ms(100)))));
        s.started(sync, t0 + ms(100));
        s.finished(None, Some(Recovery::Resync), t0 + ms(100));
        assert_eq!(s.next(true, t0 + ms(100)), Some((sync, Some(t0 + ms(300)))));

        // The files are written; only the activation is retried, without a snapshot.
        s.started(sync, t0 + ms(300));
        let owed = Some(Activation::Restart);
        s.finished(owed, Some(Recovery::Reactivate), t0 + ms(300));
        let retry = Job::Activate(Activation::Restart);
        assert_eq!(
            s.next(true, t0 + ms(300)),
            Some((retry, Some(t0 + ms(700))))
        );

        // A rejected file waits for the next change, however long.
        s.started(retry, t0 + ms(700));
        s.finished(None, None, t0 + ms(700));
        s.changed();
        s.started(sync, t0 + ms(700));
        s.finished(None, Some(Recovery::AwaitChange), t0 + ms(710));
        assert_eq!(s.next(true, t0 + ms(10_000)), None);
        s.changed();
        assert_eq!(s.next(true, t0 + ms(10_000)), Some((sync, None)));
    }

    #[test]
    fn a_reconnect_resyncs_at_once_whatever_the_backoff() {
        let t0 = Instant::now();
        let mut s = Schedule::new(None, MAX_BACKOFF, Duration::ZERO);
        s.changed();
        let sync = Job::Sync { pending: None };
        s.started(sync, t0);
        s.finished(None, Some(Recovery::Resync), t0);
        assert!(s.next(true, t0).is_some_and(|(_, at)| at.is_some()));
        s.reconnected();
        assert_eq!(s.next(true, t0), Some((sync, None)));
    }
}
