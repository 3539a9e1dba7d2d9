//! Prometheus metrics, rendered at `GET /metrics`. One recorder serves the
//! whole process. Labels never carry a key: only routes, statuses, account
//! ids and token kinds, so their number stays small.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::usage::Usage;

/// Seconds: from a fast refusal to a long answer.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder the first time; later calls (more
/// relays in one process, as in tests) share it. `None` if another
/// recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            start_at_zero();
            Some(handle)
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "relay_requests_total",
        "Finished requests by route and status."
    );
    metrics::describe_histogram!(
        "relay_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time from a request's arrival to the end of its answer."
    );
    metrics::describe_histogram!(
        "relay_first_byte_seconds",
        metrics::Unit::Seconds,
        "Time from a request's arrival to the head of its answer."
    );
    metrics::describe_gauge!(
        "relay_requests_in_flight",
        "Requests whose answer has not ended."
    );
    metrics::describe_counter!(
        "relay_upstream_attempts_total",
        "Attempts against upstream accounts by outcome."
    );
    metrics::describe_counter!("relay_tokens_total", "Tokens counted, by kind.");
    metrics::describe_counter!(
        "relay_cost_nano_usd_total",
        "Cost counted, in nano-dollars."
    );
    metrics::describe_counter!(
        "relay_streams_cut_total",
        "Answers that ended before they were complete."
    );
    metrics::describe_gauge!(
        "relay_waiting_for_slot",
        "Requests waiting for a concurrency slot of their key."
    );
    metrics::describe_counter!(
        "relay_usage_writes_failed_total",
        "Usage writes that failed, by whether they will be retried."
    );
}

/// Series that count rare events exist from the start, so a scrape (and an
/// alert on their rate) sees 0 rather than nothing.
fn start_at_zero() {
    counter!("relay_streams_cut_total").absolute(0);
    counter!("relay_cost_nano_usd_total").absolute(0);
    gauge!("relay_waiting_for_slot").set(0.0);
    gauge!("relay_requests_in_flight").set(0.0);
    for retry in ["yes", "no"] {
        counter!("relay_usage_writes_failed_total", "retried" => retry).absolute(0);
    }
}

/// The text a Prometheus scrape gets.
pub fn render(handle: &PrometheusHandle) -> String {
    handle.run_upkeep();
    handle.render()
}

/// A route label: one of the relay's routes, or `other`.
pub fn route(path: &str) -> &'static str {
    match path {
        "/v1/messages" => "messages",
        "/v1/messages/count_tokens" => "count_tokens",
        "/v1/models" => "models",
        "/relay/key" => "relay_key",
        "/health" | "/ready" | "/metrics" => "ops",
        admin if admin.starts_with("/admin/") => "admin",
        _ => "other",
    }
}

pub fn request_started() {
    gauge!("relay_requests_in_flight").increment(1.0);
}

pub fn request_finished(
    path: &str,
    status: Option<u16>,
    first_byte: Option<Duration>,
    total: Duration,
) {
    let route = route(path);
    let status = status.map_or_else(|| "none".to_owned(), |code| code.to_string());
    gauge!("relay_requests_in_flight").decrement(1.0);
    counter!("relay_requests_total", "route" => route, "status" => status).increment(1);
    histogram!("relay_request_duration_seconds", "route" => route).record(total.as_secs_f64());
    if let Some(first_byte) = first_byte {
        histogram!("relay_first_byte_seconds", "route" => route).record(first_byte.as_secs_f64());
    }
}

/// One attempt against an account; `status` is `None` when none came.
pub fn attempt(account_id: &str, status: Option<u16>) {
    let outcome = status.map_or_else(|| "no_answer".to_owned(), |code| code.to_string());
    counter!(
        "relay_upstream_attempts_total",
        "account" => account_id.to_owned(),
        "status" => outcome
    )
    .increment(1);
}

pub fn stream_cut() {
    counter!("relay_streams_cut_total").increment(1);
}

pub fn counted(usage: &Usage, cost_nano_usd: u64) {
    let kinds = [
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
        ("cache_write", usage.cache_creation_input_tokens),
        ("cache_read", usage.cache_read_input_tokens),
    ];
    for (kind, tokens) in kinds {
        counter!("relay_tokens_total", "kind" => kind).increment(tokens);
    }
    counter!("relay_cost_nano_usd_total").increment(cost_nano_usd);
}

pub fn waiting_for_slot(delta: f64) {
    gauge!("relay_waiting_for_slot").increment(delta);
}

pub fn usage_write_failed(will_retry: bool) {
    let retry = if will_retry { "yes" } else { "no" };
    counter!("relay_usage_writes_failed_total", "retried" => retry).increment(1);
}
