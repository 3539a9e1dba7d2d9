//! What clients, upstreams and Redis do wrong, and what the relay must
//! still do: answer, count each answer once, and let go of what it holds.


use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use claude_relay::usage::record::Subject;
use futures::StreamExt;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

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

/// Redis goes away while a stream runs and comes back after it ended: the
/// answer is counted once, and its lease is released without waiting for
/// it to expire.
#[tokio::test]
async fn an_answer_that_ends_while_redis_is_away_is_counted_once_when_it_returns() {
    let proxy = FlakyProxy::start(&crate::harness::redis::redis_url()).await;
    let proxy_url = proxy.url();
    let env = TestEnv::builder()
        .k1(json!({"concurrency_limit": 1}))
        .config(move |config| config.redis.url = proxy_url.into())
        .start()
        .await;
    env.mock.push_answers(
        "sk-up-A",
        vec![Answer::sse_standard(mock_upstream::SseStandard {
            input: 7,
            output: 30,
            deltas: (0..10).map(|i| format!("part {i} ")).collect(),
            delta_pause_ms: 100,
            ..Default::default()
        })],
    );

    let response = env.messages(K1, body(true)).send().await.unwrap();
    let mut stream = response.bytes_stream();
    let mut text = String::from_utf8_lossy(&stream.next().await.unwrap().unwrap()).into_owned();
    proxy.set_up(false);
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    proxy.set_up(true);
    until_redis_answers(&env).await;

    assert!(text.contains("event: message_stop"), "{text}");
    let counted = env.usage_after(Subject::Key("key-1"), 1).await;
    assert_eq!(counted.requests, 1);
    assert_eq!(counted.input_tokens, 7);
    assert_eq!(counted.output_tokens, 30);
    env.until_no_leases("key-1").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.settled_total(Subject::Key("key-1")).await.requests, 1);
}

/// Waits until the relay's connection and the test's answer again after an
/// outage (each notices it on its next call, which fails, and reconnects).
async fn until_redis_answers(env: &TestEnv) {
    use claude_relay::usage::record::Period;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while env.store.ping().await.is_err()
        || env
            .recorder
            .read(Subject::Key("key-1"), &[Period::Total])
            .await
            .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Redis did not come back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP proxy to Redis that can be taken down (every connection dropped,
/// new ones refused, as when Redis stops) and brought back on its port.
struct FlakyProxy {
    addr: SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl FlakyProxy {
    async fn start(redis_url: &str) -> FlakyProxy {
        let target = redis_url
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let first = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port for the proxy");
        let addr = first.local_addr().expect("the proxy address");
        let (up, mut up_signal) = tokio::sync::watch::channel(true);
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let links = Arc::clone(&links);
            async move {
                let mut listener = Some(first);
                loop {
                    if up_signal.wait_for(|up| *up).await.is_err() {
                        return;
                    }
                    let bound = match listener.take() {
                        Some(bound) => bound,
                        None => TcpListener::bind(addr).await.expect("the proxy port again"),
                    };
                    loop {
                        tokio::select! {
                            accepted = bound.accept() => {
                                let Ok((mut client, _)) = accepted else { break };
                                let target = target.clone();
                                links.lock().expect("the proxy links").push(tokio::spawn(async move {
                                    if let Ok(mut redis) = TcpStream::connect(&target).await {
                                        let _ = tokio::io::copy_bidirectional(&mut client, &mut redis)
                                            .await;
                                    }
                                }));
                            }
                            _ = up_signal.wait_for(|up| !*up) => break,
                        }
                    }
                }
            }
        });
        FlakyProxy {
            addr,
            up,
            links,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn set_up(&self, up: bool) {
        let _ = self.up.send(up);
        if !up {
            for link in self.links.lock().expect("the proxy links").drain(..) {
                link.abort();
            }
        }
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.set_up(false);
    }
}
