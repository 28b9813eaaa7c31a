//! The agent: keeps dnsmasq's files equal to the database.
//!
//! One loop ([`event_loop`]) owns every task it starts: the LISTEN connection (via
//! [`crate::listen::Listener`]), at most one piece of work at a time (a sync, or a retried
//! activation, see [`worker`]), the status report in flight ([`reports`]) and the timers. A
//! notification that arrives while a sync runs only marks the data dirty, so a burst costs one
//! running and one queued sync. Nothing here is needed for correctness after a crash: files are
//! replaced atomically, and an owed activation is recorded in a marker file before the files
//! change.
//!
//! After every piece of work and on every liveness tick the loop also reports to the database
//! (`ipmanager.agent_report`, see [`crate::db::status`]) which snapshot is live. A slow or
//! failing status write never delays files or activation; its failure only shows in
//! [`Status::status_error`] and in one log line per distinct error.
//!
//! Every piece of work runs in a tracing span, `sync{id=N}` or `activation{id=N}`, so that all
//! log lines of one sync carry its number.

mod backoff;
mod event_loop;
mod reports;
mod schedule;
mod shards;
mod status;
mod worker;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use crate::activate::ActivateError;
use crate::config::{Config, DnsScope};
use crate::db::{DbError, SiteScope};
use crate::listen::Interest;
use crate::render::check::CheckFailure;
use crate::write::FileError;

pub use status::{Phase, Status};

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
    /// A bug: rendering, checking or writing panicked. The agent keeps running and retries.
    #[error("{stage} panicked: {message}")]
    Panicked {
        stage: &'static str,
        message: String,
    },
}

/// How the loop carries on after a failed piece of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// Reading or writing failed: redo the whole sync after a backoff.
    Resync,
    /// The files are in place; only the activation is retried, after a backoff.
    Reactivate,
    /// A new file was rejected: retrying the same snapshot would only reject it again, so it
    /// waits for the next change or the periodic resync.
    AwaitChange,
}

impl Recovery {
    /// The phase the agent is in while recovering.
    pub(crate) fn phase(self) -> Phase {
        match self {
            Recovery::Resync => Phase::SyncFailing,
            Recovery::Reactivate => Phase::ActivationFailing,
            Recovery::AwaitChange => Phase::FilesRejected,
        }
    }
}

impl SyncError {
    pub(crate) fn recovery(&self) -> Recovery {
        match self {
            SyncError::Activate(_) => Recovery::Reactivate,
            SyncError::Invalid { .. } | SyncError::CheckCommand(_) => Recovery::AwaitChange,
            SyncError::Database(_)
            | SyncError::SnapshotTimeout(_)
            | SyncError::File(_)
            | SyncError::Panicked { .. } => Recovery::Resync,
        }
    }
}

/// The sync agent. Create it, take a [`Agent::status`] receiver if you want to watch it, then
/// [`Agent::run`] it until `shutdown` completes.
pub struct Agent {
    config: Config,
    status: status::StatusBoard,
}

/// Runs an agent with `config` until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DbError> {
    Agent::new(config).run(shutdown).await
}

impl Agent {
    pub fn new(config: Config) -> Self {
        Agent {
            config,
            status: status::StatusBoard::new(),
        }
    }

    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// The loop. Returns only on shutdown or when the configuration cannot work at all.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), DbError> {
        event_loop::EventLoop::new(&self.config, self.status)?
            .run(shutdown)
            .await;
        Ok(())
    }
}

/// What the agent with `config` reads and serves: its sites' subnets (every enabled subnet
/// without `[agent] sites`), and with `dns_scope = "all"` every other host's name as well.
pub fn site_scope(config: &Config) -> SiteScope {
    let sites = config.agent.sites.clone().map(|mut sites| {
        sites.sort_unstable();
        sites.dedup();
        sites
    });
    SiteScope {
        names_of_all: sites.is_some() && config.dnsmasq.dns_scope == DnsScope::All,
        sites,
    }
}

/// The notifications that concern the agent with `config`: see [`Interest`].
pub fn interest(config: &Config) -> Interest {
    let scope = site_scope(config);
    match scope.sites {
        None => Interest::Everything,
        Some(sites) => Interest::Sites {
            sites,
            names_of_all: scope.names_of_all,
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_recovery_and_phase() {
        let rejected = SyncError::CheckCommand(ActivateError::BadPid {
            path: "/run/dnsmasq.pid".into(),
            content: String::new(),
        });
        assert_eq!(rejected.recovery(), Recovery::AwaitChange);
        assert_eq!(rejected.recovery().phase(), Phase::FilesRejected);
        let activation = SyncError::Activate(ActivateError::BadPid {
            path: "/run/dnsmasq.pid".into(),
            content: String::new(),
        });
        assert_eq!(activation.recovery(), Recovery::Reactivate);
        assert_eq!(activation.recovery().phase(), Phase::ActivationFailing);
        let timeout = SyncError::SnapshotTimeout(Duration::from_secs(1));
        assert_eq!(timeout.recovery(), Recovery::Resync);
        assert_eq!(timeout.recovery().phase(), Phase::SyncFailing);
    }
}
