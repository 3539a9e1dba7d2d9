//! Attempts against accounts, in the scheduler's order, with failover
//! before the first byte reaches the client.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use axum::response::Response;
use bytes::Bytes;

use super::body::{self, HeldBody};
use super::meter::{Billing, Meter, UsageSink};
use super::request::{MessageRequest, replace_model};
use crate::app::AppState;
use crate::error::{RelayError, retry_secs};
use crate::limits::{KeyLimits, Lease};
use crate::observe::RequestLog;
use crate::scheduler::{Account, Ask, Binding, Effect, Slot, Verdict, health, session};
use crate::store::KeyRecord;
use crate::upstream::{SendError, headers};
use crate::usage::tap::UsageTap;

/// How much of an upstream error body is read before the verdict (markers
/// sit at its start); a longer one is relayed whole all the same, its rest
/// read from the upstream as the client takes it.
const ERROR_BODY_CAP: usize = 1024 * 1024;

/// The request as it will be sent to every account tried.
pub struct Outgoing {
    method: Method,
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
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

    /// Who a successful answer from `account` is billed to, if anyone.
    fn billing(&self, state: &AppState, account: &Account) -> Option<Box<dyn UsageSink>> {
        let bill_to = self.bill_to.as_ref()?;
        Some(Box::new(Billing {
            recorder: state.recorder.clone(),
            prices: Arc::clone(&state.prices),
            key_id: bill_to.key_id.clone(),
            account_id: account.id.clone(),
            requested_model: bill_to.model.clone(),
            key_limits: Arc::clone(&bill_to.limits),
        }))
    }

    /// What selection needs; `request_id` becomes the account lease of a
    /// Messages request (the one kind held to account limits).
    fn ask<'a>(&'a self, key: &'a KeyRecord, request_id: &'a str) -> Ask<'a> {
        let model = self.message.as_ref().map(|message| message.model.as_str());
        let sticky = self.message.as_ref().and_then(|message| {
            let identity =
                session::identity(message.user_id.as_deref(), &self.headers, &self.body)?;
            Some(session::sticky_name(&key.id, &message.model, &identity))
        });
        Ask {
            binding: Binding::of(key.account.as_deref()),
            model,
            sticky,
            lease: self.bill_to.as_ref().map(|_| request_id),
        }
    }

    /// The body for this account: the model replaced when the account maps
    /// it, every other byte as received.
    fn body_for(&self, account: &Account) -> Bytes {
        let Some(message) = &self.message else {
            return self.body.clone();
        };
        match account.upstream_model(&message.model) {
            Some(upstream) if upstream != message.model => {
                replace_model(&self.body, &message.model_span, upstream)
            }
            _ => self.body.clone(),
        }
    }
}

/// Why an attempt did not produce an answer to relay.
enum Failure {
    Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: HeldBody,
    },
    Timeout,
    Unreachable,
}

/// An answer for the client.
enum Answer {
    Streaming(reqwest::Response),
    Buffered {
        status: StatusCode,
        headers: HeaderMap,
        body: HeldBody,
    },
}

enum Attempt {
    Answered(Answer),
    Failed(Failure, Effect),
}

pub async fn forward(
    state: &AppState,
    log: &Arc<RequestLog>,
    key: &KeyRecord,
    mut outgoing: Outgoing,
) -> Result<Response, RelayError> {
    let key_lease = outgoing.lease.take();
    let scheduler = &state.scheduler;
    let ask = outgoing.ask(key, &log.request_id);
    let member = ask.lease;
    let mut plan = scheduler.plan(&ask).await.map_err(super::store_error)?;
    let candidates: Vec<Arc<Account>> = plan.accounts().to_vec();
    let mut attempts = 0;
    let mut last = None;
    for account in candidates {
        if attempts == state.config.upstream.max_attempts {
            break;
        }
        // An account filled by other requests since the pick is skipped,
        // and the skip costs no attempt.
        let Slot::Free(account_lease) = scheduler.slot(&mut plan, &account, member).await else {
            continue;
        };
        attempts += 1;
        match attempt(state, log, &outgoing, &account).await {
            Attempt::Answered(answer) => {
                scheduler.served(&plan, &account).await;
                let billing = outgoing.billing(state, &account);
                let leases = key_lease.into_iter().chain(account_lease);
                return Ok(respond(answer, state, log, billing, leases));
            }
            Attempt::Failed(failure, effect) => {
                // The failed account's slot is free for others at once.
                drop(account_lease);
                scheduler.apply(&mut plan, &account, &effect).await;
                last = Some(failure);
            }
        }
    }
    give_up(last, plan.retry_after(), state)
}

async fn attempt(
    state: &AppState,
    log: &Arc<RequestLog>,
    outgoing: &Outgoing,
    account: &Account,
) -> Attempt {
    let sent = state
        .upstream
        .send(
            &account.target(),
            outgoing.method.clone(),
            &outgoing.path_and_query,
            outgoing.headers.clone(),
            outgoing.body_for(account),
        )
        .await;
    match sent {
        Ok(response) => {
            log.attempt(&account.id, Some(response.status().as_u16()));
            judge(state, response).await
        }
        Err(error) => {
            log.attempt(&account.id, None);
            tracing::debug!(account_id = %account.id, %error, "attempt failed");
            let effect = health::judge_failure(&error, state.scheduler.health_settings());
            let failure = match error {
                SendError::Timeout(_) => Failure::Timeout,
                SendError::Connect(_) | SendError::Other(_) | SendError::BadUrl(_) => {
                    Failure::Unreachable
                }
            };
            Attempt::Failed(failure, effect)
        }
    }
}

/// Relays an answer as it streams when its status settles the verdict;
/// otherwise reads it whole first (markers in 400 and 403 bodies, and a
/// failed answer must be kept to relay it verbatim if it is the last).
async fn judge(state: &AppState, response: reqwest::Response) -> Attempt {
    let settings = state.scheduler.health_settings();
    let status = response.status();
    let now = time::OffsetDateTime::now_utc();
    let early = (!health::needs_body(status))
        .then(|| health::judge(status, response.headers(), b"", settings, now));
    if early == Some(Verdict::Relay) {
        return Attempt::Answered(Answer::Streaming(response));
    }
    let upstream_headers = response.headers().clone();
    let idle = state.config.upstream.idle_timeout;
    let body = body::hold(response, idle, ERROR_BODY_CAP).await;
    let headers = headers::response_headers(&upstream_headers);
    let verdict = early
        .unwrap_or_else(|| health::judge(status, &upstream_headers, &body.head, settings, now));
    match verdict {
        Verdict::Relay => Attempt::Answered(Answer::Buffered {
            status,
            headers,
            body,
        }),
        Verdict::NextAccount(effect) => Attempt::Failed(
            Failure::Answer {
                status,
                headers,
                body,
            },
            effect,
        ),
    }
}

/// The client's answer. A streamed one passes the meter; only a success
/// is billed.
fn respond(
    answer: Answer,
    state: &AppState,
    log: &Arc<RequestLog>,
    billing: Option<Box<dyn UsageSink>>,
    leases: impl IntoIterator<Item = Lease>,
) -> Response {
    match answer {
        Answer::Streaming(upstream) => {
            let headers = headers::response_headers(upstream.headers());
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok());
            let billing = billing.filter(|_| upstream.status().is_success());
            let tap = UsageTap::for_content_type(content_type);
            let meter = Meter::new(tap, billing, Arc::clone(log)).holding(leases);
            let mut response = Response::new(Body::empty());
            *response.status_mut() = upstream.status();
            *response.body_mut() = body::relay(
                upstream.bytes_stream(),
                state.config.upstream.idle_timeout,
                meter,
                state.stopping.clone(),
            );
            *response.headers_mut() = headers;
            response
        }
        Answer::Buffered {
            status,
            headers,
            body,
        } => buffered(status, headers, body, state),
    }
}

fn buffered(status: StatusCode, headers: HeaderMap, body: HeldBody, state: &AppState) -> Response {
    let mut response = Response::new(body.into_body(state.config.upstream.idle_timeout));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Every attempt failed, or none could be made: the last upstream answer
/// verbatim, except that an upstream 401 (about the account's credential,
/// not the user's key) becomes the relay's own 503. `retry_after`, when
/// known, is the soonest moment any account can serve again.
fn give_up(
    last: Option<Failure>,
    retry_after: Option<Duration>,
    state: &AppState,
) -> Result<Response, RelayError> {
    match last {
        None => Err(RelayError::NoUpstream {
            retry_after,
            upstream_status: None,
        }),
        Some(Failure::Timeout) => Err(RelayError::UpstreamTimeout { retry_after }),
        Some(Failure::Unreachable) => Err(RelayError::UpstreamUnreachable { retry_after }),
        Some(Failure::Answer { status, .. }) if status == StatusCode::UNAUTHORIZED => {
            Err(RelayError::NoUpstream {
                retry_after,
                upstream_status: Some(status.as_u16()),
            })
        }
        Some(Failure::Answer {
            status,
            mut headers,
            body,
        }) => {
            if let Some(after) = retry_after {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_secs(after)));
            }
            Ok(buffered(status, headers, body, state))
        }
    }
}
