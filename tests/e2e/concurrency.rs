//! Concurrency limits: leases that hold across relay instances, are given
//! back however a request ends, live as long as their stream and expire
//! when nobody gives them back.

use std::time::{Duration, Instant};

use claude_relay::limits::lease;
use claude_relay::usage::record::Subject;
use futures::StreamExt;
use mock_upstream::{SseStandard, sse};
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Answer, Chunk, Lcg, SONNET, TestEnv, TestResponse, body, snapshot};

const KC: &str = "cr_cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

/// Key `key-c` with these limit fields.
fn limited_key(limits: Value) -> Value {
    let mut key = json!({"id": "key-c", "name": "C", "key": KC});
    if let (Value::Object(key), Value::Object(limits)) = (&mut key, limits) {
        key.extend(limits);
    }
    key
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

/// Sends `n` requests at once, spread over the instances, and returns
/// each answer once its head has arrived.
async fn fire(env: &TestEnv, n: usize, stream: bool) -> Vec<reqwest::Response> {
    let sends = (0..n).map(|i| env.messages_on(i, KC, body(stream)).send());
    futures::future::join_all(sends)
        .await
        .into_iter()
        .map(|sent| sent.expect("sending to a relay"))
        .collect()
}

#[tokio::test]
async fn fifty_requests_on_two_and_three_instances_admit_exactly_the_limit() {
    for instances in [2, 3] {
        let mut env = TestEnv::builder()
            .key(limited_key(json!({"concurrency_limit": 5})))
            .start()
            .await;
        for _ in 1..instances {
            env.add_instance().await;
        }
        env.mock
            .push_answers("sk-up-A", (0..5).map(|_| held_stream()).collect());

        let answers = fire(&env, 50, true).await;

        let (admitted, refused): (Vec<_>, Vec<_>) = answers
            .into_iter()
            .partition(|answer| answer.status() == 200);
        assert_eq!(admitted.len(), 5, "{instances} instances");
        assert_eq!(env.mock.journal().len(), 5);
        assert_eq!(env.mock.in_flight(), 5);
        assert_eq!(env.mock.max_in_flight(), 5);
        assert_eq!(env.leases("key-c").await.len(), 5);
        for (i, answer) in refused.into_iter().enumerate() {
            let refused = TestResponse::read(answer).await;
            assert_eq!(refused.status, 429);
            assert_eq!(refused.error_code(), "concurrency_limit");
            if i == 0 && instances == 2 {
                snapshot::limit_error_body("concurrency_limit", &refused);
            }
        }
        // Clients that hang up while the upstream holds give their slots back.
        drop(admitted);
        env.until_no_leases("key-c").await;
        assert_eq!(env.post_messages(KC, body(false)).await.status, 200);
    }
}

#[tokio::test]
async fn fifty_waiting_requests_all_succeed_with_never_more_than_the_limit_in_flight() {
    for instances in [2, 3] {
        let mut env = TestEnv::builder()
            .key(limited_key(
                json!({"concurrency_limit": 5, "wait_for_slot_secs": 60}),
            ))
            .start()
            .await;
        for _ in 1..instances {
            env.add_instance().await;
        }
        let slow = (0..50).map(|_| Answer::default().delay_ms(100)).collect();
        env.mock.push_answers("sk-up-A", slow);

        let answers = fire(&env, 50, false).await;

        for answer in answers {
            let answer = TestResponse::read(answer).await;
            assert_eq!(answer.status, 200, "{}", answer.text());
        }
        assert_eq!(env.mock.journal().len(), 50);
        assert_eq!(env.mock.max_in_flight(), 5, "{instances} instances");
        env.until_no_leases("key-c").await;
        assert_eq!(
            env.usage_after(Subject::Key("key-c"), 50).await.requests,
            50
        );
    }
}

#[tokio::test]
async fn a_request_that_waits_in_vain_is_refused_after_its_wait() {
    let env = TestEnv::builder()
        .key(limited_key(
            json!({"concurrency_limit": 1, "wait_for_slot_secs": 1}),
        ))
        .start()
        .await;
    env.mock.push_answers("sk-up-A", vec![held_stream()]);
    let holding = env.messages(KC, body(true)).send().await.expect("sending");
    let started = Instant::now();

    let refused = env.post_messages(KC, body(true)).await;
    let own = env
        .send(
            env.request(Method::GET, "/relay/key")
                .header("x-api-key", KC),
        )
        .await;

    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["error"]["details"]["waited_secs"], 1);
    assert_eq!(
        own.json()["limits"]["concurrency"],
        json!({"limit": 1, "in_use": 1})
    );
    snapshot::limit_error_body("concurrency_limit_after_wait", &refused);
    assert_eq!(env.mock.journal().len(), 1);
    drop(holding);
    env.until_no_leases("key-c").await;
}

#[tokio::test]
async fn two_hundred_clients_leaving_mid_stream_leave_no_lease_and_are_counted_once() {
    let env = TestEnv::builder()
        .key(limited_key(json!({"concurrency_limit": 1000})))
        .start()
        .await;
    let deltas: Vec<String> = (0..8).map(|i| format!("w{i} ")).collect();
    let stream = Answer::sse_standard(SseStandard {
        deltas,
        delta_pause_ms: 10,
        ..SseStandard::default()
    });
    env.mock.push_answers("sk-up-A", vec![held_stream()]);
    env.mock.push_answers("sk-up-A", vec![stream; 200]);
    // One request held throughout shows where the leases are counted.
    let held = env.messages(KC, body(true)).send().await.expect("sending");
    assert_eq!(env.leases("key-c").await.len(), 1);
    let mut random = Lcg(6);
    let reads: Vec<usize> = (0..200).map(|_| random.next(14)).collect();

    let env = &env;
    let clients = futures::stream::iter(reads).map(|chunks| async move {
        let answer = env.messages(KC, body(true)).send().await.expect("sending");
        assert_eq!(answer.status(), 200);
        let mut body = answer.bytes_stream();
        for _ in 0..chunks {
            if body.next().await.is_none() {
                break;
            }
        }
    });
    clients.buffer_unordered(50).collect::<Vec<()>>().await;
    drop(held);

    env.until_no_leases("key-c").await;
    let counted = env.usage_after(Subject::Key("key-c"), 201).await;
    assert_eq!(counted.requests, 201);
    assert_eq!(env.mock.journal().len(), 201);
}

#[tokio::test]
async fn a_stream_longer_than_the_lease_ttl_keeps_its_lease() {
    let ttl = Duration::from_millis(1500);
    let env = TestEnv::builder()
        .key(limited_key(json!({"concurrency_limit": 1})))
        .config(move |config| config.limits.lease_ttl = ttl)
        .start()
        .await;
    let (mut stream, held_for) = env.long_stream(KC).await;

    let leases = env.leases("key-c").await;
    let second = env.post_messages(KC, body(false)).await;

    assert!(held_for > ttl, "the stream ran {held_for:?}");
    assert_eq!(leases.len(), 1, "the lease outlived its first TTL");
    assert_eq!(second.error_code(), "concurrency_limit");
    while stream.next().await.is_some() {}
    env.until_no_leases("key-c").await;
    assert_eq!(env.post_messages(KC, body(false)).await.status, 200);
}

/// A lease nobody releases (a relay that crashed) frees its slot after one
/// TTL, and its set goes with it.
#[tokio::test]
async fn a_lease_nobody_releases_expires_by_itself() {
    let env = TestEnv::start().await;
    let names = env.store.names();
    let set = names.leases(&names.key_tag("key-leak"));
    let ttl = Duration::from_millis(300);
    let mut conn = env.store.conn();
    let started = Instant::now();

    let first = lease::acquire(&mut conn, &set, "req_crashed", ttl, 1)
        .await
        .unwrap();
    let second = lease::acquire(&mut conn, &set, "req_next", ttl, 1)
        .await
        .unwrap();
    let mut third = second;
    while !third.admitted {
        assert!(started.elapsed() < Duration::from_secs(10), "never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
        third = lease::acquire(&mut conn, &set, "req_later", ttl, 1)
            .await
            .unwrap();
    }

    assert!(first.admitted);
    assert!(!second.admitted);
    assert_eq!(second.in_use, 1);
    assert!(started.elapsed() >= ttl);
    let deadline = Instant::now() + Duration::from_secs(10);
    while exists(&env, &set).await {
        assert!(Instant::now() < deadline, "the set never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn exists(env: &TestEnv, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(&mut env.store.conn())
        .await
        .expect("asking Redis")
        == 1
}

/// Leases serve any subject (an account as well as a key): taken up to the
/// limit, given back when their holder drops them.
#[tokio::test]
async fn leases_of_any_subject_are_capped_and_given_back_on_drop() {
    let env = TestEnv::start().await;
    let names = env.store.names();
    let set = names.leases(&names.account_tag("acct-a"));
    let ttl = Duration::from_secs(60);
    let conn = env.store.conn();

    let first = lease::take(&conn, &set, "req_1", ttl, 2).await.unwrap();
    let second = lease::take(&conn, &set, "req_2", ttl, 2).await.unwrap();
    let third = lease::take(&conn, &set, "req_3", ttl, 2).await.unwrap();
    let held = lease::live(&mut env.store.conn(), &set).await.unwrap();
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    let fourth = loop {
        if let Some(lease) = lease::take(&conn, &set, "req_4", ttl, 2).await.unwrap() {
            break lease;
        }
        assert!(
            Instant::now() < deadline,
            "the dropped lease never came back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    assert!(second.is_some());
    assert!(third.is_none(), "the third is over the limit");
    assert_eq!(held.len(), 2);
    let live: Vec<String> = lease::live(&mut env.store.conn(), &set)
        .await
        .unwrap()
        .into_iter()
        .map(|(member, _)| member)
        .collect();
    assert_eq!(live.len(), 2);
    assert!(live.contains(&"req_4".to_owned()) && !live.contains(&"req_1".to_owned()));
    drop((second, fourth));
}
