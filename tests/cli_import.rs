//! `ipmanager import` and `ipmanager export` through the real binary against a real PostgreSQL:
//! the report on stdout, the error on stderr, the exit code, and what the database holds
//! afterwards (all or nothing, idempotent, and export → import round trips for every format).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::binary::{assert_exit, error_text, stderr, stdout, BIN};
use common::TestDb;
use serde_json::Value;

/// A fixture under `tests/fixtures/import/` (the shared samples) as a path argument.
fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/import/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A clean sample file of this test under `tests/fixtures/import/cli/`.
fn cli_fixture(name: &str) -> String {
    fixture(&format!("cli/{name}"))
}

/// The table report of an import: entries per section title ("added", "would add", "not added",
/// "already present", "skipped", "rejected"), each `line N: what[: reason]`, and the closing outcome line.
#[derive(Debug)]
struct Report {
    sections: BTreeMap<String, Vec<String>>,
    outcome: String,
    text: String,
}

impl Report {
    /// The report an import printed on stdout.
    fn of(output: &Output) -> Report {
        Report::parse(&stdout(output))
    }

    fn parse(text: &str) -> Report {
        let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut counts: Vec<(String, usize)> = Vec::new();
        let mut outcome = String::new();
        for line in text.lines() {
            if let Some(entry) = line.strip_prefix("  ") {
                let (title, _) = counts
                    .last()
                    .unwrap_or_else(|| panic!("entry outside a section:\n{text}"));
                sections.get_mut(title).unwrap().push(entry.to_owned());
            } else if let Some((title, count)) =
                line.strip_suffix("):").and_then(|l| l.split_once(" ("))
            {
                sections.insert(title.to_owned(), Vec::new());
                counts.push((title.to_owned(), count.parse().unwrap()));
            } else {
                assert!(outcome.is_empty(), "two outcome lines:\n{text}");
                outcome = line.to_owned();
            }
        }
        for (title, count) in &counts {
            assert_eq!(sections[title].len(), *count, "{title} miscounted:\n{text}");
        }
        Report {
            sections,
            outcome,
            text: text.to_owned(),
        }
    }

    /// The entries of a section; empty when the report has no such section.
    fn section(&self, title: &str) -> Vec<String> {
        self.sections.get(title).cloned().unwrap_or_default()
    }

    /// The entry of `section` at input line `line` (the first, for a line kept twice).
    fn entry(&self, section: &str, line: usize) -> String {
        let prefix = format!("line {line}: ");
        self.section(section)
            .into_iter()
            .find(|e| e.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {section} entry for line {line}:\n{}", self.text))
    }

    /// The section titles present, in alphabetical order.
    fn titles(&self) -> Vec<String> {
        self.sections.keys().cloned().collect()
    }
}

/// The subnets the clean samples need (the Kea sample brings its own, 10.74.0.0/24).
const CLEAN_SUBNETS: &[&[&str]] = &[
    &["10.71.0.0/24", "--name", "o71"],
    &["2001:db8:71::/64", "--name", "o71v6"],
    &["10.72.0.0/24", "--name", "o72"],
    &["2001:db8:72::/64", "--name", "o72v6"],
    &["10.73.0.0/24", "--name", "o73", "--gateway", "10.73.0.1"],
];

/// The subnet the Kea sample describes, as `import` creates it.
const KEA_SUBNET: &[&str] = &[
    "10.74.0.0/24",
    "--name",
    "10.74.0.0_24",
    "--range",
    "10.74.0.100-10.74.0.199",
    "--gateway",
    "10.74.0.1",
    "--lease-time",
    "1h",
];

/// One test's database, and the binary pointed at it with a clean environment.
struct Db {
    db: TestDb,
}

impl Db {
    async fn new() -> Db {
        Db {
            db: TestDb::new().await,
        }
    }

    /// A database with `subnets` added through `ipmanager subnet add`.
    async fn with_subnets(subnets: &[&[&str]]) -> Db {
        let db = Db::new().await;
        for subnet in subnets {
            let mut args = vec!["subnet", "add"];
            args.extend_from_slice(subnet);
            db.ok(&args);
        }
        db
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("IPMANAGER_DATABASE_URL", &self.db.url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("the binary runs")
    }

    /// Runs with `input` on standard input.
    fn run_with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must succeed and returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_exit(&out, 0, &format!("ipmanager {}", args.join(" ")));
        stdout(&out)
    }

    /// `ipmanager import FILE --format FORMAT MORE...`, expecting exit `code`.
    fn import(&self, file: &str, format: &str, more: &[&str], code: i32) -> Output {
        let mut args = vec!["import", file, "--format", format];
        args.extend_from_slice(more);
        let out = self.run(&args);
        assert_exit(&out, code, &format!("ipmanager {}", args.join(" ")));
        out
    }

    /// Every reservation as `mac ip hostname lease-seconds|- subnet-cidr`, by address.
    async fn hosts(&self) -> Vec<String> {
        let client = self.db.client().await;
        client
            .query(
                "SELECT h.mac::text, host(h.ip), h.hostname, \
                        extract(epoch FROM h.lease_time)::bigint, s.cidr::text \
                 FROM ipmanager.hosts h JOIN ipmanager.subnets s ON s.id = h.subnet_id \
                 ORDER BY h.ip",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| {
                let lease: Option<i64> = row.get(3);
                format!(
                    "{} {} {} {} {}",
                    row.get::<_, String>(0),
                    row.get::<_, String>(1),
                    row.get::<_, String>(2),
                    lease.map_or("-".to_owned(), |l| l.to_string()),
                    row.get::<_, String>(4)
                )
            })
            .collect()
    }

    async fn subnet_count(&self) -> i64 {
        let client = self.db.client().await;
        client
            .query_one("SELECT count(*) FROM ipmanager.subnets", &[])
            .await
            .unwrap()
            .get(0)
    }
}

/// The hosts every clean sample yields, as [`Db::hosts`] prints them.
const DNSMASQ_HOSTS: &[&str] = &[
    "52:54:00:71:00:01 10.71.0.10 files 3600 10.71.0.0/24",
    "52:54:00:71:00:02 10.71.0.11 voip-gw 2700 10.71.0.0/24",
    "52:54:00:71:00:03 2001:db8:71::3 nas - 2001:db8:71::/64",
];
const HOSTSFILE_HOSTS: &[&str] = &[
    "52:54:00:72:00:01 10.72.0.5 lab-switch - 10.72.0.0/24",
    "52:54:00:72:00:02 10.72.0.6 lab-ap 7200 10.72.0.0/24",
    "52:54:00:72:00:03 2001:db8:72::6 lab-v6 - 2001:db8:72::/64",
];
/// `scanner` has no address in the file: it gets the first free one of `--subnet o73` (.1 is
/// the gateway).
const ETHERS_HOSTS: &[&str] = &[
    "52:54:00:73:00:03 10.73.0.2 scanner - 10.73.0.0/24",
    "52:54:00:73:00:01 10.73.0.5 kiosk - 10.73.0.0/24",
    "52:54:00:73:00:02 10.73.0.6 desk-pc - 10.73.0.0/24",
];
const KEA_HOSTS: &[&str] = &[
    "52:54:00:74:00:01 10.74.0.10 kea-printer - 10.74.0.0/24",
    "52:54:00:74:00:02 10.74.0.11 kea-cam - 10.74.0.0/24",
];

/// A clean sample: its file, format, extra arguments, the report's "added" section and hosts.
struct Clean {
    file: &'static str,
    format: &'static str,
    args: &'static [&'static str],
    added: &'static [&'static str],
    skipped: &'static [&'static str],
    hosts: &'static [&'static str],
}

const CLEAN_DNSMASQ: Clean = Clean {
    file: "clean.dnsmasq.conf",
    format: "dnsmasq",
    args: &[],
    added: &[
        "line 6: 52:54:00:71:00:01 10.71.0.10 files",
        "line 7: 52:54:00:71:00:02 10.71.0.11 voip-gw: tag set:voip not kept",
        "line 9: 52:54:00:71:00:03 2001:db8:71::3 nas",
    ],
    skipped: &[
        "line 2: domain=office.example.org: not a reservation (domain)",
        "line 3: dhcp-range=set:office,10.71.0.100,10.71.0.199,255.255.255.0,12h: not a \
         reservation (dhcp-range)",
    ],
    hosts: DNSMASQ_HOSTS,
};

const CLEAN_HOSTSFILE: Clean = Clean {
    file: "clean.hostsfile",
    format: "hostsfile",
    args: &[],
    added: &[
        "line 3: 52:54:00:72:00:01 10.72.0.5 lab-switch",
        "line 4: 52:54:00:72:00:02 10.72.0.6 lab-ap",
        "line 5: 52:54:00:72:00:03 2001:db8:72::6 lab-v6",
    ],
    skipped: &[],
    hosts: HOSTSFILE_HOSTS,
};

const CLEAN_ETHERS: Clean = Clean {
    file: "clean.ethers",
    format: "ethers",
    args: &["--subnet", "o73"],
    added: &[
        "line 2: 52:54:00:73:00:01 10.73.0.5 kiosk: hostname taken from the trailing comment",
        "line 3: 52:54:00:73:00:02 10.73.0.6 desk-pc: hostname taken from the trailing comment",
        "line 5: 52:54:00:73:00:03 scanner: allocated 10.73.0.2",
    ],
    skipped: &[],
    hosts: ETHERS_HOSTS,
};

const CLEAN_KEA: Clean = Clean {
    file: "clean.kea.conf",
    format: "kea",
    args: &[],
    added: &[
        "line 8: subnet 10.74.0.0/24: new subnet '10.74.0.0_24'",
        "line 14: 52:54:00:74:00:01 10.74.0.10 kea-printer",
        "line 15: 52:54:00:74:00:02 10.74.0.11 kea-cam: option-data not kept",
    ],
    skipped: &[],
    hosts: KEA_HOSTS,
};

const ALL_CLEAN: [&Clean; 4] = [&CLEAN_DNSMASQ, &CLEAN_HOSTSFILE, &CLEAN_ETHERS, &CLEAN_KEA];

/// Imports a clean sample into a database with [`CLEAN_SUBNETS`]: exit 0, exactly the expected
/// report and hosts; then imports it again: exit 0, everything already present, nothing added.
async fn check_clean_import(clean: &Clean) -> Db {
    let db = Db::with_subnets(CLEAN_SUBNETS).await;
    let file = cli_fixture(clean.file);
    let out = db.import(&file, clean.format, clean.args, 0);
    let report = Report::of(&out);
    assert_eq!(report.section("added"), clean.added, "{}", report.text);
    assert_eq!(report.section("skipped"), clean.skipped, "{}", report.text);
    assert!(report.section("rejected").is_empty(), "{}", report.text);
    assert!(
        report.section("already present").is_empty(),
        "{}",
        report.text
    );
    assert_eq!(
        report.outcome,
        format!("imported {} entries", clean.added.len())
    );
    assert_eq!(stderr(&out), "", "a clean import prints no error");
    assert_eq!(db.hosts().await, clean.hosts);

    // The same file again changes nothing and says why, entry by entry.
    let again = Report::of(&db.import(&file, clean.format, clean.args, 0));
    assert!(again.section("added").is_empty(), "{}", again.text);
    assert!(again.section("rejected").is_empty(), "{}", again.text);
    assert_eq!(again.section("skipped"), clean.skipped, "{}", again.text);
    let present = again.section("already present");
    assert_eq!(present.len(), clean.added.len(), "{}", again.text);
    for entry in &present {
        assert!(
            entry.ends_with(
                ": the database already holds this reservation with the same address, name and \
                 lease time"
            ) || entry.ends_with(": subnet exists"),
            "{entry}\n{}",
            again.text
        );
    }
    assert_eq!(again.outcome, "imported 0 entries");
    assert_eq!(db.hosts().await, clean.hosts);
    db
}

#[tokio::test]
async fn dnsmasq_fixture_dry_run_lists_every_line_and_a_real_import_is_all_or_nothing() {
    let db = Db::with_subnets(&[
        &["10.20.0.0/24", "--name", "lan"],
        &["2001:db8:20::/64", "--name", "lan6"],
    ])
    .await;
    let file = fixture("dnsmasq.conf");
    let out = db.import(&file, "dnsmasq", &["--dry-run"], 65);
    let report = Report::of(&out);
    assert_eq!(
        report.titles(),
        ["rejected", "skipped", "would add"],
        "{}",
        report.text
    );
    let both = "line has an IPv4 and an IPv6 address: kept as two reservations, one per address";
    assert_eq!(
        report.section("would add"),
        [
            // `infinite` is stored as the database's infinite lease.
            "line 7: 52:54:00:12:34:01 10.20.0.10 files".to_owned(),
            "line 8: 52:54:00:12:34:02 10.20.0.11 backup".to_owned(),
            "line 9: 52:54:00:12:34:03 10.20.0.12 voip-gw: tag set:voip not kept".to_owned(),
            "line 10: 52:54:00:12:34:04 id:01:52:54:00:12:34:04 10.20.0.13 printer".to_owned(),
            format!("line 11: 52:54:00:12:34:05 10.20.0.14 nas: {both}"),
            format!("line 11: 52:54:00:12:34:05 2001:db8:20::14 nas: {both}"),
            "line 17: 52:54:00:12:34:08,52:54:00:12:34:09 10.20.0.22 dock".to_owned(),
        ]
    );
    assert_eq!(
        report.section("skipped"),
        [
            "line 2: domain=lan.example.org: not a reservation (domain)",
            "line 3: dhcp-range=set:lan,10.20.0.100,10.20.0.199,255.255.255.0,12h: not a \
             reservation (dhcp-range)",
            "line 4: dhcp-option=tag:lan,option:router,10.20.0.1: not a reservation \
             (dhcp-option)",
            "line 22: conf-dir=/etc/dnsmasq.d,*.conf: not a reservation (conf-dir): import the \
             file(s) it names separately",
        ]
    );
    let rejected = report.section("rejected");
    let lines: Vec<&str> = rejected
        .iter()
        .map(|e| e.split(':').next().unwrap())
        .collect();
    assert_eq!(
        lines,
        ["line 12", "line 15", "line 16", "line 18", "line 19", "line 20"],
        "every rejected line, in file order:\n{}",
        report.text
    );
    for (line, reason) in [
        (12, "no IP address, and no --subnet to allocate one in"),
        (
            15,
            "dhcp-host=52:54:00:12:34:zz,10.20.0.20,broken-mac: field 1: hosts.mac \
             '52:54:00:12:34:zz' is not a MAC address",
        ),
        (16, "field 3: hostname contains '_' at byte 3"),
        (18, "field 1: MAC address contains the wildcard '*'"),
        (19, "reservation is keyed by client-id only"),
        (
            20,
            "field 2: IPv4 address is not four dotted decimal numbers 0-255",
        ),
    ] {
        let entry = report.entry("rejected", line);
        assert!(entry.contains(reason), "line {line}: {entry}");
    }
    assert_eq!(
        report.outcome,
        "dry run: nothing changed; the import would be refused"
    );
    assert_eq!(
        error_text(&out),
        "nothing imported: 6 line(s) rejected (listed above); fix or remove them and run the \
         import again"
    );
    assert!(db.hosts().await.is_empty(), "a dry run changes nothing");

    // The real import checks the same lines and, since some are rejected, commits nothing.
    let out = db.import(&file, "dnsmasq", &[], 65);
    let real = Report::of(&out);
    assert_eq!(real.section("rejected"), rejected, "{}", real.text);
    // A refused import added nothing, so it does not speak of what it "would add".
    assert_eq!(
        real.titles(),
        ["not added", "rejected", "skipped"],
        "{}",
        real.text
    );
    assert_eq!(
        real.section("not added"),
        report.section("would add"),
        "{}",
        real.text
    );
    assert_eq!(real.outcome, "nothing imported");
    assert!(error_text(&out).starts_with("nothing imported: 6 line(s) rejected"));
    assert!(
        db.hosts().await.is_empty(),
        "not even the good lines are imported"
    );
    assert_eq!(db.subnet_count().await, 2);
}

#[tokio::test]
async fn clean_dnsmasq_file_imports_exactly_and_again_changes_nothing() {
    check_clean_import(&CLEAN_DNSMASQ).await;
}

#[tokio::test]
async fn clean_hostsfile_imports_exactly_and_again_changes_nothing() {
    check_clean_import(&CLEAN_HOSTSFILE).await;
}

#[tokio::test]
async fn clean_ethers_file_allocates_in_subnet_and_again_changes_nothing() {
    check_clean_import(&CLEAN_ETHERS).await;
}

#[tokio::test]
async fn clean_kea_config_creates_its_subnet_and_again_changes_nothing() {
    let db = check_clean_import(&CLEAN_KEA).await;
    let client = db.db.client().await;
    let row = client
        .query_one(
            "SELECT name, host(range_start), host(range_end), host(gateway), \
                    extract(epoch FROM lease_time)::bigint, domain, enabled \
             FROM ipmanager.subnets WHERE cidr = '10.74.0.0/24'",
            &[],
        )
        .await
        .expect("the Kea subnet was created");
    assert_eq!(row.get::<_, String>(0), "10.74.0.0_24");
    assert_eq!(
        row.get::<_, String>(1),
        "10.74.0.100",
        "range from the pool"
    );
    assert_eq!(row.get::<_, String>(2), "10.74.0.199");
    assert_eq!(row.get::<_, String>(3), "10.74.0.1", "gateway from routers");
    assert_eq!(
        row.get::<_, Option<i64>>(4),
        Some(3600),
        "the global valid-lifetime"
    );
    assert_eq!(row.get::<_, Option<String>>(5), None);
    assert!(row.get::<_, bool>(6));
    assert_eq!(db.subnet_count().await, CLEAN_SUBNETS.len() as i64 + 1);
}

#[tokio::test]
async fn a_line_conflicting_with_the_database_is_rejected_with_its_message_and_nothing_imported() {
    let db = Db::with_subnets(CLEAN_SUBNETS).await;
    db.ok(&[
        "host",
        "add",
        "--mac",
        "52:54:00:99:00:01",
        "--hostname",
        "squatter",
        "--ip",
        "10.71.0.10",
    ]);
    let before = db.hosts().await;
    let out = db.import(&cli_fixture("clean.dnsmasq.conf"), "dnsmasq", &[], 65);
    let report = Report::of(&out);
    assert_eq!(
        report.section("rejected"),
        [
            "line 6: 52:54:00:71:00:01 10.71.0.10 files: hosts.ip 10.71.0.10 is already reserved \
          (for 'squatter', 52:54:00:99:00:01): an IP address can have only one reservation"
        ],
        "{}",
        report.text
    );
    assert_eq!(report.outcome, "nothing imported");
    assert!(error_text(&out).starts_with("nothing imported: 1 line(s) rejected"));
    assert_eq!(db.hosts().await, before, "the other lines are not imported");
}

#[tokio::test]
async fn an_entry_differing_from_the_database_only_in_lease_time_is_not_already_present() {
    let db = Db::with_subnets(CLEAN_SUBNETS).await;
    // Same MAC, address and name as line 6 of the sample, which says 1h.
    db.ok(&[
        "host",
        "add",
        "--mac",
        "52:54:00:71:00:01",
        "--hostname",
        "files",
        "--ip",
        "10.71.0.10",
        "--lease-time",
        "2h",
    ]);
    let before = db.hosts().await;
    let out = db.run(&[
        "import",
        &cli_fixture("clean.dnsmasq.conf"),
        "--format",
        "dnsmasq",
    ]);
    let report = Report::of(&out);
    assert!(
        !report
            .section("already present")
            .iter()
            .any(|e| e.starts_with("line 6: ")),
        "line 6 asks for a 1h lease, the database has 2h: it is not already present\n{}",
        report.text
    );
    assert_exit(&out, 65, "a line the import cannot apply is rejected");
    report.entry("rejected", 6);
    assert_eq!(db.hosts().await, before);
}

#[tokio::test]
async fn import_reads_standard_input_for_dash() {
    let db = Db::with_subnets(CLEAN_SUBNETS).await;
    let text = std::fs::read_to_string(cli_fixture("clean.hostsfile")).unwrap();
    let out = db.run_with_stdin(&["import", "-", "--format", "hostsfile"], &text);
    assert_exit(&out, 0, "import - --format hostsfile");
    let report = Report::of(&out);
    assert_eq!(report.section("added"), CLEAN_HOSTSFILE.added);
    assert_eq!(db.hosts().await, HOSTSFILE_HOSTS);

    // Errors found on standard input name it as "-".
    let out = db.run_with_stdin(&["import", "-", "--format", "kea"], "{ \"Dhcp4\": [,] }");
    assert_exit(&out, 65, "invalid Kea on stdin");
    assert!(
        error_text(&out).starts_with("-: Kea configuration is not valid JSON at line 1, column"),
        "{}",
        stderr(&out)
    );
}

/// The JSON report of an import, checked to have exactly its five keys.
fn json_report(out: &Output) -> Value {
    let text = stdout(out);
    let value: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"));
    // serde_json's map is sorted by key.
    let keys: Vec<&str> = value
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["added", "committed", "rejected", "skipped", "unchanged"],
        "{text}"
    );
    value
}

/// `line: what: reason` of each entry of a JSON report list.
fn json_entries(value: &Value, key: &str) -> Vec<String> {
    value[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is not a list: {value}"))
        .iter()
        .map(|e| {
            let reason = e["reason"].as_str().unwrap();
            let mut text = format!("line {}: {}", e["line"], e["what"].as_str().unwrap());
            if !reason.is_empty() {
                text.push_str(&format!(": {reason}"));
            }
            text
        })
        .collect()
}

#[tokio::test]
async fn json_report_has_every_list_and_whether_it_committed() {
    let db = Db::with_subnets(CLEAN_SUBNETS).await;
    let file = cli_fixture("clean.dnsmasq.conf");
    let out = db.import(&file, "dnsmasq", &["-o", "json"], 0);
    let value = json_report(&out);
    assert_eq!(value["committed"], true);
    // The same entries as the table report.
    assert_eq!(json_entries(&value, "added"), CLEAN_DNSMASQ.added);
    assert_eq!(json_entries(&value, "skipped"), CLEAN_DNSMASQ.skipped);
    assert_eq!(value["rejected"], Value::Array(vec![]));
    assert_eq!(value["unchanged"], Value::Array(vec![]));
    assert_eq!(value["added"][0]["line"], 6);

    let out = db.import(&file, "dnsmasq", &["-o", "json", "--dry-run"], 0);
    let value = json_report(&out);
    assert_eq!(value["committed"], false, "a dry run never commits");
    assert_eq!(json_entries(&value, "unchanged").len(), 3);

    let out = db.import(&fixture("dnsmasq.conf"), "dnsmasq", &["-o", "json"], 65);
    let value = json_report(&out);
    assert_eq!(value["committed"], false);
    let rejected = value["rejected"].as_array().unwrap();
    assert!(rejected.len() >= 6, "{value}");
    assert_eq!(rejected[0]["line"], 7, "{value}");
    assert!(
        rejected
            .iter()
            .all(|e| !e["reason"].as_str().unwrap().is_empty()),
        "every rejection says why: {value}"
    );
    assert_eq!(db.hosts().await, DNSMASQ_HOSTS);
}

/// Hosts as an export in `format` carries them: ethers has no IPv6 and no lease times.
fn carried(hosts: &[String], format: &str) -> Vec<String> {
    hosts
        .iter()
        .filter_map(|row| {
            let fields: Vec<&str> = row.split(' ').collect();
            if format != "ethers" {
                return Some(row.clone());
            }
            (!fields[1].contains(':'))
                .then(|| format!("{} {} {} - {}", fields[0], fields[1], fields[2], fields[4]))
        })
        .collect()
}

#[tokio::test]
async fn every_export_format_imports_into_a_fresh_database_as_the_same_hosts() {
    let source = Db::with_subnets(CLEAN_SUBNETS).await;
    for clean in ALL_CLEAN {
        source.import(&cli_fixture(clean.file), clean.format, clean.args, 0);
    }
    let hosts = source.hosts().await;
    assert_eq!(hosts.len(), 11, "{hosts:#?}");
    let mut subnets = CLEAN_SUBNETS.to_vec();
    subnets.push(KEA_SUBNET);
    for format in ["dnsmasq", "hostsfile", "ethers", "kea"] {
        let exported = source.ok(&["export", "--format", format]);
        let target = Db::with_subnets(&subnets).await;
        let out = target.run_with_stdin(&["import", "-", "--format", format], &exported);
        assert_exit(
            &out,
            0,
            &format!("importing the {format} export:\n{exported}"),
        );
        let report = Report::of(&out);
        assert!(report.section("rejected").is_empty(), "{}", report.text);
        assert!(report.section("skipped").is_empty(), "{}", report.text);
        assert_eq!(
            target.hosts().await,
            carried(&hosts, format),
            "{format} export:\n{exported}"
        );
        assert_eq!(
            target.subnet_count().await,
            subnets.len() as i64,
            "{format}: the subnets existed, none is added"
        );
    }
}

#[tokio::test]
async fn unreadable_files_exit_74_and_invalid_kea_exits_65_with_the_position() {
    let db = Db::with_subnets(CLEAN_SUBNETS).await;
    let missing = cli_fixture("no-such-file");
    let out = db.import(&missing, "dnsmasq", &[], 74);
    assert_eq!(
        error_text(&out),
        format!("cannot read {missing}: No such file or directory (os error 2)")
    );
    // A directory cannot be read as a file, whoever runs the test (root reads mode 000 files).
    let directory = cli_fixture("");
    let out = db.import(&directory, "ethers", &[], 74);
    assert!(
        error_text(&out).starts_with(&format!("cannot read {directory}")),
        "{}",
        stderr(&out)
    );
    let broken = cli_fixture("broken.kea.conf");
    let out = db.import(&broken, "kea", &[], 65);
    assert_eq!(
        error_text(&out),
        format!(
            "{broken}: Kea configuration is not valid JSON at line 4, column 15: expected value"
        )
    );
    assert_eq!(stdout(&out), "", "no report for a file that does not parse");
    assert!(db.hosts().await.is_empty());
    assert_eq!(db.subnet_count().await, CLEAN_SUBNETS.len() as i64);
}

/// A dhcp-hostsfile of `count` reservations in 10.128.0.0/14 (the subnet [`LARGE_SUBNET`]).
fn large_hostsfile(count: u32) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let mut text = String::new();
    for i in 0..count {
        let [_, b, c, d] = (i + 1).to_be_bytes();
        let [_, _, hi, lo] = (i + 10).to_be_bytes();
        text.push_str(&format!(
            "52:54:01:{b:02x}:{c:02x}:{d:02x},10.{}.{hi}.{lo},host-{i}\n",
            128 + (i + 10) / 65_536
        ));
    }
    file.write_all(text.as_bytes()).unwrap();
    file
}

const LARGE_SUBNET: &[&[&str]] = &[&["10.128.0.0/14", "--name", "large"]];

/// Before, every line ran under a savepoint: each kept its own transaction id and lock until
/// the commit, which exhausted the server's lock table at 177k lines (`out of shared memory`).
/// Transaction ids are counted server-wide, so the bound leaves room for other clients; per
/// line would be at least 20,000.
#[tokio::test]
async fn a_large_import_is_one_transaction_without_a_transaction_id_per_line() {
    const LINES: u32 = 20_000;
    let db = Db::with_subnets(LARGE_SUBNET).await;
    let file = large_hostsfile(LINES);
    let client = db.db.client().await;
    let next_xid = || async {
        client
            .query_one("SELECT pg_current_xact_id()::text::bigint AS xid", &[])
            .await
            .unwrap()
            .get::<_, i64>("xid")
    };
    let before = next_xid().await;
    let out = db.import(
        file.path().to_str().unwrap(),
        "hostsfile",
        &["-o", "json"],
        0,
    );
    let used = next_xid().await - before;
    let value = json_report(&out);
    assert_eq!(value["committed"], true);
    assert_eq!(json_entries(&value, "added").len(), LINES as usize);
    assert_eq!(db.hosts().await.len(), LINES as usize);
    assert!(
        used < i64::from(LINES) / 2,
        "the import used {used} transaction ids for {LINES} lines"
    );
}

/// A resource or timeout failure of the database is not bad data: exit 75 (try again), not 65.
#[tokio::test]
async fn an_import_that_times_out_on_a_lock_exits_75_not_65() {
    let db = Db::with_subnets(CLEAN_SUBNETS).await;
    let mut holder = db.db.client().await;
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE ipmanager.hosts IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let url = format!("{}?options=-c%20lock_timeout%3D300", db.db.url);
    let out = db
        .command(&[
            "import",
            &cli_fixture("clean.dnsmasq.conf"),
            "--format",
            "dnsmasq",
        ])
        .env("IPMANAGER_DATABASE_URL", url)
        .output()
        .unwrap();
    assert_exit(&out, 75, "a lock timeout is a temporary failure");
    assert!(
        error_text(&out).contains("lock timeout"),
        "{}",
        stderr(&out)
    );
    tx.rollback().await.unwrap();
}

/// Two imports of the same file at the same time end where each asked: one adds every line, the
/// other finds every line already present; neither fails. Before, the second collided with the
/// first's uncommitted rows and was refused with "is already reserved". Several rounds, since
/// the collision needs the two to overlap.
#[tokio::test]
async fn two_identical_imports_at_once_both_succeed() {
    const LINES: usize = 300;
    const ROUNDS: usize = 4;
    let db = Db::with_subnets(LARGE_SUBNET).await;
    let file = large_hostsfile(LINES as u32);
    let path = file.path().to_str().unwrap();
    let client = db.db.client().await;
    for round in 0..ROUNDS {
        client
            .batch_execute("DELETE FROM ipmanager.hosts")
            .await
            .unwrap();
        let args = ["import", path, "--format", "hostsfile", "-o", "json"];
        let first = db.command(&args).spawn().unwrap();
        let second = db.command(&args).spawn().unwrap();
        let outputs = [first, second].map(|child| child.wait_with_output().unwrap());
        let mut added = 0;
        let mut unchanged = 0;
        for out in &outputs {
            assert_exit(
                out,
                0,
                &format!("round {round}: an identical concurrent import"),
            );
            let value = json_report(out);
            added += json_entries(&value, "added").len();
            unchanged += json_entries(&value, "unchanged").len();
        }
        assert_eq!((added, unchanged), (LINES, LINES), "round {round}");
        assert_eq!(db.hosts().await.len(), LINES);
    }
}

/// Before, the whole input was read into memory without a bound: `/dev/zero` grew the process
/// to 24 GB. Now the default limit (64 MiB) refuses it, quickly and with a message.
#[tokio::test]
async fn an_endless_input_file_is_refused_at_the_default_limit() {
    let db = Db::with_subnets(CLEAN_SUBNETS).await;
    let out = db.import("/dev/zero", "dnsmasq", &["--dry-run"], 65);
    assert_eq!(
        error_text(&out),
        "/dev/zero is larger than the import limit of 64MiB: nothing imported; give \
         --max-input-size if the file really is this large"
    );
    assert_eq!(stdout(&out), "", "no report for input that was not read");
}

/// Standard input has the same limit; `--max-input-size` sets it. A file within the limit is
/// imported as usual.
#[tokio::test]
async fn standard_input_beyond_max_input_size_is_refused() {
    let db = Db::with_subnets(CLEAN_SUBNETS).await;
    let text = std::fs::read_to_string(cli_fixture("clean.hostsfile")).unwrap();
    let padded = format!("{text}{}", "# padding\n".repeat(200));
    let args = [
        "import",
        "-",
        "--format",
        "hostsfile",
        "--max-input-size",
        "1KiB",
    ];
    let out = db.run_with_stdin(&args, &padded);
    assert_exit(&out, 65, "input beyond --max-input-size");
    assert_eq!(
        error_text(&out),
        "standard input is larger than the import limit of 1KiB: nothing imported; give \
         --max-input-size if the file really is this large"
    );
    assert!(db.hosts().await.is_empty());
    let out = db.run_with_stdin(&args, &text);
    assert_exit(&out, 0, "input within --max-input-size");
    assert_eq!(db.hosts().await, HOSTSFILE_HOSTS);
}

/// Lines of one file are judged together: a repeated line is reported as a repeat (and added
/// once), a line that collides with an earlier one names it, and nothing is imported.
#[tokio::test]
async fn lines_colliding_within_the_file_name_the_earlier_line() {
    let db = Db::with_subnets(CLEAN_SUBNETS).await;
    let text = "52:54:00:72:00:01,10.72.0.5,a\n\
                52:54:00:72:00:01,10.72.0.5,a\n\
                52:54:00:72:00:02,10.72.0.5,b\n\
                52:54:00:72:00:03,10.72.0.7,A\n";
    let out = db.run_with_stdin(&["import", "-", "--format", "hostsfile"], text);
    assert_exit(&out, 65, "colliding lines");
    let report = Report::of(&out);
    assert_eq!(
        report.section("already present"),
        ["line 2: 52:54:00:72:00:01 10.72.0.5 a: the same reservation as line 1"],
        "{}",
        report.text
    );
    assert_eq!(
        report.section("rejected"),
        [
            "line 3: 52:54:00:72:00:02 10.72.0.5 b: hosts.ip 10.72.0.5 is already reserved: an IP \
             address can have only one reservation (by line 1 of this file)",
            "line 4: 52:54:00:72:00:03 10.72.0.7 A: hosts.hostname 'A' is already used in this \
             subnet: host names are unique per subnet, ignoring case (by line 1 of this file)",
        ],
        "{}",
        report.text
    );
    assert!(db.hosts().await.is_empty());
}

/// Names without an address are allocated in `--subnet` in file order; once it is full, the
/// rest are rejected in `ipmanager.allocate_host`'s words.
#[tokio::test]
async fn allocation_into_a_full_subnet_rejects_the_rest_in_the_database_words() {
    let db = Db::with_subnets(&[&["10.75.0.0/30", "--name", "tiny"]]).await;
    let text = "52:54:00:75:00:01 one\n52:54:00:75:00:02 two\n52:54:00:75:00:03 three\n";
    let args = ["import", "-", "--format", "ethers", "--subnet", "tiny"];
    let out = db.run_with_stdin(&args, text);
    assert_exit(&out, 65, "more names than free addresses");
    let report = Report::of(&out);
    assert_eq!(
        report.section("not added"),
        [
            "line 1: 52:54:00:75:00:01 one: allocated 10.75.0.1",
            "line 2: 52:54:00:75:00:02 two: allocated 10.75.0.2",
        ],
        "{}",
        report.text
    );
    let rejected = report.entry("rejected", 3);
    assert!(
        rejected.contains("subnet 'tiny' (10.75.0.0/30) has no free address"),
        "{rejected}"
    );
    assert!(db.hosts().await.is_empty());
}
