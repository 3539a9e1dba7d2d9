//! The relay path: each step of the request pipeline, in the order the
//! design fixes, each with its own error.

pub(crate) mod body;
mod forward;
mod meter;
mod models;
pub mod own_key;
pub mod request;

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use time::OffsetDateTime;

use crate::app::AppState;
use crate::auth::clients::client_allowed;
use crate::auth::extract::{KeyError, extract_key};
use crate::auth::{hash_key, lifetime, models::model_allowed};
use crate::error::RelayError;
use crate::observe::RequestLog;
use crate::store::KeyRecord;
pub use crate::store::Service;
use forward::{BillTo, Outgoing};
use request::MessageRequest;

/// How much of a User-Agent an error's details repeat back.
const SHOWN_USER_AGENT_CHARS: usize = 200;

pub async fn messages(
    State(state): State<AppState>,
    Extension(log): Extension<Arc<RequestLog>>,
    request: Request,
) -> Result<Response, RelayError> {
    relay_body_request(state, log, Service::Messages, request).await
}

pub async fn count_tokens(
    State(state): State<AppState>,
    Extension(log): Extension<Arc<RequestLog>>,
    request: Request,
) -> Result<Response, RelayError> {
    relay_body_request(state, log, Service::CountTokens, request).await
}

pub async fn models(
    State(state): State<AppState>,
    Extension(log): Extension<Arc<RequestLog>>,
    request: Request,
) -> Result<Response, RelayError> {
    let (mut parts, _body) = request.into_parts();
    // HEAD gets the head of the answer to GET (the server drops the body);
    // the upstream is asked with GET, as the list is read and filtered.
    parts.method = axum::http::Method::GET;
    let key = admit(&state, &log, &parts.headers, Some(Service::Models)).await?;
    check_header_text(&parts.headers)?;
    record_first_use(&state, &key).await?;
    let outgoing = Outgoing::new(&state, &parts, Bytes::new(), None, None);
    models::list(&state, &log, outgoing, &key).await
}

async fn relay_body_request(
    state: AppState,
    log: Arc<RequestLog>,
    service: Service,
    request: Request,
) -> Result<Response, RelayError> {
    let (parts, body) = request.into_parts();
    let limit = state.config.body_limit_bytes;
    if declared_length(&parts.headers).is_some_and(|length| length > limit as u64) {
        // A client waiting for `100 Continue` has sent none of the body:
        // the refusal goes out at once instead of inviting the body only to
        // throw it away (reading it would make hyper send the 100).
        if !expects_continue(&parts.headers) {
            body::drain(body).await;
        }
        return Err(RelayError::BodyTooLarge { limit_bytes: limit });
    }
    let key = admit(&state, &log, &parts.headers, Some(service)).await?;
    check_header_text(&parts.headers)?;
    check_content_type(&parts.headers)?;
    let bytes = body::read_limited(body, limit, state.config.client_timeout).await?;
    let message = MessageRequest::parse(&bytes)?;
    log.set_model(&message.model);
    if !model_allowed(&key.allowed_models, &key.denied_models, &message.model) {
        return Err(RelayError::ModelNotAllowed {
            model: message.model,
        });
    }
    record_first_use(&state, &key).await?;
    let admission = match service {
        Service::Messages => {
            let request_id = &log.request_id;
            state.limits.admit(&key, &message.model, request_id).await?
        }
        Service::CountTokens | Service::Models => crate::limits::Admission::free(),
    };
    let (lease, take_back) = admission.split();
    let bill_to = (service == Service::Messages).then(|| BillTo {
        key_id: key.id.clone(),
        model: message.model.clone(),
        limits: Arc::new(key.limits.clone()),
    });
    let mut outgoing = Outgoing::new(&state, &parts, bytes, Some(message), bill_to);
    outgoing.hold(lease);
    let answer = forward::forward(&state, &log, &key, outgoing).await;
    // Refused by the relay with nothing from an upstream: the request used
    // up nothing of the key's limits.
    if let Err(
        RelayError::StoreUnavailable(_)
        | RelayError::NoUpstream {
            upstream_status: None,
            ..
        },
    ) = &answer
    {
        take_back.run();
    }
    answer
}

/// Refuses a request whose headers are larger than the configured limit,
/// before any route reads them.
///
/// Past hyper's read buffer (8 KiB + 400 KiB) or past 100 header lines,
/// hyper answers a bare 431 and closes, before any service runs, so that
/// answer cannot carry the envelope. The server (see `app`) keeps hyper's
/// defaults: a larger buffer would only move the point where hyper answers
/// on its own, at a memory cost per connection. The relay's own limit sits
/// well below it.
pub async fn limit_headers(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    // Each line as it came on the wire: name, ": ", value, CRLF.
    let size: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let limit = state.config.header_limit_bytes;
    if size > limit {
        return RelayError::HeadersTooLarge {
            size_bytes: size,
            limit_bytes: limit,
        }
        .into_response();
    }
    next.run(request).await
}

/// Key present, key valid, service permitted (`None`: a route every key
/// may call, such as its own status), client allowed.
async fn admit(
    state: &AppState,
    log: &RequestLog,
    headers: &HeaderMap,
    service: Option<Service>,
) -> Result<Arc<KeyRecord>, RelayError> {
    let key = extract_key(headers).map_err(|err| match err {
        KeyError::Missing => RelayError::MissingKey,
        KeyError::Malformed => RelayError::InvalidKey,
        KeyError::Ambiguous => RelayError::AmbiguousKey,
    })?;
    let hash = hash_key(key, state.config.secrets.key_pepper.as_ref());
    let record = state
        .keys
        .by_hash(&hash)
        .await
        .map_err(store_error)?
        .ok_or(RelayError::InvalidKey)?;
    log.set_key(&record.id);
    check_key_terms(&record, service)?;
    if !client_allowed(&state.config.clients, &record.allowed_clients, headers) {
        return Err(RelayError::ClientNotAllowed {
            allowed: record.allowed_clients.clone(),
            user_agent: headers.get(header::USER_AGENT).map(shown_user_agent),
        });
    }
    Ok(record)
}

/// Enabled, not expired, allowed this service.
fn check_key_terms(record: &KeyRecord, service: Option<Service>) -> Result<(), RelayError> {
    if record.disabled {
        return Err(RelayError::KeyDisabled);
    }
    if let Some(end) = lifetime::expired(record, OffsetDateTime::now_utc()) {
        return Err(RelayError::KeyExpired {
            expired_at: rfc3339(end),
        });
    }
    if let Some(service) = service
        && !record.services.contains(&service)
    {
        return Err(RelayError::ServiceNotPermitted {
            service,
            allowed: record.services.clone(),
        });
    }
    Ok(())
}

/// Starts the clock of a key valid for N days from its first use. Called
/// once the request has passed every check, so a refused request never
/// starts it; costs a round trip only until the first use is recorded.
async fn record_first_use(state: &AppState, key: &KeyRecord) -> Result<(), RelayError> {
    if lifetime::awaits_first_use(key) {
        state
            .store
            .activate_key(&key.key_sha256, OffsetDateTime::now_utc())
            .await
            .map_err(store_error)?;
    }
    Ok(())
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

fn shown_user_agent(value: &axum::http::HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes())
        .chars()
        .take(SHOWN_USER_AGENT_CHARS)
        .collect()
}

pub(crate) fn store_error(err: crate::store::StoreError) -> RelayError {
    match err {
        crate::store::StoreError::Redis(err) => RelayError::StoreUnavailable(err),
        other => RelayError::Internal(other.into()),
    }
}

fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Header values must be UTF-8 text. HTTP tolerates other bytes, but no
/// real client sends them and the relay forwards no header it cannot read.
fn check_header_text(headers: &HeaderMap) -> Result<(), RelayError> {
    match headers
        .iter()
        .find(|(_, value)| std::str::from_utf8(value.as_bytes()).is_err())
    {
        Some((name, _)) => Err(RelayError::InvalidHeader {
            name: name.as_str().to_owned(),
        }),
        None => Ok(()),
    }
}

/// JSON or nothing: an explicit other type (curl's form default) is a
/// mistake worth naming.
pub(crate) fn check_content_type(headers: &HeaderMap) -> Result<(), RelayError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or_default();
    let essence = text.split(';').next().unwrap_or_default().trim();
    let is_json = essence.eq_ignore_ascii_case("application/json")
        || essence.to_ascii_lowercase().ends_with("+json");
    if is_json {
        Ok(())
    } else {
        Err(RelayError::UnsupportedMediaType {
            content_type: Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        })
    }
}

pub(crate) fn parts_path_and_query(parts: &Parts) -> String {
    parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| parts.uri.path().to_owned())
}
