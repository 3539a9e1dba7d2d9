//! Redis restarted behind a proxy that keeps the relay's socket open (as
//! Docker's port proxy does): the relay only learns the connection is dead
//! when it next uses it. Its watch of the store must be what learns it,
//! not a user's request. And after an outage, the relay serves at once.

use std::time::Duration;

use claude_relay::usage::record::Subject;
use serde_json::json;

use crate::harness::proxy::FlakyProxy;
use crate::harness::{K1, TestEnv, body};

/// A relay whose Redis is behind `proxy`, with K1 limited (so requests
/// need the store) and no key cache (so each request reads the key).
async fn relay_behind(proxy: &FlakyProxy) -> TestEnv {
    let proxy_url = proxy.url();
    TestEnv::builder()
        .k1(json!({"concurrency_limit": 2}))
        .config(move |config| {
            config.redis.url = proxy_url.into();
            config.limits.key_cache_ttl = Duration::ZERO;
        })
        .start()
        .await
}

#[tokio::test]
async fn a_connection_that_died_while_the_relay_was_idle_costs_no_request() {
    let proxy = FlakyProxy::start(&crate::harness::redis::redis_url()).await;
    let env = relay_behind(&proxy).await;
    assert_eq!(env.post_messages(K1, body(false)).await.status, 200);
    env.usage_after(Subject::Key("key-1"), 1).await;

    proxy.restart_redis();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let after = env.post_messages(K1, body(false)).await;

    assert_eq!(after.status, 200, "{after:?}");
}

/// Once Redis is back, the relay serves at once: no request after the
/// outage pays for the connection that broke during it.
#[tokio::test]
async fn requests_after_a_redis_outage_are_served_without_a_503() {
    let proxy = FlakyProxy::start(&crate::harness::redis::redis_url()).await;
    let env = relay_behind(&proxy).await;
    assert_eq!(env.post_messages(K1, body(false)).await.status, 200);

    proxy.set_up(false);
    let during = env.post_messages(K1, body(false)).await;
    proxy.set_up(true);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut after = Vec::new();
    for _ in 0..3 {
        after.push(env.post_messages(K1, body(false)).await.status);
    }
    proxy.set_up(false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.set_up(true);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after_quiet_outage = env.post_messages(K1, body(false)).await;

    assert_eq!(during.status, 503, "{during:?}");
    assert_eq!(during.error_code(), "store_unavailable");
    assert_eq!(after, [200, 200, 200]);
    assert_eq!(after_quiet_outage.status, 200, "{after_quiet_outage:?}");
}

/// The same restart with a request right after it, before the watch
/// notices: the request's first command (a read of its key) fails on the
/// dead connection and is sent once more on a new one.
#[tokio::test]
async fn a_request_right_after_an_unnoticed_redis_restart_is_served() {
    let proxy = FlakyProxy::start(&crate::harness::redis::redis_url()).await;
    let env = relay_behind(&proxy).await;
    assert_eq!(env.post_messages(K1, body(false)).await.status, 200);
    env.usage_after(Subject::Key("key-1"), 1).await;

    proxy.restart_redis();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after = env.post_messages(K1, body(false)).await;

    assert_eq!(after.status, 200, "{after:?}");
    env.usage_after(Subject::Key("key-1"), 2).await;
}
