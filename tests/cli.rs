//! The real `ipmanager` binary: help, configuration errors and exit codes, migrate, render, and
//! the agent as a process (SIGTERM, unwritable output directory).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::agent_process::AgentProcess;
use common::binary::{ipmanager, stderr, stdout, BIN};
use common::{wait_until, TestDb};

const DEADLINE: Duration = Duration::from_secs(20);

fn write_config(dir: &Path, content: &str) -> PathBuf {
    let path = dir.join("ipmanager.toml");
    std::fs::write(&path, content).unwrap();
    path
}

#[test]
fn help_lists_the_subcommands_with_examples() {
    let out = ipmanager(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for word in [
        "agent",
        "migrate",
        "render",
        "check-config",
        "Examples:",
        "--config",
    ] {
        assert!(text.contains(word), "--help lacks {word:?}:\n{text}");
    }
    let out = ipmanager(&["frobnicate"], &[]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn check_config_works_with_only_the_database_url_and_hides_the_password() {
    let out = ipmanager(
        &["check-config"],
        &[
            (
                "IPMANAGER_DATABASE_URL",
                "postgresql://agent:hunter2@db1,db2/ipm?target_session_attrs=read-write",
            ),
            ("IPMANAGER__AGENT__NAME", "dhcp7"),
            (
                "IPMANAGER__DNSMASQ__RELOAD_COMMAND",
                "systemctl reload dnsmasq",
            ),
        ],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!text.contains("hunter2") && !stderr(&out).contains("hunter2"));
    assert!(
        text.contains("host=db1,db2 port=5432 user=agent password=******** dbname=ipm"),
        "{text}"
    );
    assert!(text.contains("agent.name = \"dhcp7\""), "{text}");
    assert!(
        text.contains(r#"dnsmasq.reload_command = ["systemctl", "reload", "dnsmasq"]"#),
        "{text}"
    );
    assert!(text.contains(r#"dnsmasq.include_file = "/etc/dnsmasq.d/01-rust-managed.conf""#));
}

#[test]
fn file_settings_are_overridden_by_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        "database_url = \"postgresql://file@db/ipm\"\n[agent]\nname = \"from-file\"\nresync_interval = \"90s\"\n",
    );
    let file = file.to_str().unwrap();
    let out = ipmanager(&["check-config", "--config", file], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("agent.name = \"from-file\""));
    assert!(stdout(&out).contains("agent.resync_interval = \"1m 30s\""));
    let out = ipmanager(
        &["check-config", "--config", file],
        &[
            ("IPMANAGER_DATABASE_URL", "postgresql://env@db/ipm"),
            ("IPMANAGER__AGENT__NAME", "from-env"),
        ],
    );
    assert!(stdout(&out).contains("agent.name = \"from-env\""));
    assert!(stdout(&out).contains("host=db port=5432 user=env dbname=ipm"));
}

#[test]
fn configuration_errors_name_the_problem_and_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str); 5] = [
        (
            "database_url = \"postgresql://x@db/ipm\"\n[dnsmasq]\nlayuot = \"conf\"\n",
            "layuot",
        ),
        ("database_url = \"postgresql://x@db/ipm\"\nfoo = 1\n", "foo"),
        (
            "database_url = \"postgresql://x@db/ipm\"\n[dnsmasq]\nlayout = \"zone\"\n",
            "zone",
        ),
        ("[agent]\nname = \"a\"\n", "database_url"),
        (
            "database_url = \"postgresql://x@db/ipm\"\n[dnsmasq]\nhosts_file = \"relative/path\"\n",
            "absolute",
        ),
    ];
    for (content, expected) in cases {
        let file = write_config(dir.path(), content);
        let out = ipmanager(&["check-config", "-c", file.to_str().unwrap()], &[]);
        assert_eq!(out.status.code(), Some(78), "{content}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "error for {content:?} does not name {expected:?}: {}",
            stderr(&out)
        );
    }
    let out = ipmanager(&["check-config", "-c", "/nonexistent/ipmanager.toml"], &[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("/nonexistent/ipmanager.toml does not exist"));
}

#[test]
fn an_unreachable_database_exits_69() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgresql://postgres@127.0.0.1:{port}/none?connect_timeout=2");
    let out = ipmanager(&["migrate"], &[("IPMANAGER_DATABASE_URL", &url)]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
}

#[tokio::test]
async fn migrate_is_idempotent_and_render_prints_the_files() {
    let db = TestDb::empty().await;
    let env = [("IPMANAGER_DATABASE_URL", db.url.as_str())];
    let out = ipmanager(&["migrate"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("applied V1__initial_schema"),
        "{}",
        stdout(&out)
    );
    let out = ipmanager(&["migrate"], &env);
    assert_eq!(stdout(&out).trim(), "schema is up to date");

    db.client()
        .await
        .batch_execute(
            "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lab', '192.168.77.0/24');
             INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:07:01', '192.168.77.10', 'printer')",
        )
        .await
        .unwrap();
    let out = ipmanager(&["render"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("# ==> /var/lib/ipmanager/dhcp-hosts <=="),
        "{text}"
    );
    assert!(
        text.contains("02:00:00:00:07:01,192.168.77.10,printer"),
        "{text}"
    );
    assert!(
        text.contains("# ==> /etc/dnsmasq.d/01-rust-managed.conf <=="),
        "{text}"
    );

    // The incremental layout: every shard file under its path, the include naming the dirs.
    let id: i64 = db
        .client()
        .await
        .query_one(
            "SELECT id FROM ipmanager.hosts WHERE hostname = 'printer'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let shard = format!("{:04x}", id.rem_euclid(16));
    let env = [
        ("IPMANAGER_DATABASE_URL", db.url.as_str()),
        ("IPMANAGER__DNSMASQ__LAYOUT", "incremental"),
        ("IPMANAGER__DNSMASQ__SHARDS", "16"),
    ];
    let out = ipmanager(&["render"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let expected = format!(
        "# ==> /var/lib/ipmanager/dhcp-hosts.d/{shard} <==\n\
         02:00:00:00:07:01,192.168.77.10,printer\n\
         # ==> /var/lib/ipmanager/hosts.d/{shard} <==\n\
         192.168.77.10 printer\n"
    );
    assert!(text.contains(&expected), "{text}");
    assert!(
        text.contains(
            "dhcp-hostsdir=/var/lib/ipmanager/dhcp-hosts.d\nhostsdir=/var/lib/ipmanager/hosts.d\n"
        ),
        "{text}"
    );
    assert!(!text.contains("dhcp-hostsfile="), "{text}");
}

async fn wait_for_file(path: &Path, what: &str, condition: impl Fn(&str) -> bool) {
    let held = wait_until(DEADLINE, || {
        let held = condition(&std::fs::read_to_string(path).unwrap_or_default());
        async move { held }
    })
    .await;
    assert!(
        held,
        "timed out waiting for {what}: {}",
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

#[tokio::test]
async fn the_agent_keeps_the_old_file_while_its_directory_is_unwritable_and_recovers() {
    let db = TestDb::new().await;
    db.client()
        .await
        .batch_execute(
            "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lab', '192.168.78.0/24');
             INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:08:01', '192.168.78.10', 'scanner')",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let old = "02:00:00:00:08:99,192.168.78.99,old\n";
    std::fs::write(out.join("dhcp-hosts"), old).unwrap();
    // Root ignores permission bits, so as root the agent runs as nobody; either way it cannot
    // write into a 0555 directory it does not own.
    let running_as_root = nix::unistd::geteuid().is_root();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o555)).unwrap();
    let bin = dir.path().join("ipmanager");
    std::fs::copy(BIN, &bin).unwrap();
    let o = out.display();
    let file = write_config(
        dir.path(),
        &format!(
            "database_url = \"{}\"\n[agent]\nmax_backoff = \"200ms\"\n[dnsmasq]\ninclude_file = \"{o}/include.conf\"\nhosts_file = \"{o}/dhcp-hosts\"\naddn_hosts_file = \"{o}/hosts\"\nreload_command = [\"true\"]\nrestart_command = [\"true\"]\ncheck_command = []\n",
            db.url
        ),
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut command = Command::new(&bin);
    command
        .args(["agent", "--config", file.to_str().unwrap()])
        .env("RUST_LOG", "info");
    if running_as_root {
        use std::os::unix::process::CommandExt;
        command.uid(65534).gid(65534);
    }
    let agent = AgentProcess::spawn(command);
    agent.wait_log("cannot create a temporary file").await;
    assert_eq!(
        std::fs::read_to_string(out.join("dhcp-hosts")).unwrap(),
        old
    );

    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    wait_for_file(&out.join("dhcp-hosts"), "the database's host", |c| {
        c.contains("02:00:00:00:08:01,192.168.78.10,scanner") && !c.contains("old")
    })
    .await;
    agent.wait_log("in sync").await;
    assert_eq!(agent.terminate().await, Some(0), "SIGTERM is a clean exit");
}

/// database_url forms with their password: URL user info and query (percent-encoded), key=value
/// plain, with blanks around `=`, quoted, and with blanks, quotes, `@`, `%` and `=` inside.
fn password_forms(port: u16) -> Vec<(String, &'static str)> {
    vec![
        (
            format!("postgresql://agent:hunter2@127.0.0.1:{port}/ipm?connect_timeout=2"),
            "hunter2",
        ),
        (
            format!("postgresql://agent@127.0.0.1:{port}/ipm?password=hunter2&connect_timeout=2"),
            "hunter2",
        ),
        (
            format!("postgresql://agent:a%20b%27c%40d%25e%3Dhunter2@127.0.0.1:{port}/ipm?connect_timeout=2"),
            "hunter2",
        ),
        (
            format!("host=127.0.0.1 port={port} user=x password=hunter2 dbname=y connect_timeout=2"),
            "hunter2",
        ),
        (
            format!("host=127.0.0.1 port={port} user=x password = hunter2 dbname=y connect_timeout=2"),
            "hunter2",
        ),
        (
            format!("host=127.0.0.1 port={port} user=x password='a hunter2 c' dbname=y connect_timeout=2"),
            "hunter2",
        ),
        (
            format!(r"host=127.0.0.1 port={port} user=x password='it\'s@hunter2%=' dbname=y connect_timeout=2"),
            "hunter2",
        ),
    ]
}

#[test]
fn no_password_form_shows_up_in_check_config_or_connection_errors() {
    let port = common::free_port(); // nothing listens there: connecting fails at once
    for (url, secret) in password_forms(port) {
        let env = [("IPMANAGER_DATABASE_URL", url.as_str())];
        let out = ipmanager(&["check-config"], &env);
        assert_eq!(out.status.code(), Some(0), "{url}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(
            !text.contains(secret),
            "check-config shows the password of {url}:\n{text}"
        );
        assert!(text.contains("password=********"), "{text}");
        assert!(text.contains(&format!("port={port}")), "{text}");
        for command in [&["migrate"][..], &["host", "list"], &["render"]] {
            let out = ipmanager(command, &env);
            assert_eq!(
                out.status.code(),
                Some(69),
                "{command:?} {url}: {}",
                stderr(&out)
            );
            let text = stderr(&out) + &stdout(&out);
            assert!(
                !text.contains(secret),
                "{command:?} shows the password of {url}:\n{text}"
            );
            assert!(
                text.contains("127.0.0.1"),
                "the error names the server: {text}"
            );
        }
    }
    // A string tokio-postgres cannot parse: its complaint would quote the word after the blank.
    let out = ipmanager(
        &["check-config"],
        &[("IPMANAGER_DATABASE_URL", "host=db password=top hunter2")],
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));
    assert!(stderr(&out).contains("single quotes"), "{}", stderr(&out));
}

#[tokio::test]
async fn the_agents_start_up_log_shows_the_target_without_the_password() {
    let port = common::free_port(); // nothing listens there: connecting fails at once
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().display();
    let file = write_config(
        dir.path(),
        &format!(
            "[agent]\nmax_backoff = \"200ms\"\n[dnsmasq]\ninclude_file = \"{o}/include.conf\"\nhosts_file = \"{o}/dhcp-hosts\"\naddn_hosts_file = \"{o}/hosts\"\nreload_command = [\"true\"]\nrestart_command = [\"true\"]\ncheck_command = []\n",
        ),
    );
    for (url, secret) in password_forms(port) {
        let mut command = Command::new(BIN);
        command
            .args(["agent", "--config", file.to_str().unwrap()])
            .env("IPMANAGER_DATABASE_URL", &url)
            .env("RUST_LOG", "debug");
        let agent = AgentProcess::spawn(command);
        agent.wait_log("agent starting").await;
        agent.wait_log(&format!("port={port}")).await;
        agent.wait_log("retrying").await;
        let log = agent.log();
        assert_eq!(agent.terminate().await, Some(0));
        assert!(
            !log.contains(secret),
            "the agent logs the password of {url}:\n{log}"
        );
    }
}

#[test]
fn a_missing_database_url_says_how_to_give_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), "[agent]\nname = \"a\"\n");
    for args in [
        &["check-config", "-c", file.to_str().unwrap()][..],
        &["host", "list", "-c", file.to_str().unwrap()],
    ] {
        let out = ipmanager(args, &[]);
        assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
        let text = stderr(&out);
        for way in ["IPMANAGER_DATABASE_URL", "--config FILE", "database_url = "] {
            assert!(
                text.contains(way),
                "{args:?} does not mention {way}: {text}"
            );
        }
    }
}

#[test]
fn file_mode_is_read_as_octal_digits_and_errors_repeat_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let check = |mode: &str| {
        let file = write_config(
            dir.path(),
            &format!("database_url = \"postgresql://x@db/ipm\"\n[dnsmasq]\nfile_mode = {mode}\n"),
        );
        ipmanager(&["check-config", "-c", file.to_str().unwrap()], &[])
    };
    for (mode, shown) in [
        ("\"0644\"", "\"0644\""),
        ("\"640\"", "\"0640\""),
        ("604", "\"0604\""),
    ] {
        let out = check(mode);
        assert_eq!(out.status.code(), Some(0), "{mode}: {}", stderr(&out));
        assert!(
            stdout(&out).contains(&format!("dnsmasq.file_mode = {shown}")),
            "{mode}: {}",
            stdout(&out)
        );
    }
    for (mode, echoed) in [
        ("7777", "\"7777\""),
        ("\"7777\"", "\"7777\""),
        ("\"0600\"", "\"0600\""),
        ("\"0x1a4\"", "\"0x1a4\""),
    ] {
        let out = check(mode);
        assert_eq!(out.status.code(), Some(78), "{mode}: {}", stderr(&out));
        let text = stderr(&out);
        assert!(
            text.contains(&format!("dnsmasq.file_mode {echoed}")),
            "{mode}: {text}"
        );
        assert!(!text.contains("17141"), "{text}");
    }
    let out = ipmanager(
        &["check-config"],
        &[
            ("IPMANAGER_DATABASE_URL", "postgresql://x@db/ipm"),
            ("IPMANAGER__DNSMASQ__FILE_MODE", "0640"),
        ],
    );
    assert!(
        stdout(&out).contains("dnsmasq.file_mode = \"0640\""),
        "{}",
        stderr(&out)
    );
}

/// The agent's first log lines, with stderr a pipe or (through `script`) a terminal.
fn agent_start_up_log(terminal: bool, no_color: Option<&str>) -> String {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().display();
    let file = write_config(
        dir.path(),
        &format!(
            "database_url = \"postgresql://x@127.0.0.1:{}/x\"\n[dnsmasq]\ninclude_file = \"{o}/include.conf\"\nhosts_file = \"{o}/dhcp-hosts\"\naddn_hosts_file = \"{o}/hosts\"\n",
            common::free_port()
        ),
    );
    let agent = format!("{BIN} agent -c {}", file.display());
    let mut command = if terminal {
        let mut script = Command::new("script");
        script.args(["-qec", &format!("exec {agent}"), "/dev/null"]);
        script
    } else {
        let mut shell = Command::new("sh");
        shell.args(["-c", &format!("exec {agent} 2>&1")]);
        shell
    };
    command.env_remove("NO_COLOR").env_remove("JOURNAL_STREAM");
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    let output = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut log = String::new();
    while !log.contains("agent starting") {
        match received.recv_timeout(DEADLINE) {
            Ok(line) => log.push_str(&(line + "\n")),
            Err(_) => break,
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
    assert!(log.contains("agent starting"), "no start-up line: {log}");
    log
}

#[test]
fn log_lines_have_colour_only_on_a_terminal_without_no_color() {
    let escape = '\x1b';
    let piped = agent_start_up_log(false, None);
    assert!(!piped.contains(escape), "colour codes in a pipe: {piped:?}");
    let terminal = agent_start_up_log(true, None);
    assert!(
        terminal.contains(escape),
        "no colour on a terminal: {terminal:?}"
    );
    let no_color = agent_start_up_log(true, Some("1"));
    assert!(
        !no_color.contains(escape),
        "colour despite NO_COLOR: {no_color:?}"
    );
}

#[tokio::test]
async fn migrate_prints_no_notices_on_a_fresh_or_a_current_database() {
    let db = TestDb::empty().await;
    let env = [("IPMANAGER_DATABASE_URL", db.url.as_str())];
    for run in ["fresh", "current"] {
        let out = ipmanager(&["migrate"], &env);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = stderr(&out) + &stdout(&out);
        assert!(
            !text.contains("NOTICE"),
            "migrate on a {run} database: {text}"
        );
    }
    // The setting is the migration's own: the connection it was given is as before.
    let mut client = db.client().await;
    ipmanager::db::migrate(&mut client).await.unwrap();
    let level: String = client
        .query_one("SHOW client_min_messages", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(level, "notice");
}

#[tokio::test]
async fn the_test_server_is_new_enough_and_its_version_is_what_the_check_reads() {
    let db = TestDb::new().await;
    let connector = ipmanager::db::connector(&db.url, &Default::default(), "version-test").unwrap();
    let client = ipmanager::db::connect(&connector)
        .await
        .expect("PostgreSQL 13+ is accepted");
    let num: String = client
        .query_one("SHOW server_version_num", &[])
        .await
        .unwrap()
        .get(0);
    let num: i32 = num.parse().unwrap();
    assert!(num >= ipmanager::db::MIN_SERVER_MAJOR * 10_000);
    assert!(ipmanager::db::check_server_version(num, "x").is_ok());
}

#[test]
fn check_config_shows_the_incremental_layouts_keys_and_names_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let check = |dnsmasq: &str| {
        let file = write_config(
            dir.path(),
            &format!("database_url = \"postgresql://x@db/ipm\"\n[dnsmasq]\n{dnsmasq}"),
        );
        ipmanager(&["check-config", "-c", file.to_str().unwrap()], &[])
    };
    let out = check(
        "layout = \"incremental\"\nshards = 256\nnames_shards = 8192\ncompaction_interval = \"90s\"\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for line in [
        "dnsmasq.layout = \"incremental\"",
        "dnsmasq.hosts_dir = \"/var/lib/ipmanager/dhcp-hosts.d\"",
        "dnsmasq.names_dir = \"/var/lib/ipmanager/hosts.d\"",
        "dnsmasq.shards = 256",
        "dnsmasq.names_shards = 8192",
        "dnsmasq.compaction_interval = \"1m 30s\"",
    ] {
        assert!(text.contains(line), "{line:?} missing in:\n{text}");
    }
    let out = check("layout = \"incremental\"\nnames_dir = \"/var/lib/ipmanager/dhcp-hosts.d\"\n");
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("must be two separate directories"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_config_shows_the_release_keys_and_names_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let check = |dnsmasq: &str| {
        let file = write_config(
            dir.path(),
            &format!("database_url = \"postgresql://x@db/ipm\"\n[dnsmasq]\n{dnsmasq}"),
        );
        ipmanager(&["check-config", "-c", file.to_str().unwrap()], &[])
    };
    let out = check("");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("dnsmasq.lease_file = \"/var/lib/misc/dnsmasq.leases\""),
        "{text}"
    );
    assert!(
        text.contains("dnsmasq.release_command = [\"dhcp_release\"]"),
        "{text}"
    );
    assert!(
        text.contains("dnsmasq.release6_command = [\"dhcp_release6\"]"),
        "{text}"
    );
    assert!(!text.contains("release_interface"), "{text}");
    let out = check("release_command = []\nrelease6_command = []\nrelease_interface = \"br0\"\n");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("dnsmasq.release_command = []"), "{text}");
    assert!(text.contains("dnsmasq.release6_command = []"), "{text}");
    assert!(
        text.contains("dnsmasq.release_interface = \"br0\""),
        "{text}"
    );
    let out = check("lease_file = \"leases\"\n");
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("dnsmasq.lease_file"),
        "{}",
        stderr(&out)
    );
}
