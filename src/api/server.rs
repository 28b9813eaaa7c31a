//! Running the API: listening with or without TLS (certificates re-read on SIGHUP), request
//! timeout and body limit, systemd notification, and a graceful stop on SIGTERM or SIGINT.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::DefaultBodyLimit;
use axum_server::tls_rustls::RustlsConfig;
use axum_server::Handle;
use tokio::signal::unix::{signal, SignalKind};
use tower_http::timeout::TimeoutLayer;
use tracing::{info, warn};

use super::{changes, router, AppState};
use crate::config::Config;
use crate::notify::Notifier;

/// How long requests in flight may finish after SIGTERM before their connections are closed.
const GRACE: Duration = Duration::from_secs(10);

/// Serves the API until SIGTERM or SIGINT.
pub async fn serve(config: &Config) -> Result<()> {
    let api = &config.api;
    let tls = api.tls()?;
    let connector = config.connector("ipmanager serve")?;
    let state = AppState {
        pool: crate::db::pool_of(connector.clone(), api.pool_size),
        changes: changes::listen(connector, config.agent.liveness_interval),
        max_wait: api.request_timeout.saturating_sub(Duration::from_secs(1)),
        metrics: Arc::new(crate::metrics::ApiMetrics::new()),
    };
    let app = router(state)
        .layer(DefaultBodyLimit::max(api.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            api.request_timeout,
        ));
    let handle = Handle::new();
    tokio::spawn(stop_on_signal(handle.clone()));
    let service = app.into_make_service();
    let server = match tls {
        Some((cert, key)) => {
            let rustls = RustlsConfig::from_config(server_config(cert, key)?);
            tokio::spawn(reload_on_sighup(
                rustls.clone(),
                cert.to_owned(),
                key.to_owned(),
            ));
            let server = axum_server::bind_rustls(api.listen, rustls).handle(handle.clone());
            tokio::spawn(async move { server.serve(service).await })
        }
        None => {
            let server = axum_server::bind(api.listen).handle(handle.clone());
            tokio::spawn(async move { server.serve(service).await })
        }
    };
    let Some(address) = handle.listening().await else {
        return match server.await? {
            Err(error) => Err(error).with_context(|| format!("cannot listen on {}", api.listen)),
            Ok(()) => Ok(()),
        };
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!("API listening on {scheme}://{address}/api/v1");
    let mut notifier = Notifier::from_env();
    notifier.status(&format!("serving {scheme}://{address}/api/v1"));
    notifier.ready();
    if let Some(period) = notifier.watchdog_period() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period / 2);
            loop {
                tick.tick().await;
                notifier.watchdog();
            }
        });
    }
    server.await?.context("the API server failed")?;
    info!("API stopped");
    Ok(())
}

/// Stops accepting on SIGTERM or SIGINT and lets requests in flight finish.
async fn stop_on_signal(handle: Handle<std::net::SocketAddr>) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot watch SIGTERM and SIGINT; stop the API with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    info!("stopping: finishing requests in flight");
    Notifier::from_env().stopping();
    handle.graceful_shutdown(Some(GRACE));
}

/// Re-reads the certificate and key on SIGHUP; a broken pair keeps the old one.
async fn reload_on_sighup(rustls: RustlsConfig, cert: std::path::PathBuf, key: std::path::PathBuf) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        warn!("cannot watch SIGHUP; certificates are read at start only");
        return;
    };
    while hup.recv().await.is_some() {
        match server_config(&cert, &key) {
            Ok(config) => {
                rustls.reload_from_config(config);
                info!("reloaded the TLS certificate {}", cert.display());
            }
            Err(error) => warn!("keeping the old TLS certificate: {error:#}"),
        }
    }
}

/// A rustls server configuration from PEM files, with the ring provider the PostgreSQL
/// connections use.
fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read the certificate {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read the private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and key do not fit together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
