//! Rate windows and cost budgets: checked before a request is forwarded,
//! counted after its answer, refusing exactly when the limit is reached.
//! Costs are those of case C03 a: 1093500 n$ and 2482 tokens.

use claude_relay::usage::record::Subject;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{K1, TestEnv, TestResponse, body, midday_offset, snapshot};

const KB: &str = "cr_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const KEY: Subject<'static> = Subject::Key("key-b");

/// What case C03 a costs, in dollars as a seed file writes them, and one
/// nano-dollar more.
const CASE_A_USD: f64 = 0.0010935;
const JUST_OVER_CASE_A_USD: f64 = 0.001093501;
const CASE_A_TOKENS: u64 = 4 + 2455 + 23;
/// A window no test run crosses the end of.
const MONTH: u64 = 30 * 86_400;

/// Key `key-b` with these limit fields, on a relay where it is about noon.
async fn start_with(limits: Value) -> TestEnv {
    let mut key = json!({"id": "key-b", "name": "B", "key": KB});
    if let (Value::Object(key), Value::Object(limits)) = (&mut key, limits) {
        key.extend(limits);
    }
    TestEnv::builder()
        .key(key)
        .config(|config| config.usage_utc_offset = midday_offset())
        .start()
        .await
}

/// Sends case a, waits until it is counted, and sends one more request.
async fn next_after_case_a(env: &TestEnv) -> TestResponse {
    env.mock
        .push_answers("sk-up-A", vec![crate::harness::case_c03_a()]);
    let first = env.post_messages(KB, body(true)).await;
    assert_eq!(first.status, 200, "{}", first.text());
    env.usage_after(KEY, 1).await;
    env.post_messages(KB, body(false)).await
}

#[tokio::test]
async fn each_budget_refuses_once_spending_reaches_it_exactly() {
    let budgets = [
        ("daily_budget", json!({"daily_budget_usd": CASE_A_USD})),
        ("weekly_budget", json!({"weekly_budget_usd": CASE_A_USD})),
        ("total_budget", json!({"total_budget_usd": CASE_A_USD})),
        (
            "family_daily_budget",
            json!({"family_budgets_usd": {"sonnet": {"daily": CASE_A_USD}}}),
        ),
        (
            "family_weekly_budget",
            json!({"family_budgets_usd": {"sonnet": {"weekly": CASE_A_USD}}}),
        ),
        (
            "family_total_budget",
            json!({"family_budgets_usd": {"sonnet": {"total": CASE_A_USD}}}),
        ),
    ];
    for (code, limits) in budgets {
        let env = start_with(limits).await;

        let refused = next_after_case_a(&env).await;

        assert_eq!(refused.status, 402, "{code}");
        assert_eq!(refused.json()["error"]["type"], "billing_error");
        assert_eq!(refused.error_code(), code);
        assert_eq!(
            refused.json()["error"]["details"]["used_nano_usd"],
            1_093_500
        );
        assert_eq!(
            env.mock.journal().len(),
            1,
            "{code}: the mock receives nothing"
        );
        snapshot::limit_error_body(code, &refused);
    }
}

#[tokio::test]
async fn each_budget_one_nano_dollar_above_the_spending_still_admits() {
    let budgets = [
        json!({"daily_budget_usd": JUST_OVER_CASE_A_USD}),
        json!({"weekly_budget_usd": JUST_OVER_CASE_A_USD}),
        json!({"total_budget_usd": JUST_OVER_CASE_A_USD}),
        json!({"family_budgets_usd": {"sonnet": {
            "daily": JUST_OVER_CASE_A_USD, "weekly": JUST_OVER_CASE_A_USD,
            "total": JUST_OVER_CASE_A_USD}}}),
        // Another family's budget does not limit this one.
        json!({"family_budgets_usd": {"opus": {"daily": 0.000000001}}}),
    ];
    for limits in budgets {
        let env = start_with(limits.clone()).await;

        let admitted = next_after_case_a(&env).await;

        assert_eq!(admitted.status, 200, "{limits}: {}", admitted.text());
        assert_eq!(env.mock.journal().len(), 2);
    }
}

#[tokio::test]
async fn token_and_cost_windows_refuse_once_reached_exactly() {
    let windows = [
        ("rate_limit_tokens", json!({"tokens": CASE_A_TOKENS}), 429),
        ("rate_limit_cost", json!({"cost_usd": CASE_A_USD}), 429),
        ("", json!({"tokens": CASE_A_TOKENS + 1}), 200),
        ("", json!({"cost_usd": JUST_OVER_CASE_A_USD}), 200),
    ];
    for (name, mut window, status) in windows {
        window["window_secs"] = json!(MONTH);
        let env = start_with(json!({ "rate_limit": window })).await;

        let next = next_after_case_a(&env).await;

        assert_eq!(next.status, status, "{window}: {}", next.text());
        if status == 429 {
            assert_eq!(next.error_code(), "rate_limit");
            assert_eq!(env.mock.journal().len(), 1);
            snapshot::limit_error_body(name, &next);
        }
    }
}

#[tokio::test]
async fn a_request_window_refuses_the_request_past_its_limit() {
    let env = start_with(json!({"rate_limit": {"window_secs": MONTH, "requests": 2}})).await;

    let first = env.post_messages(KB, body(false)).await;
    let second = env.post_messages(KB, body(false)).await;
    let third = env.post_messages(KB, body(false)).await;

    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(third.status, 429);
    assert_eq!(third.error_code(), "rate_limit");
    let retry_after: u64 = third.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=MONTH).contains(&retry_after));
    assert_eq!(env.mock.journal().len(), 2);
    snapshot::limit_error_body("rate_limit_requests", &third);
}

#[tokio::test]
async fn a_window_admits_again_once_it_resets() {
    let env = start_with(json!({"rate_limit": {"window_secs": 1, "requests": 1}})).await;

    let refused = until_status(&env, 429).await;
    let admitted = until_status(&env, 200).await;

    assert_eq!(refused.error_code(), "rate_limit");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(admitted.status, 200);
}

/// Sends requests until one gets `status`; fails after ten seconds.
async fn until_status(env: &TestEnv, status: u16) -> TestResponse {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let answer = env.post_messages(KB, body(false)).await;
        if answer.status == status {
            return answer;
        }
        assert!(std::time::Instant::now() < deadline, "never got {status}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_key_reads_its_own_usage_limits_and_resets_from_relay_key() {
    let env = start_with(json!({
        "concurrency_limit": 5,
        "rate_limit": {"window_secs": MONTH, "requests": 100, "cost_usd": 1},
        "daily_budget_usd": 0.01,
        "weekly_budget_usd": 0.5,
        "total_budget_usd": 10,
        "family_budgets_usd": {"sonnet": {"weekly": 0.25}, "opus": {"daily": 1}},
    }))
    .await;
    next_after_case_a(&env).await;
    env.usage_after(KEY, 2).await;

    let own = relay_key(&env, KB).await;
    let other = relay_key(&env, K1).await;
    let unknown = relay_key(&env, "cr_unknown").await;

    assert_eq!(own.status, 200);
    let own = own.json();
    assert_eq!(own["id"], "key-b");
    assert_eq!(own["usage"]["today"]["requests"], 2);
    assert_eq!(
        own["limits"]["daily_budget"]["used_nano_usd"],
        own["usage"]["today"]["cost_nano_usd"]
    );
    snapshot::json_with("relay_key", &own, &[".**.resets_at"]);
    assert_eq!(other.json()["id"], "key-1");
    assert_eq!(other.json()["limits"], json!({}));
    assert_eq!(unknown.status, 401);
}

async fn relay_key(env: &TestEnv, key: &str) -> TestResponse {
    env.send(
        env.request(Method::GET, "/relay/key")
            .header("x-api-key", key),
    )
    .await
}

/// A family budget follows the model the client asked for: an account that
/// maps it to another family's model does not take the request out of the
/// budget it was admitted under.
#[tokio::test]
async fn a_family_budget_is_charged_by_the_requested_model_whatever_the_account_maps() {
    let mut mapped = crate::harness::env::account("A", 1);
    mapped["model_map"] = json!({"claude-opus-4-5": "claude-sonnet-4-5-20250929"});
    let env = TestEnv::builder()
        .accounts(vec![mapped])
        .key(json!({"id": "key-b", "name": "B", "key": KB,
                    "family_budgets_usd": {"opus": {"daily": CASE_A_USD}}}))
        .config(|config| config.usage_utc_offset = midday_offset())
        .start()
        .await;
    let opus = r#"{"model":"claude-opus-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    env.mock
        .push_answers("sk-up-A", vec![crate::harness::case_c03_a()]);

    let first = env.post_messages(KB, opus).await;
    env.usage_after(KEY, 1).await;
    let second = env.post_messages(KB, opus).await;

    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(
        env.seen_by("A")[0].json()["model"],
        "claude-sonnet-4-5-20250929",
        "the account got its own model"
    );
    assert_eq!(second.status, 402, "{}", second.text());
    assert_eq!(second.error_code(), "family_daily_budget");
    assert_eq!(env.seen_by("A").len(), 1);
}
