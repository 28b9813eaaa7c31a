//! Everything that talks to PostgreSQL for queries: connection settings, the pool, schema
//! migrations, the consistent snapshot and the agent's status reports. The LISTEN connection lives in [`crate::listen`].

mod migrate;
mod snapshot;
pub mod status;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::task::JoinHandle;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::connection::{self, ConnectionError, LibpqEnv, Settings, SslMode};

pub use migrate::{migrate, MigrationReport};
pub use snapshot::{take_snapshot, take_snapshot_at, SiteScope, SnapshotAt};

/// The channel on which the schema's statement-level triggers notify every change.
pub const CHANGES_CHANNEL: &str = "ipmanager_changes";
/// The channel on which the same statements notify the sites they touched (V4).
pub const SITE_CHANGES_CHANNEL: &str = "ipmanager_site_changes";
/// The channel on which `ipmanager.request_compaction()` asks every agent for a compaction now
/// (V5); the payload is empty.
pub const COMPACT_CHANNEL: &str = "ipmanager_compact";

/// Errors of the database layer that callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A connection setting that cannot work: the string, a variable, a TLS file.
    #[error(transparent)]
    Settings(#[from] ConnectionError),
    #[error("cannot get a database connection")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error("schema migration failed")]
    Migration(#[from] refinery::Error),
    #[error("database query timed out after {0:?}")]
    Timeout(Duration),
    #[error(
        "the server runs PostgreSQL {version}; ipmanager needs PostgreSQL {MIN_SERVER_MAJOR} or newer"
    )]
    UnsupportedServer { version: String },
}

/// The oldest PostgreSQL major version the schema and queries are written for.
pub const MIN_SERVER_MAJOR: i32 = 13;

/// Refuses a server older than [`MIN_SERVER_MAJOR`]: `version_num` is its `server_version_num`
/// (150004 for 15.4), `version` its `server_version`, repeated in the message.
pub fn check_server_version(version_num: i32, version: &str) -> Result<(), DbError> {
    if version_num / 10_000 >= MIN_SERVER_MAJOR {
        Ok(())
    } else {
        Err(DbError::UnsupportedServer {
            version: version.to_owned(),
        })
    }
}

/// How long a silent peer may stay silent before the kernel gives up on the connection.
/// Keepalive idle + interval × retries plus the user timeout keep detection near 30 s.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(25);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads `database_url` (URL or key=value form, several hosts and `target_session_attrs`
/// allowed) with the libpq environment `env`, looks the password up in the password file when
/// none is given, reads the TLS files, and adds the settings every ipmanager connection needs:
/// TCP keepalives so that a silently dead server is noticed, a connect timeout, and an
/// `application_name` so that admins can tell ipmanager's sessions apart in `pg_stat_activity`.
pub fn connector(
    database_url: &str,
    env: &LibpqEnv,
    application_name: &str,
) -> Result<Connector, DbError> {
    let mut settings = Settings::parse(database_url, env)?;
    settings.apply_passfile();
    let tls = MakeRustlsConnect::new(connection::tls::client_config(&settings.tls)?);
    let config = &mut settings.pg;
    if config.get_application_name().is_none() {
        config.application_name(application_name);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    config
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_RETRIES)
        .tcp_user_timeout(TCP_USER_TIMEOUT);
    Ok(Connector {
        target: settings.target(),
        mode: settings.tls.mode,
        pg: settings.pg,
        tls,
    })
}

/// The one way ipmanager connects (pool, single connections, LISTEN): the settings and the TLS
/// connector built from them.
#[derive(Clone)]
pub struct Connector {
    pg: tokio_postgres::Config,
    mode: SslMode,
    tls: MakeRustlsConnect,
    target: String,
}

/// A connection as [`Connector::connect_raw`] returns it, to be driven by the caller.
pub type PgConnection =
    tokio_postgres::Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

impl Connector {
    /// Where the connections go, for messages and logs: never the password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The settings, for additions such as `options`.
    pub fn config_mut(&mut self) -> &mut tokio_postgres::Config {
        &mut self.pg
    }

    /// Opens a connection; the caller drives it. `sslmode=allow` tries without TLS first and
    /// with TLS when the server refuses, as libpq does.
    pub async fn connect_raw(&self) -> Result<(Client, PgConnection), tokio_postgres::Error> {
        match self.pg.connect(self.tls.clone()).await {
            Err(error) if self.mode == SslMode::Allow && error.code().is_some() => {
                let mut with_tls = self.pg.clone();
                with_tls.ssl_mode(tokio_postgres::config::SslMode::Require);
                with_tls.connect(self.tls.clone()).await
            }
            result => result,
        }
    }

    /// Opens a connection driven by a background task that ends with the client.
    async fn connect_driven(&self) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
        let (client, connection) = self.connect_raw().await?;
        let task = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "database connection closed");
            }
        });
        Ok((client, task))
    }
}

type ConnectFuture<'a> = Pin<
    Box<dyn Future<Output = Result<(Client, JoinHandle<()>), tokio_postgres::Error>> + Send + 'a>,
>;

impl deadpool_postgres::Connect for Connector {
    fn connect(&self, _pg_config: &tokio_postgres::Config) -> ConnectFuture<'_> {
        Box::pin(self.connect_driven())
    }
}

/// A small pool for snapshot queries and status reports; the agent needs at most one
/// connection for each at a time.
pub fn pool(connector: Connector) -> Pool {
    let manager = Manager::from_connect(
        connector.pg.clone(),
        connector,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(2)
        .build()
        .expect("a pool without a runtime-specific timeout always builds")
}

/// Opens a single connection and drives it on a background task that ends with the client.
/// A server older than [`MIN_SERVER_MAJOR`] is refused.
pub async fn connect(connector: &Connector) -> Result<Client, DbError> {
    let (client, _task) = connector.connect_driven().await?;
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int AS version_num, \
                    current_setting('server_version') AS version",
            &[],
        )
        .await?;
    check_server_version(row.try_get("version_num")?, row.try_get("version")?)?;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_older_than_13_are_refused_naming_their_version() {
        for (num, version) in [
            (130000, "13.0"),
            (150004, "15.4"),
            (170002, "17.2 (Debian)"),
        ] {
            assert!(check_server_version(num, version).is_ok(), "{version}");
        }
        for (num, version) in [(120017, "12.17 (Debian 12.17-1)"), (90624, "9.6.24")] {
            let error = check_server_version(num, version).unwrap_err().to_string();
            assert!(error.contains(version), "{error}");
            assert!(error.contains("PostgreSQL 13 or newer"), "{error}");
        }
    }
}
