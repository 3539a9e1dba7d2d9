//! The journal: what the upstream received, as received.

use std::time::Duration;

use mock_upstream::Answer;
use serde_json::{Value, json};

use crate::support::{TestResult, body, spawn};

#[tokio::test]
async fn journal_records_raw_body_bytes_and_every_header_line() -> TestResult {
    let env = spawn().await?;
    let raw_body = b"{\"model\":\"x\"} \xff\xfe".to_vec();

    env.post("/v1/messages?beta=true", "sk-up-A")
        .header("anthropic-beta", "context-1m-2025-08-07")
        .header("X-Custom", "one")
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .body(raw_body.clone())
        .send()
        .await?;

    let journal = env.mock.journal();
    assert_eq!(journal.len(), 1);
    let recorded = &journal[0];
    assert_eq!(recorded.method, "POST");
    assert_eq!(recorded.path, "/v1/messages");
    assert_eq!(recorded.query.as_deref(), Some("beta=true"));
    assert_eq!(recorded.credential.as_deref(), Some("sk-up-A"));
    assert_eq!(recorded.body, raw_body);
    let betas = recorded.header_all("Anthropic-Beta");
    assert_eq!(
        betas,
        ["context-1m-2025-08-07", "interleaved-thinking-2025-05-14"]
    );
    assert_eq!(recorded.header("x-custom"), Some("one"));
    assert!(
        recorded
            .headers
            .iter()
            .all(|(name, _)| name == &name.to_lowercase())
    );
    Ok(())
}

#[tokio::test]
async fn journal_over_http_lists_bodies_as_text_and_base64_and_delete_clears_it() -> TestResult {
    let env = spawn().await?;
    env.messages("sk-up-A", false).await?;
    env.get("/v1/models").bearer_auth("sk-up-B").send().await?;

    let listed: Value = env.get("/__mock/requests").send().await?.json().await?;
    let cleared = env.delete("/__mock/requests").send().await?;

    let sent = body(false).to_string();
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    assert_eq!(listed[0]["body"], sent);
    assert_eq!(listed[0]["body_len"], sent.len());
    assert_eq!(listed[0]["credential"], "sk-up-A");
    assert!(listed[0]["body_b64"].is_string());
    assert_eq!(listed[1]["path"], "/v1/models");
    assert_eq!(listed[1]["credential"], "sk-up-B");
    assert!(
        listed[1]["headers"]
            .as_array()
            .is_some_and(|lines| !lines.is_empty())
    );
    assert_eq!(cleared.status(), 204);
    assert!(env.mock.journal().is_empty());
    Ok(())
}

#[tokio::test]
async fn journal_holds_a_request_whose_client_left_during_the_delay() -> TestResult {
    let env = spawn().await?;
    env.mock
        .push_answers("sk-up-A", vec![Answer::default().delay_ms(2000)]);
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(100))
        .build()?;

    let result = impatient
        .post(env.url("/v1/messages"))
        .header("x-api-key", "sk-up-A")
        .json(&body(false))
        .send()
        .await;

    assert!(result.is_err());
    assert_eq!(env.mock.requests_for("sk-up-A").len(), 1);
    Ok(())
}

#[tokio::test]
async fn journal_takes_a_64_mib_body_whole() -> TestResult {
    let env = spawn().await?;
    let filler = "a".repeat(64 * 1024 * 1024);
    let large = json!({"model": "claude-sonnet-4-5-20250929", "max_tokens": 8,
        "messages": [{"role": "user", "content": filler}]})
    .to_string();

    let response = env
        .post("/v1/messages", "sk-up-A")
        .body(large.clone())
        .send()
        .await?;

    assert_eq!(response.status(), 200);
    let recorded = env.mock.journal();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].body, large.as_bytes());
    Ok(())
}

/// A request counts as in flight from its arrival until its answer's last
/// bytes are out: a client that has read a whole answer never sees it
/// still counted.
#[tokio::test]
async fn requests_in_flight_are_counted_until_their_answer_is_out() -> TestResult {
    let env = spawn().await?;
    env.mock
        .push_answers("sk-up-A", vec![Answer::default().hang()]);
    let hanging = {
        let request = env.post("/v1/messages", "sk-up-A").json(&body(false));
        tokio::spawn(request.send())
    };
    until(|| env.mock.in_flight() == 1).await;

    let streamed = env.messages("sk-up-A", true).await?.bytes().await?;
    let after_stream = env.mock.in_flight();
    let whole = env.messages("sk-up-A", false).await?.bytes().await?;
    let after_json = env.mock.in_flight();
    hanging.abort();
    until(|| env.mock.in_flight() == 0).await;

    assert!(!streamed.is_empty() && !whole.is_empty());
    assert_eq!(after_stream, 1, "only the hanging request");
    assert_eq!(after_json, 1, "only the hanging request");
    assert_eq!(env.mock.max_in_flight(), 2);
    Ok(())
}

/// Polls `done` until it holds, failing after ten seconds.
async fn until(done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition never held"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
