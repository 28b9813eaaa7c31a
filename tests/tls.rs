//! TLS, client certificates, the password file and the libpq environment against a private
//! PostgreSQL cluster whose certificates the test makes: a CA, a server certificate for
//! `localhost`, a client certificate whose CN is the agent's role. Its pg_hba.conf takes the
//! agent by certificate, everyone else by SCRAM password, both only over TLS, and rejects
//! every connection without TLS.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::agent_process::{write_fast_agent_config, AgentProcess};
use common::binary::{self, assert_exit, error_text, stderr, stdout};
use common::cluster::{Cluster, PgTools};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

const DB: &str = "ipm";
const AGENT_ROLE: &str = "ipm_tls_agent";
const ADMIN_ROLE: &str = "ipm_tls_admin";
const ADMIN_PASSWORD: &str = "s3cret:with\\colon";
const MAC: &str = "52:54:00:aa:bb:01";

/// A certificate authority, and certificates it signed, as PEM files in a directory.
struct Pki {
    dir: tempfile::TempDir,
    ca_params: CertificateParams,
    ca_key: KeyPair,
    ca_pem: String,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki {
            dir,
            ca_params,
            ca_key,
            ca_pem,
        };
        pki.write("ca.crt", &pki.ca_pem, 0o644);
        pki
    }

    /// A certificate with `common_name` and the DNS names `names`: (certificate, key) PEM.
    fn issue(&self, common_name: &str, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let issuer = Issuer::new(self.ca_params.clone(), &self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(&self, name: &str, content: &str, mode: u32) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// The cluster, its CA and the agent's client certificate files.
struct Setup {
    cluster: Cluster,
    pki: Pki,
    /// Empty home directory: no ~/.postgresql or ~/.pgpass of the machine's user interferes.
    home: tempfile::TempDir,
}

async fn setup(tools: &PgTools) -> Setup {
    let pki = Pki::new("server");
    let (server_cert, server_key) = pki.issue("localhost", &["localhost"]);
    let (agent_cert, agent_key) = pki.issue(AGENT_ROLE, &[]);
    pki.write("agent.crt", &agent_cert, 0o644);
    pki.write("agent.key", &agent_key, 0o600);
    let hba = format!(
        "local all all trust\n\
         hostssl all {AGENT_ROLE} 127.0.0.1/32 cert\n\
         hostssl all all 127.0.0.1/32 scram-sha-256\n\
         hostnossl all all 127.0.0.1/32 reject\n"
    );
    let cluster = Cluster::primary_with(
        tools,
        "tls",
        &[
            "ssl = on",
            "ssl_cert_file = 'server.crt'",
            "ssl_key_file = 'server.key'",
            "ssl_ca_file = 'ca.crt'",
        ],
        &[
            ("server.crt", &server_cert),
            ("server.key", &server_key),
            ("ca.crt", &pki.ca_pem),
            ("pg_hba.conf", &hba),
        ],
    );
    let admin = common::connect(&cluster.socket_url("postgres")).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {DB}"))
        .await
        .unwrap();
    let mut client = common::connect(&cluster.socket_url(DB)).await;
    ipmanager::db::migrate(&mut client).await.unwrap();
    let password = ADMIN_PASSWORD.replace('\\', "\\\\");
    client
        .batch_execute(&format!(
            "CREATE ROLE {AGENT_ROLE} LOGIN IN ROLE ipmanager_agent;
             CREATE ROLE {ADMIN_ROLE} LOGIN PASSWORD E'{password}' IN ROLE ipmanager_admin;
             INSERT INTO ipmanager.subnets (name, cidr) VALUES ('office', '10.9.0.0/24');
             INSERT INTO ipmanager.hosts (mac, ip, hostname, subnet_id)
                 SELECT '{MAC}', '10.9.0.10', 'printer', id FROM ipmanager.subnets;"
        ))
        .await
        .unwrap();
    Setup {
        cluster,
        pki,
        home: tempfile::tempdir().unwrap(),
    }
}

impl Setup {
    /// The agent's settings: verify-full against `host`, the client certificate, no password.
    fn agent_url(&self, host: &str, sslmode: &str) -> String {
        format!(
            "host={host} port={} dbname={DB} user={AGENT_ROLE} sslmode={sslmode} \
             sslrootcert={} sslcert={} sslkey={}",
            self.cluster.port,
            self.pki.path("ca.crt"),
            self.pki.path("agent.crt"),
            self.pki.path("agent.key"),
        )
    }

    fn home(&self) -> &str {
        self.home.path().to_str().unwrap()
    }

    /// Runs the binary with `env` plus HOME; no configuration file.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let empty = self.home.path().join("empty.toml");
        std::fs::write(&empty, "").unwrap();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", empty.to_str().unwrap()]);
        let mut env = env.to_vec();
        env.push(("HOME", self.home()));
        binary::ipmanager(&all, &env)
    }

    fn agent_config(&self, database_url: &str, files: &Path) -> PathBuf {
        write_fast_agent_config(files, database_url, "tls")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_syncs_over_verify_full_with_a_client_certificate_and_no_password() {
    let Some(tools) = PgTools::find_or_skip() else {
        return;
    };
    let setup = setup(&tools).await;
    let files = tempfile::tempdir().unwrap();
    let config = setup.agent_config(&setup.agent_url("localhost", "verify-full"), files.path());
    let agent = AgentProcess::spawn(binary::command(
        &["agent", "--config", config.to_str().unwrap()],
        &[("RUST_LOG", "info"), ("HOME", setup.home())],
    ));
    let hosts = files.path().join("dhcp-hosts");
    let synced = common::wait_until(Duration::from_secs(20), || {
        let written = std::fs::read_to_string(&hosts).unwrap_or_default();
        async move { written.contains(MAC) }
    })
    .await;
    assert!(synced, "the agent never wrote the host:\n{}", agent.log());

    // Both of the agent's connections (LISTEN and the pool) are encrypted and authenticated by
    // the certificate.
    let admin = common::connect(&setup.cluster.socket_url(DB)).await;
    let connections = admin
        .query(
            "SELECT a.application_name, s.ssl, s.client_dn FROM pg_stat_activity a
             JOIN pg_stat_ssl s USING (pid) WHERE a.usename = $1",
            &[&AGENT_ROLE],
        )
        .await
        .unwrap();
    let names: Vec<String> = connections
        .iter()
        .map(|row| row.get("application_name"))
        .collect();
    assert!(
        names.iter().any(|n| n == "ipmanager-agent-listen"),
        "{names:?}"
    );
    for row in &connections {
        assert!(row.get::<_, bool>("ssl"), "{names:?}");
        assert_eq!(
            row.get::<_, Option<String>>("client_dn").as_deref(),
            Some(format!("/CN={AGENT_ROLE}").as_str())
        );
    }
    assert!(
        !agent.log().contains("password"),
        "no password anywhere:\n{}",
        agent.log()
    );
    assert_eq!(agent.terminate().await, Some(0));

    // The CLI over the same settings.
    let url = setup.agent_url("localhost", "verify-full");
    let output = setup.run(&["render"], &[("IPMANAGER_DATABASE_URL", &url)]);
    assert_exit(&output, 0, "render over verify-full");
    assert!(stdout(&output).contains(MAC), "{}", stdout(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificates_are_checked_as_libpq_checks_them() {
    let Some(tools) = PgTools::find_or_skip() else {
        return;
    };
    let setup = setup(&tools).await;
    let render = |url: &str| setup.run(&["render"], &[("IPMANAGER_DATABASE_URL", url)]);

    // The certificate is for localhost; 127.0.0.1 is another name: verify-full refuses,
    // verify-ca (chain only) accepts.
    let output = render(&setup.agent_url("127.0.0.1", "verify-full"));
    assert_exit(&output, 69, "verify-full against another name");
    assert!(
        error_text(&output).contains("certificate not valid for name \"127.0.0.1\""),
        "{}",
        error_text(&output)
    );
    assert_exit(
        &render(&setup.agent_url("127.0.0.1", "verify-ca")),
        0,
        "verify-ca ignores the name",
    );

    // The agent treats a refused certificate as an outage: it keeps the files it has and
    // retries (and would connect once the certificate or the settings are fixed).
    let files = tempfile::tempdir().unwrap();
    let hosts = files.path().join("dhcp-hosts");
    std::fs::write(&hosts, "# served before\n").unwrap();
    let config = setup.agent_config(&setup.agent_url("127.0.0.1", "verify-full"), files.path());
    let agent = AgentProcess::spawn(binary::command(
        &["agent", "--config", config.to_str().unwrap()],
        &[("RUST_LOG", "debug"), ("HOME", setup.home())],
    ));
    let retried = common::wait_until(Duration::from_secs(20), || {
        let refusals = agent
            .log()
            .lines()
            .filter(|line| line.contains("connect failed; retrying"))
            .filter(|line| line.contains("not valid for name"))
            .count();
        async move { refusals >= 3 }
    })
    .await;
    assert!(retried, "the agent did not retry:\n{}", agent.log());
    assert_eq!(
        std::fs::read_to_string(&hosts).unwrap(),
        "# served before\n"
    );
    assert_eq!(
        agent.terminate().await,
        Some(0),
        "the agent was still running"
    );

    // A CA that did not sign the server's certificate.
    let other = Pki::new("other");
    let url = setup
        .agent_url("localhost", "verify-ca")
        .replace(&setup.pki.path("ca.crt"), &other.path("ca.crt"));
    let output = render(&url);
    assert_exit(&output, 69, "verify-ca with the wrong CA");
    assert!(
        error_text(&output).contains("invalid peer certificate"),
        "{}",
        error_text(&output)
    );

    // require without a CA encrypts without checking; the password comes from PGPASSWORD.
    let port = setup.cluster.port.to_string();
    let require = format!("postgresql://{ADMIN_ROLE}@localhost:{port}/{DB}?sslmode=require");
    let output = setup.run(
        &["host", "list"],
        &[
            ("IPMANAGER_DATABASE_URL", &require),
            ("PGPASSWORD", ADMIN_PASSWORD),
        ],
    );
    assert_exit(&output, 0, "require without a CA");
    assert!(stdout(&output).contains("printer"), "{}", stdout(&output));

    // allow tries without TLS, is rejected by the hostnossl line, and tries again with TLS;
    // prefer (the default) starts with TLS.
    let rejected = || setup.cluster.log().matches("no encryption").count();
    for (mode, rejections) in [("allow", 1), ("prefer", 0)] {
        let before = rejected();
        let url = require.replace("sslmode=require", &format!("sslmode={mode}"));
        let output = setup.run(
            &["host", "list"],
            &[
                ("IPMANAGER_DATABASE_URL", &url),
                ("PGPASSWORD", ADMIN_PASSWORD),
            ],
        );
        assert_exit(&output, 0, mode);
        assert_eq!(rejected() - before, rejections, "{mode}");
    }

    // disable: the server's hostnossl line rejects it.
    let disable = require.replace("sslmode=require", "sslmode=disable");
    let output = setup.run(
        &["host", "list"],
        &[
            ("IPMANAGER_DATABASE_URL", &disable),
            ("PGPASSWORD", ADMIN_PASSWORD),
        ],
    );
    assert_exit(&output, 69, "disable is rejected by pg_hba.conf");
    assert!(
        error_text(&output).contains("no encryption"),
        "{}",
        error_text(&output)
    );
    assert!(!stderr(&output).contains("s3cret"), "{}", stderr(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_others_may_read_is_refused_naming_it() {
    let Some(tools) = PgTools::find_or_skip() else {
        return;
    };
    let setup = setup(&tools).await;
    let key = setup.pki.path("agent.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let url = setup.agent_url("localhost", "verify-full");
    let output = setup.run(&["render"], &[("IPMANAGER_DATABASE_URL", &url)]);
    assert_exit(&output, 78, "world-readable key, CLI");
    let error = error_text(&output);
    assert!(
        error.contains(&key) && error.contains("group or world access"),
        "{error}"
    );

    // The agent refuses to start (78) rather than retrying a configuration mistake.
    let files = tempfile::tempdir().unwrap();
    let config = setup.agent_config(&url, files.path());
    let output = binary::ipmanager(
        &["agent", "--config", config.to_str().unwrap()],
        &[("HOME", setup.home())],
    );
    assert_exit(&output, 78, "world-readable key, agent");
    assert!(
        error_text(&output).contains(&key),
        "{}",
        error_text(&output)
    );
    assert!(!files.path().join("dhcp-hosts").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_users_settings_work_password_file_and_environment_without_database_url() {
    let Some(tools) = PgTools::find_or_skip() else {
        return;
    };
    let setup = setup(&tools).await;
    let port = setup.cluster.port.to_string();
    let passfile = setup.home.path().join("pgpass");
    // Escaped colon and backslash in the password; the first lines do not match.
    let escaped = ADMIN_PASSWORD.replace('\\', "\\\\").replace(':', "\\:");
    std::fs::write(
        &passfile,
        format!(
            "# ipmanager test\n\
             otherhost:*:*:*:wrong\n\
             localhost:{port}:{DB}:someone_else:wrong\n\
             localhost:{port}:*:{ADMIN_ROLE}:{escaped}\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ca = setup.pki.path("ca.crt");
    let env = [
        ("PGHOST", "localhost"),
        ("PGPORT", port.as_str()),
        ("PGDATABASE", DB),
        ("PGUSER", ADMIN_ROLE),
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", ca.as_str()),
        ("PGPASSFILE", passfile.to_str().unwrap()),
        ("PGAPPNAME", "from-env"),
    ];
    let output = setup.run(&["host", "list"], &env);
    assert_exit(
        &output,
        0,
        "host list from PG* variables and the password file",
    );
    assert!(stdout(&output).contains("printer"), "{}", stdout(&output));

    let output = setup.run(&["check-config"], &env);
    assert_exit(&output, 0, "check-config");
    let shown = stdout(&output);
    assert!(
        shown.contains(&format!(
            "host=localhost port={port} user={ADMIN_ROLE} dbname={DB} \
             application_name=from-env sslmode=verify-full sslrootcert={ca}"
        )),
        "{shown}"
    );
    assert!(!shown.contains("s3cret"), "{shown}");

    // The connection string wins over the environment: a wrong database named in it is used.
    let output = setup.run(
        &["host", "list"],
        &[
            env.as_slice(),
            &[("IPMANAGER_DATABASE_URL", "dbname=nonexistent")],
        ]
        .concat(),
    );
    assert_exit(&output, 69, "the string's dbname wins");
    assert!(
        error_text(&output).contains("nonexistent"),
        "{}",
        error_text(&output)
    );

    // ~/.pgpass is the default, and one that others may read is ignored with a warning.
    let default = setup.home.path().join(".pgpass");
    std::fs::rename(&passfile, &default).unwrap();
    let without_passfile: Vec<_> = env
        .iter()
        .copied()
        .filter(|(k, _)| *k != "PGPASSFILE")
        .collect();
    assert_exit(
        &setup.run(&["host", "list"], &without_passfile),
        0,
        "~/.pgpass",
    );
    std::fs::set_permissions(&default, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = setup.run(&["host", "list"], &without_passfile);
    assert_exit(&output, 69, "a password file others may read is ignored");
    assert!(
        stderr(&output).contains("password file has group or world access"),
        "{}",
        stderr(&output)
    );
    assert!(!stderr(&output).contains("s3cret"), "{}", stderr(&output));
}
