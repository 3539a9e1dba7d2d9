//! The happy paths, JSON and SSE, through the whole stack.

use crate::harness::{Answer, Chunk, K1, SONNET, TestEnv, body};
use mock_upstream::sse;

#[tokio::test]
async fn json_message_is_relayed_with_upstream_usage() {
    let env = TestEnv::start().await;

    let response = env.post_messages(K1, body(false)).await;

    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    let message = response.json();
    assert_eq!(message["type"], "message");
    assert_eq!(message["model"], SONNET);
    assert!(message["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(response.header("request-id").unwrap().starts_with("req_"));
    assert!(response.header("x-request-id").unwrap().starts_with("req_"));
    assert_eq!(env.seen_by("A").len(), 1);
}

#[tokio::test]
async fn sse_bytes_reach_the_client_exactly_as_the_upstream_sent_them() {
    let env = TestEnv::start().await;
    let stream = sse::standard(SONNET, 12, 0, 0, 42);
    let chunks: Vec<Chunk> = stream
        .as_bytes()
        .chunks(37)
        .map(|part| Chunk::bytes(part.to_vec()))
        .collect();
    env.mock.push_answers("sk-up-A", vec![Answer::sse(chunks)]);

    let response = env.post_messages(K1, body(true)).await;

    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(response.text(), stream);
}

#[tokio::test]
async fn default_streamed_answer_has_every_event_in_order() {
    let env = TestEnv::start().await;

    let response = env.post_messages(K1, body(true)).await;

    let events: Vec<&str> = std::str::from_utf8(&response.body)
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("event: "))
        .collect();
    assert_eq!(events.first(), Some(&"message_start"));
    assert_eq!(events.last(), Some(&"message_stop"));
    assert!(events.contains(&"message_delta"));
}

#[tokio::test]
async fn health_and_ready_answer_when_redis_is_up() {
    let env = TestEnv::start().await;

    let health = env.send(env.request(reqwest::Method::GET, "/health")).await;
    let ready = env.send(env.request(reqwest::Method::GET, "/ready")).await;

    assert_eq!(health.status, 200);
    assert_eq!(ready.status, 200);
}

#[tokio::test]
async fn ready_is_503_in_the_envelope_when_redis_is_unreachable() {
    let env = TestEnv::builder()
        .config(|config| {
            config.redis.url = "redis://127.0.0.1:1".to_owned().into();
            config.redis.connect_timeout = std::time::Duration::from_millis(300);
        })
        .start_without_seed()
        .await;

    let ready = env.send(env.request(reqwest::Method::GET, "/ready")).await;
    let message = env.post_messages(K1, body(false)).await;

    assert_eq!(ready.status, 503);
    assert_eq!(ready.error_code(), "store_unavailable");
    assert_eq!(message.status, 503);
    crate::harness::snapshot::error_body("store_unavailable", &message);
    assert!(env.mock.journal().is_empty());
}

/// A record the relay cannot read is its own fault, not the client's: a
/// 500 whose body says nothing of the cause (the log line has it).
#[tokio::test]
async fn unreadable_key_record_gets_500_internal_error_without_the_cause() {
    let env = TestEnv::start().await;
    let hash = claude_relay::auth::hash_key(K1, None);
    // Written by hand on purpose: the relay's own code never writes this.
    let _: () = redis::cmd("HSET")
        .arg(env.store.names().keys_by_hash())
        .arg(&hash)
        .arg("{not json")
        .query_async(&mut env.store.conn())
        .await
        .unwrap();

    let response = env.post_messages(K1, body(false)).await;

    assert_eq!(response.status, 500);
    crate::harness::snapshot::error_body("internal_error", &response);
    assert!(!response.text().contains("not json"));
    assert!(env.mock.journal().is_empty());
}

/// The metrics are process-wide (every relay of the test binary shares
/// them), so this checks names, labels and that a request moved them.
#[tokio::test]
async fn metrics_count_requests_attempts_and_tokens_without_key_labels() {
    let env = TestEnv::start().await;
    env.post_messages(K1, body(true)).await;
    env.usage_after(claude_relay::usage::record::Subject::Key("key-1"), 1)
        .await;

    let scrape = env
        .send(env.request(reqwest::Method::GET, "/metrics"))
        .await;

    assert_eq!(scrape.status, 200);
    assert!(
        scrape
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = scrape.text();
    let line = |prefix: &str| {
        text.lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .to_owned()
    };
    let value = |prefix: &str| -> f64 { line(prefix).rsplit(' ').next().unwrap().parse().unwrap() };
    assert!(value("relay_requests_total{route=\"messages\",status=\"200\"}") >= 1.0);
    assert!(value("relay_upstream_attempts_total{account=\"acct-a\",status=\"200\"}") >= 1.0);
    assert!(value("relay_tokens_total{kind=\"output\"}") >= 1.0);
    assert!(value("relay_cost_nano_usd_total") > 0.0);
    assert!(text.contains("relay_request_duration_seconds_bucket{route=\"messages\""));
    assert!(text.contains("relay_first_byte_seconds_bucket{route=\"messages\""));
    assert!(!text.contains(&K1[3..]), "no key in the metrics");
    // Rare events are series from the start, so an alert sees 0, not nothing.
    line("relay_streams_cut_total ");
    line("relay_waiting_for_slot ");
    line("relay_usage_writes_failed_total{retried=\"no\"} ");
}

#[test]
fn a_missing_redis_image_is_reported_with_the_command_that_builds_it() {
    let said = crate::harness::redis::preflight("claude-relay-redis:no-such-tag").unwrap_err();

    assert!(said.contains("scripts/build-redis-image.sh"), "{said}");
    assert!(crate::harness::redis::preflight(&crate::harness::redis::image_name()).is_ok());
}
