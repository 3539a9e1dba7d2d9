//! Snapshots of relay error bodies, kept in the top-level `snapshots/`.

/// Snapshots a relay error body with its request id redacted, and checks
/// that the `x-request-id` header names the same id.
pub fn error_body(name: &str, response: &super::TestResponse) {
    let body = response.json();
    let request_id = body["request_id"].as_str().unwrap_or_default();
    assert!(
        request_id.starts_with("req_"),
        "relay errors carry a request id: {body}"
    );
    assert_eq!(response.header("x-request-id"), Some(request_id));
    assert_eq!(response.header("content-type"), Some("application/json"));
    json(name, &body);
}

/// Snapshots any JSON value under `snapshots/<name>.snap`.
pub fn json(name: &str, value: &serde_json::Value) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        insta::assert_json_snapshot!(name, value, { ".request_id" => "[request_id]" });
    });
}

/// Snapshots a limit error body (429, 402) with its times redacted, and
/// checks that `retry-after` and `details.retry_after_secs` agree.
pub fn limit_error_body(name: &str, response: &super::TestResponse) {
    let body = response.json();
    let in_details = body["error"]["details"]["retry_after_secs"].as_u64();
    let in_header = response
        .header("retry-after")
        .map(|value| value.parse::<u64>().expect("retry-after is whole seconds"));
    assert_eq!(in_header, in_details, "{body}");
    // Waits until a reset change with the clock; others do not.
    let times: &[&str] = if body["error"]["details"]["resets_at"].is_string() {
        &[
            ".error.details.resets_at",
            ".error.details.retry_after_secs",
        ]
    } else {
        &[]
    };
    error_body_with(name, response, times);
}

/// Snapshots a relay error body with the request id and `times` redacted.
fn error_body_with(name: &str, response: &super::TestResponse, times: &[&str]) {
    let body = response.json();
    let request_id = body["request_id"].as_str().unwrap_or_default();
    assert!(
        request_id.starts_with("req_"),
        "relay errors carry a request id: {body}"
    );
    assert_eq!(response.header("x-request-id"), Some(request_id));
    assert_eq!(response.header("content-type"), Some("application/json"));
    json_with(name, &body, times);
}

/// Snapshots any JSON value with the request id and `times` redacted.
pub fn json_with(name: &str, value: &serde_json::Value, times: &[&str]) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.add_redaction(".request_id", "[request_id]");
    for selector in times {
        settings.add_redaction(selector, "[time]");
    }
    settings.bind(|| insta::assert_json_snapshot!(name, value));
}
