//! Usage and cost: exact to the token whatever the network does, counted
//! once per request, per key, account and model.

use claude_relay::usage::record::Subject;
use mock_upstream::{SseStandard, Usage, anthropic, sse};
use reqwest::Method;
use serde_json::json;

use crate::harness::{Answer, Chunk, K1, SONNET, TestEnv, body, midday_offset};

const KEY: Subject<'static> = Subject::Key("key-1");

fn standard(input: u64, cache_creation: u64, cache_read: u64, output: u64) -> Answer {
    Answer::sse_standard(SseStandard {
        input,
        cache_creation,
        cache_read,
        output,
        ..SseStandard::default()
    })
}

fn message_json(input: u64, cache_creation: u64, cache_read: u64, output: u64) -> Answer {
    Answer::default().json(anthropic::message(
        SONNET,
        Usage {
            input,
            cache_creation,
            cache_read,
            output,
        },
    ))
}

/// The writes of case C01: an event, a line and a character split
/// across network chunks.
fn c01_writes(crlf: bool) -> (String, Vec<Chunk>) {
    let mut stream = sse::standard(SONNET, 12, 0, 0, 42).replace("Hello", "héllo");
    if crlf {
        stream = stream.replace('\n', "\r\n");
    }
    let bytes = stream.as_bytes();
    let w1_end = stream.find("\"text\":\"h").expect("the delta") + "\"text\":\"h".len() + 1;
    let w2_end =
        stream.find("\"usage\":{\"output_").expect("message_delta") + "\"usage\":{\"output_".len();
    let w3_end = stream[w2_end..].find("}}").expect("the end of the usage")
        + w2_end
        + 2
        + if crlf { 2 } else { 1 };
    assert_eq!(bytes[w1_end - 1], 0xC3, "W1 ends inside é");
    let writes = [
        &bytes[..w1_end],
        &bytes[w1_end..w2_end],
        &bytes[w2_end..w3_end],
        &bytes[w3_end..],
    ];
    let chunks = writes
        .iter()
        .map(|part| Chunk::bytes(part.to_vec()).pause_ms(20))
        .collect();
    (stream, chunks)
}

/// Case C01: the client gets the very bytes, and the meter the very
/// figures, however the upstream's writes split events and characters.
#[tokio::test]
async fn split_events_and_characters_pass_intact_and_are_counted_exactly() {
    for crlf in [false, true] {
        let env = TestEnv::builder()
            .k1(json!({"concurrency_limit": 5}))
            .start()
            .await;
        let (stream, writes) = c01_writes(crlf);
        env.mock.push_answers("sk-up-A", vec![Answer::sse(writes)]);

        let response = env.post_messages(K1, body(true)).await;

        assert_eq!(response.status, 200);
        assert_eq!(response.body, stream.as_bytes(), "crlf {crlf}");
        assert!(response.text().contains("héllo"));
        assert!(!response.text().contains('\u{FFFD}'));
        let counted = env.usage_after(KEY, 1).await;
        assert_eq!(counted.requests, 1);
        assert_eq!(counted.input_tokens, 12);
        assert_eq!(counted.output_tokens, 42);
        assert_eq!(counted.cache_creation_input_tokens, 0);
        assert_eq!(counted.cache_read_input_tokens, 0);
        assert_eq!(counted.cost_nano_usd, 12 * 3000 + 42 * 15000);
        env.until_no_leases("key-1").await;
    }
}

/// Case C02: `message_delta`'s output count is cumulative: it replaces the
/// preliminary figure, it is not added to it. JSON gives the same counts.
#[tokio::test]
async fn output_tokens_are_the_final_figure_in_streams_and_json_alike() {
    let env = TestEnv::start().await;
    env.mock.push_answers(
        "sk-up-A",
        vec![standard(25, 0, 0, 15), message_json(25, 0, 0, 15)],
    );

    let streamed = env.post_messages(K1, body(true)).await;
    let after_stream = env.usage_after(KEY, 1).await;
    let whole = env.post_messages(K1, body(false)).await;
    let after_both = env.usage_after(KEY, 2).await;

    assert_eq!(streamed.text(), sse::standard(SONNET, 25, 0, 0, 15));
    assert_eq!(whole.status, 200);
    assert_eq!(after_stream.input_tokens, 25);
    assert_eq!(after_stream.output_tokens, 15);
    assert_eq!(after_stream.cost_nano_usd, 300_000);
    assert_eq!(after_both.input_tokens, 50);
    assert_eq!(after_both.output_tokens, 30);
    assert_eq!(after_both.cost_nano_usd, 600_000);
}

/// Case C03: cache reads and writes are priced at their own rates, on the
/// streaming path as on the JSON one.
#[tokio::test]
async fn cache_tokens_are_priced_at_their_own_rates() {
    let cases = [
        ((4, 0, 2455, 23), 1_093_500),
        ((10, 3000, 0, 5), 11_355_000),
    ];
    for ((input, cache_creation, cache_read, output), cost) in cases {
        let env = TestEnv::start().await;
        env.mock.push_answers(
            "sk-up-A",
            vec![
                standard(input, cache_creation, cache_read, output),
                message_json(input, cache_creation, cache_read, output),
            ],
        );

        env.post_messages(K1, body(true)).await;
        let streamed = env.usage_after(KEY, 1).await;
        env.post_messages(K1, body(false)).await;
        let both = env.usage_after(KEY, 2).await;

        assert_eq!(streamed.cost_nano_usd, cost);
        assert_eq!(streamed.cache_read_input_tokens, cache_read);
        assert_eq!(streamed.cache_creation_input_tokens, cache_creation);
        assert_eq!(streamed.cache_creation_5m_input_tokens, cache_creation);
        assert_eq!(both.cost_nano_usd, 2 * cost, "JSON is priced the same");
    }
}

/// Case C03, with K1's $0.01 daily budget: case a and case b are admitted,
/// case b leaves the key over its budget, and the next request is refused
/// without reaching the upstream.
#[tokio::test]
async fn a_key_over_its_daily_budget_after_case_b_gets_402() {
    let env = TestEnv::builder()
        .k1(json!({"daily_budget_usd": 0.01}))
        .config(|config| config.usage_utc_offset = midday_offset())
        .start()
        .await;
    env.mock.push_answers(
        "sk-up-A",
        vec![standard(4, 0, 2455, 23), standard(10, 3000, 0, 5)],
    );

    let case_a = env.post_messages(K1, body(true)).await;
    env.usage_after(KEY, 1).await;
    let case_b = env.post_messages(K1, body(true)).await;
    let spent = env.usage_after(KEY, 2).await;
    let next = env.post_messages(K1, body(true)).await;

    assert_eq!((case_a.status, case_b.status), (200, 200));
    assert_eq!(spent.cost_nano_usd, 1_093_500 + 11_355_000);
    assert_eq!(next.status, 402);
    assert_eq!(next.json()["error"]["type"], "billing_error");
    assert_eq!(next.error_code(), "daily_budget");
    assert_eq!(env.seen_by("A").len(), 2, "the mock receives nothing more");
}

fn cut_stream_events() -> String {
    let start = format!(
        r#"{{"type":"message_start","message":{{"id":"msg_1","type":"message","role":"assistant","model":"{SONNET}","content":[],"stop_reason":null,"stop_sequence":null,"usage":{{"input_tokens":10,"cache_creation_input_tokens":200,"cache_read_input_tokens":5000,"output_tokens":1}}}}}}"#
    );
    let mut text = sse::event("message_start", &start);
    text.push_str(&sse::event(
        "content_block_start",
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
    ));
    for word in ["One", " two", " three"] {
        text.push_str(&sse::event(
            "content_block_delta",
            &format!(r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"{word}"}}}}"#),
        ));
    }
    text
}

/// Case C04 a: an upstream that drops the connection before
/// `message_delta` still gets its input and cache figures counted, and the
/// client is told the answer is incomplete.
#[tokio::test]
async fn stream_cut_before_message_delta_counts_what_was_seen_and_says_so() {
    let env = TestEnv::builder()
        .k1(json!({"concurrency_limit": 5}))
        .start()
        .await;
    let events = cut_stream_events();
    let chunks = vec![Chunk::text(&events)];
    env.mock.push_answers(
        "sk-up-A",
        vec![Answer::sse(chunks).cut_after_bytes(events.len() as u64)],
    );

    let response = env.post_messages(K1, body(true)).await;

    assert_eq!(response.status, 200);
    let text = response.text();
    env.until_no_leases("key-1").await;
    assert!(
        text.starts_with(&events),
        "the forwarded events come first, byte for byte"
    );
    let appended = &text[events.len()..];
    assert!(appended.starts_with("event: error\ndata: "), "{appended}");
    assert!(appended.ends_with("\n\n"));
    let error: serde_json::Value =
        serde_json::from_str(appended.trim_start_matches("event: error\ndata: ").trim()).unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "api_error");
    assert!(
        !text.contains("message_stop"),
        "no message_stop is invented"
    );
    let counted = env.usage_after(KEY, 1).await;
    assert_eq!(counted.requests, 1);
    assert_eq!(counted.input_tokens, 10);
    assert_eq!(counted.cache_creation_input_tokens, 200);
    assert_eq!(counted.cache_read_input_tokens, 5000);
    assert_eq!(
        counted.output_tokens, 1,
        "the last reported figure, never an estimate"
    );
    // One cut is transient: the account keeps serving.
    assert_eq!(env.post_messages(K1, body(false)).await.status, 200);
    assert_eq!(env.seen_by("A").len(), 2);
}

/// Case C04 b: the client leaves mid-stream; the relay stops the upstream
/// and counts what it saw, exactly once.
#[tokio::test]
async fn client_leaving_mid_stream_is_counted_once_with_what_was_seen() {
    use futures::StreamExt;
    let env = TestEnv::builder()
        .k1(json!({"concurrency_limit": 5}))
        .start()
        .await;
    let deltas: Vec<String> = (0..40).map(|i| format!("w{i} ")).collect();
    env.mock.push_answers(
        "sk-up-A",
        vec![Answer::sse_standard(SseStandard {
            input: 10,
            cache_creation: 200,
            cache_read: 5000,
            output: 300,
            deltas,
            delta_pause_ms: 50,
            ..SseStandard::default()
        })],
    );

    let response = env.messages(K1, body(true)).send().await.unwrap();
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    while seen.matches("content_block_delta").count() < 4 {
        seen.push_str(&String::from_utf8_lossy(
            &stream.next().await.unwrap().unwrap(),
        ));
    }
    drop(stream);

    let counted = env.usage_after(KEY, 1).await;
    assert_eq!(counted.requests, 1);
    assert_eq!(counted.input_tokens, 10);
    assert_eq!(counted.cache_creation_input_tokens, 200);
    assert_eq!(counted.cache_read_input_tokens, 5000);
    assert_eq!(
        counted.output_tokens, 1,
        "the relay stops the upstream: output as last reported"
    );
    assert_eq!(
        counted.cost_nano_usd,
        10 * 3000 + 200 * 3750 + 5000 * 300 + 15000
    );
    env.until_no_leases("key-1").await;
}

#[tokio::test]
async fn count_tokens_is_forwarded_but_never_counted_as_a_message() {
    let env = TestEnv::start().await;

    let counted_tokens = env
        .send(
            env.request(Method::POST, "/v1/messages/count_tokens")
                .header("content-type", "application/json")
                .header("x-api-key", K1)
                .body(body(false)),
        )
        .await;
    env.post_messages(K1, body(false)).await;

    assert_eq!(counted_tokens.status, 200);
    assert!(counted_tokens.json()["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(env.usage_after(KEY, 1).await.requests, 1);
}

#[tokio::test]
async fn usage_is_counted_per_key_account_and_model() {
    let env = TestEnv::start().await;
    env.mock.push_answers("sk-up-A", vec![standard(7, 0, 0, 3)]);

    env.post_messages(K1, body(true)).await;

    let by_key = env.usage_after(KEY, 1).await;
    let by_account = env.total(Subject::Account("acct-a")).await;
    let by_model = env.total(Subject::Model(SONNET)).await;
    assert_eq!(by_key, by_account);
    assert_eq!(by_key, by_model);
    assert_eq!(by_key.input_tokens, 7);
}

#[tokio::test]
async fn unknown_models_are_counted_at_zero_cost() {
    let env = TestEnv::start().await;
    let request = r#"{"model":"claude-opus-5-5","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

    env.post_messages(K1, request).await;

    let counted = env.usage_after(KEY, 1).await;
    assert!(counted.input_tokens > 0);
    assert_eq!(counted.cost_nano_usd, 0);
}

#[tokio::test]
async fn upstream_errors_and_refusals_count_nothing() {
    let env = TestEnv::start().await;
    env.mock.push_answers(
        "sk-up-A",
        vec![Answer::error(
            400,
            "invalid_request_error",
            "prompt is too long",
        )],
    );

    let refused = env.post_messages(K1, r#"{"model":"#).await;
    let upstream_400 = env.post_messages(K1, body(false)).await;
    env.post_messages(K1, body(false)).await;

    assert_eq!(refused.status, 400);
    assert_eq!(upstream_400.status, 400);
    assert_eq!(
        env.usage_after(KEY, 1).await.requests,
        1,
        "only the answered request"
    );
}

/// Answers gathered into one write around midnight belong to two usage
/// days: each day's copy of the account's spending (what daily quotas
/// read) gets its own answers' cost, as the account's own counters do.
#[tokio::test]
async fn a_write_spanning_midnight_adds_to_both_days_of_the_accounts_spending() {
    use claude_relay::usage::record::{Period, UsageEvent};
    use time::macros::datetime;

    let env = TestEnv::start().await;
    let before = datetime!(2026-12-04 23:59:59.990 UTC);
    let after = datetime!(2026-12-05 00:00:00.010 UTC);
    for (n, at) in [(1, before), (2, after)] {
        env.recorder.spawn(UsageEvent {
            request_id: format!("req_midnight_{n}"),
            key_id: "key-1".into(),
            account_id: "acct-a".into(),
            model: SONNET.into(),
            requested_model: SONNET.into(),
            usage: claude_relay::usage::Usage {
                input_tokens: 1_000 * n,
                ..Default::default()
            },
            cost_nano_usd: 3_000_000 * n,
            at,
            key_limits: std::sync::Arc::default(),
        });
    }
    env.recorder.drain(std::time::Duration::from_secs(10)).await;

    let days = [before.date(), after.date()];
    let own = env
        .recorder
        .read(Subject::Account("acct-a"), &days.map(Period::Day))
        .await
        .unwrap();
    let mut quota_copy = Vec::new();
    for day in days {
        let health = env.store.account_health(&["acct-a"], day).await.unwrap();
        quota_copy.push(health[0].spent_nano_usd);
    }
    assert_eq!(own[0].cost_nano_usd, 3_000_000);
    assert_eq!(own[1].cost_nano_usd, 6_000_000);
    assert_eq!(quota_copy, [3_000_000, 6_000_000]);
}

/// An upstream that reports more tokens than any answer has (here past
/// Redis's 64-bit integers, and at `u64::MAX`, which wrapped merged sums
/// around) is not believed, and the answers written with it are counted
/// in full.
#[tokio::test]
async fn absurd_token_figures_are_not_believed_and_spoil_no_other_answer() {
    let offset = midday_offset();
    let env = TestEnv::builder()
        .config(move |config| config.usage_utc_offset = offset)
        .start()
        .await;
    let mut answers = vec![standard(5, 0, 0, u64::MAX), standard(1 << 63, 0, 0, 30)];
    answers.extend((0..10).map(|_| standard(7, 0, 0, 30)));
    env.mock.push_answers("sk-up-A", answers);

    let sends = (0..12).map(|_| env.post_messages(K1, body(true)));
    let statuses: Vec<u16> = futures::future::join_all(sends)
        .await
        .iter()
        .map(|response| response.status)
        .collect();

    assert_eq!(statuses, [200; 12]);
    let counted = env.usage_after(KEY, 12).await;
    assert_eq!(counted.requests, 12);
    assert_eq!(
        counted.input_tokens, 75,
        "5 + 10 × 7: the 2^63 start is unreadable"
    );
    assert_eq!(
        counted.output_tokens, 331,
        "1 (before the u64::MAX delta) + 30 + 10 × 30"
    );
    assert_eq!(counted.cost_nano_usd, 75 * 3_000 + 331 * 15_000);
    assert_eq!(env.total(Subject::Account("acct-a")).await, counted);
    let today = time::OffsetDateTime::now_utc().to_offset(offset).date();
    let health = env.store.account_health(&["acct-a"], today).await.unwrap();
    assert_eq!(health[0].spent_nano_usd, counted.cost_nano_usd);
}

/// A counter at the end of Redis's integer range refuses its increment;
/// every other counter of the same write still counts the answer.
#[tokio::test]
async fn a_counter_at_the_end_of_its_range_refuses_only_its_own_increment() {
    use claude_relay::usage::record::Period;

    let env = TestEnv::builder()
        .config(|config| config.usage_utc_offset = midday_offset())
        .start()
        .await;
    let names = env.store.names();
    let total = names.usage(&names.key_tag("key-1"), &Period::Total);
    let nearly_full = i64::MAX - 10;
    let _: () = redis::cmd("HSET")
        .arg(&total)
        .arg("cost_nano_usd")
        .arg(nearly_full)
        .query_async(&mut env.store.conn())
        .await
        .unwrap();
    env.mock
        .push_answers("sk-up-A", vec![standard(7, 0, 0, 30)]);

    assert_eq!(env.post_messages(K1, body(true)).await.status, 200);

    let counted = env.usage_after(KEY, 1).await;
    assert_eq!(counted.requests, 1);
    assert_eq!(counted.input_tokens, 7);
    assert_eq!(counted.output_tokens, 30);
    assert_eq!(counted.cost_nano_usd, nearly_full.unsigned_abs());
    let period = env.recorder.periods(time::OffsetDateTime::now_utc());
    let today = env.recorder.read(KEY, &period[..1]).await.unwrap()[0];
    assert_eq!(today.cost_nano_usd, 7 * 3_000 + 30 * 15_000);
}

/// A confirmed write leaves no marker behind: they only guard a write that
/// may be sent again.
#[tokio::test]
async fn confirmed_usage_writes_leave_no_markers_in_redis() {
    let env = TestEnv::start().await;
    for _ in 0..3 {
        env.post_messages(K1, body(false)).await;
    }
    env.usage_after(KEY, 3).await;

    let pattern = format!("{}*seen*", env.store.names().prefix());
    let markers: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut env.store.conn())
        .await
        .unwrap();

    assert!(markers.is_empty(), "{markers:?}");
}

/// The report keeps an account's past use after the account is removed.
#[tokio::test]
async fn the_usage_report_keeps_a_removed_accounts_counters() {
    use claude_relay::usage::report;
    let env = TestEnv::start().await;
    env.post_messages(K1, body(false)).await;
    env.usage_after(KEY, 1).await;
    assert!(env.store.delete_account("acct-a").await.unwrap());

    let sections = report::build(&env.store, &env.recorder, &report::Query::default())
        .await
        .unwrap();
    let by_account = report::build(
        &env.store,
        &env.recorder,
        &report::Query {
            account: Some("acct-a".into()),
            ..report::Query::default()
        },
    )
    .await
    .unwrap();

    let account = sections
        .iter()
        .find(|section| section.kind == "account" && section.id == "acct-a")
        .expect("the removed account is still reported");
    let total = account
        .rows
        .iter()
        .find(|row| row.period == "total")
        .unwrap();
    assert_eq!(total.counters.requests, 1);
    assert_eq!(by_account.len(), 1);
}
