//! One piece of the agent's work: a sync (snapshot, render, check, stage, write, activate), or
//! a retried activation. It runs beside the loop and hands back an [`Outcome`].
//!
//! Rendering and writing are blocking; they go through [`blocking`], which keeps them off the
//! loop's threads and turns a panic in them into a [`SyncError`], so that a bug costs one failed
//! sync (the old files stay, the phase is reported, the sync is retried), not the process.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tracing::warn;

use super::{error_chain, SyncError};
use crate::activate::{Activation, Activator};
use crate::config::Config;
use crate::db::status::{self as db_status, Applied};
use crate::db::{self, SiteScope, SnapshotAt};
use crate::render::check::FileKind;
use crate::render::{self, HostChangeDetails, Layout, LayoutKind, Rendered, Skipped};
use crate::write::{self, FileError};

/// Longest a snapshot may take before the sync counts as failed and is retried.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);
/// Hosts named per kind of change (added, removed, changed) in the "applied" log line.
const HOSTS_NAMED: usize = 5;

/// The files the agent owns, in the order they are written: the include file last, since it
/// points at the others.
#[derive(Debug, Clone)]
pub(super) struct OutputFiles {
    pub(super) layout: Layout,
    pub(super) include_file: PathBuf,
    file_mode: u32,
    /// Records an activation that is owed, so that a crash between writing and signalling is
    /// made good at the next start.
    marker: PathBuf,
}

impl OutputFiles {
    pub(super) fn new(config: &Config) -> Self {
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
            LayoutKind::Incremental => false,
        }
    }

    /// The activation owed when the agent last stopped, if any.
    pub(super) fn read_marker(&self) -> Option<Activation> {
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
    /// The strongest activation the changed targets need: there is at least one.
    needs: Activation,
    host_changes: Option<HostChangeDetails>,
    /// The staged include file, when it changed: the check command looks at it.
    staged_include: Option<PathBuf>,
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

pub(super) struct RenderedSummary {
    /// What these files are, for the status report once they are live.
    pub(super) applied: Applied,
    pub(super) hosts_served: usize,
    pub(super) skipped: Vec<Skipped>,
    /// How long reading the snapshot, and rendering plus writing, took: for the debug log.
    pub(super) snapshot_time: Duration,
    pub(super) write_time: Duration,
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
}

impl Worker {
    pub(super) fn new(pool: Pool, config: &Config) -> Worker {
        Worker {
            pool,
            last_host_count: AtomicUsize::new(0),
            files: OutputFiles::new(config),
            activator: Activator::new(&config.dnsmasq),
            scope: super::site_scope(config),
        }
    }

    /// Snapshot, render, write what differs, activate what is owed.
    pub(super) async fn sync(self: Arc<Self>, pending: Option<Activation>) -> Outcome {
        let started = Instant::now();
        let expected = self.last_host_count.load(Ordering::Relaxed);
        let snapshot = match tokio::time::timeout(
            SNAPSHOT_TIMEOUT,
            db::take_snapshot_at(&self.pool, expected, &self.scope),
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
        let (summary, staged) =
            match blocking("rendering", move || worker.render_and_stage(snapshot)).await {
                Ok(rendered) => rendered,
                Err(error) => return Outcome::failed(pending, error),
            };
        let mut outcome = match staged {
            Ok(None) => self.activate(pending).await,
            Ok(Some(change)) => self.check_and_commit(change, pending).await,
            Err(error) => Outcome::failed(pending, error),
        };
        outcome.rendered = Some(RenderedSummary {
            snapshot_time,
            write_time: started.elapsed() - snapshot_time,
            ..summary
        });
        outcome
    }

    /// Renders the snapshot, then checks and stages what differs from disk.
    fn render_and_stage(
        &self,
        snapshot: SnapshotAt,
    ) -> (RenderedSummary, Result<Option<StagedChange>, SyncError>) {
        let rendered =
            render::render_scoped(&snapshot.snapshot, &self.files.layout, &snapshot.names_only);
        let db_snapshot = snapshot.db_snapshot;
        drop(snapshot.snapshot);
        let staged = self.stage_changed(&rendered);
        let summary = RenderedSummary {
            applied: Applied {
                db_snapshot,
                files_hash: self.files.hash(&rendered),
                hosts: rendered.hosts_served,
                rows_skipped: rendered.skipped.len(),
            },
            hosts_served: rendered.hosts_served,
            skipped: rendered.skipped,
            snapshot_time: Duration::ZERO,
            write_time: Duration::ZERO,
        };
        (summary, staged)
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
        let Some(needs) = changed.iter().map(|t| t.activation).max() else {
            return Ok(None);
        };
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
                render::describe_host_changes(
                    &String::from_utf8_lossy(&old),
                    t.content,
                    HOSTS_NAMED,
                )
            });
        let replacements: Vec<(&Path, &[u8])> = changed
            .iter()
            .map(|t| (t.path, t.content.as_bytes()))
            .collect();
        let staged = write::stage_files(&replacements, self.files.file_mode)?;
        Ok(Some(StagedChange {
            staged_include: staged
                .temp_path(&self.files.include_file)
                .map(Path::to_owned),
            staged,
            targets: changed
                .iter()
                .map(|t| (t.path.to_owned(), t.activation))
                .collect(),
            needs,
            host_changes,
        }))
    }

    /// Runs the check command on a changed include file, puts the staged files in place and
    /// activates what they need.
    async fn check_and_commit(
        self: Arc<Self>,
        change: StagedChange,
        pending: Option<Activation>,
    ) -> Outcome {
        if let Some(staged_include) = &change.staged_include {
            if let Err(error) = self.activator.check_include(staged_include).await {
                return Outcome::failed(pending, SyncError::CheckCommand(error));
            }
        }
        let owed_by_all = stronger(pending, change.needs);
        let worker = Arc::clone(&self);
        let (written, needed, result) =
            match blocking("writing", move || worker.commit(change, pending)).await {
                Ok(committed) => committed,
                // Some files may be in place: they are owed their activation, and the resync
                // that follows this error finds whatever was not replaced.
                Err(error) => return Outcome::failed(Some(owed_by_all), error),
            };
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
        // The marker goes first: after a crash from here on, the next start activates anyway.
        let owed = stronger(pending, change.needs);
        if let Err(error) = write::replace_volatile(&self.files.marker, owed.as_str().as_bytes()) {
            return (written, None, Err(error));
        }
        let (renamed, result) = match change.staged.commit() {
            Ok(()) => (change.targets.len(), Ok(())),
            Err(partial) => (partial.renamed, Err(partial.error)),
        };
        let mut host_changes = change.host_changes;
        let mut activation = None;
        for (path, needs) in change.targets.into_iter().take(renamed) {
            activation = activation.max(Some(needs));
            if self.files.holds_hosts(&path) {
                written.host_changes = host_changes.take();
            }
            written.files.push(path.display().to_string());
        }
        (written, activation, result)
    }

    /// Carries out `owed`, if anything is owed, and clears the marker once it succeeded.
    pub(super) async fn activate(&self, owed: Option<Activation>) -> Outcome {
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
        Outcome::done(Some(activation))
    }
}

/// `pending` and `needs` together: the stronger of the two.
fn stronger(pending: Option<Activation>, needs: Activation) -> Activation {
    pending.map_or(needs, |pending| pending.max(needs))
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

    #[test]
    fn the_stronger_activation_is_owed() {
        assert_eq!(stronger(None, Activation::Reload), Activation::Reload);
        assert_eq!(
            stronger(Some(Activation::Restart), Activation::Reload),
            Activation::Restart
        );
        assert_eq!(
            stronger(Some(Activation::Reload), Activation::Restart),
            Activation::Restart
        );
    }
}
