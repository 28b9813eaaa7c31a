//! `ipmanager serve` as a real process on a real PostgreSQL, driven through reqwest: every
//! endpoint (each answer validated against the served OpenAPI document), concurrent
//! allocations, `?wait=` with a running agent, the change feed, bad bodies, TLS with a
//! certificate reloaded on SIGHUP, plain HTTP refused off loopback, a graceful stop, and
//! tokens: none, revoked or expired 401, a read token writing 403, the audit naming the owner.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::agent_process::{write_fast_agent_config, AgentProcess};
use common::binary::command;
use common::{free_port, TestDb};
use ipmanager::admin::tokens::{self, Access};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The server process and a client for it.
struct Api {
    process: AgentProcess,
    base: String,
    http: reqwest::Client,
    /// The OpenAPI document it serves, to validate its answers.
    doc: Value,
}

fn write_config(dir: &Path, db: &TestDb, port: u16, extra: &str) -> std::path::PathBuf {
    let config = dir.join("api.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"{}\"\n[agent]\nliveness_interval = \"1s\"\n[api]\nlisten = \"127.0.0.1:{port}\"\nmax_body_bytes = 65536\nrequest_timeout = \"40s\"\n{extra}",
            db.url
        ),
    )
    .unwrap();
    config
}

/// A new token of owner alice, created as the test server's superuser.
async fn token(db: &TestDb, name: &str, access: Access, expires: Option<Duration>) -> String {
    tokens::create(&db.client().await, name, "alice", access, expires)
        .await
        .unwrap()
        .secret
}

/// An HTTP client sending `token` with every request.
fn client_with(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

impl Api {
    async fn start(db: &TestDb, dir: &Path) -> Api {
        let port = free_port();
        let config = write_config(dir, db, port, "");
        let process = AgentProcess::spawn(command(
            &["serve", "--config", config.to_str().unwrap()],
            &[("RUST_LOG", "info")],
        ));
        process.wait_log("API listening on").await;
        let http = client_with(&token(db, "provisioner", Access::Write, None).await);
        let base = format!("http://127.0.0.1:{port}/api/v1");
        let doc = http
            .get(format!("{base}/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Api {
            process,
            base,
            http,
            doc,
        }
    }

    /// Sends a request and checks the answer against the OpenAPI document's schema for its
    /// route, method and status. Returns status, ETag and body.
    async fn call(
        &self,
        method: Method,
        route: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Option<String>, Value) {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let etag = response
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        self.validate(&method, route, status, &value);
        (status, etag, value)
    }

    fn validate(&self, method: &Method, route: &str, status: StatusCode, value: &Value) {
        let operation =
            &self.doc["paths"][format!("/api/v1{route}")][method.as_str().to_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {route} is not in the OpenAPI document"
        );
        let responses = &operation["responses"];
        let response = responses
            .get(status.as_str())
            .or_else(|| responses.get("default"))
            .unwrap_or_else(|| panic!("{method} {route}: status {status} not documented"));
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {route} {status}: no JSON schema"
        );
        let root = json!({"components": self.doc["components"], "allOf": [schema]});
        let validator = jsonschema::validator_for(&root).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {route} {status}: the answer does not fit the OpenAPI document: {errors:#?}\n{value:#}"
        );
    }

    async fn get(&self, route: &str, path: &str) -> (StatusCode, Option<String>, Value) {
        self.call(Method::GET, route, path, None, &[]).await
    }
}

async fn subnet(api: &Api) {
    let (status, _, body) = api
        .call(
            Method::POST,
            "/subnets",
            "/subnets",
            Some(
                json!({"name": "office", "cidr": "10.1.0.0/24", "range_start": "10.1.0.100",
                        "range_end": "10.1.0.199", "gateway": "10.1.0.1"}),
            ),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn every_endpoint_answers_as_its_openapi_document_says() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(&db, dir.path()).await;
    subnet(&api).await;

    // Hosts: with an address, allocated, found by MAC, IP and name.
    let (status, _, printer) = api
        .call(Method::POST, "/hosts", "/hosts", Some(json!({"mac": "52:54:00:12:34:56", "hostname": "printer", "ip": "10.1.0.20", "lease_seconds": "12h", "comment": "2nd floor"})), &[])
        .await;
    assert_eq!(status, StatusCode::CREATED, "{printer}");
    assert_eq!(printer["lease_seconds"], 43200);
    let (status, _, nas) = api
        .call(
            Method::POST,
            "/hosts",
            "/hosts",
            Some(json!({"mac": "5254.0012.3457", "hostname": "nas", "subnet": "office"})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{nas}");
    assert_eq!(
        nas["ip"], "10.1.0.2",
        "the first free address after the gateway"
    );
    for reference in ["52:54:00:12:34:56", "10.1.0.20", "PRINTER", "name:printer"] {
        let (status, etag, body) = api
            .get("/hosts/{host}", &format!("/hosts/{reference}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{reference}: {body}");
        assert_eq!(body["hostname"], "printer");
        assert!(etag.is_some());
    }
    let (status, _, body) = api.get("/hosts/{host}", "/hosts/ghost").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");

    // Lists: filters and paging; field names as `host list -o json`.
    let (_, _, all) = api.get("/hosts", "/hosts").await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    let cli = common::binary::ipmanager(
        &["host", "list", "-o", "json"],
        &[("IPMANAGER_DATABASE_URL", &db.url)],
    );
    let cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(all, cli, "the API lists hosts exactly as host list -o json");
    let (_, _, found) = api.get("/hosts", "/hosts?search=print&subnet=office").await;
    assert_eq!(found.as_array().unwrap().len(), 1);
    let (_, _, page) = api.get("/hosts", "/hosts?limit=1&offset=1").await;
    assert_eq!(page[0]["hostname"], "printer");
    let (status, _, _) = api.get("/hosts", "/hosts?site=nowhere").await;
    assert_eq!(status, StatusCode::OK);

    // PATCH with If-Match; a stale ETag is 412 and changes nothing.
    let (_, etag, _) = api.get("/hosts/{host}", "/hosts/printer").await;
    let etag = etag.unwrap();
    let (status, new_etag, body) = api
        .call(
            Method::PATCH,
            "/hosts/{host}",
            "/hosts/printer",
            Some(json!({"comment": null, "aliases": ["laser"]})),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["aliases"], json!(["laser"]));
    assert_ne!(new_etag.as_deref(), Some(etag.as_str()));
    let (status, _, body) = api
        .call(
            Method::PATCH,
            "/hosts/{host}",
            "/hosts/printer",
            Some(json!({"hostname": "lost"})),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    let (status, _, body) = api
        .call(
            Method::DELETE,
            "/hosts/{host}",
            "/hosts/printer",
            None,
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    let (status, _, _) = api.get("/hosts/{host}", "/hosts/printer").await;
    assert_eq!(status, StatusCode::OK, "a stale delete removes nothing");

    // Duplicates are 409 naming the column in the database's words; rules broken 422.
    let (status, _, body) = api
        .call(
            Method::POST,
            "/hosts",
            "/hosts",
            Some(json!({"mac": "52:54:00:00:00:09", "hostname": "printer", "subnet": "office"})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["field"], "hosts.hostname");
    let (status, _, body) = api
        .call(
            Method::POST,
            "/hosts",
            "/hosts",
            Some(json!({"hostname": "far", "ip": "192.0.2.9"})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // Subnets: list with utilisation as `subnet list -o json`, show, update, delete.
    let (_, _, subnets) = api.get("/subnets", "/subnets").await;
    let cli = common::binary::ipmanager(
        &["subnet", "list", "-o", "json"],
        &[("IPMANAGER_DATABASE_URL", &db.url)],
    );
    assert_eq!(
        subnets,
        serde_json::from_slice::<Value>(&cli.stdout).unwrap()
    );
    assert_eq!(subnets[0]["usage"]["reservations"], 2);
    let (status, etag, _) = api.get("/subnets/{subnet}", "/subnets/10.1.0.0%2F24").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = api
        .call(
            Method::PATCH,
            "/subnets/{subnet}",
            "/subnets/office",
            Some(json!({"domain": "office.example", "lease_seconds": 3600})),
            &[("if-match", etag.as_deref().unwrap())],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["domain"], "office.example");
    let (status, _, body) = api
        .call(
            Method::DELETE,
            "/subnets/{subnet}",
            "/subnets/office",
            None,
            &[],
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "reservations stay unless cascade: {body}"
    );

    // Sites and profiles, through the API as with `site` and `profile`.
    let (status, _, body) = api
        .call(
            Method::POST,
            "/sites",
            "/sites",
            Some(json!({"name": "berlin", "comment": "HQ"})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _, body) = api
        .call(
            Method::POST,
            "/profiles",
            "/profiles",
            Some(json!({"name": "pxe", "boot_file": "pxelinux.0", "options": ["mtu=1400"]})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["options"][0]["option"], "mtu");
    let (status, _, body) = api
        .call(
            Method::PATCH,
            "/profiles/{profile}",
            "/profiles/pxe",
            Some(json!({"boot_file_uefi": "grubx64.efi", "unset_options": ["mtu"]})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["options"], json!([]));
    let (status, _, body) = api
        .call(Method::PATCH, "/subnets/{subnet}", "/subnets/office", Some(json!({"site": "berlin", "default_profile": "pxe", "options": ["domain-search=office.example"]})), &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["site"].as_str(), body["default_profile"].as_str()),
        (Some("berlin"), Some("pxe"))
    );
    let (_, _, sites) = api.get("/sites", "/sites").await;
    assert_eq!(sites[0]["subnets"], json!(["office"]));
    let (status, _, _) = api.get("/sites/{site}", "/sites/berlin").await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, in_site) = api.get("/hosts", "/hosts?site=berlin").await;
    assert_eq!(in_site.as_array().unwrap().len(), 2);
    let (status, _, body) = api
        .call(Method::DELETE, "/sites/{site}", "/sites/berlin", None, &[])
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a site with subnets stays: {body}"
    );
    let (_, _, profiles) = api.get("/profiles", "/profiles").await;
    assert_eq!(profiles[0]["default_of"], json!(["office"]));
    let (status, _, _) = api.get("/profiles/{profile}", "/profiles/pxe").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = api.get("/agents", "/agents").await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, log) = api.get("/log", "/log?host=printer&since=1h").await;
    assert!(!log.as_array().unwrap().is_empty());
    let (_, _, changes) = api.get("/changes", "/changes?after=0&limit=2").await;
    assert_eq!(changes.as_array().unwrap().len(), 2);

    // Export and import (dry run, real, rejected: the CLI's report).
    let export = api
        .http
        .get(format!("{}/export?format=ethers", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), StatusCode::OK);
    assert!(export.text().await.unwrap().contains("52:54:00:12:34:57"));
    for (dry_run, input, expected, committed) in [
        (
            "true",
            "dhcp-host=52:54:00:aa:00:01,10.1.0.50,imported\n",
            StatusCode::OK,
            false,
        ),
        (
            "false",
            "dhcp-host=52:54:00:aa:00:01,10.1.0.50,imported\n",
            StatusCode::OK,
            true,
        ),
        (
            "false",
            "dhcp-host=52:54:00:aa:00:02,192.0.2.1,far\n",
            StatusCode::UNPROCESSABLE_ENTITY,
            false,
        ),
    ] {
        let response = api
            .http
            .post(format!(
                "{}/import?format=dnsmasq&dry_run={dry_run}",
                api.base
            ))
            .body(input)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let report: Value = response.json().await.unwrap();
        api.validate(&Method::POST, "/import", status, &report);
        assert_eq!(status, expected, "{report}");
        assert_eq!(report["committed"], committed, "{report}");
    }

    let (status, _, body) = api
        .call(Method::DELETE, "/hosts/{host}", "/hosts/nas", None, &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["hostname"], "nas");
    let (status, _, body) = api
        .call(
            Method::DELETE,
            "/subnets/{subnet}",
            "/subnets/office?cascade=true",
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, _) = api.get("/subnets/{subnet}", "/subnets/office").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Prometheus metrics of the requests, by route pattern and status.
    let metrics = reqwest::get(format!("{}/metrics", api.base.trim_end_matches("/api/v1")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"ipmanager_api_requests_total{method="GET",route="/api/v1/hosts/{host}",status="200"}"#,
        r#"ipmanager_api_requests_total{method="PATCH",route="/api/v1/hosts/{host}",status="412"}"#,
        r#"ipmanager_api_request_duration_seconds_bucket{"#,
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
    assert_eq!(api.process.terminate().await, Some(0), "a graceful stop");
}

#[tokio::test]
async fn twenty_concurrent_allocations_get_twenty_distinct_addresses() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(&db, dir.path()).await;
    subnet(&api).await;
    let requests = (0..20).map(|i| {
        let http = api.http.clone();
        let url = format!("{}/hosts", api.base);
        async move {
            let response = http
                .post(url)
                .json(&json!({"mac": format!("52:54:00:00:01:{i:02x}"), "hostname": format!("vm{i}"), "subnet": "office"}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
            response.json::<Value>().await.unwrap()["ip"].as_str().unwrap().to_owned()
        }
    });
    let mut addresses = futures_util::future::join_all(requests).await;
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 20, "{addresses:?}");
}

#[tokio::test]
async fn a_wait_succeeds_once_the_running_agent_has_applied_the_change() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(&db, dir.path()).await;
    subnet(&api).await;
    let agent_dir = dir.path().join("agent");
    std::fs::create_dir(&agent_dir).unwrap();
    let agent_config = write_fast_agent_config(&agent_dir, &db.url, "dhcp1");
    let agent = AgentProcess::spawn(command(
        &["agent", "--config", agent_config.to_str().unwrap()],
        &[],
    ));
    agent.wait_log("dhcp-hosts").await;
    let (status, _, body) = api
        .call(
            Method::POST,
            "/hosts",
            "/hosts?wait=10s",
            Some(json!({"mac": "52:54:00:00:02:01", "hostname": "waited", "subnet": "office"})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let hosts = std::fs::read_to_string(agent_dir.join("dhcp-hosts")).unwrap();
    assert!(
        hosts.contains("52:54:00:00:02:01"),
        "the answer came after the agent wrote the change: {hosts}"
    );
}

#[tokio::test]
async fn the_change_feed_delivers_a_change_made_in_psql() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(&db, dir.path()).await;
    subnet(&api).await;
    let (_, _, seen) = api.get("/changes", "/changes").await;
    let last = seen.as_array().unwrap().last().unwrap()["id"]
        .as_i64()
        .unwrap();
    let started = Instant::now();
    let poll = {
        let http = api.http.clone();
        let url = format!("{}/changes?after={last}&wait=30s", api.base);
        tokio::spawn(async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    // The poll is in flight (nothing to return yet) before psql changes anything.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !poll.is_finished(),
        "with nothing after {last}, the request waits"
    );
    db.client()
        .await
        .batch_execute("INSERT INTO ipmanager.hosts (mac, ip, hostname) VALUES ('52:54:00:00:03:01', '10.1.0.30', 'from-psql')")
        .await
        .unwrap();
    let entries = poll.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woken by the notification, not the timeout"
    );
    assert_eq!(entries[0]["table_name"], "hosts");
    assert_eq!(entries[0]["new"]["hostname"], "from-psql");
}

#[tokio::test]
async fn bad_bodies_are_400s_naming_the_field_and_change_nothing() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(&db, dir.path()).await;
    subnet(&api).await;
    let oversized = json!({"hostname": "big", "subnet": "office", "comment": "x".repeat(70_000)});
    for (body, field) in [
        (
            json!({"hostname": "a", "subnet": "office", "colour": "red"}),
            Some("colour"),
        ),
        (
            json!({"hostname": "a", "subnet": "office", "enabled": "yes"}),
            Some("enabled"),
        ),
        (
            json!({"hostname": "a", "subnet": "office", "ip": "10.1.0.999"}),
            Some("ip"),
        ),
        (json!({"subnet": "office"}), Some("hostname")),
        (oversized, None),
    ] {
        let (status, _, answer) = api
            .call(Method::POST, "/hosts", "/hosts", Some(body), &[])
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["field"].as_str(), field, "{answer}");
        if let Some(field) = field {
            assert!(
                answer["error"]["message"].as_str().unwrap().contains(field),
                "{answer}"
            );
        }
    }
    let malformed = api
        .http
        .post(format!("{}/hosts", api.base))
        .header("content-type", "application/json")
        .body("{\"hostname\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let (status, _, answer) = api
        .call(
            Method::PATCH,
            "/hosts/{host}",
            "/hosts/nothing",
            Some(json!({"enabled": 1})),
            &[],
        )
        .await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("enabled"))
    );
    let (_, _, hosts) = api.get("/hosts", "/hosts").await;
    assert_eq!(hosts, json!([]), "nothing was half-applied");
}

#[tokio::test]
async fn plain_http_is_refused_off_loopback_unless_allowed() {
    let db = TestDb::empty().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db, free_port(), "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("127.0.0.1", "0.0.0.0");
    std::fs::write(&config, text).unwrap();
    let output = command(&["serve", "--config", config.to_str().unwrap()], &[])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(78),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("api.allow_plain_http"));
}

fn certificate(dir: &Path, name: &str) -> (std::path::PathBuf, reqwest::Certificate) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), name.to_owned()]).unwrap();
    std::fs::write(dir.join("api.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("api.key"), cert.signing_key.serialize_pem()).unwrap();
    (
        dir.join("api.crt"),
        reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap(),
    )
}

#[tokio::test]
async fn tls_certificates_are_reloaded_on_sighup() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_, first) = certificate(dir.path(), "first.test");
    let d = dir.path().display();
    let config = write_config(
        dir.path(),
        &db,
        port,
        &format!("tls_cert = \"{d}/api.crt\"\ntls_key = \"{d}/api.key\"\n"),
    );
    let process = AgentProcess::spawn(command(
        &["serve", "--config", config.to_str().unwrap()],
        &[],
    ));
    process.wait_log("API listening on https://").await;
    let url = format!("https://localhost:{port}/api/v1/openapi.json");
    let trusting = |cert: reqwest::Certificate| {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert)
            .build()
            .unwrap()
    };
    assert_eq!(
        trusting(first.clone())
            .get(&url)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let plain = reqwest::get(format!("http://localhost:{port}/api/v1/openapi.json")).await;
    assert!(
        plain.map(|r| r.status() != StatusCode::OK).unwrap_or(true),
        "no plain HTTP next to TLS"
    );

    let (_, second) = certificate(dir.path(), "second.test");
    nix::sys::signal::kill(process.pid(), nix::sys::signal::Signal::SIGHUP).unwrap();
    process.wait_log("reloaded the TLS certificate").await;
    let answer = trusting(second).get(&url).send().await.unwrap();
    assert_eq!(
        answer.status(),
        StatusCode::OK,
        "the new certificate is served without a restart"
    );
    assert!(
        trusting(first).get(&url).send().await.is_err(),
        "the old one is gone"
    );
}

#[tokio::test]
async fn tokens_decide_who_may_do_what_and_the_audit_names_the_owner() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(&db, dir.path()).await;
    subnet(&api).await;
    let hosts = format!("{}/hosts", api.base);
    let new_host = json!({"mac": "52:54:00:00:04:01", "hostname": "audited", "subnet": "office"});
    let refused = |response: reqwest::Response| async move {
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        api_error(status, &body)
    };

    let anonymous = reqwest::Client::new();
    let (status, code) = refused(anonymous.get(&hosts).send().await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );

    let revoked = token(&db, "old", Access::Write, None).await;
    tokens::revoke(&db.client().await, "old").await.unwrap();
    let (status, _) = refused(client_with(&revoked).get(&hosts).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let expiring = token(&db, "brief", Access::Write, Some(Duration::from_millis(1))).await;
    tokio::time::sleep(Duration::from_millis(5)).await; // past a 1 ms lifetime, not a race
    let (status, _) = refused(client_with(&expiring).get(&hosts).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let reader = client_with(&token(&db, "dashboard", Access::Read, None).await);
    assert_eq!(
        reader.get(&hosts).send().await.unwrap().status(),
        StatusCode::OK
    );
    let (status, code) = refused(reader.post(&hosts).json(&new_host).send().await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );

    let (status, _, body) = api
        .call(Method::POST, "/hosts", "/hosts", Some(new_host), &[])
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, _, log) = api.get("/log", "/log?host=audited").await;
    assert_eq!(log.as_array().unwrap().len(), 1, "{log}");
    assert_eq!(log[0]["api_owner"], "alice");
    assert_eq!(log[0]["api_token"], "provisioner");
}

/// Status and error code of an error answer.
fn api_error(status: StatusCode, body: &Value) -> (StatusCode, String) {
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}
