//! Turns an [`Answer`] into a response on the wire, faults included.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use flate2::{Compression, write::GzEncoder};
use futures::Stream;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use crate::answer::{Answer, Chunk, SseStandard};
use crate::anthropic::Usage;
use crate::sse::StandardStream;

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
const EVENT_STREAM: &str = "text/event-stream; charset=utf-8";

/// Makes the server drop the connection without writing an answer.
#[derive(Debug)]
pub(crate) struct CloseConnection;

impl std::fmt::Display for CloseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection closed without an answer, as scripted")
    }
}

impl std::error::Error for CloseConnection {}

/// One write of the body and the pause after it.
struct Piece {
    bytes: Bytes,
    pause: Duration,
}

impl Piece {
    fn new(bytes: impl Into<Bytes>) -> Self {
        Self::paused(bytes, 0)
    }

    fn paused(bytes: impl Into<Bytes>, pause_ms: u64) -> Self {
        Piece {
            bytes: bytes.into(),
            pause: Duration::from_millis(pause_ms),
        }
    }
}

/// The body before faults: its writes, whether it streams, its content type.
struct Payload {
    pieces: Vec<Piece>,
    streamed: bool,
    content_type: Option<&'static str>,
}

/// `model` is what a generated stream names when the answer does not.
pub(crate) async fn render(
    answer: Answer,
    request_id: &str,
    model: &str,
) -> Result<Response<Body>, CloseConnection> {
    hold(&answer).await?;
    let payload = payload(&answer, model);
    let content_type = payload.content_type;
    let mut response = Response::new(body(payload, &answer)?);
    *response.status_mut() = status(answer.status);
    let defaults = Defaults {
        content_type,
        request_id,
        gzip: answer.gzip,
    };
    set_headers(response.headers_mut(), defaults, &answer.headers);
    Ok(response)
}

/// The scripted delay, hang or close, before anything is written.
async fn hold(answer: &Answer) -> Result<(), CloseConnection> {
    if let Some(ms) = answer.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if answer.hang {
        // Dropped with the connection when the client leaves.
        std::future::pending::<()>().await;
    }
    if answer.close {
        return Err(CloseConnection);
    }
    Ok(())
}

/// The payload with gzip and the cut applied. A whole body gets a
/// `content-length`; a stream or a cut body goes out chunked.
fn body(payload: Payload, answer: &Answer) -> Result<Body, CloseConnection> {
    let pieces = if answer.gzip {
        gzip(payload.pieces).map_err(|error| {
            tracing::error!(%error, "gzip failed");
            CloseConnection
        })?
    } else {
        payload.pieces
    };
    Ok(match answer.cut_after_bytes {
        Some(limit) => Body::from_stream(body_stream(cut(pieces, limit), true)),
        None if payload.streamed => Body::from_stream(body_stream(pieces, false)),
        None => Body::from(concat(pieces)),
    })
}

fn payload(answer: &Answer, model: &str) -> Payload {
    let whole = |bytes: Bytes, content_type| Payload {
        pieces: vec![Piece::new(bytes)],
        streamed: false,
        content_type: Some(content_type),
    };
    let streamed = |pieces| Payload {
        pieces,
        streamed: true,
        content_type: Some(EVENT_STREAM),
    };
    if let Some(json) = &answer.json {
        whole(json.to_string().into(), JSON)
    } else if let Some(text) = &answer.text {
        whole(text.clone().into(), TEXT)
    } else if let Some(chunks) = &answer.sse {
        streamed(
            chunks
                .iter()
                .map(|Chunk { bytes, pause_ms }| Piece::paused(bytes.clone(), *pause_ms))
                .collect(),
        )
    } else if let Some(standard) = &answer.sse_standard {
        streamed(standard_pieces(standard, model))
    } else {
        Payload {
            pieces: Vec::new(),
            streamed: false,
            content_type: None,
        }
    }
}

/// One write per event, pausing after each text delta.
fn standard_pieces(standard: &SseStandard, model: &str) -> Vec<Piece> {
    let usage = Usage {
        input: standard.input,
        cache_creation: standard.cache_creation,
        cache_read: standard.cache_read,
        output: standard.output,
    };
    let model = standard.model.as_deref().unwrap_or(model);
    let stream = StandardStream::new("msg_1", model, usage, standard.deltas.clone());
    let pieces = stream.events().into_iter().map(|event| {
        let is_delta = event.starts_with("event: content_block_delta\n");
        let pause_ms = if is_delta { standard.delta_pause_ms } else { 0 };
        Piece::paused(event, pause_ms)
    });
    pieces.collect()
}

/// Compresses piece by piece so that a gzipped stream still streams.
fn gzip(pieces: Vec<Piece>) -> io::Result<Vec<Piece>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    let mut compressed = Vec::with_capacity(pieces.len() + 1);
    for piece in pieces {
        encoder.write_all(&piece.bytes)?;
        // A sync flush makes everything written so far decodable by the client.
        encoder.flush()?;
        let bytes = std::mem::take(encoder.get_mut());
        compressed.push(Piece {
            bytes: bytes.into(),
            pause: piece.pause,
        });
    }
    compressed.push(Piece::new(encoder.finish()?));
    Ok(compressed)
}

/// Keeps the first `limit` bytes of the body.
fn cut(pieces: Vec<Piece>, limit: u64) -> Vec<Piece> {
    let mut left = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut kept = Vec::new();
    for mut piece in pieces {
        if left == 0 {
            break;
        }
        piece.bytes.truncate(left);
        left -= piece.bytes.len();
        kept.push(piece);
    }
    kept
}

fn concat(pieces: Vec<Piece>) -> Bytes {
    let mut pieces = pieces.into_iter();
    match (pieces.next(), pieces.len()) {
        (None, _) => Bytes::new(),
        (Some(only), 0) => only.bytes,
        (Some(first), _) => {
            let mut all = first.bytes.to_vec();
            pieces.for_each(|piece| all.extend_from_slice(&piece.bytes));
            all.into()
        }
    }
}

/// Yields the pieces with their pauses; with `abort`, fails at the end so that
/// hyper aborts the connection instead of ending the body cleanly.
fn body_stream(pieces: Vec<Piece>, abort: bool) -> impl Stream<Item = io::Result<Bytes>> + Send {
    let start = (pieces.into_iter(), None, abort);
    futures::stream::unfold(start, |(mut pieces, pause, abort)| async move {
        if let Some(pause) = pause {
            wait_after_write(pause).await;
        }
        if let Some(piece) = pieces.next() {
            return Some((Ok(piece.bytes), (pieces, Some(piece.pause), abort)));
        }
        let error = io::Error::new(io::ErrorKind::ConnectionAborted, "cut_after_bytes");
        abort.then(|| (Err(error), (pieces, None, false)))
    })
}

/// hyper flushes what it holds whenever the body is not ready. Waiting at
/// least one poll therefore gives every piece its own write, and lets the last
/// piece out before a cut: hyper discards unflushed bytes when a body fails.
async fn wait_after_write(pause: Duration) {
    if pause.is_zero() {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(pause).await;
    }
}

fn status(code: Option<u16>) -> StatusCode {
    let code = code.unwrap_or(200);
    StatusCode::from_u16(code).unwrap_or_else(|_| {
        tracing::warn!(code, "invalid scripted status, answering 500");
        StatusCode::INTERNAL_SERVER_ERROR
    })
}

struct Defaults<'a> {
    content_type: Option<&'static str>,
    request_id: &'a str,
    gzip: bool,
}

/// Defaults first, so that scripted headers replace them.
fn set_headers(map: &mut HeaderMap, defaults: Defaults<'_>, scripted: &BTreeMap<String, String>) {
    if let Some(content_type) = defaults.content_type {
        map.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    if let Ok(request_id) = HeaderValue::try_from(defaults.request_id) {
        map.insert(HeaderName::from_static("request-id"), request_id);
    }
    if defaults.gzip {
        map.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    for (name, value) in scripted {
        match (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            (Ok(name), Ok(value)) => {
                map.insert(name, value);
            }
            _ => tracing::warn!(name, "skipping invalid scripted header"),
        }
    }
}
