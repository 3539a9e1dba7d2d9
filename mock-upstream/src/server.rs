//! The running server: accept loop, connections and the handle tests hold.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::answer::Answer;
use crate::journal::RecordedRequest;
use crate::profile::{MockConfig, Profile};
use crate::respond::CloseConnection;
use crate::state::State;
use crate::{api, control};

/// A running mock upstream. Dropping it stops the server and drops every open
/// connection, including ones held by `hang`.
pub struct MockUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    // Never sent on: dropping it is the stop signal.
    stop: watch::Sender<()>,
    accept_loop: JoinHandle<()>,
}

impl MockUpstream {
    /// Starts on `127.0.0.1` with a port the system picks.
    pub async fn start(config: MockConfig) -> anyhow::Result<MockUpstream> {
        Self::start_on(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    pub async fn start_on(config: MockConfig, addr: SocketAddr) -> anyhow::Result<MockUpstream> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the mock upstream to {addr}"))?;
        let addr = listener
            .local_addr()
            .context("reading the mock's bound address")?;
        let state = Arc::new(State::new(config.profiles, config.journal_limit));
        let (stop, stopped) = watch::channel(());
        let accept_loop = tokio::spawn(accept_loop(listener, Arc::clone(&state), stopped));
        tracing::debug!(%addr, "mock upstream listening");
        Ok(MockUpstream {
            addr,
            state,
            stop,
            accept_loop,
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every API request received, in order (not the `/__mock/` routes).
    pub fn journal(&self) -> Vec<RecordedRequest> {
        self.state.journal.all()
    }

    pub fn requests_for(&self, credential: &str) -> Vec<RecordedRequest> {
        let mut requests = self.journal();
        requests.retain(|request| request.credential.as_deref() == Some(credential));
        requests
    }

    /// API requests being answered right now: from arrival until the last
    /// bytes of the answer are handed out.
    pub fn in_flight(&self) -> u64 {
        self.state.in_flight.now()
    }

    /// The most API requests ever answered at once.
    pub fn max_in_flight(&self) -> u64 {
        self.state.in_flight.max()
    }

    pub fn clear_journal(&self) {
        self.state.journal.clear();
    }

    /// Queues answers for the credential, as `POST /__mock/scenarios` does.
    pub fn push_answers(&self, credential: &str, answers: Vec<Answer>) {
        self.state.scenarios.push(credential, answers);
    }

    /// How many scripted answers still wait, per credential.
    pub fn pending_answers(&self) -> BTreeMap<String, usize> {
        self.state.scenarios.pending()
    }

    pub fn set_profile(&self, credential: &str, profile: Profile) {
        self.state.set_profile(credential, profile);
    }

    /// Stops the server and waits until it no longer accepts connections.
    pub async fn shutdown(self) {
        drop(self.stop);
        if let Err(error) = self.accept_loop.await {
            tracing::warn!(%error, "mock accept loop ended abnormally");
        }
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, mut stopped: watch::Receiver<()>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => return,
        };
        match accepted {
            Ok((tcp, _)) => serve_connection(tcp, Arc::clone(&state), stopped.clone()),
            Err(error) => {
                // Typically out of file descriptors: retrying at once would spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

fn serve_connection(tcp: TcpStream, state: Arc<State>, mut stopped: watch::Receiver<()>) {
    // Each scripted chunk must leave at once, not wait for Nagle's algorithm.
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY");
    }
    let service = service_fn(move |request| handle(Arc::clone(&state), request));
    // hyper's header read timeout also closes idle keep-alive connections,
    // which would make a relay's pooled connections fail at random.
    let connection = http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(tcp), service);
    tokio::spawn(async move {
        tokio::select! {
            result = connection => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
            }
            _ = stopped.changed() => {}
        }
    });
}

/// An `Err` makes hyper drop the connection without writing anything.
async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Body>, CloseConnection> {
    let (parts, body) = request.into_parts();
    // No size limit: the mock must take whatever a relay forwards.
    let body = axum::body::to_bytes(Body::new(body), usize::MAX)
        .await
        .map_err(|error| {
            tracing::debug!(%error, "request body not received in full");
            CloseConnection
        })?;
    if parts.uri.path().starts_with(control::PREFIX) {
        return Ok(control::handle(&state, &parts, &body));
    }
    api::answer(&state, &parts, body).await
}
