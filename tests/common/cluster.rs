//! Private PostgreSQL clusters for tests that stop, restart, kill and promote servers: each one
//! lives in a temporary directory of its own, listens on 127.0.0.1 on a free port (and on a Unix
//! socket in its own directory, never the system's), and is stopped (`-m immediate`) and deleted
//! when its [`Cluster`] is dropped, also when the test panics.
//!
//! `initdb` refuses to run as root, so as root every server program runs as the `postgres` user
//! through `runuser`, as `scripts/private-postgres.sh` does. Without the server binaries (under
//! `/usr/lib/postgresql/*/bin`) or, as root, without the `postgres` user, [`PgTools::find`]
//! says why, and [`PgTools::find_or_skip`] turns that into a loud skip, or a failure under
//! `IPMANAGER_REQUIRE_E2E=1`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tokio_postgres::Client;

use super::netns::unavailable;
use super::{connect, free_port};

/// How long a server may take to start, stop or be promoted.
const SERVER_DEADLINE: Duration = Duration::from_secs(60);
/// How often a start is retried on a new port when another process took the chosen one.
const PORT_ATTEMPTS: usize = 5;

/// The PostgreSQL server programs and the user they run as.
#[derive(Debug, Clone)]
pub struct PgTools {
    /// The newest `/usr/lib/postgresql/<version>/bin`.
    bin: PathBuf,
    /// `Some("postgres")` when we are root: the programs then run through `runuser`.
    run_as: Option<String>,
}

impl PgTools {
    pub fn find() -> Result<PgTools, String> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|e| format!("no PostgreSQL server binaries (/usr/lib/postgresql: {e}); install the postgresql package"))?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let version: u32 = entry.file_name().to_str()?.parse().ok()?;
                let bin = entry.path().join("bin");
                bin.join("initdb").exists().then_some((version, bin))
            })
            .max()
            .map(|(_, bin)| bin)
            .ok_or("no initdb under /usr/lib/postgresql/*/bin; install the postgresql package")?;
        let run_as = if nix::unistd::geteuid().is_root() {
            match nix::unistd::User::from_name("postgres") {
                Ok(Some(_)) => Some("postgres".to_owned()),
                _ => return Err("running as root, and there is no `postgres` user for initdb (the postgresql package creates it)".into()),
            }
        } else {
            None
        };
        Ok(PgTools { bin, run_as })
    }

    /// The tools, or `None` after a loud `SKIPPED:` line (a panic with `IPMANAGER_REQUIRE_E2E=1`).
    pub fn find_or_skip() -> Option<PgTools> {
        match Self::find() {
            Ok(tools) => Some(tools),
            Err(reason) => {
                unavailable(&reason);
                None
            }
        }
    }

    /// `program` from the server's bin directory, run as the cluster user, in `dir`.
    fn command(&self, program: &str, dir: &Path) -> Command {
        let path = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(path);
                command
            }
            None => Command::new(path),
        };
        command.current_dir(dir).stdin(Stdio::null());
        command
    }

    /// Makes `dir` the cluster user's, so that the server can create its files there.
    fn hand_over(&self, dir: &Path) {
        if let Some(user) = &self.run_as {
            let user = nix::unistd::User::from_name(user)
                .unwrap()
                .expect("the cluster user exists");
            nix::unistd::chown(dir, Some(user.uid), Some(user.gid)).unwrap();
        }
    }
}

/// How `pg_ctl stop` or `restart` ends the running sessions.
#[derive(Debug, Clone, Copy)]
pub enum StopMode {
    /// Terminates sessions, writes a checkpoint.
    Fast,
    /// Kills every process at once, as a crash would: the next start runs crash recovery.
    Immediate,
}

impl StopMode {
    fn as_str(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// One running (or stopped) private PostgreSQL cluster.
pub struct Cluster {
    tools: PgTools,
    /// Deleted on drop, after the server has been stopped.
    dir: tempfile::TempDir,
    pub port: u16,
    pub name: &'static str,
}

impl Cluster {
    /// A new cluster (`initdb`, superuser `postgres`, trust authentication for local TCP and
    /// replication connections), started.
    pub fn primary(tools: &PgTools, name: &'static str) -> Cluster {
        Self::primary_with(tools, name, &[], &[])
    }

    /// Like [`Cluster::primary`], with `settings` added to postgresql.conf and `files` (name,
    /// content) written into the data directory before the first start, owned by the server's
    /// user with mode 0600 (a `pg_hba.conf` among them replaces the generated one).
    pub fn primary_with(
        tools: &PgTools,
        name: &'static str,
        settings: &[&str],
        files: &[(&str, &str)],
    ) -> Cluster {
        let mut cluster = Self::new_dir(tools, name);
        cluster
            .pg(
                "initdb",
                &["-D", "data", "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        cluster.configure(&[
            // Enough WAL kept that a standby that fell behind during a restart catches up
            // by streaming, without an archive.
            "wal_keep_size = '256MB'",
            "max_connections = 60",
            "shared_buffers = '32MB'",
        ]);
        cluster.configure(settings);
        for (file, content) in files {
            let path = cluster.data().join(file);
            std::fs::write(&path, content).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            cluster.tools.hand_over(&path);
        }
        cluster.start_on_free_port();
        cluster
    }

    /// A streaming-replication standby of `primary`, cloned with `pg_basebackup -R` (which
    /// writes `primary_conninfo` and `standby.signal`), started.
    pub fn standby_of(primary: &Cluster, name: &'static str) -> Cluster {
        let mut cluster = Self::new_dir(&primary.tools, name);
        let port = primary.port.to_string();
        cluster
            .pg(
                "pg_basebackup",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    "postgres",
                    "-D",
                    "data",
                    "-R",
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                ],
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // The copied configuration names the primary's socket directory; this one wins.
        cluster.configure(&[]);
        cluster.start_on_free_port();
        cluster
    }

    fn new_dir(tools: &PgTools, name: &'static str) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ipm-pg-{name}-"))
            .tempdir()
            .unwrap();
        tools.hand_over(dir.path());
        Cluster {
            tools: tools.clone(),
            dir,
            port: 0,
            name,
        }
    }

    /// Runs a server program with `args` in the cluster's directory, to completion.
    fn pg(&self, program: &str, args: &[&str]) -> Result<Output, String> {
        let mut command = self.tools.command(program, self.dir.path());
        command.args(args);
        let output = command.output();
        checked(&command, output)
    }

    /// `pg_ctl -D data -w ARGS`: waits up to the deadline for what it does.
    fn pg_ctl_command(&self, args: &[&str]) -> Command {
        let mut command = self.tools.command("pg_ctl", self.dir.path());
        command
            .args(["-D", "data", "-w", "-t"])
            .arg(SERVER_DEADLINE.as_secs().to_string())
            .args(args);
        command
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn configure(&self, settings: &[&str]) {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data().join("postgresql.conf"))
            .unwrap();
        let socket_dir = format!("unix_socket_directories = '{}'", self.dir.path().display());
        for line in [
            "listen_addresses = '127.0.0.1'",
            "fsync = off",
            socket_dir.as_str(),
        ]
        .iter()
        .chain(settings)
        {
            writeln!(file, "{line}").unwrap();
        }
    }

    /// Starts the server on a free port. The port is chosen by binding port 0 and closing it
    /// again, so another process may take it in between: then the start is retried on another.
    fn start_on_free_port(&mut self) {
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port();
            let options = format!("-p {}", self.port);
            match self.pg_ctl(&["-o", &options, "-l", "server.log", "start"]) {
                Ok(()) => return,
                Err(error) => last_error = error,
            }
            if !self.log().contains("could not bind") {
                break;
            }
        }
        panic!(
            "{}: the server did not start: {last_error}\nserver.log:\n{}",
            self.name,
            self.log()
        );
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let mut command = self.pg_ctl_command(args);
        let output = command.output();
        checked(&command, output).map(drop)
    }

    /// The server log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `pg_ctl start` on the port the server had.
    pub async fn start(&self) {
        let options = format!("-p {}", self.port);
        self.pg_ctl_async(&["-o", &options, "-l", "server.log", "start"])
            .await;
    }

    /// `pg_ctl stop -m MODE`.
    pub async fn stop(&self, mode: StopMode) {
        self.pg_ctl_async(&["-m", mode.as_str(), "stop"]).await;
    }

    /// `pg_ctl restart -m MODE`: the same port and options, as an admin would.
    pub async fn restart(&self, mode: StopMode) {
        self.pg_ctl_async(&["-m", mode.as_str(), "-l", "server.log", "restart"])
            .await;
    }

    /// `pg_ctl promote`, which waits until the standby accepts writes.
    pub async fn promote(&self) {
        self.pg_ctl_async(&["promote"]).await;
    }

    /// Runs `pg_ctl` without blocking the runtime, so that other tasks (writers, the agent's
    /// log reader) keep going while a server stops or starts.
    async fn pg_ctl_async(&self, args: &[&str]) {
        let command = self.pg_ctl_command(args);
        let output = tokio::process::Command::from(self.pg_ctl_command(args))
            .output()
            .await;
        if let Err(error) = checked(&command, output) {
            panic!("{}: {error}\nserver.log:\n{}", self.name, self.log());
        }
    }

    /// URL of database `dbname` on this server alone.
    pub fn url(&self, dbname: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{dbname}", self.port)
    }

    /// Database `dbname` through the cluster's Unix socket, in key=value form.
    pub fn socket_url(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={dbname}",
            self.dir.path().display(),
            self.port
        )
    }

    pub async fn client(&self, dbname: &str) -> Client {
        connect(&self.url(dbname)).await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Stopped before the directory goes; an already stopped server makes this fail, which
        // is fine.
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
    }
}

/// A finished command's output, or what it printed when it failed.
fn checked(command: &Command, output: std::io::Result<Output>) -> Result<Output, String> {
    let output = output.map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!(
            "{command:?} failed with {}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        ))
    }
}
