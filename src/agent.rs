//! The agent: one `select!` loop that keeps dnsmasq's files equal to the database.
//!
//! It owns every task it starts: the LISTEN connection (via [`Listener`]), at most one piece of
//! work at a time (a sync, or a retried activation), and the timers. A notification that arrives
//! while a sync runs only sets `dirty`, so a burst costs one running and one queued sync. Nothing
//! here is needed for correctness after a crash: files are replaced atomically, and an owed
//! activation is recorded in a marker file before the files change.
//!
//! After every piece of work and on every liveness tick the loop also reports to the database
//! (`ipmanager.agent_report`, see [`crate::db::status`]) which snapshot is live. That write runs
//! beside the work, one at a time, owned by the loop like the work itself: a slow or failing
//! status write never delays files or activation, and its failure only shows in
//! [`Status::status_error`] and in one log line per distinct error.

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use deadpool_postgres::Pool;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::activate::{ActivateError, Activation, Activator};
use crate::config::Config;
use crate::db::status::{self as db_status, Applied, Report, StatusWriter};
use crate::db::{self, DbError};
use crate::listen::Listener;
use crate::notify::Notifier;
use crate::render::check::{CheckFailure, FileKind};
use crate::render::{self, Layout, LayoutKind, Rendered, Skipped};
use crate::write::{self, FileError};

/// Longest a snapshot may take before the sync counts as failed and is retried.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Newly skipped rows logged one by one per regeneration; the rest are counted.
const MAX_SKIPPED_LOGGED: usize = 20;
/// Longest a status report may take before it counts as failed; the sync never waits for it.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// A running account of the agent's work; read it through [`Agent::status`].
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
}

/// Why a sync did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("cannot read the database")]
    Database(#[from] DbError),
    #[error("the snapshot took longer than {0:?}")]
    SnapshotTimeout(Duration),
    #[error(transparent)]
    File(#[from] FileError),
    #[error("cannot activate the new files")]
    Activate(#[from] ActivateError),
    #[error("the new {path} failed ipmanager's own check and was not put in place")]
    Invalid {
        path: PathBuf,
        #[source]
        failure: CheckFailure,
    },
    #[error("the new include file failed the check command and was not put in place")]
    CheckCommand(#[source] ActivateError),
}

impl SyncError {
    /// A rejected file is kept from dnsmasq until the data changes; retrying the same snapshot
    /// would only reject it again.
    fn is_rejection(&self) -> bool {
        matches!(self, SyncError::Invalid { .. } | SyncError::CheckCommand(_))
    }
}

/// The files the agent owns, in the order they are written: the include file last, since it
/// points at the others.
#[derive(Debug, Clone)]
struct OutputFiles {
    layout: Layout,
    include_file: PathBuf,
    file_mode: u32,
    /// Records an activation that is owed, so that a crash between writing and signalling is
    /// made good at the next start.
    marker: PathBuf,
}

impl OutputFiles {
    fn new(config: &Config) -> Self {
        let d = &config.dnsmasq;
        let name = d
            .include_file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        OutputFiles {
            layout: d.layout(),
            include_file: d.include_file.clone(),
            file_mode: d.file_mode,
            // Dot-named, so dnsmasq's conf-dir skips it.
            marker: d
                .include_file
                .with_file_name(format!(".{name}.activation-pending")),
        }
    }

    /// Each rendered file with its path, its kind, and what dnsmasq must do when it changes.
    fn targets<'a>(&'a self, rendered: &'a Rendered) -> Vec<Target<'a>> {
        let mut targets = Vec::with_capacity(3);
        if let Some(hosts) = &rendered.hosts {
            targets.push(Target {
                path: &self.layout.hosts_file,
                content: hosts,
                kind: FileKind::HostsFile,
                activation: Activation::Reload,
            });
        }
        if let Some(addn) = &rendered.addn_hosts {
            targets.push(Target {
                path: &self.layout.addn_hosts_file,
                content: addn,
                kind: FileKind::AddnHosts,
                activation: Activation::Reload,
            });
        }
        targets.push(Target {
            path: &self.include_file,
            content: &rendered.include,
            kind: FileKind::Include,
            activation: Activation::Restart,
        });
        targets
    }

    /// [`db_status::files_hash`] of the rendered files, in writing order under their paths.
    fn hash(&self, rendered: &Rendered) -> String {
        let targets = self.targets(rendered);
        let names: Vec<String> = targets
            .iter()
            .map(|t| t.path.display().to_string())
            .collect();
        db_status::files_hash(
            names
                .iter()
                .zip(&targets)
                .map(|(name, t)| (name.as_str(), t.content.as_bytes())),
        )
    }

    /// The file whose lines are the reservations, for the log line's added/removed/changed.
    fn holds_hosts(&self, path: &Path) -> bool {
        match self.layout.kind {
            LayoutKind::Hostsfile => path == self.layout.hosts_file,
            LayoutKind::Conf => path == self.include_file,
        }
    }

    fn read_marker(&self) -> Option<Activation> {
        let content = std::fs::read_to_string(&self.marker).ok()?;
        Activation::parse(&content)
    }
}

/// One file the agent writes.
struct Target<'a> {
    path: &'a Path,
    content: &'a str,
    kind: FileKind,
    activation: Activation,
}

/// The files of a sync that differ from disk, checked and staged beside their targets.
struct StagedChange {
    staged: write::Staged,
    /// The changed targets in staging order, with what each needs from dnsmasq.
    targets: Vec<(PathBuf, Activation)>,
    host_changes: Option<render::HostChanges>,
    /// The staged include file, when it changed: the check command looks at it.
    include_changed: bool,
}

/// What a sync changed on disk, for the one log line per change.
#[derive(Debug, Default)]
struct Written {
    files: Vec<String>,
    host_changes: Option<render::HostChanges>,
}

/// The outcome of one piece of work.
struct Outcome {
    /// `Some` when a snapshot was rendered.
    rendered: Option<RenderedSummary>,
    written: Written,
    /// The activation that was carried out.
    activated: Option<Activation>,
    /// The activation still owed after this work.
    pending: Option<Activation>,
    result: Result<(), SyncError>,
}

struct RenderedSummary {
    /// What these files are, for the status report once they are live.
    applied: Applied,
    hosts_served: usize,
    skipped: Vec<Skipped>,
    /// How long reading the snapshot, and rendering plus writing, took: for the debug log.
    snapshot_time: Duration,
    write_time: Duration,
}

/// Everything a piece of work needs, shared with the loop.
struct Worker {
    pool: Pool,
    /// Hosts in the last snapshot: the size to expect in the next one.
    last_host_count: AtomicUsize,
    files: OutputFiles,
    activator: Activator,
}

impl Worker {
    /// Snapshot, render, write what differs, activate what is owed.
    async fn sync(self: Arc<Self>, pending: Option<Activation>) -> Outcome {
        let started = Instant::now();
        let expected = self.last_host_count.load(Ordering::Relaxed);
        let snapshot = match tokio::time::timeout(
            SNAPSHOT_TIMEOUT,
            db::take_snapshot_at(&self.pool, expected),
        )
        .await
        {
            Ok(Ok(snapshot)) => snapshot,
            Ok(Err(error)) => return Outcome::failed(pending, error.into()),
            Err(_) => {
                return Outcome::failed(pending, SyncError::SnapshotTimeout(SNAPSHOT_TIMEOUT))
            }
        };
        let snapshot_time = started.elapsed();
        self.last_host_count
            .store(snapshot.snapshot.hosts.len(), Ordering::Relaxed);
        // Rendering 100k hosts and fsyncing files are blocking work; keep them off the loop.
        let worker = Arc::clone(&self);
        let (summary, staged) = tokio::task::spawn_blocking(move || {
            let rendered = render::render(&snapshot.snapshot, &worker.files.layout);
            let db_snapshot = snapshot.db_snapshot;
            drop(snapshot.snapshot);
            let staged = worker.stage_changed(&rendered);
            let summary = RenderedSummary {
                applied: Applied {
                    db_snapshot,
                    files_hash: worker.files.hash(&rendered),
                    hosts: rendered.hosts_served,
                    rows_skipped: rendered.skipped.len(),
                },
                hosts_served: rendered.hosts_served,
                skipped: rendered.skipped,
                snapshot_time,
                write_time: Duration::ZERO,
            };
            (summary, staged)
        })
        .await
        .expect("the render stage does not panic");
        let mut outcome = match staged {
            Ok(None) => self.activate(pending).await,
            Ok(Some(change)) => self.check_and_commit(change, pending).await,
            Err(error) => Outcome::failed(pending, error),
        };
        outcome.rendered = Some(RenderedSummary {
            write_time: started.elapsed() - snapshot_time,
            ..summary
        });
        outcome
    }

    /// Checks every file that differs from disk with ipmanager's own validator and stages it
    /// beside its target. `None` when nothing differs.
    fn stage_changed(&self, rendered: &Rendered) -> Result<Option<StagedChange>, SyncError> {
        let mut changed = Vec::new();
        for target in self.files.targets(rendered) {
            if write::differs(target.path, target.content.as_bytes())? {
                changed.push(target);
            }
        }
        if changed.is_empty() {
            return Ok(None);
        }
        for target in &changed {
            render::check::check_file(target.kind, target.content).map_err(|failure| {
                SyncError::Invalid {
                    path: target.path.to_owned(),
                    failure,
                }
            })?;
        }
        let host_changes = changed
            .iter()
            .find(|t| self.files.holds_hosts(t.path))
            .map(|t| {
                let old = write::read_existing(t.path)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                render::summarize_host_changes(&String::from_utf8_lossy(&old), t.content)
            });
        let replacements: Vec<(&Path, &[u8])> = changed
            .iter()
            .map(|t| (t.path, t.content.as_bytes()))
            .collect();
        Ok(Some(StagedChange {
            staged: write::stage_files(&replacements, self.files.file_mode)?,
            targets: changed
                .iter()
                .map(|t| (t.path.to_owned(), t.activation))
                .collect(),
            host_changes,
            include_changed: changed.iter().any(|t| t.kind == FileKind::Include),
        }))
    }

    /// Runs the check command on a changed include file, puts the staged files in place and
    /// activates what they need.
    async fn check_and_commit(
        self: Arc<Self>,
        change: StagedChange,
        pending: Option<Activation>,
    ) -> Outcome {
        if change.include_changed {
            let temp = change
                .staged
                .temp_path(&self.files.include_file)
                .expect("a changed include file is staged");
            if let Err(error) = self.activator.check_include(temp).await {
                return Outcome::failed(pending, SyncError::CheckCommand(error));
            }
        }
        let worker = Arc::clone(&self);
        let (written, needed, result) =
            tokio::task::spawn_blocking(move || worker.commit(change, pending))
                .await
                .expect("the write stage does not panic");
        let owed = pending.max(needed);
        let mut outcome = match result {
            Ok(()) => self.activate(owed).await,
            Err(error) => Outcome::failed(owed, error.into()),
        };
        outcome.written = written;
        outcome
    }

    /// Puts the staged files in place. Returns what was replaced, the activation the replaced
    /// files need, and the error that stopped it, if any.
    fn commit(
        &self,
        change: StagedChange,
        pending: Option<Activation>,
    ) -> (Written, Option<Activation>, Result<(), FileError>) {
        let mut written = Written::default();
        let needed = change.targets.iter().map(|(_, a)| *a).max();
        // The marker goes first: after a crash from here on, the next start activates anyway.
        let owed = pending
            .max(needed)
            .expect("a staged change needs an activation");
        if let Err(error) = write::replace_volatile(&self.files.marker, owed.as_str().as_bytes()) {
            return (written, None, Err(error));
        }
        let (renamed, result) = match change.staged.commit() {
            Ok(()) => (change.targets.len(), Ok(())),
            Err(partial) => (partial.renamed, Err(partial.error)),
        };
        let mut activation = None;
        for (path, needs) in change.targets.into_iter().take(renamed) {
            activation = activation.max(Some(needs));
            if self.files.holds_hosts(&path) {
                written.host_changes = change.host_changes;
            }
            written.files.push(path.display().to_string());
        }
        (written, activation, result)
    }

    /// Carries out `owed`, if anything is owed, and clears the marker once it succeeded.
    async fn activate(&self, owed: Option<Activation>) -> Outcome {
        let Some(activation) = owed else {
            return Outcome::done(None);
        };
        if let Err(error) = self.activator.activate(activation).await {
            return Outcome::failed(Some(activation), error.into());
        }
        match write::remove(&self.files.marker) {
            Ok(()) => Outcome::done(Some(activation)),
            // dnsmasq has the files; a stale marker only costs one extra activation later.
            Err(error) => {
                warn!(error = %error_chain(&error), "cannot remove the activation marker");
                Outcome::done(Some(activation))
            }
        }
    }
}

impl Outcome {
    fn failed(pending: Option<Activation>, error: SyncError) -> Outcome {
        Outcome {
            rendered: None,
            written: Written::default(),
            activated: None,
            pending,
            result: Err(error),
        }
    }

    fn done(activated: Option<Activation>) -> Outcome {
        Outcome {
            rendered: None,
            written: Written::default(),
            activated,
            pending: None,
            result: Ok(()),
        }
    }
}

type Work<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What the next status report must carry besides the phase: kept until a write succeeds, so
/// that an applied snapshot or an error is not lost to a failed write or to a newer report.
#[derive(Debug, Default)]
struct Unsent {
    applied: Option<Applied>,
    error: Option<String>,
}

impl Unsent {
    /// `self` with anything newer on top.
    fn under(self, newer: Option<Unsent>) -> Unsent {
        match newer {
            None => self,
            Some(newer) => Unsent {
                applied: newer.applied.or(self.applied),
                error: newer.error.or(self.error),
            },
        }
    }
}

/// The loop's bookkeeping for status reports; the write itself is a future the loop owns.
struct Reports {
    writer: StatusWriter,
    /// Owed to the database; `None` when everything is written.
    unsent: Option<Unsent>,
    /// What the write in flight carries, put back under `unsent` if it fails.
    sending: Option<Unsent>,
    /// A failed write is retried after a backoff capped at the heartbeat interval.
    not_before: Option<Instant>,
    backoff: Backoff,
    /// The files on disk while the activation they need is owed: they count as applied only
    /// once it succeeds.
    on_disk: Option<Applied>,
}

impl Reports {
    fn new(writer: StatusWriter, heartbeat: Duration) -> Reports {
        Reports {
            writer,
            unsent: None,
            sending: None,
            not_before: None,
            backoff: Backoff::new(heartbeat),
            on_disk: None,
        }
    }

    fn queue(&mut self, report: Unsent) {
        self.unsent = Some(self.unsent.take().unwrap_or_default().under(Some(report)));
    }

    /// Queues what a piece of work means for the database's view of this agent. A snapshot
    /// counts as applied only when its files are on disk and dnsmasq has been told (or nothing
    /// had to change); while an activation is owed, the applied snapshot stays where it was.
    fn queue_outcome(&mut self, outcome: &Outcome) {
        let report = match &outcome.result {
            Ok(()) => {
                let on_disk = self.on_disk.take();
                Unsent {
                    applied: match &outcome.rendered {
                        Some(rendered) => Some(rendered.applied.clone()),
                        // A retried activation: what it activated is what the failed one left.
                        None => on_disk,
                    },
                    error: None,
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
                    SyncError::File(_) => self.on_disk = None,
                    // Nothing was written.
                    _ => {}
                }
                Unsent {
                    applied: None,
                    error: Some(error_chain(error)),
                }
            }
        };
        self.queue(report);
    }

    /// Starts writing what is owed, with the current phase.
    fn start(&mut self, phase: Phase) -> Option<Work<Result<(), DbError>>> {
        let unsent = self.unsent.take()?;
        let report = Report {
            phase: phase.as_str().to_owned(),
            applied: unsent.applied.clone(),
            error: unsent.error.clone(),
        };
        self.sending = Some(unsent);
        let writer = self.writer.clone();
        Some(Box::pin(async move {
            match tokio::time::timeout(REPORT_TIMEOUT, writer.report(&report)).await {
                Ok(result) => result,
                Err(_) => Err(DbError::Timeout(REPORT_TIMEOUT)),
            }
        }))
    }

    fn written(&mut self) {
        self.sending = None;
        self.backoff.reset();
        self.not_before = None;
    }

    fn failed(&mut self) {
        let sent = self.sending.take().unwrap_or_default();
        self.unsent = Some(sent.under(self.unsent.take()));
        self.not_before = Some(Instant::now() + self.backoff.next_delay());
    }
}

/// Exponential backoff: 100 ms, doubling, capped.
struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    fn new(cap: Duration) -> Self {
        Backoff {
            next: FIRST_BACKOFF.min(cap),
            cap,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.cap);
        delay
    }

    fn reset(&mut self) {
        self.next = FIRST_BACKOFF.min(self.cap);
    }
}

/// The sync agent. Create it, take a [`Agent::status`] receiver if you want to watch it, then
/// [`Agent::run`] it until `shutdown` completes.
pub struct Agent {
    config: Config,
    status: watch::Sender<Status>,
}

/// Runs an agent with `config` until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DbError> {
    Agent::new(config).run(shutdown).await
}

impl Agent {
    pub fn new(config: Config) -> Self {
        Agent {
            config,
            status: watch::Sender::new(Status::default()),
        }
    }

    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// The loop. Returns only on shutdown or when the configuration cannot work at all.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), DbError> {
        let url = self.config.database_url.expose();
        let listen_config = db::connection_config(url, "ipmanager-agent-listen")?;
        let worker = Arc::new(Worker {
            pool: db::pool(db::connection_config(url, "ipmanager-agent")?),
            last_host_count: AtomicUsize::new(0),
            files: OutputFiles::new(&self.config),
            activator: Activator::new(&self.config.dnsmasq),
        });
        let agent = &self.config.agent;
        info!(
            name = %agent.name,
            database = %self.config.database_url,
            layout = ?worker.files.layout.kind,
            include_file = %worker.files.include_file.display(),
            "agent starting"
        );

        let mut pending = worker.files.read_marker();
        if let Some(activation) = pending {
            info!(
                activation = activation.as_str(),
                "an activation was owed when the agent last stopped; it will be carried out"
            );
        }
        let mut listener: Option<Listener> = None;
        let mut connecting: Option<Work<Result<Listener, DbError>>> = None;
        let mut work: Option<Work<Outcome>> = None;
        let mut dirty = false;
        let mut connect_not_before = Some(Instant::now());
        let mut work_not_before: Option<Instant> = None;
        let mut last_sync_start: Option<Instant> = None;
        let mut connect_backoff = Backoff::new(agent.max_backoff);
        let mut work_backoff = Backoff::new(agent.max_backoff);
        let mut skipped: HashSet<Skipped> = HashSet::new();
        let mut notifications_before = 0u64;
        let mut resync = tokio::time::interval(agent.resync_interval);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.tick().await;
        let mut notifier = Notifier::from_env();
        let watchdog_period = notifier.watchdog_period();
        let mut watchdog = watchdog_period.map(|period| {
            let mut tick = tokio::time::interval(period / 2);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        });
        // When the running work started, and whether it was reported as stuck.
        let mut work_started: Option<Instant> = None;
        let mut stuck_reported = false;
        // Status reports: one write at a time beside the work, a heartbeat at every liveness tick.
        let mut reports = Reports::new(
            StatusWriter::new(worker.pool.clone(), &agent.name, agent.liveness_interval),
            agent.liveness_interval,
        );
        let mut report_write: Option<Work<Result<(), DbError>>> = None;
        let mut heartbeat = tokio::time::interval(agent.liveness_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);

        loop {
            self.notify_status(&mut notifier);
            if connecting.is_none() && listener.is_none() && is_due(connect_not_before) {
                connect_not_before = None;
                let config = listen_config.clone();
                let liveness = agent.liveness_interval;
                connecting = Some(Box::pin(
                    async move { Listener::start(&config, liveness).await },
                ));
            }
            // Syncing needs LISTEN first, so that no change between snapshot and LISTEN is lost;
            // a retried activation needs no database. Sync starts are spaced by the burst
            // interval, which an isolated change never waits for.
            let sync_at = work_not_before.max(last_sync_start.map(|t| t + agent.burst_interval));
            let sync_wanted = work.is_none() && dirty && listener.is_some();
            if sync_wanted && is_due(sync_at) {
                dirty = false;
                last_sync_start = Some(Instant::now());
                work_started = last_sync_start;
                work = Some(Box::pin(Arc::clone(&worker).sync(pending)));
            } else if work.is_none() && !dirty && pending.is_some() && is_due(work_not_before) {
                let worker = Arc::clone(&worker);
                let owed = pending;
                work_started = Some(Instant::now());
                work = Some(Box::pin(async move { worker.activate(owed).await }));
            }
            let sync_waits = work.is_none() && dirty && listener.is_some();
            // Reports need the database; while it is away they wait, merged, and go out as soon
            // as the LISTEN connection is back.
            if report_write.is_none() && listener.is_some() && is_due(reports.not_before) {
                report_write = reports.start(self.status.borrow().phase);
            }
            let report_waits = report_write.is_none()
                && listener.is_some()
                && reports.unsent.is_some()
                && reports.not_before.is_some();

            tokio::select! {
                () = &mut shutdown => {
                    info!("shutting down");
                    notifier.stopping();
                    return Ok(());
                }
                result = async { connecting.as_mut().expect("guarded").await }, if connecting.is_some() => {
                    connecting = None;
                    match result {
                        Ok(new) => {
                            info!(database = %self.config.database_url, "connected; listening for changes");
                            notifications_before = self.status.borrow().notifications;
                            listener = Some(new);
                            connect_backoff.reset();
                            // The first report after an outage goes out at once.
                            reports.not_before = None;
                            reports.backoff.reset();
                            // Whatever happened while we were away: a full resync.
                            dirty = true;
                            work_not_before = None;
                        }
                        Err(error) => {
                            let delay = connect_backoff.next_delay();
                            self.set_phase(Phase::DatabaseUnreachable, &error);
                            debug!(error = %error_chain(&error), ?delay, "connect failed; retrying");
                            connect_not_before = Some(Instant::now() + delay);
                        }
                    }
                }
                changed = async { listener.as_mut().expect("guarded").changed().await }, if listener.is_some() => {
                    match changed {
                        Ok(()) => {
                            debug!("change notification");
                            dirty = true;
                            let count = listener.as_ref().map_or(0, Listener::notifications);
                            self.status.send_modify(|s| s.notifications = notifications_before + count);
                        }
                        Err(error) => {
                            listener = None;
                            self.set_phase(Phase::DatabaseUnreachable, &error);
                            connect_not_before = Some(Instant::now());
                        }
                    }
                }
                outcome = async { work.as_mut().expect("guarded").await }, if work.is_some() => {
                    work = None;
                    work_started = None;
                    stuck_reported = false;
                    if outcome.rendered.is_some() {
                        crate::memory::release_free_memory();
                    }
                    pending = outcome.pending;
                    self.record(&outcome, &mut skipped);
                    reports.queue_outcome(&outcome);
                    match &outcome.result {
                        Ok(()) => {
                            work_backoff.reset();
                            work_not_before = None;
                        }
                        Err(error) => {
                            let phase = match error {
                                SyncError::Activate(_) => Phase::ActivationFailing,
                                e if e.is_rejection() => Phase::FilesRejected,
                                _ => Phase::SyncFailing,
                            };
                            self.set_phase(phase, error);
                            // Reading or writing failed: redo the whole sync. A failed
                            // activation only needs the activation retried. A rejected file
                            // waits for the next change or resync.
                            if !matches!(error, SyncError::Activate(_)) && !error.is_rejection() {
                                dirty = true;
                            }
                            if !error.is_rejection() {
                                work_not_before = Some(Instant::now() + work_backoff.next_delay());
                            }
                        }
                    }
                }
                () = sleep_until(connect_not_before), if listener.is_none() && connecting.is_none() && connect_not_before.is_some() => {
                    connect_not_before = None;
                }
                () = sleep_until(sync_at), if sync_waits => {}
                result = async { report_write.as_mut().expect("guarded").await }, if report_write.is_some() => {
                    report_write = None;
                    match result {
                        Ok(()) => {
                            reports.written();
                            self.report_written();
                        }
                        Err(error) => {
                            reports.failed();
                            self.report_failed(&error);
                        }
                    }
                }
                () = sleep_until(reports.not_before), if report_waits => {
                    reports.not_before = None;
                }
                _ = heartbeat.tick() => {
                    reports.queue(Unsent::default());
                }
                () = sleep_until(work_not_before), if work.is_none() && work_not_before.is_some() => {
                    work_not_before = None;
                }
                _ = resync.tick() => {
                    debug!("periodic resync");
                    dirty = true;
                }
                // The ping is sent from this loop, so a loop that stops turning stops pinging.
                // Work runs beside the loop, though, so a hung sync or activation would not stop
                // it: work that has run longer than the whole watchdog period counts as stuck and
                // the pings are withheld until it ends, so that the service manager restarts the
                // agent. Every step of a sync is bounded (snapshot timeout, `command_timeout`),
                // so WatchdogSec must be longer than the longest a sync may legitimately take.
                _ = async { watchdog.as_mut().expect("guarded").tick().await }, if watchdog.is_some() => {
                    let period = watchdog_period.expect("a watchdog tick has a period");
                    let running = work_started.map(|started| started.elapsed());
                    match running {
                        Some(running) if running > period => {
                            if !stuck_reported {
                                stuck_reported = true;
                                warn!(
                                    ?running,
                                    watchdog = ?period,
                                    "work is taking longer than the watchdog period; \
                                     withholding watchdog pings"
                                );
                            }
                        }
                        _ => notifier.watchdog(),
                    }
                }
            }
        }
    }

    /// Logs and publishes what a piece of work did.
    fn record(&self, outcome: &Outcome, previously_skipped: &mut HashSet<Skipped>) {
        if let Some(rendered) = &outcome.rendered {
            debug!(
                hosts = rendered.hosts_served,
                skipped = rendered.skipped.len(),
                files_written = outcome.written.files.len(),
                snapshot = ?rendered.snapshot_time,
                render_and_write = ?rendered.write_time,
                "regenerated"
            );
            // Each bad row is reported once, not at every regeneration, and a flood of them
            // (a bulk load that bypassed the triggers) does not bury the log.
            let new: Vec<&Skipped> = rendered
                .skipped
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
            *previously_skipped = rendered.skipped.iter().cloned().collect();
        }
        if !outcome.written.files.is_empty() || outcome.activated.is_some() {
            let hosts = outcome.written.host_changes.unwrap_or_default();
            info!(
                files = ?outcome.written.files,
                hosts_added = hosts.added,
                hosts_removed = hosts.removed,
                hosts_changed = hosts.changed,
                activation = outcome.activated.map(Activation::as_str),
                "applied"
            );
        }
        let in_sync = outcome.result.is_ok() && outcome.pending.is_none();
        self.status.send_modify(|s| {
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
            if !outcome.written.files.is_empty() || outcome.activated.is_some() {
                s.last_applied = Some(SystemTime::now());
            }
            if in_sync && outcome.rendered.is_some() {
                s.last_in_sync = Some(SystemTime::now());
            }
        });
        if in_sync {
            self.set_phase_ok();
        }
    }

    fn report_written(&self) {
        let mut recovered = false;
        self.status.send_modify(|s| {
            s.status_reports += 1;
            recovered = s.status_error.take().is_some();
        });
        if recovered {
            info!("this agent's status is written to the database again");
        }
    }

    /// Logs a failed status report once per distinct error, not once per heartbeat.
    fn report_failed(&self, error: &DbError) {
        let message = error_chain(error);
        let changed = self.status.send_if_modified(|s| {
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
    fn notify_status(&self, notifier: &mut Notifier) {
        let s = self.status.borrow();
        let error = s.last_error.as_deref().unwrap_or("unknown error");
        let text = match s.phase {
            Phase::Starting => "starting: connecting to the database".to_owned(),
            Phase::DatabaseUnreachable => format!("database unreachable, retrying: {error}"),
            Phase::InSync => {
                let mut text = format!("in sync: {} hosts", s.hosts_served);
                if s.rows_skipped > 0 {
                    text.push_str(&format!(" ({} rows skipped)", s.rows_skipped));
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
        };
        // A retried activation alone can reach InSync; ready means a snapshot is on disk.
        let ready = s.phase == Phase::InSync && s.last_in_sync.is_some();
        drop(s);
        notifier.status(&text);
        if ready {
            notifier.ready();
        }
    }

    /// Logs a failure once per change of phase, not once per retry.
    fn set_phase(&self, phase: Phase, error: &(dyn std::error::Error + 'static)) {
        let message = error_chain(error);
        let changed = self.status.send_if_modified(|s| {
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
        let previous = self.status.borrow().phase;
        if previous != Phase::InSync {
            self.status.send_modify(|s| {
                s.phase = Phase::InSync;
                s.last_error = None;
            });
            let s = self.status.borrow();
            info!(
                hosts = s.hosts_served,
                skipped = s.rows_skipped,
                "in sync: dnsmasq's files match the database"
            );
        }
    }
}

/// Whether a "not before" time has passed; `None` means no wait.
fn is_due(not_before: Option<Instant>) -> bool {
    not_before.is_none_or(|at| at <= Instant::now())
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

/// An error with all its causes, `outer: inner: innermost`.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
