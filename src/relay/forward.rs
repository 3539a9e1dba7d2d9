//! Attempts against accounts, in order, with failover before the first
//! byte reaches the client.

use std::sync::Arc;

use axum::http::{HeaderMap, Method, StatusCode, request::Parts};
use axum::response::Response;
use bytes::Bytes;

use super::body;
use super::meter::{Billing, Meter, UsageSink};
use super::request::MessageRequest;
use crate::app::AppState;
use crate::error::RelayError;
use crate::limits::{KeyLimits, Lease};
use crate::observe::RequestLog;
use crate::scheduler;
use crate::upstream::{SendError, headers};
use crate::usage::tap::UsageTap;

/// Largest upstream error body kept for relaying verbatim.
const ERROR_BODY_CAP: usize = 1024 * 1024;

/// The request as it will be sent to every account tried.
pub struct Outgoing {
    method: Method,
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
    #[expect(dead_code, reason = "model mapping arrives with account management")]
    message: Option<MessageRequest>,
    /// Set when a successful answer is billed as a message.
    bill_to: Option<BillTo>,
    /// The key's concurrency lease, held until the answer is over.
    lease: Option<Lease>,
}

/// The key and model a message answer is counted for.
pub struct BillTo {
    pub key_id: String,
    pub model: String,
    pub limits: Arc<KeyLimits>,
}

impl Outgoing {
    pub fn new(
        state: &AppState,
        parts: &Parts,
        body: Bytes,
        message: Option<MessageRequest>,
        bill_to: Option<BillTo>,
    ) -> Outgoing {
        Outgoing {
            method: parts.method.clone(),
            path_and_query: super::parts_path_and_query(parts),
            headers: headers::request_headers(
                &parts.headers,
                &state.config.upstream.extra_forward_headers,
            ),
            body,
            message,
            bill_to,
            lease: None,
        }
    }

    /// Keeps `lease` until the answer is over: the relayed body's end, or
    /// the end of `forward` when nothing is relayed.
    pub fn hold(&mut self, lease: Option<Lease>) {
        self.lease = lease;
    }
}

/// What an upstream answer means for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Give it to the client as it comes.
    Relay,
    /// The account could not serve it: try the next one.
    NextAccount,
}

fn verdict(status: StatusCode) -> Verdict {
    match status.as_u16() {
        401 | 403 | 429 | 500..=599 => Verdict::NextAccount,
        _ => Verdict::Relay,
    }
}

/// Why the last attempt did not produce an answer to relay.
enum Failure {
    Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    Timeout,
    Unreachable,
}

pub async fn forward(
    state: &AppState,
    log: &Arc<RequestLog>,
    mut outgoing: Outgoing,
) -> Result<Response, RelayError> {
    let accounts = scheduler::candidates(&state.store)
        .await
        .map_err(super::store_error)?;
    let settings = &state.config.upstream;
    let mut last = None;
    for account in accounts.iter().take(settings.max_attempts) {
        let sent = state
            .upstream
            .send(
                &account.target(),
                outgoing.method.clone(),
                &outgoing.path_and_query,
                outgoing.headers.clone(),
                outgoing.body.clone(),
            )
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(err) => {
                log.attempt(&account.id, None);
                tracing::debug!(account_id = %account.id, error = %err, "attempt failed");
                last = Some(match err {
                    SendError::Timeout(_) => Failure::Timeout,
                    SendError::Connect(_) | SendError::Other(_) | SendError::BadUrl(_) => {
                        Failure::Unreachable
                    }
                });
                continue;
            }
        };
        let status = response.status();
        log.attempt(&account.id, Some(status.as_u16()));
        if verdict(status) == Verdict::Relay {
            let billing = outgoing
                .bill_to
                .as_ref()
                .filter(|_| status.is_success())
                .map(|bill_to| -> Box<dyn UsageSink> {
                    Box::new(Billing {
                        recorder: state.recorder.clone(),
                        prices: Arc::clone(&state.prices),
                        key_id: bill_to.key_id.clone(),
                        account_id: account.id.clone(),
                        requested_model: bill_to.model.clone(),
                        key_limits: Arc::clone(&bill_to.limits),
                    })
                });
            let meter = Meter::new(
                UsageTap::for_content_type(content_type(&response)),
                billing,
                Arc::clone(log),
            )
            .holding(outgoing.lease.take());
            return Ok(relay_response(response, state, meter));
        }
        let headers = headers::response_headers(response.headers());
        let body = body::buffer(response, settings.idle_timeout, ERROR_BODY_CAP).await;
        last = Some(Failure::Answer {
            status,
            headers,
            body,
        });
    }
    give_up(last)
}

fn content_type(upstream: &reqwest::Response) -> Option<&str> {
    upstream
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
}

fn relay_response(upstream: reqwest::Response, state: &AppState, meter: Meter) -> Response {
    let headers = headers::response_headers(upstream.headers());
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = upstream.status();
    *response.body_mut() = body::relay(
        upstream.bytes_stream(),
        state.config.upstream.idle_timeout,
        meter,
    );
    *response.headers_mut() = headers;
    response
}

/// Every attempt failed: the last upstream answer verbatim, except that an
/// upstream 401 (about the account's credential, not the user's key)
/// becomes the relay's own 503.
fn give_up(last: Option<Failure>) -> Result<Response, RelayError> {
    match last {
        None => Err(RelayError::NoUpstream {
            retry_after: None,
            upstream_status: None,
        }),
        Some(Failure::Timeout) => Err(RelayError::UpstreamTimeout),
        Some(Failure::Unreachable) => Err(RelayError::UpstreamUnreachable),
        Some(Failure::Answer { status, .. }) if status == StatusCode::UNAUTHORIZED => {
            Err(RelayError::NoUpstream {
                retry_after: None,
                upstream_status: Some(status.as_u16()),
            })
        }
        Some(Failure::Answer {
            status,
            headers,
            body,
        }) => {
            let mut response = Response::new(axum::body::Body::from(body));
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            Ok(response)
        }
    }
}
