//! Sticky sessions: a conversation's turns stay on one account while it
//! can serve, and move when it cannot.

use std::time::Duration;

use claude_relay::scheduler::session;
use reqwest::header::HeaderMap;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::binaries::relay_command;
use crate::harness::env::account;
use crate::harness::fixtures::{self, CAPTURED_KEY};
use crate::harness::{Answer, K1, SONNET, TestEnv, snapshot};

const USER_ID: &str = r#"{"device_id":"dec0de0000000000000000000000000000000000000000000000000000000001","account_uuid":"","session_id":"5e55e55e-0000-4000-8000-0000000000c1"}"#;

/// One conversation's request: same metadata, system and first message.
fn turn(user_id: &str) -> String {
    json!({
        "model": SONNET, "max_tokens": 64, "stream": false,
        "metadata": {"user_id": user_id},
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "hi"}],
    })
    .to_string()
}

/// A and B with one priority: without stickiness, requests alternate.
fn equal_pair() -> Vec<serde_json::Value> {
    vec![account("A", 1), account("B", 1)]
}

/// Another conversation's request.
fn unrelated(n: u32) -> String {
    json!({"model": SONNET, "max_tokens": 8,
           "messages": [{"role": "user", "content": format!("unrelated {n}")}]})
    .to_string()
}

/// The account the conversation of `body`, sent with K1, is mapped to.
async fn sticky_of(env: &TestEnv, key_id: &str, body: &str, headers: &HeaderMap) -> Option<String> {
    let user_id = serde_json::from_str::<serde_json::Value>(body).expect("a JSON body")["metadata"]
        ["user_id"]
        .as_str()
        .map(str::to_owned);
    let identity = session::identity(user_id.as_deref(), headers, body.as_bytes())?;
    let name = session::sticky_name(key_id, SONNET, &identity);
    env.store
        .sticky_account(&name)
        .await
        .expect("reading the mapping")
}

/// Case C11: after a 429 the conversation moves to B and stays there;
/// when B is disabled too, the client is told when A is back.
#[tokio::test]
async fn conversation_leaves_a_rate_limited_account_and_stays_on_the_next() {
    let env = TestEnv::builder().two_accounts().start().await;
    let body = turn(USER_ID);
    let no_headers = HeaderMap::new();

    let r1 = env.post_messages(K1, body.clone()).await;
    let mapped_after_r1 = sticky_of(&env, "key-1", &body, &no_headers).await;
    env.mock.push_answers(
        "sk-up-A",
        vec![Answer::error(429, "rate_limit_error", "Rate limited").header("retry-after", "60")],
    );
    let r2 = env.post_messages(K1, body.clone()).await;
    let a_after_r2 = env.health("A").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let r3 = env.post_messages(K1, body.clone()).await;

    assert_eq!(r1.status, 200);
    assert_eq!(mapped_after_r1.as_deref(), Some("acct-a"));
    assert_eq!(r2.status, 200, "{}", r2.text());
    let (_, left) = a_after_r2.cooldown.expect("A is rate limited");
    assert!((55..=60).contains(&left.as_secs()), "{left:?}");
    assert_eq!(r3.status, 200);
    assert_eq!(env.seen_by("A").len(), 2, "A saw R1 and R2 only");
    assert_eq!(env.seen_by("B").len(), 2, "B saw R2's retry and R3");
    assert_eq!(
        sticky_of(&env, "key-1", &body, &no_headers)
            .await
            .as_deref(),
        Some("acct-b")
    );

    let redis_url = env.config.redis.url.expose_secret().to_owned();
    let disabled = relay_command(&redis_url, &env.config.redis.prefix)
        .args(["accounts", "disable", "acct-b"])
        .output()
        .expect("running claude-relay accounts disable");
    assert!(
        disabled.status.success(),
        "{}",
        String::from_utf8_lossy(&disabled.stderr)
    );

    let r4 = env.post_messages(K1, body).await;

    assert_eq!(r4.status, 503);
    assert_eq!(r4.error_code(), "no_upstream_available");
    let (_, left) = env.health("A").await.cooldown.expect("A still limited");
    let retry: u64 = r4.header("retry-after").unwrap().parse().unwrap();
    assert!(retry.abs_diff(left.as_secs()) <= 1, "{retry} vs {left:?}");
    assert!((50..=56).contains(&retry), "{retry}");
    assert_eq!(env.seen_by("A").len() + env.seen_by("B").len(), 4);
    let mut redacted = r4.json();
    redacted["error"]["details"]["retry_after_secs"] = json!("[seconds]");
    let message = redacted["error"]["message"].as_str().unwrap().to_owned();
    redacted["error"]["message"] = json!(message.replace(&retry.to_string(), "[seconds]"));
    snapshot::json("no_upstream_while_cooling_down", &redacted);
}

/// Two turns of one Claude Code conversation (`claude -p`, then
/// `--continue`) land on one account, although the pool's rotation points
/// elsewhere by the second turn.
#[tokio::test]
async fn continue_pair_from_claude_code_stays_on_one_account() {
    let env = TestEnv::builder()
        .accounts(equal_pair())
        .key(json!({"id": "key-cc", "name": "CC", "key": CAPTURED_KEY}))
        .start()
        .await;
    let captures = fixtures::all();
    let find = |name: &str| {
        captures
            .iter()
            .find(|capture| capture.file == name)
            .expect("the capture exists")
            .clone()
    };
    let first = find("claude-code-2.1.332-print-json-messages.json");
    let second = find("claude-code-2.1.332-print-continue-second-turn-messages.json");
    let http = reqwest::Client::new();

    let one = env.send(first.request(&http, &env.url(""))).await;
    let others = [
        env.post_messages(CAPTURED_KEY, unrelated(1)).await,
        env.post_messages(CAPTURED_KEY, unrelated(2)).await,
    ];
    let two = env.send(second.request(&http, &env.url(""))).await;

    assert_eq!(one.status, 200);
    assert!(others.iter().all(|other| other.status == 200));
    assert_eq!(two.status, 200);
    let a: Vec<_> = env.seen_by("A").iter().map(|r| r.body.clone()).collect();
    let b: Vec<_> = env.seen_by("B").iter().map(|r| r.body.clone()).collect();
    assert_eq!(
        a,
        [
            first.body_bytes(),
            unrelated(2).into_bytes(),
            second.body_bytes()
        ]
    );
    assert_eq!(
        b,
        [unrelated(1).into_bytes()],
        "rotation alone would have sent turn two to B"
    );
}

#[tokio::test]
async fn session_header_alone_keeps_a_conversation_together() {
    let env = TestEnv::builder().accounts(equal_pair()).start().await;
    let with_session = |session: &str, content: &str| {
        env.messages(
            K1,
            json!({"model": SONNET, "max_tokens": 8, "messages": [{"role": "user", "content": content}]})
                .to_string(),
        )
        .header("x-claude-code-session-id", session)
    };

    // Different first messages, so only the header ties s-1's turns.
    let statuses = [
        env.send(with_session("s-1", "one")).await.status,
        env.send(with_session("s-2", "two")).await.status,
        env.send(with_session("s-3", "three")).await.status,
        env.send(with_session("s-1", "four")).await.status,
    ];

    assert_eq!(statuses, [200; 4]);
    let sessions = |name| -> Vec<String> {
        env.seen_by(name)
            .iter()
            .map(|r| {
                r.header("x-claude-code-session-id")
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(sessions("A"), ["s-1", "s-3", "s-1"]);
    assert_eq!(sessions("B"), ["s-2"]);
}

#[tokio::test]
async fn without_any_session_id_the_opening_of_the_conversation_is_the_identity() {
    let env = TestEnv::builder().accounts(equal_pair()).start().await;
    let conversation = |turns: serde_json::Value| {
        json!({"model": SONNET, "max_tokens": 8, "system": "S", "messages": turns}).to_string()
    };
    let opening = conversation(json!([{"role": "user", "content": "plan a trip"}]));
    let later = conversation(json!([
        {"role": "user", "content": "plan a trip"},
        {"role": "assistant", "content": "Where to?"},
        {"role": "user", "content": "Lisbon"},
    ]));

    let statuses = [
        env.post_messages(K1, opening.clone()).await.status,
        env.post_messages(K1, unrelated(1)).await.status,
        env.post_messages(K1, unrelated(2)).await.status,
        env.post_messages(K1, later.clone()).await.status,
    ];

    assert_eq!(statuses, [200; 4]);
    let a: Vec<_> = env.seen_by("A").iter().map(|r| r.body.clone()).collect();
    assert_eq!(
        a,
        [
            opening.into_bytes(),
            unrelated(2).into_bytes(),
            later.into_bytes()
        ]
    );
}

#[tokio::test]
async fn sticky_mapping_expires_after_its_ttl_and_is_refreshed_by_use() {
    let env = TestEnv::builder()
        .two_accounts()
        .config(|config| config.scheduling.sticky_ttl = Duration::from_millis(1500))
        .start()
        .await;
    let body = turn(USER_ID);
    let no_headers = HeaderMap::new();

    let _ = env.post_messages(K1, body.clone()).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let _ = env.post_messages(K1, body.clone()).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let still_mapped = sticky_of(&env, "key-1", &body, &no_headers).await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let expired = sticky_of(&env, "key-1", &body, &no_headers).await;

    assert_eq!(
        still_mapped.as_deref(),
        Some("acct-a"),
        "the second turn refreshed it"
    );
    assert_eq!(expired, None);
}
