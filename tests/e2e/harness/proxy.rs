//! A TCP proxy to Redis that can be taken down (every connection dropped,
//! new ones refused, as when Redis stops) and brought back on its port.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct FlakyProxy {
    addr: SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
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
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.set_up(false);
    }
}
