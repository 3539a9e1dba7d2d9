//! Every kind of upstream answer × (JSON, SSE) × (one account, two
//! accounts). Each cell asserts what the client got, which accounts the
//! mock saw, and the account state the relay left in Redis.

use std::ops::RangeInclusive;
use std::time::Duration;

use claude_relay::store::Health;
use claude_relay::store::records::{CooldownReason, HealthState};
use mock_upstream::anthropic;
use serde_json::{Value, json};

use crate::harness::env::account;
use crate::harness::{Answer, K1, TestEnv, TestResponse, body};

/// What account A's upstream does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Answer(u16, &'static str, &'static str),
    /// 429 with these headers.
    Limited(Headers),
    Timeout,
    Refused,
    Success,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Headers {
    None,
    RetryAfter,
    UnifiedReset,
}

/// What the client gets when only A exists.
#[derive(Debug, Clone)]
enum Client {
    Success,
    /// A's answer, byte for byte, with this `retry-after`.
    Verbatim(Option<RangeInclusive<u64>>),
    /// The relay's own error with this code and `retry-after`.
    Relay(u16, &'static str, Option<RangeInclusive<u64>>),
}

/// A's state in Redis afterwards.
#[derive(Debug, Clone)]
enum State {
    Untouched,
    Cooling(CooldownReason, RangeInclusive<u64>),
    Held(HealthState),
}

struct Row {
    fault: Fault,
    alone: Client,
    /// With B behind A: does the request move on to B?
    fails_over: bool,
    state: State,
}

const ALL: [bool; 2] = [false, true];

async fn check(row: Row) {
    for stream in ALL {
        for two in ALL {
            let cell = format!("{:?}, stream={stream}, two accounts={two}", row.fault);
            let env = start(row.fault, two).await;

            let response = env.post_messages(K1, body(stream)).await;

            let served_by_b = two && row.fails_over;
            if served_by_b {
                assert_success(&response, stream, &cell);
            } else {
                assert_client(&row, &response, stream, &cell);
            }
            let seen_a = usize::from(row.fault != Fault::Refused);
            assert_eq!(env.seen_by("A").len(), seen_a, "A's requests, {cell}");
            let seen_b = if two { usize::from(served_by_b) } else { 0 };
            assert_eq!(env.seen_by("B").len(), seen_b, "B's requests, {cell}");
            assert_state(&env.health("A").await, &row.state, &cell);
            if two {
                let b = env.health("B").await;
                assert_state(&b, &State::Untouched, &format!("B, {cell}"));
                assert_eq!(b.last_used_ms.is_some(), served_by_b, "B used, {cell}");
            }
        }
    }
}

async fn start(fault: Fault, two: bool) -> TestEnv {
    let mut a = account("A", 1);
    if fault == Fault::Refused {
        a["base_url"] = json!(dead_url());
    }
    let mut accounts = vec![a];
    if two {
        accounts.push(account("B", 2));
    }
    let env = TestEnv::builder()
        .accounts(accounts)
        .config(|config| config.upstream.first_byte_timeout = Duration::from_millis(500))
        .start()
        .await;
    if let Some(answer) = scripted(fault) {
        env.mock.push_answers("sk-up-A", vec![answer]);
    }
    env
}

fn dead_url() -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let url = format!("http://{}", closed.local_addr().expect("its address"));
    drop(closed);
    url
}

fn error_json(fault: Fault) -> Value {
    match fault {
        Fault::Answer(_, kind, message) => anthropic::error(kind, message),
        Fault::Limited(_) => anthropic::error(
            "rate_limit_error",
            "Number of requests has exceeded your rate limit",
        ),
        Fault::Timeout | Fault::Refused | Fault::Success => Value::Null,
    }
}

fn scripted(fault: Fault) -> Option<Answer> {
    let json = error_json(fault);
    let answer = match fault {
        Fault::Answer(status, _, _) => Answer::status(status).json(json),
        Fault::Limited(headers) => {
            let answer = Answer::status(429).json(json);
            match headers {
                Headers::None => answer,
                Headers::RetryAfter => answer
                    .header("retry-after", "20")
                    .header("anthropic-ratelimit-requests-remaining", "0"),
                Headers::UnifiedReset => {
                    let reset = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
                    answer.header("anthropic-ratelimit-unified-reset", &reset.to_string())
                }
            }
        }
        Fault::Timeout => Answer::default().hang(),
        Fault::Refused | Fault::Success => return None,
    };
    Some(answer.header("request-id", "req_matrix"))
}

fn assert_success(response: &TestResponse, stream: bool, cell: &str) {
    assert_eq!(response.status, 200, "{cell}: {}", response.text());
    if stream {
        let text = response.text();
        assert!(text.starts_with("event: message_start"), "{cell}: {text}");
        assert!(text.contains("event: message_stop"), "{cell}: {text}");
    } else {
        assert_eq!(response.json()["type"], "message", "{cell}");
    }
}

fn assert_client(row: &Row, response: &TestResponse, stream: bool, cell: &str) {
    match &row.alone {
        Client::Success => assert_success(response, stream, cell),
        Client::Verbatim(retry) => {
            let expected = match row.fault {
                Fault::Answer(status, ..) => status,
                Fault::Limited(_) => 429,
                other => panic!("{cell}: {other:?} has no answer to relay"),
            };
            assert_eq!(response.status, expected, "{cell}: {}", response.text());
            assert_eq!(
                response.body,
                error_json(row.fault).to_string().as_bytes(),
                "{cell}"
            );
            assert_eq!(
                response.header("content-type"),
                Some("application/json"),
                "{cell}"
            );
            assert_eq!(response.header("request-id"), Some("req_matrix"), "{cell}");
            assert_retry_after(response, retry.as_ref(), cell);
        }
        Client::Relay(status, code, retry) => {
            assert_eq!(response.status, *status, "{cell}: {}", response.text());
            assert_eq!(response.error_code(), *code, "{cell}");
            assert!(!response.text().contains("sk-up-A"), "{cell}");
            assert_retry_after(response, retry.as_ref(), cell);
        }
    }
}

fn assert_retry_after(response: &TestResponse, expected: Option<&RangeInclusive<u64>>, cell: &str) {
    let got = response.header("retry-after").map(|value| {
        value
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("{cell}: retry-after {value:?}"))
    });
    match (expected, got) {
        (None, None) => {}
        (Some(range), Some(secs)) if range.contains(&secs) => {}
        other => panic!(
            "{cell}: retry-after expected {:?}, got {:?}",
            other.0, other.1
        ),
    }
}

fn assert_state(health: &Health, expected: &State, cell: &str) {
    match expected {
        State::Untouched => {
            assert_eq!(health.status, None, "{cell}");
            assert_eq!(health.cooldown, None, "{cell}");
        }
        State::Cooling(reason, secs) => {
            assert_eq!(health.status, None, "{cell}");
            let (cooldown, left) = health
                .cooldown
                .as_ref()
                .unwrap_or_else(|| panic!("{cell}: no cooldown"));
            assert_eq!(cooldown.reason, *reason, "{cell}");
            assert!(secs.contains(&left.as_secs()), "{cell}: {left:?} left");
        }
        State::Held(state) => {
            let status = health
                .status
                .as_ref()
                .unwrap_or_else(|| panic!("{cell}: no status"));
            assert_eq!(status.state, *state, "{cell}");
            assert_eq!(health.cooldown, None, "{cell}");
        }
    }
}

fn near(secs: u64) -> RangeInclusive<u64> {
    secs.saturating_sub(5)..=secs
}

#[tokio::test]
async fn success_is_relayed_and_leaves_the_account_alone() {
    check(Row {
        fault: Fault::Success,
        alone: Client::Success,
        fails_over: false,
        state: State::Untouched,
    })
    .await;
}

#[tokio::test]
async fn request_400_passes_through_without_failover() {
    check(Row {
        fault: Fault::Answer(
            400,
            "invalid_request_error",
            "prompt is too long: 210000 tokens > 200000 maximum",
        ),
        alone: Client::Verbatim(None),
        fails_over: false,
        state: State::Untouched,
    })
    .await;
}

#[tokio::test]
async fn out_of_credit_400_fails_over_and_takes_the_account_out_for_an_hour() {
    check(Row {
        fault: Fault::Answer(
            400,
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API.",
        ),
        alone: Client::Verbatim(Some(near(3600))),
        fails_over: true,
        state: State::Cooling(CooldownReason::OutOfCredit, near(3600)),
    })
    .await;
}

#[tokio::test]
async fn upstream_401_fails_over_and_marks_the_account_unauthorized() {
    check(Row {
        fault: Fault::Answer(401, "authentication_error", "invalid x-api-key: sk-up-A"),
        alone: Client::Relay(503, "no_upstream_available", None),
        fails_over: true,
        state: State::Held(HealthState::Unauthorized),
    })
    .await;
}

#[tokio::test]
async fn ban_403_fails_over_and_holds_the_account() {
    check(Row {
        fault: Fault::Answer(
            403,
            "permission_error",
            "This organization has been disabled.",
        ),
        alone: Client::Verbatim(None),
        fails_over: true,
        state: State::Held(HealthState::Blocked),
    })
    .await;
}

#[tokio::test]
async fn request_403_fails_over_and_leaves_the_account_alone() {
    check(Row {
        fault: Fault::Answer(
            403,
            "permission_error",
            "Your organization does not have access to this model.",
        ),
        alone: Client::Verbatim(None),
        fails_over: true,
        state: State::Untouched,
    })
    .await;
}

#[tokio::test]
async fn upstream_404_passes_through_without_failover() {
    check(Row {
        fault: Fault::Answer(404, "not_found_error", "model: claude-nope"),
        alone: Client::Verbatim(None),
        fails_over: false,
        state: State::Untouched,
    })
    .await;
}

#[tokio::test]
async fn upstream_413_passes_through_without_failover() {
    check(Row {
        fault: Fault::Answer(
            413,
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
        ),
        alone: Client::Verbatim(None),
        fails_over: false,
        state: State::Untouched,
    })
    .await;
}

#[tokio::test]
async fn rate_limit_with_retry_after_cools_down_for_that_long() {
    check(Row {
        fault: Fault::Limited(Headers::RetryAfter),
        alone: Client::Verbatim(Some(near(20))),
        fails_over: true,
        state: State::Cooling(CooldownReason::RateLimited, near(20)),
    })
    .await;
}

#[tokio::test]
async fn rate_limit_with_a_unified_reset_cools_down_until_it() {
    check(Row {
        fault: Fault::Limited(Headers::UnifiedReset),
        alone: Client::Verbatim(Some(near(3600))),
        fails_over: true,
        state: State::Cooling(CooldownReason::RateLimited, near(3600)),
    })
    .await;
}

#[tokio::test]
async fn rate_limit_without_headers_cools_down_for_a_minute() {
    check(Row {
        fault: Fault::Limited(Headers::None),
        alone: Client::Verbatim(Some(near(60))),
        fails_over: true,
        state: State::Cooling(CooldownReason::RateLimited, near(60)),
    })
    .await;
}

#[tokio::test]
async fn server_error_cools_down_for_five_minutes() {
    check(Row {
        fault: Fault::Answer(500, "api_error", "Internal server error"),
        alone: Client::Verbatim(Some(near(300))),
        fails_over: true,
        state: State::Cooling(CooldownReason::ServerError, near(300)),
    })
    .await;
}

#[tokio::test]
async fn unavailable_503_cools_down_for_a_minute() {
    check(Row {
        fault: Fault::Answer(503, "api_error", "Service unavailable"),
        alone: Client::Verbatim(Some(near(60))),
        fails_over: true,
        state: State::Cooling(CooldownReason::Unavailable, near(60)),
    })
    .await;
}

#[tokio::test]
async fn overloaded_529_fails_over_without_blaming_the_account() {
    check(Row {
        fault: Fault::Answer(529, "overloaded_error", "Overloaded"),
        alone: Client::Verbatim(None),
        fails_over: true,
        state: State::Untouched,
    })
    .await;
}

#[tokio::test]
async fn timeout_fails_over_and_alone_gets_504() {
    check(Row {
        fault: Fault::Timeout,
        alone: Client::Relay(504, "upstream_timeout", Some(near(300))),
        fails_over: true,
        state: State::Cooling(CooldownReason::Timeout, near(300)),
    })
    .await;
}

#[tokio::test]
async fn refused_connection_fails_over_and_alone_gets_502() {
    check(Row {
        fault: Fault::Refused,
        alone: Client::Relay(502, "upstream_unreachable", Some(near(300))),
        fails_over: true,
        state: State::Cooling(CooldownReason::Unreachable, near(300)),
    })
    .await;
}
