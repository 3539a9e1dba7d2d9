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
