//! Request bodies in, upstream bodies out.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http_body_util::BodyExt;

use crate::error::RelayError;
use crate::observe::RequestLog;

/// How much of an oversized body is read and thrown away so the client
/// receives the 413 instead of a connection reset, and for how long.
const DRAIN_MAX_BYTES: usize = 256 * 1024 * 1024;
const DRAIN_MAX_TIME: Duration = Duration::from_secs(30);

/// Reads the body, refusing it once it passes `limit` bytes.
pub async fn read_limited(mut body: Body, limit: usize) -> Result<Bytes, RelayError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| RelayError::InvalidBody {
            reason: "the body ended before its declared length".into(),
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            drain(body).await;
            return Err(RelayError::BodyTooLarge { limit_bytes: limit });
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// Reads and discards what the client is still sending, within bounds.
pub async fn drain(mut body: Body) {
    let discard = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen > DRAIN_MAX_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, discard).await;
}

/// An upstream body relayed chunk by chunk as it arrives. A gap longer
/// than `idle` between chunks ends the stream.
pub fn relay(
    upstream: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    idle: Duration,
    log: Arc<RequestLog>,
) -> Body {
    // TODO(#5): tap SSE events for usage and append an error event when
    // the upstream stops before message_stop.
    let upstream = Box::pin(upstream);
    let stream = futures::stream::unfold(Some((upstream, log)), move |state| async move {
        let (mut upstream, log) = state?;
        match tokio::time::timeout(idle, upstream.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some((upstream, log)))),
            Ok(None) => None,
            Ok(Some(Err(err))) => {
                log.stream_failed(&format!("upstream body failed: {err}"));
                Some((Err(std::io::Error::other("upstream stream failed")), None))
            }
            Err(_) => {
                log.stream_failed("upstream idle timeout");
                Some((Err(std::io::Error::other("upstream idle timeout")), None))
            }
        }
    });
    Body::from_stream(stream)
}

/// Reads a whole (error) answer, at most `cap` bytes and within `idle`
/// per chunk: enough to relay it verbatim if it turns out to be the last.
pub async fn buffer(upstream: reqwest::Response, idle: Duration, cap: usize) -> Bytes {
    let mut stream = upstream.bytes_stream();
    let mut buf = BytesMut::new();
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout(idle, stream.next()).await {
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= cap {
            break;
        }
    }
    buf.freeze()
}
