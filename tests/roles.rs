//! Least privilege, with real login roles: an agent login reads and LISTENs (and the real binary
//! runs with it) but cannot change reservations or the schema; an admin login can change them.

mod common;

use std::process::Command;

use common::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_ipmanager");

/// Login roles for one test, dropped again at the end (roles are cluster-wide).
struct Logins {
    agent: String,
    admin: String,
    server: String,
}

impl Logins {
    async fn create(db: &TestDb) -> Logins {
        let server = common::server_url();
        let logins = Logins {
            agent: format!("{}_agent", db.name),
            admin: format!("{}_admin", db.name),
            server,
        };
        common::connect(&logins.server)
            .await
            .batch_execute(&format!(
                "CREATE ROLE {} LOGIN IN ROLE ipmanager_agent;
                 CREATE ROLE {} LOGIN IN ROLE ipmanager_admin;",
                logins.agent, logins.admin
            ))
            .await
            .unwrap();
        logins
    }

    /// `url` of `db` as `user` (the test server trusts local connections).
    fn url(&self, db: &TestDb, user: &str) -> String {
        db.url.replacen("postgres@", &format!("{user}@"), 1)
    }

    async fn drop_roles(self) {
        let _ = common::connect(&self.server)
            .await
            .batch_execute(&format!(
                "DROP ROLE IF EXISTS {}; DROP ROLE IF EXISTS {};",
                self.agent, self.admin
            ))
            .await;
    }
}

#[tokio::test]
async fn the_agent_login_reads_and_listens_but_cannot_change_anything() {
    let db = TestDb::new().await;
    assert!(
        db.url.contains("postgres@"),
        "the test expects a postgres@ URL"
    );
    let logins = Logins::create(&db).await;
    let agent_url = logins.url(&db, &logins.agent);
    let admin = common::connect(&logins.url(&db, &logins.admin)).await;
    admin
        .batch_execute(
            "INSERT INTO ipmanager.subnets (name, cidr) VALUES ('lab', '192.168.90.0/24');
             INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:90:01', '192.168.90.10', 'cam')",
        )
        .await
        .expect("the admin login changes reservations");

    let agent = common::connect(&agent_url).await;
    agent
        .batch_execute("LISTEN ipmanager_changes")
        .await
        .expect("the agent login may LISTEN");
    let hosts: i64 = agent
        .query_one("SELECT count(*) FROM ipmanager.hosts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(hosts, 1);
    for statement in [
        "INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('02:00:00:00:90:02', '192.168.90.11', 'x')",
        "UPDATE ipmanager.hosts SET hostname = 'y'",
        "DELETE FROM ipmanager.hosts",
        "TRUNCATE ipmanager.hosts",
        "UPDATE ipmanager.subnets SET enabled = false",
        "CREATE TABLE ipmanager.intruder (x int)",
    ] {
        let error = agent
            .batch_execute(statement)
            .await
            .expect_err(&format!("the agent login must not run {statement}"));
        let message = error.as_db_error().unwrap().message().to_owned();
        assert!(message.contains("permission denied"), "{statement}: {message}");
    }

    // The real binary works with the agent login...
    let out = Command::new(BIN)
        .args(["render"])
        .env_clear()
        .env("IPMANAGER_DATABASE_URL", &agent_url)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("02:00:00:00:90:01,192.168.90.10,cam"));
    // ...but cannot change the schema: a clear error and EX_NOPERM.
    db.client()
        .await
        .batch_execute("DELETE FROM ipmanager.schema_history")
        .await
        .unwrap();
    let out = Command::new(BIN)
        .args(["migrate"])
        .env_clear()
        .env("IPMANAGER_DATABASE_URL", &agent_url)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");

    drop(agent);
    drop(admin);
    drop(db);
    logins.drop_roles().await;
}
