//! `sql/V2__admin.sql` against a real PostgreSQL: subnet lookup and allocation (also under
//! concurrency), usage figures, the audit log and its privileges, and the agents' sync status
//! with row level security, using real login roles.
//!
//! Run with `IPMANAGER_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres
//! cargo test --test admin_sql`. Every test makes its own database.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::sql::{backend_pid, describe, ok, scalar, wait_for_lock_wait};
use common::{LoginRoles, TestDb};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// Generous: only reached when something is broken, never waited out by a passing test.
const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

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

#[track_caller]
fn assert_denied((code, message): (SqlState, String), what: &str) {
    assert_eq!(
        code,
        SqlState::INSUFFICIENT_PRIVILEGE,
        "{what}: unexpected {message}"
    );
    assert!(message.contains("permission denied"), "{what}: {message}");
}

/// host() of the address allocate_host returns.
async fn allocate(client: &Client, mac: &str, hostname: &str, subnet: &str) -> String {
    scalar::<Option<String>>(
        client,
        &format!("SELECT host(ip) FROM ipmanager.allocate_host('{mac}', '{hostname}', '{subnet}')"),
    )
    .await
    .unwrap()
}

async fn next_free(client: &Client, subnet: &str) -> Option<String> {
    scalar::<Option<String>>(
        client,
        &format!(
            "SELECT host(ipmanager.next_free_address((ipmanager.find_subnet('{subnet}')).id))"
        ),
    )
    .await
}

fn mac(i: u32) -> String {
    format!(
        "02:00:00:{:02x}:{:02x}:{:02x}",
        i >> 16 & 0xff,
        i >> 8 & 0xff,
        i & 0xff
    )
}

// ---------------------------------------------------------------------------------------------
// find_subnet
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn find_subnet_by_name_by_cidr_and_unknown() {
    let db = TestDb::new().await;
    let c = db.client().await;
    ok(
        &c,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lan', '10.0.0.0/24'), ('v6', '2001:db8::/64')",
    )
    .await;
    assert_eq!(
        scalar::<Option<String>>(&c, "SELECT (ipmanager.find_subnet('lan')).cidr::text")
            .await
            .unwrap(),
        "10.0.0.0/24"
    );
    assert_eq!(
        scalar::<Option<String>>(&c, "SELECT name FROM ipmanager.find_subnet('10.0.0.0/24')")
            .await
            .unwrap(),
        "lan"
    );
    assert_eq!(
        scalar::<Option<String>>(
            &c,
            "SELECT name FROM ipmanager.find_subnet('2001:db8::/64')"
        )
        .await
        .unwrap(),
        "v6"
    );
    for unknown in ["nope", "10.9.0.0/24", "10.0.0.5/24", "10.0.0.0"] {
        let (code, message) =
            failure(&c, &format!("SELECT ipmanager.find_subnet('{unknown}')")).await;
        assert_eq!(code, SqlState::NO_DATA_FOUND, "{message}");
        assert_eq!(
            message,
            format!(
                "subnet '{unknown}' does not exist: give a subnet name or CIDR as listed by 'ipmanager subnet list'"
            )
        );
    }
}

// ---------------------------------------------------------------------------------------------
// next_free_address and allocate_host
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn allocation_skips_network_gateway_range_taken_and_broadcast() {
    let db = TestDb::new().await;
    let c = db.client().await;
    // 10.0.0.0/29: .0 network, .1 gateway, .2 host, .3-.4 range, .5 host of a disabled
    // overlapping subnet, .6 free, .7 broadcast.
    ok(
        &c,
        "INSERT INTO ipmanager.subnets (name, cidr, gateway, range_start, range_end)
             VALUES ('lan', '10.0.0.0/29', '10.0.0.1', '10.0.0.3', '10.0.0.4');
         INSERT INTO ipmanager.subnets (name, cidr, enabled) VALUES ('old', '10.0.0.0/28', false);
         INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:02', '10.0.0.2', 'two');
         INSERT INTO ipmanager.hosts (subnet_id, mac, ip, hostname)
             SELECT id, '02:00:00:00:00:05', '10.0.0.5', 'five' FROM ipmanager.subnets WHERE name = 'old'",
    )
    .await;
    assert_eq!(next_free(&c, "lan").await.as_deref(), Some("10.0.0.6"));
    assert_eq!(
        scalar::<Option<String>>(&c, "SELECT host(ipmanager.next_free_address(12345))").await,
        None,
        "no such subnet"
    );
    assert_eq!(
        allocate(&c, "02:00:00:00:00:06", "six", "lan").await,
        "10.0.0.6"
    );
    assert_eq!(next_free(&c, "lan").await, None);
    let (code, message) = failure(
        &c,
        "SELECT ipmanager.allocate_host('02:00:00:00:00:07', 'seven', 'lan')",
    )
    .await;
    assert_eq!(code.code(), "IM001", "{message}");
    assert_eq!(
        message,
        "subnet 'lan' (10.0.0.0/29) has no free address outside its dynamic range: 6 usable \
         addresses, 2 in the dynamic range, 1 for the gateway, 3 taken by reservations"
    );
    // The returned row is the stored one, with the defaults and the given options.
    let row = c
        .query_one(
            "SELECT subnet_id, host(ip), hostname, enabled, lease_time::text, comment
             FROM ipmanager.allocate_host('02:00:00:00:01:01', 'opt', 'old', '1 hour', 'note', false)",
            &[],
        )
        .await
        .unwrap();
    // Only hosts count as taken in an overlapping subnet, not the other subnet's gateway.
    assert_eq!(row.get::<_, String>(1), "10.0.0.1");
    assert_eq!(row.get::<_, String>(2), "opt");
    assert!(!row.get::<_, bool>(3));
    assert_eq!(row.get::<_, String>(4), "01:00:00");
    assert_eq!(row.get::<_, String>(5), "note");
    // The V1 triggers still validate what allocate_host inserts.
    let (code, message) = failure(
        &c,
        "SELECT ipmanager.allocate_host('02:00:00:00:01:02', 'bad_name', 'old')",
    )
    .await;
    assert_eq!(code, SqlState::CHECK_VIOLATION);
    assert!(message.contains("hosts.hostname 'bad_name'"), "{message}");
    let (code, _) = failure(
        &c,
        "SELECT ipmanager.allocate_host('02:00:00:00:01:02', 'x', 'missing')",
    )
    .await;
    assert_eq!(code, SqlState::NO_DATA_FOUND);
}

#[tokio::test]
async fn a_slash_30_fills_up_then_im001() {
    let db = TestDb::new().await;
    let c = db.client().await;
    ok(
        &c,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('p2p', '10.1.0.0/30')",
    )
    .await;
    assert_eq!(allocate(&c, &mac(1), "a", "p2p").await, "10.1.0.1");
    assert_eq!(allocate(&c, &mac(2), "b", "10.1.0.0/30").await, "10.1.0.2");
    let (code, message) = failure(
        &c,
        "SELECT ipmanager.allocate_host('02:00:00:00:00:03', 'c', 'p2p')",
    )
    .await;
    assert_eq!(code.code(), "IM001");
    assert_eq!(
        message,
        "subnet 'p2p' (10.1.0.0/30) has no free address outside its dynamic range: 2 usable \
         addresses, 0 in the dynamic range, 0 for the gateway, 2 taken by reservations"
    );
    // /31 and /32 use every address (RFC 3021).
    ok(
        &c,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('p31', '10.2.0.0/31'), ('p32', '10.3.0.7/32')",
    )
    .await;
    assert_eq!(allocate(&c, &mac(4), "d", "p31").await, "10.2.0.0");
    assert_eq!(allocate(&c, &mac(5), "e", "p31").await, "10.2.0.1");
    assert_eq!(allocate(&c, &mac(6), "f", "p32").await, "10.3.0.7");
    assert_eq!(next_free(&c, "p32").await, None);
    // The address space ends at 255.255.255.255 without overflowing.
    ok(
        &c,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('top', '255.255.255.254/31')",
    )
    .await;
    assert_eq!(allocate(&c, &mac(7), "g", "top").await, "255.255.255.254");
    assert_eq!(allocate(&c, &mac(8), "h", "top").await, "255.255.255.255");
    assert_eq!(next_free(&c, "top").await, None);
}

#[tokio::test]
async fn ipv6_slash_64_allocation_is_fast() {
    let db = TestDb::new().await;
    let c = db.client().await;
    ok(
        &c,
        "INSERT INTO ipmanager.subnets (name, cidr, gateway, range_start, range_end)
             VALUES ('v6', '2001:db8::/64', '2001:db8::1', '2001:db8::100', '2001:db8::1ff');
         INSERT INTO ipmanager.hosts (mac, ip, hostname)
             VALUES ('02:00:00:00:00:02', '2001:db8::2', 'two'), ('02:00:00:00:00:03', '2001:db8::3', 'three')",
    )
    .await;
    let started = Instant::now();
    assert_eq!(allocate(&c, &mac(4), "four", "v6").await, "2001:db8::4");
    eprintln!("IPv6 /64 allocation took {:?}", started.elapsed());
    // Everything below the range taken: the next address is right after the range.
    ok(
        &c,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname)
         SELECT ('02:00:01:00:00:' || lpad(to_hex(i), 2, '0'))::macaddr, '2001:db8::'::inet + i, 'h' || i
         FROM generate_series(5, 255) AS i",
    )
    .await;
    assert_eq!(allocate(&c, &mac(5), "five", "v6").await, "2001:db8::200");
    // A range over nearly the whole /64 (more than 2^63 addresses): the last address is found.
    ok(
        &c,
        "INSERT INTO ipmanager.subnets (name, cidr, range_start, range_end)
             VALUES ('wide', '2001:db8:1::/64', '2001:db8:1::1', '2001:db8:1::ffff:ffff:ffff:fffe')",
    )
    .await;
    let started = Instant::now();
    assert_eq!(
        allocate(&c, &mac(6), "six", "wide").await,
        "2001:db8:1:0:ffff:ffff:ffff:ffff"
    );
    eprintln!(
        "IPv6 /64 allocation after a 2^64-2 range took {:?}",
        started.elapsed()
    );
    assert_eq!(next_free(&c, "wide").await, None);
}

#[tokio::test]
async fn allocation_in_a_slash_16_with_60000_hosts() {
    let db = TestDb::new().await;
    let c = db.client().await;
    // .0.1 gateway, 10.20.0.2 .. 10.20.234.97 taken (60,000 hosts), then a hole at
    // 10.20.100.0/24 punched back in: the lowest free address is 10.20.100.0.
    ok(
        &c,
        "INSERT INTO ipmanager.subnets (name, cidr, gateway, range_start, range_end)
             VALUES ('big', '10.20.0.0/16', '10.20.0.1', '10.20.250.0', '10.20.250.255');
         INSERT INTO ipmanager.hosts (mac, ip, hostname)
         SELECT ('02:00:00:' || lpad(to_hex(i >> 16), 2, '0') || ':' || lpad(to_hex(i >> 8 & 255), 2, '0')
                 || ':' || lpad(to_hex(i & 255), 2, '0'))::macaddr,
                '10.20.0.1'::inet + i, 'h' || i
         FROM generate_series(1, 60000) AS i",
    )
    .await;
    let started = Instant::now();
    assert_eq!(
        allocate(&c, "02:00:01:00:00:01", "new", "big").await,
        "10.20.234.98"
    );
    eprintln!(
        "allocation in a /16 with 60,000 hosts took {:?}",
        started.elapsed()
    );
    ok(
        &c,
        "DELETE FROM ipmanager.hosts WHERE ip <<= '10.20.100.0/24'",
    )
    .await;
    let started = Instant::now();
    assert_eq!(
        allocate(&c, "02:00:01:00:00:02", "hole", "big").await,
        "10.20.100.0"
    );
    eprintln!(
        "allocation into a hole of a /16 with 59,745 hosts took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_allocations_get_distinct_consecutive_addresses() {
    const N: usize = 16;
    let db = TestDb::new().await;
    ok(
        &db.client().await,
        "INSERT INTO ipmanager.subnets (name, cidr, gateway) VALUES ('lan', '10.0.0.0/24', '10.0.0.1')",
    )
    .await;
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let client = db.client().await;
        let barrier = barrier.clone();
        tasks.spawn(async move {
            client.batch_execute("BEGIN").await.unwrap();
            barrier.wait().await;
            let ip: String = client
                .query_one(
                    "SELECT host(ip) FROM ipmanager.allocate_host($1::text::macaddr, $2, 'lan')",
                    &[&mac(i as u32 + 1), &format!("host{i}")],
                )
                .await
                .unwrap_or_else(|e| panic!("allocation {i}: {}", describe(&e)))
                .get(0);
            // Hold the lock a moment so that the others really queue behind it.
            client.batch_execute("SELECT pg_sleep(0.05)").await.unwrap();
            client.batch_execute("COMMIT").await.unwrap();
            ip
        });
    }
    let mut last_octets = Vec::new();
    while let Some(ip) = tasks.join_next().await {
        let ip: std::net::Ipv4Addr = ip.expect("allocation task").parse().unwrap();
        last_octets.push(ip.octets()[3]);
    }
    last_octets.sort();
    let expected: Vec<u8> = (2..2 + N as u8).collect();
    assert_eq!(
        last_octets, expected,
        "addresses must be distinct and consecutive"
    );
}

#[tokio::test]
async fn repeatable_read_allocators_get_a_serialization_failure_not_a_duplicate() {
    let db = TestDb::new().await;
    let observer = db.client().await;
    ok(
        &observer,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lan', '10.0.0.0/24')",
    )
    .await;
    let first = db.client().await;
    let second = Arc::new(db.client().await);
    ok(&first, "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1").await;
    ok(&second, "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1").await;
    assert_eq!(allocate(&first, &mac(1), "a", "lan").await, "10.0.0.1");
    let pid = backend_pid(&second).await;
    let waiting = {
        let second = second.clone();
        tokio::spawn(async move {
            second
                .batch_execute("SELECT ipmanager.allocate_host('02:00:00:00:00:02', 'b', 'lan')")
                .await
        })
    };
    wait_for_lock_wait(&observer, pid).await;
    ok(&first, "COMMIT").await;
    let error = waiting
        .await
        .unwrap()
        .expect_err("the second REPEATABLE READ allocation must fail");
    let db_error = error.as_db_error().unwrap();
    assert_eq!(
        db_error.code(),
        &SqlState::T_R_SERIALIZATION_FAILURE,
        "{}",
        db_error.message()
    );
    assert_eq!(
        db_error.message(),
        "allocate_host: address 10.0.0.1 in subnet 'lan' (10.0.0.0/24) was taken by a concurrent \
         transaction: retry the transaction"
    );
    ok(&second, "ROLLBACK").await;
    // A retry succeeds with the next address.
    ok(&second, "BEGIN ISOLATION LEVEL REPEATABLE READ").await;
    assert_eq!(allocate(&second, &mac(2), "b", "lan").await, "10.0.0.2");
    ok(&second, "COMMIT").await;
    assert_eq!(
        scalar::<i64>(&observer, "SELECT count(DISTINCT ip) FROM ipmanager.hosts").await,
        2
    );
}

#[tokio::test]
async fn plain_inserts_are_not_blocked_by_an_allocation_in_progress() {
    let db = TestDb::new().await;
    let c = db.client().await;
    ok(
        &c,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lan', '10.0.0.0/24')",
    )
    .await;
    let allocator = db.client().await;
    ok(&allocator, "BEGIN").await;
    assert_eq!(allocate(&allocator, &mac(1), "a", "lan").await, "10.0.0.1");
    // The subnet row is locked FOR NO KEY UPDATE; the foreign key check's FOR KEY SHARE is not.
    ok(&c, "SET statement_timeout = '5s'").await;
    ok(
        &c,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:09', '10.0.0.9', 'plain')",
    )
    .await;
    ok(&allocator, "COMMIT").await;
    assert_eq!(allocate(&c, &mac(2), "b", "lan").await, "10.0.0.2");
}

// ---------------------------------------------------------------------------------------------
// Subnet edits and host writers
// ---------------------------------------------------------------------------------------------

/// Subnets `a` (10.1.0.0/24) and `b` (10.2.0.0/24).
async fn two_subnets(c: &Client) {
    ok(
        c,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('a', '10.1.0.0/24'), ('b', '10.2.0.0/24')",
    )
    .await;
}

fn comment(text: &str) -> ipmanager::admin::subnets::SubnetFields {
    ipmanager::admin::subnets::SubnetFields {
        comment: Some(Some(text.to_owned())),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_subnet_comment_does_not_wait_for_an_open_host_insert() {
    let db = TestDb::new().await;
    let writer = db.client().await;
    two_subnets(&writer).await;
    ok(&writer, "BEGIN").await;
    ok(
        &writer,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:01', '10.1.0.5', 'open')",
    )
    .await;

    // A wait shows up as a lock timeout instead of a hang: the edit must not wait at all.
    let editor = db.client().await;
    ok(&editor, "SET lock_timeout = '3s'").await;
    ipmanager::admin::subnets::set(&editor, "a", &comment("x"))
        .await
        .expect("subnet set a --comment while a host insert in a is open");

    // The real CLI, in its own session, too.
    let out = common::binary::command(
        &["subnet", "set", "a", "--comment", "y"],
        &[
            ("IPMANAGER_DATABASE_URL", &db.url),
            ("PGOPTIONS", "-c lock_timeout=3s"),
        ],
    )
    .output()
    .unwrap();
    common::binary::assert_exit(&out, 0, "ipmanager subnet set a --comment y");
    ok(&writer, "COMMIT").await;
    assert_eq!(
        scalar::<String>(
            &writer,
            "SELECT comment FROM ipmanager.subnets WHERE name = 'a'"
        )
        .await,
        "y"
    );
}

/// The order that deadlocked: a host writer has a row in `a`, the edit of `b` starts, the host
/// writer goes on to `b`. Neither may wait for the other.
#[tokio::test]
async fn a_subnet_comment_and_a_host_writer_spanning_subnets_do_not_deadlock() {
    let db = TestDb::new().await;
    let writer = db.client().await;
    two_subnets(&writer).await;
    ok(&writer, "SET lock_timeout = '3s'; BEGIN").await;
    ok(
        &writer,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:01', '10.1.0.5', 'in-a')",
    )
    .await;
    let mut editor = db.client().await;
    ok(&editor, "SET lock_timeout = '3s'").await;
    let edit = editor.transaction().await.unwrap();
    ipmanager::admin::subnets::set(&edit, "b", &comment("x"))
        .await
        .expect("subnet set b while a host writer has a row in a");
    ok(
        &writer,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:02', '10.2.0.5', 'in-b')",
    )
    .await;
    edit.commit().await.unwrap();
    ok(&writer, "COMMIT").await;
}

/// A renumbering still waits for open host writers (so no host slips outside the new CIDR), but
/// holds only a FOR NO KEY UPDATE row lock while it waits: a writer with a host in another subnet
/// can go on adding hosts to the renumbered one instead of deadlocking with it.
#[tokio::test]
async fn a_renumbering_waits_for_a_host_writer_without_deadlocking_it() {
    let db = TestDb::new().await;
    let writer = db.client().await;
    two_subnets(&writer).await;
    ok(&writer, "SET lock_timeout = '3s'; BEGIN").await;
    ok(
        &writer,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:01', '10.2.0.5', 'in-b')",
    )
    .await;
    let mut editor = db.client().await;
    let editor_pid = backend_pid(&editor).await;
    let renumber = tokio::spawn(async move {
        let edit = editor.transaction().await.unwrap();
        let fields = ipmanager::admin::subnets::SubnetFields {
            cidr: Some("10.1.0.0/23".parse().unwrap()),
            ..Default::default()
        };
        let result = ipmanager::admin::subnets::set(&edit, "a", &fields).await;
        edit.commit().await.unwrap();
        result.map(|_| ())
    });
    let observer = db.client().await;
    wait_for_lock_wait(&observer, editor_pid).await;
    ok(
        &writer,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:02', '10.1.0.6', 'two')",
    )
    .await;
    ok(&writer, "COMMIT").await;
    renumber
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("renumbering: {e}"));
    assert_eq!(
        scalar::<String>(
            &observer,
            "SELECT cidr::text FROM ipmanager.subnets WHERE name = 'a'"
        )
        .await,
        "10.1.0.0/23"
    );
}

/// Real imports spanning both subnets against `subnet set b --comment` in a loop: every round
/// both succeed (a deadlock would abort one of them with 40P01).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_and_subnet_comments_run_concurrently_without_deadlock() {
    let db = TestDb::new().await;
    let c = db.client().await;
    two_subnets(&c).await;
    let dir = tempfile::tempdir().unwrap();
    let editor = db.client().await;
    for round in 0..8u32 {
        let file = dir.path().join(format!("round{round}.conf"));
        let lines: String = (1..=40u32)
            .map(|i| {
                let net = if i <= 20 { 1 } else { 2 };
                format!(
                    "dhcp-host={},10.{net}.0.{},r{round}h{i}\n",
                    mac(round * 100 + i),
                    round * 20 + (i - 1) % 20 + 1
                )
            })
            .collect();
        std::fs::write(&file, lines).unwrap();
        let url = db.url.clone();
        let import = tokio::task::spawn_blocking(move || {
            common::binary::command(
                &["import", file.to_str().unwrap(), "--format", "dnsmasq"],
                &[("IPMANAGER_DATABASE_URL", &url)],
            )
            .output()
            .unwrap()
        });
        for edit in 0..5 {
            ipmanager::admin::subnets::set(&editor, "b", &comment(&format!("{round}.{edit}")))
                .await
                .unwrap_or_else(|e| panic!("round {round}: subnet set b: {e}"));
        }
        let out = import.await.unwrap();
        common::binary::assert_exit(&out, 0, &format!("round {round}: import"));
    }
    assert_eq!(
        scalar::<i64>(&c, "SELECT count(*) FROM ipmanager.hosts").await,
        8 * 40
    );
}

// ---------------------------------------------------------------------------------------------
// Duplicates: the same words in psql and the CLI
// ---------------------------------------------------------------------------------------------

/// What the CLI says (its `ipmanager: error:` line) when `args` make a mistake.
fn cli_error(db: &TestDb, args: &[&str]) -> String {
    let out = common::binary::command(args, &[("IPMANAGER_DATABASE_URL", &db.url)])
        .output()
        .unwrap();
    common::binary::assert_exit(&out, 65, &format!("ipmanager {}", args.join(" ")));
    common::binary::error_text(&out)
}

#[tokio::test]
async fn duplicates_read_the_same_in_psql_and_in_the_cli() {
    let db = TestDb::new().await;
    let c = db.client().await;
    ok(
        &c,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lan', '10.0.0.0/24'); \
         INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:01', '10.0.0.5', 'printer')",
    )
    .await;
    let cases: [(&str, &[&str]); 5] = [
        (
            "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:02', '10.0.0.5', 'other')",
            &["host", "add", "--mac", "02:00:00:00:00:02", "--ip", "10.0.0.5", "--hostname", "other"],
        ),
        (
            "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:01', '10.0.0.6', 'other')",
            &["host", "add", "--mac", "02:00:00:00:00:01", "--ip", "10.0.0.6", "--hostname", "other"],
        ),
        (
            "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:02', '10.0.0.6', 'Printer')",
            &["host", "add", "--mac", "02:00:00:00:00:02", "--subnet", "lan", "--hostname", "Printer"],
        ),
        (
            "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lan', '10.9.0.0/24')",
            &["subnet", "add", "10.9.0.0/24", "--name", "lan"],
        ),
        (
            "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lan2', '10.0.0.0/24')",
            &["subnet", "add", "10.0.0.0/24", "--name", "lan2"],
        ),
    ];
    for (sql, args) in cases {
        let (code, psql) = failure(&c, sql).await;
        assert_eq!(code, SqlState::UNIQUE_VIOLATION, "{sql}: {psql}");
        assert!(!psql.contains("duplicate key"), "{sql}: {psql}");
        assert_eq!(cli_error(&db, args), psql, "ipmanager {}", args.join(" "));
    }
    // allocate_host, the SQL function, says it in the same words.
    let (_, allocated) = failure(
        &c,
        "SELECT ipmanager.allocate_host('02:00:00:00:00:03', 'PRINTER', 'lan')",
    )
    .await;
    assert_eq!(
        allocated,
        cli_error(
            &db,
            &[
                "host",
                "add",
                "--mac",
                "02:00:00:00:00:03",
                "--subnet",
                "lan",
                "--hostname",
                "PRINTER"
            ]
        )
    );
}

/// Hints speak of the CLI's options too, or of neither, never only of `subnet_id`: checked on
/// the source of every function in the schema as migrated.
#[tokio::test]
async fn no_hint_speaks_only_of_subnet_id() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let rows = c
        .query(
            r"SELECT p.proname::text, h[1]
              FROM pg_proc p, regexp_matches(p.prosrc, 'HINT = ''((?:[^'']|'''')*)''', 'g') h
              WHERE p.pronamespace = 'ipmanager'::regnamespace",
            &[],
        )
        .await
        .unwrap();
    assert!(rows.len() >= 5, "hints found: {}", rows.len());
    for row in rows {
        let (function, hint): (String, String) = (row.get(0), row.get(1));
        assert!(
            !hint.contains("subnet_id") || hint.contains("--subnet"),
            "{function}: {hint}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// One MAC grammar
// ---------------------------------------------------------------------------------------------

/// Every notation of the grammar, each for 52:54:00:0a:0b:0c.
const MAC_NOTATIONS: [&str; 7] = [
    "52:54:00:0a:0b:0c",
    "52:54:00:0A:0B:0C",
    "52:54:0:a:b:c",
    "52-54-00-0a-0b-0c",
    "5254.000a.0b0c",
    "5254.000A.0B0C",
    "5254000a0b0c",
];

/// Refused by every entry point: wrong counts, mixed separators, PostgreSQL's extra macaddr
/// forms, one-digit groups with hyphens, a trailing space, non-hex.
const NOT_MACS: [&str; 9] = [
    "52:54:00:0a:0b",
    "52:54:00:0a:0b:0c:0d",
    "52-54-00:0a:0b:0c",
    "525400:0a0b0c",
    "5254-000a-0b0c",
    "52-54-0-a-b-c",
    "52:54:00:0a:0b:0c ",
    "52:54:00:0a:0b:0g",
    "5254.000a.0b0",
];

const CANONICAL: [u8; 6] = [0x52, 0x54, 0x00, 0x0a, 0x0b, 0x0c];

/// The import formats that can hold `mac`, each as a file with one reservation.
fn import_files(mac: &str) -> Vec<(ipmanager::exchange::Format, String)> {
    use ipmanager::exchange::Format;
    let kea = format!(
        r#"{{"Dhcp4": {{"subnet4": [{{"id": 1, "subnet": "10.0.0.0/24",
            "reservations": [{{"hw-address": "{mac}", "ip-address": "10.0.0.5"}}]}}]}}}}"#
    );
    let mut files = vec![
        (Format::Ethers, format!("{mac} 10.0.0.5\n")),
        (Format::Kea, kea),
    ];
    // dnsmasq decides by its own rule which field is the hardware address: one with ':' or six
    // hyphen-separated pairs. Cisco dots and bare digits are names or lease times to dnsmasq.
    if mac.contains(':') || mac.contains('-') {
        files.push((Format::Dnsmasq, format!("dhcp-host={mac},10.0.0.5\n")));
        files.push((Format::Hostsfile, format!("{mac},10.0.0.5\n")));
    }
    files
}

#[tokio::test]
async fn every_entry_point_accepts_the_same_mac_notations() {
    let db = TestDb::new().await;
    let c = db.client().await;
    ok(
        &c,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lan', '10.0.0.0/24')",
    )
    .await;
    for (i, text) in MAC_NOTATIONS.into_iter().enumerate() {
        assert_eq!(
            ipmanager::mac::parse(text),
            Ok(CANONICAL),
            "library: {text}"
        );
        assert_eq!(
            ipmanager::admin::validate::mac(text),
            Ok(CANONICAL),
            "CLI: {text}"
        );
        for (format, file) in import_files(text) {
            let parsed = ipmanager::exchange::parse(format, &file).unwrap();
            assert_eq!(parsed.rejected, [], "{format}: {text}");
            assert_eq!(parsed.reservations[0].mac, CANONICAL, "{format}: {text}");
        }
        let allocated: String = scalar(
            &c,
            &format!("SELECT mac::text FROM ipmanager.allocate_host('{text}', 'h{i}', 'lan')"),
        )
        .await;
        assert_eq!(allocated, "52:54:00:0a:0b:0c", "allocate_host: {text}");
        ok(&c, "DELETE FROM ipmanager.hosts").await;
        let parsed: String =
            scalar(&c, &format!("SELECT ipmanager.parse_mac('{text}')::text")).await;
        assert_eq!(parsed, "52:54:00:0a:0b:0c", "parse_mac: {text}");
    }
    // The /etc/ethers short form with one-digit octets.
    assert_eq!(
        scalar::<String>(&c, "SELECT ipmanager.parse_mac('8:0:20:1:2:3')::text").await,
        "08:00:20:01:02:03"
    );
}

#[tokio::test]
async fn every_entry_point_refuses_the_same_non_macs_in_the_same_words() {
    let db = TestDb::new().await;
    let c = db.client().await;
    ok(
        &c,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lan', '10.0.0.0/24')",
    )
    .await;
    for text in NOT_MACS {
        let library = ipmanager::mac::parse(text).unwrap_err().to_string();
        assert_eq!(
            ipmanager::admin::validate::mac(text),
            Err(library.clone()),
            "CLI: {text}"
        );
        // In a file, spaces separate fields rather than belong to one.
        let files = if text.trim() == text {
            import_files(text)
        } else {
            Vec::new()
        };
        for (format, file) in files {
            let parsed = ipmanager::exchange::parse(format, &file).unwrap();
            assert_eq!(parsed.reservations, [], "{format}: {text}");
        }
        let (code, message) = failure(
            &c,
            &format!("SELECT ipmanager.allocate_host('{text}', 'h', 'lan')"),
        )
        .await;
        assert_eq!(code, SqlState::INVALID_TEXT_REPRESENTATION, "{text}");
        assert_eq!(message, library, "allocate_host: {text}");
    }
    // The unicast rule is the trigger's, word for word.
    let (_, message) = failure(
        &c,
        "SELECT ipmanager.allocate_host('0100.5e00.0001', 'h', 'lan')",
    )
    .await;
    assert_eq!(
        message,
        ipmanager::admin::validate::mac("0100.5e00.0001").unwrap_err()
    );
}

// ---------------------------------------------------------------------------------------------
// Infinite leases
// ---------------------------------------------------------------------------------------------

/// The binary against `db`, which must succeed; its stdout.
fn cli_ok(db: &TestDb, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut command = common::binary::command(args, &[("IPMANAGER_DATABASE_URL", &db.url)]);
    command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    common::binary::assert_exit(&out, 0, &format!("ipmanager {}", args.join(" ")));
    common::binary::stdout(&out)
}

const IS_INFINITE: &str = "SELECT bool_and(lease_time = ipmanager.infinite_lease()) \
     FROM (SELECT lease_time FROM ipmanager.hosts UNION ALL SELECT lease_time FROM ipmanager.subnets) l";

#[tokio::test]
async fn infinite_leases_are_stored_shown_rendered_and_round_trip() {
    let db = TestDb::new().await;
    let c = db.client().await;
    cli_ok(
        &db,
        &[
            "subnet",
            "add",
            "10.0.0.0/24",
            "--name",
            "lan",
            "--lease-time",
            "infinite",
        ],
        None,
    );
    cli_ok(
        &db,
        &[
            "host",
            "add",
            "--mac",
            "52:54:00:00:00:01",
            "--ip",
            "10.0.0.5",
            "--hostname",
            "pc",
            "--lease-time",
            "infinite",
        ],
        None,
    );
    assert!(scalar::<bool>(&c, IS_INFINITE).await);

    // Shown as infinite in tables and JSON.
    let json: serde_json::Value =
        serde_json::from_str(&cli_ok(&db, &["host", "show", "pc", "-o", "json"], None)).unwrap();
    assert_eq!(json[0]["lease_seconds"], "infinite", "{json}");
    assert!(cli_ok(&db, &["host", "show", "pc"], None).contains("infinite"));
    assert!(cli_ok(&db, &["subnet", "show", "lan"], None).contains("infinite"));

    // Rendered as dnsmasq's word, for the subnet's range line and the host alike.
    let rendered = cli_ok(&db, &["render"], None);
    assert!(
        rendered.contains("52:54:00:00:00:01,10.0.0.5,pc,infinite\n"),
        "{rendered}"
    );
    assert!(rendered.contains(",infinite\n"), "{rendered}");
    assert!(!rendered.contains("4294967295"), "{rendered}");

    // Every format that can carry a lease takes it back out and in again.
    for format in ["dnsmasq", "hostsfile", "kea"] {
        let exported = cli_ok(&db, &["export", "--format", format], None);
        let copy = TestDb::new().await;
        let copy_client = copy.client().await;
        if format != "kea" {
            cli_ok(
                &copy,
                &[
                    "subnet",
                    "add",
                    "10.0.0.0/24",
                    "--name",
                    "lan",
                    "--lease-time",
                    "infinite",
                ],
                None,
            );
        }
        cli_ok(&copy, &["import", "-", "--format", format], Some(&exported));
        assert_eq!(
            scalar::<i64>(&copy_client, "SELECT count(*) FROM ipmanager.hosts").await,
            1,
            "{format}: {exported}"
        );
        assert!(
            scalar::<bool>(&copy_client, IS_INFINITE).await,
            "{format}: {exported}"
        );
    }
}

#[tokio::test]
async fn every_spelling_of_an_infinite_lease_is_stored_as_one() {
    let db = TestDb::new().await;
    let c = db.client().await;
    ok(
        &c,
        "INSERT INTO ipmanager.subnets (name, cidr, lease_time) \
         VALUES ('lan', '10.0.0.0/24', '1193046:28:15')",
    )
    .await;
    for (i, lease) in [
        "ipmanager.infinite_lease()",
        "'4294967295 seconds'",
        "'49710 days 6:28:15'",
    ]
    .into_iter()
    .enumerate()
    {
        ok(
            &c,
            &format!(
                "INSERT INTO ipmanager.hosts (mac, ip, hostname, lease_time) \
                 VALUES ('52:54:00:00:00:0{i}', '10.0.0.{}', 'h{i}', {lease})",
                i + 5
            ),
        )
        .await;
    }
    assert!(scalar::<bool>(&c, IS_INFINITE).await);
    assert_eq!(
        scalar::<String>(&c, "SELECT DISTINCT lease_time::text FROM ipmanager.hosts").await,
        "1193046:28:15"
    );
    // Beyond ten years and not the sentinel: refused, naming infinite as the way out.
    let (code, message) = failure(
        &c,
        "UPDATE ipmanager.hosts SET lease_time = '4294967294 seconds'",
    )
    .await;
    assert_eq!(code, SqlState::CHECK_VIOLATION);
    assert!(
        message.ends_with("between 2 minutes and 10 years, or infinite"),
        "{message}"
    );
    assert_eq!(
        message,
        ipmanager::lease::parse("hosts.lease_time", "4294967294")
            .unwrap_err()
            .replace("'4294967294'", "'1193046:28:14'")
    );
}

// ---------------------------------------------------------------------------------------------
// subnet_usage
// ---------------------------------------------------------------------------------------------

/// (addresses, range_size, static_pool, reservations, free, used_percent) as text.
async fn usage(c: &Client, subnet: &str) -> [Option<String>; 6] {
    let row = c
        .query_one(
            "SELECT addresses::text, range_size::text, static_pool::text, reservations::text,
                    free::text, used_percent::text
             FROM ipmanager.subnet_utilisation($1)",
            &[&subnet],
        )
        .await
        .unwrap_or_else(|e| panic!("usage of {subnet}: {}", describe(&e)));
    std::array::from_fn(|i| row.get(i))
}

fn some(values: [&str; 6]) -> [Option<String>; 6] {
    values.map(|v| {
        if v == "NULL" {
            None
        } else {
            Some(v.to_owned())
        }
    })
}

#[tokio::test]
async fn subnet_usage_figures() {
    let db = TestDb::new().await;
    let c = db.client().await;
    ok(
        &c,
        "INSERT INTO ipmanager.subnets (name, cidr, gateway, range_start, range_end) VALUES
             ('lan', '10.0.0.0/24', '10.0.0.1', '10.0.0.100', '10.0.0.199'),
             ('inrange', '10.5.0.0/24', '10.5.0.150', '10.5.0.100', '10.5.0.199'),
             ('v6', '2001:db8::/64', NULL, '2001:db8::100', '2001:db8::1ff'),
             ('allrange', '10.4.0.0/30', NULL, '10.4.0.1', '10.4.0.2');
         INSERT INTO ipmanager.subnets (name, cidr, gateway) VALUES
             ('p31', '10.1.0.0/31', NULL), ('p32', '10.2.0.5/32', NULL), ('gw32', '10.3.0.5/32', '10.3.0.5');
         INSERT INTO ipmanager.subnets (name, cidr, enabled) VALUES ('old', '10.0.0.0/16', false);
         INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES
             ('02:00:00:00:00:10', '10.0.0.10', 'ten'),
             ('02:00:00:00:01:50', '10.0.0.150', 'inrange'),
             ('02:00:00:00:01:00', '10.1.0.0', 'p31'),
             ('02:00:00:00:06:00', '2001:db8::6', 'six');
         INSERT INTO ipmanager.hosts (subnet_id, mac, ip, hostname)
             SELECT id, '02:00:00:00:00:20', '10.0.0.20', 'twenty' FROM ipmanager.subnets WHERE name = 'old'",
    )
    .await;
    // 254 usable, 100 in the range, gateway outside it: 153; .10 and .20 (a host of the
    // disabled overlapping subnet) are taken, .150 lies in the range.
    assert_eq!(
        usage(&c, "lan").await,
        some(["254", "100", "153", "2", "151", "1.3"])
    );
    // Gateway inside the range is not subtracted twice.
    assert_eq!(
        usage(&c, "inrange").await,
        some(["254", "100", "154", "0", "154", "0.0"])
    );
    assert_eq!(
        usage(&c, "p31").await,
        some(["2", "0", "2", "1", "1", "50.0"])
    );
    assert_eq!(
        usage(&c, "p32").await,
        some(["1", "0", "1", "0", "1", "0.0"])
    );
    assert_eq!(
        usage(&c, "gw32").await,
        some(["1", "0", "0", "0", "0", "NULL"])
    );
    assert_eq!(
        usage(&c, "allrange").await,
        some(["2", "2", "0", "0", "0", "NULL"])
    );
    assert_eq!(
        usage(&c, "v6").await,
        some([
            "18446744073709551615",
            "256",
            "18446744073709551359",
            "1",
            "18446744073709551358",
            "0.0"
        ])
    );
    // The disabled /16 counts every host inside it, whatever their subnet.
    assert_eq!(
        usage(&c, "10.0.0.0/16").await,
        some(["65534", "0", "65534", "1", "65531", "0.0"])
    );
    assert_eq!(
        scalar::<i64>(&c, "SELECT count(*) FROM ipmanager.subnet_usage").await,
        8
    );
    let (code, _) = failure(&c, "SELECT * FROM ipmanager.subnet_utilisation('nope')").await;
    assert_eq!(code, SqlState::NO_DATA_FOUND);
    // free is exactly what allocate_host can still hand out.
    ok(&c, "INSERT INTO ipmanager.subnets (name, cidr, gateway) VALUES ('small', '10.6.0.0/29', '10.6.0.1')").await;
    for i in 0..5 {
        let free = usage(&c, "small").await[4].clone().unwrap();
        assert_eq!(free, (5 - i).to_string());
        allocate(&c, &mac(100 + i), &format!("s{i}"), "small").await;
    }
    assert_eq!(
        usage(&c, "small").await,
        some(["6", "0", "5", "5", "0", "100.0"])
    );
}

// ---------------------------------------------------------------------------------------------
// Audit log
// ---------------------------------------------------------------------------------------------

/// (operation, row_id, old IS NOT NULL, new IS NOT NULL, db_user, application_name) in log order.
async fn audit_rows(
    c: &Client,
    table: &str,
) -> Vec<(String, i64, bool, bool, String, Option<String>)> {
    c.query(
        "SELECT operation, row_id, old IS NOT NULL, new IS NOT NULL, db_user, application_name
         FROM ipmanager.audit_log WHERE table_name = $1 ORDER BY id",
        &[&table],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
    .collect()
}

#[tokio::test]
async fn audit_log_records_every_change_with_its_login() {
    let db = TestDb::new().await;
    let logins = LoginRoles::create(&db, &[("admin", "ipmanager_admin")]).await;
    let admin_login = logins.names[0].clone();
    let admin = common::connect(&format!(
        "{}?application_name=audit-test",
        logins.url(&db, &admin_login)
    ))
    .await;
    ok(
        &admin,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lan', '10.0.0.0/24');
         INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES
             ('02:00:00:00:00:01', '10.0.0.1', 'one'), ('02:00:00:00:00:02', '10.0.0.2', 'two');
         UPDATE ipmanager.hosts SET hostname = 'uno' WHERE hostname = 'one';
         UPDATE ipmanager.hosts SET hostname = hostname;
         UPDATE ipmanager.subnets SET comment = NULL;
         DELETE FROM ipmanager.hosts WHERE hostname = 'two';",
    )
    .await;
    // allocate_host works with an admin login's rights (it locks the subnet row, which needs
    // UPDATE on subnets) and is logged like any INSERT.
    assert_eq!(
        allocate(&admin, "02:00:00:00:00:03", "three", "lan").await,
        "10.0.0.2"
    );
    ok(
        &admin,
        "DELETE FROM ipmanager.hosts WHERE hostname = 'three'",
    )
    .await;
    let me = || (admin_login.clone(), Some("audit-test".to_owned()));
    let row = |op: &str, id: i64, old: bool, new: bool| {
        let (user, app) = me();
        (op.to_owned(), id, old, new, user, app)
    };
    assert_eq!(
        audit_rows(&admin, "subnets").await,
        vec![row("INSERT", 1, false, true)]
    );
    assert_eq!(
        audit_rows(&admin, "hosts").await,
        vec![
            row("INSERT", 1, false, true),
            row("INSERT", 2, false, true),
            row("UPDATE", 1, true, true),
            row("DELETE", 2, true, false),
            row("INSERT", 3, false, true),
            row("DELETE", 3, true, false),
        ],
        "no rows for the UPDATEs that changed nothing but updated_at"
    );
    // old and new hold the whole rows.
    let (old, new): (serde_json::Value, serde_json::Value) = {
        let r = admin
            .query_one(
                "SELECT old::text, new::text FROM ipmanager.audit_log WHERE operation = 'UPDATE'",
                &[],
            )
            .await
            .unwrap();
        (
            serde_json::from_str(r.get(0)).unwrap(),
            serde_json::from_str(r.get(1)).unwrap(),
        )
    };
    assert_eq!(old["hostname"], "one");
    assert_eq!(new["hostname"], "uno");
    assert_eq!(new["ip"], "10.0.0.1");
    assert_eq!(new["mac"], "02:00:00:00:00:01");
    assert_eq!(old["id"], 1);
    // xid is the changing transaction's (a simple-query batch runs in one transaction); the TCP
    // client address is recorded.
    assert_eq!(
        scalar::<i64>(
            &admin,
            "SELECT count(DISTINCT xid) FROM ipmanager.audit_log"
        )
        .await,
        3
    );
    ok(&admin, "UPDATE ipmanager.hosts SET enabled = false").await;
    assert_eq!(
        scalar::<i64>(
            &admin,
            "SELECT count(DISTINCT xid) FROM ipmanager.audit_log"
        )
        .await,
        4
    );

    assert_eq!(
        scalar::<Option<String>>(
            &admin,
            "SELECT DISTINCT host(client_addr) FROM ipmanager.audit_log"
        )
        .await
        .as_deref(),
        Some("127.0.0.1")
    );

    // TRUNCATE (owner only: admins have no TRUNCATE privilege) logs every row with old.
    let owner = db.client().await;
    ok(&owner, "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:03', '10.0.0.3', 'three')").await;
    // CASCADE: the BEFORE TRUNCATE trigger of hosts fires too.
    ok(&owner, "TRUNCATE ipmanager.subnets CASCADE").await;
    let truncated: Vec<(String, String, i64, bool, bool, String)> = owner
        .query(
            "SELECT table_name, operation, row_id, old IS NOT NULL, new IS NOT NULL, db_user
             FROM ipmanager.audit_log WHERE operation = 'TRUNCATE' ORDER BY table_name, row_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    let t = |table: &str, id: i64| {
        (
            table.to_owned(),
            "TRUNCATE".to_owned(),
            id,
            true,
            false,
            "postgres".to_owned(),
        )
    };
    assert_eq!(
        truncated,
        vec![t("hosts", 1), t("hosts", 4), t("subnets", 1)]
    );
    drop(admin);
}

#[tokio::test]
async fn audit_of_a_100000_row_insert_is_one_statement_and_fast() {
    let db = TestDb::new().await;
    let c = db.client().await;
    ok(
        &c,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('a', '10.12.0.0/14'), ('b', '10.16.0.0/14')",
    )
    .await;
    let insert = |net: &str, octet: u8| {
        format!(
            "INSERT INTO ipmanager.hosts (mac, ip, hostname)
             SELECT ('02:{octet:02x}:00:' || lpad(to_hex(i >> 16), 2, '0') || ':'
                     || lpad(to_hex(i >> 8 & 255), 2, '0') || ':' || lpad(to_hex(i & 255), 2, '0'))::macaddr,
                    '{net}'::inet + i, 'h' || i
             FROM generate_series(1, 100000) AS i"
        )
    };
    ok(
        &c,
        "ALTER TABLE ipmanager.hosts DISABLE TRIGGER hosts_audit_insert",
    )
    .await;
    let started = Instant::now();
    ok(&c, &insert("10.16.0.0", 2)).await;
    let without = started.elapsed();
    ok(
        &c,
        "ALTER TABLE ipmanager.hosts ENABLE TRIGGER hosts_audit_insert",
    )
    .await;
    let started = Instant::now();
    ok(&c, &insert("10.12.0.0", 1)).await;
    let with = started.elapsed();
    eprintln!(
        "100,000-row INSERT into hosts: {with:?} with the audit trigger, {without:?} without"
    );
    let row = c
        .query_one(
            "SELECT count(*), count(DISTINCT xid), count(DISTINCT row_id)
             FROM ipmanager.audit_log WHERE table_name = 'hosts' AND operation = 'INSERT'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 100_000);
    assert_eq!(row.get::<_, i64>(1), 1);
    assert_eq!(row.get::<_, i64>(2), 100_000);
    let started = Instant::now();
    ok(
        &c,
        "UPDATE ipmanager.hosts SET enabled = false WHERE ip <<= '10.12.0.0/14'",
    )
    .await;
    eprintln!(
        "100,000-row UPDATE of hosts with the audit trigger: {:?}",
        started.elapsed()
    );
    assert_eq!(
        scalar::<i64>(
            &c,
            "SELECT count(*) FROM ipmanager.audit_log WHERE operation = 'UPDATE'"
        )
        .await,
        100_000
    );
}

#[tokio::test]
async fn audit_log_is_append_only_for_admins() {
    let db = TestDb::new().await;
    let logins = LoginRoles::create(
        &db,
        &[("admin", "ipmanager_admin"), ("agent", "ipmanager_agent")],
    )
    .await;
    let admin = common::connect(&logins.url(&db, &logins.names[0])).await;
    let agent = common::connect(&logins.url(&db, &logins.names[1])).await;
    ok(
        &admin,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lan', '10.0.0.0/24')",
    )
    .await;
    assert_eq!(
        scalar::<i64>(&admin, "SELECT count(*) FROM ipmanager.audit_log").await,
        1
    );
    for statement in [
        "UPDATE ipmanager.audit_log SET db_user = 'someone else'",
        "DELETE FROM ipmanager.audit_log",
        "TRUNCATE ipmanager.audit_log",
        "INSERT INTO ipmanager.audit_log (db_user, table_name, operation, row_id) VALUES ('x', 'hosts', 'INSERT', 1)",
    ] {
        assert_denied(failure(&admin, statement).await, statement);
    }
    assert_denied(
        failure(&agent, "SELECT count(*) FROM ipmanager.audit_log").await,
        "agent reads the log",
    );
    // The owner (who runs the migrations) can still clean up.
    let owner = db.client().await;
    ok(&owner, "DELETE FROM ipmanager.audit_log").await;
    assert_eq!(
        scalar::<i64>(&admin, "SELECT count(*) FROM ipmanager.audit_log").await,
        0
    );
}

// ---------------------------------------------------------------------------------------------
// agent_status, agent_report
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn agents_write_only_their_own_status_and_admins_read_and_forget() {
    let db = TestDb::new().await;
    let logins = LoginRoles::create(
        &db,
        &[
            ("agent1", "ipmanager_agent"),
            ("agent2", "ipmanager_agent"),
            ("admin", "ipmanager_admin"),
        ],
    )
    .await;
    let (agent1_login, agent2_login) = (logins.names[0].clone(), logins.names[1].clone());
    let agent1 = common::connect(&logins.url(&db, &agent1_login)).await;
    let agent2 = common::connect(&logins.url(&db, &agent2_login)).await;
    let admin = common::connect(&logins.url(&db, &logins.names[2])).await;

    ok(
        &agent1,
        "SELECT ipmanager.agent_report('site-a', 'starting', '30 seconds', host => 'dhcp1', version => '1.2.3', started_at => '2026-01-01 00:00+00')",
    )
    .await;
    ok(
        &agent2,
        "SELECT ipmanager.agent_report('site-b', 'synced', '30 seconds')",
    )
    .await;
    ok(&agent1, "SELECT ipmanager.agent_report('site-a', 'synced', '1 minute', applied => pg_current_snapshot(), files_hash => 'abc', hosts => 3, rows_skipped => 1)").await;
    ok(
        &agent1,
        "SELECT ipmanager.agent_report('site-a', 'error', '1 minute', error => 'disk full')",
    )
    .await;
    ok(
        &agent1,
        "SELECT ipmanager.agent_report('site-a', 'synced', '1 minute')",
    )
    .await;
    let row = agent2
        .query_one(
            "SELECT db_user::text, host, version, started_at IS NOT NULL, phase, heartbeat::text,
                    applied_snapshot IS NOT NULL, applied_at IS NOT NULL, files_hash, hosts, rows_skipped,
                    last_error, last_error_at IS NOT NULL
             FROM ipmanager.agent_status WHERE name = 'site-a'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), agent1_login);
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("dhcp1"),
        "kept when not given"
    );
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("1.2.3"));
    assert!(row.get::<_, bool>(3));
    assert_eq!(row.get::<_, String>(4), "synced");
    assert_eq!(row.get::<_, String>(5), "00:01:00");
    assert!(
        row.get::<_, bool>(6) && row.get::<_, bool>(7),
        "applied snapshot kept"
    );
    assert_eq!(row.get::<_, Option<String>>(8).as_deref(), Some("abc"));
    assert_eq!(row.get::<_, Option<i32>>(9), Some(3));
    assert_eq!(row.get::<_, Option<i32>>(10), Some(1));
    assert_eq!(
        row.get::<_, Option<String>>(11).as_deref(),
        Some("disk full"),
        "error history kept"
    );
    assert!(row.get::<_, bool>(12));

    // Another login cannot take over, update or delete site-a.
    let (code, message) = failure(
        &agent2,
        "SELECT ipmanager.agent_report('site-a', 'synced', '30 seconds')",
    )
    .await;
    assert_eq!(code, SqlState::INSUFFICIENT_PRIVILEGE);
    assert_eq!(
        message,
        format!("agent name 'site-a' is already used by database user '{agent1_login}': give every agent its own agent.name")
    );
    let changed = agent2
        .execute(
            "UPDATE ipmanager.agent_status SET phase = 'forged' WHERE name = 'site-a'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        changed, 0,
        "row level security hides other agents' rows from UPDATE"
    );
    assert_denied(
        failure(&agent2, "DELETE FROM ipmanager.agent_status").await,
        "agent DELETE",
    );
    assert_denied(
        failure(
            &agent2,
            "UPDATE ipmanager.agent_status SET db_user = current_user",
        )
        .await,
        "agent changes db_user",
    );
    assert_denied(
        failure(&agent2, &format!(
            "INSERT INTO ipmanager.agent_status (name, db_user, seen_at, heartbeat, phase) VALUES ('fake', '{agent1_login}', now(), '1 minute', 'x')"
        )).await,
        "agent inserts for another user",
    );
    let (code, message) = failure(
        &agent2,
        "SELECT ipmanager.agent_report('bad name', 'x', '1 minute')",
    )
    .await;
    assert_eq!(code, SqlState::CHECK_VIOLATION);
    assert_eq!(
        message,
        "agent_status.name 'bad name' is not a valid agent name: 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit"
    );
    assert_eq!(
        scalar::<Option<String>>(
            &agent1,
            "SELECT phase FROM ipmanager.agent_status WHERE name = 'site-a'"
        )
        .await
        .as_deref(),
        Some("synced")
    );
    assert_eq!(
        scalar::<i64>(&agent1, "SELECT count(*) FROM ipmanager.agent_status").await,
        2,
        "agents see every row"
    );

    // Agents cannot change reservations or the log.
    for statement in [
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('x', '10.9.0.0/24')",
        "UPDATE ipmanager.hosts SET hostname = 'x'",
        "DELETE FROM ipmanager.subnets",
        "INSERT INTO ipmanager.audit_log (db_user, table_name, operation, row_id) VALUES ('x', 'hosts', 'INSERT', 1)",
        "SELECT ipmanager.allocate_host('02:00:00:00:00:01', 'x', 'lan')",
    ] {
        assert_denied(failure(&agent1, statement).await, statement);
    }

    // Admins read and forget, but cannot write status.
    assert_eq!(
        scalar::<i64>(&admin, "SELECT count(*) FROM ipmanager.agent_status").await,
        2
    );
    assert_eq!(
        scalar::<i64>(&admin, "SELECT count(*) FROM ipmanager.sync_status").await,
        2
    );
    for statement in [
        "INSERT INTO ipmanager.agent_status (name, seen_at, heartbeat, phase) VALUES ('adm', now(), '1 minute', 'x')",
        "UPDATE ipmanager.agent_status SET phase = 'x'",
        "SELECT ipmanager.agent_report('adm', 'x', '1 minute')",
    ] {
        assert_denied(failure(&admin, statement).await, statement);
    }
    let deleted = admin
        .execute(
            "DELETE FROM ipmanager.agent_status WHERE name = 'site-b'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    // The retired agent's login can register again afterwards.
    ok(
        &agent2,
        "SELECT ipmanager.agent_report('site-b', 'synced', '30 seconds')",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// sync_status, change_applied
// ---------------------------------------------------------------------------------------------

/// (up_to_date, behind_since IS NOT NULL, pending_changes) of `name`.
async fn sync_of(c: &Client, name: &str) -> (bool, bool, Option<i64>) {
    let row = c
        .query_one(
            "SELECT up_to_date, behind_since IS NOT NULL, pending_changes FROM ipmanager.sync_status WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

async fn applied(c: &Client, xid: &str, name: &str) -> bool {
    c.query_one(
        "SELECT applied FROM ipmanager.change_applied($1::text::xid8) WHERE name = $2",
        &[&xid, &name],
    )
    .await
    .unwrap()
    .get(0)
}

async fn report_snapshot(agent: &Client, name: &str, snapshot: &str) {
    agent
        .execute(
            "SELECT ipmanager.agent_report($1, 'synced', '1 minute', applied => $2::text::pg_snapshot)",
            &[&name, &snapshot],
        )
        .await
        .unwrap_or_else(|e| panic!("agent_report: {}", describe(&e)));
}

#[tokio::test]
async fn sync_status_and_change_applied_follow_the_applied_snapshot() {
    let db = TestDb::new().await;
    let logins = LoginRoles::create(
        &db,
        &[("agent", "ipmanager_agent"), ("admin", "ipmanager_admin")],
    )
    .await;
    let agent = common::connect(&logins.url(&db, &logins.names[0])).await;
    let admin = common::connect(&logins.url(&db, &logins.names[1])).await;
    let observer = db.client().await;
    ok(
        &admin,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lan', '10.0.0.0/24')",
    )
    .await;

    // Never applied anything: not up to date, nothing known about pending changes.
    ok(
        &agent,
        "SELECT ipmanager.agent_report('site-a', 'starting', '1 minute')",
    )
    .await;
    assert_eq!(sync_of(&admin, "site-a").await, (false, false, None));

    let snapshot = || async {
        scalar::<Option<String>>(&observer, "SELECT pg_current_snapshot()::text")
            .await
            .unwrap()
    };
    let before = snapshot().await;
    report_snapshot(&agent, "site-a", &before).await;
    assert_eq!(sync_of(&admin, "site-a").await, (true, false, Some(0)));

    // A change: a snapshot taken while it is in progress does not contain it either.
    ok(&admin, "BEGIN").await;
    ok(&admin, "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:01', '10.0.0.1', 'a'), ('02:00:00:00:00:02', '10.0.0.2', 'b')").await;
    let xid = scalar::<Option<String>>(&admin, "SELECT pg_current_xact_id()::text")
        .await
        .unwrap();
    let during = snapshot().await;
    ok(&admin, "COMMIT").await;
    assert!(!applied(&admin, &xid, "site-a").await);
    assert_eq!(sync_of(&admin, "site-a").await, (false, true, Some(2)));
    report_snapshot(&agent, "site-a", &during).await;
    assert_eq!(sync_of(&admin, "site-a").await, (false, true, Some(2)));
    assert!(!applied(&agent, &xid, "site-a").await);
    let behind_since_is_the_change = scalar::<Option<bool>>(
        &admin,
        "SELECT s.behind_since = (SELECT min(at) FROM ipmanager.audit_log WHERE table_name = 'hosts')
         FROM ipmanager.sync_status s WHERE s.name = 'site-a'",
    )
    .await;
    assert_eq!(behind_since_is_the_change, Some(true));

    // A snapshot taken after the commit contains it.
    let after = snapshot().await;
    report_snapshot(&agent, "site-a", &after).await;
    assert_eq!(sync_of(&admin, "site-a").await, (true, false, Some(0)));
    assert!(applied(&admin, &xid, "site-a").await);
    let row = admin
        .query_one("SELECT name, alive, applied, phase, last_error FROM ipmanager.change_applied($1::text::xid8)", &[&xid])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "site-a");
    assert!(row.get::<_, bool>(1));
    assert!(row.get::<_, bool>(2));
    assert_eq!(row.get::<_, String>(3), "synced");
    assert_eq!(row.get::<_, Option<String>>(4), None);
}

#[tokio::test]
async fn an_agent_is_dead_after_three_missed_heartbeats() {
    let db = TestDb::new().await;
    let logins = LoginRoles::create(&db, &[("agent", "ipmanager_agent")]).await;
    let agent = common::connect(&logins.url(&db, &logins.names[0])).await;
    ok(
        &agent,
        "SELECT ipmanager.agent_report('site-a', 'synced', '1 hour')",
    )
    .await;
    assert_eq!(
        scalar::<Option<bool>>(
            &agent,
            "SELECT alive FROM ipmanager.sync_status WHERE name = 'site-a'"
        )
        .await,
        Some(true)
    );
    ok(
        &agent,
        "SELECT ipmanager.agent_report('site-a', 'synced', '1 millisecond')",
    )
    .await;
    let dead = common::wait_until(DEADLINE, || async {
        scalar::<Option<bool>>(
            &agent,
            "SELECT alive FROM ipmanager.sync_status WHERE name = 'site-a'",
        )
        .await
            == Some(false)
    })
    .await;
    assert!(dead, "alive stayed true long after 3 heartbeats of 1 ms");
    assert_eq!(
        scalar::<Option<bool>>(
            &agent,
            "SELECT alive FROM ipmanager.change_applied('1') WHERE name = 'site-a'"
        )
        .await,
        Some(false)
    );
    // Reporting again with a sane heartbeat brings it back.
    ok(
        &agent,
        "SELECT ipmanager.agent_report('site-a', 'synced', '1 minute')",
    )
    .await;
    assert_eq!(
        scalar::<Option<bool>>(
            &agent,
            "SELECT alive FROM ipmanager.sync_status WHERE name = 'site-a'"
        )
        .await,
        Some(true)
    );
}

// ---------------------------------------------------------------------------------------------
// Documentation in the database
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_v2_object_has_a_comment() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let missing: Vec<String> = c
        .query(
            "SELECT c.relname || coalesce('.' || a.attname, '')
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             WHERE n.nspname = 'ipmanager'
               AND c.relname IN ('audit_log', 'agent_status', 'subnet_usage', 'sync_status')
               AND (obj_description(c.oid, 'pg_class') IS NULL OR (a.attnum IS NOT NULL AND col_description(c.oid, a.attnum) IS NULL))
             UNION ALL
             SELECT p.oid::regprocedure::text FROM pg_proc p
             WHERE p.pronamespace = 'ipmanager'::regnamespace AND obj_description(p.oid, 'pg_proc') IS NULL
             UNION ALL
             SELECT pol.polname FROM pg_policy pol
             WHERE pol.polrelid = 'ipmanager.agent_status'::regclass AND obj_description(pol.oid, 'pg_policy') IS NULL",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(missing.is_empty(), "without COMMENT: {missing:?}");
}
