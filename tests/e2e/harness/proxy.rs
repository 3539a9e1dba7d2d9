//! A TCP proxy to Redis for outages: taken down (every connection dropped,
//! new ones refused, as when Redis stops) and brought back on its port, or
//! stalled (connections kept, what clients send held back, as when Redis
//! is paused) and resumed, which delivers what it held, in order; or
//! Redis restarted behind it while every client's socket stays open until
//! the client next sends something, as Docker's port proxy does.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct FlakyProxy {
    addr: SocketAddr,
    up: watch::Sender<bool>,
    flowing: watch::Sender<bool>,
    restarts: watch::Sender<u32>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl FlakyProxy {
    pub async fn start(redis_url: &str) -> FlakyProxy {
        let target = redis_url
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let first = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port for the proxy");
        let addr = first.local_addr().expect("the proxy address");
        let (up, mut up_signal) = watch::channel(true);
        let (flowing, flowing_signal) = watch::channel(true);
        let (restarts, restarts_signal) = watch::channel(0);
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
                                let Ok((client, _)) = accepted else { break };
                                let link = link(
                                    client,
                                    target.clone(),
                                    flowing_signal.clone(),
                                    restarts_signal.clone(),
                                );
                                links.lock().expect("the proxy links").push(tokio::spawn(link));
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
            flowing,
            restarts,
            links,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    pub fn set_up(&self, up: bool) {
        let _ = self.up.send(up);
        if !up {
            for link in self.links.lock().expect("the proxy links").drain(..) {
                link.abort();
            }
        }
    }

    /// Holds back what clients send (`true`) or delivers it (`false`).
    pub fn stall(&self, stalled: bool) {
        let _ = self.flowing.send(!stalled);
    }

    /// Every connection to Redis goes, as when Redis restarts; each
    /// client finds out only when it next sends something.
    pub fn restart_redis(&self) {
        self.restarts.send_modify(|count| *count += 1);
    }
}

/// Carries one connection: answers as they come, requests only while the
/// proxy is not stalled.
async fn link(
    mut client: TcpStream,
    target: String,
    mut flowing: watch::Receiver<bool>,
    mut restarts: watch::Receiver<u32>,
) {
    restarts.mark_unchanged();
    let Ok(mut redis) = TcpStream::connect(&target).await else {
        return;
    };
    let (mut from_client, mut to_client) = client.split();
    let (mut from_redis, mut to_redis) = redis.split();
    let requests = async {
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let read = match from_client.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            if flowing.wait_for(|flowing| *flowing).await.is_err()
                || to_redis.write_all(&buffer[..read]).await.is_err()
            {
                return;
            }
        }
    };
    let restarted = tokio::select! {
        () = requests => false,
        _ = tokio::io::copy(&mut from_redis, &mut to_client) => false,
        _ = restarts.changed() => true,
    };
    if restarted {
        drop(redis);
        let mut byte = [0u8; 1];
        let _ = client.read(&mut byte).await;
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.set_up(false);
    }
}
