//! What clients, upstreams and Redis do wrong, and what the relay must
//! still do: answer, count each answer once, and let go of what it holds.


use crate::harness::{Answer, K1, TestEnv, body};

/// An upstream's `retry-after` too large for a duration once made the
/// request's task panic: the client's connection closed without an answer.
#[tokio::test]
async fn a_429_whose_retry_after_is_past_any_duration_still_gets_an_answer() {
    let env = TestEnv::start().await;
    env.mock.push_answers(
        "sk-up-A",
        vec![
            Answer::error(429, "rate_limit_error", "slow down")
                .header("retry-after", "99999999999999999999"),
        ],
    );

    let response = env.post_messages(K1, body(false)).await;

    assert!([429, 500].contains(&response.status), "{response:?}");
    assert_eq!(response.json()["type"], "error");
}

/// Ids are kept in Redis names with every character outside a small set
/// replaced: `a b` and `a_b` would share usage, leases and budgets.
#[tokio::test]
async fn a_key_id_with_characters_redis_names_do_not_keep_is_refused() {
    let env = TestEnv::start().await;

    let spaced = env
        .keys_cli(&["create", "--name", "K", "--id", "a b"])
        .await;
    let braced = env
        .keys_cli(&["create", "--name", "K", "--id", "{key:x}"])
        .await;
    let plain = env
        .keys_cli(&["create", "--name", "K", "--id", "a_b"])
        .await;

    assert!(spaced.is_err());
    assert!(braced.is_err());
    assert!(plain.is_ok(), "{plain:?}");
}
