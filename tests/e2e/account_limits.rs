//! Account limits: a concurrency limit that sends the next requests to the
//! next account and holds across instances, leases given back however an
//! answer ends, and a daily cost quota that takes an account out of the
//! pool until the day ends. Costs are those of case C03 a: 1093500 n$.

use std::time::{Duration, Instant};

use claude_relay::limits::{lease, periods, status};
use claude_relay::usage::record::Subject;
use futures::StreamExt;
use mock_upstream::sse;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::harness::env::account;
use crate::harness::{
    Answer, Chunk, K1, Profile, SONNET, TestEnv, TestResponse, body, midday_offset, snapshot,
};

/// Account `name` with these extra seed fields.
fn limited(name: &str, priority: u32, fields: Value) -> Value {
    let mut account = account(name, priority);
    if let (Value::Object(account), Value::Object(fields)) = (&mut account, fields) {
        account.extend(fields);
    }
    account
}

/// A stream that sends its first event, then holds for a minute.
fn held_stream() -> Answer {
    let stream = sse::standard(SONNET, 12, 0, 0, 42);
    let first_end = stream.find("\n\n").expect("an event") + 2;
    Answer::sse(vec![
        Chunk::text(&stream[..first_end]).pause_ms(60_000),
        Chunk::text(&stream[first_end..]),
    ])
}

fn held_streams(n: usize) -> Vec<Answer> {
    (0..n).map(|_| held_stream()).collect()
}

/// Sends `n` streaming requests at once, spread over the instances, and
/// returns each answer once its head has arrived.
async fn fire(env: &TestEnv, n: usize) -> Vec<reqwest::Response> {
    let sends = (0..n).map(|i| env.messages_on(i, K1, body(true)).send());
    futures::future::join_all(sends)
        .await
        .into_iter()
        .map(|sent| sent.expect("sending to a relay"))
        .collect()
}

#[tokio::test]
async fn an_account_at_its_limit_sends_the_next_requests_to_the_next_account() {
    let env = TestEnv::builder()
        .accounts(vec![
            limited("A", 1, json!({"concurrency_limit": 2})),
            account("B", 2),
        ])
        .start()
        .await;
    env.mock.push_answers("sk-up-A", held_streams(6));
    env.mock.push_answers("sk-up-B", held_streams(6));

    let answers = fire(&env, 6).await;

    assert!(answers.iter().all(|answer| answer.status() == 200));
    assert_eq!(env.seen_by("A").len(), 2, "at most two ever reached A");
    assert_eq!(env.seen_by("B").len(), 4);
    assert_eq!(env.mock.in_flight(), 6);
    assert_eq!(env.account_leases("acct-a").await.len(), 2);
    assert!(env.account_leases("acct-b").await.is_empty());
    drop(answers);
    env.until_no_account_leases("acct-a").await;
}

#[tokio::test]
async fn with_every_account_at_its_limit_the_client_gets_503_and_retries_in_a_second() {
    let env = TestEnv::builder()
        .accounts(vec![limited("A", 1, json!({"concurrency_limit": 2}))])
        .start()
        .await;
    env.mock.push_answers("sk-up-A", held_streams(2));
    let holding = fire(&env, 2).await;

    let refused = env.post_messages(K1, body(true)).await;

    assert!(holding.iter().all(|answer| answer.status() == 200));
    assert_eq!(refused.status, 503);
    assert_eq!(refused.error_code(), "no_upstream_available");
    assert_eq!(refused.header("retry-after"), Some("1"));
    snapshot::limit_error_body("no_upstream_accounts_busy", &refused);
    assert_eq!(env.seen_by("A").len(), 2);
    drop(holding);
    env.until_no_account_leases("acct-a").await;
    assert_eq!(env.post_messages(K1, body(false)).await.status, 200);
}

#[tokio::test]
async fn count_tokens_is_not_held_back_by_a_full_account() {
    let env = TestEnv::builder()
        .accounts(vec![limited("A", 1, json!({"concurrency_limit": 1}))])
        .start()
        .await;
    env.mock.push_answers("sk-up-A", held_streams(1));
    let holding = fire(&env, 1).await;

    let counted = env
        .send(
            env.request(reqwest::Method::POST, "/v1/messages/count_tokens")
                .header("content-type", "application/json")
                .header("x-api-key", K1)
                .body(body(false)),
        )
        .await;

    assert_eq!(holding[0].status(), 200);
    assert_eq!(counted.status, 200, "{}", counted.text());
    let leases = env.account_leases("acct-a").await;
    assert_eq!(leases.len(), 1, "count_tokens took no lease: {leases:?}");
    drop(holding);
    env.until_no_account_leases("acct-a").await;
}

#[tokio::test]
async fn a_completed_answer_gives_its_account_lease_back() {
    let env = TestEnv::builder()
        .accounts(vec![limited("A", 1, json!({"concurrency_limit": 1}))])
        .start()
        .await;

    let first = env.post_messages(K1, body(false)).await;
    env.until_no_account_leases("acct-a").await;
    let streamed = env.post_messages(K1, body(true)).await;
    env.until_no_account_leases("acct-a").await;
    let third = env.post_messages(K1, body(false)).await;

    assert_eq!(
        (first.status, streamed.status, third.status),
        (200, 200, 200)
    );
    assert_eq!(env.seen_by("A").len(), 3);
    env.until_no_account_leases("acct-a").await;
}

#[tokio::test]
async fn a_failed_attempt_frees_its_account_at_once_and_a_hang_up_frees_the_next() {
    let env = TestEnv::builder()
        .accounts(vec![
            limited("A", 1, json!({"concurrency_limit": 1})),
            limited("B", 2, json!({"concurrency_limit": 1})),
        ])
        .start()
        .await;
    env.mock.push_answers(
        "sk-up-A",
        vec![Answer::error(500, "api_error", "upstream broke")],
    );
    env.mock.push_answers("sk-up-B", held_streams(1));

    let answer = env.messages(K1, body(true)).send().await.expect("sending");

    assert_eq!(answer.status(), 200);
    assert_eq!(env.seen_by("A").len(), 1);
    // A's lease is gone while B's answer still streams.
    env.until_no_account_leases("acct-a").await;
    let on_b = env.account_leases("acct-b").await;
    assert_eq!(on_b.len(), 1, "{on_b:?}");
    drop(answer);
    env.until_no_account_leases("acct-b").await;
}

#[tokio::test]
async fn a_failover_skips_an_account_filled_since_the_pick() {
    let env = TestEnv::builder()
        .accounts(vec![
            account("A", 1),
            limited("B", 2, json!({"concurrency_limit": 1})),
            account("C", 3),
        ])
        .profile("sk-up-C", Profile::Ok)
        .start()
        .await;
    // Time for B to fill up while A is being tried.
    env.mock.push_answers(
        "sk-up-A",
        vec![Answer::error(500, "api_error", "upstream broke").delay_ms(2_000)],
    );
    let sent = tokio::spawn(env.messages(K1, body(false)).send());
    until_seen(&env, "A").await;
    let set = env.store.names().account_leases("acct-b");
    let elsewhere = lease::take(
        &env.store.conn(),
        &set,
        "req_elsewhere",
        Duration::from_secs(60),
        1,
    )
    .await
    .expect("taking a lease")
    .expect("B is free before the failover");

    let answer = TestResponse::read(sent.await.expect("the request").expect("sending")).await;

    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(env.seen_by("B").is_empty(), "B was full");
    assert_eq!(env.seen_by("C").len(), 1);
    let on_b: Vec<String> = env
        .account_leases("acct-b")
        .await
        .into_iter()
        .map(|(member, _)| member)
        .collect();
    assert_eq!(on_b, ["req_elsewhere"]);
    drop(elsewhere);
    env.until_no_account_leases("acct-b").await;
}

/// Waits until the mock has received a request for account `name`.
async fn until_seen(env: &TestEnv, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.seen_by(name).is_empty() {
        assert!(Instant::now() < deadline, "{name} never got the request");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_stream_longer_than_the_lease_ttl_keeps_its_account_lease() {
    let ttl = Duration::from_millis(1500);
    let env = TestEnv::builder()
        .accounts(vec![limited("A", 1, json!({"concurrency_limit": 1}))])
        .config(move |config| config.limits.lease_ttl = ttl)
        .start()
        .await;
    let (mut stream, held_for) = env.long_stream(K1).await;

    let leases = env.account_leases("acct-a").await;
    let second = env.post_messages(K1, body(false)).await;

    assert!(held_for > ttl, "the stream ran {held_for:?}");
    assert_eq!(leases.len(), 1, "the lease outlived its first TTL");
    assert_eq!(second.error_code(), "no_upstream_available");
    while stream.next().await.is_some() {}
    env.until_no_account_leases("acct-a").await;
    assert_eq!(env.post_messages(K1, body(false)).await.status, 200);
}

#[tokio::test]
async fn relay_instances_on_one_redis_hold_an_account_limit_together() {
    for instances in [2, 3] {
        let mut env = TestEnv::builder()
            .accounts(vec![limited("A", 1, json!({"concurrency_limit": 3}))])
            .start()
            .await;
        for _ in 1..instances {
            env.add_instance().await;
        }
        env.mock.push_answers("sk-up-A", held_streams(3));

        let answers = fire(&env, 24).await;

        let (admitted, refused): (Vec<_>, Vec<_>) = answers
            .into_iter()
            .partition(|answer| answer.status() == 200);
        assert_eq!(admitted.len(), 3, "{instances} instances");
        assert_eq!(env.seen_by("A").len(), 3);
        assert_eq!(env.mock.in_flight(), 3);
        assert_eq!(env.mock.max_in_flight(), 3);
        assert_eq!(env.account_leases("acct-a").await.len(), 3);
        for answer in refused {
            let refused = TestResponse::read(answer).await;
            assert_eq!(refused.status, 503);
            assert_eq!(refused.error_code(), "no_upstream_available");
        }
        drop(admitted);
        env.until_no_account_leases("acct-a").await;
    }
}

/// Account A with a quota below one case a, and B; it is about noon in
/// the usage offset, so no test run meets the end of the day.
async fn over_quota_env(accounts: Vec<Value>) -> TestEnv {
    let env = TestEnv::builder()
        .accounts(accounts)
        .config(|config| config.usage_utc_offset = midday_offset())
        .start()
        .await;
    env.mock
        .push_answers("sk-up-A", vec![crate::harness::case_c03_a()]);
    let first = env.post_messages(K1, body(true)).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let counted = env.usage_after(Subject::Account("acct-a"), 1).await;
    assert_eq!(counted.cost_nano_usd, 1_093_500);
    env
}

fn quota_account() -> Value {
    limited("A", 1, json!({"daily_quota_usd": 0.001}))
}

#[tokio::test]
async fn an_account_over_its_daily_quota_leaves_the_pool_until_the_day_ends() {
    let env = over_quota_env(vec![quota_account(), account("B", 2)]).await;

    let next = env.post_messages(K1, body(false)).await;
    let list = env.accounts_cli(&["list"]).await.expect("accounts list");
    let show = env
        .accounts_cli(&["show", "acct-a"])
        .await
        .expect("accounts show");

    assert_eq!(next.status, 200);
    assert_eq!(env.seen_by("A").len(), 1);
    assert_eq!(env.seen_by("B").len(), 1);
    let now = OffsetDateTime::now_utc();
    let resets = status::timestamp(periods::day_end(now, env.config.usage_utc_offset));
    let line = list
        .lines()
        .find(|line| line.starts_with("acct-a "))
        .unwrap_or_else(|| panic!("no line for acct-a in\n{list}"));
    assert!(line.contains(" over_quota "), "{list}");
    assert!(
        line.contains(&format!(
            "spent $0.0010935 today, its daily quota is $0.001; back by itself at {resets} (in "
        )),
        "{list}"
    );
    assert!(show.contains("state              over_quota"), "{show}");
    assert!(
        show.contains("daily_quota        $0.001 (spent $0.0010935 today)"),
        "{show}"
    );
    let b = list.lines().find(|line| line.starts_with("acct-b "));
    assert!(b.is_some_and(|line| line.contains(" ready ")), "{list}");
}

#[tokio::test]
async fn with_every_account_over_its_quota_the_client_is_told_when_the_day_ends() {
    let env = over_quota_env(vec![quota_account()]).await;

    let refused = env.post_messages(K1, body(false)).await;

    let now = OffsetDateTime::now_utc();
    let left = periods::until(now, periods::day_end(now, env.config.usage_utc_offset));
    assert_eq!(refused.status, 503);
    assert_eq!(refused.error_code(), "no_upstream_available");
    let after: u64 = refused
        .header("retry-after")
        .expect("a retry-after")
        .parse()
        .expect("whole seconds");
    assert!(
        after.abs_diff(left.as_secs()) <= 5,
        "{after} s against {left:?} left in the day"
    );
    assert_eq!(
        refused.json()["error"]["details"]["retry_after_secs"],
        after
    );
    assert_eq!(env.seen_by("A").len(), 1, "no request reached A again");
}
