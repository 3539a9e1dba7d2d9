//! Admission as a whole: key records cached in process for a short time,
//! and a store outage failing closed.

use std::time::{Duration, Instant};

use claude_relay::Config;
use claude_relay::error::RelayError;
use claude_relay::limits::{KeyLimits, Limits};
use claude_relay::store::{KeyRecord, Store};
use time::UtcOffset;

use crate::harness::{K1, SONNET, TestEnv, body};

async fn with_key_cache(ttl: Duration) -> TestEnv {
    TestEnv::builder()
        .config(move |config| config.limits.key_cache_ttl = ttl)
        .start()
        .await
}

async fn disable(env: &TestEnv, id: &str) {
    let mut key = env
        .store
        .key_by_id(id)
        .await
        .expect("reading the key")
        .expect("the key");
    key.disabled = true;
    env.store.put_key(&key).await.expect("writing the key");
}

#[tokio::test]
async fn a_disabled_key_is_refused_within_the_key_cache_ttl() {
    let cached = with_key_cache(Duration::from_secs(3600)).await;
    let uncached = with_key_cache(Duration::ZERO).await;
    let short = with_key_cache(Duration::from_millis(200)).await;
    for env in [&cached, &uncached, &short] {
        assert_eq!(env.post_messages(K1, body(false)).await.status, 200);
        disable(env, "key-1").await;
    }
    let disabled_at = Instant::now();

    let from_cache = cached.post_messages(K1, body(false)).await;
    let at_once = uncached.post_messages(K1, body(false)).await;
    let later = loop {
        let answer = short.post_messages(K1, body(false)).await;
        if answer.status != 200 {
            break answer;
        }
        assert!(
            disabled_at.elapsed() < Duration::from_secs(10),
            "never refused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    assert_eq!(from_cache.status, 200, "the cached record still serves");
    assert_eq!(at_once.error_code(), "key_disabled");
    assert_eq!(later.error_code(), "key_disabled");
}

#[tokio::test]
async fn admission_fails_closed_when_redis_is_unreachable() {
    let mut config = Config::default();
    config.redis.url = "redis://127.0.0.1:1".to_owned().into();
    config.redis.connect_timeout = Duration::from_millis(300);
    let store = Store::connect(&config.redis).unwrap();
    let limits = Limits::new(store, &config.limits, UtcOffset::UTC);
    let key = KeyRecord {
        limits: KeyLimits {
            concurrency: 1,
            ..KeyLimits::default()
        },
        ..KeyRecord::new("key-x", "X", String::new())
    };

    let refused = limits.admit(&key, SONNET, "req_down").await;

    let Err(err) = refused else {
        panic!("admitted without a store");
    };
    assert!(matches!(err, RelayError::StoreUnavailable(_)), "{err}");
    assert_eq!(err.class().status, 503);
}

/// A request admitted and then refused with 503 (Redis stopped answering
/// before an account was picked) is taken back: its count in the window
/// and its lease, so a 503 uses up nothing.
#[tokio::test]
async fn an_admission_taken_back_leaves_the_window_and_the_leases_as_before() {
    let env = TestEnv::builder()
        .k1(serde_json::json!({"concurrency_limit": 2,
                               "rate_limit": {"window_secs": 3600, "requests": 10}}))
        .start()
        .await;
    assert_eq!(env.post_messages(K1, body(false)).await.status, 200);
    let limits = Limits::new(env.store.clone(), &env.config.limits, UtcOffset::UTC);
    let key = env.store.key_by_id("key-1").await.unwrap().unwrap();
    let window_used =
        |status: serde_json::Value| status["limits"]["rate_limit"]["requests"]["used"].clone();
    let status = || async {
        env.send(
            env.request(reqwest::Method::GET, "/relay/key")
                .header("x-api-key", K1),
        )
        .await
        .json()
    };

    let admission = limits.admit(&key, SONNET, "req_taken_back").await.unwrap();
    let during = window_used(status().await);
    let (lease, take_back) = admission.split();
    take_back.run();
    drop(lease);
    let deadline = Instant::now() + Duration::from_secs(10);
    while window_used(status().await) != 1 {
        assert!(
            Instant::now() < deadline,
            "the admission was never taken back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert_eq!(during, 2);
    env.until_no_leases("key-1").await;
}

/// With no account able to serve, every request gets 503 and none of them
/// uses up the key's window.
#[tokio::test]
async fn requests_refused_for_want_of_an_account_use_up_no_window() {
    let env = TestEnv::builder()
        .accounts(Vec::new())
        .k1(serde_json::json!({"rate_limit": {"window_secs": 3600, "requests": 2}}))
        .start()
        .await;
    let window_used = || async {
        env.send(
            env.request(reqwest::Method::GET, "/relay/key")
                .header("x-api-key", K1),
        )
        .await
        .json()["limits"]["rate_limit"]["requests"]["used"]
            .as_u64()
    };

    // Past the window's 2 requests: without taking back, the third would
    // be refused for the window, not for the accounts.
    for _ in 0..4 {
        let refused = env.post_messages(K1, body(false)).await;
        assert_eq!(refused.error_code(), "no_upstream_available");
        let deadline = Instant::now() + Duration::from_secs(10);
        while window_used().await.unwrap_or(0) != 0 {
            assert!(
                Instant::now() < deadline,
                "the refused request used up the window"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
