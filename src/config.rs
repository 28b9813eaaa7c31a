//! The configuration: built-in defaults, then the TOML file, then the environment
//! (`IPMANAGER_DATABASE_URL`, and `IPMANAGER__SECTION__KEY` for every other key).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::connection::{LibpqEnv, Settings};
use crate::db::{Connector, DbError};
use crate::render::{self, LayoutKind};

/// Where the configuration is read from when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/ipmanager/ipmanager.toml";
/// Overrides `database_url`; the usual way to hand the agent its connection string.
pub const DATABASE_URL_VAR: &str = "IPMANAGER_DATABASE_URL";
/// Stands for the staged include file in `dnsmasq.check_command`.
pub const FILE_PLACEHOLDER: &str = "{file}";
const ENV_PREFIX: &str = "IPMANAGER";
const ENV_SEPARATOR: &str = "__";

/// Errors that make a configuration unusable (exit code 78, EX_CONFIG).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    Missing(PathBuf),
    #[error("cannot load the configuration")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// libpq-style connection string, URL or key=value form; several hosts and
    /// `target_session_attrs=read-write` are allowed so that a failover is followed.
    /// Empty when not given anywhere; `validate` then says how to give one.
    #[serde(default)]
    pub database_url: DatabaseUrl,
    /// Log filter used when `RUST_LOG` is unset, e.g. `info` or `ipmanager=debug`.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    #[serde(default)]
    pub agent: AgentConfig,
    #[serde(default)]
    pub dnsmasq: DnsmasqConfig,
    #[serde(default)]
    pub api: ApiConfig,
    /// The libpq environment (`PG*`, `HOME`) the configuration was loaded with; it fills in
    /// what `database_url` leaves out.
    #[serde(skip)]
    pub libpq_env: LibpqEnv,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// How this agent names itself in logs and status; defaults to the machine's hostname.
    pub name: String,
    /// A full resync as a safety net even when no notification arrives.
    #[serde(with = "humantime_serde")]
    pub resync_interval: Duration,
    /// How often the LISTEN connection is probed so that a silently dead server is noticed.
    #[serde(with = "humantime_serde")]
    pub liveness_interval: Duration,
    /// Least time between the starts of two regenerations. A change after a quiet spell is
    /// applied at once; during a burst, changes are gathered for up to this long, so that 1,000
    /// commits in a second cost about ten regenerations instead of hundreds.
    #[serde(with = "humantime_serde")]
    pub burst_interval: Duration,
    /// Upper bound of the exponential backoff between retries (connect, sync, activation).
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// The sites (`ipmanager.sites`) whose subnets this agent serves; `None` (no key): every
    /// enabled subnet, with or without site.
    pub sites: Option<Vec<String>>,
    /// Where to serve Prometheus metrics on `/metrics`, e.g. `127.0.0.1:9580`; `None` (no key):
    /// no endpoint.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            name: nix::unistd::gethostname()
                .ok()
                .and_then(|name| name.into_string().ok())
                .filter(|name| crate::model::is_valid_name(name))
                .unwrap_or_else(|| "ipmanager".to_owned()),
            resync_interval: Duration::from_secs(300),
            liveness_interval: Duration::from_secs(10),
            burst_interval: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            sites: None,
            metrics_listen: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsmasqConfig {
    pub layout: LayoutKind,
    /// The conf-dir file that points dnsmasq at the other two and holds the subnet lines.
    pub include_file: PathBuf,
    pub hosts_file: PathBuf,
    pub addn_hosts_file: PathBuf,
    /// SIGHUP target when `reload_command` is empty.
    pub pid_file: PathBuf,
    pub reload_command: Vec<String>,
    pub restart_command: Vec<String>,
    /// Run on a changed include file before it is put in place; `{file}` stands for the staged
    /// copy. A non-zero exit keeps the old file. Empty: only ipmanager's own checks.
    pub check_command: Vec<String>,
    /// Mode of the written files; dnsmasq reads them after dropping privileges.
    #[serde(deserialize_with = "deserialize_mode")]
    pub file_mode: u32,
    /// How long a reload or restart command may run before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Whose names the addn-hosts file holds when `agent.sites` is set.
    pub dns_scope: DnsScope,
    /// The incremental layout's `dhcp-hostsdir`: one reservation shard file per shard.
    pub hosts_dir: PathBuf,
    /// The incremental layout's `hostsdir`: one name shard file per shard.
    pub names_dir: PathBuf,
    /// How many shard files the reservations are spread over (incremental layout): a change
    /// rewrites one file of about hosts/shards lines, which dnsmasq re-reads whole.
    pub shards: u32,
    /// How many shard files the names are spread over (incremental layout). dnsmasq 2.90 pays
    /// a scan of every name it holds for each name line of a re-read `hostsdir` file, so large
    /// sites want about one host per file; see README, "Large sites".
    pub names_shards: u32,
    /// Least time between two compactions, and how long a change that needs one waits for it
    /// (incremental layout).
    #[serde(with = "humantime_serde")]
    pub compaction_interval: Duration,
    /// dnsmasq's lease file, read (never written) to find the leases to release.
    pub lease_file: PathBuf,
    /// Run as `COMMAND IFACE IP MAC [CLIENT-ID]` for each lease of a reservation dnsmasq no
    /// longer serves (dnsmasq-utils' `dhcp_release`). Empty: leases are never released.
    pub release_command: Vec<String>,
    /// Run as `COMMAND --iface IFACE --client-id DUID --server-id DUID --iaid IAID --ip IP` for
    /// each such DHCPv6 lease (dnsmasq-utils' `dhcp_release6`). Empty: never released.
    pub release6_command: Vec<String>,
    /// The interface `release_command` and `release6_command` send from; without it, the interface with an address
    /// in the same network as the lease.
    pub release_interface: Option<String>,
}

/// Most shard files: the file name is four hex digits.
pub const MAX_SHARDS: u32 = 65536;

/// `dnsmasq.dns_scope`: which host names an agent with `agent.sites` puts into DNS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsScope {
    /// Only the hosts of the agent's own sites: a change elsewhere never touches its files.
    #[default]
    Sites,
    /// Every enabled host, so that any site resolves any name; every host change anywhere
    /// rewrites the addn-hosts file (a reload) of every agent.
    All,
}

impl DnsScope {
    /// The name reported in `ipmanager.agent_status.dns_scope`.
    pub fn as_str(self) -> &'static str {
        match self {
            DnsScope::Sites => "sites",
            DnsScope::All => "all",
        }
    }
}

impl Default for DnsmasqConfig {
    fn default() -> Self {
        DnsmasqConfig {
            layout: LayoutKind::Hostsfile,
            include_file: "/etc/dnsmasq.d/01-rust-managed.conf".into(),
            hosts_file: "/var/lib/ipmanager/dhcp-hosts".into(),
            addn_hosts_file: "/var/lib/ipmanager/hosts".into(),
            pid_file: "/run/dnsmasq/dnsmasq.pid".into(),
            reload_command: Vec::new(),
            restart_command: ["systemctl", "restart", "dnsmasq"].map(String::from).into(),
            check_command: ["dnsmasq", "--test", "--conf-file={file}"]
                .map(String::from)
                .into(),
            file_mode: 0o644,
            command_timeout: Duration::from_secs(30),
            dns_scope: DnsScope::default(),
            hosts_dir: "/var/lib/ipmanager/dhcp-hosts.d".into(),
            names_dir: "/var/lib/ipmanager/hosts.d".into(),
            shards: 1024,
            names_shards: 4096,
            compaction_interval: Duration::from_secs(300),
            lease_file: "/var/lib/misc/dnsmasq.leases".into(),
            release_command: vec!["dhcp_release".to_owned()],
            release6_command: vec!["dhcp_release6".to_owned()],
            release_interface: None,
        }
    }
}

impl DnsmasqConfig {
    /// Whether stale leases of either family are released.
    pub fn releases_leases(&self) -> bool {
        !self.release_command.is_empty() || !self.release6_command.is_empty()
    }

    pub fn layout(&self) -> render::Layout {
        render::Layout {
            kind: self.layout,
            hosts_file: self.hosts_file.clone(),
            addn_hosts_file: self.addn_hosts_file.clone(),
            hosts_dir: self.hosts_dir.clone(),
            names_dir: self.names_dir.clone(),
            shards: self.shards,
            names_shards: self.names_shards,
        }
    }

    /// `layout` as written in the configuration, as `agent_status.layout` takes it.
    pub fn layout_name(&self) -> &'static str {
        match self.layout {
            LayoutKind::Hostsfile => "hostsfile",
            LayoutKind::Conf => "conf",
            LayoutKind::Incremental => "incremental",
        }
    }

    /// Why the incremental layout's keys cannot work, naming the key. Checked whatever the
    /// layout, so that switching layouts never meets a bad key the first time.
    fn validate_incremental(&self) -> Result<(), String> {
        for (key, path) in [
            ("dnsmasq.hosts_dir", &self.hosts_dir),
            ("dnsmasq.names_dir", &self.names_dir),
        ] {
            if !path.is_absolute() {
                return Err(format!("{key} {} must be an absolute path", path.display()));
            }
            if let Err(reason) = render::validate::file_path(path) {
                return Err(format!("{key} {}: {reason}", path.display()));
            }
            if self.include_file.starts_with(path) {
                return Err(format!(
                    "{key} {} holds dnsmasq.include_file {}: dnsmasq reads every file in it \
                     as host lines, and the agent removes files it does not expect there",
                    path.display(),
                    self.include_file.display()
                ));
            }
        }
        if self.hosts_dir.starts_with(&self.names_dir)
            || self.names_dir.starts_with(&self.hosts_dir)
        {
            return Err(format!(
                "dnsmasq.hosts_dir {} and dnsmasq.names_dir {} must be two separate directories, \
                 neither inside the other: both hold shard files of the same names",
                self.hosts_dir.display(),
                self.names_dir.display()
            ));
        }
        for (key, shards) in [
            ("dnsmasq.shards", self.shards),
            ("dnsmasq.names_shards", self.names_shards),
        ] {
            if !(1..=MAX_SHARDS).contains(&shards) {
                return Err(format!("{key} {shards} must be between 1 and {MAX_SHARDS}"));
            }
        }
        if self.compaction_interval < Duration::from_secs(1) {
            return Err(format!(
                "dnsmasq.compaction_interval {} must be at least 1s: each compaction makes \
                 dnsmasq re-read every reservation",
                humantime::format_duration(self.compaction_interval)
            ));
        }
        Ok(())
    }
}

/// `ipmanager serve`: the HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address and port to listen on.
    pub listen: std::net::SocketAddr,
    /// PEM certificate chain; with `tls_key`, the API speaks HTTPS only. Re-read on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on an address other than loopback (tokens and data travel unencrypted:
    /// only behind a TLS-terminating proxy on the same host or network).
    pub allow_plain_http: bool,
    /// Longest a request may take, including `?wait=` and long polls of the change feed.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest request body in bytes (an import file is one body).
    pub max_body_bytes: usize,
    /// Database connections, each serving one request at a time.
    pub pool_size: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8580)),
            tls_cert: None,
            tls_key: None,
            allow_plain_http: false,
            request_timeout: Duration::from_secs(60),
            max_body_bytes: 16 << 20,
            pool_size: 10,
        }
    }
}

impl ApiConfig {
    /// The certificate and key when TLS is configured; an error when only one is given or
    /// plain HTTP would leave the machine unasked.
    pub fn tls(&self) -> Result<Option<(&Path, &Path)>, ConfigError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) if self.listen.ip().is_loopback() || self.allow_plain_http => Ok(None),
            (None, None) => Err(ConfigError::Invalid(format!(
                "api.listen {} is not a loopback address, so the API needs TLS: set api.tls_cert \
                 and api.tls_key, or api.allow_plain_http = true behind a TLS proxy",
                self.listen
            ))),
            _ => Err(ConfigError::Invalid(
                "api.tls_cert and api.tls_key go together: give both or neither".to_owned(),
            )),
        }
    }
}

fn default_log_level() -> String {
    "info".to_owned()
}

/// Reads `file_mode` as admins write it, in octal digits: the string `"0644"` (or `"644"`,
/// `"0o644"`), or the bare TOML integer `644`, whose digits are taken as octal too (so that
/// `IPMANAGER__DNSMASQ__FILE_MODE=0644`, which arrives as a number, means the same). Errors
/// repeat what was written.
fn deserialize_mode<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Number(u64),
        Text(String),
    }
    let written = match Written::deserialize(deserializer)? {
        Written::Number(number) => number.to_string(),
        Written::Text(text) => text,
    };
    parse_mode(&written).map_err(serde::de::Error::custom)
}

/// `written` as a file mode for the rendered files, or why it cannot be one.
fn parse_mode(written: &str) -> Result<u32, String> {
    let digits = written.trim().trim_start_matches("0o");
    let mode = match u32::from_str_radix(digits, 8) {
        Ok(mode) if !digits.is_empty() && digits.len() <= 4 => mode,
        _ => {
            return Err(format!(
                "dnsmasq.file_mode {written:?} is not a file mode: write up to four octal digits \
                 (0-7) in quotes, e.g. file_mode = \"0644\""
            ))
        }
    };
    if mode & !0o777 != 0 {
        return Err(format!(
            "dnsmasq.file_mode {written:?} sets setuid, setgid or sticky bits, which make no \
             sense on data files: give permission bits only, e.g. \"0644\""
        ));
    }
    if mode & 0o044 == 0 {
        return Err(format!(
            "dnsmasq.file_mode {written:?} keeps the files from dnsmasq's unprivileged user; \
             every reservation would be dropped at the next reload: e.g. \"0644\""
        ));
    }
    Ok(mode)
}

impl Config {
    /// Loads `file` (the default file may be absent; an explicitly named one may not), then
    /// applies the environment `env`, then validates.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env.into_iter().collect();
        let mut builder = config::Config::builder();
        match file {
            Some(path) if !path.exists() => return Err(ConfigError::Missing(path.to_owned())),
            Some(path) => builder = builder.add_source(config::File::from(path)),
            None => {
                builder =
                    builder.add_source(config::File::with_name(DEFAULT_CONFIG_FILE).required(false))
            }
        }
        let sectioned: HashMap<String, String> = env
            .iter()
            .filter(|(key, _)| key.starts_with(&format!("{ENV_PREFIX}{ENV_SEPARATOR}")))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator(ENV_SEPARATOR)
                .separator(ENV_SEPARATOR)
                .list_separator(" ")
                .with_list_parse_key("dnsmasq.reload_command")
                .with_list_parse_key("dnsmasq.restart_command")
                .with_list_parse_key("dnsmasq.check_command")
                .with_list_parse_key("dnsmasq.release_command")
                .with_list_parse_key("dnsmasq.release6_command")
                .with_list_parse_key("agent.sites")
                .try_parsing(true)
                .source(Some(sectioned.into_iter().collect())),
        );
        if let Some(url) = env.get(DATABASE_URL_VAR) {
            builder = builder.set_override("database_url", url.as_str())?;
        }
        let mut config: Config = builder.build()?.try_deserialize()?;
        config.libpq_env = LibpqEnv::from_vars(&env);
        config.validate()?;
        Ok(config)
    }

    /// Loads with the process environment.
    pub fn from_process_env(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load(file, std::env::vars())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        let url = self.database_url.expose();
        if url.trim().is_empty() && !self.libpq_env.names_a_target() {
            return invalid(format!(
                "database_url is not set: give it in the environment \
                 ({DATABASE_URL_VAR}=postgresql://user@host/dbname), or as database_url = \"...\" \
                 in the configuration file ({DEFAULT_CONFIG_FILE}, or the file named by \
                 --config FILE), or set libpq's PGHOST, PGDATABASE, PGUSER as for psql"
            ));
        }
        if let Err(error) = Settings::parse(url, &self.libpq_env) {
            return invalid(error.to_string());
        }
        let d = &self.dnsmasq;
        for (key, path) in [
            ("dnsmasq.include_file", &d.include_file),
            ("dnsmasq.hosts_file", &d.hosts_file),
            ("dnsmasq.addn_hosts_file", &d.addn_hosts_file),
            ("dnsmasq.pid_file", &d.pid_file),
        ] {
            if !path.is_absolute() {
                return invalid(format!("{key} {} must be an absolute path", path.display()));
            }
            if let Err(reason) = render::validate::file_path(path) {
                return invalid(format!("{key} {}: {reason}", path.display()));
            }
        }
        if d.layout == LayoutKind::Hostsfile
            && (d.hosts_file == d.include_file
                || d.addn_hosts_file == d.include_file
                || d.hosts_file == d.addn_hosts_file)
        {
            return invalid(
                "dnsmasq.include_file, hosts_file and addn_hosts_file must be three different files"
                    .to_owned(),
            );
        }
        if let Err(message) = d.validate_incremental() {
            return invalid(message);
        }
        if !d.lease_file.is_absolute() {
            return invalid(format!(
                "dnsmasq.lease_file {} must be an absolute path",
                d.lease_file.display()
            ));
        }
        if let Some(name) = &d.release_interface {
            // IFNAMSIZ is 16 with the NUL; the kernel refuses '/', ':' and white space.
            if name.is_empty()
                || name.len() > 15
                || name.contains(['/', ':'])
                || name.contains(char::is_whitespace)
            {
                return invalid(format!(
                    "dnsmasq.release_interface {name:?} is not an interface name"
                ));
            }
        }
        if d.restart_command.is_empty() {
            return invalid(
                "dnsmasq.restart_command is empty: dnsmasq re-reads the include file only on a \
                 restart, e.g. [\"systemctl\", \"restart\", \"dnsmasq\"]"
                    .to_owned(),
            );
        }
        if !d.check_command.is_empty()
            && !d.check_command.iter().any(|a| a.contains(FILE_PLACEHOLDER))
        {
            return invalid(format!(
                "dnsmasq.check_command {:?} does not name the file to check: put {FILE_PLACEHOLDER} \
                 where the staged include file goes, e.g. [\"dnsmasq\", \"--test\", \"--conf-file={FILE_PLACEHOLDER}\"]",
                d.check_command
            ));
        }
        if self.agent.resync_interval.is_zero() || self.agent.liveness_interval.is_zero() {
            return invalid("agent intervals must be greater than zero".to_owned());
        }
        if !crate::model::is_valid_name(&self.agent.name) {
            return invalid(format!(
                "agent.name {:?} is not a valid agent name: 1 to 63 letters, digits, '-', '_' or \
                 '.', starting with a letter or digit (it names the agent's row in \
                 ipmanager.agent_status)",
                self.agent.name
            ));
        }
        if let Some(sites) = &self.agent.sites {
            if sites.is_empty() {
                return invalid(
                    "agent.sites is empty: list the sites this agent serves, or leave the key \
                     out to serve every subnet"
                        .to_owned(),
                );
            }
            if let Some(bad) = sites.iter().find(|s| !crate::model::is_valid_name(s)) {
                return invalid(format!(
                    "agent.sites {bad:?} is not a valid site name: 1 to 63 letters, digits, '-', \
                     '_' or '.', starting with a letter or digit"
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// The connection factory for every connection of the process, named `application_name`
    /// in `pg_stat_activity` unless the settings name it.
    pub fn connector(&self, application_name: &str) -> Result<Connector, DbError> {
        crate::db::connector(
            self.database_url.expose(),
            &self.libpq_env,
            application_name,
        )
    }

    /// Where connections go, with what the environment fills in; never the password.
    pub fn database_target(&self) -> String {
        match Settings::parse(self.database_url.expose(), &self.libpq_env) {
            Ok(settings) => settings.target(),
            Err(_) => self.database_url.to_string(),
        }
    }
}

/// The connection string. `Display` and `Debug` show the connection target built from the
/// parsed settings ([`connection_target`]), never the string itself: whatever way the password
/// is written (quoted, with blanks around `=`, percent-encoded), it is not in the output.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseUrl(url.into())
    }

    /// The full string, password included: only for handing to the database driver.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Settings::parse(&self.0, &LibpqEnv::default()) {
            Ok(settings) => f.write_str(&settings.target()),
            Err(_) => f.write_str("(database_url that does not parse)"),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.to_string())
    }
}

/// Where a connection goes, in libpq's key=value form, from the parsed settings: hosts, ports,
/// user, database, options and the settings that pick a server. A password is only said to
/// be there (`password=********`).
pub fn connection_target(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::{Host, LoadBalanceHosts, TargetSessionAttrs};
    let list = |items: Vec<String>| (!items.is_empty()).then(|| items.join(","));
    let hosts = config.get_hosts().iter().map(|host| match host {
        Host::Tcp(name) => name.clone(),
        Host::Unix(path) => path.display().to_string(),
    });
    let session_attrs = match config.get_target_session_attrs() {
        TargetSessionAttrs::ReadWrite => Some("read-write"),
        TargetSessionAttrs::ReadOnly => Some("read-only"),
        _ => None,
    };
    let load_balance = match config.get_load_balance_hosts() {
        LoadBalanceHosts::Random => Some("random"),
        _ => None,
    };
    let pairs = [
        ("host", list(hosts.collect())),
        (
            "hostaddr",
            list(
                config
                    .get_hostaddrs()
                    .iter()
                    .map(|a| a.to_string())
                    .collect(),
            ),
        ),
        ("port", list(ports(config.get_ports()))),
        ("user", config.get_user().map(str::to_owned)),
        (
            "password",
            config.get_password().map(|_| "********".to_owned()),
        ),
        ("dbname", config.get_dbname().map(str::to_owned)),
        ("options", config.get_options().map(str::to_owned)),
        (
            "application_name",
            config.get_application_name().map(str::to_owned),
        ),
        ("target_session_attrs", session_attrs.map(str::to_owned)),
        ("load_balance_hosts", load_balance.map(str::to_owned)),
        (
            "connect_timeout",
            config
                .get_connect_timeout()
                .map(|t| t.as_secs().to_string()),
        ),
    ];
    pairs
        .into_iter()
        .filter_map(|(key, value)| value.map(|value| format!("{key}={}", quote_value(&value))))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The ports, once when every host has the same (a URL gives each host one).
fn ports(ports: &[u16]) -> Vec<String> {
    let same = ports.windows(2).all(|pair| pair[0] == pair[1]);
    let shown = if same {
        &ports[..ports.len().min(1)]
    } else {
        ports
    };
    shown.iter().map(u16::to_string).collect()
}

/// A value as libpq's key=value form needs it: in single quotes when it is empty or holds
/// blanks, quotes or backslashes.
pub(crate) fn quote_value(value: &str) -> String {
    if !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return value.to_owned();
    }
    let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
    format!("'{escaped}'")
}

/// Connection settings tokio-postgres knows; only these words are repeated from its complaints.
const OPTION_NAMES: &[&str] = &[
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslmode",
    "sslnegotiation",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// tokio-postgres's complaint about a connection string, without what it quotes from the
/// string (an unknown word or an unexpected character may be part of a password), and with the
/// rules for writing values that trip people up.
pub fn describe_parse_error(error: &tokio_postgres::Error) -> String {
    let message = std::error::Error::source(error)
        .map(|cause| cause.to_string())
        .unwrap_or_else(|| error.to_string());
    let shown: String = message
        .split('`')
        .enumerate()
        .map(|(i, part)| match i % 2 {
            0 => part.to_owned(),
            _ if OPTION_NAMES.contains(&part) => format!("`{part}`"),
            _ => "`…`".to_owned(),
        })
        .collect();
    format!(
        "{shown} (a value with blanks or quotes goes in single quotes, password='a b', a quote \
         inside as \\'; in a postgresql:// URL percent-encode it)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way of writing a password: URL user info and query (percent-encoded), key=value
    /// plain, quoted, with blanks around `=`, and with blanks, quotes, `@`, `%` and `=` inside.
    const SECRET_FORMS: &[(&str, &str)] = &[
        (
            "postgresql://agent:s3cret@db1,db2/ipm?target_session_attrs=read-write",
            "s3cret",
        ),
        (
            "postgres://agent@db/ipm?password=s3cret&sslmode=disable",
            "s3cret",
        ),
        (
            "postgresql://agent:a%20b%27c%40d%25e%3Df@db/ipm",
            "a b'c@d%e=f",
        ),
        ("host=db user=agent password=s3cret dbname=ipm", "s3cret"),
        ("host=db user=x password = s3cret dbname=y", "s3cret"),
        ("host=db user=x password='a b c' dbname=y", "a b c"),
        (
            r"host=db user=x password='it\'s @ 100% = ok' dbname=y",
            "it's @ 100% = ok",
        ),
    ];

    #[test]
    fn the_shown_target_never_holds_the_password() {
        for (url, secret) in SECRET_FORMS {
            let parsed: tokio_postgres::Config = url.parse().unwrap();
            assert_eq!(parsed.get_password(), Some(secret.as_bytes()), "{url}");
            let url = DatabaseUrl::new(*url);
            for shown in [url.to_string(), format!("{url:?}")] {
                for fragment in secret.split(' ').filter(|f| f.len() > 2) {
                    assert!(!shown.contains(fragment), "{shown} shows {fragment:?}");
                }
                assert!(shown.contains("password=********"), "{shown}");
                assert!(shown.contains("host=db"), "{shown}");
            }
        }
        assert_eq!(
            DatabaseUrl::new("postgresql://agent:pw@db1:5433,db2/ipm?target_session_attrs=read-write&options=-c%20jit%3Doff")
                .to_string(),
            "host=db1,db2 port=5433,5432 user=agent password=******** dbname=ipm \
             options='-c jit=off' target_session_attrs=read-write sslmode=prefer"
        );
    }

    #[test]
    fn parse_errors_quote_no_part_of_the_string_but_option_names() {
        for (url, secret) in [
            ("host=db password=top secret", "secret"),
            ("host=db password=top secretword=x", "secretword"),
            ("host=db password='s3cr3t", "s3cr3t"),
            ("host=db port=x5432 password=s3cret", "s3cret"),
        ] {
            let error = url.parse::<tokio_postgres::Config>().unwrap_err();
            let text = describe_parse_error(&error);
            assert!(!text.contains(secret), "{url}: {text}");
        }
        let error = "host=db port=x"
            .parse::<tokio_postgres::Config>()
            .unwrap_err();
        assert!(describe_parse_error(&error).contains("`port`"));
    }

    #[test]
    fn file_modes_are_read_as_the_octal_digits_written_and_echoed_in_errors() {
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert_eq!(parse_mode("640"), Ok(0o640));
        assert_eq!(parse_mode("0o604"), Ok(0o604));
        for (written, says) in [
            ("7777", "setuid"),
            ("0600", "unprivileged"),
            ("0948", "octal digits"),
            ("rw-r--r--", "octal digits"),
            ("", "octal digits"),
            ("00644", "octal digits"),
        ] {
            let error = parse_mode(written).unwrap_err();
            assert!(error.contains(&format!("{written:?}")), "{error}");
            assert!(error.contains(says), "{error}");
        }
    }

    #[test]
    fn sites_come_from_the_file_or_the_environment_and_are_valid_names() {
        let load = |sites: &str| {
            Config::load(
                None,
                [
                    (
                        DATABASE_URL_VAR.to_owned(),
                        "postgresql://db/ipm".to_owned(),
                    ),
                    ("IPMANAGER__AGENT__SITES".to_owned(), sites.to_owned()),
                    ("IPMANAGER__DNSMASQ__DNS_SCOPE".to_owned(), "all".to_owned()),
                ],
            )
        };
        let config = load("berlin paris").unwrap();
        assert_eq!(
            config.agent.sites,
            Some(vec!["berlin".to_owned(), "paris".to_owned()])
        );
        assert_eq!(config.dnsmasq.dns_scope, DnsScope::All);
        let error = load("berlin bad/name").unwrap_err().to_string();
        assert!(error.contains("is not a valid site name"), "{error}");
        let defaults = Config::load(
            None,
            [(
                DATABASE_URL_VAR.to_owned(),
                "postgresql://db/ipm".to_owned(),
            )],
        )
        .unwrap();
        assert_eq!(defaults.agent.sites, None);
        assert_eq!(defaults.dnsmasq.dns_scope, DnsScope::Sites);
    }

    #[test]
    fn agent_names_follow_the_status_table_rule() {
        let env = |name: &str| {
            [
                (
                    DATABASE_URL_VAR.to_owned(),
                    "postgresql://db/ipm".to_owned(),
                ),
                ("IPMANAGER__AGENT__NAME".to_owned(), name.to_owned()),
            ]
        };
        let load = |name: &str| Config::load(None, env(name)).map(|c| c.agent.name);
        assert_eq!(load("dhcp1.example.org").unwrap(), "dhcp1.example.org");
        for bad in ["", "-dhcp", "dhcp 1", &"x".repeat(64)] {
            let error = load(bad).unwrap_err().to_string();
            assert!(
                error.contains("is not a valid agent name"),
                "{bad:?}: {error}"
            );
        }
    }

    fn load_dnsmasq(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = vars
            .iter()
            .map(|(key, value)| (format!("IPMANAGER__DNSMASQ__{key}"), (*value).to_owned()));
        Config::load(
            None,
            env.chain([(
                DATABASE_URL_VAR.to_owned(),
                "postgresql://db/ipm".to_owned(),
            )]),
        )
    }

    #[test]
    fn the_release_keys_have_defaults_and_errors_name_the_key() {
        let d = load_dnsmasq(&[]).unwrap().dnsmasq;
        assert_eq!(d.lease_file, Path::new("/var/lib/misc/dnsmasq.leases"));
        assert_eq!(d.release_command, ["dhcp_release"]);
        assert_eq!(d.release6_command, ["dhcp_release6"]);
        assert_eq!(d.release_interface, None);
        let d = load_dnsmasq(&[
            ("RELEASE_COMMAND", "ip netns exec dhcp dhcp_release"),
            ("RELEASE6_COMMAND", "ip netns exec dhcp dhcp_release6"),
            ("RELEASE_INTERFACE", "br0"),
        ])
        .unwrap()
        .dnsmasq;
        assert_eq!(d.release_command.len(), 5);
        assert_eq!(d.release6_command[4], "dhcp_release6");
        assert_eq!(d.release_interface.as_deref(), Some("br0"));
        for (key, value) in [
            ("LEASE_FILE", "dnsmasq.leases"),
            ("RELEASE_INTERFACE", "eth 0"),
        ] {
            let error = load_dnsmasq(&[(key, value)]).unwrap_err().to_string();
            assert!(error.contains(&key.to_lowercase()), "{error}");
        }
    }

    #[test]
    fn the_incremental_keys_have_defaults_and_errors_name_the_key() {
        let d = load_dnsmasq(&[]).unwrap().dnsmasq;
        assert_eq!(d.hosts_dir, Path::new("/var/lib/ipmanager/dhcp-hosts.d"));
        assert_eq!(d.names_dir, Path::new("/var/lib/ipmanager/hosts.d"));
        assert_eq!(d.shards, 1024);
        assert_eq!(d.names_shards, 4096);
        assert_eq!(d.compaction_interval, Duration::from_secs(300));
        let d = load_dnsmasq(&[
            ("LAYOUT", "incremental"),
            ("SHARDS", "65536"),
            ("NAMES_SHARDS", "3"),
            ("COMPACTION_INTERVAL", "1s"),
        ])
        .unwrap()
        .dnsmasq;
        assert_eq!(d.layout, LayoutKind::Incremental);
        assert_eq!((d.layout().shards, d.layout().names_shards), (65536, 3));
        for (vars, says) in [
            (
                vec![("SHARDS", "0")],
                "dnsmasq.shards 0 must be between 1 and 65536",
            ),
            (vec![("SHARDS", "65537")], "dnsmasq.shards 65537"),
            (
                vec![("NAMES_SHARDS", "0")],
                "dnsmasq.names_shards 0 must be between 1 and 65536",
            ),
            (
                vec![("COMPACTION_INTERVAL", "500ms")],
                "dnsmasq.compaction_interval 500ms must be at least 1s",
            ),
            (
                vec![("HOSTS_DIR", "dhcp-hosts.d")],
                "dnsmasq.hosts_dir dhcp-hosts.d must be an absolute path",
            ),
            (
                vec![("NAMES_DIR", "/etc/dnsmasq.d")],
                "dnsmasq.names_dir /etc/dnsmasq.d holds dnsmasq.include_file",
            ),
            (
                vec![("NAMES_DIR", "/etc/dnsmasq.d/01-rust-managed.conf")],
                "dnsmasq.names_dir /etc/dnsmasq.d/01-rust-managed.conf holds",
            ),
            (
                vec![("HOSTS_DIR", "/srv/d"), ("NAMES_DIR", "/srv/d")],
                "must be two separate directories",
            ),
            (
                vec![("HOSTS_DIR", "/srv/d"), ("NAMES_DIR", "/srv/d/names")],
                "neither inside the other",
            ),
        ] {
            let error = load_dnsmasq(&vars).unwrap_err().to_string();
            assert!(error.contains(says), "{vars:?}: {error}");
        }
    }
}
