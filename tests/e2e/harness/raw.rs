//! Requests written byte by byte on a plain TCP connection, for what an
//! HTTP client library refuses to send (a body shorter than its declared
//! length, more headers than a client allows).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::TestResponse;

/// Writes `request`, then closes the sending side (the client has nothing
/// more to say) and reads until the relay closes the connection. `None`
/// when the connection closed without an answer.
pub async fn send_then_half_close(addr: SocketAddr, request: &[u8]) -> Option<TestResponse> {
    let mut stream = send(addr, request).await;
    stream.shutdown().await.expect("closing the sending side");
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received));
    // A reset after the answer is fine: what was read before it counts.
    let _ = read.await.expect("the relay closes the connection in time");
    parse(&received)
}

/// Writes `request` and then nothing more while keeping the connection
/// open, as a stalled client does; reads until the relay closes it, for at
/// most `limit`. `None` when no answer came in time.
pub async fn send_and_stall(
    addr: SocketAddr,
    request: &[u8],
    limit: Duration,
) -> Option<TestResponse> {
    let mut stream = send(addr, request).await;
    let mut received = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut received)).await;
    parse(&received)
}

/// A connection to the relay with `request` written on it.
async fn send(addr: SocketAddr, request: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connecting to the relay");
    stream
        .write_all(request)
        .await
        .expect("writing the request");
    stream
}

/// An HTTP/1.1 answer with a `content-length` body.
fn parse(received: &[u8]) -> Option<TestResponse> {
    let at = received
        .windows(4)
        .position(|window| window == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&received[..at]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()?
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
            HeaderValue::from_str(value.trim()).ok()?,
        );
    }
    Some(TestResponse {
        status,
        headers,
        body: Bytes::copy_from_slice(&received[at + 4..]),
    })
}
