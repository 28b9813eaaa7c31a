//! The production files: the systemd unit (its sandbox scored by `systemd-analyze security`),
//! sysusers.d and tmpfiles.d entries, and the example configuration, which must load with the
//! real binary and document every key with its true default.
//!
//! Tests needing systemd's tools skip with a message when the tools are missing, unless
//! `IPMANAGER_REQUIRE_E2E` is set, which turns a missing tool into a failure.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UNIT: &str = "systemd/ipmanager-agent.service";
const SYSUSERS: &str = "systemd/sysusers.d/ipmanager.conf";
const TMPFILES: &str = "systemd/tmpfiles.d/ipmanager.conf";
const EXAMPLE_CONFIG: &str = "packaging/ipmanager.toml";
const MAX_EXPOSURE: f64 = 2.0;

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    fs::read_to_string(repo_file(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

/// Whether a missing prerequisite must fail the test instead of skipping it.
fn required() -> bool {
    std::env::var_os("IPMANAGER_REQUIRE_E2E").is_some()
}

/// Runs `program args`, or returns None (after saying so loudly) when `program` is not installed
/// and the tools are not required.
fn run_tool(program: &str, args: &[&str], why: &str) -> Option<Output> {
    match Command::new(program).args(args).output() {
        Ok(output) => Some(output),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && !required() => {
            eprintln!(
                "\n*** SKIPPED: {why}: {program} is not installed (apt install systemd); \
                 set IPMANAGER_REQUIRE_E2E=1 to make this a failure ***\n"
            );
            None
        }
        Err(error) => panic!("cannot run {program} ({why}): {error}"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The directive lines (`Key=value`) of the unit, comments and blank lines left out.
fn directives(unit: &str) -> Vec<(&str, &str)> {
    unit.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#') && !line.starts_with('['))
        .filter_map(|line| line.split_once('='))
        .collect()
}

fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    directives(unit)
        .into_iter()
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn unit_sandbox_exposure_is_at_most_two() {
    let unit = repo_file(UNIT);
    let Some(output) = run_tool(
        "systemd-analyze",
        &["security", "--offline=true", unit.to_str().unwrap()],
        "sandbox score of the unit",
    ) else {
        return;
    };
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    let line = stdout
        .lines()
        .find(|line| line.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "systemd-analyze security --offline=true printed no exposure level \
                 (systemd 250 or later is needed)\nstdout:\n{stdout}\nstderr:\n{stderr}"
            )
        });
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure from {line:?}"));
    eprintln!("{line}");
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} is above {MAX_EXPOSURE}:\n{stdout}"
    );
    // systemd ignores an unknown or misplaced key with only a warning; treat it as an error.
    assert!(
        !stderr.contains("Unknown key") && !stderr.contains("ignoring"),
        "systemd-analyze warned about the unit:\n{stderr}"
    );
}

#[test]
fn unit_verifies_with_the_real_binary() {
    // ExecStart points at /usr/bin/ipmanager, which need not exist here: verify a copy that
    // runs the binary cargo just built.
    let unit = read(UNIT);
    assert!(unit.contains("ExecStart=/usr/bin/ipmanager agent"));
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("ipmanager-agent.service");
    fs::write(
        &copy,
        unit.replace("/usr/bin/ipmanager", env!("CARGO_BIN_EXE_ipmanager")),
    )
    .unwrap();
    let Some(output) = run_tool(
        "systemd-analyze",
        &["verify", "--man=false", copy.to_str().unwrap()],
        "systemd-analyze verify of the unit",
    ) else {
        return;
    };
    let stderr = text(&output.stderr);
    assert!(
        output.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(
        !stderr.contains("ipmanager-agent"),
        "systemd-analyze verify warned about the unit:\n{stderr}"
    );
}

#[test]
fn unit_has_the_service_contract() {
    let unit = read(UNIT);
    for (key, value) in [
        ("Type", "notify"),
        (
            "ExecStart",
            "/usr/bin/ipmanager agent --config /etc/ipmanager/ipmanager.toml",
        ),
        ("WatchdogSec", "2min"),
        ("Restart", "on-failure"),
        ("RestartSec", "2s"),
        ("RestartPreventExitStatus", "78"),
        ("TimeoutStartSec", "infinity"),
        ("User", "ipmanager"),
        ("Group", "ipmanager"),
        ("StateDirectory", "ipmanager"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", "CAP_KILL"),
        ("AmbientCapabilities", "CAP_KILL"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("UMask", "0022"),
        ("Wants", "network-online.target"),
    ] {
        assert!(
            values(&unit, key).contains(&value),
            "{UNIT} lacks {key}={value}"
        );
    }
    assert!(values(&unit, "After")
        .iter()
        .any(|v| v.contains("network-online.target") && v.contains("postgresql.service")));
    // In a user namespace CAP_KILL would not reach dnsmasq, which runs outside it.
    assert!(!values(&unit, "PrivateUsers").contains(&"yes"));
    // The agent must reach a database anywhere.
    assert!(values(&unit, "IPAddressDeny").is_empty());
    assert!(values(&unit, "PrivateNetwork").is_empty());
    // Nothing but the state directory is writable, and it is where the example puts the files.
    assert!(values(&unit, "ReadWritePaths").is_empty());
}

#[test]
fn every_hardening_directive_is_explained() {
    // From the first sandbox section to [Install], each block of directives (lines without a
    // blank line between them, such as User= and Group=) starts with a comment saying why.
    let unit = read(UNIT);
    let start = unit
        .find("# --- Identity")
        .expect("sandbox sections are marked");
    let end = unit.find("[Install]").expect("an [Install] section");
    let mut block_commented = false;
    let mut block_started = false;
    for line in unit[start..end].lines().map(str::trim) {
        if line.is_empty() {
            block_started = false;
        } else if !block_started {
            block_started = true;
            block_commented = line.starts_with('#');
        }
        if !line.is_empty() && !line.starts_with('#') {
            assert!(
                block_commented,
                "{UNIT}: {line:?} has no comment saying why"
            );
        }
    }
}

#[test]
fn sysusers_and_tmpfiles_entries() {
    let sysusers = read(SYSUSERS);
    let user_line = sysusers
        .lines()
        .find(|line| line.starts_with("u "))
        .expect("a u line");
    let fields: Vec<&str> = user_line.split_whitespace().collect();
    assert_eq!(fields[1], "ipmanager");
    assert_eq!(fields[2], "-", "a dynamically allocated system uid");
    assert!(user_line.contains("/var/lib/ipmanager"), "{user_line}");
    assert!(user_line.ends_with("/usr/sbin/nologin"), "{user_line}");

    let tmpfiles = read(TMPFILES);
    let entries: Vec<Vec<&str>> = tmpfiles
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert!(entries.contains(&vec![
        "d",
        "/var/lib/ipmanager",
        "0755",
        "ipmanager",
        "ipmanager",
        "-",
        "-"
    ]));
    assert!(entries.contains(&vec![
        "d",
        "/etc/ipmanager",
        "0750",
        "root",
        "ipmanager",
        "-",
        "-"
    ]));
}

#[test]
fn sysusers_and_tmpfiles_apply_to_a_scratch_root() {
    // Applying them for real needs root (tmpfiles chowns); the content test above runs anyway.
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: applying sysusers.d/tmpfiles.d to a scratch root needs root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for (dir, file) in [
        ("usr/lib/sysusers.d", SYSUSERS),
        ("usr/lib/tmpfiles.d", TMPFILES),
    ] {
        fs::create_dir_all(r.join(dir)).unwrap();
        fs::copy(repo_file(file), r.join(dir).join("ipmanager.conf")).unwrap();
    }
    fs::create_dir_all(r.join("etc")).unwrap();
    let root_arg = format!("--root={}", r.display());
    let Some(sysusers) = run_tool("systemd-sysusers", &[&root_arg], "sysusers.d entry") else {
        return;
    };
    assert!(sysusers.status.success(), "{}", text(&sysusers.stderr));
    let passwd = fs::read_to_string(r.join("etc/passwd")).unwrap();
    let entry = passwd
        .lines()
        .find(|line| line.starts_with("ipmanager:"))
        .unwrap_or_else(|| panic!("no ipmanager user in\n{passwd}"));
    let fields: Vec<&str> = entry.split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    let gid: u32 = fields[3].parse().unwrap();
    assert!(uid > 0 && uid < 1000, "a system uid: {entry}");
    assert_eq!(&fields[5..], ["/var/lib/ipmanager", "/usr/sbin/nologin"]);

    let Some(tmpfiles) = run_tool(
        "systemd-tmpfiles",
        &[&root_arg, "--create", "ipmanager.conf"],
        "tmpfiles.d entry",
    ) else {
        return;
    };
    assert!(tmpfiles.status.success(), "{}", text(&tmpfiles.stderr));
    let state = fs::metadata(r.join("var/lib/ipmanager")).unwrap();
    assert_eq!(
        (state.mode() & 0o7777, state.uid(), state.gid()),
        (0o755, uid, gid)
    );
    let etc = fs::metadata(r.join("etc/ipmanager")).unwrap();
    assert_eq!((etc.mode() & 0o7777, etc.uid(), etc.gid()), (0o750, 0, gid));
}

/// `ipmanager check-config` with only `file` and, when given, `database_url` from the
/// environment; returns the `key = value` lines of the effective configuration.
fn effective_config(file: &Path, database_url: Option<&str>) -> Vec<(String, String)> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ipmanager"));
    command.arg("check-config").arg("--config").arg(file);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("IPMANAGER") {
            command.env_remove(key);
        }
    }
    if let Some(url) = database_url {
        command.env("IPMANAGER_DATABASE_URL", url);
    }
    let output = command.output().unwrap();
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "check-config --config {} failed ({}):\n{}{}",
        file.display(),
        output.status,
        stdout,
        text(&output.stderr)
    );
    stdout
        .lines()
        .skip(1) // "configuration is valid (from ...)"
        .map(|line| {
            let (key, value) = line
                .split_once(" = ")
                .unwrap_or_else(|| panic!("unexpected line {line:?}"));
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

#[test]
fn example_config_loads_and_lists_every_key() {
    let example = read(EXAMPLE_CONFIG);
    let settings = effective_config(&repo_file(EXAMPLE_CONFIG), None);
    assert!(settings.len() >= 17, "{settings:?}");
    let mut section = "";
    let mut documented = Vec::new();
    for line in example.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name;
            continue;
        }
        // Keys may be set or shown commented out (`# name = "dhcp1"`).
        let candidate = line.trim_start_matches('#').trim_start();
        if let Some((key, _)) = candidate.split_once(" = ") {
            if !key.contains(' ') {
                documented.push(if section.is_empty() {
                    key.to_owned()
                } else {
                    format!("{section}.{key}")
                });
            }
        }
    }
    for (key, _) in &settings {
        assert!(
            documented.contains(key),
            "{EXAMPLE_CONFIG} does not mention {key}"
        );
    }
    let effective = |key: &str| {
        settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap()
    };
    // Laid out for the unit's sandbox: everything it writes lives in its StateDirectory.
    for key in [
        "dnsmasq.include_file",
        "dnsmasq.hosts_file",
        "dnsmasq.addn_hosts_file",
        "dnsmasq.hosts_dir",
        "dnsmasq.names_dir",
    ] {
        assert!(
            effective(key).starts_with("\"/var/lib/ipmanager/"),
            "{key} = {} is outside /var/lib/ipmanager, which the unit makes the only writable place",
            effective(key)
        );
    }
}

#[test]
fn example_config_states_the_true_defaults() {
    // The built-in defaults, from a file that sets nothing but what has no default.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.toml");
    fs::write(&empty, "").unwrap();
    let defaults = effective_config(&empty, Some("postgresql://x@localhost/ipmanager"));
    let example_settings = effective_config(&repo_file(EXAMPLE_CONFIG), None);
    let example = read(EXAMPLE_CONFIG);
    for (key, default) in &defaults {
        if key == "database_url" || key == "agent.name" {
            continue; // no default / the hostname
        }
        // Each key's comment names its default exactly as check-config prints it ...
        let comment = comment_above(&example, key);
        assert!(
            comment.contains(&format!("Default: {default}")),
            "{EXAMPLE_CONFIG}: the comment of {key} should say `Default: {default}`, not {comment:?}"
        );
        // ... and the example sets the default, except where the unit's layout needs otherwise.
        let (_, set) = example_settings.iter().find(|(k, _)| k == key).unwrap();
        if key != "dnsmasq.include_file" {
            assert_eq!(set, default, "{key} in {EXAMPLE_CONFIG}");
        }
    }
}

/// The comment lines right above `section.key` (or a top-level `key`) in the example file.
fn comment_above(example: &str, dotted: &str) -> String {
    let (section, key) = dotted.split_once('.').unwrap_or(("", dotted));
    let mut current = "";
    let mut comment: Vec<&str> = Vec::new();
    for line in example.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name;
            comment.clear();
        } else if line.starts_with(&format!("{key} = ")) && current == section {
            return comment.join("\n");
        } else if line.starts_with('#') {
            comment.push(line);
        } else {
            comment.clear();
        }
    }
    panic!("{dotted} is not set in {EXAMPLE_CONFIG}");
}
