//! One piece of the agent's work: a sync (snapshot, render, check, stage, write, activate), or
//! a retried activation. It runs beside the loop and hands back an [`Outcome`].
//!
//! Rendering and writing are blocking; they go through [`blocking`], which keeps them off the
//! loop's threads and turns a panic in them into a [`SyncError`], so that a bug costs one failed
//! sync (the old files stay, the phase is reported, the sync is retried), not the process.
//!
//! # Delta reads
//!
//! The worker keeps the last snapshot it synced and, in any layout, brings it up to date by
//! reading only the hosts changed since ([`db::take_delta_at`]): the cost of a one-row change
//! is then rendering, not reading 100k rows. With the incremental layout the render is derived
//! from the last one too ([`render::Previous`]), so that a one-row change costs about a
//! millisecond of rendering at 100k hosts instead of a full render. The patched snapshot equals a full read of the
//! same transaction (the visibility rule is the one the database itself uses; the tests
//! `delta`, `delta_props` and the agent's compare them). Whenever that is in doubt it reads
//! everything: at start, after any failed sync, once per resync interval, after a change to
//! subnets or sites, a TRUNCATE, a server restart or failover, and when more than a tenth of
//! the hosts changed.
//!
//! # The incremental layout
//!
//! The worker owns the model of dnsmasq's memory ([`Loaded`]); `None` means unknown. A sync
//! does one of three things with a snapshot:
//!
//! - the include file changed: every shard file made exact, then the include, then a restart
//!   (a full read: the model becomes [`Loaded::full_read`]);
//! - the model is unknown, or a compaction is due or requested: every shard file made exact
//!   (shard files of empty shards removed), then SIGHUP, the model becomes a full read. When the
//!   model is unknown only because the agent started, the files are already exact and no
//!   marker says a compaction is owed, dnsmasq already holds a full read of them: no signal;
//! - otherwise the planner's files only, without a signal: the model becomes the plan's.
//!
//! Crash safety, step by step (the model lives in memory only, so after any crash the next
//! agent starts with it unknown and compacts unless the files are exact and nothing is owed):
//!
//! 1. Nothing is written before the whole snapshot is rendered and every staged file checked.
//! 2. A write that leaves dnsmasq owing a compaction records the debt marker durably first; a
//!    crash after it compacts at the next start, whatever else got written.
//! 3. A write that needs a signal records the activation marker first (as in every layout); a
//!    crash before the signal sends it at the next start.
//! 4. Shard files are replaced by rename, one by one. dnsmasq reads each as it lands. A crash
//!    half-way leaves files that differ from every later render until they are rewritten, so
//!    the next agent compacts at start; the files written so far were a subset of a plan
//!    without debt (otherwise the marker is there), and such a plan only adds entries dnsmasq
//!    takes as they are, so their subset owes nothing either.
//! 5. The marker goes after the signal: a crash between the two costs one extra compaction.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tracing::{debug, warn};

use super::digests::ShardDigests;
use super::schedule::{CompactionState, Why};
use super::shards::ShardDirs;
use super::{error_chain, SyncError};
use crate::activate::{Activation, Activator};
use crate::config::Config;
use crate::db::status::{self as db_status, Applied};
use crate::db::{self, DbError, DeltaStats, SiteScope, SnapshotAt};
use crate::plan::{self, Loaded};
use crate::release::{self, Reservations};
use crate::render::check::FileKind;
use crate::render::{self, HostChangeDetails, Layout, LayoutKind, Rendered, Sharded, Skipped};
use crate::write::{self, FileError};

/// Longest a snapshot may take before the sync counts as failed and is retried.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);
/// Hosts named per kind of change (added, removed, changed) in the "applied" log line.
const HOSTS_NAMED: usize = 5;
/// A delta read gives up (a full read follows) when more than this share of the hosts (in
/// 1/x), or [`DELTA_MIN_CHANGED`] if that is more, changed: fetching them by id costs more than
/// streaming them all.
const DELTA_SHARE: usize = 10;
const DELTA_MIN_CHANGED: usize = 100;

/// The files the agent owns, in the order they are written: the include file last, since it
/// points at the others.
pub(super) struct OutputFiles {
    pub(super) layout: Layout,
    pub(super) include_file: PathBuf,
    file_mode: u32,
    /// Records an activation that is owed, so that a crash between writing and signalling is
    /// made good at the next start.
    marker: PathBuf,
    /// The incremental layout's shard directories; `None` with the other layouts.
    shards: Option<ShardDirs>,
}

impl OutputFiles {
    pub(super) fn new(config: &Config) -> Self {
        let d = &config.dnsmasq;
        let name = d
            .include_file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let layout = d.layout();
        OutputFiles {
            shards: ShardDirs::new(&layout),
            layout,
            include_file: d.include_file.clone(),
            file_mode: d.file_mode,
            // Dot-named, so dnsmasq's conf-dir skips it.
            marker: d
                .include_file
                .with_file_name(format!(".{name}.activation-pending")),
        }
    }

    /// Each rendered whole file with its path, its kind, and what dnsmasq must do when it
    /// changes: the include file last. (Shard files are [`ShardDirs`]' business.)
    fn targets<'a>(&'a self, rendered: &'a Rendered) -> Vec<Target<'a>> {
        let mut targets = Vec::with_capacity(3);
        let mut push = |path: &'a Path, content: &'a str, kind, activation| {
            targets.push(Target {
                path: Cow::Borrowed(path),
                content: Some(content),
                kind,
                activation: Some(activation),
            });
        };
        if let Some(hosts) = &rendered.hosts {
            push(
                &self.layout.hosts_file,
                hosts,
                FileKind::HostsFile,
                Activation::Reload,
            );
        }
        if let Some(addn) = &rendered.addn_hosts {
            push(
                &self.layout.addn_hosts_file,
                addn,
                FileKind::AddnHosts,
                Activation::Reload,
            );
        }
        push(
            &self.include_file,
            &rendered.include,
            FileKind::Include,
            Activation::Restart,
        );
        targets
    }

    /// [`db_status::files_hash`] of the rendered files under their paths: the shard files (if
    /// any) in shard order, reservations first, each standing for its content by the
    /// lowercase hex SHA-256 of it (kept in `digests`, so that only changed shards are hashed
    /// again), then the whole files in writing order.
    fn hash(&self, rendered: &Rendered, digests: &mut ShardDigests) -> String {
        let mut shard_files: Vec<(String, &str)> = Vec::new();
        if let Some(sharded) = &rendered.sharded {
            for (dir, shards) in [
                (&self.layout.hosts_dir, &sharded.dhcp),
                (&self.layout.names_dir, &sharded.dns),
            ] {
                shard_files.extend(shards.iter().map(|(shard, content)| {
                    let path = dir.join(render::shard_file_name(*shard));
                    (path.display().to_string(), content.as_str())
                }));
            }
        }
        let mut files: Vec<(String, &[u8])> = Vec::new();
        let shard_digests = digests.digests(shard_files);
        files.extend(shard_digests.iter().map(|(p, d)| (p.clone(), d.as_bytes())));
        for t in self.targets(rendered) {
            files.push((
                t.path.display().to_string(),
                t.content.unwrap_or("").as_bytes(),
            ));
        }
        db_status::files_hash(files.iter().map(|(name, c)| (name.as_str(), *c)))
    }

    /// The file whose lines are the reservations, for the log line's added/removed/changed.
    fn holds_hosts(&self, path: &Path) -> bool {
        match self.layout.kind {
            LayoutKind::Hostsfile => path == self.layout.hosts_file,
            LayoutKind::Conf => path == self.include_file,
            // Its reservations are spread over shard files: counted from the plan instead.
            LayoutKind::Incremental => false,
        }
    }

    /// The activation owed when the agent last stopped, if any.
    pub(super) fn read_marker(&self) -> Option<Activation> {
        let content = std::fs::read_to_string(&self.marker).ok()?;
        Activation::parse(&content)
    }
}

/// One file the agent writes or removes.
pub(super) struct Target<'a> {
    pub(super) path: Cow<'a, Path>,
    /// The new content; `None`: the file is removed.
    pub(super) content: Option<&'a str>,
    pub(super) kind: FileKind,
    /// What dnsmasq must do when it changes; `None`: nothing, it watches the file.
    pub(super) activation: Option<Activation>,
}

impl Target<'_> {
    fn differs(&self) -> Result<bool, FileError> {
        match self.content {
            Some(content) => write::differs(&self.path, content.as_bytes()),
            None => Ok(write::read_existing(&self.path)?.is_some()),
        }
    }
}

/// The files of a sync that differ from disk, checked and staged beside their targets.
struct StagedChange {
    staged: write::Staged,
    /// The changed targets in commit order (replacements, then removals), with what each
    /// needs from dnsmasq.
    targets: Vec<(PathBuf, Option<Activation>)>,
    /// The strongest activation the change needs.
    needs: Option<Activation>,
    host_changes: Option<HostChangeDetails>,
    /// The staged include file, when it changed: the check command looks at it.
    staged_include: Option<PathBuf>,
    /// Incremental layout: what dnsmasq holds once the change is in place and `needs` done.
    model_after: Option<Loaded>,
    /// Incremental layout: the change leaves dnsmasq owing a compaction.
    owes_compaction: bool,
    /// Incremental layout: the change is a compaction (or a restart), for this reason.
    compaction: Option<Why>,
}

impl StagedChange {
    fn incremental(mut self, model_after: Loaded, compaction: Option<Why>) -> StagedChange {
        self.owes_compaction = model_after.debt();
        self.model_after = Some(model_after);
        self.compaction = compaction;
        self
    }
}

/// What a sync changed on disk, for the one log line per change.
#[derive(Debug, Default)]
pub(super) struct Written {
    pub(super) files: Vec<String>,
    pub(super) host_changes: Option<HostChangeDetails>,
}

/// The outcome of one piece of work.
pub(super) struct Outcome {
    /// `Some` when a snapshot was rendered.
    pub(super) rendered: Option<RenderedSummary>,
    pub(super) written: Written,
    /// The activation that was carried out.
    pub(super) activated: Option<Activation>,
    /// The activation still owed after this work.
    pub(super) pending: Option<Activation>,
    pub(super) result: Result<(), SyncError>,
    /// Incremental layout, after a sync: what dnsmasq owes the files.
    pub(super) incremental: Option<Incremental>,
    /// The reservations dnsmasq serves with these files once they are in effect (incremental
    /// layout: the model's, after a successful sync); `None`: not known, or not releasing.
    pub(super) served: Option<Arc<Reservations>>,
    /// The other layouts, at the agent's first sync when it changed them: the reservations of
    /// the files it found, which dnsmasq served until then.
    pub(super) served_at_start: Option<Reservations>,
}

/// What dnsmasq owes the shard files after a sync (incremental layout).
#[derive(Debug, Clone, Default)]
pub(super) struct Incremental {
    /// [`Loaded::pending`]: empty while the model is unknown (the next sync compacts).
    pub(super) pending_hosts: Vec<i64>,
    /// [`Loaded::debt`].
    pub(super) owed: bool,
    /// The sync compacted.
    pub(super) compacted: Option<Compacted>,
}

/// A compaction done, for its log line.
#[derive(Debug, Clone, Copy)]
pub(super) struct Compacted {
    pub(super) why: Why,
    /// From the start of the sync to the signal sent.
    pub(super) took: Duration,
}

impl Outcome {
    /// What the schedule needs to know about compactions.
    pub(super) fn compaction_state(&self) -> CompactionState {
        self.incremental
            .as_ref()
            .map_or_else(CompactionState::default, |i| CompactionState {
                compacted: i.compacted.is_some(),
                owed: i.owed,
            })
    }

    fn failed(pending: Option<Activation>, error: SyncError) -> Outcome {
        Outcome {
            rendered: None,
            written: Written::default(),
            activated: None,
            pending,
            result: Err(error),
            incremental: None,
            served: None,
            served_at_start: None,
        }
    }

    fn done(activated: Option<Activation>) -> Outcome {
        Outcome {
            rendered: None,
            written: Written::default(),
            activated,
            pending: None,
            result: Ok(()),
            incremental: None,
            served: None,
            served_at_start: None,
        }
    }
}

pub(super) struct RenderedSummary {
    /// What these files are, for the status report once they are live.
    pub(super) applied: Applied,
    pub(super) hosts_served: usize,
    pub(super) skipped: Vec<Skipped>,
    /// How long reading the snapshot, and rendering plus writing, took: for the debug log.
    pub(super) snapshot_time: Duration,
    pub(super) write_time: Duration,
    /// What the delta read found; `None`: a full read.
    pub(super) delta: Option<DeltaStats>,
    /// Incremental layout: [`Loaded::pending`] once these files are in place, reported with
    /// `applied`.
    pub(super) pending_hosts: Option<Vec<i64>>,
    /// The other layouts: the reservations these files serve, when releasing.
    pub(super) served: Option<Arc<Reservations>>,
    /// See [`Outcome::served_at_start`].
    pub(super) served_at_start: Option<Reservations>,
}

/// Everything a piece of work needs, shared with the loop.
pub(super) struct Worker {
    pub(super) pool: Pool,
    /// Hosts in the last snapshot: the size to expect in the next one.
    last_host_count: AtomicUsize,
    pub(super) files: OutputFiles,
    activator: Activator,
    /// The subnets this agent reads and serves.
    scope: SiteScope,
    /// Incremental layout: what dnsmasq holds; `None` while unknown. Only the one running
    /// piece of work touches it.
    model: Mutex<Option<Loaded>>,
    /// Incremental layout: when the shard files were last compared with the model, and how
    /// often they are (the resync interval: the other layouts compare at every sync).
    verified_at: Mutex<Instant>,
    verify_every: Duration,
    /// The last snapshot read and when the last full read was, for delta reads; `None` after
    /// any failed sync, so that the next one reads everything.
    last_read: Mutex<Option<LastRead>>,
    /// Incremental layout: the digest of each shard file, for `files_hash`.
    digests: Mutex<ShardDigests>,
    /// Whether stale leases are released: then outcomes say what dnsmasq serves.
    releasing: bool,
    /// Whether the reservations of the files were read once (the other layouts).
    served_read: std::sync::atomic::AtomicBool,
}

/// A snapshot to patch with the next delta read.
struct LastRead {
    at: SnapshotAt,
    /// The last full read: one is done again after the resync interval, whatever the deltas.
    full_at: Instant,
    /// Incremental layout: the render of `at` before its last patch, from which the render of
    /// the patched snapshot is derived; `None` after a full read.
    previous: Option<render::Previous>,
}

impl Worker {
    pub(super) fn new(pool: Pool, config: &Config) -> Worker {
        Worker {
            pool,
            last_host_count: AtomicUsize::new(0),
            files: OutputFiles::new(config),
            activator: Activator::new(&config.dnsmasq),
            scope: super::site_scope(config),
            model: Mutex::new(None),
            verified_at: Mutex::new(Instant::now()),
            verify_every: config.agent.resync_interval,
            last_read: Mutex::new(None),
            digests: Mutex::new(ShardDigests::default()),
            releasing: config.dnsmasq.releases_leases(),
            served_read: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A delta read patching the last snapshot when there is one and its full read is younger
    /// than the resync interval; otherwise, or when the delta read cannot tell or fails, a
    /// full read. The last snapshot is taken out: only a successful sync puts one back.
    async fn read(&self, expected: usize) -> Result<(LastRead, Option<DeltaStats>), DbError> {
        let last = self
            .last_read
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut last) = last.filter(|l| l.full_at.elapsed() < self.verify_every) {
            let max_changed = (last.at.snapshot.hosts.len() / DELTA_SHARE).max(DELTA_MIN_CHANGED);
            match db::take_delta_at(&self.pool, &mut last.at, &self.scope, max_changed).await {
                Ok(Some(stats)) => return Ok((last, Some(stats))),
                Ok(None) => {}
                Err(error) => {
                    debug!(error = %error_chain(&error), "delta read failed; reading everything")
                }
            }
        }
        let full_at = Instant::now();
        let at = db::take_snapshot_at(&self.pool, expected, &self.scope).await?;
        Ok((
            LastRead {
                at,
                full_at,
                previous: None,
            },
            None,
        ))
    }

    fn model(&self) -> MutexGuard<'_, Option<Loaded>> {
        // A panic while it was held (a bug, reported as a failed sync) leaves it as it was.
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Snapshot, render, write what differs, activate what is owed; with `compact`, a
    /// compaction (incremental layout).
    pub(super) async fn sync(
        self: Arc<Self>,
        pending: Option<Activation>,
        compact: Option<Why>,
    ) -> Outcome {
        let started = Instant::now();
        let expected = self.last_host_count.load(Ordering::Relaxed);
        let (snapshot, delta) =
            match tokio::time::timeout(SNAPSHOT_TIMEOUT, self.read(expected)).await {
                Ok(Ok(read)) => read,
                Ok(Err(error)) => return Outcome::failed(pending, error.into()),
                Err(_) => {
                    return Outcome::failed(pending, SyncError::SnapshotTimeout(SNAPSHOT_TIMEOUT))
                }
            };
        let snapshot_time = started.elapsed();
        self.last_host_count
            .store(snapshot.at.snapshot.hosts.len(), Ordering::Relaxed);
        // Rendering 100k hosts and fsyncing files are blocking work; keep them off the loop.
        let worker = Arc::clone(&self);
        let render = move || worker.render_and_stage(snapshot, compact, pending);
        let (mut summary, staged, snapshot) = match blocking("rendering", render).await {
            Ok(rendered) => rendered,
            Err(error) => return Outcome::failed(pending, error),
        };
        let mut outcome = match staged {
            Ok(None) => self.activate(pending).await,
            Ok(Some(change)) => {
                Arc::clone(&self)
                    .check_and_commit(change, pending, started)
                    .await
            }
            Err(error) => Outcome::failed(pending, error),
        };
        if outcome.result.is_ok() {
            *self.last_read.lock().unwrap_or_else(|e| e.into_inner()) = Some(snapshot);
        }
        if self.files.shards.is_some() && outcome.incremental.is_none() {
            outcome.incremental = Some(self.incremental(None));
        }
        outcome.served = match &self.files.shards {
            Some(_) => Arc::clone(&self).served_by_model(&outcome).await,
            None => summary.served.take(),
        };
        outcome.served_at_start = summary.served_at_start.take();
        outcome.rendered = Some(RenderedSummary {
            snapshot_time,
            write_time: started.elapsed() - snapshot_time,
            delta,
            pending_hosts: outcome
                .incremental
                .as_ref()
                .map(|i| i.pending_hosts.clone()),
            ..summary
        });
        outcome
    }

    /// Renders the snapshot, then checks and stages what differs from disk; hands the snapshot
    /// back for the next delta read.
    fn render_and_stage(
        &self,
        mut snapshot: LastRead,
        compact: Option<Why>,
        pending: Option<Activation>,
    ) -> (
        RenderedSummary,
        Result<Option<StagedChange>, SyncError>,
        LastRead,
    ) {
        let mut rendered = self.render(&mut snapshot);
        let at = &snapshot.at;
        let db_snapshot = at.db_snapshot.clone();
        let files_hash = {
            let mut digests = self.digests.lock().unwrap_or_else(|e| e.into_inner());
            self.files.hash(&rendered, &mut digests)
        };
        let staged = match (rendered.sharded.take(), &self.files.shards) {
            (Some(sharded), Some(dirs)) => {
                self.stage_incremental(dirs, &rendered, sharded, compact, pending)
            }
            _ => self.stage_changed(&rendered),
        };
        let (served, served_at_start) = self.served_by_files(&rendered, &staged);
        let summary = RenderedSummary {
            applied: Applied {
                db_snapshot,
                files_hash,
                hosts: rendered.hosts_served,
                rows_skipped: rendered.skipped.len(),
            },
            hosts_served: rendered.hosts_served,
            skipped: rendered.skipped,
            snapshot_time: Duration::ZERO,
            write_time: Duration::ZERO,
            delta: None,
            pending_hosts: None,
            served,
            served_at_start,
        };
        (summary, staged, snapshot)
    }

    /// Renders the snapshot: after a delta read, derived from the render before it (see
    /// [`render::Previous`]); else in full, keeping what the next one is derived from.
    fn render(&self, snapshot: &mut LastRead) -> Rendered {
        let (at, layout) = (&mut snapshot.at, &self.files.layout);
        match (&mut snapshot.previous, at.replaced.take()) {
            (Some(previous), Some(replaced)) => {
                previous.update(&at.snapshot, layout, &at.names_only, &replaced)
            }
            _ => {
                let (rendered, previous) =
                    render::Previous::render(&at.snapshot, layout, &at.names_only);
                snapshot.previous = previous;
                rendered
            }
        }
    }

    /// Checks every whole file that differs from disk with ipmanager's own validator and
    /// stages it beside its target. `None` when nothing differs.
    fn stage_changed(&self, rendered: &Rendered) -> Result<Option<StagedChange>, SyncError> {
        let changed = changed(self.files.targets(rendered))?;
        let Some(needs) = changed.iter().filter_map(|t| t.activation).max() else {
            return Ok(None);
        };
        let host_changes = changed
            .iter()
            .find(|t| self.files.holds_hosts(&t.path))
            .map(|t| {
                let old = write::read_existing(&t.path)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                render::describe_host_changes(
                    &String::from_utf8_lossy(&old),
                    t.content.unwrap_or(""),
                    HOSTS_NAMED,
                )
            });
        self.stage(changed, Some(needs), host_changes).map(Some)
    }

    /// The incremental layout: a restart when the include file changed, a compaction when
    /// one is due or the model is unknown, the planner's files otherwise (see the module
    /// documentation). `None` when nothing is to be done.
    fn stage_incremental(
        &self,
        dirs: &ShardDirs,
        rendered: &Rendered,
        sharded: Sharded,
        compact: Option<Why>,
        pending: Option<Activation>,
    ) -> Result<Option<StagedChange>, SyncError> {
        let include_changed =
            write::differs(&self.files.include_file, rendered.include.as_bytes())?;
        let mut model = self.model();
        let mut compact = compact;
        if self.drifted(dirs, model.as_ref())? {
            warn!("shard files were changed behind the agent's back; compacting");
            compact = compact.or(Some(Why::Drift));
        }
        let why = compaction_reason(model.is_some(), compact, include_changed, || dirs.owes());
        let before = match (model.as_ref(), why) {
            (Some(before), None) => before,
            (_, why) => {
                let include = include_changed
                    .then(|| self.files.targets(rendered).pop())
                    .flatten();
                let why = why.unwrap_or(Why::Start);
                return self.stage_compaction(dirs, sharded, include, why, pending, &mut model);
            }
        };
        let plan = plan::plan(before, sharded);
        let host_changes = describe_planned(before.files(), &plan);
        let targets = dirs.planned(&plan);
        if targets.is_empty() {
            *model = Some(plan.after);
            return Ok(None);
        }
        let change = self.stage(targets, None, Some(host_changes))?;
        Ok(Some(change.incremental(plan.after, None)))
    }

    /// Whether the shard files on disk are no longer those of the model, which only someone
    /// else can have done; checked at most once per resync interval, since it reads them all.
    fn drifted(&self, dirs: &ShardDirs, model: Option<&Loaded>) -> Result<bool, FileError> {
        let Some(model) = model else {
            return Ok(false);
        };
        let mut verified_at = self.verified_at.lock().unwrap_or_else(|e| e.into_inner());
        if verified_at.elapsed() < self.verify_every {
            return Ok(false);
        }
        *verified_at = Instant::now();
        Ok(!dirs.exact(model.files())?.is_empty())
    }

    /// Every shard file made exact (and the include file, when given), for a signal that
    /// makes dnsmasq read them all. `None` when the files are exact, dnsmasq is owed nothing
    /// and only the agent's start made the model unknown: dnsmasq already holds a full read.
    fn stage_compaction(
        &self,
        dirs: &ShardDirs,
        sharded: Sharded,
        include: Option<Target<'_>>,
        why: Why,
        pending: Option<Activation>,
        model: &mut Option<Loaded>,
    ) -> Result<Option<StagedChange>, SyncError> {
        let mut targets = dirs.exact(&sharded)?;
        targets.extend(include);
        let forced = (why != Why::Start || dirs.owes()).then_some(Activation::Reload);
        let needs = targets
            .iter()
            .filter_map(|t| t.activation)
            .max()
            .max(forced);
        if needs.is_none() && pending.is_none() {
            *model = Some(Loaded::full_read(sharded));
            return Ok(None);
        }
        let change = self.stage(targets, needs.or(pending), None)?;
        Ok(Some(
            change.incremental(Loaded::full_read(sharded), Some(why)),
        ))
    }

    /// Checks the new content of every target with ipmanager's own validator, then stages
    /// it beside its target (removals are staged too, done at commit).
    fn stage(
        &self,
        targets: Vec<Target<'_>>,
        needs: Option<Activation>,
        host_changes: Option<HostChangeDetails>,
    ) -> Result<StagedChange, SyncError> {
        for target in &targets {
            if let Some(content) = target.content {
                render::check::check_file(target.kind, content).map_err(|failure| {
                    SyncError::Invalid {
                        path: target.path.to_path_buf(),
                        failure,
                    }
                })?;
            }
        }
        let (writes, removals): (Vec<_>, Vec<_>) =
            targets.into_iter().partition(|t| t.content.is_some());
        let replacements: Vec<(&Path, &[u8])> = writes
            .iter()
            .map(|t| (&*t.path, t.content.unwrap_or("").as_bytes()))
            .collect();
        let staged = write::stage_files(&replacements, self.files.file_mode)?
            .removing(removals.iter().map(|t| t.path.to_path_buf()).collect());
        Ok(StagedChange {
            staged_include: staged
                .temp_path(&self.files.include_file)
                .map(Path::to_owned),
            staged,
            targets: writes
                .iter()
                .chain(&removals)
                .map(|t| (t.path.to_path_buf(), t.activation))
                .collect(),
            needs,
            host_changes,
            model_after: None,
            owes_compaction: false,
            compaction: None,
        })
    }

    /// Runs the check command on a changed include file, puts the staged files in place and
    /// activates what they need; then (incremental layout) the model becomes what dnsmasq
    /// holds.
    async fn check_and_commit(
        self: Arc<Self>,
        mut change: StagedChange,
        pending: Option<Activation>,
        started: Instant,
    ) -> Outcome {
        if let Some(staged_include) = &change.staged_include {
            if let Err(error) = self.activator.check_include(staged_include).await {
                return Outcome::failed(pending, SyncError::CheckCommand(error));
            }
        }
        let owed_by_all = pending.max(change.needs);
        let model_after = change.model_after.take();
        let compaction = change.compaction;
        let worker = Arc::clone(&self);
        let (written, needed, result) =
            match blocking("writing", move || worker.commit(change, pending)).await {
                Ok(committed) => committed,
                // Some files may be in place: they are owed their activation, and the resync
                // that follows this error finds whatever was not replaced.
                Err(error) => return Outcome::failed(owed_by_all, error),
            };
        let owed = pending.max(needed);
        let mut outcome = match result {
            Ok(()) => self.activate(owed).await,
            Err(error) => Outcome::failed(owed, error.into()),
        };
        outcome.written = written;
        if let (Some(after), Ok(())) = (model_after, &outcome.result) {
            let compacted = compaction.map(|why| Compacted {
                why,
                took: started.elapsed(),
            });
            outcome.incremental = Some(self.settle(after, compacted));
        }
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
        if let Err(error) = self.record_owed(&change, pending) {
            return (written, None, Err(error));
        }
        let (renamed, result) = match change.staged.commit() {
            Ok(()) => (change.targets.len(), Ok(())),
            Err(partial) => (partial.renamed, Err(partial.error)),
        };
        let mut host_changes = change.host_changes;
        let mut activation = None;
        for (path, needs) in change.targets.into_iter().take(renamed) {
            activation = activation.max(needs);
            if self.files.holds_hosts(&path) || self.files.shards.is_some() {
                written.host_changes = host_changes.take().or(written.host_changes);
            }
            written.files.push(path.display().to_string());
        }
        // Complete, the change needs what it said, which a compaction says without any file.
        let needed = match result {
            Ok(()) => change.needs,
            Err(_) => activation,
        };
        (written, needed, result)
    }

    /// Before any file of `change` lands: the incremental model becomes unknown (dnsmasq
    /// reads each shard file as it lands), the debt marker records a compaction the change
    /// will owe, and the activation marker the activation it needs, so that a crash from here
    /// on is made good at the next start.
    fn record_owed(
        &self,
        change: &StagedChange,
        pending: Option<Activation>,
    ) -> Result<(), FileError> {
        if let Some(dirs) = &self.files.shards {
            *self.model() = None;
            if change.owes_compaction {
                dirs.record_debt()?;
            }
        }
        match pending.max(change.needs) {
            Some(owed) => write::replace_volatile(&self.files.marker, owed.as_str().as_bytes()),
            None => Ok(()),
        }
    }

    /// A change is in place and dnsmasq holds `after`: it becomes the model, and when nothing
    /// is owed any more the debt marker goes.
    fn settle(&self, after: Loaded, compacted: Option<Compacted>) -> Incremental {
        if !after.debt() {
            if let Some(dirs) = &self.files.shards {
                dirs.clear_debt();
            }
        }
        *self.model() = Some(after);
        self.incremental(compacted)
    }

    /// What dnsmasq owes the files according to the model.
    fn incremental(&self, compacted: Option<Compacted>) -> Incremental {
        let model = self.model();
        Incremental {
            pending_hosts: model.as_ref().map(Loaded::pending).unwrap_or_default(),
            owed: model.as_ref().is_some_and(Loaded::debt),
            compacted,
        }
    }

    /// The other layouts, when releasing: the reservations of the rendered files, read from
    /// them when they change (and at the first sync), since that costs about as much as the
    /// render; `None` otherwise: the same as before. At the first sync, when it changes the
    /// file, also those of the file it replaces: what dnsmasq served while the agent was away.
    fn served_by_files(
        &self,
        rendered: &Rendered,
        staged: &Result<Option<StagedChange>, SyncError>,
    ) -> (Option<Arc<Reservations>>, Option<Reservations>) {
        if !self.releasing || self.files.shards.is_some() {
            return (None, None);
        }
        let replaced = match staged {
            Ok(Some(change)) => change
                .targets
                .iter()
                .find(|(p, _)| self.files.holds_hosts(p))
                .map(|(p, _)| p.as_path()),
            _ => None,
        };
        let first = !self.served_read.swap(true, Ordering::Relaxed);
        if replaced.is_none() && !first {
            return (None, None);
        }
        let at_start = replaced.filter(|_| first).map(|path| {
            // Unreadable: nothing known to release, as without the agent.
            let old = write::read_existing(path)
                .ok()
                .flatten()
                .unwrap_or_default();
            release::reservations_in(&String::from_utf8_lossy(&old))
        });
        let text = rendered.hosts.as_deref().unwrap_or(&rendered.include);
        (Some(Arc::new(release::reservations_in(text))), at_start)
    }

    /// Incremental layout, when releasing: what dnsmasq serves after a successful sync that
    /// wrote or compacted (or the first), by the model; `None` otherwise: the same as before.
    /// Built off the loop's thread: it costs in proportion to all hosts.
    async fn served_by_model(self: Arc<Self>, outcome: &Outcome) -> Option<Arc<Reservations>> {
        let first = !self.served_read.load(Ordering::Relaxed);
        let changed = !outcome.written.files.is_empty() || outcome.activated.is_some();
        if !self.releasing || outcome.result.is_err() || !(changed || first) {
            return None;
        }
        let worker = Arc::clone(&self);
        let served = blocking("reading the served reservations", move || {
            let model = worker.model();
            Some(model.as_ref()?.served_reservations().into_iter().collect())
        })
        .await
        .ok()
        .flatten()?;
        self.served_read.store(true, Ordering::Relaxed);
        Some(Arc::new(served))
    }

    /// Retries an activation owed without a new snapshot. With the incremental layout the
    /// model stays unknown (the next sync finds dnsmasq holding a full read of the files, or
    /// compacts), and after a successful one nothing awaits a compaction.
    pub(super) async fn retry_activation(&self, owed: Activation) -> Outcome {
        let mut outcome = self.activate(Some(owed)).await;
        if self.files.shards.is_some() && outcome.result.is_ok() {
            outcome.incremental = Some(self.incremental(None));
        }
        outcome
    }

    /// Carries out `owed`, if anything is owed, and clears the marker once it succeeded. With
    /// the incremental layout dnsmasq has then read every shard file whole: nothing is owed.
    async fn activate(&self, owed: Option<Activation>) -> Outcome {
        let Some(activation) = owed else {
            return Outcome::done(None);
        };
        if let Err(error) = self.activator.activate(activation).await {
            return Outcome::failed(Some(activation), error.into());
        }
        if let Err(error) = write::remove(&self.files.marker) {
            // dnsmasq has the files; a stale marker only costs one extra activation later.
            warn!(error = %error_chain(&error), "cannot remove the activation marker");
        }
        if let Some(dirs) = &self.files.shards {
            dirs.clear_debt();
        }
        Outcome::done(Some(activation))
    }
}

/// Why a sync of the incremental layout compacts, if it does: a due or requested compaction,
/// a changed include file (the restart reads everything anyway), or an unknown model (the debt
/// marker says whether the last agent left a compaction owed).
fn compaction_reason(
    model_known: bool,
    compact: Option<Why>,
    include_changed: bool,
    marker: impl FnOnce() -> bool,
) -> Option<Why> {
    match compact {
        Some(why) => Some(why),
        None if include_changed => Some(Why::Include),
        None if model_known => None,
        None if marker() => Some(Why::Debt),
        None => Some(Why::Start),
    }
}

/// The hosts a plan adds, removes and changes, from the old and new reservation shards it
/// writes (a host's lines never leave its shard).
fn describe_planned(before: &Sharded, plan: &plan::Plan) -> HostChangeDetails {
    let (mut old, mut new) = (String::new(), String::new());
    for (shard, content) in &plan.dhcp {
        old.push_str(before.dhcp.get(shard).map_or("", String::as_str));
        new.push_str(content.as_deref().unwrap_or(""));
    }
    render::describe_host_changes(&old, &new, HOSTS_NAMED)
}

/// The targets whose file differs from their content (a removal: whose file exists).
fn changed(targets: Vec<Target<'_>>) -> Result<Vec<Target<'_>>, FileError> {
    let mut changed = Vec::with_capacity(targets.len());
    for target in targets {
        if target.differs()? {
            changed.push(target);
        }
    }
    Ok(changed)
}

/// Runs `work` on the blocking thread pool, inside the caller's tracing span. A panic in it
/// becomes [`SyncError::Panicked`] naming `stage`, instead of a crash of the agent.
pub(super) async fn blocking<T: Send + 'static>(
    stage: &'static str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, SyncError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .map_err(|error| SyncError::Panicked {
            stage,
            message: panic_message(error),
        })
}

/// What a panicked (or, at shutdown, cancelled) blocking task said.
fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => match payload.downcast::<String>() {
            Ok(message) => *message,
            Err(payload) => payload.downcast_ref::<&str>().map_or_else(
                || "a panic without a message".to_owned(),
                |m| (*m).to_owned(),
            ),
        },
        Err(error) => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{Phase, Recovery};

    #[tokio::test]
    async fn a_panic_in_blocking_work_is_a_sync_error_that_is_retried() {
        let error = blocking("rendering", || -> usize { panic!("bad row {}", 7) })
            .await
            .unwrap_err();
        assert!(matches!(error, SyncError::Panicked { .. }), "{error:?}");
        assert_eq!(error.to_string(), "rendering panicked: bad row 7");
        // Like a failed read or write: the whole sync is redone after a backoff.
        assert_eq!(error.recovery(), Recovery::Resync);
        assert_eq!(error.recovery().phase(), Phase::SyncFailing);

        let error = blocking("writing", || -> usize { panic!("static text") })
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "writing panicked: static text");
        assert_eq!(blocking("rendering", || 42).await.unwrap(), 42);
    }
}
