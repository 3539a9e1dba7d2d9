//! The one error type the relay writes to clients, and the one place that
//! maps it to a status, an Anthropic error type, a stable code and a log
//! level.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::limits::admission::{BudgetPeriod, RateKind, Refusal};
use crate::limits::periods::until;
use crate::limits::spec::Family;
use crate::limits::status::timestamp;
use crate::usage::report::usd;

/// A key at its concurrency limit may retry this soon: any of its requests
/// in flight may end at any moment.
const CONCURRENCY_RETRY_AFTER: Duration = Duration::from_secs(1);

use crate::store::Service;

/// Everything the relay itself can refuse a request for. Upstream answers
/// that are relayed verbatim never become a `RelayError`.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("request body larger than {limit_bytes} bytes")]
    BodyTooLarge { limit_bytes: usize },
    #[error("no API key in the request")]
    MissingKey,
    #[error("unknown API key")]
    InvalidKey,
    #[error("repeated key headers disagree")]
    AmbiguousKey,
    #[error("API key disabled")]
    KeyDisabled,
    #[error("API key expired")]
    KeyExpired { expired_at: String },
    #[error("service {service} not permitted for this key")]
    ServiceNotPermitted {
        service: Service,
        allowed: Vec<Service>,
    },
    #[error("client not allowed")]
    ClientNotAllowed {
        allowed: Vec<String>,
        user_agent: Option<String>,
    },
    #[error("malformed JSON body: {reason}")]
    InvalidJson { reason: String },
    #[error("invalid request body: {reason}")]
    InvalidBody { reason: String },
    #[error("the client sent no part of its body for {idle_secs} s")]
    BodyTimeout { idle_secs: u64 },
    #[error("model {model} not allowed for this key")]
    ModelNotAllowed { model: String },
    #[error("concurrency limit reached: {in_use} of {limit} requests in flight")]
    ConcurrencyLimit {
        limit: u64,
        in_use: u64,
        /// Set when the request waited this long for a slot in vain.
        waited_secs: Option<u32>,
    },
    #[error("rate limit reached: {used} of {limit} {kind:?} in the {window_secs} s window")]
    RateLimit {
        kind: RateKind,
        limit: u64,
        used: u64,
        window_secs: u64,
        resets_at: OffsetDateTime,
    },
    #[error("{period:?} budget reached: {used_nano_usd} of {limit_nano_usd} n$")]
    BudgetExceeded {
        period: BudgetPeriod,
        family: Option<Family>,
        limit_nano_usd: u64,
        used_nano_usd: u64,
        resets_at: Option<OffsetDateTime>,
    },
    #[error("no upstream account available")]
    NoUpstream {
        retry_after: Option<Duration>,
        upstream_status: Option<u16>,
    },
    #[error("upstream did not answer in time")]
    UpstreamTimeout { retry_after: Option<Duration> },
    #[error("upstream unreachable")]
    UpstreamUnreachable { retry_after: Option<Duration> },
    #[error("store unavailable: {0}")]
    StoreUnavailable(#[source] redis::RedisError),
    #[error("no route {method} {path}")]
    NotFound { method: String, path: String },
    #[error("method {method} not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("unsupported content type {content_type:?}")]
    UnsupportedMediaType { content_type: Option<String> },
    #[error("header {name} is not UTF-8")]
    InvalidHeader { name: String },
    #[error("request headers of {size_bytes} bytes, over the limit of {limit_bytes}")]
    HeadersTooLarge {
        size_bytes: usize,
        limit_bytes: usize,
    },
    #[error("internal error: {0:#}")]
    Internal(#[source] anyhow::Error),
    #[error("admin request without the admin token")]
    AdminUnauthorized,
    #[error("no {kind} {id}")]
    RecordNotFound { kind: &'static str, id: String },
    #[error("{kind} {id} exists already")]
    RecordExists { kind: &'static str, id: String },
    #[error("invalid query string: {reason}")]
    InvalidQuery { reason: String },
    #[error("another key has the secret given for key {id}")]
    SecretInUse { id: String },
}

/// How an error is presented: status, Anthropic `error.type`, stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorClass {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: &'static str,
}

const fn class(status: StatusCode, kind: &'static str, code: &'static str) -> ErrorClass {
    ErrorClass { status, kind, code }
}

impl RelayError {
    pub fn class(&self) -> ErrorClass {
        use RelayError as E;
        match self {
            E::BodyTooLarge { .. } => class(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                "body_too_large",
            ),
            E::MissingKey => auth("missing_api_key"),
            E::InvalidKey => auth("invalid_api_key"),
            E::AmbiguousKey => auth("ambiguous_api_key"),
            E::KeyDisabled => auth("key_disabled"),
            E::KeyExpired { .. } => auth("key_expired"),
            E::ServiceNotPermitted { .. } => permission("service_not_permitted"),
            E::ClientNotAllowed { .. } => permission("client_not_allowed"),
            E::ModelNotAllowed { .. } => permission("model_not_allowed"),
            E::ConcurrencyLimit { .. } => rate_limited("concurrency_limit"),
            E::RateLimit { .. } => rate_limited("rate_limit"),
            E::BudgetExceeded { period, family, .. } => class(
                StatusCode::PAYMENT_REQUIRED,
                "billing_error",
                budget_code(*period, family.is_some()),
            ),
            E::InvalidJson { .. } => invalid_request(StatusCode::BAD_REQUEST, "invalid_json"),
            E::InvalidBody { .. } => invalid_request(StatusCode::BAD_REQUEST, "invalid_body"),
            E::BodyTimeout { .. } => {
                invalid_request(StatusCode::REQUEST_TIMEOUT, "request_timeout")
            }
            E::NoUpstream { .. } => class(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded_error",
                "no_upstream_available",
            ),
            E::UpstreamTimeout { .. } => class(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout_error",
                "upstream_timeout",
            ),
            E::UpstreamUnreachable { .. } => {
                class(StatusCode::BAD_GATEWAY, "api_error", "upstream_unreachable")
            }
            E::StoreUnavailable(_) => class(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "store_unavailable",
            ),
            E::NotFound { .. } => class(StatusCode::NOT_FOUND, "not_found_error", "not_found"),
            E::MethodNotAllowed { .. } => {
                invalid_request(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            E::UnsupportedMediaType { .. } => {
                invalid_request(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            E::InvalidHeader { .. } => invalid_request(StatusCode::BAD_REQUEST, "invalid_header"),
            E::HeadersTooLarge { .. } => invalid_request(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            E::Internal(_) => class(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "internal_error",
            ),
            E::AdminUnauthorized => auth("admin_unauthorized"),
            E::RecordNotFound { .. } => {
                class(StatusCode::NOT_FOUND, "not_found_error", "record_not_found")
            }
            E::RecordExists { .. } => invalid_request(StatusCode::CONFLICT, "record_exists"),
            E::InvalidQuery { .. } => invalid_request(StatusCode::BAD_REQUEST, "invalid_query"),
            E::SecretInUse { .. } => invalid_request(StatusCode::CONFLICT, "secret_in_use"),
        }
    }

    /// A sentence for the user that says what to do next.
    pub fn user_message(&self) -> String {
        use RelayError as E;
        match self {
            E::BodyTooLarge { limit_bytes } => format!(
                "The request body is larger than this relay accepts ({} MiB). \
                 Shorten it (compact a long conversation), then retry.",
                limit_bytes / (1024 * 1024)
            ),
            E::MissingKey => "No API key was sent. Send your relay key in the x-api-key header \
                 or as Authorization: Bearer <key>."
                .into(),
            E::InvalidKey => "This API key is not valid on this relay. Check that you are using \
                 the key your relay operator issued."
                .into(),
            E::AmbiguousKey => "The request carries several different API keys in repeated \
                 x-api-key or Authorization headers. Send exactly one key."
                .into(),
            E::KeyDisabled => {
                "This API key has been disabled. Ask your relay operator to enable it.".into()
            }
            E::KeyExpired { expired_at } => format!(
                "This API key expired at {expired_at}. Ask your relay operator for a new key."
            ),
            E::ServiceNotPermitted { service, .. } => format!(
                "This API key may not call {}. Ask your relay operator to allow the \
                 `{service}` service for it.",
                service.route()
            ),
            E::ClientNotAllowed { allowed, .. } => format!(
                "This API key only accepts requests from these clients: {}. Use one of them, \
                 or ask your relay operator to allow your client.",
                allowed.join(", ")
            ),
            E::InvalidJson { reason } => {
                format!("The request body is not valid JSON ({reason}). Send a JSON object.")
            }
            E::InvalidBody { reason } => {
                format!(
                    "The request body is not valid: {reason}. Fix the request and send it again."
                )
            }
            E::BodyTimeout { idle_secs } => format!(
                "The request body stopped arriving: nothing came for {idle_secs} s. Send the \
                 request again."
            ),
            E::ModelNotAllowed { model } => format!(
                "This API key may not use the model {model}. Use a model your relay operator \
                 allowed; GET /v1/models lists them."
            ),
            E::ConcurrencyLimit {
                limit, waited_secs, ..
            } => concurrency_message(*limit, *waited_secs),
            E::RateLimit {
                kind,
                limit,
                window_secs,
                ..
            } => rate_message(*kind, *limit, *window_secs),
            E::BudgetExceeded {
                period,
                family,
                limit_nano_usd,
                resets_at,
                ..
            } => budget_message(*period, *family, *limit_nano_usd, resets_at.is_some()),
            E::NoUpstream { retry_after, .. } => match retry_after.map(retry_secs) {
                Some(1) => "No upstream account can serve this request right now. Retry in \
                     1 second."
                    .into(),
                Some(secs) => format!(
                    "No upstream account can serve this request right now. Retry in {secs} seconds."
                ),
                None => "No upstream account can serve this request right now. Retry later, \
                     or ask your relay operator to check the accounts."
                    .into(),
            },
            E::UpstreamTimeout { .. } => {
                "The upstream API did not answer in time. Retry the request.".into()
            }
            E::UpstreamUnreachable { .. } => {
                "The relay could not connect to the upstream API. Retry in a moment.".into()
            }
            E::StoreUnavailable(_) => {
                "The relay's data store is unavailable. Retry in a moment.".into()
            }
            E::NotFound { method, path } => format!(
                "There is no route {method} {path} on this relay. It serves POST /v1/messages, \
                 POST /v1/messages/count_tokens, GET /v1/models and GET /relay/key, and for \
                 operators GET /health, /ready and /metrics."
            ),
            E::MethodNotAllowed { method, path } => format!(
                "This relay does not accept {method} on {path}. Use POST for /v1/messages and \
                 /v1/messages/count_tokens, and GET for /v1/models."
            ),
            E::UnsupportedMediaType { .. } => {
                "Send the request body as JSON with Content-Type: application/json.".into()
            }
            E::InvalidHeader { name } => format!(
                "The value of the {name} header is not valid UTF-8 text. Fix or remove that \
                 header, then retry."
            ),
            E::HeadersTooLarge { limit_bytes, .. } => format!(
                "The request headers are larger than this relay accepts ({} KiB). Remove \
                 oversized or repeated headers, then retry.",
                limit_bytes / 1024
            ),
            E::Internal(_) => {
                "The relay hit an unexpected error. Retry; if it persists, tell your relay \
                 operator the request id."
                    .into()
            }
            E::AdminUnauthorized => "The admin API needs the relay's admin token: send it as \
                 Authorization: Bearer <token>. Relay keys do not open it."
                .into(),
            E::RecordNotFound { kind, id } => {
                format!("There is no {kind} with id {id}. List them with GET /admin/{kind}s.")
            }
            E::RecordExists { kind, id } => format!(
                "{} {kind} with id {id} exists already. Pick another id, or change that {kind} \
                 instead.",
                if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "An"
                } else {
                    "A"
                }
            ),
            E::InvalidQuery { reason } => format!(
                "The query string is not valid: {reason}. Fix it and send the request again."
            ),
            E::SecretInUse { id } => format!(
                "Another key already has the secret given for key {id}, and one secret opens \
                 one key. Give this key its own secret, or leave `key` out to have one \
                 generated."
            ),
        }
    }

    /// Structured facts a client or script can act on, when there are any.
    pub fn details(&self) -> Option<Value> {
        use RelayError as E;
        match self {
            E::BodyTooLarge { limit_bytes } => Some(json!({ "limit_bytes": limit_bytes })),
            E::BodyTimeout { idle_secs } => Some(json!({ "idle_secs": idle_secs })),
            E::KeyExpired { expired_at } => Some(json!({ "expired_at": expired_at })),
            E::ServiceNotPermitted { service, allowed } => {
                Some(json!({ "service": service, "allowed_services": allowed }))
            }
            E::ClientNotAllowed {
                allowed,
                user_agent,
            } => Some(json!({ "allowed_clients": allowed, "user_agent": user_agent })),
            E::ModelNotAllowed { model } => Some(json!({ "model": model })),
            E::UpstreamTimeout { retry_after } | E::UpstreamUnreachable { retry_after } => {
                retry_after.map(|after| json!({ "retry_after_secs": retry_secs(after) }))
            }
            E::ConcurrencyLimit {
                limit,
                in_use,
                waited_secs,
            } => Some(with_retry(
                json!({ "limit": limit, "in_use": in_use, "waited_secs": waited_secs }),
                self.retry_after(),
            )),
            E::RateLimit {
                kind,
                limit,
                used,
                window_secs,
                resets_at,
            } => Some(with_retry(
                json!({
                    "window_secs": window_secs,
                    "counter": rate_counter(*kind),
                    "limit": limit,
                    "used": used,
                    "resets_at": timestamp(*resets_at),
                }),
                self.retry_after(),
            )),
            E::BudgetExceeded {
                period,
                family,
                limit_nano_usd,
                used_nano_usd,
                resets_at,
            } => Some(with_retry(
                json!({
                    "budget": period_name(*period),
                    "family": family.map(Family::as_str),
                    "limit_nano_usd": limit_nano_usd,
                    "used_nano_usd": used_nano_usd,
                    "resets_at": resets_at.map(timestamp),
                }),
                self.retry_after(),
            )),
            E::NoUpstream {
                retry_after,
                upstream_status,
            } => {
                let mut details = serde_json::Map::new();
                if let Some(after) = retry_after {
                    details.insert("retry_after_secs".into(), json!(retry_secs(*after)));
                }
                if let Some(status) = upstream_status {
                    details.insert("upstream_status".into(), json!(status));
                }
                (!details.is_empty()).then_some(Value::Object(details))
            }
            E::UnsupportedMediaType { content_type } => {
                Some(json!({ "content_type": content_type }))
            }
            E::InvalidHeader { name } => Some(json!({ "header": name })),
            E::RecordNotFound { kind, id } | E::RecordExists { kind, id } => {
                Some(json!({ "kind": kind, "id": id }))
            }
            E::SecretInUse { id } => Some(json!({ "id": id })),
            E::HeadersTooLarge {
                size_bytes,
                limit_bytes,
            } => Some(json!({ "size_bytes": size_bytes, "limit_bytes": limit_bytes })),
            E::MissingKey
            | E::InvalidKey
            | E::AmbiguousKey
            | E::KeyDisabled
            | E::InvalidJson { .. }
            | E::InvalidBody { .. }
            | E::InvalidQuery { .. }
            | E::StoreUnavailable(_)
            | E::NotFound { .. }
            | E::MethodNotAllowed { .. }
            | E::Internal(_)
            | E::AdminUnauthorized => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        let now = OffsetDateTime::now_utc();
        match self {
            RelayError::NoUpstream { retry_after, .. }
            | RelayError::UpstreamTimeout { retry_after }
            | RelayError::UpstreamUnreachable { retry_after } => *retry_after,
            RelayError::ConcurrencyLimit { .. } => Some(CONCURRENCY_RETRY_AFTER),
            RelayError::RateLimit { resets_at, .. } => Some(until(now, *resets_at)),
            RelayError::BudgetExceeded { resets_at, .. } => resets_at.map(|at| until(now, at)),
            _ => None,
        }
    }

    /// The error a refused admission gives the client; `waited_secs` when
    /// the request waited for a slot first.
    pub fn from_refusal(refusal: Refusal, waited_secs: Option<u32>) -> RelayError {
        match refusal {
            Refusal::Concurrency { limit, in_use } => RelayError::ConcurrencyLimit {
                limit,
                in_use,
                waited_secs,
            },
            Refusal::Rate {
                kind,
                limit,
                used,
                window_secs,
                resets_at,
            } => RelayError::RateLimit {
                kind,
                limit,
                used,
                window_secs,
                resets_at,
            },
            Refusal::Budget {
                period,
                family,
                limit_nano_usd,
                used_nano_usd,
                resets_at,
            } => RelayError::BudgetExceeded {
                period,
                family,
                limit_nano_usd,
                used_nano_usd,
                resets_at,
            },
        }
    }

    /// Whether this error is the relay's fault or an outage (logged as a
    /// warning) rather than something the client did.
    pub fn is_server_side(&self) -> bool {
        self.class().status.is_server_error()
    }
}

fn auth(code: &'static str) -> ErrorClass {
    class(StatusCode::UNAUTHORIZED, "authentication_error", code)
}

fn permission(code: &'static str) -> ErrorClass {
    class(StatusCode::FORBIDDEN, "permission_error", code)
}

fn invalid_request(status: StatusCode, code: &'static str) -> ErrorClass {
    class(status, "invalid_request_error", code)
}

fn rate_limited(code: &'static str) -> ErrorClass {
    class(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", code)
}

fn budget_code(period: BudgetPeriod, per_family: bool) -> &'static str {
    match (period, per_family) {
        (BudgetPeriod::Daily, false) => "daily_budget",
        (BudgetPeriod::Weekly, false) => "weekly_budget",
        (BudgetPeriod::Total, false) => "total_budget",
        (BudgetPeriod::Daily, true) => "family_daily_budget",
        (BudgetPeriod::Weekly, true) => "family_weekly_budget",
        (BudgetPeriod::Total, true) => "family_total_budget",
    }
}

fn period_name(period: BudgetPeriod) -> &'static str {
    match period {
        BudgetPeriod::Daily => "daily",
        BudgetPeriod::Weekly => "weekly",
        BudgetPeriod::Total => "total",
    }
}

/// Messages of the limit errors name the limit and what to do, and leave
/// times to the details and `retry-after`, so they read the same on every
/// request.
fn concurrency_message(limit: u64, waited_secs: Option<u32>) -> String {
    let requests = if limit == 1 { "request" } else { "requests" };
    match waited_secs {
        Some(waited) => format!(
            "This API key still had {limit} {requests} in progress, the most it may have at \
             once, after this request waited {waited} s for a slot. Retry shortly."
        ),
        None => format!(
            "This API key already has {limit} {requests} in progress, the most it may have at \
             once. Retry when one has finished."
        ),
    }
}

fn rate_message(kind: RateKind, limit: u64, window_secs: u64) -> String {
    let amount = match kind {
        RateKind::Requests => format!("made {limit} requests"),
        RateKind::Tokens => format!("used {limit} tokens"),
        RateKind::Cost => format!("spent ${}", usd(limit)),
    };
    format!(
        "This API key has {amount} in the current {window_secs} s window, the most it may. \
         Retry after the number of seconds in the retry-after header."
    )
}

fn budget_message(
    period: BudgetPeriod,
    family: Option<Family>,
    limit_nano_usd: u64,
    resets: bool,
) -> String {
    let models = family.map_or(String::new(), |f| format!(" for {} models", f.as_str()));
    let next = if resets {
        "It resets at the time in error.details.resets_at."
    } else {
        "Ask your relay operator to raise it."
    };
    format!(
        "This API key has used its {} budget of ${}{models}. {next}",
        period_name(period),
        usd(limit_nano_usd)
    )
}

fn rate_counter(kind: RateKind) -> &'static str {
    match kind {
        RateKind::Requests => "requests",
        RateKind::Tokens => "tokens",
        RateKind::Cost => "cost_nano_usd",
    }
}

/// `details` without its null fields, plus `retry_after_secs` when the
/// answer carries `retry-after`.
fn with_retry(mut details: Value, retry_after: Option<Duration>) -> Value {
    if let Value::Object(map) = &mut details {
        map.retain(|_, value| !value.is_null());
        if let Some(after) = retry_after {
            map.insert("retry_after_secs".into(), json!(retry_secs(after)));
        }
    }
    details
}

/// Whole seconds, rounded up, never zero: a client told to retry after 0 s
/// would spin.
pub fn retry_secs(after: Duration) -> u64 {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    secs.max(1)
}

impl From<redis::RedisError> for RelayError {
    fn from(err: redis::RedisError) -> Self {
        RelayError::StoreUnavailable(err)
    }
}

/// The rendered error, attached to the response so that the outermost
/// middleware can add the request id to the body and log it exactly once.
#[derive(Debug, Clone)]
pub struct ErrorReport {
    pub class: ErrorClass,
    pub message: String,
    pub details: Option<Value>,
    /// The full cause, for the log line only.
    pub cause: String,
}

impl ErrorReport {
    pub fn body(&self, request_id: &str) -> Value {
        let mut error = json!({
            "type": self.class.kind,
            "message": self.message,
            "code": self.class.code,
        });
        if let (Some(details), Value::Object(map)) = (&self.details, &mut error) {
            map.insert("details".into(), details.clone());
        }
        json!({ "type": "error", "error": error, "request_id": request_id })
    }
}

impl IntoResponse for RelayError {
    fn into_response(self) -> Response {
        let report = ErrorReport {
            class: self.class(),
            message: self.user_message(),
            details: self.details(),
            cause: format!("{self:#}"),
        };
        let mut response = report.class.status.into_response();
        if let Some(after) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_secs(after)));
        }
        response.extensions_mut().insert(report);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VARIANTS: usize = 30;

    /// Position of the variant; a new variant does not compile here until
    /// it is added, and then fails `one_of_each_covers_every_variant` until
    /// `one_of_each` has it.
    fn index(err: &RelayError) -> usize {
        use RelayError as E;
        match err {
            E::BodyTooLarge { .. } => 0,
            E::MissingKey => 1,
            E::InvalidKey => 2,
            E::AmbiguousKey => 3,
            E::KeyDisabled => 4,
            E::KeyExpired { .. } => 5,
            E::ServiceNotPermitted { .. } => 6,
            E::ClientNotAllowed { .. } => 7,
            E::InvalidJson { .. } => 8,
            E::InvalidBody { .. } => 9,
            E::ModelNotAllowed { .. } => 10,
            E::NoUpstream { .. } => 11,
            E::UpstreamTimeout { .. } => 12,
            E::UpstreamUnreachable { .. } => 13,
            E::StoreUnavailable(_) => 14,
            E::NotFound { .. } => 15,
            E::MethodNotAllowed { .. } => 16,
            E::UnsupportedMediaType { .. } => 17,
            E::InvalidHeader { .. } => 18,
            E::HeadersTooLarge { .. } => 19,
            E::Internal(_) => 20,
            E::ConcurrencyLimit { .. } => 21,
            E::RateLimit { .. } => 22,
            E::BudgetExceeded { .. } => 23,
            E::BodyTimeout { .. } => 24,
            E::AdminUnauthorized => 25,
            E::RecordNotFound { .. } => 26,
            E::RecordExists { .. } => 27,
            E::InvalidQuery { .. } => 28,
            E::SecretInUse { .. } => 29,
        }
    }

    fn one_of_each() -> Vec<RelayError> {
        use RelayError as E;
        let text = || "x".to_owned();
        vec![
            E::BodyTooLarge { limit_bytes: 1 },
            E::MissingKey,
            E::InvalidKey,
            E::AmbiguousKey,
            E::KeyDisabled,
            E::KeyExpired { expired_at: text() },
            E::ServiceNotPermitted {
                service: Service::Models,
                allowed: Vec::new(),
            },
            E::ClientNotAllowed {
                allowed: Vec::new(),
                user_agent: None,
            },
            E::InvalidJson { reason: text() },
            E::InvalidBody { reason: text() },
            E::ModelNotAllowed { model: text() },
            E::NoUpstream {
                retry_after: None,
                upstream_status: None,
            },
            E::UpstreamTimeout { retry_after: None },
            E::UpstreamUnreachable { retry_after: None },
            E::StoreUnavailable((redis::ErrorKind::Io, "down").into()),
            E::NotFound {
                method: text(),
                path: text(),
            },
            E::MethodNotAllowed {
                method: "GET".into(),
                path: "/v1/messages".into(),
            },
            E::UnsupportedMediaType { content_type: None },
            E::InvalidHeader { name: text() },
            E::HeadersTooLarge {
                size_bytes: 2,
                limit_bytes: 1,
            },
            E::Internal(anyhow::anyhow!("bug")),
            E::ConcurrencyLimit {
                limit: 5,
                in_use: 5,
                waited_secs: None,
            },
            E::RateLimit {
                kind: RateKind::Requests,
                limit: 1,
                used: 1,
                window_secs: 60,
                resets_at: OffsetDateTime::UNIX_EPOCH,
            },
            E::BudgetExceeded {
                period: BudgetPeriod::Daily,
                family: None,
                limit_nano_usd: 1,
                used_nano_usd: 1,
                resets_at: None,
            },
            E::BodyTimeout { idle_secs: 60 },
            E::AdminUnauthorized,
            E::RecordNotFound {
                kind: "key",
                id: text(),
            },
            E::RecordExists {
                kind: "key",
                id: text(),
            },
            E::InvalidQuery { reason: text() },
            E::SecretInUse { id: text() },
        ]
    }

    fn read(path: &str) -> String {
        std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn one_of_each_covers_every_variant() {
        let mut seen = [false; VARIANTS];
        for err in one_of_each() {
            seen[index(&err)] = true;
        }
        assert_eq!(seen, [true; VARIANTS]);
    }

    #[test]
    fn every_error_has_its_own_code_and_a_client_or_server_status() {
        let mut codes: Vec<&str> = one_of_each().iter().map(|err| err.class().code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), VARIANTS);
        for err in one_of_each() {
            let status = err.class().status;
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{err}"
            );
        }
    }

    #[test]
    fn every_code_is_in_the_readme_table_with_its_status_and_type() {
        let readme = read("README.md");
        for err in one_of_each() {
            let class = err.class();
            let row = format!(
                "| {} | `{}` | `{}` |",
                class.status.as_u16(),
                class.kind,
                class.code
            );
            assert!(readme.contains(&row), "README lacks the row {row}");
        }
    }

    #[test]
    fn every_code_has_a_snapshot_of_its_body() {
        let dir = format!("{}/snapshots", env!("CARGO_MANIFEST_DIR"));
        let snapshots: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
            .collect();
        for err in one_of_each() {
            let code = format!("\"code\": \"{}\"", err.class().code);
            assert!(
                snapshots.iter().any(|snap| snap.contains(&code)),
                "no snapshot shows {code}"
            );
        }
    }

    #[test]
    fn messages_are_sentences_that_end_in_a_full_stop() {
        for err in one_of_each() {
            let message = err.user_message();
            assert!(message.ends_with('.'), "{message}");
            assert!(message.starts_with(char::is_uppercase), "{message}");
        }
    }
}
