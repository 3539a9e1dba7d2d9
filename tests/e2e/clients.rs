//! Real clients: every captured request replayed through the relay, and the
//! official Python SDK run against it.

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;

use crate::harness::TestEnv;
use crate::harness::fixtures::{self, CAPTURED_KEY};

/// Headers the upstream must receive exactly as the client sent them.
fn forwarded_by_policy(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["content-type", "accept", "user-agent", "x-app"].contains(&name.as_str())
        || ["anthropic-", "x-stainless-", "x-claude-code-"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
}

#[tokio::test]
async fn every_captured_request_reaches_the_upstream_as_the_client_sent_it() {
    let env = TestEnv::builder()
        .key(json!({"id": "key-captured", "name": "Captured", "key": CAPTURED_KEY}))
        .start()
        .await;
    let http = reqwest::Client::new();
    let captures = fixtures::all();
    assert_eq!(captures.len(), 21, "every capture in fixtures/clients");

    for capture in &captures {
        env.mock.clear_journal();

        let response = env.send(capture.request(&http, &env.url(""))).await;

        assert_eq!(
            response.status,
            200,
            "{}: {}",
            capture.file,
            response.text()
        );
        let seen = env.seen_by("A");
        assert_eq!(seen.len(), 1, "{}", capture.file);
        let upstream = &seen[0];
        assert_eq!(upstream.method, capture.method, "{}", capture.file);
        assert_eq!(upstream.path, capture.path, "{}", capture.file);
        assert_eq!(
            upstream.query.clone().unwrap_or_default(),
            capture.query,
            "{}",
            capture.file
        );
        assert!(
            upstream.body == capture.body_bytes(),
            "{}: body changed",
            capture.file
        );
        for (name, value) in &capture.headers {
            let lower = name.to_ascii_lowercase();
            if forwarded_by_policy(&lower) {
                assert_eq!(
                    upstream.header_all(&lower),
                    [value.as_str()],
                    "{}: {name}",
                    capture.file
                );
            } else if !["host", "content-length", "accept-encoding", "x-api-key"]
                .contains(&lower.as_str())
            {
                assert!(
                    upstream.header(&lower).is_none(),
                    "{}: {name} leaked",
                    capture.file
                );
            }
        }
        assert_eq!(
            upstream.header_all("x-api-key"),
            ["sk-up-A"],
            "{}",
            capture.file
        );
        assert_eq!(
            upstream.header_all("accept-encoding"),
            ["identity"],
            "{}: the relay reads what it relays, so it asks for plain bytes",
            capture.file
        );
        assert!(
            upstream.header("authorization").is_none(),
            "{}",
            capture.file
        );
        if capture.body.get("stream") == Some(&json!(true)) {
            assert!(
                response
                    .header("content-type")
                    .unwrap()
                    .starts_with("text/event-stream")
            );
        }
    }
}

/// The venv `scripts/sdk-venv.sh` creates with the pinned SDK.
fn sdk_python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/sdk-venv/bin/python");
    assert!(
        python.exists(),
        "The Anthropic Python SDK venv is missing: run scripts/sdk-venv.sh (scripts/test.sh does)."
    );
    python
}

#[tokio::test]
async fn official_python_sdk_works_against_the_relay() {
    let env = TestEnv::builder()
        .key(json!({"id": "key-sdk", "name": "SDK", "key": CAPTURED_KEY,
                    "allowed_clients": ["anthropic_sdk"]}))
        .start()
        .await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/check_sdk.py");

    let output = tokio::process::Command::from(Command::new(sdk_python()))
        .arg(script)
        .env("ANTHROPIC_BASE_URL", env.url(""))
        .env("ANTHROPIC_API_KEY", CAPTURED_KEY)
        .env_remove("ANTHROPIC_AUTH_TOKEN")
        .output()
        .await
        .expect("running the SDK check");

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "SDK check failed\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("SDK check report");
    assert_eq!(report["sdk_version"], "2.17.0");
    assert_eq!(report["create"]["stop_reason"], "end_turn");
    assert!(report["create"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(!report["stream"]["text"].as_str().unwrap().is_empty());
    assert!(report["stream"]["output_tokens"].as_u64().unwrap() > 0);
    assert!(report["count_tokens"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(report["models"]["ids"].as_array().unwrap().len() > 1);
    let seen = env.seen_by("A");
    assert_eq!(seen.len(), 4);
    for request in &seen {
        assert_eq!(
            request.header("user-agent"),
            Some("Anthropic/Python 2.17.0")
        );
        assert_eq!(request.header("anthropic-version"), Some("2026-10-21"));
        assert!(request.header("authorization").is_none());
    }
}
