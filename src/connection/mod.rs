//! libpq's connection settings, read once for the agent and every command: the connection
//! string (URL or key=value form) with the parameters tokio-postgres does not know (`sslmode`
//! beyond disable/prefer/require, `sslrootcert`, `sslcert`, `sslkey`, `passfile`), then the
//! `PG*` environment variables for whatever the string leaves out, then libpq's defaults.

pub mod passfile;
pub mod tls;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use percent_encoding::percent_decode_str;
use tokio_postgres::config::{Host, SslMode as PgSslMode};

use crate::config::{connection_target, describe_parse_error};

/// Where libpq looks for the server's socket when no host is given (Debian's default).
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";
const DEFAULT_PORT: u16 = 5432;

/// A connection setting that cannot work: exit code 78 (EX_CONFIG).
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("database_url is not a valid connection string: {0}")]
    Parse(String),
    #[error("sslmode {0:?} is not one of disable, allow, prefer, require, verify-ca, verify-full")]
    UnknownSslMode(String),
    #[error("{0} {1:?} is not a number of seconds")]
    NotANumber(&'static str, String),
    #[error(
        "sslmode={0} needs the certificate authority that signed the server's certificate: \
         give sslrootcert=FILE, or sslrootcert=system for the system's trusted CAs ({1} does not exist)"
    )]
    NoRootCert(SslMode, String),
    #[error(
        "sslmode={0} may not be used with sslrootcert=system (the system's CAs sign certificates \
         for anyone's names): use sslmode=verify-full"
    )]
    WeakModeWithSystemRoots(SslMode),
    #[error("cannot set up TLS: {0}")]
    TlsSetup(String),
    #[error("no home directory to find {0} in: set HOME or give the file's path")]
    NoHome(&'static str),
    #[error("{kind} {path}: {reason}")]
    File {
        kind: &'static str,
        path: PathBuf,
        reason: String,
    },
}

/// libpq's `sslmode`, all six of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Result<SslMode, ConnectionError> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(ConnectionError::UnknownSslMode(other.to_owned())),
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// The server's certificate must be checked even without a root certificate file.
    fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whom the server's certificate must be signed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    File(PathBuf),
    /// `sslrootcert=system`: the system's trust store.
    System,
}

/// What TLS the connection uses, with the files resolved as libpq resolves them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    /// `None`: the server's certificate is not checked (allowed below verify-ca).
    pub root_cert: Option<RootCert>,
    /// Client certificate and its key; `None` when neither is named nor in ~/.postgresql.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// The `PG*` environment variables and `HOME`, taken from the environment the configuration is
/// loaded from. `Debug` shows the names only: PGPASSWORD is a secret.
#[derive(Clone, Default)]
pub struct LibpqEnv(HashMap<String, String>);

/// The variables that name a server or a database: with any of them set, `database_url` may
/// be left out.
const TARGET_VARS: &[&str] = &["PGHOST", "PGPORT", "PGDATABASE", "PGUSER"];

impl LibpqEnv {
    pub fn from_vars<'a>(vars: impl IntoIterator<Item = (&'a String, &'a String)>) -> Self {
        LibpqEnv(
            vars.into_iter()
                .filter(|(key, _)| key.starts_with("PG") || *key == "HOME")
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }

    /// Whether the environment says where to connect, so that `database_url` may be empty.
    pub fn names_a_target(&self) -> bool {
        TARGET_VARS.iter().any(|name| self.get(name).is_some())
    }

    /// The home directory: `HOME`, else the user's entry in the password database.
    fn home(&self) -> Option<PathBuf> {
        self.get("HOME").map(PathBuf::from).or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|user| user.dir)
        })
    }
}

impl fmt::Debug for LibpqEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.0.keys().collect();
        names.sort();
        f.debug_tuple("LibpqEnv").field(&names).finish()
    }
}

/// Everything needed to connect: tokio-postgres's settings, the TLS settings and the password
/// file to look the password up in.
#[derive(Debug, Clone)]
pub struct Settings {
    pub pg: tokio_postgres::Config,
    pub tls: TlsSettings,
    /// The password file, when no password is given otherwise.
    pub passfile: Option<PathBuf>,
}

/// The parameters read here rather than by tokio-postgres.
const OWN_PARAMETERS: &[&str] = &["sslmode", "sslrootcert", "sslcert", "sslkey", "passfile"];

impl Settings {
    /// Reads `url`, then fills what it leaves out from `env`, then from libpq's defaults.
    /// Precedence, highest first: the connection string, the `PG*` variables, the defaults.
    pub fn parse(url: &str, env: &LibpqEnv) -> Result<Settings, ConnectionError> {
        let (rest, own) = split_own_parameters(url);
        let mut pg: tokio_postgres::Config = if rest.trim().is_empty() {
            tokio_postgres::Config::new()
        } else {
            rest.parse()
                .map_err(|error| ConnectionError::Parse(describe_parse_error(&error)))?
        };
        fill_from_env(&mut pg, env)?;
        let param = |key: &str, var: &str| {
            own.get(key)
                .map(String::as_str)
                .filter(|value| !value.is_empty())
                .or_else(|| env.get(var))
        };
        let tls = tls_settings(
            param("sslmode", "PGSSLMODE"),
            param("sslrootcert", "PGSSLROOTCERT"),
            param("sslcert", "PGSSLCERT"),
            param("sslkey", "PGSSLKEY"),
            env,
        )?;
        // libpq never uses TLS over a Unix socket, whatever sslmode says.
        let only_sockets = pg.get_hosts().iter().all(|h| matches!(h, Host::Unix(_)));
        pg.ssl_mode(match tls.mode {
            _ if only_sockets => PgSslMode::Disable,
            SslMode::Disable | SslMode::Allow => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        });
        let passfile = match param("passfile", "PGPASSFILE") {
            Some(path) => Some(PathBuf::from(path)),
            None => env.home().map(|home| home.join(".pgpass")),
        };
        Ok(Settings { pg, tls, passfile })
    }

    /// Sets the password from the password file when none was given and the file has a line
    /// for the first host. A file readable by others is skipped with a warning, as libpq does.
    pub fn apply_passfile(&mut self) {
        if self.pg.get_password().is_some() {
            return;
        }
        let Some(path) = &self.passfile else { return };
        let user = self.pg.get_user().unwrap_or_default().to_owned();
        let wanted = passfile::Wanted {
            host: passfile_host(&self.pg),
            port: self
                .pg
                .get_ports()
                .first()
                .copied()
                .unwrap_or(DEFAULT_PORT)
                .to_string(),
            dbname: self.pg.get_dbname().unwrap_or(&user).to_owned(),
            user: user.clone(),
        };
        if let Some(password) = passfile::lookup(path, &wanted) {
            self.pg.password(password);
        }
    }

    /// Where the connection goes and how, in libpq's key=value form; never the password.
    pub fn target(&self) -> String {
        let mut shown = connection_target(&self.pg);
        shown.push_str(&format!(" sslmode={}", self.tls.mode));
        match &self.tls.root_cert {
            Some(RootCert::System) => shown.push_str(" sslrootcert=system"),
            Some(RootCert::File(path)) => {
                shown.push_str(&format!(" sslrootcert={}", path.display()))
            }
            None => {}
        }
        if let Some((cert, key)) = &self.tls.client {
            shown.push_str(&format!(
                " sslcert={} sslkey={}",
                cert.display(),
                key.display()
            ));
        }
        shown
    }
}

/// Takes [`OWN_PARAMETERS`] out of a URL's query or a key=value string and returns the rest
/// for tokio-postgres. A string that does not split cleanly is handed on whole, so that
/// tokio-postgres's parser reports what is wrong with it.
fn split_own_parameters(url: &str) -> (String, HashMap<String, String>) {
    let mut own = HashMap::new();
    let trimmed = url.trim();
    if trimmed.starts_with("postgresql://") || trimmed.starts_with("postgres://") {
        let Some((base, query)) = trimmed.split_once('?') else {
            return (trimmed.to_owned(), own);
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match OWN_PARAMETERS.contains(&key) {
                true => {
                    let value = percent_decode_str(value).decode_utf8_lossy().into_owned();
                    own.insert(key.to_owned(), value);
                }
                false => kept.push(pair),
            }
        }
        let rest = match kept.is_empty() {
            true => base.to_owned(),
            false => format!("{base}?{}", kept.join("&")),
        };
        return (rest, own);
    }
    let Some(pairs) = key_value_pairs(trimmed) else {
        return (trimmed.to_owned(), own);
    };
    let mut kept = Vec::new();
    for (key, value) in pairs {
        match OWN_PARAMETERS.contains(&key.as_str()) {
            true => {
                own.insert(key, value);
            }
            false => kept.push(format!("{key}={}", crate::config::quote_value(&value))),
        }
    }
    (kept.join(" "), own)
}

/// libpq's key=value form: `key = value` pairs separated by blanks; a value in single quotes
/// may hold blanks; a backslash escapes the next character. `None` when it does not split.
fn key_value_pairs(text: &str) -> Option<Vec<(String, String)>> {
    let mut chars = text.chars().peekable();
    let mut pairs = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Some(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        chars.next_if_eq(&'=')?;
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next()? {
                    '\'' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                match c {
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        }
        pairs.push((key, value));
    }
}

/// Fills host, port, user, database, password, application name and connect timeout from the
/// `PG*` variables where the string left them out, then host and user from libpq's defaults.
fn fill_from_env(pg: &mut tokio_postgres::Config, env: &LibpqEnv) -> Result<(), ConnectionError> {
    if pg.get_hosts().is_empty() {
        let hosts = env.get("PGHOST").unwrap_or(DEFAULT_SOCKET_DIR);
        for host in hosts.split(',') {
            pg.host(host);
        }
    }
    if pg.get_ports().is_empty() {
        if let Some(ports) = env.get("PGPORT") {
            for port in ports.split(',') {
                let port = port
                    .trim()
                    .parse()
                    .map_err(|_| ConnectionError::NotANumber("PGPORT", port.to_owned()))?;
                pg.port(port);
            }
        }
    }
    if pg.get_user().is_none() {
        match env.get("PGUSER") {
            Some(user) => {
                pg.user(user);
            }
            None => {
                if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::geteuid()) {
                    pg.user(&user.name);
                }
            }
        }
    }
    if let (None, Some(dbname)) = (pg.get_dbname(), env.get("PGDATABASE")) {
        pg.dbname(dbname);
    }
    if let (None, Some(password)) = (pg.get_password(), env.get("PGPASSWORD")) {
        pg.password(password);
    }
    if let (None, Some(name)) = (pg.get_application_name(), env.get("PGAPPNAME")) {
        pg.application_name(name);
    }
    if let (None, Some(timeout)) = (pg.get_connect_timeout(), env.get("PGCONNECT_TIMEOUT")) {
        let seconds: u64 = timeout
            .trim()
            .parse()
            .map_err(|_| ConnectionError::NotANumber("PGCONNECT_TIMEOUT", timeout.to_owned()))?;
        // libpq treats anything below 2 seconds as 2 (0 means wait forever).
        if seconds > 0 {
            pg.connect_timeout(Duration::from_secs(seconds.max(2)));
        }
    }
    Ok(())
}

/// libpq's rules for the TLS files: a named file is used; otherwise ~/.postgresql/root.crt,
/// postgresql.crt and postgresql.key when they exist. A root certificate makes every mode
/// that uses TLS check the chain (libpq's compatibility rule); `system` asks for verify-full.
fn tls_settings(
    mode: Option<&str>,
    root_cert: Option<&str>,
    cert: Option<&str>,
    key: Option<&str>,
    env: &LibpqEnv,
) -> Result<TlsSettings, ConnectionError> {
    let system = root_cert == Some("system");
    let mode = match (mode, system) {
        (Some(mode), _) => SslMode::parse(mode)?,
        (None, true) => SslMode::VerifyFull,
        (None, false) => SslMode::Prefer,
    };
    if system && mode != SslMode::VerifyFull {
        return Err(ConnectionError::WeakModeWithSystemRoots(mode));
    }
    let home_file = |name: &str| env.home().map(|home| home.join(".postgresql").join(name));
    let root_cert = match root_cert {
        Some("system") => Some(RootCert::System),
        Some(path) => Some(RootCert::File(path.into())),
        None => match home_file("root.crt") {
            Some(path) if path.exists() => Some(RootCert::File(path)),
            default => {
                if mode.verifies() {
                    let looked = default.map_or("~/.postgresql/root.crt".to_owned(), |p| {
                        p.display().to_string()
                    });
                    return Err(ConnectionError::NoRootCert(mode, looked));
                }
                None
            }
        },
    };
    let cert = match cert {
        Some(path) => Some(PathBuf::from(path)),
        None => home_file("postgresql.crt").filter(|path| path.exists()),
    };
    let client = match cert {
        Some(cert) => {
            let key = match key {
                Some(path) => PathBuf::from(path),
                None => home_file("postgresql.key").ok_or(ConnectionError::NoHome("sslkey"))?,
            };
            Some((cert, key))
        }
        None => None,
    };
    Ok(TlsSettings {
        mode,
        root_cert,
        client,
    })
}

/// The first host as libpq names it in the password file: the default socket directory is
/// `localhost`, any other host as written.
fn passfile_host(pg: &tokio_postgres::Config) -> String {
    match pg.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        Some(Host::Unix(path)) if path == Path::new(DEFAULT_SOCKET_DIR) => "localhost".to_owned(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> LibpqEnv {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LibpqEnv::from_vars(vars.iter().map(|(k, v)| (k, v)))
    }

    #[test]
    fn own_parameters_are_taken_from_both_forms_and_the_rest_goes_to_tokio_postgres() {
        let (rest, own) = split_own_parameters(
            "postgresql://agent@db/ipm?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.crt&application_name=x",
        );
        assert_eq!(rest, "postgresql://agent@db/ipm?application_name=x");
        assert_eq!(own["sslmode"], "verify-full");
        assert_eq!(own["sslrootcert"], "/etc/ca.crt");
        let (rest, own) = split_own_parameters(
            r"host=db sslmode = verify-ca user=agent sslkey='/etc/my key' password='a b\'c'",
        );
        assert_eq!(rest, r"host=db user=agent password='a b\'c'");
        assert_eq!(own["sslmode"], "verify-ca");
        assert_eq!(own["sslkey"], "/etc/my key");
        let parsed: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(parsed.get_password(), Some(&b"a b'c"[..]));
    }

    #[test]
    fn the_string_wins_over_the_environment_which_wins_over_defaults() {
        let vars = env(&[
            ("PGHOST", "envhost"),
            ("PGPORT", "5433"),
            ("PGUSER", "envuser"),
            ("PGDATABASE", "envdb"),
            ("PGPASSWORD", "envsecret"),
            ("PGSSLMODE", "require"),
            ("PGAPPNAME", "envapp"),
            ("PGCONNECT_TIMEOUT", "7"),
            ("HOME", "/nonexistent"),
        ]);
        let s = Settings::parse("", &vars).unwrap();
        assert_eq!(
            s.target(),
            "host=envhost port=5433 user=envuser password=******** dbname=envdb \
             application_name=envapp connect_timeout=7 sslmode=require"
        );
        let s = Settings::parse("host=db dbname=ipm sslmode=disable", &vars).unwrap();
        assert_eq!(s.tls.mode, SslMode::Disable);
        assert_eq!(s.pg.get_dbname(), Some("ipm"));
        assert_eq!(s.pg.get_user(), Some("envuser"));
        assert_eq!(s.passfile, Some(PathBuf::from("/nonexistent/.pgpass")));
        assert!(!s.target().contains("envsecret"));
        let s = Settings::parse("", &env(&[("PGDATABASE", "x")])).unwrap();
        assert!(
            s.target().starts_with("host=/var/run/postgresql "),
            "{}",
            s.target()
        );
        assert!(s.target().ends_with(" sslmode=prefer"), "{}", s.target());
    }

    #[test]
    fn tls_modes_and_files_follow_libpq() {
        let home = tempfile::tempdir().unwrap();
        let vars = env(&[("HOME", home.path().to_str().unwrap())]);
        let error = Settings::parse("host=db sslmode=verify-full", &vars).unwrap_err();
        assert!(
            error.to_string().contains("root.crt does not exist"),
            "{error}"
        );
        let error = Settings::parse("host=db sslmode=verify_full", &vars).unwrap_err();
        assert!(
            matches!(error, ConnectionError::UnknownSslMode(_)),
            "{error}"
        );
        let error = Settings::parse("host=db sslmode=require sslrootcert=system", &vars);
        assert!(matches!(
            error,
            Err(ConnectionError::WeakModeWithSystemRoots(SslMode::Require))
        ));
        let s = Settings::parse("host=db sslrootcert=system", &vars).unwrap();
        assert_eq!(s.tls.mode, SslMode::VerifyFull);
        let s = Settings::parse("host=db sslmode=require", &vars).unwrap();
        assert_eq!(s.pg.get_ssl_mode(), PgSslMode::Require);
        assert_eq!((s.tls.root_cert, s.tls.client), (None, None));
        let s = Settings::parse("host=/run/postgresql sslmode=require", &vars).unwrap();
        assert_eq!(
            s.pg.get_ssl_mode(),
            PgSslMode::Disable,
            "no TLS over a socket"
        );
        let dir = home.path().join(".postgresql");
        std::fs::create_dir(&dir).unwrap();
        for name in ["root.crt", "postgresql.crt"] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        let s = Settings::parse("host=db sslmode=require", &vars).unwrap();
        assert_eq!(s.tls.root_cert, Some(RootCert::File(dir.join("root.crt"))));
        assert_eq!(
            s.tls.client,
            Some((dir.join("postgresql.crt"), dir.join("postgresql.key")))
        );
        assert!(s.target().contains(" sslrootcert="), "{}", s.target());
    }
}
