//! The loop: its state in one struct ([`EventLoop`]), one method per event, and a `select!`
//! over them. Each state that holds a future is an enum variant holding it, so that an event can
//! only come from a state that has one (no "is it running?" flags beside an `Option`).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::{Interval, MissedTickBehavior};
use tracing::{debug, info, info_span, warn, Instrument, Span};

use super::backoff::{wake_at, Backoff};
use super::reports::{ReportEvent, Reports, Unsent};
use super::schedule::{Job, Schedule};
use super::status::{Phase, StatusBoard};
use super::worker::{Outcome, Worker};
use super::{error_chain, SyncError};
use crate::config::Config;
use crate::db::status::StatusWriter;
use crate::db::{self, DbError};
use crate::listen::{Interest, ListenError, Listener, Wake};
use crate::notify::Notifier;
use crate::render::{LayoutKind, Skipped};

type Task<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The LISTEN connection, which every sync needs first: a change committed between a snapshot
/// and LISTEN would otherwise be lost.
enum Connection {
    /// Not connected; the next attempt starts at `retry_at`.
    Down {
        retry_at: Instant,
    },
    Connecting(Task<Result<Listener, DbError>>),
    Up(Listener),
}

/// What [`Connection::next`] waited for.
enum ConnectionEvent {
    RetryDue,
    /// Now `Up`.
    Connected,
    /// Now `Down`, due at once; the caller sets the backoff.
    ConnectFailed(DbError),
    Changed,
    CompactionRequested,
    /// Now `Down`, due at once.
    Lost(ListenError),
}

impl Connection {
    fn is_up(&self) -> bool {
        matches!(self, Connection::Up(_))
    }

    /// Notifications received on this connection.
    fn notifications(&self) -> u64 {
        match self {
            Connection::Up(listener) => listener.notifications(),
            _ => 0,
        }
    }

    /// Waits for what the current state can bring, and moves to the state that follows.
    /// Cancel-safe: until it completes, the attempt or the connection stays as it is.
    async fn next(&mut self) -> ConnectionEvent {
        let down_now = Connection::Down {
            retry_at: Instant::now(),
        };
        match self {
            Connection::Down { retry_at } => {
                wake_at(Some(*retry_at)).await;
                ConnectionEvent::RetryDue
            }
            Connection::Connecting(task) => match task.as_mut().await {
                Ok(listener) => {
                    *self = Connection::Up(listener);
                    ConnectionEvent::Connected
                }
                Err(error) => {
                    *self = down_now;
                    ConnectionEvent::ConnectFailed(error)
                }
            },
            Connection::Up(listener) => match listener.next().await {
                Ok(Wake::Changed) => ConnectionEvent::Changed,
                Ok(Wake::CompactionRequested) => ConnectionEvent::CompactionRequested,
                Err(error) => {
                    *self = down_now;
                    ConnectionEvent::Lost(error)
                }
            },
        }
    }
}

/// The one piece of work the loop runs at a time.
enum Work {
    Idle,
    Running {
        task: Task<Outcome>,
        started: Instant,
        /// The work's span (`sync{id=…}` or `activation{id=…}`): its outcome is logged in it.
        span: Span,
        /// Whether the watchdog has already warned that this work takes too long.
        stuck_reported: bool,
    },
}

impl Work {
    /// Waits for the running work to end and returns its outcome and span, leaving `Idle`
    /// behind; never completes while idle. Cancel-safe: the work keeps running.
    async fn finished(&mut self) -> (Outcome, Span) {
        let Work::Running { task, span, .. } = self else {
            return std::future::pending().await;
        };
        let outcome = task.as_mut().await;
        let span = span.clone();
        *self = Work::Idle;
        (outcome, span)
    }
}

/// The service manager's watchdog: pings at half its period.
struct Watchdog {
    tick: Interval,
    period: Duration,
}

impl Watchdog {
    fn new(notifier: &Notifier) -> Option<Watchdog> {
        notifier.watchdog_period().map(|period| Watchdog {
            tick: interval(period / 2),
            period,
        })
    }

    /// Completes at each tick with the period; never without a watchdog.
    async fn tick(watchdog: &mut Option<Watchdog>) -> Duration {
        match watchdog {
            Some(watchdog) => {
                watchdog.tick.tick().await;
                watchdog.period
            }
            None => std::future::pending().await,
        }
    }
}

fn interval(period: Duration) -> Interval {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

/// Everything the loop keeps between events.
pub(super) struct EventLoop {
    status: StatusBoard,
    worker: Arc<Worker>,
    listen_connector: db::Connector,
    /// The notifications that wake this agent.
    interest: Interest,
    /// The database as logs show it: never with the password.
    database: String,
    liveness_interval: Duration,
    connection: Connection,
    connect_backoff: Backoff,
    /// Notifications counted on earlier connections; the current one counts its own.
    notifications_before: u64,
    work: Work,
    /// What work is owed and when it may start.
    schedule: Schedule,
    /// Numbers the pieces of work for their spans, so that a journal can be read sync by sync.
    work_count: u64,
    /// The rows the last regeneration skipped, so that each is logged once.
    skipped: HashSet<Skipped>,
    reports: Reports,
    /// Queues a report at every liveness tick, so that the database sees the agent alive.
    heartbeat: Interval,
    /// A full resync at every resync interval, whatever was notified.
    resync: Interval,
    notifier: Notifier,
    watchdog: Option<Watchdog>,
}

impl EventLoop {
    /// Sets the loop up without touching the database or the files. Fails only when the
    /// configured database URL cannot work at all.
    pub(super) fn new(config: &Config, status: StatusBoard) -> Result<EventLoop, DbError> {
        let agent = &config.agent;
        let listen_connector = config.connector("ipmanager-agent-listen")?;
        let pool = db::pool(config.connector("ipmanager-agent")?);
        let worker = Arc::new(Worker::new(pool, config));
        info!(
            name = %agent.name,
            database = %listen_connector.target(),
            layout = config.dnsmasq.layout_name(),
            include_file = %worker.files.include_file.display(),
            "agent starting"
        );
        let pending = worker.files.read_marker();
        if let Some(activation) = pending {
            info!(
                activation = activation.as_str(),
                "an activation was owed when the agent last stopped; it will be carried out"
            );
        }
        let notifier = Notifier::from_env();
        Ok(EventLoop {
            status,
            database: listen_connector.target().to_owned(),
            listen_connector,
            interest: super::interest(config),
            liveness_interval: agent.liveness_interval,
            connection: Connection::Down {
                retry_at: Instant::now(),
            },
            connect_backoff: Backoff::new(agent.max_backoff),
            notifications_before: 0,
            work: Work::Idle,
            schedule: Schedule::new(
                pending,
                agent.max_backoff,
                agent.burst_interval,
                config.dnsmasq.compaction_interval,
            ),
            work_count: 0,
            skipped: HashSet::new(),
            reports: Reports::new(
                StatusWriter::new(worker.pool.clone(), &agent.name, agent.liveness_interval)
                    .serving(
                        super::site_scope(config).sites,
                        config.dnsmasq.dns_scope.as_str(),
                    )
                    .layout(config.dnsmasq.layout_name()),
                agent.liveness_interval,
            ),
            worker,
            heartbeat: interval(agent.liveness_interval),
            resync: interval(agent.resync_interval),
            watchdog: Watchdog::new(&notifier),
            notifier,
        })
    }

    /// Runs until `shutdown` completes.
    pub(super) async fn run(mut self, shutdown: impl Future<Output = ()>) {
        // The first tick is immediate; the connection brings the first sync.
        self.resync.tick().await;
        tokio::pin!(shutdown);
        loop {
            self.status.notify(&mut self.notifier);
            self.start_due();
            let connected = self.connection.is_up();
            let work_at = self.next_work_at();
            tokio::select! {
                () = &mut shutdown => {
                    info!("shutting down");
                    self.notifier.stopping();
                    return;
                }
                event = self.connection.next() => self.on_connection(event),
                (outcome, span) = self.work.finished() => {
                    span.in_scope(|| self.on_work_done(outcome));
                }
                () = wake_at(work_at) => {}
                event = self.reports.next(connected) => self.on_report(event),
                _ = self.heartbeat.tick() => self.reports.queue(Unsent::default()),
                _ = self.resync.tick() => {
                    debug!("periodic resync");
                    self.schedule.changed();
                }
                period = Watchdog::tick(&mut self.watchdog) => self.on_watchdog(period),
            }
        }
    }

    /// Starts whatever is due: a connection attempt, a piece of work, a status report.
    fn start_due(&mut self) {
        if let Connection::Down { retry_at } = self.connection {
            if retry_at <= Instant::now() {
                let connector = self.listen_connector.clone();
                let liveness = self.liveness_interval;
                let interest = self.interest.clone();
                self.connection = Connection::Connecting(Box::pin(async move {
                    Listener::start(&connector, liveness, interest).await
                }));
            }
        }
        if let Some((job, None)) = self.wanted_work() {
            self.start(job);
        }
        // Reports need the database; while it is away they wait, merged, and go out as soon
        // as the LISTEN connection is back.
        if self.connection.is_up() {
            self.reports.start_due(self.status.phase());
        }
    }

    /// The work to start next and when it may start (`None`: now); nothing while work runs.
    fn wanted_work(&self) -> Option<(Job, Option<Instant>)> {
        match self.work {
            Work::Idle => self.schedule.next(self.connection.is_up(), Instant::now()),
            Work::Running { .. } => None,
        }
    }

    /// When wanted work becomes due; `None` when nothing waits for a time.
    fn next_work_at(&self) -> Option<Instant> {
        self.wanted_work().and_then(|(_, at)| at)
    }

    fn start(&mut self, job: Job) {
        self.work_count += 1;
        let id = self.work_count;
        let worker = Arc::clone(&self.worker);
        let started = Instant::now();
        self.schedule.started(job, started);
        let (task, span): (Task<Outcome>, Span) = match job {
            Job::Sync { pending, compact } => {
                let span = info_span!("sync", id);
                let task = worker.sync(pending, compact).instrument(span.clone());
                (Box::pin(task), span)
            }
            Job::Activate(owed) => {
                let span = info_span!("activation", id);
                let task = async move { worker.retry_activation(owed).await };
                (Box::pin(task.instrument(span.clone())), span)
            }
        };
        self.work = Work::Running {
            task,
            started,
            span,
            stuck_reported: false,
        };
    }

    fn on_connection(&mut self, event: ConnectionEvent) {
        match event {
            // `start_due` starts the attempt.
            ConnectionEvent::RetryDue => {}
            ConnectionEvent::Connected => {
                info!(database = %self.database, "connected; listening for changes");
                self.notifications_before = self.status.notifications();
                self.connect_backoff.reset();
                self.reports.reconnected();
                self.schedule.reconnected();
            }
            ConnectionEvent::ConnectFailed(error) => {
                let retry_at = self.connect_backoff.next_at();
                self.status.set_phase(Phase::DatabaseUnreachable, &error);
                debug!(error = %error_chain(&error), "connect failed; retrying");
                self.connection = Connection::Down { retry_at };
            }
            ConnectionEvent::Changed => {
                debug!("change notification");
                self.schedule.changed();
                self.status
                    .set_notifications(self.notifications_before + self.connection.notifications());
            }
            ConnectionEvent::CompactionRequested => self.on_compaction_request(),
            ConnectionEvent::Lost(error) => {
                self.status.set_phase(Phase::DatabaseUnreachable, &error);
            }
        }
    }

    /// An admin asked for a compaction: with the incremental layout one runs once the work in
    /// hand is done; the other layouts are always served exactly, so they answer at once.
    fn on_compaction_request(&mut self) {
        if self.worker.files.layout.kind == LayoutKind::Incremental {
            info!("compaction requested");
            self.schedule.compaction_requested();
        } else {
            debug!("compaction requested; nothing to compact in this layout");
            self.reports.queue(Unsent::compacted());
        }
    }

    /// Records what the work did and decides what comes next; runs in the work's span.
    fn on_work_done(&mut self, outcome: Outcome) {
        if outcome.rendered.is_some() {
            crate::memory::release_free_memory();
        }
        self.status.record(&outcome, &mut self.skipped);
        self.reports.queue_outcome(&outcome);
        let failure = outcome.result.as_ref().err();
        if let Some(error) = failure {
            self.status.set_phase(error.recovery().phase(), error);
        }
        let recovery = failure.map(SyncError::recovery);
        let answered = self.schedule.finished(
            outcome.pending,
            recovery,
            outcome.compaction_state(),
            Instant::now(),
        );
        if answered {
            self.reports.queue(Unsent::compacted());
        }
    }

    fn on_report(&mut self, event: ReportEvent) {
        match event {
            ReportEvent::Finished(Ok(())) => self.status.report_written(),
            ReportEvent::Finished(Err(error)) => self.status.report_failed(&error),
            // `start_due` sends it.
            ReportEvent::RetryDue => {}
        }
    }

    /// The ping is sent from this loop, so a loop that stops turning stops pinging. Work runs
    /// beside the loop, though, so a hung sync or activation would not stop it: work that has
    /// run longer than the whole watchdog period counts as stuck and the pings are withheld
    /// until it ends, so that the service manager restarts the agent. Every step of a sync is
    /// bounded (snapshot timeout, `command_timeout`), so WatchdogSec must be longer than the
    /// longest a sync may legitimately take.
    fn on_watchdog(&mut self, period: Duration) {
        match &mut self.work {
            Work::Running {
                started,
                stuck_reported,
                span,
                ..
            } if started.elapsed() > period => {
                if !*stuck_reported {
                    *stuck_reported = true;
                    let _in_work = span.enter();
                    warn!(
                        running = ?started.elapsed(),
                        watchdog = ?period,
                        "work is taking longer than the watchdog period; withholding watchdog pings"
                    );
                }
            }
            _ => self.notifier.watchdog(),
        }
    }
}
