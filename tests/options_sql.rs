//! `sql/V6__options.sql` against a real PostgreSQL: every option type accepted in its normal form
//! and refused with a message naming the subnet or profile, the option and the rule; values that
//! would inject into dnsmasq's files; profiles and their removal while in use; aliases colliding
//! with names and aliases exactly as names do; DNS-only names reserving their address; audit and
//! notifications of the new tables; the snapshot the agent reads.
//!
//! Run with `IPMANAGER_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres
//! cargo test --test options_sql`. Every test makes its own database.

mod common;

use common::sql::{describe, ok, scalar};
use common::TestDb;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// Runs `sql`, which must fail, and returns (SQLSTATE, message).
async fn failure(client: &Client, sql: &str) -> (SqlState, String) {
    match client.batch_execute(sql).await {
        Ok(()) => panic!("expected {sql:?} to fail, but it succeeded"),
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("{sql}: not a server error: {e}"));
            (db.code().clone(), db.message().to_owned())
        }
    }
}

/// A database with `office` (10.1.0.0/24, range .100-.199, gateway .1, domain office.example)
/// and `v6` (2001:db8:1::/64).
async fn with_subnets() -> (TestDb, Client) {
    let db = TestDb::new().await;
    let client = db.client().await;
    ok(
        &client,
        "INSERT INTO ipmanager.subnets (name, cidr, range_start, range_end, gateway, domain) \
         VALUES ('office', '10.1.0.0/24', '10.1.0.100', '10.1.0.199', '10.1.0.1', 'office.example'); \
         INSERT INTO ipmanager.subnets (name, cidr) VALUES ('v6', '2001:db8:1::/64');",
    )
    .await;
    (db, client)
}

/// `set_subnet_option` and the stored (type, value).
async fn set_option(
    client: &Client,
    subnet: &str,
    option: &str,
    value: &str,
    kind: Option<&str>,
) -> Result<(String, String), String> {
    client
        .query_one(
            "SELECT o.type, o.value FROM ipmanager.set_subnet_option($1, $2, $3, $4) o",
            &[&subnet, &option, &value, &kind],
        )
        .await
        .map(|row| (row.get(0), row.get(1)))
        .map_err(|e| {
            e.as_db_error()
                .map(|db| db.message().to_owned())
                .unwrap_or_else(|| e.to_string())
        })
}

#[tokio::test]
async fn every_option_type_is_accepted_in_its_normal_form() {
    let (_db, client) = with_subnets().await;
    for (subnet, option, value, kind, expected_type, expected) in [
        (
            "office",
            "dns-server",
            "10.1.0.53, 10.1.0.54",
            None,
            "ipv4-list",
            "10.1.0.53,10.1.0.54",
        ),
        ("office", "6", "10.1.0.55", None, "ipv4-list", "10.1.0.55"),
        (
            "v6",
            "dns-server",
            "2001:DB8::53,2001:db8::54",
            None,
            "ipv6-list",
            "2001:db8::53,2001:db8::54",
        ),
        (
            "office",
            "domain-search",
            "office.example, example.com",
            None,
            "domain-list",
            "office.example,example.com",
        ),
        (
            "office",
            "tzdb-timezone",
            "Europe/Berlin",
            None,
            "string",
            "Europe/Berlin",
        ),
        (
            "office",
            "252",
            "\"http://wpad/wpad.dat\"",
            None,
            "string",
            "http://wpad/wpad.dat",
        ),
        ("office", "default-ttl", "064", None, "uint8", "64"),
        ("office", "mtu", "1400", None, "uint16", "1400"),
        (
            "office",
            "arp-timeout",
            "4294967295",
            None,
            "uint32",
            "4294967295",
        ),
        ("office", "ip-forward-enable", "Yes", None, "bool", "1"),
        ("office", "all-subnets-local", "off", None, "bool", "0"),
        (
            "office",
            "224",
            "DE:AD:b:ef",
            Some("hex"),
            "hex",
            "de:ad:0b:ef",
        ),
        (
            "office",
            "225",
            "deadbeef",
            Some("hex"),
            "hex",
            "de:ad:be:ef",
        ),
        ("office", "226", "7", Some("uint8"), "uint8", "7"),
        (
            "office",
            "classless-static-route",
            "10.2.0.0/16,10.1.0.1, 0.0.0.0/0,10.1.0.1",
            None,
            "classless-routes",
            "10.2.0.0/16,10.1.0.1,0.0.0.0/0,10.1.0.1",
        ),
        (
            "v6",
            "bootfile-url",
            "http://[2001:db8::5]/boot.efi",
            None,
            "string",
            "http://[2001:db8::5]/boot.efi",
        ),
    ] {
        let got = set_option(&client, subnet, option, value, kind).await;
        assert_eq!(
            got,
            Ok((expected_type.to_owned(), expected.to_owned())),
            "{subnet} {option}={value}"
        );
    }
    // '6' and 'dns-server' are one option: the second call replaced the first, by name.
    assert_eq!(
        scalar::<String>(
            &client,
            "SELECT string_agg(option || '=' || value, ' ' ORDER BY number) \
             FROM ipmanager.subnet_options WHERE number = 6"
        )
        .await,
        "dns-server=10.1.0.55"
    );
}

#[tokio::test]
async fn values_that_break_their_type_are_refused_naming_subnet_option_and_rule() {
    let (_db, client) = with_subnets().await;
    let long = "a".repeat(256);
    let many = vec!["10.1.0.53"; 60].join(",");
    for (subnet, option, value, kind, expected) in [
        ("office", "dns-server", "10.1.0.999", None,
         "subnet_options.value '10.1.0.999' of option dns-server (6) in subnet 'office' is not valid: dns-server (6) takes a list of IPv4 addresses separated by commas, e.g. 10.1.0.53,10.1.0.54, at most 500 bytes in all"),
        ("office", "dns-server", "10.1.0.53,", None, "takes a list of IPv4 addresses"),
        ("office", "dns-server", "10.1.0.0/24", None, "takes a list of IPv4 addresses"),
        ("office", "dns-server", "2001:db8::53", None, "takes a list of IPv4 addresses"),
        ("office", "dns-server", many.as_str(), None, "at most 500 bytes in all"),
        ("v6", "dns-server", "10.1.0.53", None,
         "subnet_options.value '10.1.0.53' of option dns-server (23) in subnet 'v6' is not valid: dns-server (23) takes a list of IPv6 addresses"),
        ("office", "domain-search", "bad_domain.example", None, "takes a list of domain names separated by commas"),
        ("office", "domain-search", "example.com.", None, "no trailing dot"),
        ("office", "tzdb-timezone", "Europe/Berlin\"", None, "takes text of 1 to 255 printable ASCII characters without '\"', '\\', '#' or ','"),
        ("office", "tzdb-timezone", " padded", None, "no blank at either end"),
        ("office", "tzdb-timezone", long.as_str(), None, "(256 bytes, not shown)"),
        ("office", "default-ttl", "256", None, "default-ttl (23) takes a whole number from 0 to 255"),
        ("office", "mtu", "-1", None, "mtu (26) takes a whole number from 0 to 65535"),
        ("office", "arp-timeout", "4294967296", None, "takes a whole number from 0 to 4294967295"),
        ("office", "ip-forward-enable", "maybe", None, "takes true or false (also yes/no, on/off, 1/0)"),
        ("office", "224", "xyz", Some("hex"), "224 takes hexadecimal bytes"),
        ("office", "classless-static-route", "10.2.0.1/16,10.1.0.1", None, "takes network/prefix,router pairs"),
        ("office", "classless-static-route", "10.2.0.0/16", None, "takes network/prefix,router pairs"),
        ("office", "classless-static-route", "10.1.0.1,10.2.0.0/16", None, "takes network/prefix,router pairs"),
    ] {
        let error = set_option(&client, subnet, option, value, kind)
            .await
            .expect_err(&format!("{subnet} {option}={value} was accepted"));
        assert!(error.contains(expected), "{option}={value}: {error}");
    }
}

#[tokio::test]
async fn options_are_known_settable_and_typed_or_refused_in_words() {
    let (_db, client) = with_subnets().await;
    for (subnet, option, value, kind, expected) in [
        ("office", "nonsense", "1", None,
         "subnet_options.option 'nonsense' of subnet 'office' is not a DHCPv4 option ipmanager knows"),
        ("office", "bootfile-url", "x", None, "is not a DHCPv4 option ipmanager knows"),
        ("office", "router", "10.1.0.1", None,
         "subnet_options.option router (3) of subnet 'office' cannot be set: the router is the subnet's gateway"),
        ("office", "67", "pxelinux.0", None, "are profile settings"),
        ("office", "53", "1", Some("uint8"), "belongs to the DHCP protocol itself"),
        ("office", "0", "1", Some("uint8"), "DHCPv4 option numbers run from 1 to 254"),
        ("office", "255", "1", Some("uint8"), "DHCPv4 option numbers run from 1 to 254"),
        ("v6", "3", "1", Some("uint8"), "belongs to the DHCPv6 protocol itself"),
        ("office", "253", "x", None,
         "subnet_options.type of option 253 in subnet 'office' is missing: option 253 is not in the catalogue, so its type must be declared"),
        ("office", "253", "x", Some("float"), "subnet_options.type 'float' of option 253 in subnet 'office' is not a DHCPv4 value type"),
        ("office", "253", "2001:db8::1", Some("ipv6-list"), "is not a DHCPv4 value type"),
        ("v6", "300", "10.0.0.1", Some("ipv4-list"), "is not a DHCPv6 value type"),
        ("office", "mtu", "1400", Some("string"),
         "subnet_options.type 'string' of option mtu (26) in subnet 'office' contradicts the catalogue: option mtu takes uint16"),
    ] {
        let error = set_option(&client, subnet, option, value, kind)
            .await
            .expect_err(&format!("{subnet} {option}={value} was accepted"));
        assert!(error.contains(expected), "{option}={value}: {error}");
    }
    // A plain INSERT gets the same checks and SQLSTATE.
    let (code, message) = failure(
        &client,
        "INSERT INTO ipmanager.subnet_options (subnet_id, option, value) \
         SELECT id, 'mtu', 'big' FROM ipmanager.subnets WHERE name = 'office'",
    )
    .await;
    assert_eq!(code, SqlState::CHECK_VIOLATION, "{message}");
    assert!(
        message.contains("mtu (26) takes a whole number"),
        "{message}"
    );
    // The same option twice for one subnet: the unique constraint.
    ok(
        &client,
        "SELECT ipmanager.set_subnet_option('office', 'mtu', '1400')",
    )
    .await;
    let (code, _) = failure(
        &client,
        "INSERT INTO ipmanager.subnet_options (subnet_id, option, value) \
         SELECT id, '26', '1500' FROM ipmanager.subnets WHERE name = 'office'",
    )
    .await;
    assert_eq!(code, SqlState::UNIQUE_VIOLATION);
    // A subnet with options keeps its family.
    let (code, message) = failure(
        &client,
        "UPDATE ipmanager.subnets SET cidr = '2001:db8:2::/64', range_start = NULL, \
         range_end = NULL, gateway = NULL WHERE name = 'office'",
    )
    .await;
    assert_eq!(code, SqlState::CHECK_VIOLATION, "{message}");
    assert!(
        message.contains("cannot change from IPv4 to IPv6"),
        "{message}"
    );
    assert!(
        scalar::<bool>(
            &client,
            "SELECT ipmanager.unset_subnet_option('office', '26')"
        )
        .await
    );
    assert!(
        !scalar::<bool>(
            &client,
            "SELECT ipmanager.unset_subnet_option('office', 'mtu')"
        )
        .await
    );
}

/// Nothing that can end a line, start a comment, quote, or add a field passes into any value.
#[tokio::test]
async fn no_value_can_carry_dnsmasq_syntax() {
    let (_db, client) = with_subnets().await;
    let tricks = [
        "10.1.0.53\ndhcp-script=/tmp/x",
        "10.1.0.53\r\n",
        "10.1.0.53 #x",
        "10.1.0.53,set:evil",
        "a\"b",
        "a\\b",
        "a#b",
        "a,b",
        "a\tb",
        "é",
        "",
    ];
    for option in [
        "dns-server",
        "domain-search",
        "tzdb-timezone",
        "mtu",
        "ip-forward-enable",
        "classless-static-route",
    ] {
        // In a list a comma separates items: "a,b" is two domains, not an injection.
        for trick in tricks
            .iter()
            .filter(|t| !(option == "domain-search" && **t == "a,b"))
        {
            let result = set_option(&client, "office", option, trick, None).await;
            assert!(
                result.is_err(),
                "{option}={trick:?} was accepted: {result:?}"
            );
        }
    }
    for trick in ["a,b", "a\nb", "de:ad,01", "de ad"] {
        assert!(set_option(&client, "office", "224", trick, Some("hex"))
            .await
            .is_err());
    }
    for file in [
        "a,b",
        "a b",
        "a#b",
        "a\"b",
        "a\nb",
        "-x",
        "tag:evil",
        "set:x",
        "",
        &"a".repeat(129),
    ] {
        let (code, message) = failure(
            &client,
            &format!(
                "INSERT INTO ipmanager.profiles (name, boot_file_uefi) VALUES ('p', {})",
                quote(file)
            ),
        )
        .await;
        assert_eq!(code, SqlState::CHECK_VIOLATION, "{file:?}: {message}");
        assert!(
            message.starts_with("profiles.boot_file_uefi ")
                && message.contains("of profile 'p' is not a valid boot file name"),
            "{message}"
        );
    }
    for name in [
        "tftp server",
        "tftp,x",
        "t_x",
        &format!("{}.example", "a".repeat(60)),
    ] {
        let (_, message) = failure(
            &client,
            &format!(
                "INSERT INTO ipmanager.profiles (name, tftp_server_name) VALUES ('p', {})",
                quote(name)
            ),
        )
        .await;
        assert!(message.contains("is not a valid server name"), "{message}");
    }
}

/// A SQL literal (E'' form, so that control characters survive).
fn quote(text: &str) -> String {
    let escaped: String = text
        .chars()
        .map(|c| match c {
            '\'' => "''".to_owned(),
            '\\' => "\\\\".to_owned(),
            '\n' => "\\n".to_owned(),
            '\r' => "\\r".to_owned(),
            '\t' => "\\t".to_owned(),
            c => c.to_string(),
        })
        .collect();
    format!("E'{escaped}'")
}

#[tokio::test]
async fn profiles_in_use_cannot_be_removed_and_the_message_counts_hosts() {
    let (_db, client) = with_subnets().await;
    ok(
        &client,
        "INSERT INTO ipmanager.profiles (name, boot_file, boot_file_uefi, boot_file_arm64, \
             boot_file_ipxe, next_server, tftp_server_name) \
         VALUES ('pxe', 'pxelinux.0', 'efi/grubx64.efi', 'grubaa64.efi', \
                 'http://boot.example/menu.ipxe?x=1', '10.1.0.5/24', 'tftp.example'); \
         SELECT ipmanager.set_profile_option('pxe', 'tftp-server-address', '10.1.0.5'); \
         INSERT INTO ipmanager.hosts (mac, ip, hostname, profile_id) VALUES \
             ('52:54:00:00:00:01', '10.1.0.10', 'pc1', ipmanager.profile_id('pxe')), \
             ('52:54:00:00:00:02', '10.1.0.11', 'pc2', ipmanager.profile_id('pxe'));",
    )
    .await;
    assert_eq!(
        scalar::<String>(&client, "SELECT host(next_server) FROM ipmanager.profiles").await,
        "10.1.0.5"
    );
    let (code, message) =
        failure(&client, "DELETE FROM ipmanager.profiles WHERE name = 'pxe'").await;
    assert_eq!(code, SqlState::FOREIGN_KEY_VIOLATION);
    assert_eq!(
        message,
        "profile 'pxe' is still used by 2 host(s) (e.g. 'pc1') and 0 subnet(s) as their default \
         profile: a profile in use cannot be removed"
    );
    ok(
        &client,
        "UPDATE ipmanager.hosts SET profile_id = NULL; \
         UPDATE ipmanager.subnets SET default_profile_id = ipmanager.profile_id('pxe') WHERE name = 'office';",
    )
    .await;
    let (_, message) = failure(&client, "DELETE FROM ipmanager.profiles WHERE name = 'pxe'").await;
    assert!(
        message.contains("by 0 host(s) and 1 subnet(s)"),
        "{message}"
    );
    ok(
        &client,
        "UPDATE ipmanager.subnets SET default_profile_id = NULL; \
         DELETE FROM ipmanager.profiles WHERE name = 'pxe';",
    )
    .await;
    // Its options went with it.
    assert_eq!(
        scalar::<i64>(&client, "SELECT count(*) FROM ipmanager.profile_options").await,
        0
    );

    for (sql, code, expected) in [
        ("SELECT ipmanager.profile_id('nope')", SqlState::NO_DATA_FOUND,
         "profile 'nope' does not exist: give a profile name as listed by 'ipmanager profile list'"),
        ("INSERT INTO ipmanager.profiles (name) VALUES ('bad name')", SqlState::CHECK_VIOLATION,
         "profiles.name 'bad name' is not a valid profile name"),
        ("INSERT INTO ipmanager.profiles (name, next_server) VALUES ('p', '2001:db8::5')", SqlState::CHECK_VIOLATION,
         "profiles.next_server 2001:db8::5 of profile 'p' is not an IPv4 address"),
        ("UPDATE ipmanager.hosts SET profile_id = 999 WHERE hostname = 'pc1'", SqlState::FOREIGN_KEY_VIOLATION,
         "hosts.profile_id 999 of host 'pc1' does not exist"),
        ("UPDATE ipmanager.subnets SET default_profile_id = 999 WHERE name = 'office'", SqlState::FOREIGN_KEY_VIOLATION,
         "subnets.default_profile_id 999 of subnet 'office' does not exist"),
        ("SELECT ipmanager.set_profile_option('nope', 'mtu', '1400')", SqlState::NO_DATA_FOUND,
         "profile 'nope' does not exist"),
    ] {
        let (got, message) = failure(&client, sql).await;
        assert_eq!(got, code, "{sql}: {message}");
        assert!(message.starts_with(expected), "{sql}: {message}");
    }
    ok(
        &client,
        "INSERT INTO ipmanager.profiles (name) VALUES ('lab')",
    )
    .await;
    let (code, message) = failure(
        &client,
        "INSERT INTO ipmanager.profiles (name) VALUES ('lab')",
    )
    .await;
    assert_eq!(code, SqlState::UNIQUE_VIOLATION);
    assert_eq!(
        message,
        "profiles.name 'lab' is already used: profile names are unique"
    );
    let error = client
        .query_one(
            "SELECT * FROM ipmanager.set_profile_option('lab', 'dns-server', '10.1.0.999')",
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        describe(&error).contains(
            "profile_options.value '10.1.0.999' of option dns-server (6) in profile 'lab' is not valid"
        ),
        "{}",
        describe(&error)
    );
}

#[tokio::test]
async fn aliases_collide_with_names_and_other_aliases_exactly_as_names_do() {
    let (_db, client) = with_subnets().await;
    ok(
        &client,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES \
             ('52:54:00:00:00:01', '10.1.0.10', 'printer'), \
             ('52:54:00:00:00:02', '10.1.0.11', 'nas'); \
         INSERT INTO ipmanager.host_aliases (host_id, name) \
             SELECT id, 'laser' FROM ipmanager.hosts WHERE hostname = 'printer';",
    )
    .await;
    let alias_of = |host: &str, name: &str| {
        format!(
            "INSERT INTO ipmanager.host_aliases (host_id, name) \
             SELECT id, '{name}' FROM ipmanager.hosts WHERE hostname = '{host}'"
        )
    };
    for (sql, expected) in [
        (alias_of("nas", "LASER"),
         "host_aliases.name 'LASER' is already used in subnet 'office' (alias of 'printer', 52:54:00:00:00:01, 10.1.0.10): host names and aliases are unique per subnet, ignoring case"),
        (alias_of("nas", "Printer"),
         "host_aliases.name 'Printer' is already used in subnet 'office' (host 'printer', 52:54:00:00:00:01, 10.1.0.10)"),
        (alias_of("nas", "nas"), "host_aliases.name 'nas' is already used in subnet 'office' (host 'nas'"),
        (alias_of("nas", "bad_name"), "host_aliases.name 'bad_name' of host 'nas' is not a valid hostname"),
        (alias_of("nas", "12h"), "host_aliases.name '12h' of host 'nas' is not usable as a hostname"),
        ("INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('52:54:00:00:00:03', '10.1.0.12', 'Laser')".to_owned(),
         "hosts.hostname 'Laser' is already used in subnet 'office' (alias of 'printer', 52:54:00:00:00:01, 10.1.0.10): host names and aliases are unique per subnet, ignoring case"),
        ("UPDATE ipmanager.hosts SET hostname = 'laser' WHERE hostname = 'nas'".to_owned(),
         "hosts.hostname 'laser' is already used in subnet 'office' (alias of 'printer'"),
        ("UPDATE ipmanager.hosts SET hostname = 'laser' WHERE hostname = 'printer'".to_owned(),
         "hosts.hostname 'laser' is already an alias of this host"),
    ] {
        let (code, message) = failure(&client, &sql).await;
        assert!(
            code == SqlState::UNIQUE_VIOLATION || code == SqlState::CHECK_VIOLATION,
            "{sql}: {message}"
        );
        assert!(message.starts_with(expected), "{sql}: {message}");
    }
    // In another subnet the same name is free, as for host names.
    ok(
        &client,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lab', '10.2.0.0/24'); \
         INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('52:54:00:00:00:09', '10.2.0.9', 'laser');",
    )
    .await;
    // An alias follows its host into another subnet, where it must be free too.
    let (_, message) = failure(
        &client,
        "UPDATE ipmanager.hosts SET ip = '10.2.0.10', subnet_id = NULL WHERE hostname = 'printer'",
    )
    .await;
    assert!(
        message.contains("host_aliases.name 'laser' is already used in subnet 'lab'"),
        "{message}"
    );
    ok(
        &client,
        "UPDATE ipmanager.hosts SET hostname = 'laser2' WHERE ip = '10.2.0.9'; \
         UPDATE ipmanager.hosts SET ip = '10.2.0.10', subnet_id = NULL WHERE hostname = 'printer';",
    )
    .await;
    assert_eq!(
        scalar::<String>(
            &client,
            "SELECT s.name FROM ipmanager.host_aliases a JOIN ipmanager.subnets s ON s.id = a.subnet_id"
        )
        .await,
        "lab"
    );
    // At most 8 aliases per host.
    for i in 1..=7 {
        ok(&client, &alias_of("nas", &format!("n{i}"))).await;
    }
    ok(&client, &alias_of("nas", "n8")).await;
    let (_, message) = failure(&client, &alias_of("nas", "n9")).await;
    assert!(
        message.contains("a host has at most 8 aliases"),
        "{message}"
    );
    // Removing the host removes its aliases.
    ok(
        &client,
        "DELETE FROM ipmanager.hosts WHERE hostname = 'nas'",
    )
    .await;
    assert_eq!(
        scalar::<i64>(&client, "SELECT count(*) FROM ipmanager.host_aliases").await,
        1
    );
}

#[tokio::test]
async fn dns_only_names_reserve_their_address_outside_the_range() {
    let (_db, client) = with_subnets().await;
    ok(
        &client,
        "INSERT INTO ipmanager.hosts (ip, hostname) VALUES ('10.1.0.60', 'vip1');",
    )
    .await;
    for (sql, code, expected) in [
        ("INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('52:54:00:00:00:01', '10.1.0.60', 'pc')",
         SqlState::UNIQUE_VIOLATION,
         "hosts.ip 10.1.0.60 is already reserved (for 'vip1', DNS only): an IP address can have only one reservation"),
        ("INSERT INTO ipmanager.hosts (ip, hostname) VALUES ('10.1.0.150', 'vip2')",
         SqlState::CHECK_VIOLATION,
         "hosts.ip 10.1.0.150 of DNS-only name 'vip2' lies in the dynamic range 10.1.0.100-10.1.0.199 of subnet 'office'"),
        ("UPDATE ipmanager.subnets SET range_start = '10.1.0.50' WHERE name = 'office'",
         SqlState::CHECK_VIOLATION,
         "subnets.range_start 10.1.0.50 to range_end 10.1.0.199 of subnet 'office' would take the address 10.1.0.60 of DNS-only name 'vip1'"),
        ("INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('52:54:00:00:00:01', '10.1.0.61', 'VIP1')",
         SqlState::UNIQUE_VIOLATION,
         "hosts.hostname 'VIP1' is already used in subnet 'office' (DNS only, 10.1.0.60)"),
    ] {
        let (got, message) = failure(&client, sql).await;
        assert_eq!(got, code, "{sql}: {message}");
        assert!(message.starts_with(expected), "{sql}: {message}");
    }
    // Several names without MAC in one subnet; allocate_host makes one too.
    ok(
        &client,
        "INSERT INTO ipmanager.hosts (ip, hostname) VALUES ('10.1.0.62', 'vip3')",
    )
    .await;
    assert_eq!(
        scalar::<String>(
            &client,
            "SELECT host(ip) || ' ' || coalesce(mac::text, 'none') FROM ipmanager.allocate_host(NULL::text, 'vip4', 'office')"
        )
        .await,
        "10.1.0.2 none"
    );
    // allocate_host steps over DNS-only names like over reservations.
    ok(
        &client,
        "UPDATE ipmanager.hosts SET ip = '10.1.0.3' WHERE hostname = 'vip3'",
    )
    .await;
    assert_eq!(
        scalar::<String>(
            &client,
            "SELECT host(ip) FROM ipmanager.allocate_host('52:54:00:00:00:07', 'pc7', 'office')"
        )
        .await,
        "10.1.0.4"
    );
}

#[tokio::test]
async fn changes_are_audited_and_announced_and_profiles_concern_every_agent() {
    let (_db, client) = with_subnets().await;
    ok(
        &client,
        "INSERT INTO ipmanager.sites (name) VALUES ('berlin'); \
         UPDATE ipmanager.subnets SET site = 'berlin' WHERE name = 'office'; \
         INSERT INTO ipmanager.profiles (name) VALUES ('pxe'); \
         SELECT ipmanager.set_subnet_option('office', 'mtu', '1400'); \
         SELECT ipmanager.set_profile_option('pxe', 'mtu', '1500'); \
         INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('52:54:00:00:00:01', '10.1.0.10', 'pc'); \
         INSERT INTO ipmanager.host_aliases (host_id, name) SELECT id, 'www' FROM ipmanager.hosts;",
    )
    .await;
    let logged: Vec<String> = client
        .query(
            "SELECT table_name || ' ' || operation || ' ' || \
                    coalesce(array_to_string(ipmanager.audit_sites(table_name, old, new), ','), 'all') \
             FROM ipmanager.audit_log WHERE table_name IN \
                 ('profiles', 'subnet_options', 'profile_options', 'host_aliases') ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        logged,
        [
            "profiles INSERT all",
            "subnet_options INSERT berlin",
            "profile_options INSERT all",
            "host_aliases INSERT berlin",
        ]
    );
    // A profile change concerns an agent of another site; an option of office does not.
    for (table, sites, expected) in [
        ("profiles", "{}", true),
        ("profile_options", "{}", true),
        ("subnet_options", "{berlin}", false),
        ("host_aliases", "{berlin}", false),
    ] {
        assert_eq!(
            scalar::<bool>(
                &client,
                &format!(
                    "SELECT ipmanager.agent_concerned('{{paris}}', 'sites', '{table}', '{sites}')"
                )
            )
            .await,
            expected,
            "{table}"
        );
    }
    assert!(
        scalar::<bool>(
            &client,
            "SELECT ipmanager.agent_concerned('{paris}', 'all', 'host_aliases', '{berlin}')"
        )
        .await
    );
}

#[tokio::test]
async fn the_snapshot_reads_options_profiles_aliases_and_dns_only_names() {
    let (db, client) = with_subnets().await;
    ok(
        &client,
        "INSERT INTO ipmanager.profiles (name, boot_file, next_server) VALUES ('pxe', 'pxelinux.0', '10.1.0.5'); \
         SELECT ipmanager.set_profile_option('pxe', 'tftp-server-address', '10.1.0.5'); \
         SELECT ipmanager.set_subnet_option('office', 'dns-server', '10.1.0.53'); \
         SELECT ipmanager.set_subnet_option('office', '252', '\"http://wpad/wpad.dat\"'); \
         UPDATE ipmanager.subnets SET default_profile_id = ipmanager.profile_id('pxe') WHERE name = 'v6'; \
         INSERT INTO ipmanager.hosts (mac, ip, hostname, profile_id) VALUES \
             ('52:54:00:00:00:01', '10.1.0.10', 'printer', ipmanager.profile_id('pxe')), \
             ('52:54:00:00:00:02', '10.1.0.11', 'plain', NULL); \
         INSERT INTO ipmanager.host_aliases (host_id, name) \
             SELECT id, n FROM ipmanager.hosts, unnest(ARRAY['print-server', 'Laser']) n WHERE hostname = 'printer'; \
         INSERT INTO ipmanager.hosts (ip, hostname) VALUES ('10.1.0.60', 'vip1'); \
         INSERT INTO ipmanager.host_aliases (host_id, name) SELECT id, 'vip' FROM ipmanager.hosts WHERE hostname = 'vip1';",
    )
    .await;
    let connector = ipmanager::db::connector(&db.url, &Default::default(), "options-test").unwrap();
    let pool = ipmanager::db::pool(connector);
    let at = ipmanager::db::take_snapshot_at(&pool, 0, &Default::default())
        .await
        .unwrap();
    // The DNS-only name is no reservation.
    let hostnames: Vec<&str> = at
        .snapshot
        .hosts
        .iter()
        .map(|h| h.hostname.as_str())
        .collect();
    assert_eq!(hostnames.len(), 2, "{hostnames:?}");
    assert!(!hostnames.contains(&"vip1"));
    let extras = &at.snapshot.extras;
    assert_eq!(extras.dns_names.len(), 1);
    assert_eq!(extras.dns_names[0].hostname, "vip1");
    assert_eq!(extras.dns_names[0].aliases, ["vip"]);
    assert_eq!(extras.hosts.len(), 1);
    assert_eq!(extras.hosts[0].aliases, ["Laser", "print-server"]);
    assert!(extras.hosts[0].profile.is_some());
    assert_eq!(extras.profiles.len(), 1);
    let profile = &extras.profiles[0];
    assert_eq!(profile.boot_file.as_deref(), Some("pxelinux.0"));
    assert_eq!(profile.next_server, Some("10.1.0.5".parse().unwrap()));
    assert_eq!(profile.options.len(), 1);
    assert_eq!(
        profile.options[0].name.as_deref(),
        Some("tftp-server-address")
    );
    let office: Vec<(u16, Option<&str>, &str)> = extras
        .subnets
        .iter()
        .flat_map(|s| s.options.iter())
        .map(|o| (o.number, o.name.as_deref(), o.value.as_str()))
        .collect();
    assert_eq!(
        office,
        [
            (6, Some("dns-server"), "10.1.0.53"),
            (252, None, "http://wpad/wpad.dat")
        ]
    );
    assert_eq!(
        extras
            .subnets
            .iter()
            .filter(|s| s.default_profile == Some(profile.id))
            .count(),
        1
    );
}
