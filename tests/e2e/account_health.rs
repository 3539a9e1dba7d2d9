//! Case C13: an upstream that refuses the account's credential or says the
//! account is disabled takes it out until an operator acts; a refusal
//! about the request leaves it in.
//!
//! OAuth accounts, which refresh their token once before giving up, do not
//! exist yet; every account here is a Console account.

use mock_upstream::anthropic;

use claude_relay::store::records::HealthState;

use crate::harness::{Answer, K1, Profile, TestEnv, body, snapshot};

fn invalid_key() -> Answer {
    Answer::status(401).json(anthropic::error(
        "authentication_error",
        "invalid x-api-key: sk-up-A",
    ))
}

/// A request of a conversation of its own, so no sticky mapping steers it.
fn new_conversation(n: u32) -> String {
    serde_json::json!({"model": crate::harness::SONNET, "max_tokens": 8,
                       "messages": [{"role": "user", "content": format!("conversation {n}")}]})
    .to_string()
}

async fn held_state(env: &TestEnv, name: &str) -> Option<HealthState> {
    env.health(name).await.status.map(|status| status.state)
}

/// Case C13 a.
#[tokio::test]
async fn upstream_401_fails_over_and_the_account_stays_out() {
    let env = TestEnv::builder().two_accounts().start().await;
    env.mock.push_answers("sk-up-A", vec![invalid_key()]);

    let first = env.post_messages(K1, body(false)).await;
    let mut later = Vec::new();
    for _ in 0..10 {
        later.push(env.post_messages(K1, body(false)).await.status);
    }

    assert_eq!(first.status, 200);
    assert_eq!(later, [200; 10]);
    assert_eq!(env.seen_by("A").len(), 1);
    assert_eq!(env.seen_by("B").len(), 11);
    let health = env.health("A").await;
    assert_eq!(
        health.status.map(|s| s.state),
        Some(HealthState::Unauthorized)
    );
    assert_eq!(health.cooldown, None, "a status, not a timed cooldown");
}

/// Case C13 b: the mock's ban profile answers with a configured marker.
#[tokio::test]
async fn ban_403_disables_the_account_and_fails_over() {
    let env = TestEnv::builder()
        .two_accounts()
        .profile("sk-up-A", Profile::Banned)
        .start()
        .await;

    let first = env.post_messages(K1, body(false)).await;
    let second = env.post_messages(K1, body(false)).await;

    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(env.seen_by("A").len(), 1);
    assert_eq!(held_state(&env, "A").await, Some(HealthState::Blocked));
}

/// Case C13 c: a 401 blames the account's credential, not the user's key,
/// so the client never sees a 401 nor the upstream's text.
#[tokio::test]
async fn upstream_401_on_the_only_account_becomes_503_without_upstream_text() {
    let env = TestEnv::start().await;
    env.mock.push_answers("sk-up-A", vec![invalid_key()]);

    let response = env.post_messages(K1, body(false)).await;
    let next = env.post_messages(K1, body(false)).await;

    assert_eq!(response.status, 503);
    assert_eq!(response.error_code(), "no_upstream_available");
    assert!(!response.text().contains("sk-up-A"));
    assert!(!response.text().contains("authentication_error"));
    assert_eq!(response.json()["error"]["details"]["upstream_status"], 401);
    assert_eq!(
        response.header("retry-after"),
        None,
        "no cooldown ends by itself"
    );
    snapshot::error_body("no_upstream_after_upstream_401", &response);
    assert_eq!(next.status, 503);
    assert_eq!(next.error_code(), "no_upstream_available");
    assert_eq!(
        env.seen_by("A").len(),
        1,
        "a held account gets no more requests"
    );
}

/// Note of case C13: a 403 about the request tries the next account but
/// does not disable this one.
#[tokio::test]
async fn request_level_403_tries_the_next_account_and_disables_nothing() {
    let env = TestEnv::builder().two_accounts().start().await;
    env.mock.push_answers(
        "sk-up-A",
        vec![Answer::error(
            403,
            "permission_error",
            "Your organization does not have access to claude-opus-4-5.",
        )],
    );

    let first = env.post_messages(K1, body(false)).await;
    let second = env.post_messages(K1, new_conversation(2)).await;

    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(env.seen_by("A").len(), 2, "A still takes requests");
    assert_eq!(env.seen_by("B").len(), 1);
    assert_eq!(held_state(&env, "A").await, None);
}

#[tokio::test]
async fn operator_enable_puts_a_held_account_back_at_once() {
    let env = TestEnv::builder().two_accounts().start().await;
    env.mock.push_answers("sk-up-A", vec![invalid_key()]);
    let _ = env.post_messages(K1, body(false)).await;

    let said = env.accounts_cli(&["enable", "acct-a"]).await.unwrap();
    let after = env.post_messages(K1, new_conversation(2)).await;

    assert!(said.contains("acct-a enabled"), "{said}");
    assert_eq!(after.status, 200);
    assert_eq!(held_state(&env, "A").await, None);
    assert_eq!(env.seen_by("A").len(), 2);
}

#[tokio::test]
async fn configured_markers_hold_accounts_too() {
    let env = TestEnv::builder()
        .two_accounts()
        .config(|config| {
            config.health.markers.push(claude_relay::config::Marker {
                status: 403,
                error_type: "permission_error".into(),
                message: "suspended for abuse".into(),
            })
        })
        .start()
        .await;
    env.mock.push_answers(
        "sk-up-A",
        vec![Answer::error(
            403,
            "permission_error",
            "Account SUSPENDED for abuse.",
        )],
    );

    let response = env.post_messages(K1, body(false)).await;

    assert_eq!(response.status, 200);
    assert_eq!(held_state(&env, "A").await, Some(HealthState::Blocked));
}
