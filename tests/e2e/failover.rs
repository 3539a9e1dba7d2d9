//! Failover across accounts before the first byte, and what the client
//! gets when every attempt failed.

use std::time::Duration;

use serde_json::json;

use crate::harness::env::account;
use crate::harness::fixtures::{self, CAPTURED_KEY};
use crate::harness::{Answer, K1, Profile, TestEnv, body, snapshot};

fn restricted_account() -> serde_json::Value {
    json!({"id": "acct-r", "name": "R", "base_url": "${MOCK_URL}",
           "credential": "sk-up-R", "priority": 1, "schedulable": true})
}

/// A relay chained to another relay that only accepts Claude Code: the
/// upstream must see the real User-Agent, and its refusal must reach curl
/// users verbatim.
#[tokio::test]
async fn chained_relay_sees_the_real_client_and_its_refusal_is_relayed_verbatim() {
    let env = TestEnv::builder()
        .accounts(vec![restricted_account()])
        .profile("sk-up-R", Profile::ClientRestricted)
        .key(json!({"id": "key-open", "name": "Open", "key": CAPTURED_KEY}))
        .start()
        .await;
    let capture = fixtures::all()
        .into_iter()
        .find(|c| c.file == "claude-code-2.1.332-print-json-messages.json")
        .unwrap();

    let from_claude_code = env
        .send(capture.request(&reqwest::Client::new(), &env.url("")))
        .await;
    let from_curl = env
        .send(
            env.messages(CAPTURED_KEY, body(false))
                .header("user-agent", "curl/8.5.0"),
        )
        .await;

    assert_eq!(from_claude_code.status, 200, "{}", from_claude_code.text());
    let seen = env.mock.requests_for("sk-up-R");
    assert_eq!(seen[0].header("user-agent"), capture.header("User-Agent"));
    assert_eq!(from_curl.status, 403);
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].header("user-agent"), Some("curl/8.5.0"));
    assert_eq!(from_curl.body, seen_answer_body(&env, "curl/8.5.0").await);
    snapshot::json("chained_relay_client_not_allowed", &from_curl.json());
}

/// The body the restricted profile gives a client with this User-Agent,
/// asked directly.
async fn seen_answer_body(env: &TestEnv, ua: &str) -> bytes::Bytes {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/messages", env.mock.url()))
        .header("x-api-key", "sk-up-R")
        .header("user-agent", ua)
        .body(body(false))
        .send()
        .await
        .expect("asking the mock directly");
    response.bytes().await.expect("the mock's answer")
}

#[tokio::test]
async fn account_errors_fail_over_to_the_next_account_by_priority() {
    for status in [403, 429, 500, 503, 529] {
        let env = TestEnv::builder().two_accounts().start().await;
        env.mock.push_answers(
            "sk-up-A",
            vec![Answer::error(status, "api_error", "account trouble")],
        );

        let response = env.post_messages(K1, body(false)).await;

        assert_eq!(response.status, 200, "after {status}");
        assert_eq!(env.seen_by("A").len(), 1);
        assert_eq!(env.seen_by("B").len(), 1);
    }
}

#[tokio::test]
async fn when_every_attempt_fails_the_last_upstream_answer_is_relayed_verbatim() {
    let env = TestEnv::builder().two_accounts().start().await;
    let limited = |after: &str| {
        Answer::error(
            429,
            "rate_limit_error",
            "Number of requests has exceeded your rate limit",
        )
        .header("retry-after", after)
        .header("request-id", &format!("req_429_{after}"))
        .header("anthropic-ratelimit-requests-remaining", "0")
    };
    env.mock.push_answers("sk-up-A", vec![limited("20")]);
    env.mock.push_answers("sk-up-B", vec![limited("40")]);

    let response = env.post_messages(K1, body(false)).await;

    assert_eq!(response.status, 429);
    assert_eq!(response.header("request-id"), Some("req_429_40"));
    assert_eq!(
        response.header("anthropic-ratelimit-requests-remaining"),
        Some("0")
    );
    assert_eq!(response.json()["error"]["type"], "rate_limit_error");
    // B's own answer said 40, but A is usable again after 20.
    assert_eq!(response.header("retry-after"), Some("20"));
}

#[tokio::test]
async fn at_most_three_accounts_are_tried() {
    let accounts = ["A", "B", "C", "D"]
        .iter()
        .zip(1..)
        .map(|(name, p)| account(name, p))
        .collect();
    let mut builder = TestEnv::builder().accounts(accounts);
    for name in ["C", "D"] {
        builder = builder.profile(&format!("sk-up-{name}"), Profile::Ok);
    }
    let env = builder.start().await;
    for name in ["A", "B", "C"] {
        env.mock.push_answers(
            &format!("sk-up-{name}"),
            vec![Answer::error(500, "api_error", "down")],
        );
    }

    let response = env.post_messages(K1, body(false)).await;

    assert_eq!(response.status, 500);
    assert!(env.seen_by("D").is_empty());
}

#[tokio::test]
async fn last_attempt_that_cannot_connect_gets_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let env = TestEnv::builder()
        .accounts(vec![
            json!({"id": "acct-dead", "name": "Dead", "base_url": dead_url,
                              "credential": "sk-up-dead", "priority": 1, "schedulable": true}),
        ])
        .start()
        .await;

    let response = env.post_messages(K1, body(false)).await;

    assert_eq!(response.status, 502);
    snapshot::error_body("upstream_unreachable", &response);
}

#[tokio::test]
async fn refused_connection_fails_over_to_a_live_account() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let env = TestEnv::builder()
        .accounts(vec![
            json!({"id": "acct-dead", "name": "Dead", "base_url": dead_url,
                   "credential": "sk-up-dead", "priority": 1, "schedulable": true}),
            account("B", 2),
        ])
        .start()
        .await;

    let response = env.post_messages(K1, body(false)).await;

    assert_eq!(response.status, 200);
    assert_eq!(env.seen_by("B").len(), 1);
}

#[tokio::test]
async fn silent_upstream_gets_504_after_the_first_byte_timeout() {
    let env = TestEnv::builder()
        .config(|config| config.upstream.first_byte_timeout = Duration::from_millis(300))
        .start()
        .await;
    env.mock
        .push_answers("sk-up-A", vec![Answer::default().hang()]);

    let response = env.post_messages(K1, body(false)).await;

    assert_eq!(response.status, 504);
    snapshot::error_body("upstream_timeout", &response);
}

#[tokio::test]
async fn no_schedulable_account_gets_503() {
    let mut idle = account("A", 1);
    idle["schedulable"] = json!(false);
    let env = TestEnv::builder().accounts(vec![idle]).start().await;

    let response = env.post_messages(K1, body(false)).await;

    assert_eq!(response.status, 503);
    snapshot::error_body("no_upstream_available", &response);
    assert!(env.mock.journal().is_empty());
}

/// An upstream error body past what the relay reads before its verdict
/// still reaches the client whole, as the upstream wrote it.
#[tokio::test]
async fn a_last_error_answer_larger_than_the_judged_head_is_relayed_whole() {
    let env = TestEnv::builder().two_accounts().start().await;
    let long = "x".repeat(3 * 1024 * 1024);
    env.mock.push_answers(
        "sk-up-A",
        vec![Answer::error(429, "rate_limit_error", &long).header("retry-after", "5")],
    );
    env.mock.push_answers(
        "sk-up-B",
        vec![Answer::error(400, "invalid_request_error", &long)],
    );

    let response = env.post_messages(K1, body(false)).await;

    assert_eq!(response.status, 400);
    let sent = response.json();
    assert_eq!(
        sent["error"]["message"].as_str().map(str::len),
        Some(long.len())
    );
    assert_eq!(env.seen_by("A").len(), 1);
    assert_eq!(env.seen_by("B").len(), 1);

    // The same when it is the last of the failed attempts.
    let alone = TestEnv::start().await;
    alone.mock.push_answers(
        "sk-up-A",
        vec![Answer::error(529, "overloaded_error", &long)],
    );
    let last = alone.post_messages(K1, body(false)).await;
    assert_eq!(last.status, 529);
    let sent = last.json();
    assert_eq!(
        sent["error"]["message"].as_str().map(str::len),
        Some(long.len())
    );
}

/// An error answer the upstream cut short reaches the client cut short
/// too (its read fails), never as a complete body that does not parse.
#[tokio::test]
async fn an_error_answer_the_upstream_cut_is_cut_for_the_client_too() {
    let env = TestEnv::start().await;
    let long = "x".repeat(3 * 1024 * 1024);
    env.mock.push_answers(
        "sk-up-A",
        vec![Answer::error(400, "invalid_request_error", &long).cut_after_bytes(500_000)],
    );

    let response = env.messages(K1, body(false)).send().await.unwrap();

    assert_eq!(response.status(), 400);
    assert!(response.bytes().await.is_err(), "a cut body read as whole");
}

/// The same for a streamed error answer cut past the judged head: the
/// client's read fails; the relay adds no event of its own to make it
/// look finished.
#[tokio::test]
async fn a_long_streamed_error_answer_the_upstream_cut_is_cut_for_the_client_too() {
    let env = TestEnv::start().await;
    let long = "x".repeat(2 * 1024 * 1024);
    let event = format!(
        "event: error\ndata: {}\n\n",
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": long}})
    );
    env.mock.push_answers(
        "sk-up-A",
        vec![
            Answer::sse(vec![mock_upstream::Chunk::text(&event)])
                .with_status(400)
                .cut_after_bytes(1_500_000),
        ],
    );

    let response = env.messages(K1, body(true)).send().await.unwrap();

    assert_eq!(response.status(), 400);
    assert!(response.bytes().await.is_err(), "a cut body read as whole");
}
