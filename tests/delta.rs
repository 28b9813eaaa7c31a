//! Delta reads against a real PostgreSQL: an earlier snapshot patched with the hosts changed
//! since it equals a full read, through random inserts, updates and deletes in several
//! transactions (also concurrent ones that commit out of xid order); a subnet change and a
//! TRUNCATE ask for a full read; a change in another site is not fetched; the agent role may
//! ask for the changed ids.

mod common;

use common::TestDb;
use deadpool_postgres::Pool;
use ipmanager::db::{self, SiteScope, SnapshotAt};
use tokio_postgres::Client;

/// Sorted by id: the renderer sorts, so host order is not part of a snapshot's meaning.
fn normalized(at: &SnapshotAt) -> ipmanager::model::Snapshot {
    let mut snapshot = at.snapshot.clone();
    snapshot.hosts.sort_by_key(|h| h.id);
    snapshot.extras.hosts.sort_by_key(|h| h.host_id);
    snapshot.extras.dns_names.sort_by_key(|n| n.id);
    snapshot
}

/// A small deterministic generator (xorshift), so that a failure names its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

struct Fixture {
    db: TestDb,
    pool: Pool,
    client: Client,
    scope: SiteScope,
    /// The last read, patched by each delta read.
    last: SnapshotAt,
}

impl Fixture {
    /// Sites a (served) and b, a subnet in each, 40 hosts in a and 10 in b.
    async fn new() -> Fixture {
        let db = TestDb::new().await;
        let client = db.client().await;
        client
            .batch_execute(
                "INSERT INTO ipmanager.sites (name) VALUES ('a'), ('b');
                 INSERT INTO ipmanager.subnets (name, cidr, site, domain) VALUES
                     ('na', '10.1.0.0/16', 'a', 'a.lan'), ('nb', '10.2.0.0/16', 'b', 'b.lan');
                 INSERT INTO ipmanager.hosts (mac, ip, hostname)
                 SELECT ('02:00:00:00:01:' || lpad(to_hex(i), 2, '0'))::macaddr,
                        ('10.1.0.' || i)::inet, 'a' || i FROM generate_series(1, 40) i;
                 INSERT INTO ipmanager.hosts (mac, ip, hostname)
                 SELECT ('02:00:00:00:02:' || lpad(to_hex(i), 2, '0'))::macaddr,
                        ('10.2.0.' || i)::inet, 'b' || i FROM generate_series(1, 10) i;
                 INSERT INTO ipmanager.profiles (name, boot_file) VALUES ('pxe', 'pxelinux.0');
                 UPDATE ipmanager.hosts SET profile_id = ipmanager.profile_id('pxe')
                  WHERE hostname IN ('a1', 'a2', 'b1');
                 INSERT INTO ipmanager.hosts (ip, hostname) VALUES ('10.1.0.200', 'vip');",
            )
            .await
            .unwrap();
        let connector = db::connector(&db.url, &Default::default(), "delta-test").unwrap();
        let pool = db::pool(connector);
        let scope = SiteScope {
            sites: Some(vec!["a".to_owned()]),
            names_of_all: false,
        };
        let last = db::take_snapshot_at(&pool, 0, &scope).await.unwrap();
        Fixture {
            db,
            pool,
            client,
            scope,
            last,
        }
    }

    /// A delta read of the last snapshot, checked against a full read; `true` when the delta
    /// read could tell (else the full read becomes the last).
    async fn check(&mut self, what: &str) -> Option<db::DeltaStats> {
        let mut patched = self.last.clone();
        let stats = db::take_delta_at(&self.pool, &mut patched, &self.scope, 1000)
            .await
            .unwrap();
        let full = db::take_snapshot_at(&self.pool, 0, &self.scope)
            .await
            .unwrap();
        match stats {
            Some(_) => {
                assert_eq!(normalized(&patched), normalized(&full), "after {what}");
                assert_eq!(patched.names_only, full.names_only, "after {what}");
                self.last = patched;
            }
            None => self.last = full,
        }
        stats
    }

    async fn served_ids(&self) -> Vec<i64> {
        let rows = self
            .client
            .query(
                "SELECT h.id FROM ipmanager.hosts h JOIN ipmanager.subnets s ON s.id = h.subnet_id
                 WHERE s.site = 'a' ORDER BY h.id",
                &[],
            )
            .await
            .unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    }
}

/// One random change to the served site's hosts, as SQL.
fn random_change(rng: &mut Rng, ids: &[i64], serial: u64) -> String {
    let pick = |rng: &mut Rng| ids[rng.below(ids.len() as u64) as usize];
    match rng.below(8) {
        0 | 1 if !ids.is_empty() => {
            let id = pick(rng);
            format!("UPDATE ipmanager.hosts SET hostname = 'r{serial}' WHERE id = {id}")
        }
        2 if !ids.is_empty() => format!("DELETE FROM ipmanager.hosts WHERE id = {}", pick(rng)),
        3 if !ids.is_empty() => format!(
            "UPDATE ipmanager.hosts SET enabled = NOT enabled WHERE id = {}",
            pick(rng)
        ),
        4 if !ids.is_empty() => format!(
            "UPDATE ipmanager.hosts SET lease_time = '{} minutes' WHERE id = {}",
            2 + serial % 50,
            pick(rng)
        ),
        5 if !ids.is_empty() => format!(
            "UPDATE ipmanager.hosts SET profile_id = CASE WHEN profile_id IS NULL
                 THEN ipmanager.profile_id('pxe') END WHERE id = {}",
            pick(rng)
        ),
        // A reservation becomes a DNS-only name, or a DNS-only name a reservation.
        6 if !ids.is_empty() => format!(
            "UPDATE ipmanager.hosts SET mac = CASE WHEN mac IS NULL
                 THEN '02:00:01:{:02x}:{:02x}:{:02x}'::macaddr END WHERE id = {}",
            serial >> 16 & 0xff,
            serial >> 8 & 0xff,
            serial & 0xff,
            pick(rng)
        ),
        _ => format!(
            "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES
             ('02:00:00:{:02x}:{:02x}:{:02x}', '10.1.{}.{}', 'n{serial}')",
            serial >> 16 & 0xff,
            serial >> 8 & 0xff,
            serial & 0xff,
            1 + serial / 250,
            1 + serial % 250
        ),
    }
}

#[tokio::test]
async fn delta_reads_equal_full_reads_through_random_changes() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let mut f = Fixture::new().await;
    let mut serial = 1000;
    for round in 0..60 {
        // One to three transactions, of one to three statements each.
        for _ in 0..1 + rng.below(3) {
            let ids = f.served_ids().await;
            let statements: Vec<String> = (0..1 + rng.below(3))
                .map(|_| {
                    serial += 1;
                    random_change(&mut rng, &ids, serial)
                })
                .collect();
            let sql = format!("BEGIN; {}; COMMIT;", statements.join("; "));
            f.client.batch_execute(&sql).await.unwrap();
        }
        let stats = f.check(&format!("round {round} (seed {seed})")).await;
        assert!(stats.is_some(), "host changes alone are read as a delta");
    }
}

#[tokio::test]
async fn transactions_committing_out_of_xid_order_are_each_read_once_visible() {
    let mut f = Fixture::new().await;
    let (mut early, mut late) = (f.db.client().await, f.db.client().await);
    let (early, late) = (
        early.transaction().await.unwrap(),
        late.transaction().await.unwrap(),
    );
    // The earlier transaction takes the smaller xid, the later one commits first.
    early
        .batch_execute("UPDATE ipmanager.hosts SET hostname = 'early' WHERE ip = '10.1.0.1'")
        .await
        .unwrap();
    late.batch_execute("UPDATE ipmanager.hosts SET hostname = 'late' WHERE ip = '10.1.0.2'")
        .await
        .unwrap();
    late.commit().await.unwrap();
    // Read while `early` still runs: it is in this snapshot's running list.
    assert_eq!(f.check("the later commit").await.unwrap().changed, 1);
    assert!(f.last.snapshot.hosts.iter().any(|h| h.hostname == "late"));
    assert!(!f.last.snapshot.hosts.iter().any(|h| h.hostname == "early"));
    early.commit().await.unwrap();
    assert_eq!(f.check("the earlier commit").await.unwrap().changed, 1);
    assert!(f.last.snapshot.hosts.iter().any(|h| h.hostname == "early"));
    // Nothing since: an empty delta.
    assert_eq!(f.check("nothing").await.unwrap().changed, 0);
}

#[tokio::test]
async fn subnet_changes_and_truncate_ask_for_a_full_read_and_other_sites_are_not_fetched() {
    let mut f = Fixture::new().await;
    f.client
        .batch_execute("UPDATE ipmanager.hosts SET hostname = 'elsewhere' WHERE ip = '10.2.0.1'")
        .await
        .unwrap();
    let stats = f.check("a change in site b").await.unwrap();
    assert_eq!((stats.changed, stats.fetched), (1, 0));

    for (what, sql) in [
        (
            "a subnet's domain",
            "UPDATE ipmanager.subnets SET domain = 'x.lan' WHERE name = 'na'",
        ),
        (
            "a subnet of the other site",
            "UPDATE ipmanager.subnets SET domain = 'y.lan' WHERE name = 'nb'",
        ),
        (
            "an alias",
            "INSERT INTO ipmanager.host_aliases (host_id, name)
             SELECT id, 'alias1' FROM ipmanager.hosts WHERE hostname = 'a3'",
        ),
        (
            "a profile",
            "UPDATE ipmanager.profiles SET boot_file = 'other.0' WHERE name = 'pxe'",
        ),
        (
            "a subnet's options",
            "SELECT ipmanager.set_subnet_option('na', 'mtu', '1400')",
        ),
        (
            "a TRUNCATE",
            "TRUNCATE ipmanager.hosts, ipmanager.host_aliases, ipmanager.host_macs",
        ),
    ] {
        f.client.batch_execute(sql).await.unwrap();
        assert_eq!(f.check(what).await, None, "{what} needs a full read");
        assert_eq!(f.check(&format!("after {what}")).await.unwrap().changed, 0);
    }
    assert!(f.last.snapshot.hosts.is_empty());

    // A snapshot from another server (or the same one restarted) is never patched.
    f.last.server_started = "2000-01-01 00:00:00+00".to_owned();
    assert_eq!(f.check("a server restart").await, None);
}

#[tokio::test]
async fn the_agent_role_may_ask_for_the_changed_hosts_but_not_read_the_log() {
    let f = Fixture::new().await;
    f.client
        .batch_execute("SET ROLE ipmanager_agent")
        .await
        .unwrap();
    let ids: Option<Vec<i64>> = f
        .client
        .query_one(
            "SELECT ipmanager.hosts_changed_since($1::text::pg_snapshot)",
            &[&f.last.db_snapshot],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ids, Some(vec![]));
    let error = f
        .client
        .batch_execute("SELECT count(*) FROM ipmanager.audit_log")
        .await
        .unwrap_err();
    let message = error.as_db_error().map(|e| e.message().to_owned());
    assert!(
        message
            .as_deref()
            .unwrap_or("")
            .contains("permission denied"),
        "{message:?}"
    );
}
