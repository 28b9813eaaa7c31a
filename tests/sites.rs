//! Sites in the database and the CLI: `ipmanager.sites` and `subnets.site` are validated,
//! audited, notified and granted like subnets and hosts; psql users move subnets with plain SQL;
//! `ipmanager site` and `subnet --site` do the same from the shell. The agents' side is in
//! tests/agent.rs.

mod common;

use std::time::Duration;

use common::binary::{assert_exit, error_text, ipmanager, stdout};
use common::sql::{ok, scalar};
use common::TestDb;
use tokio_postgres::Client;

const DEADLINE: Duration = Duration::from_secs(20);

/// The message of the error `sql` must fail with.
async fn failure(client: &Client, sql: &str) -> String {
    let error = client
        .batch_execute(sql)
        .await
        .expect_err(&format!("{sql} must fail"));
    let db = error.as_db_error().expect("a server error");
    db.message().to_owned()
}

#[tokio::test]
async fn sites_are_validated_and_subnets_join_them_with_plain_sql() {
    let db = TestDb::new().await;
    let client = db.client().await;
    assert_eq!(
        failure(
            &client,
            "INSERT INTO ipmanager.sites (name) VALUES ('bad name')"
        )
        .await,
        "sites.name 'bad name' is not a valid site name: 1 to 63 letters, digits, '-', '_' or \
         '.', starting with a letter or digit"
    );
    ok(
        &client,
        "INSERT INTO ipmanager.sites (name) VALUES ('berlin');
         INSERT INTO ipmanager.subnets (name, cidr) VALUES ('office', '10.1.0.0/24'), ('lab', '10.2.0.0/24')",
    )
    .await;
    assert!(failure(
        &client,
        "INSERT INTO ipmanager.sites (name) VALUES ('berlin')"
    )
    .await
    .contains("sites_name_unique"));
    assert_eq!(
        failure(
            &client,
            "UPDATE ipmanager.subnets SET site = 'paris' WHERE name = 'office'"
        )
        .await,
        "subnets.site 'paris' of subnet 'office' does not exist: a subnet can only belong to an \
         existing site"
    );

    // What psql users write.
    ok(
        &client,
        "UPDATE ipmanager.subnets SET site = 'berlin' WHERE name = 'office'",
    )
    .await;
    // Renaming a site carries its subnets along.
    ok(
        &client,
        "UPDATE ipmanager.sites SET name = 'berlin-mitte' WHERE name = 'berlin'",
    )
    .await;
    let site: Option<String> = scalar(
        &client,
        "SELECT site FROM ipmanager.subnets WHERE name = 'office'",
    )
    .await;
    assert_eq!(site.as_deref(), Some("berlin-mitte"));
    // A site with subnets stays; once they are moved it can go.
    assert_eq!(
        failure(
            &client,
            "DELETE FROM ipmanager.sites WHERE name = 'berlin-mitte'"
        )
        .await,
        "site 'berlin-mitte' still has 1 subnet(s), e.g. 'office': a site with subnets cannot be \
         removed"
    );
    ok(
        &client,
        "UPDATE ipmanager.subnets SET site = NULL WHERE site = 'berlin-mitte';
         DELETE FROM ipmanager.sites WHERE name = 'berlin-mitte'",
    )
    .await;

    // Every change is in the audit log, sites included.
    let logged: Vec<(String, String)> = client
        .query(
            "SELECT table_name, operation FROM ipmanager.audit_log
             WHERE table_name = 'sites' OR (table_name = 'subnets' AND operation = 'UPDATE')
             ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("table_name"), r.get("operation")))
        .collect();
    let expected = [
        ("sites", "INSERT"),
        ("subnets", "UPDATE"),
        ("sites", "UPDATE"),
        ("subnets", "UPDATE"),
        ("subnets", "UPDATE"),
        ("sites", "DELETE"),
    ];
    assert_eq!(
        logged,
        expected.map(|(t, o)| (t.to_owned(), o.to_owned())),
        "audit log"
    );
}

#[tokio::test]
async fn a_change_to_a_site_is_notified() {
    let db = TestDb::new().await;
    let client = db.client().await;
    ok(
        &client,
        "INSERT INTO ipmanager.sites (name) VALUES ('berlin')",
    )
    .await;
    let connector = ipmanager::db::connector(&db.url, &Default::default(), "sites-test").unwrap();
    let mut listener = ipmanager::listen::Listener::start(
        &connector,
        Duration::from_secs(10),
        ipmanager::listen::Interest::Everything,
    )
    .await
    .unwrap();
    ok(
        &client,
        "UPDATE ipmanager.sites SET comment = 'Mitte' WHERE name = 'berlin'",
    )
    .await;
    let wake = tokio::time::timeout(DEADLINE, listener.next())
        .await
        .expect("a notification for the sites change")
        .unwrap();
    assert_eq!(wake, ipmanager::listen::Wake::Changed);
}

#[tokio::test]
async fn agents_read_sites_and_admins_change_them() {
    let db = TestDb::new().await;
    let client = db.client().await;
    ok(
        &client,
        "INSERT INTO ipmanager.sites (name) VALUES ('berlin');
         INSERT INTO ipmanager.subnets (name, cidr) VALUES ('office', '10.1.0.0/24')",
    )
    .await;
    ok(&client, "SET ROLE ipmanager_agent").await;
    let sites: i64 = scalar(&client, "SELECT count(*) FROM ipmanager.sites").await;
    assert_eq!(sites, 1);
    for statement in [
        "INSERT INTO ipmanager.sites (name) VALUES ('paris')",
        "UPDATE ipmanager.sites SET comment = 'x'",
        "DELETE FROM ipmanager.sites",
        "UPDATE ipmanager.subnets SET site = 'berlin'",
    ] {
        let message = failure(&client, statement).await;
        assert!(
            message.contains("permission denied"),
            "{statement}: {message}"
        );
    }
    ok(&client, "RESET ROLE; SET ROLE ipmanager_admin").await;
    ok(
        &client,
        "INSERT INTO ipmanager.sites (name) VALUES ('paris');
         UPDATE ipmanager.subnets SET site = 'paris' WHERE name = 'office';
         UPDATE ipmanager.sites SET comment = 'x';
         UPDATE ipmanager.subnets SET site = NULL;
         DELETE FROM ipmanager.sites WHERE name = 'berlin'",
    )
    .await;
}

#[tokio::test]
async fn an_agent_older_than_sites_reports_as_before_and_serves_every_site() {
    let db = TestDb::new().await;
    let client = db.client().await;
    ok(
        &client,
        "INSERT INTO ipmanager.sites (name) VALUES ('berlin'), ('paris');
         INSERT INTO ipmanager.subnets (name, cidr, site) VALUES ('office', '10.1.0.0/24', 'berlin');",
    )
    .await;
    // In a transaction of their own, so that their snapshots hold the rows above.
    ok(
        &client,
        "SELECT ipmanager.agent_report('old', 'in_sync', '10 seconds', pg_current_snapshot());
         SELECT ipmanager.agent_report('old', 'in_sync', '10 seconds', NULL, NULL, NULL, NULL,
                                       NULL, NULL, NULL, NULL);
         SELECT ipmanager.agent_report('paris', 'in_sync', '10 seconds', pg_current_snapshot(),
                                       NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                       ARRAY['paris'], 'sites');
         SELECT ipmanager.agent_report('new', 'in_sync', '10 seconds', pg_current_snapshot(),
                                       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'sites');
         SELECT ipmanager.agent_report('everywhere', 'in_sync', '10 seconds',
                                       pg_current_snapshot(), NULL, NULL, NULL, NULL, NULL,
                                       NULL, NULL, ARRAY['paris'], 'all');",
    )
    .await;
    assert_eq!(
        failure(
            &client,
            "SELECT ipmanager.agent_report('bad', 'in_sync', '10 seconds', NULL, NULL, NULL, \
             NULL, NULL, NULL, NULL, NULL, ARRAY['no good'], 'sites')"
        )
        .await,
        "agent_status.sites: 'no good' is not a valid site name: 1 to 63 letters, digits, '-', \
         '_' or '.', starting with a letter or digit"
    );
    let xid: String = scalar(
        &client,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:01', '10.1.0.5', 'pc')
         RETURNING pg_current_xact_id()::text",
    )
    .await;
    let concerned: Vec<(String, Option<Vec<String>>, bool)> = client
        .query(
            "SELECT name, sites, concerned FROM ipmanager.change_applied($1::text::xid8)",
            &[&xid],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("name"), r.get("sites"), r.get("concerned")))
        .collect();
    let paris = Some(vec!["paris".to_owned()]);
    assert_eq!(
        concerned,
        [
            // dns_scope = all: the berlin host's name is in its addn-hosts.
            ("everywhere".to_owned(), paris.clone(), true),
            // No sites configured: it serves every subnet.
            ("new".to_owned(), None, true),
            // No sites reported at all (eleven arguments): the same.
            ("old".to_owned(), None, true),
            ("paris".to_owned(), paris, false),
        ]
    );
    let sites: Vec<Option<String>> = client
        .query_one("SELECT ipmanager.change_sites($1::text::xid8)", &[&xid])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sites, [Some("berlin".to_owned())]);
    // sync_status counts the change only for the agents it concerns.
    let pending: Vec<(String, i64)> = client
        .query(
            "SELECT name, pending_changes FROM ipmanager.sync_status
             WHERE pending_changes IS NOT NULL ORDER BY name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("name"), r.get("pending_changes")))
        .collect();
    assert_eq!(
        pending,
        [
            ("everywhere".to_owned(), 1),
            ("new".to_owned(), 1),
            ("old".to_owned(), 1),
            ("paris".to_owned(), 0)
        ]
    );
}

#[tokio::test]
async fn the_cli_adds_lists_shows_and_removes_sites_and_puts_subnets_into_them() {
    let db = TestDb::new().await;
    let env = [("IPMANAGER_DATABASE_URL", db.url.as_str())];
    let run = |args: &[&str]| ipmanager(args, &env);

    assert_exit(
        &run(&["site", "add", "berlin", "--comment", "Mitte"]),
        0,
        "site add",
    );
    let out = run(&["site", "add", "bad name"]);
    assert_exit(&out, 65, "site add with a bad name");
    assert!(error_text(&out).starts_with("sites.name 'bad name' is not a valid site name"));

    let out = run(&[
        "subnet",
        "add",
        "10.1.0.0/24",
        "--name",
        "office",
        "--site",
        "paris",
    ]);
    assert_exit(&out, 65, "subnet add in an unknown site");
    assert!(
        error_text(&out).starts_with("subnets.site 'paris' of subnet 'office' does not exist"),
        "{}",
        error_text(&out)
    );
    assert_exit(
        &run(&[
            "subnet",
            "add",
            "10.1.0.0/24",
            "--name",
            "office",
            "--site",
            "berlin",
        ]),
        0,
        "subnet add --site",
    );
    assert_exit(
        &run(&["subnet", "add", "10.2.0.0/24", "--name", "lab"]),
        0,
        "subnet add without site",
    );

    let list = stdout(&run(&["subnet", "list"]));
    let office = list.lines().find(|l| l.starts_with("office")).unwrap();
    assert!(list.lines().next().unwrap().contains("SITE"), "{list}");
    assert!(office.split_whitespace().any(|w| w == "berlin"), "{list}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&run(&["subnet", "show", "office", "-o", "json"]))).unwrap();
    assert_eq!(json["site"], "berlin");

    let json: serde_json::Value =
        serde_json::from_str(&stdout(&run(&["site", "show", "berlin", "-o", "json"]))).unwrap();
    assert_eq!(json["subnets"], serde_json::json!(["office"]));
    assert_eq!(json["comment"], "Mitte");
    let list = stdout(&run(&["site", "list"]));
    assert_eq!(
        list.lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["berlin", "1", "-", "Mitte"],
        "{list}"
    );

    let out = run(&["site", "rm", "berlin"]);
    assert_exit(&out, 65, "site rm with subnets");
    assert!(error_text(&out).contains("still has 1 subnet(s)"));
    assert_exit(
        &run(&["subnet", "set", "office", "--site", "none"]),
        0,
        "subnet set --site none",
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&run(&["subnet", "show", "office", "-o", "json"]))).unwrap();
    assert_eq!(json["site"], serde_json::Value::Null);
    assert_exit(&run(&["site", "rm", "berlin"]), 0, "site rm");
    assert_exit(
        &run(&["site", "show", "berlin"]),
        1,
        "site show of a removed site",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_write_waits_for_a_subnet_moving_to_another_site() {
    let db = TestDb::new().await;
    let mut mover = db.client().await;
    ok(
        &mover,
        "INSERT INTO ipmanager.sites (name) VALUES ('berlin'), ('paris');
         INSERT INTO ipmanager.subnets (name, cidr, site) VALUES ('office', '10.1.0.0/24', 'berlin')",
    )
    .await;
    let writer = db.client().await;
    let observer = db.client().await;
    let writer_pid = common::sql::backend_pid(&writer).await;

    let move_tx = mover.transaction().await.unwrap();
    move_tx
        .batch_execute("UPDATE ipmanager.subnets SET site = 'paris' WHERE name = 'office'")
        .await
        .unwrap();
    // The host write waits for the move, so its notification names the site the subnet ends
    // up in, not the one it is leaving.
    let insert = tokio::spawn(async move {
        writer
            .batch_execute(
                "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:01', '10.1.0.5', 'pc')",
            )
            .await
    });
    common::sql::wait_for_lock_wait(&observer, writer_pid).await;
    move_tx.commit().await.unwrap();
    tokio::time::timeout(DEADLINE, insert)
        .await
        .expect("the host write goes on after the move")
        .unwrap()
        .unwrap();
}
