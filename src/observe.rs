//! Request ids, the one log line per request, and the rendering of relay
//! errors (which need the request id) in one middleware.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use futures::FutureExt;

use crate::error::{ErrorReport, RelayError};

/// What is known about a request so far. The line is written when the last
/// holder lets go: when the answer is complete, streams included.
pub struct RequestLog {
    pub request_id: String,
    method: String,
    path: String,
    started: Instant,
    fields: Mutex<Fields>,
}

#[derive(Default)]
struct Fields {
    key_id: Option<String>,
    account_id: Option<String>,
    model: Option<String>,
    status: Option<u16>,
    upstream_status: Option<u16>,
    attempts: u32,
    first_byte: Option<std::time::Duration>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    error: Option<(String, bool)>,
    stream_error: Option<String>,
}

impl RequestLog {
    pub fn new(method: String, path: String) -> RequestLog {
        crate::telemetry::request_started();
        RequestLog {
            request_id: new_request_id(),
            method,
            path,
            started: Instant::now(),
            fields: Mutex::new(Fields::default()),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Fields) -> R) -> R {
        f(&mut self.fields.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn set_key(&self, id: &str) {
        self.with(|fields| fields.key_id = Some(id.to_owned()));
    }

    pub fn set_model(&self, model: &str) {
        self.with(|fields| fields.model = Some(model.to_owned()));
    }

    /// One attempt against an account was made and answered `status`
    /// (`None`: no answer).
    pub fn attempt(&self, account_id: &str, status: Option<u16>) {
        crate::telemetry::attempt(account_id, status);
        self.with(|fields| {
            fields.account_id = Some(account_id.to_owned());
            fields.upstream_status = status;
            fields.attempts += 1;
        });
    }

    pub fn set_tokens(&self, input: u64, output: u64) {
        self.with(|fields| {
            fields.input_tokens = Some(input);
            fields.output_tokens = Some(output);
        });
    }

    pub fn stream_failed(&self, reason: &str) {
        crate::telemetry::stream_cut();
        self.with(|fields| fields.stream_error = Some(reason.to_owned()));
    }

    fn finish_head(&self, status: u16, error: Option<&ErrorReport>) {
        let elapsed = self.started.elapsed();
        self.with(|fields| {
            fields.status = Some(status);
            fields.first_byte = Some(elapsed);
            fields.error =
                error.map(|report| (report.cause.clone(), report.class.status.is_server_error()));
        });
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let fields = self
            .fields
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        let total = self.started.elapsed();
        let total_ms = total.as_millis();
        crate::telemetry::request_finished(&self.path, fields.status, fields.first_byte, total);
        macro_rules! line {
            ($level:ident, $($extra:tt)*) => {
                tracing::$level!(
                    request_id = %self.request_id,
                    method = %self.method,
                    path = %self.path,
                    key_id = fields.key_id.as_deref(),
                    account_id = fields.account_id.as_deref(),
                    model = fields.model.as_deref(),
                    status = fields.status,
                    upstream_status = fields.upstream_status,
                    attempts = fields.attempts,
                    first_byte_ms = fields.first_byte.map(|at| at.as_millis() as u64),
                    latency_ms = total_ms as u64,
                    input_tokens = fields.input_tokens,
                    output_tokens = fields.output_tokens,
                    $($extra)*
                )
            };
        }
        // Causes and reasons may quote the client (a model it asked for):
        // recorded as strings, so the text format escapes them and a line
        // break in a request cannot forge a log line.
        match (&fields.error, &fields.stream_error) {
            (Some((cause, true)), _) => line!(warn, error = cause.as_str(), "request failed"),
            (Some((cause, false)), _) => line!(info, error = cause.as_str(), "request refused"),
            (None, Some(reason)) => {
                line!(warn, stream_error = reason.as_str(), "stream ended early")
            }
            (None, None) => line!(info, "request"),
        }
    }
}

/// `req_` and 24 hex characters, unique enough to find one line in a log.
fn new_request_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("req_{}", &id[..24])
}

/// Outermost middleware: gives each request an id, renders relay errors
/// into the Anthropic envelope with that id, and arranges the log line.
pub async fn observe(mut request: Request, next: Next) -> Response {
    let log = Arc::new(RequestLog::new(
        request.method().to_string(),
        request.uri().path().to_owned(),
    ));
    request.extensions_mut().insert(Arc::clone(&log));
    let mut response = match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        // A bug must still answer: a dropped connection would leave the
        // client guessing (and an SDK retrying). Whatever the request held
        // (leases, counts) was released as its future unwound.
        Err(panic) => RelayError::Internal(anyhow::anyhow!(
            "the request handler panicked: {}",
            panic_message(panic.as_ref())
        ))
        .into_response(),
    };

    let report = response.extensions_mut().remove::<ErrorReport>();
    log.finish_head(response.status().as_u16(), report.as_ref());
    if let Some(report) = report {
        let body = report.body(&log.request_id).to_string();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.remove(header::CONTENT_LENGTH);
        *response.body_mut() = Body::from(body);
    }
    if let Ok(id) = HeaderValue::from_str(&log.request_id) {
        response.headers_mut().insert("x-request-id", id);
    }
    response
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

/// Logs go to stderr (stdout carries only what a person or a harness
/// reads). `RUST_LOG` filters; the default is `info`. Colours only on a
/// terminal: a log file or collector gets plain text.
pub fn init_tracing(format: crate::config::LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        crate::config::LogFormat::Json => builder.json().try_init(),
        crate::config::LogFormat::Text => builder.try_init(),
    };
}
