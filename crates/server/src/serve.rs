//! `serve`: wire the store, runtimes, core and API together, run until
//! SIGTERM/SIGINT, then drain: stop accepting, finish in-flight requests,
//! flush the log batcher, stop the workers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use lambda_api::{AppState, Gate, Services};
use lambda_core::{Config, LanguageTitleParser, LogBatcher, Registry, Sessions};
use tokio::net::TcpListener;

use crate::{access, http_server, runtimes, store, telemetry};

/// How long shutdown waits for queued logs to reach a database that is away.
const LOG_FLUSH_DEADLINE: Duration = Duration::from_secs(30);

pub async fn serve(config: Arc<Config>) -> anyhow::Result<()> {
    let access = access::from_env(&config)?;
    let parser = match &config.runtime_mappings_file {
        Some(path) => LanguageTitleParser::from_file(path).map_err(anyhow::Error::msg)?,
        None => LanguageTitleParser::default(),
    };
    let metrics = telemetry::install_metrics().context("cannot install the metrics recorder")?;
    let store = store::open(&config).await?;
    let runtimes = runtimes::build(&config);
    for (language, status) in runtimes.statuses() {
        match status {
            lambda_runtime::RuntimeStatus::Ready => tracing::info!(%language, "runtime ready"),
            lambda_runtime::RuntimeStatus::Unavailable { reason } => {
                tracing::warn!(%language, %reason, "runtime unavailable")
            }
        }
    }

    let (batcher, batcher_task) = LogBatcher::start(
        store.clone(),
        config.log_queue_capacity,
        config.log_flush_interval,
        config.db_logging_enabled,
    );
    let sessions = Arc::new(Sessions::new(
        store.clone(),
        runtimes.clone(),
        parser.clone(),
        batcher.clone(),
        config.clone(),
    ));
    let registry = Arc::new(Registry::new(
        store.clone(),
        runtimes.clone(),
        parser,
        config.clone(),
    ));
    let gate = Arc::new(Gate {
        authenticator: access.authenticator,
        rate_limiter: access.rate_limiter,
        trusted_proxies: access.trusted_proxies,
        batcher: batcher.clone(),
    });
    let state = AppState::new(Services {
        sessions: sessions.clone(),
        registry,
        store,
        runtimes: runtimes.clone(),
        config: config.clone(),
        metrics: Some(metrics),
        gate: gate.clone(),
    });

    let sweeper = tokio::spawn(sweep_periodically(
        sessions.clone(),
        gate,
        config.session_cleanup_interval,
    ));
    let metrics_server = match std::env::var("METRICS_ADDR")
        .ok()
        .filter(|value| !value.is_empty())
    {
        Some(address) => {
            let address: SocketAddr = address.parse().map_err(|_| {
                anyhow::anyhow!(
                    "invalid configuration: METRICS_ADDR: '{address}' is not a socket address"
                )
            })?;
            let listener = TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on METRICS_ADDR {address}"))?;
            let metrics_app = axum::Router::new()
                .route("/metrics", axum::routing::get(lambda_api::metrics_handler))
                .with_state(state.clone());
            tracing::info!(%address, "metrics listening");
            Some(tokio::spawn(http_server::serve(
                listener,
                metrics_app,
                std::future::pending(),
            )))
        }
        None => None,
    };

    let listener = TcpListener::bind(config.bind_addr)
        .await
        .with_context(|| format!("cannot listen on BIND_ADDR {}", config.bind_addr))?;
    tracing::info!(address = %config.bind_addr, "listening");
    let app = lambda_api::app(state);
    http_server::serve(listener, app, shutdown_signal()).await;

    tracing::info!("draining: flushing request logs and stopping workers");
    sweeper.abort();
    if let Some(server) = metrics_server {
        server.abort();
    }
    let started = Instant::now();
    if tokio::time::timeout(LOG_FLUSH_DEADLINE, sessions.flush_logs())
        .await
        .is_err()
    {
        tracing::error!(
            queued = sessions.batcher().queue_depth(),
            "the database stayed unreachable for {} s during shutdown; queued request logs are lost",
            LOG_FLUSH_DEADLINE.as_secs()
        );
    } else {
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request logs flushed"
        );
    }
    drop(batcher);
    drop(sessions);
    // The task ends once every sender is gone; don't wait on one still held
    // by an in-flight background clone.
    let _ = tokio::time::timeout(Duration::from_secs(5), batcher_task.shutdown()).await;
    runtimes.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn sweep_periodically(sessions: Arc<Sessions>, gate: Arc<Gate>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        match sessions.sweep_expired().await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "expired sessions deleted"),
            Err(error) => tracing::warn!(%error, "could not delete expired sessions"),
        }
        gate.rate_limiter.sweep(Instant::now());
    }
}

async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
