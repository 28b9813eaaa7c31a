//! The database schema (`sql/V1__initial_schema.sql`) against a real PostgreSQL: every integrity
//! rule with one accepted and one rejected case (checking that the message names the column, the
//! value and the rule), change notifications, migrations, roles and privileges.
//!
//! Run with `IPMANAGER_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres
//! cargo test --test schema`. Every test makes its own database.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::sql::{backend_pid, describe, ok, scalar, wait_for_lock_wait};
use common::TestDb;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification};

const SENTINEL_CHANNEL: &str = "ipmanager_test_sentinel";
/// Generous: only reached when something is broken, never waited out by a passing test.
const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A migrated database with one IPv4 subnet `lan` (10.0.0.0/24, id returned) and one IPv6
/// subnet `lan6` (2001:db8::/64).
async fn with_subnets() -> (TestDb, Client, i64, i64) {
    let db = TestDb::new().await;
    let client = db.client().await;
    let lan = subnet_id(
        &client,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lan', '10.0.0.0/24') RETURNING id",
    )
    .await;
    let lan6 = subnet_id(
        &client,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lan6', '2001:db8::/64') RETURNING id",
    )
    .await;
    (db, client, lan, lan6)
}

async fn subnet_id(client: &Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
        .get(0)
}

/// Runs `sql`, which must fail, and returns the error.
async fn fails(client: &Client, sql: &str) -> tokio_postgres::Error {
    match client.batch_execute(sql).await {
        Ok(()) => panic!("expected {sql:?} to be rejected, but it succeeded"),
        Err(e) => e,
    }
}

/// Runs `sql`, which must fail with SQLSTATE `code` and a message containing every needle.
async fn rejected(client: &Client, sql: &str, code: &SqlState, needles: &[&str]) {
    let err = fails(client, sql).await;
    assert_db_error(&err, code, needles);
}

#[track_caller]
fn assert_db_error(err: &tokio_postgres::Error, code: &SqlState, needles: &[&str]) {
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {err}"));
    assert_eq!(
        db.code(),
        code,
        "unexpected SQLSTATE for message {:?}",
        db.message()
    );
    for needle in needles {
        assert!(
            db.message().contains(needle),
            "message {:?} does not contain {needle:?}",
            db.message()
        );
    }
}

/// A duplicate explained by the trigger: SQLSTATE 23505, the unique constraint it stands in
/// for, and exactly `message`.
#[track_caller]
fn assert_duplicate(err: &tokio_postgres::Error, constraint: &str, message: &str) {
    assert_db_error(err, &SqlState::UNIQUE_VIOLATION, &[message]);
    let db = err.as_db_error().unwrap();
    assert_eq!(db.message(), message);
    assert_eq!(db.constraint(), Some(constraint));
}

fn schema_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sql/V1__initial_schema.sql")
}

/// Every file in sql/, in the order refinery applies them.
fn all_migrations() -> Vec<String> {
    let names = std::fs::read_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sql"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect::<Vec<_>>();
    let listed = vec![
        "V1__initial_schema".to_string(),
        "V2__admin".to_string(),
        "V3__hardening".to_string(),
        "V4__sites".to_string(),
        "V5__incremental".to_string(),
        "V6__options".to_string(),
        "V7__clients".to_string(),
        "V8__api".to_string(),
    ];
    let mut on_disk: Vec<String> = names
        .iter()
        .filter_map(|name| name.strip_suffix(".sql").map(str::to_owned))
        .collect();
    on_disk.sort_by_key(|name| {
        name[1..]
            .split("__")
            .next()
            .unwrap()
            .parse::<u32>()
            .unwrap()
    });
    assert_eq!(
        on_disk, listed,
        "a file in sql/ that this test does not know"
    );
    listed
}

// ---------------------------------------------------------------------------------------------
// Migrations
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn migrate_applies_v1_once_then_nothing() {
    let db = TestDb::empty().await;
    let mut client = db.client().await;

    let first = ipmanager::db::migrate(&mut client)
        .await
        .expect("first run");
    assert_eq!(first.applied, all_migrations());

    let second = ipmanager::db::migrate(&mut client)
        .await
        .expect("second run");
    assert!(
        second.applied.is_empty(),
        "second run applied {:?}",
        second.applied
    );
    assert_eq!(
        scalar::<i64>(&client, "SELECT count(*) FROM ipmanager.schema_history").await,
        all_migrations().len() as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_concurrently_on_several_fresh_databases() {
    let mut dbs = Vec::new();
    for _ in 0..6 {
        dbs.push(TestDb::empty().await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for db in &dbs {
        let url = db.url.clone();
        tasks.spawn(async move {
            let mut client = common::connect(&url).await;
            ipmanager::db::migrate(&mut client).await
        });
    }
    while let Some(result) = tasks.join_next().await {
        let report = result
            .expect("task")
            .unwrap_or_else(|e| panic!("concurrent migration failed: {e:?}"));
        assert_eq!(report.applied, all_migrations());
    }
}

/// Drops the roles it names when the test ends, after the databases that reference them
/// (declare it before them so that it drops last).
struct RoleCleanup {
    roles: Vec<String>,
}

impl Drop for RoleCleanup {
    fn drop(&mut self) {
        let roles = std::mem::take(&mut self.roles);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let client = common::connect(&common::server_url()).await;
                for role in roles {
                    let _ = client
                        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// The roles are cluster-wide, and in the other tests they already exist (which exercises the
/// duplicate_object path). To exercise the race of several databases creating them at the same
/// moment, run the file with the role names replaced by fresh ones, in one transaction per
/// database as refinery does. The race is forced rather than hoped for: the first transaction
/// creates the roles and stays open until every other one is blocked on its uncommitted roles,
/// so that they all get unique_violation from pg_authid's index when it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn role_creation_tolerates_concurrent_databases() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let suffix = format!("{}_{nanos}", std::process::id());
    let agent = format!("ipmtest_agent_{suffix}");
    let admin = format!("ipmtest_admin_{suffix}");
    let _cleanup = RoleCleanup {
        roles: vec![agent.clone(), admin.clone()],
    };
    let sql = std::fs::read_to_string(schema_file())
        .unwrap()
        .replace("ipmanager_agent", &agent)
        .replace("ipmanager_admin", &admin);

    let mut dbs = Vec::new();
    for _ in 0..5 {
        dbs.push(TestDb::empty().await);
    }
    let observer = common::connect(&common::server_url()).await;

    let first = common::connect(&dbs[0].url).await;
    ok(&first, "BEGIN").await;
    ok(&first, &sql).await;

    let mut tasks = tokio::task::JoinSet::new();
    let mut pids = Vec::new();
    for db in &dbs[1..] {
        let mut client = common::connect(&db.url).await;
        pids.push(backend_pid(&client).await);
        let sql = sql.clone();
        tasks.spawn(async move {
            let tx = client.transaction().await?;
            tx.batch_execute(&sql).await?;
            tx.commit().await
        });
    }
    for pid in pids {
        wait_for_lock_wait(&observer, pid).await;
    }
    ok(&first, "COMMIT").await;
    while let Some(result) = tasks.join_next().await {
        if let Err(e) = result.expect("task") {
            panic!("concurrent schema creation failed: {}", describe(&e));
        }
    }
    let n: i64 = observer
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname IN ($1, $2) AND NOT rolcanlogin",
            &[&agent, &admin],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "both roles exist, as NOLOGIN");
    drop(first);
    drop(dbs);
}

/// Only the very first migration in a cluster creates the roles; later ones must work for a
/// database owner without CREATEROLE (the roles exist already, made by the other tests' runs).
#[tokio::test]
async fn migrate_as_database_owner_without_createrole() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let owner = format!("ipmtest_owner_{}_{nanos}", std::process::id());
    let _cleanup = RoleCleanup {
        roles: vec![owner.clone()],
    };
    let db = TestDb::empty().await;
    let superuser = common::connect(&common::server_url()).await;
    ok(
        &superuser,
        "DO $$ BEGIN CREATE ROLE ipmanager_agent NOLOGIN; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$; \
         DO $$ BEGIN CREATE ROLE ipmanager_admin NOLOGIN; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
    )
    .await;
    ok(
        &superuser,
        &format!(
            "CREATE ROLE {owner} LOGIN NOSUPERUSER NOCREATEROLE; \
             ALTER DATABASE {} OWNER TO {owner}",
            db.name
        ),
    )
    .await;

    let mut config: tokio_postgres::Config = db.url.parse().unwrap();
    config.user(&owner);
    let (mut client, connection) = config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    let report = ipmanager::db::migrate(&mut client)
        .await
        .unwrap_or_else(|e| panic!("migration by the database owner failed: {e:?}"));
    assert_eq!(report.applied, all_migrations());
    drop(client);
    drop(db);
}

#[tokio::test]
async fn plain_psql_applies_the_files_to_an_empty_database() {
    let db = TestDb::empty().await;
    let sql = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sql");
    let output = match std::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .args(
            all_migrations()
                .iter()
                .flat_map(|name| ["-f".into(), sql.join(format!("{name}.sql"))]),
        )
        .arg(&db.url)
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "!!!!!!!! SKIPPED plain_psql_applies_the_files_to_an_empty_database: psql is not \
                 on PATH !!!!!!!!"
            );
            return;
        }
        Err(e) => panic!("cannot run psql: {e}"),
    };
    assert!(
        output.status.success(),
        "psql failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let client = db.client().await;
    ok(
        &client,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lan', '10.0.0.0/24')",
    )
    .await;
    ok(&client, "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:01', '10.0.0.5', 'pc')").await;
    // V2 is there too: allocation and the audit log work.
    assert_eq!(
        scalar::<String>(
            &client,
            "SELECT host(ip) FROM ipmanager.allocate_host('02:00:00:00:00:02', 'pc2', 'lan')"
        )
        .await,
        "10.0.0.1"
    );
    assert_eq!(
        scalar::<i64>(&client, "SELECT count(*) FROM ipmanager.audit_log").await,
        3
    );
    // And the later files: V5's compaction request.
    assert!(scalar::<bool>(&client, "SELECT ipmanager.request_compaction() <= now()").await);
}

#[tokio::test]
async fn every_table_and_column_has_a_comment() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let missing: Vec<String> = client
        .query(
            "SELECT c.relname || coalesce('.' || a.attname, '') \
             FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             WHERE n.nspname = 'ipmanager' AND c.relname IN ('subnets', 'hosts') \
               AND (obj_description(c.oid, 'pg_class') IS NULL \
                    OR col_description(c.oid, a.attnum) IS NULL)",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(missing.is_empty(), "without COMMENT: {missing:?}");
}

// ---------------------------------------------------------------------------------------------
// Subnets
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn ipv6_subnets_are_ones_dnsmasq_can_serve() {
    let db = TestDb::new().await;
    let client = db.client().await;
    ok(
        &client,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('v6', '2001:db8:1::/64'), ('v6small', '2001:db8:2::/112')",
    )
    .await;
    rejected(
        &client,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('v6big', '2001:db8::/48')",
        &SqlState::CHECK_VIOLATION,
        &["subnets.cidr 2001:db8::/48", "at least /64"],
    )
    .await;
    rejected(
        &client,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('v6zero', '::100/120')",
        &SqlState::CHECK_VIOLATION,
        &["subnets.cidr ::100/120", "lies in ::/64", "wildcard"],
    )
    .await;
}

#[tokio::test]
async fn subnet_name_rule() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let long_ok = "n".repeat(63);
    ok(&client, &format!(
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('Lan-1_a.b', '10.0.0.0/24'), ('{long_ok}', '10.0.1.0/24'), ('9x', '10.0.2.0/24')"
    ))
    .await;

    let long_bad = "n".repeat(64);
    for bad in [
        "bad name",
        "-lead",
        "_lead",
        ".lead",
        "",
        "ä",
        "a,b",
        long_bad.as_str(),
    ] {
        rejected(
            &client,
            &format!("INSERT INTO ipmanager.subnets (name, cidr) VALUES ('{bad}', '10.9.0.0/24')"),
            &SqlState::CHECK_VIOLATION,
            &[
                "subnets.name",
                &format!("'{bad}'"),
                "not a valid subnet name",
                "1 to 63 letters, digits",
            ],
        )
        .await;
    }
    // Updates are checked too.
    rejected(
        &client,
        "UPDATE ipmanager.subnets SET name = 'no spaces' WHERE name = '9x'",
        &SqlState::CHECK_VIOLATION,
        &["subnets.name", "'no spaces'", "not a valid subnet name"],
    )
    .await;
}

#[tokio::test]
async fn subnet_name_and_cidr_are_unique() {
    let db = TestDb::new().await;
    let client = db.client().await;
    ok(
        &client,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lan', '10.0.0.0/24')",
    )
    .await;
    let err = fails(
        &client,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lan', '10.0.1.0/24')",
    )
    .await;
    assert_duplicate(
        &err,
        "subnets_name_unique",
        "subnets.name 'lan' is already used (by 10.0.0.0/24): subnet names are unique",
    );
    // Disabled subnets may overlap, but the same CIDR twice is never useful.
    ok(&client, "INSERT INTO ipmanager.subnets (name, cidr, enabled) VALUES ('staged', '10.0.0.0/25', false)").await;
    let err = fails(
        &client,
        "INSERT INTO ipmanager.subnets (name, cidr, enabled) VALUES ('again', '10.0.0.0/24', false)",
    )
    .await;
    assert_duplicate(
        &err,
        "subnets_cidr_unique",
        "subnets.cidr 10.0.0.0/24 already exists (subnet 'lan'): every network is entered once",
    );
    // An enabled duplicate is a duplicate first, not an overlap.
    let err = fails(
        &client,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('again', '10.0.0.0/24')",
    )
    .await;
    assert_duplicate(
        &err,
        "subnets_cidr_unique",
        "subnets.cidr 10.0.0.0/24 already exists (subnet 'lan'): every network is entered once",
    );
    // Updates too; an update keeping its own name is no duplicate.
    let err = fails(
        &client,
        "UPDATE ipmanager.subnets SET name = 'lan' WHERE name = 'staged'",
    )
    .await;
    assert_duplicate(
        &err,
        "subnets_name_unique",
        "subnets.name 'lan' is already used (by 10.0.0.0/24): subnet names are unique",
    );
    ok(
        &client,
        "UPDATE ipmanager.subnets SET name = 'lan', comment = 'x' WHERE name = 'lan'",
    )
    .await;
}

#[tokio::test]
async fn enabled_subnets_must_not_overlap() {
    let db = TestDb::new().await;
    let client = db.client().await;
    ok(&client, "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lan', '10.0.0.0/24'), ('other', '10.0.1.0/24'), ('lan6', '2001:db8::/64')").await;

    // A bigger block around an enabled one.
    rejected(
        &client,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('big', '10.0.0.0/16')",
        &SqlState::EXCLUSION_VIOLATION,
        &[
            "subnets.cidr 10.0.0.0/16",
            "'big'",
            "overlaps enabled subnet 'lan' (10.0.0.0/24)",
            "must not overlap",
            "10.0.0.0/16 contains 10.0.0.0/24",
        ],
    )
    .await;
    // A smaller block inside an enabled one.
    rejected(
        &client,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('small', '10.0.0.128/25')",
        &SqlState::EXCLUSION_VIOLATION,
        &[
            "subnets.cidr 10.0.0.128/25",
            "'small'",
            "overlaps enabled subnet 'lan' (10.0.0.0/24)",
            "10.0.0.0/24 contains 10.0.0.128/25",
        ],
    )
    .await;
    rejected(
        &client,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('v6small', '2001:db8::/80')",
        &SqlState::EXCLUSION_VIOLATION,
        &["overlaps enabled subnet 'lan6'"],
    )
    .await;
    // Changing the CIDR of an enabled subnet into another one.
    rejected(
        &client,
        "UPDATE ipmanager.subnets SET cidr = '10.0.0.0/23' WHERE name = 'other'",
        &SqlState::EXCLUSION_VIOLATION,
        &["'other'", "overlaps enabled subnet 'lan'"],
    )
    .await;

    // A disabled subnet may overlap (staging a renumbering) ...
    ok(
        &client,
        "INSERT INTO ipmanager.subnets (name, cidr, enabled) VALUES ('big', '10.0.0.0/16', false)",
    )
    .await;
    // ... but cannot be enabled while it does ...
    rejected(
        &client,
        "UPDATE ipmanager.subnets SET enabled = true WHERE name = 'big'",
        &SqlState::EXCLUSION_VIOLATION,
        &["'big'", "overlaps enabled subnet"],
    )
    .await;
    // ... and can once the old ones are disabled: the renumbering is done.
    ok(
        &client,
        "UPDATE ipmanager.subnets SET enabled = false WHERE name IN ('lan', 'other')",
    )
    .await;
    ok(
        &client,
        "UPDATE ipmanager.subnets SET enabled = true WHERE name = 'big'",
    )
    .await;
}

/// The trigger cannot see uncommitted rows; the exclusion constraint is what holds when its
/// message is bypassed (here: triggers switched off, as a replica session does).
#[tokio::test]
async fn overlap_exclusion_constraint_is_the_backstop() {
    let db = TestDb::new().await;
    let client = db.client().await;
    ok(
        &client,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lan', '10.0.0.0/24')",
    )
    .await;
    ok(&client, "SET session_replication_role = replica").await;
    let err = fails(
        &client,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('big', '10.0.0.0/16')",
    )
    .await;
    assert_db_error(
        &err,
        &SqlState::EXCLUSION_VIOLATION,
        &["subnets_enabled_no_overlap"],
    );
}

#[tokio::test]
async fn concurrent_overlapping_subnets_cannot_both_commit() {
    let db = TestDb::new().await;
    let first = db.client().await;
    let second = db.client().await;
    let observer = db.client().await;
    let second_pid = backend_pid(&second).await;

    ok(
        &first,
        "BEGIN; INSERT INTO ipmanager.subnets (name, cidr) VALUES ('big', '10.0.0.0/16')",
    )
    .await;
    // The trigger of the second insert cannot see the first one yet; the exclusion constraint
    // makes it wait for the first transaction's outcome.
    let pending = tokio::spawn(async move {
        second
            .batch_execute(
                "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lan', '10.0.1.0/24')",
            )
            .await
    });
    wait_for_lock_wait(&observer, second_pid).await;
    ok(&first, "COMMIT").await;
    let err = pending
        .await
        .unwrap()
        .expect_err("the second overlapping subnet must be rejected");
    assert_db_error(
        &err,
        &SqlState::EXCLUSION_VIOLATION,
        &["subnets_enabled_no_overlap"],
    );
}

#[tokio::test]
async fn subnet_range_rules() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let insert = |range: &str| {
        format!("INSERT INTO ipmanager.subnets (name, cidr, range_start, range_end) VALUES ('lan', '10.0.0.0/24', {range})")
    };

    // Both or neither.
    rejected(
        &client,
        &insert("'10.0.0.100', NULL"),
        &SqlState::CHECK_VIOLATION,
        &[
            "subnets.range_start (10.0.0.100)",
            "subnets.range_end (NULL)",
            "'lan'",
            "must be set together",
        ],
    )
    .await;
    rejected(
        &client,
        &insert("NULL, '10.0.0.200'"),
        &SqlState::CHECK_VIOLATION,
        &[
            "subnets.range_start (NULL)",
            "subnets.range_end (10.0.0.200)",
            "must be set together",
        ],
    )
    .await;
    // Inside the subnet.
    rejected(
        &client,
        &insert("'10.0.1.100', '10.0.1.200'"),
        &SqlState::CHECK_VIOLATION,
        &[
            "subnets.range_start 10.0.1.100",
            "is outside subnet 'lan' (10.0.0.0/24)",
            "must lie inside its subnet",
        ],
    )
    .await;
    rejected(
        &client,
        &insert("'10.0.0.100', '10.0.1.200'"),
        &SqlState::CHECK_VIOLATION,
        &[
            "subnets.range_end 10.0.1.200",
            "is outside subnet 'lan' (10.0.0.0/24)",
        ],
    )
    .await;
    // Same family.
    rejected(
        &client,
        &insert("'2001:db8::1', '2001:db8::9'"),
        &SqlState::CHECK_VIOLATION,
        &[
            "subnets.range_start 2001:db8::1",
            "is an IPv6 address but subnet 'lan' (10.0.0.0/24) is IPv4",
            "never mix",
        ],
    )
    .await;
    // Not the network or broadcast address.
    rejected(
        &client,
        &insert("'10.0.0.0', '10.0.0.200'"),
        &SqlState::CHECK_VIOLATION,
        &[
            "subnets.range_start 10.0.0.0",
            "network address of subnet 'lan'",
        ],
    )
    .await;
    rejected(
        &client,
        &insert("'10.0.0.100', '10.0.0.255'"),
        &SqlState::CHECK_VIOLATION,
        &[
            "subnets.range_end 10.0.0.255",
            "broadcast address of subnet 'lan'",
        ],
    )
    .await;
    // In order.
    rejected(
        &client,
        &insert("'10.0.0.200', '10.0.0.100'"),
        &SqlState::CHECK_VIOLATION,
        &[
            "subnets.range_start 10.0.0.200",
            "after subnets.range_end 10.0.0.100",
            "range_start <= range_end",
        ],
    )
    .await;

    // Accepted, and stored as host addresses whatever netmask was typed.
    ok(&client, &insert("'10.0.0.100/24', '10.0.0.200'")).await;
    assert_eq!(
        scalar::<String>(&client, "SELECT range_start::text || ' ' || range_end::text FROM ipmanager.subnets WHERE name = 'lan'").await,
        "10.0.0.100/32 10.0.0.200/32"
    );
    // A single-address range and no range at all are fine too.
    ok(
        &client,
        "UPDATE ipmanager.subnets SET range_start = '10.0.0.7', range_end = '10.0.0.7'",
    )
    .await;
    ok(
        &client,
        "UPDATE ipmanager.subnets SET range_start = NULL, range_end = NULL",
    )
    .await;
    ok(&client, "INSERT INTO ipmanager.subnets (name, cidr, range_start, range_end) VALUES ('lan6', '2001:db8::/64', '2001:db8::1000', '2001:db8::ffff')").await;
    // Updates are checked too.
    rejected(
        &client,
        "UPDATE ipmanager.subnets SET range_end = '2001:db8:1::1' WHERE name = 'lan6'",
        &SqlState::CHECK_VIOLATION,
        &["subnets.range_end 2001:db8:1::1", "outside subnet 'lan6'"],
    )
    .await;
}

#[tokio::test]
async fn subnet_gateway_rules() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let insert = |gateway: &str| {
        format!("INSERT INTO ipmanager.subnets (name, cidr, gateway) VALUES ('lan', '10.0.0.0/24', '{gateway}')")
    };
    rejected(
        &client,
        &insert("10.0.1.1"),
        &SqlState::CHECK_VIOLATION,
        &[
            "subnets.gateway 10.0.1.1",
            "is outside subnet 'lan' (10.0.0.0/24)",
        ],
    )
    .await;
    rejected(
        &client,
        &insert("10.0.0.0"),
        &SqlState::CHECK_VIOLATION,
        &[
            "subnets.gateway 10.0.0.0",
            "network address of subnet 'lan'",
        ],
    )
    .await;
    rejected(
        &client,
        &insert("10.0.0.255"),
        &SqlState::CHECK_VIOLATION,
        &[
            "subnets.gateway 10.0.0.255",
            "broadcast address of subnet 'lan'",
        ],
    )
    .await;
    rejected(
        &client,
        &insert("fe80::1"),
        &SqlState::CHECK_VIOLATION,
        &[
            "subnets.gateway fe80::1",
            "IPv6 address but subnet 'lan' (10.0.0.0/24) is IPv4",
        ],
    )
    .await;

    ok(&client, &insert("10.0.0.1/24")).await;
    assert_eq!(
        scalar::<String>(
            &client,
            "SELECT gateway::text FROM ipmanager.subnets WHERE name = 'lan'"
        )
        .await,
        "10.0.0.1/32"
    );
    // Point-to-point /31: both addresses are usable (RFC 3021).
    ok(&client, "INSERT INTO ipmanager.subnets (name, cidr, gateway) VALUES ('p2p', '192.168.7.0/31', '192.168.7.0')").await;
}

#[tokio::test]
async fn subnet_domain_rule() {
    let db = TestDb::new().await;
    let client = db.client().await;
    ok(&client, "INSERT INTO ipmanager.subnets (name, cidr, domain) VALUES ('a', '10.0.0.0/24', 'example.com'), ('b', '10.0.1.0/24', NULL)").await;
    for bad in [
        "example.com.",
        "bad_domain",
        "exa mple.com",
        "-x.com",
        "example.123",
    ] {
        rejected(
            &client,
            &format!("UPDATE ipmanager.subnets SET domain = '{bad}' WHERE name = 'b'"),
            &SqlState::CHECK_VIOLATION,
            &[
                "subnets.domain",
                &format!("'{bad}'"),
                "not a valid domain name",
                "RFC 1123",
            ],
        )
        .await;
    }
}

#[tokio::test]
async fn lease_time_rules() {
    let (_db, client, lan, _) = with_subnets().await;
    for good in [
        "NULL",
        "'2 minutes'",
        "'1 hour'",
        "'10 years'",
        "'1 day 30 seconds'",
    ] {
        ok(
            &client,
            &format!("UPDATE ipmanager.subnets SET lease_time = {good} WHERE name = 'lan'"),
        )
        .await;
        ok(&client, &format!(
            "INSERT INTO ipmanager.hosts (mac, ip, hostname, lease_time) VALUES ('02:00:00:00:00:01', '10.0.0.5', 'pc', {good}); \
             DELETE FROM ipmanager.hosts"
        ))
        .await;
    }
    for (bad, seconds) in [
        ("1 minute", "60"),
        ("119 seconds", "119"),
        ("10 years 1 second", "315576001"),
        ("-5 minutes", "-300"),
        ("150.5 seconds", "150.5"),
    ] {
        rejected(
            &client,
            &format!("UPDATE ipmanager.subnets SET lease_time = '{bad}' WHERE id = {lan}"),
            &SqlState::CHECK_VIOLATION,
            &[
                "subnets.lease_time",
                &format!("({seconds} seconds)"),
                "out of range",
                "whole number of seconds between 2 minutes and 10 years",
            ],
        )
        .await;
        rejected(
            &client,
            &format!("INSERT INTO ipmanager.hosts (mac, ip, hostname, lease_time) VALUES ('02:00:00:00:00:01', '10.0.0.5', 'pc', '{bad}')"),
            &SqlState::CHECK_VIOLATION,
            &["hosts.lease_time", &format!("({seconds} seconds)"), "out of range", "between 2 minutes and 10 years"],
        )
        .await;
    }
}

#[tokio::test]
async fn subnet_cidr_change_keeps_its_hosts_inside() {
    let (_db, client, lan, _) = with_subnets().await;
    ok(&client, "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES \
                 ('02:00:00:00:00:01', '10.0.0.5', 'a'), ('02:00:00:00:00:02', '10.0.0.127', 'b'), \
                 ('02:00:00:00:00:03', '10.0.0.200', 'c'), ('02:00:00:00:00:04', '10.0.0.201', 'd')").await;

    // Narrowing to /25 strands .200 and .201 and makes .127 the broadcast address.
    rejected(
        &client,
        &format!("UPDATE ipmanager.subnets SET cidr = '10.0.0.0/25' WHERE id = {lan}"),
        &SqlState::CHECK_VIOLATION,
        &[
            "subnets.cidr of subnet 'lan'",
            "cannot change from 10.0.0.0/24 to 10.0.0.0/25",
            "3 of its hosts",
            "outside it or on its network/broadcast address",
            "e.g. 10.0.0.127",
        ],
    )
    .await;
    // Moving to an unrelated block strands all four.
    rejected(
        &client,
        &format!("UPDATE ipmanager.subnets SET cidr = '192.168.0.0/24' WHERE id = {lan}"),
        &SqlState::CHECK_VIOLATION,
        &["4 of its hosts", "e.g. 10.0.0.5"],
    )
    .await;
    // Widening keeps them all inside.
    ok(
        &client,
        &format!("UPDATE ipmanager.subnets SET cidr = '10.0.0.0/23' WHERE id = {lan}"),
    )
    .await;
    // Disabling is allowed: its hosts are simply not served.
    ok(
        &client,
        &format!("UPDATE ipmanager.subnets SET enabled = false WHERE id = {lan}"),
    )
    .await;
    // Deleting a subnet that still has hosts is not.
    rejected(
        &client,
        &format!("DELETE FROM ipmanager.subnets WHERE id = {lan}"),
        &SqlState::FOREIGN_KEY_VIOLATION,
        &["hosts_subnet_id_fkey"],
    )
    .await;
    ok(
        &client,
        &format!("DELETE FROM ipmanager.hosts; DELETE FROM ipmanager.subnets WHERE id = {lan}"),
    )
    .await;
}

/// A renumbering and a host write racing each other: whichever commits second sees the first.
#[tokio::test]
async fn concurrent_renumbering_and_host_insert_cannot_strand_a_host() {
    let (db, client, lan, _) = with_subnets().await;
    let observer = db.client().await;

    // Renumbering first: the host insert waits for it, then sees the new CIDR.
    ok(
        &client,
        &format!("BEGIN; UPDATE ipmanager.subnets SET cidr = '10.0.0.0/25' WHERE id = {lan}"),
    )
    .await;
    let writer = db.client().await;
    let writer_pid = backend_pid(&writer).await;
    let pending = tokio::spawn(async move {
        writer
            .batch_execute(&format!(
                "INSERT INTO ipmanager.hosts (subnet_id, mac, ip, hostname) VALUES ({lan}, '02:00:00:00:00:01', '10.0.0.200', 'late')"
            ))
            .await
    });
    wait_for_lock_wait(&observer, writer_pid).await;
    ok(&client, "COMMIT").await;
    let err = pending
        .await
        .unwrap()
        .expect_err("host outside the new CIDR");
    assert_db_error(
        &err,
        &SqlState::CHECK_VIOLATION,
        &["hosts.ip 10.0.0.200", "outside subnet 'lan' (10.0.0.0/25)"],
    );

    // Host first: the renumbering waits for it, then counts it.
    let writer = db.client().await;
    ok(&writer, &format!(
        "BEGIN; INSERT INTO ipmanager.hosts (subnet_id, mac, ip, hostname) VALUES ({lan}, '02:00:00:00:00:01', '10.0.0.100', 'early')"
    ))
    .await;
    let renumberer = db.client().await;
    let renumberer_pid = backend_pid(&renumberer).await;
    let pending = tokio::spawn(async move {
        renumberer
            .batch_execute(&format!(
                "UPDATE ipmanager.subnets SET cidr = '10.0.0.0/26' WHERE id = {lan}"
            ))
            .await
    });
    wait_for_lock_wait(&observer, renumberer_pid).await;
    ok(&writer, "COMMIT").await;
    let err = pending
        .await
        .unwrap()
        .expect_err("renumbering that strands a host");
    assert_db_error(
        &err,
        &SqlState::CHECK_VIOLATION,
        &["1 of its hosts", "e.g. 10.0.0.100"],
    );
}

#[tokio::test]
async fn updated_at_is_maintained() {
    let (_db, client, lan, _) = with_subnets().await;
    ok(&client, &format!(
        "UPDATE ipmanager.subnets SET created_at = '2000-01-01', updated_at = '2000-01-01' WHERE id = {lan}; \
         INSERT INTO ipmanager.hosts (mac, ip, hostname, created_at, updated_at) \
             VALUES ('02:00:00:00:00:01', '10.0.0.5', 'pc', '2000-01-01', '2000-01-01')"
    ))
    .await;
    // Inserts keep what they are given; updates always set updated_at to now().
    assert_eq!(
        scalar::<i64>(
            &client,
            "SELECT count(*) FROM ipmanager.hosts WHERE updated_at = '2000-01-01'"
        )
        .await,
        1
    );
    ok(&client, &format!("UPDATE ipmanager.subnets SET comment = 'x' WHERE id = {lan}; UPDATE ipmanager.hosts SET comment = 'y'")).await;
    for table in ["subnets", "hosts"] {
        assert_eq!(
            scalar::<i64>(&client, &format!(
                "SELECT count(*) FROM ipmanager.{table} \
                 WHERE created_at = '2000-01-01' AND updated_at > now() - interval '1 hour' AND comment IS NOT NULL"
            ))
            .await,
            1,
            "{table}.updated_at"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Hosts
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn host_ip_is_stored_without_netmask() {
    let (_db, client, _, _) = with_subnets().await;
    ok(&client, "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES \
                 ('02:00:00:00:00:01', '10.0.0.5/24', 'a'), ('02:00:00:00:00:02', '2001:db8::5/64', 'b')").await;
    let rows = client
        .query(
            "SELECT ip::text FROM ipmanager.hosts ORDER BY hostname",
            &[],
        )
        .await
        .unwrap();
    let ips: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    assert_eq!(ips, ["10.0.0.5/32", "2001:db8::5/128"]);
    // So the normalised value collides with the same address typed differently.
    rejected(
        &client,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:03', '10.0.0.5/25', 'c')",
        &SqlState::UNIQUE_VIOLATION,
        &["hosts.ip 10.0.0.5 is already reserved"],
    )
    .await;
}

#[tokio::test]
async fn host_subnet_is_filled_in_when_omitted() {
    let (_db, client, lan, lan6) = with_subnets().await;
    // A disabled, more specific subnet is ignored: only enabled subnets are candidates.
    let staged = subnet_id(&client, "INSERT INTO ipmanager.subnets (name, cidr, enabled) VALUES ('staged', '10.0.0.0/28', false) RETURNING id").await;
    let other = subnet_id(
        &client,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('other', '10.1.0.0/16') RETURNING id",
    )
    .await;
    ok(
        &client,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES \
                 ('02:00:00:00:00:01', '10.0.0.5', 'a'), ('02:00:00:00:00:02', '10.1.2.3', 'b'), \
                 ('02:00:00:00:00:03', '2001:db8::5', 'c')",
    )
    .await;
    let rows = client
        .query(
            "SELECT subnet_id FROM ipmanager.hosts ORDER BY hostname",
            &[],
        )
        .await
        .unwrap();
    let subnets: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
    assert_eq!(subnets, [lan, other, lan6]);

    // An explicit subnet, even a disabled one, is kept.
    ok(&client, &format!(
        "INSERT INTO ipmanager.hosts (subnet_id, mac, ip, hostname) VALUES ({staged}, '02:00:00:00:00:04', '10.0.0.6', 'd')"
    ))
    .await;
    assert_eq!(
        scalar::<i64>(
            &client,
            "SELECT subnet_id FROM ipmanager.hosts WHERE hostname = 'd'"
        )
        .await,
        staged
    );

    rejected(
        &client,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:09', '192.168.1.1', 'x')",
        &SqlState::FOREIGN_KEY_VIOLATION,
        &["hosts.ip 192.168.1.1", "is not inside any enabled subnet"],
    )
    .await;
    // Setting subnet_id back to NULL on update picks again.
    ok(
        &client,
        "UPDATE ipmanager.hosts SET subnet_id = NULL, ip = '10.1.9.9' WHERE hostname = 'a'",
    )
    .await;
    assert_eq!(
        scalar::<i64>(
            &client,
            "SELECT subnet_id FROM ipmanager.hosts WHERE hostname = 'a'"
        )
        .await,
        other
    );
    // A subnet that is disabled does not contain anything for this purpose.
    ok(
        &client,
        &format!("UPDATE ipmanager.subnets SET enabled = false WHERE id = {other}"),
    )
    .await;
    rejected(
        &client,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:09', '10.1.7.7', 'x')",
        &SqlState::FOREIGN_KEY_VIOLATION,
        &["hosts.ip 10.1.7.7", "is not inside any enabled subnet"],
    )
    .await;
}

#[tokio::test]
async fn host_subnet_must_exist() {
    let (_db, client, lan, _) = with_subnets().await;
    ok(&client, &format!("INSERT INTO ipmanager.hosts (subnet_id, mac, ip, hostname) VALUES ({lan}, '02:00:00:00:00:01', '10.0.0.5', 'a')")).await;
    rejected(
        &client,
        "INSERT INTO ipmanager.hosts (subnet_id, mac, ip, hostname) VALUES (424242, '02:00:00:00:00:02', '10.0.0.6', 'b')",
        &SqlState::FOREIGN_KEY_VIOLATION,
        &["hosts.subnet_id 424242", "does not exist"],
    )
    .await;
    // A missing IP is reported as such, not as the missing subnet_id it leads to.
    rejected(
        &client,
        "INSERT INTO ipmanager.hosts (mac, hostname) VALUES ('02:00:00:00:00:02', 'b')",
        &SqlState::NOT_NULL_VIOLATION,
        &["hosts.ip is NULL", "needs an IP address"],
    )
    .await;
}

#[tokio::test]
async fn host_ip_must_lie_in_its_subnet() {
    let (_db, client, lan, lan6) = with_subnets().await;
    ok(&client, &format!("INSERT INTO ipmanager.hosts (subnet_id, mac, ip, hostname) VALUES ({lan}, '02:00:00:00:00:01', '10.0.0.5', 'a')")).await;
    rejected(
        &client,
        &format!("INSERT INTO ipmanager.hosts (subnet_id, mac, ip, hostname) VALUES ({lan}, '02:00:00:00:00:02', '10.0.1.5', 'b')"),
        &SqlState::CHECK_VIOLATION,
        &["hosts.ip 10.0.1.5", "is outside subnet 'lan' (10.0.0.0/24)", "must lie inside its subnet"],
    )
    .await;
    // Mixing families is the same rule, with its own wording.
    rejected(
        &client,
        &format!("INSERT INTO ipmanager.hosts (subnet_id, mac, ip, hostname) VALUES ({lan}, '02:00:00:00:00:02', '2001:db8::5', 'b')"),
        &SqlState::CHECK_VIOLATION,
        &["hosts.ip 2001:db8::5", "is an IPv6 address but subnet 'lan' (10.0.0.0/24) is IPv4", "IPv4 and IPv6 never mix"],
    )
    .await;
    rejected(
        &client,
        &format!("INSERT INTO ipmanager.hosts (subnet_id, mac, ip, hostname) VALUES ({lan6}, '02:00:00:00:00:02', '10.0.0.6', 'b')"),
        &SqlState::CHECK_VIOLATION,
        &["hosts.ip 10.0.0.6", "is an IPv4 address but subnet 'lan6' (2001:db8::/64) is IPv6"],
    )
    .await;
    // Updates are checked too: moving the IP out without changing the subnet.
    rejected(
        &client,
        "UPDATE ipmanager.hosts SET ip = '10.0.9.9' WHERE hostname = 'a'",
        &SqlState::CHECK_VIOLATION,
        &["hosts.ip 10.0.9.9", "is outside subnet 'lan'"],
    )
    .await;
}

#[tokio::test]
async fn host_ip_is_not_a_network_or_broadcast_address() {
    let (_db, client, _, _) = with_subnets().await;
    rejected(
        &client,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:01', '10.0.0.0', 'a')",
        &SqlState::CHECK_VIOLATION,
        &["hosts.ip 10.0.0.0", "is the network address of subnet 'lan' (10.0.0.0/24)", "network and broadcast addresses cannot be given"],
    )
    .await;
    rejected(
        &client,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:01', '10.0.0.255', 'a')",
        &SqlState::CHECK_VIOLATION,
        &["hosts.ip 10.0.0.255", "is the broadcast address of subnet 'lan' (10.0.0.0/24)"],
    )
    .await;
    ok(&client, "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:01', '10.0.0.1', 'a'), ('02:00:00:00:00:02', '10.0.0.254', 'b')").await;
    // /31 (RFC 3021) and /32 subnets have no network or broadcast address to avoid.
    ok(&client, "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('p2p', '192.168.7.0/31'), ('single', '192.168.8.1/32')").await;
    ok(&client, "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES \
                 ('02:00:00:00:00:03', '192.168.7.0', 'c'), ('02:00:00:00:00:04', '192.168.7.1', 'd'), \
                 ('02:00:00:00:00:05', '192.168.8.1', 'e')").await;
}

#[tokio::test]
async fn host_ip_is_unique() {
    let (_db, client, _, _) = with_subnets().await;
    ok(&client, "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:01', '10.0.0.5', 'a'), ('02:00:00:00:00:02', '10.0.0.6', 'b')").await;
    let err = fails(&client, "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:03', '10.0.0.5', 'c')").await;
    assert_duplicate(
        &err,
        "hosts_ip_unique",
        "hosts.ip 10.0.0.5 is already reserved (for 'a', 02:00:00:00:00:01): an IP address can \
         have only one reservation",
    );
    // Moving another host onto the address, too; re-saving a host is no duplicate.
    let err = fails(
        &client,
        "UPDATE ipmanager.hosts SET ip = '10.0.0.5' WHERE hostname = 'b'",
    )
    .await;
    assert_duplicate(
        &err,
        "hosts_ip_unique",
        "hosts.ip 10.0.0.5 is already reserved (for 'a', 02:00:00:00:00:01): an IP address can \
         have only one reservation",
    );
    ok(
        &client,
        "UPDATE ipmanager.hosts SET ip = '10.0.0.5', hostname = 'A' WHERE hostname = 'a'",
    )
    .await;
}

/// The unique constraint stays the backstop for a row the trigger cannot see yet.
#[tokio::test]
async fn a_concurrent_duplicate_is_caught_by_the_constraint() {
    let (db, client, _, _) = with_subnets().await;
    let other = db.client().await;
    ok(&other, "BEGIN; INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:01', '10.0.0.5', 'a')").await;
    let pid = common::sql::backend_pid(&client).await;
    let insert = tokio::spawn(async move {
        let result = client
            .batch_execute("INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:02', '10.0.0.5', 'b')")
            .await;
        (client, result)
    });
    common::sql::wait_for_lock_wait(&other, pid).await;
    ok(&other, "COMMIT").await;
    let (_client, result) = insert.await.unwrap();
    let err = result.unwrap_err();
    assert_db_error(&err, &SqlState::UNIQUE_VIOLATION, &["hosts_ip_unique"]);
}

#[tokio::test]
async fn host_mac_is_unique_per_subnet() {
    let (_db, client, _, _) = with_subnets().await;
    ok(
        &client,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('other', '10.0.1.0/24')",
    )
    .await;
    // The same machine in two subnets (here also IPv4 and IPv6) is fine.
    ok(
        &client,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES \
                 ('02:00:00:00:00:01', '10.0.0.5', 'a'), ('02:00:00:00:00:01', '10.0.1.5', 'a'), \
                 ('02:00:00:00:00:01', '2001:db8::5', 'a')",
    )
    .await;
    let err = fails(&client, "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:01', '10.0.0.6', 'b')").await;
    assert_duplicate(
        &err,
        "hosts_subnet_mac_unique",
        "hosts.mac 02:00:00:00:00:01 already has a reservation in subnet 'lan' ('a', 10.0.0.5): a \
         MAC address has at most one reservation per subnet",
    );
}

#[tokio::test]
async fn host_mac_must_be_unicast() {
    let (_db, client, _, _) = with_subnets().await;
    // Globally unique and locally administered unicast addresses.
    ok(&client, "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES \
                 ('00:1a:2b:3c:4d:5e', '10.0.0.5', 'a'), ('02:00:00:00:00:01', '10.0.0.6', 'b'), ('fe:ff:ff:ff:ff:ff', '10.0.0.7', 'c')").await;
    for (mac, kind) in [
        ("01:00:5e:00:00:01", "is a multicast address"),
        ("33:33:00:00:00:01", "is a multicast address"),
        ("ff:ff:ff:ff:ff:ff", "is a broadcast address"),
        ("00:00:00:00:00:00", "is the all-zero address"),
    ] {
        rejected(
            &client,
            &format!(
                "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('{mac}', '10.0.0.9', 'x')"
            ),
            &SqlState::CHECK_VIOLATION,
            &[
                &format!("hosts.mac {mac}"),
                kind,
                "needs the unicast MAC address",
            ],
        )
        .await;
    }
    rejected(
        &client,
        "UPDATE ipmanager.hosts SET mac = 'ff:ff:ff:ff:ff:ff' WHERE hostname = 'a'",
        &SqlState::CHECK_VIOLATION,
        &["hosts.mac ff:ff:ff:ff:ff:ff", "broadcast"],
    )
    .await;
}

/// The one definition of a DNS name, shared by hosts.hostname and subnets.domain.
#[tokio::test]
async fn dns_name_rule() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let label63 = "a".repeat(63);
    let name253 = format!("{label63}.{label63}.{label63}.{}", "b".repeat(61));
    let name254 = format!("{label63}.{label63}.{label63}.{}", "b".repeat(62));
    assert_eq!(name253.len(), 253);

    let valid = [
        "a",
        "pc1",
        "my-host",
        "My-Host",
        "a.b.c",
        "host-01.example.com",
        "1pc",
        "123.example",
        "a--b",
        "xn--bcher-kva.example",
        label63.as_str(),
        name253.as_str(),
    ];
    let label64 = format!("{label63}x");
    let invalid = [
        "",
        "-a",
        "a-",
        "a.-b",
        "a-.b",
        "a..b",
        ".a",
        "a.",
        "a_b",
        "a b",
        " a",
        "a,b",
        "a#b",
        "a\nb",
        "a\n",
        "b\u{e4}r",
        "a/b",
        "a:b",
        "a;b",
        "a*b",
        "10.0.0.7",
        "3600",
        "a.123",
        label64.as_str(),
        name254.as_str(),
    ];
    let check = "SELECT ipmanager.is_valid_dns_name($1)";
    for name in valid {
        let row = client.query_one(check, &[&name]).await.unwrap();
        assert!(row.get::<_, bool>(0), "{name:?} should be valid");
    }
    for name in invalid {
        let row = client.query_one(check, &[&name]).await.unwrap();
        assert!(!row.get::<_, bool>(0), "{name:?} should be invalid");
    }
}

#[tokio::test]
async fn hostname_rule() {
    let (_db, client, _, _) = with_subnets().await;
    ok(&client, "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:01', '10.0.0.5', 'Printer-2.office')").await;
    let insert = "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:02', '10.0.0.6', $1)";
    for bad in [
        "bad_name",
        "with space",
        "a,b",
        "x#y",
        "line\nbreak",
        "trailing.",
        "-lead",
        "b\u{e4}r",
        "10.0.0.7",
    ] {
        let err = client
            .execute(insert, &[&bad])
            .await
            .expect_err(&format!("{bad:?} must be rejected"));
        assert_db_error(
            &err,
            &SqlState::CHECK_VIOLATION,
            &[
                "hosts.hostname",
                &format!("'{bad}'"),
                "is not a valid hostname",
                "letters, digits and inner hyphens",
                "at most 63 characters",
                "RFC 1123",
            ],
        );
    }
    rejected(
        &client,
        "UPDATE ipmanager.hosts SET hostname = 'bad_name'",
        &SqlState::CHECK_VIOLATION,
        &["hosts.hostname 'bad_name' is not a valid hostname"],
    )
    .await;
    // Valid DNS names that dnsmasq would read as a keyword or a lease time.
    for keyword in ["ignore", "Infinite", "12h", "30m"] {
        let err = client
            .execute(insert, &[&keyword])
            .await
            .expect_err(&format!("{keyword:?} must be rejected"));
        assert_db_error(
            &err,
            &SqlState::CHECK_VIOLATION,
            &[
                "hosts.hostname",
                &format!("'{keyword}'"),
                "keyword or lease time",
            ],
        );
    }
    ok(&client, "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:03', '10.0.0.8', 'ignored-box')").await;
}

#[tokio::test]
async fn hostname_is_unique_per_subnet_ignoring_case() {
    let (_db, client, _, _) = with_subnets().await;
    ok(&client, "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES \
                 ('02:00:00:00:00:01', '10.0.0.5', 'pc'), ('02:00:00:00:00:02', '2001:db8::5', 'PC')").await;
    let err = fails(&client, "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:03', '10.0.0.6', 'Pc')").await;
    assert_duplicate(
        &err,
        "hosts_subnet_hostname_unique",
        "hosts.hostname 'Pc' is already used in subnet 'lan' (02:00:00:00:00:01, 10.0.0.5): host \
         names are unique per subnet, ignoring case",
    );
}

// ---------------------------------------------------------------------------------------------
// Change notification
// ---------------------------------------------------------------------------------------------

/// A connection listening on the change and sentinel channels; its notifications arrive on the
/// returned receiver.
async fn listener(url: &str) -> (Client, mpsc::UnboundedReceiver<Notification>) {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("listener connection failed: {e}"),
            }
        }
    });
    client
        .batch_execute(&format!(
            "LISTEN {}; LISTEN {SENTINEL_CHANNEL}",
            ipmanager::db::CHANGES_CHANNEL
        ))
        .await
        .unwrap();
    (client, rx)
}

/// Runs `sql` on `writer`, then a sentinel NOTIFY, and returns the payloads of the change
/// notifications that arrived before the sentinel, sorted.
async fn changes_of(
    writer: &Client,
    rx: &mut mpsc::UnboundedReceiver<Notification>,
    round: &mut u32,
    sql: &str,
) -> Vec<String> {
    *round += 1;
    ok(writer, sql).await;
    ok(writer, &format!("NOTIFY {SENTINEL_CHANNEL}, '{round}'")).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut payloads = Vec::new();
    loop {
        let n = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no sentinel after {sql:?}"))
            .expect("listener task ended");
        match n.channel() {
            SENTINEL_CHANNEL if n.payload() == round.to_string() => break,
            SENTINEL_CHANNEL => panic!("sentinel {} out of order", n.payload()),
            ipmanager::db::CHANGES_CHANNEL => payloads.push(n.payload().to_owned()),
            other => panic!("unexpected channel {other}"),
        }
    }
    payloads.sort();
    payloads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_notification_per_statement() {
    let db = TestDb::new().await;
    let (_listener, mut rx) = listener(&db.url).await;
    let writer = db.client().await;
    let round = &mut 0;
    let one = |table: &str| vec![table.to_string()];

    assert_eq!(
        changes_of(
            &writer,
            &mut rx,
            round,
            "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('big', '10.0.0.0/8')"
        )
        .await,
        one("subnets")
    );
    assert_eq!(
        changes_of(
            &writer,
            &mut rx,
            round,
            "INSERT INTO ipmanager.hosts (mac, ip, hostname) \
             SELECT ('02' || lpad(to_hex(g), 10, '0'))::macaddr, '10.0.0.0'::inet + g, 'h' || g \
             FROM generate_series(1, 100000) AS g"
        )
        .await,
        one("hosts")
    );
    assert_eq!(
        scalar::<i64>(&writer, "SELECT count(*) FROM ipmanager.hosts").await,
        100_000
    );
    assert_eq!(
        changes_of(
            &writer,
            &mut rx,
            round,
            "UPDATE ipmanager.hosts SET comment = 'bulk'"
        )
        .await,
        one("hosts")
    );
    assert_eq!(
        changes_of(
            &writer,
            &mut rx,
            round,
            "UPDATE ipmanager.subnets SET comment = 'x'"
        )
        .await,
        one("subnets")
    );
    // A statement that changes no row still notifies: a spurious wake-up is cheap.
    assert_eq!(
        changes_of(
            &writer,
            &mut rx,
            round,
            "UPDATE ipmanager.hosts SET comment = 'none' WHERE false"
        )
        .await,
        one("hosts")
    );
    assert_eq!(
        changes_of(
            &writer,
            &mut rx,
            round,
            "DELETE FROM ipmanager.hosts WHERE ip < '10.0.200.0'"
        )
        .await,
        one("hosts")
    );
    // hosts can only be truncated together with the aliases (V6) and extra MACs (V7)
    // referencing it: one each.
    assert_eq!(
        changes_of(
            &writer,
            &mut rx,
            round,
            "TRUNCATE ipmanager.hosts, ipmanager.host_aliases, ipmanager.host_macs"
        )
        .await,
        ["host_aliases", "host_macs", "hosts"].map(String::from)
    );
    assert_eq!(
        changes_of(&writer, &mut rx, round, "DELETE FROM ipmanager.subnets").await,
        one("subnets")
    );
    assert_eq!(
        changes_of(
            &writer,
            &mut rx,
            round,
            "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lan', '10.0.0.0/24')"
        )
        .await,
        one("subnets")
    );
    assert_eq!(
        changes_of(&writer, &mut rx, round, "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:01', '10.0.0.5', 'pc')").await,
        one("hosts")
    );
    // subnets can only be truncated together with the tables referencing it: one each.
    assert_eq!(
        changes_of(
            &writer,
            &mut rx,
            round,
            "TRUNCATE ipmanager.hosts, ipmanager.subnets, ipmanager.host_aliases, \
             ipmanager.host_macs, ipmanager.subnet_options"
        )
        .await,
        [
            "host_aliases",
            "host_macs",
            "hosts",
            "subnet_options",
            "subnets"
        ]
        .map(String::from)
        .to_vec()
    );
    // PostgreSQL folds identical notifications of one transaction: one per table.
    assert_eq!(
        changes_of(&writer, &mut rx, round,
            "BEGIN; \
             INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lan', '10.0.0.0/24'); \
             INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:01', '10.0.0.5', 'pc'); \
             INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:02', '10.0.0.6', 'pc2'); \
             COMMIT").await,
        vec!["hosts".to_string(), "subnets".to_string()]
    );
    // A rolled-back statement notifies nobody.
    assert_eq!(
        changes_of(
            &writer,
            &mut rx,
            round,
            "BEGIN; UPDATE ipmanager.hosts SET comment = 'undone'; ROLLBACK"
        )
        .await,
        Vec::<String>::new()
    );
}

// ---------------------------------------------------------------------------------------------
// Roles and privileges
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn agent_reads_only_and_admin_writes() {
    let (_db, client, lan, _) = with_subnets().await;
    ok(&client, "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:01', '10.0.0.5', 'pc')").await;

    ok(&client, "SET ROLE ipmanager_agent").await;
    assert_eq!(
        scalar::<i64>(
            &client,
            "SELECT count(*) FROM ipmanager.hosts h JOIN ipmanager.subnets s ON s.id = h.subnet_id"
        )
        .await,
        1
    );
    ok(
        &client,
        &format!("LISTEN {}", ipmanager::db::CHANGES_CHANNEL),
    )
    .await;
    for sql in [
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:02', '10.0.0.6', 'pc2')",
        "UPDATE ipmanager.hosts SET comment = 'x'",
        "DELETE FROM ipmanager.hosts",
    ] {
        rejected(&client, sql, &SqlState::INSUFFICIENT_PRIVILEGE, &["permission denied", "hosts"]).await;
    }
    for sql in [
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('x', '10.9.0.0/24')",
        "UPDATE ipmanager.subnets SET comment = 'x'",
        "DELETE FROM ipmanager.subnets",
    ] {
        rejected(
            &client,
            sql,
            &SqlState::INSUFFICIENT_PRIVILEGE,
            &["permission denied", "subnets"],
        )
        .await;
    }

    // The admin role can do everything the triggers need: picking the subnet, renumbering
    // (which locks hosts), deleting.
    ok(&client, "RESET ROLE; SET ROLE ipmanager_admin").await;
    ok(&client, "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:02', '10.0.0.6', 'pc2')").await;
    ok(&client, "UPDATE ipmanager.hosts SET comment = 'x'").await;
    ok(
        &client,
        "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('x', '10.9.0.0/24')",
    )
    .await;
    ok(&client, &format!("UPDATE ipmanager.subnets SET cidr = '10.0.0.0/23', lease_time = '1 hour' WHERE id = {lan}")).await;
    ok(
        &client,
        "DELETE FROM ipmanager.hosts WHERE hostname = 'pc2'",
    )
    .await;
    ok(&client, "DELETE FROM ipmanager.subnets WHERE name = 'x'").await;
    rejected(
        &client,
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:00:03', '10.0.0.7', 'bad_name')",
        &SqlState::CHECK_VIOLATION,
        &["hosts.hostname 'bad_name'"],
    )
    .await;
}
