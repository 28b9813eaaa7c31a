//! `sql/V7__clients.sql` against a real PostgreSQL: client identifiers normalised, validated and
//! unique per subnet in words; extra MACs of a reservation (`ipmanager.host_macs`) under the rule
//! "a MAC belongs to at most one reservation per subnet" across both tables; neither on a
//! DNS-only name; the audit of host_macs; the snapshot the agent reads.
//!
//! Run with `IPMANAGER_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres
//! cargo test --test clients_sql`. Every test makes its own database.

mod common;

use common::sql::{ok, scalar};
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

/// `office` (10.1.0.0/24) with the laptop 10.1.0.10 (52:54:00:00:00:01), and `lab`.
async fn with_laptop() -> (TestDb, Client) {
    let db = TestDb::new().await;
    let client = db.client().await;
    ok(
        &client,
        "INSERT INTO ipmanager.subnets (name, cidr, range_start, range_end) \
             VALUES ('office', '10.1.0.0/24', '10.1.0.100', '10.1.0.199'), \
                    ('lab', '10.2.0.0/24', NULL, NULL); \
         INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('52:54:00:00:00:01', '10.1.0.10', 'laptop');",
    )
    .await;
    (db, client)
}

#[tokio::test]
async fn client_identifiers_are_normalised_validated_and_unique_per_subnet() {
    let (_db, client) = with_laptop().await;
    ok(
        &client,
        "UPDATE ipmanager.hosts SET client_id = '1:52:54:0:0:0:1' WHERE hostname = 'laptop'",
    )
    .await;
    assert_eq!(
        scalar::<String>(&client, "SELECT client_id FROM ipmanager.hosts").await,
        "01:52:54:00:00:00:01"
    );
    ok(
        &client,
        "UPDATE ipmanager.hosts SET client_id = '0001AbCd' WHERE hostname = 'laptop'",
    )
    .await;
    assert_eq!(
        scalar::<String>(&client, "SELECT client_id FROM ipmanager.hosts").await,
        "00:01:ab:cd"
    );
    for bad in ["01", "01:xy", "01,set:evil", "01:52\n", "01::52", ""] {
        let (code, message) = failure(
            &client,
            &format!(
                "UPDATE ipmanager.hosts SET client_id = {} WHERE hostname = 'laptop'",
                quote(bad)
            ),
        )
        .await;
        assert_eq!(code, SqlState::CHECK_VIOLATION, "{bad:?}");
        assert!(
            message.starts_with("hosts.client_id '")
                && message.contains("is not a client identifier"),
            "{message}"
        );
    }
    // The same words as the Rust parser, which the CLI and imports use.
    let rust = ipmanager::client_id::parse("01:xy")
        .unwrap_err()
        .to_string();
    let (_, sql) = failure(
        &client,
        "UPDATE ipmanager.hosts SET client_id = '01:xy' WHERE hostname = 'laptop'",
    )
    .await;
    assert_eq!(sql, rust);
    let (code, message) = failure(
        &client,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname, client_id) \
         VALUES ('52:54:00:00:00:02', '10.1.0.11', 'pc', '00:01:AB:CD')",
    )
    .await;
    assert_eq!(code, SqlState::UNIQUE_VIOLATION);
    assert_eq!(
        message,
        "hosts.client_id is already used in subnet 'office' ('laptop', 10.1.0.10): a client \
         identifier has at most one reservation per subnet"
    );
    // Another subnet may have it.
    ok(
        &client,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname, client_id) \
         VALUES ('52:54:00:00:00:02', '10.2.0.11', 'pc', '00:01:ab:cd')",
    )
    .await;
    // A DNS-only name has none.
    let (code, message) = failure(
        &client,
        "INSERT INTO ipmanager.hosts (ip, hostname, client_id) VALUES ('10.1.0.60', 'vip', '01:02')",
    )
    .await;
    assert_eq!(code, SqlState::CHECK_VIOLATION);
    assert!(message.contains("a DNS-only name has neither"), "{message}");
}

#[tokio::test]
async fn a_mac_belongs_to_at_most_one_reservation_per_subnet_across_both_tables() {
    let (_db, client) = with_laptop().await;
    ok(
        &client,
        "INSERT INTO ipmanager.host_macs (host_id, mac) \
         SELECT id, '52:54:00:00:00:11' FROM ipmanager.hosts WHERE hostname = 'laptop'",
    )
    .await;
    // The extra MAC as another host's MAC, and the laptop's MAC as another's extra MAC.
    let (code, message) = failure(
        &client,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('52:54:00:00:00:11', '10.1.0.11', 'pc')",
    )
    .await;
    assert_eq!(code, SqlState::UNIQUE_VIOLATION);
    assert_eq!(
        message,
        "hosts.mac 52:54:00:00:00:11 already has a reservation in subnet 'office' ('laptop', \
         10.1.0.10): a MAC address has at most one reservation per subnet"
    );
    ok(
        &client,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('52:54:00:00:00:02', '10.1.0.11', 'pc')",
    )
    .await;
    for mac in ["52:54:00:00:00:01", "52:54:00:00:00:11"] {
        let (code, message) = failure(
            &client,
            &format!(
                "INSERT INTO ipmanager.host_macs (host_id, mac) \
                 SELECT id, '{mac}' FROM ipmanager.hosts WHERE hostname = 'pc'"
            ),
        )
        .await;
        assert_eq!(code, SqlState::UNIQUE_VIOLATION, "{mac}");
        assert_eq!(
            message,
            format!(
                "host_macs.mac {mac} already has a reservation in subnet 'office' ('laptop', \
                 10.1.0.10): a MAC address has at most one reservation per subnet"
            )
        );
    }
    // In another subnet the same MAC is another reservation.
    ok(
        &client,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('52:54:00:00:00:11', '10.2.0.11', 'lab-pc')",
    )
    .await;
    // Group and zero MACs, DNS-only names, and a ninth extra MAC are refused.
    for (sql, words) in [
        (
            "INSERT INTO ipmanager.host_macs (host_id, mac) SELECT id, '01:00:5e:00:00:01' FROM ipmanager.hosts WHERE hostname = 'pc'",
            "is a multicast address",
        ),
        (
            "INSERT INTO ipmanager.host_macs (host_id, mac) SELECT id, '00:00:00:00:00:00' FROM ipmanager.hosts WHERE hostname = 'pc'",
            "is the all-zero address",
        ),
    ] {
        let (code, message) = failure(&client, sql).await;
        assert_eq!(code, SqlState::CHECK_VIOLATION);
        assert!(message.contains(words), "{message}");
    }
    ok(
        &client,
        "INSERT INTO ipmanager.hosts (ip, hostname) VALUES ('10.1.0.60', 'vip')",
    )
    .await;
    let (_, message) = failure(
        &client,
        "INSERT INTO ipmanager.host_macs (host_id, mac) SELECT id, '52:54:00:00:00:60' FROM ipmanager.hosts WHERE hostname = 'vip'",
    )
    .await;
    assert!(
        message.contains("cannot be added to DNS-only name 'vip'"),
        "{message}"
    );
    ok(
        &client,
        "INSERT INTO ipmanager.host_macs (host_id, mac) \
         SELECT h.id, ('52:54:00:00:01:0' || n)::macaddr FROM ipmanager.hosts h, generate_series(1, 7) n \
         WHERE h.hostname = 'laptop'",
    )
    .await;
    let (_, message) = failure(
        &client,
        "INSERT INTO ipmanager.host_macs (host_id, mac) SELECT id, '52:54:00:00:01:09' FROM ipmanager.hosts WHERE hostname = 'laptop'",
    )
    .await;
    assert!(message.contains("has 8 extra MACs already"), "{message}");
    // A reservation with extra MACs keeps its primary MAC; removing the host removes them.
    let (_, message) = failure(
        &client,
        "UPDATE ipmanager.hosts SET mac = NULL WHERE hostname = 'laptop'",
    )
    .await;
    assert!(
        message.contains("a reservation needs its primary MAC"),
        "{message}"
    );
    ok(
        &client,
        "DELETE FROM ipmanager.hosts WHERE hostname = 'laptop'",
    )
    .await;
    assert_eq!(
        scalar::<i64>(&client, "SELECT count(*) FROM ipmanager.host_macs").await,
        0
    );
}

#[tokio::test]
async fn extra_macs_are_audited_and_in_the_snapshot() {
    let (db, client) = with_laptop().await;
    ok(
        &client,
        "INSERT INTO ipmanager.sites (name) VALUES ('berlin'); \
         UPDATE ipmanager.subnets SET site = 'berlin' WHERE name = 'office'; \
         UPDATE ipmanager.hosts SET client_id = '01:52:54:00:00:00:01'; \
         INSERT INTO ipmanager.host_macs (host_id, mac) \
             SELECT id, m::macaddr FROM ipmanager.hosts, \
                    unnest(ARRAY['52:54:00:00:00:21', '52:54:00:00:00:11']) m;",
    )
    .await;
    let logged: Vec<String> = client
        .query(
            "SELECT table_name || ' ' || operation || ' ' || \
                    array_to_string(ipmanager.audit_sites(table_name, old, new), ',') \
             FROM ipmanager.audit_log WHERE table_name = 'host_macs' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        logged,
        ["host_macs INSERT berlin", "host_macs INSERT berlin"]
    );
    // Removing the host cascades without a log line of its own for the MACs.
    let connector = ipmanager::db::connector(&db.url, &Default::default(), "clients-test").unwrap();
    let pool = ipmanager::db::pool(connector);
    let at = ipmanager::db::take_snapshot_at(&pool, 0, &Default::default())
        .await
        .unwrap();
    let extras = &at.snapshot.extras;
    assert_eq!(extras.hosts.len(), 1);
    assert_eq!(
        extras.hosts[0].client_id.as_ref().map(ToString::to_string),
        Some("01:52:54:00:00:00:01".to_owned())
    );
    assert_eq!(
        extras.hosts[0].macs,
        [[0x52, 0x54, 0, 0, 0, 0x11], [0x52, 0x54, 0, 0, 0, 0x21]]
    );
    ok(&client, "DELETE FROM ipmanager.hosts").await;
    assert_eq!(
        scalar::<i64>(
            &client,
            "SELECT count(*) FROM ipmanager.audit_log WHERE table_name = 'host_macs' AND operation = 'DELETE'"
        )
        .await,
        0
    );
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
