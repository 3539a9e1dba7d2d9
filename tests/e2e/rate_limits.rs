//! Case C12: an upstream 429 takes the account out for as long as the
//! upstream says, capped, fails over at once, and when everything is
//! limited the client learns when to come back.

use std::time::{Duration, Instant};

use claude_relay::store::records::CooldownReason;
use serde_json::json;

use crate::harness::{Answer, K1, SONNET, TestEnv, body};

fn limited(retry_after: &str) -> Answer {
    Answer::error(
        429,
        "rate_limit_error",
        "Number of requests has exceeded your rate limit",
    )
    .header("retry-after", retry_after)
}

fn conversation(session: &str) -> String {
    let user_id = format!("user_{}_account__session_{session}", "ab".repeat(32));
    json!({"model": SONNET, "max_tokens": 64, "metadata": {"user_id": user_id},
           "messages": [{"role": "user", "content": "hi"}]})
    .to_string()
}

async fn cooldown_of(env: &TestEnv, name: &str) -> (CooldownReason, Duration) {
    env.health(name)
        .await
        .cooldown
        .map(|(cooldown, left)| (cooldown.reason, left))
        .unwrap_or_else(|| panic!("{name} has no cooldown"))
}

/// Case C12 a.
#[tokio::test]
async fn retry_after_cools_the_account_down_and_b_answers_at_once() {
    let env = TestEnv::builder().two_accounts().start().await;
    env.mock.push_answers("sk-up-A", vec![limited("20")]);

    let started = Instant::now();
    let response = env.post_messages(K1, body(false)).await;
    let took = started.elapsed();

    assert_eq!(response.status, 200);
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(env.seen_by("B").len(), 1);
    let (reason, left) = cooldown_of(&env, "A").await;
    assert_eq!(reason, CooldownReason::RateLimited);
    assert!((15..=25).contains(&left.as_secs()), "{left:?}");
}

/// Case C12 a2: a short cooldown ends by itself and new conversations go
/// back to the preferred account.
#[tokio::test]
async fn after_a_short_cooldown_a_new_conversation_goes_to_the_preferred_account_again() {
    let env = TestEnv::builder().two_accounts().start().await;
    env.mock.push_answers("sk-up-A", vec![limited("2")]);

    let first = env.post_messages(K1, conversation("first")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = env.post_messages(K1, conversation("second")).await;

    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(env.seen_by("A").len(), 2);
    assert_eq!(env.seen_by("B").len(), 1);
    assert_eq!(env.health("A").await.cooldown, None);
}

/// Case C12 b.
#[tokio::test]
async fn unified_reset_header_limits_the_account_until_that_moment() {
    let env = TestEnv::builder().two_accounts().start().await;
    let reset = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    env.mock.push_answers(
        "sk-up-A",
        vec![
            Answer::error(429, "rate_limit_error", "Rate limited")
                .header("anthropic-ratelimit-unified-reset", &reset.to_string()),
        ],
    );

    let response = env.post_messages(K1, body(false)).await;

    assert_eq!(response.status, 200);
    let (reason, left) = cooldown_of(&env, "A").await;
    assert_eq!(reason, CooldownReason::RateLimited);
    assert!(left.as_secs().abs_diff(3600) <= 5, "{left:?}");
}

#[tokio::test]
async fn reset_headers_are_capped_at_five_hours_by_default() {
    let env = TestEnv::builder().two_accounts().start().await;
    let reset = time::OffsetDateTime::now_utc() + time::Duration::days(2);
    let rfc3339 = reset
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    env.mock.push_answers(
        "sk-up-A",
        vec![
            Answer::error(429, "rate_limit_error", "Rate limited")
                .header("anthropic-ratelimit-tokens-reset", &rfc3339),
        ],
    );

    let _ = env.post_messages(K1, body(false)).await;

    let (_, left) = cooldown_of(&env, "A").await;
    assert!(left.as_secs().abs_diff(5 * 3600) <= 5, "{left:?}");
}

/// Case C12 c: every account limited, so the client gets the last answer
/// with the soonest moment any account is usable again.
#[tokio::test]
async fn all_accounts_limited_gives_the_last_429_with_the_soonest_retry_after() {
    let env = TestEnv::builder().two_accounts().start().await;
    env.mock.push_answers("sk-up-A", vec![limited("20")]);
    let b_answer = mock_upstream::anthropic::error("rate_limit_error", "B is limited");
    env.mock.push_answers(
        "sk-up-B",
        vec![
            Answer::status(429)
                .json(b_answer.clone())
                .header("retry-after", "40"),
        ],
    );

    let response = env.post_messages(K1, body(false)).await;

    assert_eq!(response.status, 429);
    assert_eq!(response.body, b_answer.to_string().as_bytes());
    assert_eq!(response.header("retry-after"), Some("20"));
    let (_, b_left) = cooldown_of(&env, "B").await;
    assert!((35..=40).contains(&b_left.as_secs()), "{b_left:?}");
}

/// Case C12 d: the 429 comes before any SSE byte, so the client sees one
/// clean stream, B's.
#[tokio::test]
async fn streamed_request_fails_over_before_the_first_byte() {
    let env = TestEnv::builder().two_accounts().start().await;
    env.mock.push_answers("sk-up-A", vec![limited("20")]);

    let started = Instant::now();
    let response = env.post_messages(K1, body(true)).await;

    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(response.status, 200);
    let text = response.text();
    assert_eq!(text.matches("event: message_start").count(), 1, "{text}");
    assert!(
        text.trim_end()
            .ends_with(r#"data: {"type":"message_stop"}"#),
        "{text}"
    );
    assert!(!text.contains("rate_limit_error"));
    let (reason, left) = cooldown_of(&env, "A").await;
    assert_eq!(reason, CooldownReason::RateLimited);
    assert!((15..=25).contains(&left.as_secs()), "{left:?}");
}

#[tokio::test]
async fn retry_after_is_capped_at_thirty_minutes_by_default() {
    let env = TestEnv::builder().two_accounts().start().await;
    env.mock.push_answers("sk-up-A", vec![limited("86400")]);

    let _ = env.post_messages(K1, body(false)).await;

    let (_, left) = cooldown_of(&env, "A").await;
    assert!(left.as_secs().abs_diff(1800) <= 5, "{left:?}");
}

#[tokio::test]
async fn configured_cooldowns_replace_the_defaults() {
    let env = TestEnv::builder()
        .two_accounts()
        .config(|config| {
            config.health.rate_limit = Duration::from_secs(7);
            config.health.server_error = Duration::from_secs(11);
        })
        .start()
        .await;
    env.mock.push_answers(
        "sk-up-A",
        vec![Answer::error(429, "rate_limit_error", "limited")],
    );
    env.mock
        .push_answers("sk-up-B", vec![Answer::error(500, "api_error", "boom")]);

    let response = env.post_messages(K1, body(false)).await;

    assert_eq!(response.status, 500);
    assert_eq!(response.header("retry-after"), Some("7"));
    assert!(cooldown_of(&env, "A").await.1 <= Duration::from_secs(7));
    let (reason, left) = cooldown_of(&env, "B").await;
    assert_eq!(reason, CooldownReason::ServerError);
    assert!((9..=11).contains(&left.as_secs()), "{left:?}");
}
