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
