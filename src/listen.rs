//! The dedicated LISTEN connection: turns the schema's `pg_notify` calls into wake-ups for the
//! agent, and notices when the server is gone (closed socket, or a failed liveness probe).
//!
//! Notifications are coalesced into a counter on a `watch` channel: the agent only needs to
//! know that something changed since its last snapshot, never how often, so a burst of 100,000
//! notifications costs no memory. The channel closing means the connection is lost.
//!
//! An agent that serves some sites listens on `ipmanager_site_changes` instead, whose payload
//! names the sites a statement touched (see [`Interest`]), and counts only the notifications
//! that concern it: a change in another site costs it nothing, not even a snapshot.
//!
//! Every agent also listens on `ipmanager_compact` (`ipmanager.request_compaction()`), counted
//! apart from the changes: a request is not a change, and a change is not a request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::poll_fn;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client};

use crate::db::{Connector, DbError, CHANGES_CHANNEL, COMPACT_CHANNEL, SITE_CHANGES_CHANNEL};

/// Why a LISTEN connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("the LISTEN connection failed")]
    Connection(#[source] tokio_postgres::Error),
    #[error("the LISTEN connection was closed by the server")]
    Closed,
    #[error("the database did not answer a liveness probe within {0:?}")]
    Unresponsive(Duration),
    #[error("the liveness probe failed")]
    Probe(#[source] tokio_postgres::Error),
}

/// Which notifications wake the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Interest {
    /// Every change, on `ipmanager_changes`.
    #[default]
    Everything,
    /// Changes that touch one of `sites`, on `ipmanager_site_changes`; with `names_of_all`
    /// also every host or subnet change (its addn-hosts file holds every name).
    Sites {
        sites: Vec<String>,
        names_of_all: bool,
    },
}

impl Interest {
    fn channel(&self) -> &'static str {
        match self {
            Interest::Everything => CHANGES_CHANNEL,
            Interest::Sites { .. } => SITE_CHANGES_CHANNEL,
        }
    }

    /// Whether a notification with `payload` on [`Interest::channel`] concerns the agent. The
    /// payload is `table:site site …` (`-` for subnets without site; nothing after the colon
    /// when no row changed), or the bare table name when the sites are not known (TRUNCATE, or
    /// too many to name), which concerns everyone. The rule is `ipmanager.agent_concerned`'s.
    pub fn wants(&self, payload: &str) -> bool {
        let Interest::Sites {
            sites,
            names_of_all,
        } = self
        else {
            return true;
        };
        let Some((table, touched)) = payload.split_once(':') else {
            return true;
        };
        (*names_of_all && matches!(table, "hosts" | "subnets"))
            || touched
                .split(' ')
                .any(|site| sites.iter().any(|s| s == site))
    }
}

/// What woke the agent: see [`Listener::next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The data may have changed.
    Changed,
    /// An admin asked for a compaction.
    CompactionRequested,
}

/// An established LISTEN connection. Dropping it closes the connection.
pub struct Listener {
    changes: watch::Receiver<u64>,
    compactions: watch::Receiver<u64>,
    task: JoinHandle<ListenError>,
}

/// The counters the connection's task feeds.
struct Counters {
    changes: watch::Sender<u64>,
    compactions: watch::Sender<u64>,
}

impl Listener {
    /// Connects and returns only once `LISTEN` is active, so that any change committed after
    /// this returns is guaranteed to wake the agent.
    pub async fn start(
        connector: &Connector,
        liveness_interval: Duration,
        interest: Interest,
    ) -> Result<Listener, DbError> {
        let (client, connection) = connector.connect_raw().await?;
        let client = Arc::new(client);
        let (changes_sender, changes) = watch::channel(0u64);
        let (compactions_sender, compactions) = watch::channel(0u64);
        let channel = interest.channel();
        let counters = Counters {
            changes: changes_sender,
            compactions: compactions_sender,
        };
        let task = tokio::spawn(drive(
            connection,
            Arc::clone(&client),
            counters,
            liveness_interval,
            interest,
        ));
        let mut listener = Listener {
            changes,
            compactions,
            task,
        };
        let listen = format!("LISTEN {channel}; LISTEN {COMPACT_CHANNEL}");
        if let Err(error) = client.batch_execute(&listen).await {
            listener.task.abort();
            return Err(error.into());
        }
        listener.changes.mark_unchanged();
        listener.compactions.mark_unchanged();
        Ok(listener)
    }

    /// Waits for the next change notification or compaction request (each coalesced with any
    /// others of its kind since the last call). Returns the reason once the connection is lost.
    /// Cancel-safe: a notification not returned stays marked for the next call.
    pub async fn next(&mut self) -> Result<Wake, ListenError> {
        let open = tokio::select! {
            changed = self.changes.changed() => changed.map(|()| Wake::Changed),
            requested = self.compactions.changed() => requested.map(|()| Wake::CompactionRequested),
        };
        if let Ok(wake) = open {
            return Ok(wake);
        }
        match (&mut self.task).await {
            Ok(reason) => Err(reason),
            Err(_) => Err(ListenError::Closed),
        }
    }

    /// How many notifications arrived on this connection.
    pub fn notifications(&self) -> u64 {
        *self.changes.borrow()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Probe = Pin<Box<dyn Future<Output = Result<(), ListenError>> + Send>>;

/// Polls the connection for notifications and probes the server every `liveness_interval`;
/// returns why it stopped. The probe is needed because a server that vanished without closing
/// the socket is otherwise only noticed when the kernel's keepalives give up.
async fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    client: Arc<Client>,
    counters: Counters,
    liveness_interval: Duration,
    interest: Interest,
) -> ListenError
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut ticks = tokio::time::interval(liveness_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut probe: Option<Probe> = None;
    loop {
        tokio::select! {
            message = poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(AsyncMessage::Notification(n)))
                    if n.channel() == interest.channel() && interest.wants(n.payload()) =>
                {
                    counters.changes.send_modify(|count| *count += 1);
                }
                Some(Ok(AsyncMessage::Notification(n))) if n.channel() == COMPACT_CHANNEL => {
                    counters.compactions.send_modify(|count| *count += 1);
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return ListenError::Connection(error),
                None => return ListenError::Closed,
            },
            _ = ticks.tick(), if probe.is_none() => {
                let client = Arc::clone(&client);
                probe = Some(Box::pin(async move {
                    match tokio::time::timeout(liveness_interval, client.simple_query("")).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(error)) => Err(ListenError::Probe(error)),
                        Err(_) => Err(ListenError::Unresponsive(liveness_interval)),
                    }
                }));
            }
            result = async { probe.as_mut().expect("guarded by is_some").await }, if probe.is_some() => {
                probe = None;
                if let Err(error) = result {
                    return error;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_agent_wants_its_sites_and_what_it_cannot_rule_out() {
        let berlin = Interest::Sites {
            sites: vec!["berlin".into(), "potsdam".into()],
            names_of_all: false,
        };
        assert!(berlin.wants("hosts:berlin"));
        assert!(berlin.wants("subnets:paris potsdam"));
        assert!(berlin.wants("sites:berlin"));
        assert!(!berlin.wants("hosts:paris"));
        assert!(!berlin.wants("hosts:-"));
        assert!(!berlin.wants("hosts:"));
        assert!(!berlin.wants("hosts:berlin2"));
        // Unknown sites: a TRUNCATE, or too many to name.
        assert!(berlin.wants("hosts"));
        assert!(berlin.wants("subnets"));

        let names = Interest::Sites {
            sites: vec!["berlin".into()],
            names_of_all: true,
        };
        assert!(names.wants("hosts:paris"));
        assert!(names.wants("subnets:-"));
        assert!(!names.wants("sites:paris"));
        assert!(Interest::Everything.wants("hosts:paris"));
        assert_eq!(Interest::Everything.channel(), CHANGES_CHANNEL);
        assert_eq!(berlin.channel(), SITE_CHANGES_CHANNEL);
    }
}
