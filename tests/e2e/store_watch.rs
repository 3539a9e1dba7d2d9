//! Redis restarted behind a proxy that keeps the relay's socket open (as
//! Docker's port proxy does): the relay only learns the connection is dead
//! when it next uses it. Its watch of the store must be what learns it,
//! not a user's request.

use std::time::Duration;

use claude_relay::usage::record::Subject;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::harness::{K1, TestEnv, body};

/// A TCP proxy to Redis whose backend connections can all be dropped
/// while the client sides stay open until the client next writes.
struct StaleProxy {
    url: String,
    restarts: watch::Sender<u32>,
    accept: JoinHandle<()>,
}

impl StaleProxy {
    async fn start(redis_url: &str) -> StaleProxy {
        let target = redis_url
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port for the proxy");
        let url = format!(
            "redis://{}",
            listener.local_addr().expect("the proxy address")
        );
        let (restarts, _) = watch::channel(0);
        let subscribe = restarts.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(link(client, target.clone(), subscribe.subscribe()));
            }
        });
        StaleProxy {
            url,
            restarts,
            accept,
        }
    }

    /// Every backend connection goes, as when Redis restarts.
    fn restart_redis(&self) {
        self.restarts.send_modify(|count| *count += 1);
    }
}

async fn link(mut client: TcpStream, target: String, mut restarts: watch::Receiver<u32>) {
    let Ok(mut redis) = TcpStream::connect(&target).await else {
        return;
    };
    let restarted = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut redis) => false,
        _ = restarts.changed() => true,
    };
    if restarted {
        drop(redis);
        // The client finds out only when it sends something.
        let mut byte = [0u8; 1];
        let _ = client.read(&mut byte).await;
    }
}

impl Drop for StaleProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

#[tokio::test]
async fn a_connection_that_died_while_the_relay_was_idle_costs_no_request() {
    let proxy = StaleProxy::start(&crate::harness::redis::redis_url()).await;
    let proxy_url = proxy.url.clone();
    let env = TestEnv::builder()
        .k1(json!({"concurrency_limit": 2}))
        .config(move |config| {
            config.redis.url = proxy_url.into();
            config.limits.key_cache_ttl = Duration::ZERO;
        })
        .start()
        .await;
    assert_eq!(env.post_messages(K1, body(false)).await.status, 200);
    env.usage_after(Subject::Key("key-1"), 1).await;

    proxy.restart_redis();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let after = env.post_messages(K1, body(false)).await;

    assert_eq!(after.status, 200, "{after:?}");
}
