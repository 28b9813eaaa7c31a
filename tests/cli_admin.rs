//! The administration commands of the real binary (`host`, `subnet`, `log`, `status`) against a
//! real PostgreSQL: what they print, their exit codes and their exact error texts, which must be
//! the database's own words for the same mistake.

mod common;

use std::process::{Command, Output, Stdio};

use common::binary::{assert_exit, command, error_text, ipmanager, stderr, stdout, BIN};
use common::TestDb;
use serde_json::Value;

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// One test's database, and the binary pointed at it.
struct Admin {
    db: TestDb,
}

impl Admin {
    async fn new() -> Admin {
        Admin {
            db: TestDb::new().await,
        }
    }

    /// A database that already has the subnet `office`: 10.1.0.0/24, range .100-.199,
    /// gateway .1.
    async fn with_office() -> Admin {
        let admin = Admin::new().await;
        admin.ok(&[
            "subnet",
            "add",
            "10.1.0.0/24",
            "--name",
            "office",
            "--range",
            "10.1.0.100-10.1.0.199",
            "--gateway",
            "10.1.0.1",
        ]);
        admin
    }

    fn run(&self, args: &[&str]) -> Output {
        ipmanager(args, &[("IPMANAGER_DATABASE_URL", &self.db.url)])
    }

    /// Runs a command that must succeed and returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_exit(&out, 0, &format!("ipmanager {}", args.join(" ")));
        stdout(&out)
    }

    /// Runs a command that must fail with `code` and returns its error message.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_exit(&out, code, &format!("ipmanager {}", args.join(" ")));
        error_text(&out)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        parse_json(&self.ok(&args))
    }

    /// `host add --mac MAC --hostname NAME` plus `more`; returns the JSON of the new host.
    fn add_host(&self, mac: &str, hostname: &str, more: &[&str]) -> Value {
        let mut args = vec!["host", "add", "--mac", mac, "--hostname", hostname];
        args.extend_from_slice(more);
        self.json(&args)
    }

    /// The message the database itself gives for `sql` (as psql would show it).
    async fn db_error(&self, sql: &str) -> String {
        let error = self
            .db
            .client()
            .await
            .batch_execute(sql)
            .await
            .expect_err(&format!("the database must reject {sql}"));
        error
            .as_db_error()
            .expect("a database error")
            .message()
            .to_owned()
    }
}

/// The `label: value` line of a `show` output.
fn field<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{label}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"))
}

#[tokio::test]
async fn subnet_show_counts_addresses_range_pool_and_reservations() {
    let admin = Admin::with_office().await;
    for i in 0..3 {
        admin.add_host(
            &format!("52:54:00:00:01:0{i}"),
            &format!("pc{i}"),
            &["--subnet", "office"],
        );
    }
    // One reservation inside the dynamic range: counted as a reservation, not as pool use.
    admin.add_host("52:54:00:00:01:09", "inrange", &["--ip", "10.1.0.150"]);

    let text = admin.ok(&["subnet", "show", "office"]);
    let expected = [
        ("name", "office"),
        ("cidr", "10.1.0.0/24"),
        ("enabled", "yes"),
        ("range", "10.1.0.100-10.1.0.199"),
        ("gateway", "10.1.0.1"),
        ("addresses", "254"),
        ("range size", "100"),
        ("static pool", "153"),
        ("reservations", "4"),
        ("free", "150"),
        ("used", "2.0%"),
    ];
    for (label, value) in expected {
        assert_eq!(field(&text, label), value, "{label} in:\n{text}");
    }

    let json = admin.json(&["subnet", "show", "office"]);
    assert_eq!(json["name"], "office");
    assert_eq!(json["cidr"], "10.1.0.0/24");
    assert_eq!(json["gateway"], "10.1.0.1");
    let usage = &json["usage"];
    assert_eq!(usage["addresses"], 254, "{json}");
    assert_eq!(usage["range_size"], 100, "{json}");
    assert_eq!(usage["static_pool"], 153, "{json}");
    assert_eq!(usage["reservations"], 4, "{json}");
    assert_eq!(usage["free"], 150, "{json}");
    assert_eq!(usage["used_percent"], 2.0, "{json}");

    // The same subnet by CIDR, and in the list.
    assert_eq!(
        admin.json(&["subnet", "show", "10.1.0.0/24"])["usage"],
        *usage
    );
    let list = admin.json(&["subnet", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["usage"], *usage);
    let table = admin.ok(&["subnet", "list"]);
    let row = table.lines().nth(1).unwrap_or_default();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "office",
            "10.1.0.0/24",
            "10.1.0.100-10.1.0.199",
            "10.1.0.1",
            "4",
            "150",
            "2.0%"
        ],
        "{table}"
    );
    admin.ok(&["subnet", "set", "office", "--disable"]);
    let table = admin.ok(&["subnet", "list"]);
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap_or_default()
            .starts_with("office (off)  "),
        "{table}"
    );
}

#[tokio::test]
async fn subnet_set_rm_and_unknown_subnets() {
    let admin = Admin::with_office().await;
    let changed = admin.ok(&[
        "subnet",
        "set",
        "office",
        "--range",
        "none",
        "--domain",
        "office.example",
        "--lease-time",
        "12h",
        "--comment",
        "reservations only",
    ]);
    assert_eq!(field(&changed, "range"), "-", "{changed}");
    assert_eq!(field(&changed, "domain"), "office.example", "{changed}");
    assert_eq!(field(&changed, "lease time"), "12h", "{changed}");
    assert_eq!(field(&changed, "range size"), "0", "{changed}");
    assert_eq!(field(&changed, "static pool"), "253", "{changed}");

    let nothing = "subnet 'office' already has these values: nothing to change";
    assert_eq!(
        admin.fails(
            &["subnet", "set", "office", "--domain", "office.example"],
            1
        ),
        nothing
    );
    assert_eq!(admin.fails(&["subnet", "set", "office"], 1), nothing);

    let missing = "subnet 'nope' does not exist: give a subnet name or CIDR as listed by \
                   'ipmanager subnet list'";
    for args in [
        &["subnet", "show", "nope"][..],
        &["subnet", "set", "nope", "--comment", "x"],
        &["subnet", "rm", "nope"],
        &["host", "list", "--subnet", "nope"],
    ] {
        assert_eq!(admin.fails(args, 1), missing, "{args:?}");
    }
    // The database gives the same words to psql users.
    assert_eq!(
        admin.db_error("SELECT ipmanager.find_subnet('nope')").await,
        missing
    );

    admin.add_host("52:54:00:00:02:01", "a", &["--subnet", "office"]);
    admin.add_host("52:54:00:00:02:02", "b", &["--subnet", "office"]);
    assert_eq!(
        admin.fails(&["subnet", "rm", "office"], 65),
        "subnet 'office' (10.1.0.0/24) still has 2 reservations: remove them first, or give \
         --cascade to remove them with the subnet"
    );
    assert_eq!(admin.json(&["host", "list"]).as_array().unwrap().len(), 2);
    assert_eq!(
        admin.ok(&["subnet", "rm", "office", "--cascade"]),
        "removed subnet office (10.1.0.0/24) and 2 reservations\n"
    );
    assert_eq!(admin.json(&["host", "list"]), Value::Array(vec![]));
    assert_eq!(admin.json(&["subnet", "list"]), Value::Array(vec![]));
    admin.fails(&["subnet", "show", "office"], 1);

    // An empty subnet goes without --cascade.
    admin.ok(&["subnet", "add", "10.9.0.0/24", "--name", "empty"]);
    assert_eq!(
        admin.ok(&["subnet", "rm", "10.9.0.0/24"]),
        "removed subnet empty (10.9.0.0/24) and 0 reservations\n"
    );
}

#[tokio::test]
async fn host_add_allocates_the_next_free_address_or_takes_the_given_one() {
    let admin = Admin::with_office().await;
    let out = admin.ok(&[
        "host",
        "add",
        "--mac",
        "52:54:00:12:34:56",
        "--hostname",
        "printer",
        "--subnet",
        "office",
    ]);
    // .0 is the network, .1 the gateway.
    assert_eq!(
        out,
        "added host printer 10.1.0.2 52:54:00:12:34:56 in subnet office\n"
    );
    assert_eq!(
        admin.add_host("52:54:00:12:34:57", "scanner", &["--subnet", "office"])["ip"],
        "10.1.0.3"
    );
    let given = admin.add_host("52:54:00:12:34:58", "nas", &["--ip", "10.1.0.4"]);
    assert_eq!(given["ip"], "10.1.0.4");
    assert_eq!(given["subnet"], "office");
    assert_eq!(
        admin.add_host("52:54:00:12:34:59", "cam", &["--subnet", "10.1.0.0/24"])["ip"],
        "10.1.0.5",
        "the subnet by CIDR, after the taken .4"
    );
    // Fill the static pool below the range: the next ones come after it.
    admin
        .db
        .client()
        .await
        .batch_execute(
            "INSERT INTO ipmanager.hosts (mac, ip, hostname)
             SELECT ('02:00:00:00:00:' || to_hex(n))::macaddr, ('10.1.0.' || n)::inet, 'f' || n
             FROM generate_series(6, 99) n",
        )
        .await
        .unwrap();
    assert_eq!(
        admin.add_host("52:54:00:12:34:5a", "after", &["--subnet", "office"])["ip"],
        "10.1.0.200",
        "the dynamic range .100-.199 is skipped"
    );
    // With both: the address must lie in that subnet.
    assert_eq!(
        admin.add_host(
            "52:54:00:12:34:5b",
            "both",
            &["--subnet", "office", "--ip", "10.1.0.250"]
        )["ip"],
        "10.1.0.250"
    );
    let lease = admin.add_host(
        "52:54:00:12:34:5c",
        "leased",
        &[
            "--subnet",
            "office",
            "--lease-time",
            "12h",
            "--comment",
            "front desk",
            "--disabled",
        ],
    );
    assert_eq!(lease["lease_seconds"], 43_200, "{lease}");
    assert_eq!(lease["comment"], "front desk");
    assert_eq!(lease["enabled"], false);
}

#[tokio::test]
async fn mac_addresses_in_every_notation_are_stored_normalised() {
    let admin = Admin::with_office().await;
    let notations = [
        ("52-54-00-ab-cd-01", "52:54:00:ab:cd:01"),
        ("5254.00ab.cd02", "52:54:00:ab:cd:02"),
        ("525400abcd03", "52:54:00:ab:cd:03"),
        ("52:54:00:AB:CD:04", "52:54:00:ab:cd:04"),
        ("52-54-00-AB-CD-05", "52:54:00:ab:cd:05"),
    ];
    for (i, (given, stored)) in notations.iter().enumerate() {
        let host = admin.add_host(given, &format!("h{i}"), &["--subnet", "office"]);
        assert_eq!(host["mac"], *stored, "{given}");
        // show finds it by any notation and prints the canonical form.
        let shown = admin.ok(&["host", "show", given]);
        assert_eq!(field(&shown, "mac"), *stored, "{shown}");
        assert_eq!(field(&shown, "hostname"), format!("h{i}"), "{shown}");
    }
    let macs: Vec<String> = admin
        .db
        .client()
        .await
        .query("SELECT mac::text FROM ipmanager.hosts ORDER BY mac", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        macs,
        notations
            .iter()
            .map(|(_, s)| s.to_string())
            .collect::<Vec<_>>()
    );
    let list = admin.ok(&["host", "list"]);
    for (_, stored) in notations {
        assert!(list.contains(stored), "{stored} not in:\n{list}");
    }
}

#[tokio::test]
async fn rejected_hosts_get_the_databases_own_words() {
    let admin = Admin::with_office().await;
    // The same mistakes through SQL, as a psql user would make them.
    let cases = [
        ("52:54:00:00:03:01", "bad_name"),
        ("52:54:00:00:03:02", "12h"),
        ("01:00:5e:00:00:01", "multicast"),
    ];
    for (mac, hostname) in cases {
        let from_db = admin
            .db_error(&format!(
                "INSERT INTO ipmanager.hosts (mac, ip, hostname) \
                 VALUES ('{mac}', '10.1.0.50', '{hostname}')"
            ))
            .await;
        for placement in [&["--subnet", "office"][..], &["--ip", "10.1.0.50"]] {
            let mut args = vec!["host", "add", "--mac", mac, "--hostname", hostname];
            args.extend_from_slice(placement);
            assert_eq!(admin.fails(&args, 65), from_db, "{args:?}");
        }
    }

    assert_eq!(
        admin.fails(
            &[
                "host",
                "add",
                "--mac",
                "52:54:00:zz:00:01",
                "--hostname",
                "x",
                "--subnet",
                "office"
            ],
            65
        ),
        "hosts.mac '52:54:00:zz:00:01' is not a MAC address: give six hexadecimal octets as \
         52:54:00:12:34:56, 52-54-00-12-34-56, 5254.0012.3456, 525400123456 or 8:0:20:1:2:3"
    );
    assert_eq!(
        admin.fails(
            &[
                "host",
                "add",
                "--mac",
                "52:54:00:00:03:03",
                "--hostname",
                "x",
                "--subnet",
                "office",
                "--ip",
                "10.2.0.5"
            ],
            65
        ),
        "hosts.ip 10.2.0.5 is outside subnet 'office' (10.1.0.0/24): an address must lie inside \
         its subnet"
    );

    admin.add_host("52:54:00:00:03:04", "printer", &["--ip", "10.1.0.20"]);
    assert_eq!(
        admin.fails(
            &[
                "host",
                "add",
                "--mac",
                "52:54:00:00:03:05",
                "--hostname",
                "other",
                "--ip",
                "10.1.0.20"
            ],
            65
        ),
        "hosts.ip 10.1.0.20 is already reserved (for 'printer', 52:54:00:00:03:04): an IP address \
         can have only one reservation"
    );
    assert_eq!(
        admin.fails(
            &[
                "host",
                "add",
                "--mac",
                "52:54:00:00:03:05",
                "--hostname",
                "printer",
                "--subnet",
                "office"
            ],
            65
        ),
        "hosts.hostname 'printer' is already used in subnet 'office' (52:54:00:00:03:04, \
         10.1.0.20): host names are unique per subnet, ignoring case"
    );
    assert_eq!(
        admin.fails(
            &[
                "host",
                "add",
                "--mac",
                "52:54:00:00:03:04",
                "--hostname",
                "again",
                "--subnet",
                "office"
            ],
            65
        ),
        "hosts.mac 52:54:00:00:03:04 already has a reservation in subnet 'office' ('printer', \
         10.1.0.20): a MAC address has at most one reservation per subnet"
    );

    let out = admin.run(&[
        "host",
        "add",
        "--mac",
        "52:54:00:00:03:06",
        "--hostname",
        "x",
    ]);
    assert_exit(&out, 2, "neither --ip nor --subnet");
    assert!(stderr(&out).contains("--ip"), "{}", stderr(&out));
    // Nothing of the above was stored.
    assert_eq!(admin.json(&["host", "list"]).as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn host_set_changes_each_field_and_moves_between_subnets() {
    let admin = Admin::with_office().await;
    admin.ok(&["subnet", "add", "10.2.0.0/24", "--name", "lab"]);
    admin.add_host("52:54:00:12:34:56", "printer", &["--subnet", "office"]);

    let host = admin.json(&["host", "set", "printer", "--ip", "10.1.0.30"]);
    assert_eq!(host["ip"], "10.1.0.30");
    let host = admin.json(&["host", "set", "10.1.0.30", "--mac", "5254.0012.3499"]);
    assert_eq!(host["mac"], "52:54:00:12:34:99");
    let host = admin.json(&["host", "set", "52:54:00:12:34:99", "--hostname", "printer2"]);
    assert_eq!(host["hostname"], "printer2");
    let host = admin.json(&["host", "set", "printer2", "--disable"]);
    assert_eq!(host["enabled"], false);
    let host = admin.json(&["host", "set", "printer2", "--enable"]);
    assert_eq!(host["enabled"], true);
    let host = admin.json(&["host", "set", "printer2", "--lease-time", "12h"]);
    assert_eq!(host["lease_seconds"], 43_200);
    let shown = admin.ok(&["host", "show", "printer2"]);
    assert_eq!(field(&shown, "lease time"), "12h", "{shown}");
    let host = admin.json(&["host", "set", "printer2", "--lease-time", "default"]);
    assert_eq!(host["lease_seconds"], Value::Null);
    let host = admin.json(&["host", "set", "printer2", "--comment", "2nd floor"]);
    assert_eq!(host["comment"], "2nd floor");
    let host = admin.json(&["host", "set", "printer2", "--comment", ""]);
    assert_eq!(host["comment"], Value::Null);

    // An address in another subnet moves the reservation there.
    let out = admin.ok(&["host", "set", "printer2", "--ip", "10.2.0.10"]);
    assert_eq!(
        out,
        "changed host printer2 10.2.0.10 52:54:00:12:34:99 in subnet lab\n"
    );
    assert_eq!(
        admin.fails(&["host", "set", "printer2", "--ip", "10.2.0.10"], 1),
        "host printer2 already has these values: nothing to change"
    );
    assert_eq!(
        admin.fails(&["host", "set", "printer2"], 1),
        "nothing to change: give at least one of --ip, --mac, --hostname, --enable, --disable, \
         --lease-time or --comment"
    );

    assert_eq!(
        admin.ok(&["host", "rm", "printer2"]),
        "removed host printer2 10.2.0.10 52:54:00:12:34:99 in subnet lab\n"
    );
    let not_found =
        "host printer2 not found: no reservation has this MAC address, IP address or host name";
    assert_eq!(admin.fails(&["host", "show", "printer2"], 1), not_found);
    assert_eq!(admin.fails(&["host", "rm", "printer2"], 1), not_found);
    assert_eq!(
        admin.fails(&["host", "set", "printer2", "--comment", "x"], 1),
        not_found
    );
}

#[tokio::test]
async fn a_name_in_two_subnets_needs_subnet_to_pick_one() {
    let admin = Admin::with_office().await;
    admin.ok(&["subnet", "add", "10.2.0.0/24", "--name", "lab"]);
    admin.add_host("52:54:00:00:04:01", "nas", &["--subnet", "office"]);
    admin.add_host("52:54:00:00:04:01", "nas", &["--subnet", "lab"]);

    let message = admin.fails(&["host", "set", "nas", "--comment", "x"], 2);
    assert_eq!(
        message,
        "host nas matches 2 reservations (in subnets 'lab', 'office'): add --subnet to pick one"
    );
    // The MAC is just as ambiguous, for rm too; nothing was changed or removed.
    let by_mac = admin.fails(&["host", "rm", "52:54:00:00:04:01"], 2);
    assert!(by_mac.contains("--subnet"), "{by_mac}");
    assert_eq!(
        admin
            .json(&["host", "show", "nas"])
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let host = admin.json(&["host", "set", "nas", "--subnet", "lab", "--comment", "x"]);
    assert_eq!(host["subnet"], "lab");
    assert_eq!(host["comment"], "x");
    let shown = admin.json(&["host", "show", "nas", "--subnet", "office"]);
    assert_eq!(shown[0]["comment"], Value::Null, "{shown}");
    admin.ok(&["host", "rm", "nas", "--subnet", "office"]);
    assert_eq!(admin.json(&["host", "show", "nas"])[0]["subnet"], "lab");
}

#[tokio::test]
async fn host_list_filters_and_fits_80_columns() {
    let admin = Admin::with_office().await;
    admin.ok(&[
        "subnet",
        "add",
        "2001:db8:1::/64",
        "--name",
        "v6-lab",
        "--range",
        "2001:db8:1::1000-2001:db8:1::1fff",
        "--comment",
        &"long subnet comment ".repeat(10),
    ]);
    admin.add_host("52:54:00:12:34:56", "printer", &["--subnet", "office"]);
    let comment = "lorem ipsum ".repeat(17);
    admin.add_host(
        "52:54:00:12:34:57",
        "scanner",
        &[
            "--subnet",
            "office",
            "--comment",
            &format!("Print room {comment}"),
        ],
    );
    assert!(comment.len() >= 200);
    admin.add_host(
        "52:54:00:12:34:58",
        "workstation-long-name",
        &[
            "--subnet",
            "v6-lab",
            "--comment",
            &comment,
            "--lease-time",
            "1d 12h",
        ],
    );

    let names = |args: &[&str]| -> Vec<String> {
        admin
            .json(args)
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["hostname"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(&["host", "list", "--subnet", "office"]),
        ["printer", "scanner"]
    );
    assert_eq!(
        names(&["host", "list", "--subnet", "2001:db8:1::/64"]),
        ["workstation-long-name"]
    );
    // Name, comment (ignoring case), MAC and IP all match the search.
    assert_eq!(
        names(&["host", "list", "--search", "PRINT"]),
        ["printer", "scanner"]
    );
    assert_eq!(
        names(&["host", "list", "--search", "34:58"]),
        ["workstation-long-name"]
    );
    assert_eq!(
        names(&["host", "list", "--search", "10.1.0.3"]),
        ["scanner"]
    );
    assert_eq!(
        names(&["host", "list", "--subnet", "office", "--search", "scan"]),
        ["scanner"]
    );
    assert!(names(&["host", "list", "--search", "nothing-like-this"]).is_empty());

    let hosts = admin.json(&["host", "list"]);
    let v6 = hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["subnet"] == "v6-lab")
        .unwrap();
    assert_eq!(v6["ip"], "2001:db8:1::1", "{v6}");
    assert_eq!(v6["mac"], "52:54:00:12:34:58");
    assert_eq!(v6["comment"], comment.as_str());
    assert_eq!(v6["enabled"], true);
    assert_eq!(v6["lease_seconds"], 129_600);
    for key in ["id", "created_at", "updated_at"] {
        assert!(v6.get(key).is_some(), "{key} missing: {v6}");
    }

    // Every table (not the label: value lines of show), collected over every command first,
    // so that one failure shows them all.
    let mut too_wide = Vec::new();
    for args in [
        &["host", "list"][..],
        &["host", "list", "--subnet", "office"],
        &["host", "list", "--subnet", "v6-lab"],
        &["subnet", "list"],
        &["status"],
    ] {
        let text = admin.ok(args);
        if text.lines().any(|line| line.chars().count() > 80) {
            too_wide.push(format!("ipmanager {}:\n{text}", args.join(" ")));
        }
    }
    assert!(
        too_wide.is_empty(),
        "lines wider than 80 columns:\n{}",
        too_wide.join("\n")
    );
    // The long comment is wrapped, not cut.
    let text = admin.ok(&["host", "list", "--subnet", "v6-lab"]);
    let words: usize = text.matches("lorem").count();
    assert_eq!(words, 17, "{text}");
}

#[tokio::test]
async fn concurrent_allocations_through_the_binary_get_distinct_addresses() {
    let admin = Admin::with_office().await;
    let env = [("IPMANAGER_DATABASE_URL", admin.db.url.as_str())];
    let children: Vec<_> = (0..12)
        .map(|i| {
            let mac = format!("52:54:00:00:05:{i:02x}");
            let hostname = format!("concurrent{i}");
            command(
                &[
                    "host",
                    "add",
                    "--mac",
                    &mac,
                    "--hostname",
                    &hostname,
                    "--subnet",
                    "office",
                ],
                &env,
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_exit(&out, 0, "a concurrent host add");
    }
    let row = admin
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*), count(DISTINCT ip), min(ip)::text, max(ip)::text
             FROM ipmanager.hosts",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 12);
    assert_eq!(
        row.get::<_, i64>(1),
        12,
        "every process got its own address"
    );
    assert_eq!(row.get::<_, String>(2), "10.1.0.2/32");
    assert_eq!(row.get::<_, String>(3), "10.1.0.13/32", "no gaps either");
}

#[test]
fn an_unreachable_database_exits_69() {
    let out = ipmanager(
        &["host", "list"],
        &[(
            "IPMANAGER_DATABASE_URL",
            "postgresql://postgres@127.0.0.1:1/none?connect_timeout=2",
        )],
    );
    assert_exit(&out, 69, "unreachable database");
    assert!(
        error_text(&out).contains("cannot connect"),
        "{}",
        stderr(&out)
    );
}

/// Commands that need the schema of V2 (functions and views, not only the V1 tables).
const NEEDS_V2: [&[&str]; 4] = [
    &["subnet", "show", "office"],
    &[
        "host",
        "add",
        "--mac",
        "52:54:00:00:06:01",
        "--hostname",
        "a",
        "--subnet",
        "office",
    ],
    &["status"],
    &["log"],
];

fn assert_needs_migrate(db: &TestDb, commands: &[&[&str]], what: &str) {
    let env = [("IPMANAGER_DATABASE_URL", db.url.as_str())];
    for args in commands {
        let out = ipmanager(args, &env);
        assert_exit(&out, 69, &format!("{args:?} {what}"));
        assert!(
            error_text(&out).starts_with(
                "the ipmanager schema is missing or outdated in this database: run 'ipmanager migrate'"
            ),
            "{args:?} {what}: {}",
            stderr(&out)
        );
    }
}

#[tokio::test]
async fn a_database_without_the_schema_says_to_migrate_and_exits_69() {
    let db = TestDb::empty().await;
    assert_needs_migrate(&db, &[&["host", "list"]], "without the schema");
    assert_needs_migrate(&db, &NEEDS_V2, "without the schema");
}

#[tokio::test]
async fn a_database_with_only_the_first_migration_says_to_migrate_and_exits_69() {
    let db = TestDb::empty().await;
    db.client()
        .await
        .batch_execute(include_str!("../sql/V1__initial_schema.sql"))
        .await
        .expect("V1 applies");
    assert_needs_migrate(&db, &NEEDS_V2, "with only V1");
}

#[tokio::test]
async fn an_unknown_configuration_key_exits_78() {
    let admin = Admin::new().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ipmanager.toml");
    std::fs::write(
        &file,
        format!("database_url = \"{}\"\nfrobnicate = 1\n", admin.db.url),
    )
    .unwrap();
    let out = ipmanager(&["host", "list", "--config", file.to_str().unwrap()], &[]);
    assert_exit(&out, 78, "unknown key");
    assert!(error_text(&out).contains("frobnicate"), "{}", stderr(&out));
}

#[tokio::test]
async fn a_login_without_the_admin_role_gets_exit_77() {
    let admin = Admin::with_office().await;
    let server = common::server_url();
    let plain = format!("{}_plain", admin.db.name);
    let agent = format!("{}_agent", admin.db.name);
    let root = common::connect(&server).await;
    root.batch_execute(&format!(
        "CREATE ROLE {plain} LOGIN; CREATE ROLE {agent} LOGIN IN ROLE ipmanager_agent;"
    ))
    .await
    .unwrap();
    let mut outcomes = Vec::new();
    for user in [&plain, &agent] {
        let url = admin.db.url.replacen("postgres@", &format!("{user}@"), 1);
        for args in [
            &[
                "host",
                "add",
                "--mac",
                "52:54:00:00:07:01",
                "--hostname",
                "a",
                "--subnet",
                "office",
            ][..],
            &[
                "host",
                "add",
                "--mac",
                "52:54:00:00:07:01",
                "--hostname",
                "a",
                "--ip",
                "10.1.0.9",
            ],
        ] {
            let out = ipmanager(args, &[("IPMANAGER_DATABASE_URL", &url)]);
            outcomes.push((user.clone(), args.to_vec(), out));
        }
    }
    let _ = root
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {plain}; DROP ROLE IF EXISTS {agent};"
        ))
        .await;
    for (user, args, out) in outcomes {
        assert_exit(&out, 77, &format!("{user}: {args:?}"));
        assert!(
            error_text(&out).contains("permission denied"),
            "{user}: {}",
            stderr(&out)
        );
    }
    assert_eq!(admin.json(&["host", "list"]), Value::Array(vec![]));
}

#[tokio::test]
async fn the_log_shows_who_changed_what_with_which_program() {
    let admin = Admin::with_office().await;
    admin.add_host("52:54:00:12:34:56", "printer", &["--subnet", "office"]);
    admin.ok(&[
        "host",
        "set",
        "printer",
        "--ip",
        "10.1.0.30",
        "--comment",
        "moved",
    ]);
    admin.ok(&["host", "rm", "printer"]);
    admin.add_host("52:54:00:12:34:57", "other", &["--subnet", "office"]);

    let text = admin.ok(&["log", "--host", "printer"]);
    let heads: Vec<&str> = text.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(heads.len(), 3, "{text}");
    let expected = [
        "postgres (ipmanager host)  insert host printer (10.1.0.2)",
        "postgres (ipmanager host)  update host printer (10.1.0.30)",
        "postgres (ipmanager host)  delete host printer (10.1.0.30)",
    ];
    for (line, tail) in heads.iter().zip(expected) {
        assert!(line.ends_with(tail), "{line:?} does not end with {tail:?}");
    }
    assert!(text.contains("    ip: 10.1.0.2 -> 10.1.0.30\n"), "{text}");
    assert!(text.contains("    comment: null -> moved\n"), "{text}");
    assert!(!text.contains("other"), "{text}");
    // By MAC and by IP (before or after the change) too.
    assert_eq!(admin.ok(&["log", "--host", "5254.0012.3456"]), text);
    assert_eq!(
        admin
            .ok(&["log", "--host", "10.1.0.2"])
            .lines()
            .filter(|l| !l.starts_with(' '))
            .count(),
        3,
        "printer's insert and its update away from 10.1.0.2, then other's insert at it"
    );

    let json = admin.json(&["log", "--host", "printer"]);
    let entries = json.as_array().unwrap();
    let ops: Vec<&str> = entries
        .iter()
        .map(|e| e["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["INSERT", "UPDATE", "DELETE"]);
    assert_eq!(entries[0]["old"], Value::Null);
    assert_eq!(entries[0]["new"]["ip"], "10.1.0.2");
    assert_eq!(entries[1]["old"]["ip"], "10.1.0.2");
    assert_eq!(entries[1]["new"]["ip"], "10.1.0.30");
    assert_eq!(entries[2]["old"]["hostname"], "printer");
    assert_eq!(entries[2]["new"], Value::Null);
    for entry in entries {
        assert_eq!(entry["db_user"], "postgres");
        assert_eq!(entry["application_name"], "ipmanager host");
        assert_eq!(entry["table_name"], "hosts");
    }

    let count = |args: &[&str]| admin.json(args).as_array().unwrap().len();
    assert_eq!(count(&["log", "--host", "printer", "--since", "1h"]), 3);
    assert_eq!(
        count(&["log", "--host", "printer", "--since", "2000-01-01"]),
        3
    );
    assert_eq!(count(&["log", "--since", "2999-01-01"]), 0);
    assert_eq!(
        admin.ok(&["log", "--since", "2999-01-01"]),
        "no changes recorded that match\n"
    );
    let out = admin.run(&["log", "--since", "yesterday"]);
    assert_exit(&out, 2, "an unreadable --since");

    // The subnet's own insert and every change of its hosts.
    let subnet_log = admin.json(&["log", "--subnet", "office"]);
    let tables: Vec<(&str, &str)> = subnet_log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["table_name"].as_str().unwrap(),
                e["operation"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tables,
        [
            ("subnets", "INSERT"),
            ("hosts", "INSERT"),
            ("hosts", "UPDATE"),
            ("hosts", "DELETE"),
            ("hosts", "INSERT")
        ]
    );
    assert_eq!(subnet_log[0]["application_name"], "ipmanager subnet");
    assert_eq!(
        admin.fails(&["log", "--subnet", "nope"], 1),
        "subnet 'nope' does not exist: give a subnet name or CIDR as listed by \
         'ipmanager subnet list'"
    );
}

#[tokio::test]
async fn status_lists_the_agents_that_reported() {
    let admin = Admin::with_office().await;
    assert_eq!(
        admin.ok(&["status"]),
        "no agent has reported yet (agents report once they have synced)\n"
    );
    assert_eq!(admin.json(&["status"]), Value::Array(vec![]));

    admin
        .db
        .client()
        .await
        .batch_execute(
            "SELECT ipmanager.agent_report('dhcp1', 'synced', interval '30s',
                 pg_current_snapshot(), 'abc123', 7, 0, NULL, 'dhcp1.example', '0.0.0-test')",
        )
        .await
        .unwrap();
    let text = admin.ok(&["status"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for word in ["AGENT", "HOST", "STATE", "HOSTS", "LAST ERROR"] {
        assert!(lines[0].contains(word), "{text}");
    }
    for word in ["dhcp1", "dhcp1.example", "up to date", "7"] {
        assert!(lines[1].contains(word), "{word:?} missing:\n{text}");
    }
    let json = admin.json(&["status"]);
    let agent = &json[0];
    assert_eq!(agent["name"], "dhcp1", "{json}");
    assert_eq!(agent["db_user"], "postgres");
    assert_eq!(agent["host"], "dhcp1.example");
    assert_eq!(agent["version"], "0.0.0-test");
    assert_eq!(agent["phase"], "synced");
    assert_eq!(agent["alive"], true);
    assert_eq!(agent["up_to_date"], true);
    assert_eq!(agent["pending_changes"], 0);
    assert_eq!(agent["hosts"], 7);
    assert_eq!(agent["files_hash"], "abc123");
    assert_eq!(agent["last_error"], Value::Null);

    // A change after the agent's snapshot puts it behind.
    admin.add_host("52:54:00:00:08:01", "late", &["--subnet", "office"]);
    let json = admin.json(&["status"]);
    assert_eq!(json[0]["up_to_date"], false, "{json}");
    assert_eq!(json[0]["pending_changes"], 1, "{json}");
    assert!(json[0]["behind_since"].is_string(), "{json}");
    let text = admin.ok(&["status"]);
    assert!(text.contains("behind (1 changes)"), "{text}");
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
}

#[test]
fn admin_help_texts_have_examples() {
    for args in [
        &["host", "--help"][..],
        &["host", "add", "--help"],
        &["subnet", "--help"],
        &["import", "--help"],
        &["compact", "--help"],
    ] {
        let out = ipmanager(args, &[]);
        assert_exit(&out, 0, &format!("{args:?}"));
        assert!(
            stdout(&out).contains("Examples:"),
            "{args:?} lacks examples:\n{}",
            stdout(&out)
        );
    }
}

/// A real `ipmanager agent` process for this test's database, writing into its own directory.
/// `activate` is what "telling dnsmasq" (reload and restart) runs: `true` succeeds, `false` fails.
struct RunningAgent {
    process: common::agent_process::AgentProcess,
    hosts_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl RunningAgent {
    fn start(admin: &Admin, name: &str, activate: &str) -> RunningAgent {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let config = out.join("ipmanager.toml");
        std::fs::write(
            &config,
            format!(
                "database_url = \"{url}\"\n\
                 [agent]\nname = \"{name}\"\nliveness_interval = \"300ms\"\nmax_backoff = \"200ms\"\n\
                 [dnsmasq]\ninclude_file = \"{o}/include.conf\"\nhosts_file = \"{o}/dhcp-hosts\"\n\
                 addn_hosts_file = \"{o}/hosts\"\nreload_command = [\"{activate}\"]\n\
                 restart_command = [\"{activate}\"]\ncheck_command = []\n",
                url = admin.db.url,
                o = out.display()
            ),
        )
        .unwrap();
        let mut agent = Command::new(BIN);
        agent
            .args(["agent", "--config", config.to_str().unwrap()])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        RunningAgent {
            process: common::agent_process::AgentProcess::spawn(agent),
            hosts_file: out.join("dhcp-hosts"),
            _dir: dir,
        }
    }
}

/// Waits until `ipmanager status -o json` shows `name` in the state `pick` describes.
async fn wait_for_agent(admin: &Admin, name: &str, what: &str, pick: impl Fn(&Value) -> bool) {
    let reached = common::wait_until(std::time::Duration::from_secs(20), || {
        let status = admin.json(&["status"]);
        let found = status
            .as_array()
            .unwrap()
            .iter()
            .any(|agent| agent["name"] == name && pick(agent));
        async move { found }
    })
    .await;
    assert!(
        reached,
        "agent {name} never became {what}: {}",
        admin.ok(&["status"])
    );
}

#[tokio::test]
async fn wait_returns_once_every_live_agent_serves_the_change_and_names_those_that_do_not() {
    let admin = Admin::with_office().await;
    let good = RunningAgent::start(&admin, "dhcp-a", "true");
    wait_for_agent(&admin, "dhcp-a", "up to date", |a| a["up_to_date"] == true).await;

    // The change is on disk when --wait returns: it waited for the agent, not for luck.
    let out = admin.run(&[
        "host",
        "add",
        "--mac",
        "52:54:00:00:0a:01",
        "--hostname",
        "waited",
        "--subnet",
        "office",
        "--wait",
    ]);
    assert_exit(&out, 0, "--wait with one healthy agent");
    assert!(
        stderr(&out).contains("ipmanager: live on dhcp-a"),
        "{}",
        stderr(&out)
    );
    let served = std::fs::read_to_string(&good.hosts_file).unwrap();
    assert!(
        served.contains("52:54:00:00:0a:01,10.1.0.2,waited"),
        "{served}"
    );

    // An agent that cannot tell dnsmasq never applies the change: --wait gives up after its
    // timeout, exits 75, and says which agent and why. The change itself is committed.
    let failing = RunningAgent::start(&admin, "dhcp-b", "false");
    wait_for_agent(&admin, "dhcp-b", "failing", |a| {
        a["alive"] == true && a["phase"] == "activation_failing"
    })
    .await;
    let out = admin.run(&[
        "host",
        "set",
        "waited",
        "--ip",
        "10.1.0.50",
        "--wait",
        "--timeout",
        "1s",
    ]);
    assert_exit(&out, 75, "--wait with a failing agent");
    let error = error_text(&out);
    assert!(
        error.starts_with("the change is committed but not live after 1s: not applied by dhcp-b (activation_failing: "),
        "{error}"
    );
    assert!(!error.contains("dhcp-a"), "dhcp-a applied it: {error}");
    assert!(
        stdout(&out).contains("changed host waited 10.1.0.50"),
        "{}",
        stdout(&out)
    );
    let json = admin.json(&["host", "show", "waited"]);
    assert_eq!(json[0]["ip"], "10.1.0.50");

    // An agent that stopped reporting is not waited for, and --wait says so.
    assert_eq!(failing.process.terminate().await, Some(0));
    wait_for_agent(&admin, "dhcp-b", "not alive", |a| a["alive"] == false).await;
    let out = admin.run(&["host", "rm", "waited", "--wait"]);
    assert_exit(&out, 0, "--wait with a stopped agent");
    let log = stderr(&out);
    assert!(
        log.contains("not waiting for agents that have not reported recently: dhcp-b"),
        "{log}"
    );
    assert!(log.contains("live on dhcp-a"), "{log}");
    let served = std::fs::read_to_string(&good.hosts_file).unwrap();
    assert!(!served.contains("waited"), "{served}");
}

#[tokio::test]
async fn status_follows_a_real_agent_through_a_change() {
    let admin = Admin::with_office().await;
    let agent = RunningAgent::start(&admin, "dhcp-a", "true");
    wait_for_agent(&admin, "dhcp-a", "up to date", |a| a["up_to_date"] == true).await;
    let text = admin.ok(&["status"]);
    assert!(
        text.lines().nth(1).unwrap().contains("up to date"),
        "{text}"
    );
    assert!(text.contains("dhcp-a"), "{text}");

    // After a change the agent reports the new state: one host, in sync, a SHA-256 of its files.
    admin.add_host("52:54:00:00:0b:01", "seen", &["--subnet", "office"]);
    wait_for_agent(&admin, "dhcp-a", "up to date again", |a| {
        a["up_to_date"] == true
    })
    .await;
    let json = admin.json(&["status"]);
    assert_eq!(json[0]["hosts"], 1, "{json}");
    assert_eq!(json[0]["phase"], "in_sync");
    assert!(
        json[0]["files_hash"].as_str().unwrap().len() == 64,
        "{json}"
    );
    drop(agent);
}

/// Runs `args` with stdout into a pipe whose reader takes `keep` bytes and then closes it,
/// the way `| head -c` does; returns the exit status and stderr.
fn run_into_closed_pipe(admin: &Admin, args: &[&str], keep: usize) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = command(args, &[("IPMANAGER_DATABASE_URL", &admin.db.url)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = vec![0; keep];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    // The reader is dropped here, with far more than a pipe buffer still to come.
    let out = child.wait_with_output().unwrap();
    (out.status.code(), stderr(&out))
}

#[tokio::test]
async fn a_closed_stdout_ends_export_and_host_list_quietly_with_exit_0() {
    let admin = Admin::new().await;
    admin
        .db
        .client()
        .await
        .batch_execute(
            "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('big', '10.64.0.0/16');
             INSERT INTO ipmanager.hosts (mac, ip, hostname)
             SELECT ('02:00:00:00:' || lpad(to_hex(i / 256), 2, '0') || ':' || lpad(to_hex(i % 256), 2, '0'))::macaddr,
                    '10.64.0.0'::inet + i, 'host-' || i
             FROM generate_series(1, 6000) AS i",
        )
        .await
        .unwrap();
    for (args, keep) in [
        (&["export", "--format", "dnsmasq"][..], 40),
        (&["host", "list", "-o", "json"], 100),
        (&["host", "list"], 100),
        (&["render"], 100),
    ] {
        let (code, stderr) = run_into_closed_pipe(&admin, args, keep);
        assert_eq!(code, Some(0), "ipmanager {args:?} | head: {stderr}");
        assert_eq!(stderr, "", "ipmanager {args:?} | head says something");
    }
}

#[tokio::test]
async fn a_name_that_reads_as_a_mac_is_ambiguous_until_a_prefix_says_which() {
    let admin = Admin::with_office().await;
    admin.ok(&[
        "host",
        "add",
        "--mac",
        "de:ad:be:ef:00:01",
        "--hostname",
        "victimhost",
        "--ip",
        "10.1.0.21",
    ]);
    admin.ok(&[
        "host",
        "add",
        "--mac",
        "02:00:00:00:00:02",
        "--hostname",
        "deadbeef0001",
        "--ip",
        "10.1.0.22",
    ]);
    for command in ["show", "rm"] {
        let error = admin.fails(&["host", command, "deadbeef0001"], 2);
        for candidate in [
            "victimhost",
            "10.1.0.21",
            "mac:de:ad:be:ef:00:01",
            "10.1.0.22",
            "name:deadbeef0001",
        ] {
            assert!(
                error.contains(candidate),
                "host {command}: {error} lacks {candidate}"
            );
        }
    }
    let error = admin.fails(&["host", "set", "deadbeef0001", "--comment", "x"], 2);
    assert!(error.contains("ambiguous"), "{error}");
    // Nothing was removed or changed.
    let listed = admin.ok(&["host", "list", "-o", "json"]);
    assert_eq!(parse_json(&listed).as_array().unwrap().len(), 2, "{listed}");
    assert!(!listed.contains("\"x\""), "{listed}");

    let shown = admin.ok(&["host", "show", "mac:deadbeef0001"]);
    assert!(
        shown.contains("victimhost") && !shown.contains("10.1.0.22"),
        "{shown}"
    );
    let removed = admin.ok(&["host", "rm", "name:deadbeef0001"]);
    assert!(
        removed.contains("removed host deadbeef0001 10.1.0.22"),
        "{removed}"
    );
    let listed = admin.ok(&["host", "list"]);
    assert!(
        listed.contains("victimhost"),
        "the other host is still there: {listed}"
    );
    // With one kind left matching, the plain text is no longer ambiguous.
    let removed = admin.ok(&["host", "rm", "deadbeef0001"]);
    assert!(removed.contains("removed host victimhost"), "{removed}");
    admin.fails(&["host", "show", "ip:victimhost"], 65);
}
