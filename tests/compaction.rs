//! What agents of the incremental layout report (V5): their layout, the hosts that await a
//! compaction and their compactions; `change_applied` counting those hosts as not applied;
//! `ipmanager.request_compaction()` and `ipmanager compact`; the compaction columns of
//! `ipmanager status`. Agents are played here by their status rows, written through
//! `agent_report` as an agent writes them; the real agent's side is in the agent's own tests.

mod common;

use std::time::{Duration, SystemTime};

use common::binary::{assert_exit, error_text, ipmanager, stderr, stdout};
use common::sql::{describe, ok, scalar};
use common::{LoginRoles, TestDb};
use futures_util::StreamExt;
use ipmanager::db::status::{Report, StatusWriter};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

const DEADLINE: Duration = Duration::from_secs(20);

/// The SQLSTATE and message of the error `sql` must fail with.
async fn failure(client: &Client, sql: &str) -> (String, String) {
    let error = client
        .batch_execute(sql)
        .await
        .expect_err(&format!("{sql} must fail"));
    let db = error.as_db_error().expect("a server error");
    (db.code().code().to_owned(), db.message().to_owned())
}

/// `agent_report` with V5's arguments: a live agent (heartbeat 1 hour) named `name` with the
/// `incremental` layout, applying the caller's current snapshot when `applied`.
fn report_sql(name: &str, applied: bool, pending: &str, compacted: bool) -> String {
    let snapshot = if applied {
        "pg_current_snapshot()"
    } else {
        "NULL"
    };
    format!(
        "SELECT ipmanager.agent_report('{name}', 'in_sync', '1 hour', {snapshot}, NULL, NULL, \
         NULL, NULL, NULL, NULL, NULL, NULL, 'sites', 'incremental', {pending}, {compacted})"
    )
}

/// `name`'s layout, pending hosts and whether it has a compaction time.
async fn reported(client: &Client, name: &str) -> (Option<String>, Option<Vec<i64>>, bool) {
    let row = client
        .query_one(
            "SELECT layout, pending_hosts, compacted_at IS NOT NULL AS compacted \
             FROM ipmanager.agent_status WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn agents_report_layout_pending_hosts_and_compactions_and_older_calls_still_work() {
    let db = TestDb::new().await;
    let logins = LoginRoles::create(&db, &[("agent", "ipmanager_agent")]).await;
    let agent = common::connect(&logins.url(&db, &logins.names[0])).await;

    // The eleven arguments of V2 and the thirteen of V4 (agents older than this schema) still
    // reach a function, and report no layout.
    ok(
        &agent,
        "SELECT ipmanager.agent_report('v2', 'in_sync', '1 hour', pg_current_snapshot());
         SELECT ipmanager.agent_report('v4', 'in_sync', '1 hour', pg_current_snapshot(),
                                       'hash', 3, 0, NULL, 'dhcp-v4', '0.9', now(),
                                       ARRAY['paris'], 'sites');",
    )
    .await;
    assert_eq!(reported(&agent, "v4").await, (None, None, false));
    assert_eq!(
        scalar::<Option<Vec<String>>>(
            &agent,
            "SELECT sites FROM ipmanager.agent_status WHERE name = 'v4'"
        )
        .await,
        Some(vec!["paris".to_owned()])
    );

    // The new arguments, as the agent's login: sorted without repeats, compacted_at set.
    ok(
        &agent,
        &report_sql("v5", true, "ARRAY[7, 3, 7]::bigint[]", true),
    )
    .await;
    assert_eq!(
        reported(&agent, "v5").await,
        (Some("incremental".to_owned()), Some(vec![3, 7]), true)
    );
    // A heartbeat (nothing applied) leaves the pending hosts of the applied files alone...
    ok(&agent, &report_sql("v5", false, "NULL", false)).await;
    assert_eq!(reported(&agent, "v5").await.1, Some(vec![3, 7]));
    // ...a new applied snapshot replaces them.
    ok(&agent, &report_sql("v5", true, "'{}'", false)).await;
    assert_eq!(reported(&agent, "v5").await.1, Some(vec![]));
    let first: SystemTime = scalar(
        &agent,
        "SELECT compacted_at FROM ipmanager.agent_status WHERE name = 'v5'",
    )
    .await;
    ok(&agent, &report_sql("v5", false, "NULL", true)).await;
    let second: SystemTime = scalar(
        &agent,
        "SELECT compacted_at FROM ipmanager.agent_status WHERE name = 'v5'",
    )
    .await;
    assert!(second > first, "each compaction report moves compacted_at");

    assert_eq!(
        failure(
            &agent,
            "SELECT ipmanager.agent_report('v5', 'in_sync', '1 hour', NULL, NULL, NULL, NULL, \
             NULL, NULL, NULL, NULL, NULL, 'sites', 'sharded')"
        )
        .await,
        (
            "23514".to_owned(),
            "agent_status.layout 'sharded' is not a layout: 'hostsfile', 'conf' or 'incremental'"
                .to_owned()
        )
    );
    drop(agent);
    drop(logins);
}

#[tokio::test]
async fn the_status_writer_reports_its_layout_pending_hosts_and_compactions() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let connector =
        ipmanager::db::connector(&db.url, &Default::default(), "compaction-test").unwrap();
    let writer = StatusWriter::new(
        ipmanager::db::pool(connector),
        "dhcp1",
        Duration::from_secs(60),
    )
    .layout("incremental");
    let snapshot: String = scalar(&client, "SELECT pg_current_snapshot()::text").await;
    let applied = ipmanager::db::status::Applied {
        db_snapshot: snapshot,
        files_hash: "f".repeat(64),
        hosts: 2,
        rows_skipped: 0,
    };
    writer
        .report(&Report {
            phase: "in_sync".to_owned(),
            applied: Some(applied.clone()),
            pending_hosts: Some(vec![5, 2]),
            ..Report::default()
        })
        .await
        .unwrap();
    assert_eq!(
        reported(&client, "dhcp1").await,
        (Some("incremental".to_owned()), Some(vec![2, 5]), false)
    );
    // A heartbeat is Report::default() with a phase: it changes none of it.
    writer
        .report(&Report {
            phase: "in_sync".to_owned(),
            ..Report::default()
        })
        .await
        .unwrap();
    assert_eq!(reported(&client, "dhcp1").await.1, Some(vec![2, 5]));
    writer
        .report(&Report {
            phase: "in_sync".to_owned(),
            applied: Some(applied),
            pending_hosts: Some(vec![]),
            compacted: true,
            ..Report::default()
        })
        .await
        .unwrap();
    assert_eq!(
        reported(&client, "dhcp1").await,
        (Some("incremental".to_owned()), Some(vec![]), true)
    );
    let awaiting: Option<i32> = scalar(
        &client,
        "SELECT awaiting_compaction FROM ipmanager.sync_status WHERE name = 'dhcp1'",
    )
    .await;
    assert_eq!(awaiting, Some(0));
}

/// `(name, alive, applied, concerned)` of every agent for the change `xid`.
async fn applied(client: &Client, xid: &str) -> Vec<(String, bool, bool, bool)> {
    client
        .query(
            "SELECT name, alive, applied, concerned FROM ipmanager.change_applied($1::text::xid8)",
            &[&xid],
        )
        .await
        .unwrap_or_else(|e| panic!("change_applied: {}", describe(&e)))
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test]
async fn a_change_is_not_applied_on_an_agent_while_a_host_it_touched_awaits_a_compaction() {
    let db = TestDb::new().await;
    let client = db.client().await;
    ok(
        &client,
        "INSERT INTO ipmanager.sites (name) VALUES ('paris');
         INSERT INTO ipmanager.subnets (name, cidr) VALUES ('office', '10.1.0.0/24');
         INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES
             ('02:00:00:00:00:01', '10.1.0.5', 'moved'), ('02:00:00:00:00:02', '10.1.0.6', 'gone'),
             ('02:00:00:00:00:03', '10.1.0.7', 'other')",
    )
    .await;
    let id = |name: &'static str| {
        let client = &client;
        async move {
            scalar::<i64>(
                client,
                &format!("SELECT id FROM ipmanager.hosts WHERE hostname = '{name}'"),
            )
            .await
        }
    };
    let (moved, gone, other) = (id("moved").await, id("gone").await, id("other").await);
    // One change moves a host to another address (a move dnsmasq takes only at a compaction)
    // and removes another.
    let xid: String = scalar(
        &client,
        "WITH m AS (UPDATE ipmanager.hosts SET ip = '10.1.0.50' WHERE hostname = 'moved'),
              d AS (DELETE FROM ipmanager.hosts WHERE hostname = 'gone')
         SELECT pg_current_xact_id()::text",
    )
    .await;

    // Every agent applies a snapshot holding it: an old one (13 arguments, nothing pending),
    // one whose pending hosts are untouched by it, one per touched host, and one of another
    // site that is not concerned.
    ok(
        &client,
        &format!(
            "SELECT ipmanager.agent_report('old', 'in_sync', '1 hour', pg_current_snapshot(),
                 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'sites');
             {};
             {};
             {};
             SELECT ipmanager.agent_report('paris', 'in_sync', '1 hour', pg_current_snapshot(),
                 NULL, NULL, NULL, NULL, NULL, NULL, NULL, ARRAY['paris'], 'sites',
                 'incremental', ARRAY[{moved}]::bigint[]);",
            report_sql(
                "untouched",
                true,
                &format!("ARRAY[{other}]::bigint[]"),
                false
            ),
            report_sql(
                "wants-moved",
                true,
                &format!("ARRAY[{moved}]::bigint[]"),
                false
            ),
            report_sql(
                "wants-gone",
                true,
                &format!("ARRAY[{gone}, {other}]::bigint[]"),
                false
            ),
        ),
    )
    .await;
    let row =
        |name: &str, applied: bool, concerned: bool| (name.to_owned(), true, applied, concerned);
    assert_eq!(
        applied(&client, &xid).await,
        [
            row("old", true, true),
            row("paris", false, false),
            row("untouched", true, true),
            row("wants-gone", false, true),
            row("wants-moved", false, true),
        ]
    );
    let awaiting: Vec<(String, Option<i32>)> = client
        .query(
            "SELECT name, awaiting_compaction FROM ipmanager.sync_status ORDER BY name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        awaiting,
        [
            ("old".to_owned(), None),
            ("paris".to_owned(), Some(1)),
            ("untouched".to_owned(), Some(1)),
            ("wants-gone".to_owned(), Some(2)),
            ("wants-moved".to_owned(), Some(1)),
        ]
    );

    // A heartbeat changes nothing; the report after a compaction (nothing pending) makes the
    // change applied there.
    ok(&client, &report_sql("wants-moved", false, "NULL", false)).await;
    assert!(!applied(&client, &xid).await[4].2);
    ok(&client, &report_sql("wants-moved", true, "'{}'", true)).await;
    ok(&client, &report_sql("wants-gone", true, "NULL", true)).await;
    let after: Vec<bool> = applied(&client, &xid).await.iter().map(|a| a.2).collect();
    assert_eq!(after, [true, false, true, true, true]);

    // A later change that touches none of the pending hosts is applied as soon as the snapshot
    // holds it, even while others still await a compaction.
    let later: String = scalar(
        &client,
        "WITH u AS (UPDATE ipmanager.hosts SET comment = 'x' WHERE hostname = 'other')
         SELECT pg_current_xact_id()::text",
    )
    .await;
    ok(
        &client,
        &report_sql(
            "wants-moved",
            true,
            &format!("ARRAY[{moved}]::bigint[]"),
            false,
        ),
    )
    .await;
    assert!(applied(&client, &later).await[4].2);
    assert!(!applied(&client, &xid).await[4].2);
}

/// A connection LISTENing on `channel`; its notifications' payloads arrive on the receiver.
async fn listener(url: &str, channel: &str) -> (Client, mpsc::UnboundedReceiver<String>) {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    tokio::spawn(async move {
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                if tx.send(n.payload().to_owned()).is_err() {
                    break;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .unwrap();
    (client, rx)
}

#[tokio::test]
async fn request_compaction_notifies_the_agents_and_is_for_admins() {
    let db = TestDb::new().await;
    let logins = LoginRoles::create(
        &db,
        &[("agent", "ipmanager_agent"), ("admin", "ipmanager_admin")],
    )
    .await;
    let agent_url = logins.url(&db, &logins.names[0]);
    let (_listening, mut requests) = listener(&agent_url, ipmanager::db::COMPACT_CHANNEL).await;
    let admin = common::connect(&logins.url(&db, &logins.names[1])).await;

    let before: SystemTime = scalar(&admin, "SELECT now()").await;
    let requested: SystemTime = scalar(&admin, "SELECT ipmanager.request_compaction()").await;
    assert!(requested >= before);
    let payload = tokio::time::timeout(DEADLINE, requests.recv())
        .await
        .expect("the request reaches the listening agent")
        .unwrap();
    assert_eq!(payload, "");

    let agent = common::connect(&agent_url).await;
    let (code, message) = failure(&agent, "SELECT ipmanager.request_compaction()").await;
    assert_eq!(code, "42501", "{message}");
    drop((agent, admin, logins));
}

/// Plays an agent that answers compaction requests: on each notification it reports a
/// compaction, as a real agent does once it has compacted.
async fn answering_agent(url: &str, name: &'static str) -> tokio::task::JoinHandle<()> {
    let (client, mut requests) = listener(url, ipmanager::db::COMPACT_CHANNEL).await;
    ok(&client, &report_sql(name, true, "NULL", false)).await;
    tokio::spawn(async move {
        while requests.recv().await.is_some() {
            ok(&client, &report_sql(name, false, "NULL", true)).await;
        }
    })
}

/// Runs the binary against `db` off the runtime, so that the test's own agents keep answering.
async fn run(db: &TestDb, args: &'static [&'static str]) -> std::process::Output {
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || ipmanager(args, &[("IPMANAGER_DATABASE_URL", &url)]))
        .await
        .unwrap()
}

#[tokio::test]
async fn compact_with_no_live_agent_says_so_and_succeeds() {
    let db = TestDb::new().await;
    let out = run(&db, &["compact"]).await;
    assert_exit(&out, 0, "compact without agents");
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out)
            .contains("no agent that compacts on request is alive, so nothing was compacted"),
        "{}",
        stderr(&out)
    );

    // One agent stopped reporting, one is older than compaction requests: neither is waited
    // for, and both are named.
    let client = db.client().await;
    ok(
        &client,
        "SELECT ipmanager.agent_report('stopped', 'in_sync', '1 millisecond', NULL, NULL, NULL,
             NULL, NULL, NULL, NULL, NULL, NULL, 'sites', 'incremental');
         SELECT ipmanager.agent_report('old', 'in_sync', '1 hour', NULL, NULL, NULL, NULL, NULL,
             NULL, NULL, NULL, NULL, 'sites');",
    )
    .await;
    let stopped = common::wait_until(DEADLINE, || async {
        !scalar::<bool>(
            &client,
            "SELECT alive FROM ipmanager.sync_status WHERE name = 'stopped'",
        )
        .await
    })
    .await;
    assert!(stopped, "an agent with a 1 ms heartbeat stays alive");
    let out = run(&db, &["compact", "--timeout", "1s"]).await;
    assert_exit(&out, 0, "compact with a stopped and an old agent");
    let log = stderr(&out);
    assert!(
        log.contains("not waiting for agents that have not reported recently: stopped"),
        "{log}"
    );
    assert!(
        log.contains("not waiting for agents older than compaction requests (they write whole files, which owe no compaction): old"),
        "{log}"
    );
}

#[tokio::test]
async fn compact_waits_for_every_live_agent_and_names_those_that_did_not() {
    let db = TestDb::new().await;
    let answering = answering_agent(&db.url, "dhcp-a").await;
    let out = run(&db, &["compact"]).await;
    assert_exit(&out, 0, "compact with an agent that answers");
    let text = stdout(&out);
    assert!(
        text.starts_with("dhcp-a: compacted after ") && text.lines().count() == 1,
        "{text}"
    );

    // An agent that never answers (alive, but not listening) is waited for until the timeout,
    // then named with what it is doing; the one that answered is not.
    let client = db.client().await;
    ok(&client, &report_sql("dhcp-b", true, "NULL", false)).await;
    let out = run(&db, &["compact", "--timeout", "1s"]).await;
    assert_exit(&out, 75, "compact with an agent that does not answer");
    assert_eq!(
        error_text(&out),
        "the compaction was requested but not done after 1s: not compacted by dhcp-b (in_sync)"
    );
    assert!(
        stdout(&out).starts_with("dhcp-a: compacted after "),
        "{}",
        stdout(&out)
    );
    answering.abort();
}

#[tokio::test]
async fn status_shows_layouts_hosts_awaiting_compaction_and_the_last_compaction() {
    let db = TestDb::new().await;
    let client = db.client().await;
    ok(
        &client,
        &format!(
            "SELECT ipmanager.agent_report('dhcp-old', 'in_sync', '1 hour', pg_current_snapshot(),
                 'abc', 7, 0, NULL, 'dhcp1.example', '0.0.0-test');
             {};",
            report_sql("dhcp-new", true, "ARRAY[4, 9, 12]::bigint[]", true)
        ),
    )
    .await;
    let env = [("IPMANAGER_DATABASE_URL", db.url.as_str())];
    let out = ipmanager(&["status", "-o", "json"], &env);
    assert_exit(&out, 0, "status -o json");
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json[0]["name"], "dhcp-new", "{json}");
    assert_eq!(json[0]["layout"], "incremental");
    assert_eq!(json[0]["awaiting_compaction"], 3);
    assert!(json[0]["compacted_at"].is_string(), "{json}");
    assert_eq!(json[1]["name"], "dhcp-old");
    assert_eq!(json[1]["layout"], Value::Null);
    assert_eq!(json[1]["awaiting_compaction"], Value::Null);
    assert_eq!(json[1]["compacted_at"], Value::Null);

    // 80 columns: the count of hosts awaiting a compaction is there, the rest when it fits.
    let out = ipmanager(&["status"], &env);
    assert_exit(&out, 0, "status");
    let text = stdout(&out);
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    let column = lines[0]
        .find("TO COMPACT")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(lines[1].find(" 3 ").map(|i| i + 1), Some(column), "{text}");
    assert_eq!(lines[2].chars().nth(column), Some('-'), "{text}");

    let wide = [
        ("IPMANAGER_DATABASE_URL", db.url.as_str()),
        ("COLUMNS", "200"),
    ];
    let text = stdout(&ipmanager(&["status"], &wide));
    for word in ["LAYOUT", "COMPACTED", "incremental"] {
        assert!(text.contains(word), "{word} missing:\n{text}");
    }
}
