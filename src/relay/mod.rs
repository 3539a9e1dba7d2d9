//! The relay path: each step of the request pipeline, in the order the
//! design fixes, each with its own error.

mod body;
mod forward;
mod meter;
pub mod own_key;
pub mod request;

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header, request::Parts};
use axum::response::Response;
use bytes::Bytes;

use crate::app::AppState;
use crate::auth::clients::client_allowed;
use crate::auth::extract::{KeyError, extract_key};
use crate::auth::{hash_key, models::model_allowed};
use crate::error::RelayError;
use crate::observe::RequestLog;
use crate::store::KeyRecord;
use forward::{BillTo, Outgoing};
use request::MessageRequest;

/// The relay's client-facing services; a key may be limited to some.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Messages,
    CountTokens,
    Models,
}

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
    let (parts, _body) = request.into_parts();
    let key = admit(&state, &log, &parts.headers).await?;
    let _ = key;
    // TODO(#3): list only the models the key may use.
    let outgoing = Outgoing::new(&state, &parts, Bytes::new(), None, None);
    forward::forward(&state, &log, outgoing).await
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
        body::drain(body).await;
        return Err(RelayError::BodyTooLarge { limit_bytes: limit });
    }
    let key = admit(&state, &log, &parts.headers).await?;
    check_content_type(&parts.headers)?;
    let bytes = body::read_limited(body, limit).await?;
    let message = MessageRequest::parse(&bytes)?;
    log.set_model(&message.model);
    if !model_allowed(&key.allowed_models, &[], &message.model) {
        return Err(RelayError::ModelNotAllowed {
            model: message.model,
        });
    }
    let lease = match service {
        Service::Messages => {
            let request_id = &log.request_id;
            state.limits.admit(&key, &message.model, request_id).await?
        }
        Service::CountTokens | Service::Models => None,
    };
    let bill_to = (service == Service::Messages).then(|| BillTo {
        key_id: key.id.clone(),
        model: message.model.clone(),
        limits: Arc::new(key.limits.clone()),
    });
    let mut outgoing = Outgoing::new(&state, &parts, bytes, Some(message), bill_to);
    outgoing.hold(lease);
    forward::forward(&state, &log, outgoing).await
}

/// Key present, key valid, client allowed.
async fn admit(
    state: &AppState,
    log: &RequestLog,
    headers: &HeaderMap,
) -> Result<Arc<KeyRecord>, RelayError> {
    let key = extract_key(headers).map_err(|err| match err {
        KeyError::Missing => RelayError::MissingKey,
        KeyError::Malformed | KeyError::Ambiguous => RelayError::InvalidKey,
    })?;
    let hash = hash_key(key, state.config.secrets.key_pepper.as_ref());
    let record = state
        .keys
        .by_hash(&hash)
        .await
        .map_err(store_error)?
        .ok_or(RelayError::InvalidKey)?;
    log.set_key(&record.id);
    if record.disabled {
        return Err(RelayError::KeyDisabled);
    }
    if !client_allowed(&state.config.clients, &record.allowed_clients, headers) {
        return Err(RelayError::ClientNotAllowed {
            allowed: record.allowed_clients.clone(),
            user_agent: headers
                .get(header::USER_AGENT)
                .map(|ua| String::from_utf8_lossy(ua.as_bytes()).into_owned()),
        });
    }
    Ok(record)
}

pub(crate) fn store_error(err: crate::store::StoreError) -> RelayError {
    match err {
        crate::store::StoreError::Redis(err) => RelayError::StoreUnavailable(err),
        other => RelayError::Internal(other.into()),
    }
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

/// JSON or nothing: an explicit other type (curl's form default) is a
/// mistake worth naming.
fn check_content_type(headers: &HeaderMap) -> Result<(), RelayError> {
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
