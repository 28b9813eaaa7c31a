//! The options, profiles, aliases and DNS-only names of issue 12 through the real binary against a
//! real PostgreSQL: `subnet add|set --dns-servers/--ntp-servers/--domain-search/--option/
//! --unset-option/--default-profile`, `profile add|set|rm|show|list`, `host add|set --profile/
//! --no-profile/--alias/--no-aliases` and `host add` without `--mac`: what they print, their JSON,
//! exit codes, and errors in the database's own words.

mod common;

use common::binary::{assert_exit, error_text, ipmanager, stdout};
use common::TestDb;
use serde_json::{json, Value};

struct Admin {
    db: TestDb,
}

impl Admin {
    /// A database with the subnet `office`: 10.1.0.0/24, range .100-.199, gateway .1.
    async fn with_office() -> Admin {
        let admin = Admin {
            db: TestDb::new().await,
        };
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

    fn run(&self, args: &[&str]) -> std::process::Output {
        ipmanager(args, &[("IPMANAGER_DATABASE_URL", &self.db.url)])
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_exit(&out, 0, &format!("ipmanager {}", args.join(" ")));
        stdout(&out)
    }

    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_exit(&out, code, &format!("ipmanager {}", args.join(" ")));
        error_text(&out)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        let text = self.ok(&args);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
    }

    /// What the database says to the same statement in psql.
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
async fn subnet_options_are_set_shown_in_json_and_unset() {
    let admin = Admin::with_office().await;
    let shown = admin.ok(&[
        "subnet",
        "set",
        "office",
        "--dns-servers",
        "10.1.0.53, 10.1.0.54",
        "--ntp-servers",
        "10.1.0.123",
        "--domain-search",
        "office.example,example.com",
        "--option",
        "mtu=1400",
        "--option",
        "252=\"http://wpad/wpad.dat\"",
        "--option",
        "224:hex=DEAD",
    ]);
    assert_eq!(
        field(&shown, "options"),
        "dns-server=10.1.0.53,10.1.0.54; mtu=1400; ntp-server=10.1.0.123; \
         domain-search=office.example,example.com; 224=de:ad; 252=http://wpad/wpad.dat"
    );
    let subnet = admin.json(&["subnet", "show", "office"]);
    assert_eq!(
        subnet["options"][0],
        json!({"option": "dns-server", "number": 6, "type": "ipv4-list", "value": "10.1.0.53,10.1.0.54"})
    );
    assert_eq!(subnet["options"].as_array().unwrap().len(), 6);
    assert_eq!(
        admin.json(&["subnet", "list"])[0]["options"][5]["type"],
        "string"
    );

    // Removing and re-setting the same value.
    let after = admin.json(&[
        "subnet",
        "set",
        "office",
        "--unset-option",
        "mtu",
        "--unset-option",
        "224",
    ]);
    assert_eq!(after["options"].as_array().unwrap().len(), 4);
    assert_eq!(
        admin.fails(&["subnet", "set", "office", "--unset-option", "mtu"], 1),
        "option 'mtu' is not set: nothing to unset"
    );
    assert_eq!(
        admin.fails(
            &[
                "subnet",
                "set",
                "office",
                "--option",
                "ntp-server=10.1.0.123"
            ],
            1
        ),
        "subnet 'office' already has these values: nothing to change"
    );

    // A bad value: exit 65 and the database's words, the same as psql's.
    let psql = admin
        .db_error("SELECT ipmanager.set_subnet_option('office', 'mtu', '70000')")
        .await;
    assert_eq!(
        admin.fails(&["subnet", "set", "office", "--option", "mtu=70000"], 65),
        psql
    );
    assert!(
        psql.starts_with(
            "subnet_options.value '70000' of option mtu (26) in subnet 'office' is not valid"
        ),
        "{psql}"
    );
    // Nothing of a refused command is kept.
    assert!(admin
        .fails(
            &[
                "subnet",
                "set",
                "office",
                "--option",
                "mtu=1400",
                "--option",
                "router=10.1.0.1"
            ],
            65
        )
        .contains("cannot be set: the router is the subnet's gateway"));
    assert_eq!(
        admin.json(&["subnet", "show", "office"])["options"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    for (arg, expected) in [
        ("mtu", "option 'mtu' has no value"),
        (
            "224:float=1",
            "option '224' declares the unknown type 'float'",
        ),
        (
            "253=x",
            "subnet_options.type of option 253 in subnet 'office' is missing",
        ),
    ] {
        let error = admin.fails(&["subnet", "set", "office", "--option", arg], 65);
        assert!(error.starts_with(expected), "{arg}: {error}");
    }

    // subnet add takes the same flags; an IPv6 subnet gets DHCPv6 options of the same name.
    admin.ok(&[
        "subnet",
        "add",
        "2001:db8:1::/64",
        "--name",
        "v6",
        "--dns-servers",
        "2001:db8::53",
    ]);
    let v6 = admin.json(&["subnet", "show", "v6"]);
    assert_eq!(v6["options"][0]["number"], 23);
}

#[tokio::test]
async fn profiles_are_added_changed_shown_listed_and_removed_only_when_unused() {
    let admin = Admin::with_office().await;
    assert_eq!(
        admin.ok(&[
            "profile",
            "add",
            "pxe",
            "--boot-file",
            "pxelinux.0",
            "--boot-file-uefi",
            "grubx64.efi",
            "--boot-file-arm64",
            "grubaa64.efi",
            "--boot-file-ipxe",
            "http://boot.example/menu.ipxe",
            "--next-server",
            "10.1.0.5",
            "--tftp-server-name",
            "tftp.example",
            "--option",
            "tftp-server-address=10.1.0.5",
        ]),
        "added profile pxe\n"
    );
    let profile = admin.json(&["profile", "show", "pxe"]);
    for (key, value) in [
        ("boot_file", json!("pxelinux.0")),
        ("boot_file_uefi", json!("grubx64.efi")),
        ("boot_file_arm64", json!("grubaa64.efi")),
        ("boot_file_ipxe", json!("http://boot.example/menu.ipxe")),
        ("next_server", json!("10.1.0.5")),
        ("tftp_server_name", json!("tftp.example")),
        ("hosts", json!(0)),
        ("default_of", json!([])),
    ] {
        assert_eq!(profile[key], value, "{key}");
    }
    assert_eq!(profile["options"][0]["option"], "tftp-server-address");

    let changed = admin.json(&[
        "profile",
        "set",
        "pxe",
        "--boot-file-arm64",
        "none",
        "--option",
        "mtu=1500",
        "--unset-option",
        "tftp-server-address",
    ]);
    assert_eq!(changed["boot_file_arm64"], Value::Null);
    assert_eq!(changed["options"][0]["option"], "mtu");
    assert_eq!(changed["options"].as_array().unwrap().len(), 1);
    assert_eq!(
        admin.fails(&["profile", "set", "pxe", "--option", "mtu=1500"], 1),
        "profile 'pxe' already has these values: nothing to change"
    );
    let psql = admin
        .db_error("UPDATE ipmanager.profiles SET boot_file = 'a,b' WHERE name = 'pxe'")
        .await;
    assert_eq!(
        admin.fails(&["profile", "set", "pxe", "--boot-file", "a,b"], 65),
        psql
    );

    // In use by a host and a subnet: refused, counting them.
    admin.ok(&[
        "host",
        "add",
        "--mac",
        "52:54:00:00:00:01",
        "--hostname",
        "pc1",
        "--ip",
        "10.1.0.10",
        "--profile",
        "pxe",
    ]);
    admin.ok(&["subnet", "set", "office", "--default-profile", "pxe"]);
    let list = admin.ok(&["profile", "list"]);
    assert!(
        list.starts_with("NAME  BOOT FILE   NEXT SERVER  OPTIONS  HOSTS"),
        "{list}"
    );
    assert!(
        list.contains("pxe   pxelinux.0  10.1.0.5     1        1"),
        "{list}"
    );
    assert_eq!(
        admin.fails(&["profile", "rm", "pxe"], 65),
        "profile 'pxe' is still used by 1 host(s) (e.g. 'pc1') and 1 subnet(s) as their default \
         profile: a profile in use cannot be removed (Take the hosts out first: ipmanager host set \
         HOST --no-profile (UPDATE ipmanager.hosts SET profile_id = NULL WHERE ...), and the \
         subnets: ipmanager subnet set SUBNET --default-profile none.)"
    );
    assert_eq!(
        admin.json(&["subnet", "show", "office"])["default_profile"],
        "pxe"
    );
    admin.ok(&["host", "set", "pc1", "--no-profile"]);
    admin.ok(&["subnet", "set", "office", "--default-profile", "none"]);
    assert_eq!(admin.ok(&["profile", "rm", "pxe"]), "removed profile pxe\n");
    // The log names what changed.
    let log = admin.ok(&["log"]);
    for subject in [
        "profile pxe",
        "option mtu of profile #1",
        "option tftp-server-address of profile #1",
    ] {
        assert!(log.contains(subject), "{subject} in:\n{log}");
    }
    assert_eq!(
        admin.fails(&["profile", "show", "pxe"], 1),
        "profile 'pxe' does not exist: give a profile name as listed by 'ipmanager profile list'"
    );
    assert_eq!(
        admin.fails(&["host", "set", "pc1", "--profile", "pxe"], 1),
        "profile 'pxe' does not exist: give a profile name as listed by 'ipmanager profile list'"
    );
}

#[tokio::test]
async fn hosts_get_profiles_aliases_and_dns_only_names() {
    let admin = Admin::with_office().await;
    admin.ok(&[
        "profile",
        "add",
        "pxe-uefi",
        "--boot-file-uefi",
        "grubx64.efi",
    ]);
    let printer = admin.json(&[
        "host",
        "add",
        "--mac",
        "52:54:00:00:00:01",
        "--hostname",
        "printer",
        "--ip",
        "10.1.0.10",
        "--alias",
        "laser,print-server",
        "--profile",
        "pxe-uefi",
    ]);
    assert_eq!(printer["aliases"], json!(["laser", "print-server"]));
    assert_eq!(printer["profile"], "pxe-uefi");
    let shown = admin.ok(&["host", "show", "printer"]);
    assert_eq!(field(&shown, "aliases"), "laser, print-server");
    assert_eq!(field(&shown, "profile"), "pxe-uefi");

    // Aliases collide with names exactly as names do, in the database's words.
    admin.ok(&[
        "host",
        "add",
        "--mac",
        "52:54:00:00:00:02",
        "--hostname",
        "nas",
        "--ip",
        "10.1.0.11",
    ]);
    let psql = admin
        .db_error(
            "INSERT INTO ipmanager.host_aliases (host_id, name) \
             SELECT id, 'Laser' FROM ipmanager.hosts WHERE hostname = 'nas'",
        )
        .await;
    assert_eq!(
        admin.fails(&["host", "set", "nas", "--alias", "Laser"], 65),
        psql
    );
    assert_eq!(
        admin.fails(
            &["host", "add", "--mac", "52:54:00:00:00:03", "--hostname", "LASER", "--ip", "10.1.0.12"],
            65
        ),
        "hosts.hostname 'LASER' is already used in subnet 'office' (alias of 'printer', \
         52:54:00:00:00:01, 10.1.0.10): host names and aliases are unique per subnet, ignoring case"
    );
    assert_eq!(
        admin.fails(&["host", "set", "nas", "--alias", "bad_name"], 65),
        "host_aliases.name 'bad_name' is not a valid hostname: only letters, digits and inner \
         hyphens in dot-separated labels of at most 63 characters, 253 in all, no trailing dot, \
         last label not all digits (RFC 1123)"
    );
    assert_eq!(
        admin.fails(&["host", "set", "nas", "--alias", "a,A"], 65),
        "alias 'A' is given twice"
    );
    // A host may take one of its aliases as its name when the same command drops it.
    let renamed = admin.json(&[
        "host",
        "set",
        "printer",
        "--hostname",
        "laser",
        "--alias",
        "printer",
    ]);
    assert_eq!(
        (renamed["hostname"].as_str(), renamed["aliases"].clone()),
        (Some("laser"), json!(["printer"]))
    );
    let cleared = admin.json(&["host", "set", "laser", "--no-aliases", "--no-profile"]);
    assert_eq!(
        (cleared["aliases"].clone(), cleared["profile"].clone()),
        (json!([]), Value::Null)
    );
    assert_eq!(
        admin.fails(&["host", "set", "laser", "--no-aliases"], 1),
        "host laser already has these values: nothing to change"
    );

    // A DNS-only name: no --mac.
    assert_eq!(
        admin.ok(&[
            "host",
            "add",
            "--hostname",
            "vip1",
            "--ip",
            "10.1.0.60",
            "--alias",
            "vip"
        ]),
        "added host vip1 10.1.0.60 (DNS only) in subnet office\n"
    );
    let vip = admin.json(&["host", "show", "vip1"]);
    assert_eq!(vip[0]["mac"], Value::Null);
    assert_eq!(
        admin.fails(
            &["host", "add", "--hostname", "vip2", "--ip", "10.1.0.150"],
            65
        ),
        "hosts.ip 10.1.0.150 of DNS-only name 'vip2' lies in the dynamic range \
         10.1.0.100-10.1.0.199 of subnet 'office': dnsmasq would lease it to a client, so a name \
         without MAC must have an address outside the range (Give an address outside the range, \
         or give the host a MAC address (--mac, hosts.mac) to make it a reservation.)"
    );
    assert_eq!(
        admin.fails(
            &[
                "host",
                "add",
                "--mac",
                "52:54:00:00:00:09",
                "--hostname",
                "pc9",
                "--ip",
                "10.1.0.60"
            ],
            65
        ),
        "hosts.ip 10.1.0.60 is already reserved (for 'vip1', DNS only): an IP address can have \
         only one reservation"
    );
    let allocated = admin.json(&["host", "add", "--hostname", "vip3", "--subnet", "office"]);
    assert_eq!(
        (allocated["ip"].as_str(), allocated["mac"].clone()),
        (Some("10.1.0.2"), Value::Null)
    );
    let list = admin.ok(&["host", "list", "--search", "vip"]);
    assert!(list.contains("vip1 (vip)  10.1.0.60  (DNS only)"), "{list}");
    assert_eq!(list.lines().count(), 3, "{list}");
}

#[test]
fn profile_help_has_examples() {
    for args in [
        &["profile", "--help"][..],
        &["profile", "add", "--help"],
        &["subnet", "set", "--help"],
    ] {
        let out = ipmanager(args, &[]);
        assert_exit(&out, 0, &format!("{args:?}"));
        assert!(
            stdout(&out).contains("Examples:"),
            "{args:?}:\n{}",
            stdout(&out)
        );
    }
}

#[tokio::test]
async fn import_maps_names_onto_aliases_and_dns_only_names_and_export_writes_them_back() {
    let admin = Admin::with_office().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dnsmasq.conf");
    std::fs::write(
        &file,
        "dhcp-host=52:54:00:00:00:01,10.1.0.10,printer\n\
         cname=laser,print-server,printer\n\
         host-record=vip1,vip,10.1.0.60\n\
         address=/files.office.example/10.1.0.61\n\
         address=/ads.example/#\n\
         host-record=printer,pr,10.1.0.10\n\
         cname=x,nobody\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let out = admin.run(&["import", path, "--format", "dnsmasq", "-o", "json"]);
    assert_exit(&out, 65, "import with an unknown cname target");
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["rejected"][0]["line"], 7);
    assert_eq!(
        report["rejected"][0]["reason"],
        "no host is named 'nobody': a cname target must be a host's name"
    );
    // Without the bad line it goes in; the names became aliases and DNS-only names.
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("cname=x,nobody\n", "");
    std::fs::write(&file, text).unwrap();
    let report = admin.json(&["import", path, "--format", "dnsmasq"]);
    let reasons: Vec<&str> = report["added"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "",
            "aliases of 'printer'",
            "DNS-only name",
            "DNS-only name; dnsmasq also answers the name's subdomains; ipmanager serves the name only",
            "aliases of 'printer'",
        ]
    );
    assert_eq!(report["skipped"][0]["line"], 5);
    let printer = admin.json(&["host", "show", "printer"]);
    assert_eq!(
        printer[0]["aliases"],
        json!(["laser", "pr", "print-server"])
    );
    let vip = admin.json(&["host", "show", "vip1"]);
    assert_eq!(
        (vip[0]["mac"].clone(), vip[0]["aliases"].clone()),
        (Value::Null, json!(["vip"]))
    );
    // Importing it again changes nothing.
    let again = admin.json(&["import", path, "--format", "dnsmasq"]);
    assert_eq!(again["added"], json!([]));
    assert_eq!(again["unchanged"].as_array().unwrap().len(), 5);

    let exported = admin.ok(&["export", "--format", "dnsmasq"]);
    assert!(
        exported.contains("cname=laser,pr,print-server,printer\n"),
        "{exported}"
    );
    assert!(
        exported.contains("host-record=vip1,vip,10.1.0.60\n"),
        "{exported}"
    );
    assert!(
        exported.contains("host-record=files.office.example,10.1.0.61\n"),
        "{exported}"
    );
    let hosts = admin.ok(&["export", "--format", "hosts"]);
    assert!(
        hosts.contains("10.1.0.10 printer laser pr print-server\n"),
        "{hosts}"
    );

    // The export reads back into an empty database as the same names.
    let other = Admin::with_office().await;
    let exported_file = dir.path().join("export.conf");
    std::fs::write(&exported_file, &exported).unwrap();
    other.json(&[
        "import",
        exported_file.to_str().unwrap(),
        "--format",
        "dnsmasq",
    ]);
    assert_eq!(
        other.json(&["host", "show", "printer"])[0]["aliases"],
        json!(["laser", "pr", "print-server"])
    );
    assert_eq!(
        other.json(&["host", "show", "vip1"])[0]["aliases"],
        json!(["vip"])
    );

    // A hosts file: the reservation's address gives aliases, another address a DNS-only name.
    let hosts_file = dir.path().join("hosts");
    std::fs::write(
        &hosts_file,
        "10.1.0.10 printer color\n10.1.0.70 gw2 router2\n",
    )
    .unwrap();
    other.json(&["import", hosts_file.to_str().unwrap(), "--format", "hosts"]);
    assert_eq!(
        other.json(&["host", "show", "printer"])[0]["aliases"],
        json!(["color", "laser", "pr", "print-server"])
    );
    assert_eq!(
        other.json(&["host", "show", "gw2"])[0]["aliases"],
        json!(["router2"])
    );
}

/// Issue 13: `host add|set --mac A --mac B` and `--client-id`, shown and in JSON; an extra MAC
/// finds the host; refusals in the database's and the parser's words.
#[tokio::test]
async fn hosts_get_several_macs_and_a_client_id() {
    let admin = Admin::with_office().await;
    let laptop = admin.json(&[
        "host",
        "add",
        "--mac",
        "52:54:00:00:00:01",
        "--mac",
        "5254.0000.0011,52-54-00-00-00-21",
        "--client-id",
        "1:52:54:0:0:0:1",
        "--hostname",
        "laptop",
        "--ip",
        "10.1.0.10",
    ]);
    assert_eq!(laptop["mac"], "52:54:00:00:00:01");
    assert_eq!(
        laptop["extra_macs"],
        json!(["52:54:00:00:00:11", "52:54:00:00:00:21"])
    );
    assert_eq!(laptop["client_id"], "01:52:54:00:00:00:01");
    // Any of its MACs finds it.
    let shown = admin.ok(&["host", "show", "52:54:00:00:00:21"]);
    assert_eq!(
        field(&shown, "mac"),
        "52:54:00:00:00:01,52:54:00:00:00:11,52:54:00:00:00:21"
    );
    assert_eq!(field(&shown, "client id"), "01:52:54:00:00:00:01");

    // Another host may not take one of them, in the trigger's words.
    let error = admin.fails(
        &[
            "host",
            "add",
            "--mac",
            "52:54:00:00:00:02",
            "--mac",
            "52:54:00:00:00:11",
            "--hostname",
            "pc",
            "--ip",
            "10.1.0.11",
        ],
        65,
    );
    assert!(
        error.contains(
            "host_macs.mac 52:54:00:00:00:11 already has a reservation in subnet 'office' \
             ('laptop', 10.1.0.10)"
        ),
        "{error}"
    );
    let error = admin.fails(&["host", "set", "laptop", "--client-id", "01:zz"], 65);
    assert!(
        error.contains("hosts.client_id '01:zz' is not a client identifier"),
        "{error}"
    );

    // --mac on set replaces the MACs; --no-client-id removes the identifier.
    let changed = admin.json(&[
        "host",
        "set",
        "laptop",
        "--mac",
        "52:54:00:00:00:21,52:54:00:00:00:01",
        "--no-client-id",
    ]);
    assert_eq!(changed["mac"], "52:54:00:00:00:21");
    assert_eq!(changed["extra_macs"], json!(["52:54:00:00:00:01"]));
    assert_eq!(changed["client_id"], Value::Null);
    let changed = admin.json(&["host", "set", "laptop", "--mac", "52:54:00:00:00:21"]);
    assert_eq!(changed["extra_macs"], json!([]));
}
