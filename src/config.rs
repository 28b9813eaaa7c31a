//! The configuration: built-in defaults, then the TOML file, then the environment
//! (`IPMANAGER_DATABASE_URL`, and `IPMANAGER__SECTION__KEY` for every other key).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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
    pub database_url: DatabaseUrl,
    /// Log filter used when `RUST_LOG` is unset, e.g. `info` or `ipmanager=debug`.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    #[serde(default)]
    pub agent: AgentConfig,
    #[serde(default)]
    pub dnsmasq: DnsmasqConfig,
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
}

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
        }
    }
}

impl DnsmasqConfig {
    pub fn layout(&self) -> render::Layout {
        render::Layout {
            kind: self.layout,
            hosts_file: self.hosts_file.clone(),
            addn_hosts_file: self.addn_hosts_file.clone(),
        }
    }
}

fn default_log_level() -> String {
    "info".to_owned()
}

/// Accepts `file_mode = 0o644`-style integers and octal strings such as `"0644"`.
fn deserialize_mode<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Mode {
        Number(u32),
        Octal(String),
    }
    match Mode::deserialize(deserializer)? {
        Mode::Number(mode) => Ok(mode),
        Mode::Octal(text) => {
            let digits = text.trim_start_matches("0o");
            u32::from_str_radix(digits, 8).map_err(|_| {
                serde::de::Error::custom(format!("file_mode {text:?} is not an octal mode"))
            })
        }
    }
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
                .with_list_parse_key("agent.sites")
                .try_parsing(true)
                .source(Some(sectioned.into_iter().collect())),
        );
        if let Some(url) = env.get(DATABASE_URL_VAR) {
            builder = builder.set_override("database_url", url.as_str())?;
        }
        let config: Config = builder.build()?.try_deserialize()?;
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
        if url.trim().is_empty() {
            return invalid(format!(
                "database_url is empty: set it in the file or with {DATABASE_URL_VAR}"
            ));
        }
        if let Err(error) = url.parse::<tokio_postgres::Config>() {
            return invalid(format!(
                "database_url {} is not valid: {error}",
                self.database_url
            ));
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
        if d.file_mode & !0o7777 != 0 {
            return invalid(format!(
                "dnsmasq.file_mode {:o} is not a file mode",
                d.file_mode
            ));
        }
        if d.file_mode & 0o044 == 0 {
            return invalid(format!(
                "dnsmasq.file_mode {:o} keeps the files from dnsmasq's unprivileged user; every \
                 reservation would be dropped at the next reload",
                d.file_mode
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

/// The connection string; its `Debug` and `Display` hide the password.
#[derive(Clone, Deserialize)]
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
        f.write_str(&redact_password(&self.0))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", redact_password(&self.0))
    }
}

/// Replaces the password of a URL (`user:secret@host`) or key=value string (`password=secret`).
fn redact_password(url: &str) -> String {
    const HIDDEN: &str = "********";
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let mut out = url.to_owned();
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                out.replace_range(scheme_end + 3 + colon + 1..scheme_end + 3 + at, HIDDEN);
            }
        }
        return redact_query_password(&out, HIDDEN);
    }
    url.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}={HIDDEN}"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn redact_query_password(url: &str, hidden: &str) -> String {
    let Some(query_start) = url.find('?') else {
        return url.to_owned();
    };
    let (head, query) = url.split_at(query_start + 1);
    let query = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}={hidden}"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{head}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_hidden_in_every_form() {
        for (url, shown) in [
            (
                "postgresql://agent:s3cret@db1,db2/ipm?target_session_attrs=read-write",
                "postgresql://agent:********@db1,db2/ipm?target_session_attrs=read-write",
            ),
            (
                "postgres://agent@db/ipm?password=s3cret&sslmode=disable",
                "postgres://agent@db/ipm?password=********&sslmode=disable",
            ),
            (
                "host=db user=agent password=s3cret",
                "host=db user=agent password=********",
            ),
            ("postgresql://agent@db/ipm", "postgresql://agent@db/ipm"),
        ] {
            let url = DatabaseUrl::new(url);
            assert_eq!(url.to_string(), shown);
            assert!(!format!("{url:?}").contains("s3cret"));
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
}
