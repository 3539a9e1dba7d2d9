//! Builds the router and its state, and runs the server until stopped.

use secrecy::ExposeSecret;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::auth::cache::KeyCache;
use crate::config::Config;
use crate::error::RelayError;
use crate::limits::Limits;
use crate::scheduler::Scheduler;
use crate::store::Store;
use crate::upstream::UpstreamClient;
use crate::usage::pricing::PriceTable;
use crate::usage::record::Recorder;

use crate::{observe, relay};

/// How long a stopping relay waits for usage counts still being written.
const USAGE_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);
/// How long it waits for lease releases still under way.
const RELEASE_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);
/// How long answers ended at the close of the grace get to reach their
/// clients before their connections are dropped.
const LAST_WORDS: std::time::Duration = std::time::Duration::from_secs(2);
/// The pause after a failed accept.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);
/// How often an instance checks that Redis answers.
const STORE_WATCH: std::time::Duration = std::time::Duration::from_secs(1);

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
    pub stopping: Stopping,
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    store: Store,
    config: Arc<Config>,
    recorder: Recorder,
    stopping: watch::Sender<bool>,
}

/// Fires when the relay has stopped waiting for running answers (the
/// shutdown grace is over): whatever still streams ends now. Cheap to clone.
#[derive(Clone)]
pub struct Stopping(watch::Receiver<bool>);

impl Stopping {
    /// A signal that never fires, for answers relayed outside a server.
    pub fn never() -> Stopping {
        // No sender: `wait` never resolves.
        let (_, receiver) = watch::channel(false);
        Stopping(receiver)
    }

    /// Resolves once the relay stops waiting; never if it never does.
    pub async fn wait(&mut self) {
        if self.0.wait_for(|stopping| *stopping).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Application {
    /// Binds the listener (port 0 picks a free port) and builds the router.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let config = Arc::new(config);
        if let Some(token) = &config.secrets.admin_token {
            let chars = token.expose_secret().trim().chars().count();
            anyhow::ensure!(
                chars >= crate::admin::api::MIN_TOKEN_CHARS,
                "RELAY_ADMIN_TOKEN has {chars} characters; the admin API needs at least {} \
                 (for example 32 random hex characters)",
                crate::admin::api::MIN_TOKEN_CHARS
            );
        }
        let store = Store::connect(&config.redis)?;
        let prices = match &config.pricing_file {
            Some(path) => PriceTable::load(path)?,
            None => PriceTable::builtin()?,
        };
        let (stopping, stopping_signal) = watch::channel(false);
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
            stopping: Stopping(stopping_signal),
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        Ok(Application {
            listener,
            store: state.store.clone(),
            recorder: state.recorder.clone(),
            router: router(state),
            config,
            stopping,
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
    /// requests (streams included) finish, up to the shutdown grace. Past
    /// it, streams still running end with an `error` event and requests
    /// still waiting are dropped; either way their usage is counted and
    /// their leases released before the process goes.
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            listener,
            router,
            store,
            config,
            recorder,
            stopping,
        } = self;
        let _watch = AbortOnDrop(tokio::spawn(watch_store(store)));
        let server = Arc::new(http_server(
            config.client_timeout,
            config.header_limit_bytes,
        ));
        let (draining, drain_signal) = watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => {
                        // Nagle's algorithm holds small SSE events back
                        // until the peer's delayed ACK (about 40 ms a hop);
                        // streams must not wait for that.
                        let _ = tcp.set_nodelay(true);
                        let server = Arc::clone(&server);
                        let router = router.clone();
                        let drain_signal = drain_signal.clone();
                        connections.spawn(serve_connection(
                            server,
                            tcp,
                            router,
                            drain_signal,
                            config.client_timeout,
                        ));
                    }
                    Err(err) => {
                        // Out of file descriptors, typically: wait for
                        // some to be freed instead of spinning.
                        tracing::warn!(error = %err, "accepting a connection failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                () = &mut stop => break,
            }
        }
        drop(listener);
        let grace = config.shutdown_grace;
        tracing::info!(
            grace_secs = grace.as_secs(),
            "stopping: draining open requests"
        );
        let _ = draining.send(true);
        if tokio::time::timeout(grace, join_all(&mut connections))
            .await
            .is_err()
        {
            tracing::warn!("grace period over; ending the answers still running");
            let _ = stopping.send(true);
            if tokio::time::timeout(LAST_WORDS, join_all(&mut connections))
                .await
                .is_err()
            {
                connections.abort_all();
                join_all(&mut connections).await;
            }
        }
        // The usage and lease releases of the last answers may still be on
        // their way to Redis.
        recorder.drain(USAGE_DRAIN).await;
        crate::limits::lease::drain_releases(RELEASE_DRAIN).await;
        let unwritten = recorder.report_unwritten();
        if unwritten > 0 {
            tracing::error!(unwritten, "stopped with usage counts Redis did not take");
        }
        Ok(())
    }
}

/// The HTTP/1 and HTTP/2 server every connection is served with. A client
/// gets `client_timeout` to send its request's headers (a connection that
/// trickles them would otherwise hold its socket for ever). Both protocols
/// accept headers well past `header_limit`, so that the relay itself, not
/// the protocol layer, refuses them with its 431 envelope: HTTP/2 alone
/// would reset anything over 16 KiB.
fn http_server(
    client_timeout: std::time::Duration,
    header_limit: usize,
) -> ConnectionBuilder<TokioExecutor> {
    let mut server = ConnectionBuilder::new(TokioExecutor::new());
    server
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(client_timeout);
    let h2_headers = header_limit.saturating_mul(4).max(64 * 1024);
    server
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(h2_headers).unwrap_or(u32::MAX));
    server
}

/// Serves one connection until it ends; once `draining` fires, it finishes
/// the request in progress and closes. A connection with no request in
/// progress for `idle` is closed too: one that never sends a byte (or goes
/// quiet between requests) would otherwise hold its socket for ever.
async fn serve_connection(
    server: Arc<ConnectionBuilder<TokioExecutor>>,
    tcp: tokio::net::TcpStream,
    router: Router,
    mut draining: watch::Receiver<bool>,
    idle: std::time::Duration,
) {
    let activity = Arc::new(Activity::new());
    let tracked = Arc::clone(&activity);
    let service = tower::service_fn(move |request: axum::extract::Request<Incoming>| {
        let guard = tracked.start();
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await?;
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                axum::body::Body::new(Tracked {
                    inner: body,
                    _guard: guard,
                })
            }))
        }
    });
    let service = TowerToHyperService::new(service);
    let connection = server.serve_connection_with_upgrades(TokioIo::new(tcp), service);
    tokio::pin!(connection);
    let mut told = false;
    loop {
        let quiet_until = activity.quiet_until(idle);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                return;
            }
            _ = draining.wait_for(|draining| *draining), if !told => {
                told = true;
                connection.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(quiet_until), if !told => {
                if activity.is_quiet(idle) {
                    told = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Requests of one connection in progress (until their answer's body is
/// done), and when the last one ended.
struct Activity {
    in_progress: std::sync::atomic::AtomicUsize,
    last_end: std::sync::Mutex<tokio::time::Instant>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_progress: std::sync::atomic::AtomicUsize::new(0),
            last_end: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    fn start(self: &Arc<Self>) -> InProgress {
        self.in_progress
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InProgress(Arc::clone(self))
    }

    fn last_end(&self) -> tokio::time::Instant {
        *self
            .last_end
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// No request in progress, and none for `idle`.
    fn is_quiet(&self, idle: std::time::Duration) -> bool {
        self.in_progress.load(std::sync::atomic::Ordering::SeqCst) == 0
            && self.last_end().elapsed() >= idle
    }

    /// When to look again whether the connection is quiet.
    fn quiet_until(&self, idle: std::time::Duration) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        if self.in_progress.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            return now + idle;
        }
        (self.last_end() + idle).max(now)
    }
}

/// One request in progress; ends when dropped with its answer's body.
struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        *self
            .0
            .last_end
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = tokio::time::Instant::now();
        self.0
            .in_progress
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// An answer's body that keeps its request counted as in progress.
struct Tracked {
    inner: axum::body::Body,
    _guard: InProgress,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Pings Redis every second, so a connection that died while the relay
/// was idle (Redis restarted behind a proxy that kept the socket open) is
/// found and replaced by this task, not by a user's request; and says in
/// the log when Redis stops and starts answering.
async fn watch_store(store: Store) {
    let mut answering = true;
    let mut ticks = tokio::time::interval(STORE_WATCH);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match store.ping().await {
            Ok(()) if !answering => {
                answering = true;
                tracing::info!("Redis answers again");
            }
            Err(err) if answering => {
                answering = false;
                tracing::warn!(error = %err, "Redis does not answer");
            }
            _ => {}
        }
    }
}

/// A task that ends with its handle.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn join_all(connections: &mut JoinSet<()>) {
    while connections.join_next().await.is_some() {}
}

pub fn router(state: AppState) -> Router {
    let header_limit = middleware::from_fn_with_state(state.clone(), relay::limit_headers);
    let admin = match &state.config.secrets.admin_token {
        Some(token) => crate::admin::api::router(token),
        None => Router::new(),
    };
    Router::new()
        .route("/v1/messages", post(relay::messages))
        .route("/v1/messages/count_tokens", post(relay::count_tokens))
        .route("/v1/models", get(relay::models))
        .route("/relay/key", get(relay::own_key::status))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(admin)
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
