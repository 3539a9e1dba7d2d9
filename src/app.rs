//! Builds the router and its state, and runs the server until stopped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router, middleware};
use serde_json::json;
use tokio::net::TcpListener;

use crate::auth::cache::KeyCache;
use crate::config::Config;
use crate::error::RelayError;
use crate::limits::Limits;
use crate::scheduler::Scheduler;
use crate::store::Store;
use crate::upstream::UpstreamClient;
use crate::usage::pricing::PriceTable;
use crate::usage::record::Recorder;

/// How long a stopping relay waits for usage counts still being written.
const USAGE_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);
use crate::{observe, relay};

/// Shared by every request; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub upstream: UpstreamClient,
    pub recorder: Recorder,
    pub prices: Arc<PriceTable>,
    pub scheduler: Arc<Scheduler>,
    pub keys: Arc<KeyCache>,
    pub limits: Limits,
    /// `None` only when another metrics recorder was installed first.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    config: Arc<Config>,
    recorder: Recorder,
}

impl Application {
    /// Binds the listener (port 0 picks a free port) and builds the router.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let config = Arc::new(config);
        let store = Store::connect(&config.redis)?;
        let prices = match &config.pricing_file {
            Some(path) => PriceTable::load(path)?,
            None => PriceTable::builtin()?,
        };
        let state = AppState {
            recorder: Recorder::new(store.clone(), config.usage_utc_offset),
            scheduler: Arc::new(Scheduler::new(store.clone(), &config)?),
            keys: Arc::new(KeyCache::new(store.clone(), config.limits.key_cache_ttl)),
            limits: Limits::new(store.clone(), &config.limits, config.usage_utc_offset),
            store,
            upstream: UpstreamClient::new(&config.upstream)?,
            prices: Arc::new(prices),
            config: Arc::clone(&config),
            metrics: crate::telemetry::install(),
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        Ok(Application {
            listener,
            recorder: state.recorder.clone(),
            router: router(state),
            config,
        })
    }

    /// The usage recorder this relay writes through.
    pub fn recorder(&self) -> Recorder {
        self.recorder.clone()
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `stop` resolves, then stops accepting and lets running
    /// requests (streams included) finish, up to the shutdown grace.
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let grace = self.config.shutdown_grace;
        let recorder = self.recorder.clone();
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        // Nagle's algorithm holds small SSE events back until the peer's
        // delayed ACK (about 40 ms a hop); streams must not wait for that.
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = axum::serve(listener, self.router).with_graceful_shutdown(async move {
            stop.await;
            let _ = stopping_tx.send(());
        });
        let server = tokio::spawn(async move { server.await });
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => return Ok(result??),
            _ = stopping_rx => {}
        }
        tracing::info!(
            grace_secs = grace.as_secs(),
            "stopping: draining open requests"
        );
        let served = match tokio::time::timeout(grace, &mut server).await {
            Ok(result) => result.map_err(anyhow::Error::from),
            Err(_) => {
                tracing::warn!("grace period over; closing the remaining connections");
                server.abort();
                Ok(Ok(()))
            }
        };
        // The usage of the last answers may still be on its way to Redis.
        recorder.drain(USAGE_DRAIN).await;
        Ok(served??)
    }
}

pub fn router(state: AppState) -> Router {
    let header_limit = middleware::from_fn_with_state(state.clone(), relay::limit_headers);
    Router::new()
        .route("/v1/messages", post(relay::messages))
        .route("/v1/messages/count_tokens", post(relay::count_tokens))
        .route("/v1/models", get(relay::models))
        .route("/relay/key", get(relay::own_key::status))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(header_limit)
        .layer(middleware::from_fn(observe::observe))
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(err) => relay::store_error(err).into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            crate::telemetry::render(handle),
        )
            .into_response(),
        None => axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn not_found(request: Request) -> RelayError {
    RelayError::NotFound {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    }
}

async fn method_not_allowed(request: Request) -> RelayError {
    RelayError::MethodNotAllowed {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
