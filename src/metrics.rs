//! Prometheus metrics: the agent's ([`AgentMetrics`], served on `[agent] metrics_listen` by
//! [`serve`]) and the API server's requests ([`ApiMetrics`]).
//!
//! Built on `prometheus-client`, the Prometheus project's own Rust client: typed metrics without
//! global state (each registry belongs to one agent or server, so tests can run several in one
//! process) and the OpenMetrics text format Prometheus scrapes. Names follow Prometheus'
//! conventions: `ipmanager_` prefix, base units (`_seconds`), counters ending in `_total`.
//!
//! Counters and histograms are updated as things happen; gauges that describe the present
//! (hosts served, seconds since the last successful sync) are computed at each scrape from the
//! agent's [`Status`], so they cannot go stale.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::agent::{Phase, Status};

/// The `Content-Type` of [`AgentMetrics::render`] and [`ApiMetrics::render`].
pub const CONTENT_TYPE_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, &'static str)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Buckets from 1 ms to about 65 s: a sync or a request takes milliseconds, a stuck one seconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn registry() -> Registry {
    let mut registry = Registry::with_prefix("ipmanager");
    registry.register(
        "build",
        "The running ipmanager's version",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    registry
}

/// The agent's metrics; the agent's loop updates them, [`serve`] shows them.
pub struct AgentMetrics {
    registry: Registry,
    started: Instant,
    syncs: Family<Labels, Counter>,
    sync_duration: Histogram,
    changes: Family<Labels, Counter>,
    activations: Family<Labels, Counter>,
    activation_failures: Family<Labels, Counter>,
    notification_to_disk: Histogram,
    compactions: Counter,
    connected: Gauge,
    in_sync: Gauge,
    hosts: Gauge,
    skipped: Gauge,
    awaiting_compaction: Gauge,
    since_sync: FloatGauge,
    last_sync: FloatGauge,
    notifications: Counter,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    pub fn new() -> AgentMetrics {
        let mut m = AgentMetrics {
            registry: registry(),
            started: Instant::now(),
            syncs: Family::default(),
            sync_duration: latency_histogram(),
            changes: Family::default(),
            activations: Family::default(),
            activation_failures: Family::default(),
            notification_to_disk: latency_histogram(),
            compactions: Counter::default(),
            connected: Gauge::default(),
            in_sync: Gauge::default(),
            hosts: Gauge::default(),
            skipped: Gauge::default(),
            awaiting_compaction: Gauge::default(),
            since_sync: FloatGauge::default(),
            last_sync: FloatGauge::default(),
            notifications: Counter::default(),
        };
        // Every series exists from the start, at 0, so that rate() and increase() see the first
        // failure as a change rather than as a new series.
        for kind in ["reload", "restart"] {
            m.activations.get_or_create(&vec![("kind", kind)]).inc_by(0);
            m.activation_failures
                .get_or_create(&vec![("kind", kind)])
                .inc_by(0);
        }
        for result in ["ok", "error"] {
            m.syncs.get_or_create(&vec![("result", result)]).inc_by(0);
        }
        m.changes_applied(0, 0, 0);
        let r = &mut m.registry;
        r.register(
            "agent_syncs",
            "Syncs (snapshot, render, write, activate) by result: ok or error",
            m.syncs.clone(),
        );
        r.register_with_unit(
            "agent_sync_duration",
            "How long syncs took",
            Unit::Seconds,
            m.sync_duration.clone(),
        );
        r.register(
            "agent_changes_applied",
            "Host reservations put in place, by kind: added, removed or changed",
            m.changes.clone(),
        );
        r.register(
            "agent_activations",
            "dnsmasq activations carried out, by kind: reload (SIGHUP) or restart",
            m.activations.clone(),
        );
        r.register(
            "agent_activation_failures",
            "dnsmasq activations that failed (and are retried), by kind",
            m.activation_failures.clone(),
        );
        r.register_with_unit(
            "agent_notification_to_disk",
            "From a change notification to the files on disk matching the database",
            Unit::Seconds,
            m.notification_to_disk.clone(),
        );
        r.register(
            "agent_compactions",
            "Incremental layout: compactions (every shard re-read by dnsmasq)",
            m.compactions.clone(),
        );
        r.register(
            "agent_database_connected",
            "1 while the agent's LISTEN connection to the database is up, else 0",
            m.connected.clone(),
        );
        r.register(
            "agent_in_sync",
            "1 while the files match the last snapshot and dnsmasq was told (phase in_sync), else 0",
            m.in_sync.clone(),
        );
        r.register(
            "agent_hosts_served",
            "Reservations in the files dnsmasq serves",
            m.hosts.clone(),
        );
        r.register(
            "agent_rows_skipped",
            "Rows not served because they fail validation",
            m.skipped.clone(),
        );
        r.register(
            "agent_hosts_awaiting_compaction",
            "Incremental layout: hosts dnsmasq serves differently from the files until the next \
             compaction",
            m.awaiting_compaction.clone(),
        );
        r.register_with_unit(
            "agent_last_sync_age",
            "Seconds since the files last matched a fresh snapshot with dnsmasq told (since the \
             agent started, before the first)",
            Unit::Seconds,
            m.since_sync.clone(),
        );
        r.register_with_unit(
            "agent_last_sync_timestamp",
            "When the files last matched a fresh snapshot (Unix time; 0: not yet)",
            Unit::Seconds,
            m.last_sync.clone(),
        );
        r.register(
            "agent_notifications",
            "Change notifications received",
            m.notifications.clone(),
        );
        m
    }

    /// A sync (not a retried activation) ended after `took`.
    pub(crate) fn sync_done(&self, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.syncs.get_or_create(&vec![("result", result)]).inc();
        self.sync_duration.observe(took.as_secs_f64());
    }

    pub(crate) fn changes_applied(&self, added: usize, removed: usize, changed: usize) {
        for (kind, n) in [("added", added), ("removed", removed), ("changed", changed)] {
            self.changes
                .get_or_create(&vec![("kind", kind)])
                .inc_by(n as u64);
        }
    }

    pub(crate) fn activation(&self, kind: &'static str, ok: bool) {
        let family = if ok {
            &self.activations
        } else {
            &self.activation_failures
        };
        family.get_or_create(&vec![("kind", kind)]).inc();
    }

    pub(crate) fn compacted(&self) {
        self.compactions.inc();
    }

    pub(crate) fn on_disk_after(&self, since_notification: Duration) {
        self.notification_to_disk
            .observe(since_notification.as_secs_f64());
    }

    pub(crate) fn set_connected(&self, up: bool) {
        self.connected.set(i64::from(up));
    }

    /// The metrics in Prometheus' text format, the gauges taken from `status` now.
    pub fn render(&self, status: &Status) -> String {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.hosts.set(gauge(status.hosts_served));
        self.in_sync.set(i64::from(status.phase == Phase::InSync));
        self.skipped.set(gauge(status.rows_skipped));
        self.awaiting_compaction
            .set(gauge(status.awaiting_compaction.len()));
        // The loop counts notifications in its status; the counter catches up with it.
        let counted = self.notifications.get();
        self.notifications
            .inc_by(status.notifications.saturating_sub(counted));
        let since = match status.last_in_sync {
            Some(at) => SystemTime::now().duration_since(at).unwrap_or_default(),
            None => self.started.elapsed(),
        };
        self.since_sync.set(since.as_secs_f64());
        let last = status
            .last_in_sync
            .and_then(|at| at.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_sync.set(last);
        text(&self.registry)
    }
}

fn text(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, registry);
    out
}

/// A running /metrics endpoint; dropping it stops it.
pub struct MetricsServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `GET /metrics` on `listen` until the returned server is dropped.
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<AgentMetrics>,
    status: watch::Receiver<Status>,
) -> std::io::Result<MetricsServer> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let body = metrics.render(&status.borrow());
            async move { ([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], body) }
        }),
    );
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            warn!(%error, "the metrics endpoint stopped");
        }
    });
    info!(%addr, "serving Prometheus metrics on /metrics");
    Ok(MetricsServer { addr, task })
}

/// The API server's request metrics: count and latency by method, route and status.
pub struct ApiMetrics {
    registry: Registry,
    requests: Family<ApiLabels, Counter>,
    duration: Family<ApiLabels, Histogram, fn() -> Histogram>,
}

type ApiLabels = Vec<(&'static str, String)>;

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiMetrics {
    pub fn new() -> ApiMetrics {
        let mut registry = registry();
        let requests = Family::<ApiLabels, Counter>::default();
        let duration = Family::<ApiLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "api_requests",
            "HTTP API requests by method, route (the pattern, e.g. /api/v1/hosts/{host}) and status",
            requests.clone(),
        );
        registry.register_with_unit(
            "api_request_duration",
            "How long HTTP API requests took, by method, route and status",
            Unit::Seconds,
            duration.clone(),
        );
        ApiMetrics {
            registry,
            requests,
            duration,
        }
    }

    /// One request answered. `route` must be the matched pattern, not the path, so that the
    /// number of series stays bounded.
    pub fn observe(&self, method: &str, route: &str, status: u16, took: Duration) {
        let labels = vec![
            ("method", method.to_owned()),
            ("route", route.to_owned()),
            ("status", status.to_string()),
        ];
        self.requests.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// The metrics in Prometheus' text format (`Content-Type`: [`CONTENT_TYPE_TEXT`]).
    pub fn render(&self) -> String {
        text(&self.registry)
    }
}

/// Axum middleware that observes every request in `metrics` by its matched route pattern
/// (`unmatched` for paths no route matches, so that scanners cannot create series):
/// `router.layer(axum::middleware::from_fn_with_state(metrics, track_requests))`.
pub async fn track_requests(
    State(metrics): State<Arc<ApiMetrics>>,
    route: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    metrics.observe(
        method.as_str(),
        route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_metrics_follow_prometheus_naming() {
        let m = AgentMetrics::new();
        m.sync_done(true, Duration::from_millis(12));
        m.activation("reload", false);
        m.changes_applied(2, 0, 1);
        let text = m.render(&Status {
            hosts_served: 7,
            ..Status::default()
        });
        for line in [
            "ipmanager_agent_syncs_total{result=\"ok\"} 1",
            "ipmanager_agent_sync_duration_seconds_count 1",
            "ipmanager_agent_activation_failures_total{kind=\"reload\"} 1",
            "ipmanager_agent_changes_applied_total{kind=\"added\"} 2",
            "ipmanager_agent_hosts_served 7",
            "ipmanager_build_info{version=",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn api_metrics_count_requests_by_route_and_status() {
        let m = ApiMetrics::new();
        m.observe("GET", "/api/v1/hosts/{host}", 200, Duration::from_millis(3));
        m.observe("GET", "/api/v1/hosts/{host}", 200, Duration::from_millis(4));
        let text = m.render();
        assert!(
            text.contains("ipmanager_api_requests_total{method=\"GET\",route=\"/api/v1/hosts/{host}\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("ipmanager_api_request_duration_seconds_bucket"));
    }

    async fn fetch(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn the_middleware_counts_requests_by_route_pattern_not_path() {
        let metrics = Arc::new(ApiMetrics::new());
        let router = Router::new()
            .route("/api/v1/hosts/{host}", get(|| async { "host" }))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&metrics),
                track_requests,
            ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        assert!(fetch(addr, "/api/v1/hosts/web1")
            .await
            .starts_with("HTTP/1.1 200"));
        fetch(addr, "/api/v1/hosts/web2").await;
        assert!(fetch(addr, "/wp-login.php")
            .await
            .starts_with("HTTP/1.1 404"));
        server.abort();
        let text = metrics.render();
        for series in [
            "ipmanager_api_requests_total{method=\"GET\",route=\"/api/v1/hosts/{host}\",status=\"200\"} 2",
            "ipmanager_api_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1",
        ] {
            assert!(text.contains(series), "{series} missing in\n{text}");
        }
        assert!(!text.contains("web1"));
    }
}
