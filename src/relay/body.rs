//! Request bodies in, upstream bodies out.

use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http_body_util::BodyExt;

use super::meter::Meter;
use crate::app::Stopping;
use crate::error::RelayError;

/// How much of an oversized body is read and thrown away so the client
/// receives the 413 instead of a connection reset, for how long, and how
/// long a quiet client is waited for.
const DRAIN_MAX_BYTES: usize = 256 * 1024 * 1024;
const DRAIN_MAX_TIME: Duration = Duration::from_secs(30);
const DRAIN_IDLE: Duration = Duration::from_secs(2);

/// Reads the body, refusing it once it passes `limit` bytes, or once the
/// client has sent nothing of it for `idle`.
pub async fn read_limited(
    mut body: Body,
    limit: usize,
    idle: Duration,
) -> Result<Bytes, RelayError> {
    let mut buf = BytesMut::new();
    loop {
        let Ok(frame) = tokio::time::timeout(idle, body.frame()).await else {
            return Err(RelayError::BodyTimeout {
                idle_secs: idle.as_secs(),
            });
        };
        let Some(frame) = frame else { break };
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
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(DRAIN_IDLE, body.frame()).await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen > DRAIN_MAX_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, discard).await;
}

/// An upstream body relayed chunk by chunk as it arrives, each chunk also
/// shown to the meter. A gap longer than `idle` between chunks ends it.
/// A stream that stops before `message_stop` (cut, reset, idle) gets one
/// `error` event appended, so the client knows the answer is incomplete.
/// A stopping relay whose shutdown grace is over ends the answers still
/// running the same way, so they are counted and their leases released
/// while it can still write to Redis.
pub fn relay(
    upstream: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    idle: Duration,
    meter: Meter,
    stopping: Stopping,
) -> Body {
    let state = Relaying {
        upstream: Box::pin(upstream),
        meter,
        stopping,
    };
    let stream = futures::stream::unfold(Some(state), move |state| async move {
        let mut state = state?;
        let next = tokio::select! {
            next = tokio::time::timeout(idle, state.upstream.next()) => next,
            () = state.stopping.wait() => {
                let failure = "the relay stopped before the answer was complete";
                return state.end_early(failure);
            }
        };
        let failure = match next {
            Ok(Some(Ok(chunk))) => {
                state.meter.feed(&chunk);
                return Some((Ok(chunk), Some(state)));
            }
            Ok(None) if !state.meter.is_sse() || state.meter.saw_stop_or_error() => {
                state.meter.finish(true);
                return None;
            }
            Ok(None) => "the upstream closed the stream before message_stop".to_owned(),
            Ok(Some(Err(err))) => format!("the upstream stream failed: {err}"),
            Err(_) => format!("no data from the upstream for {} s", idle.as_secs()),
        };
        state.end_early(&failure)
    });
    Body::from_stream(stream)
}

type BoxedUpstream = std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

struct Relaying {
    upstream: BoxedUpstream,
    meter: Meter,
    stopping: Stopping,
}

type Step = Option<(Result<Bytes, std::io::Error>, Option<Relaying>)>;

impl Relaying {
    /// The answer stops before its end: logged, counted as far as it went,
    /// and closed for the client as `ending` says.
    fn end_early(mut self, failure: &str) -> Step {
        self.meter.log().stream_failed(failure);
        let ending = self.ending();
        self.meter.finish(false);
        ending.map(|ending| (ending, None))
    }

    /// How a stream that stopped early ends for the client: an `error`
    /// event after SSE (unless the upstream sent its own), an aborted body
    /// otherwise (a cut JSON body cannot be mended).
    fn ending(&self) -> Option<Result<Bytes, std::io::Error>> {
        if !self.meter.is_sse() {
            return Some(Err(std::io::Error::other("upstream body cut short")));
        }
        if self.meter.saw_stop_or_error() {
            return None;
        }
        Some(Ok(incomplete_event(
            self.meter.to_boundary(),
            self.meter.request_id(),
        )))
    }
}

/// The `error` event appended to a stream the upstream did not finish.
fn incomplete_event(boundary: &[u8], request_id: &str) -> Bytes {
    let data = serde_json::json!({
        "type": "error",
        "error": {
            "type": "api_error",
            "message": "The upstream stopped before the answer was complete. Retry the request.",
        },
        "request_id": request_id,
    });
    let mut event = boundary.to_vec();
    event.extend_from_slice(format!("event: error\ndata: {data}\n\n").as_bytes());
    Bytes::from(event)
}

/// An upstream body read up to a cap, and what followed that head.
pub struct HeldBody {
    pub head: Bytes,
    tail: Tail,
}

enum Tail {
    /// The head is the whole body.
    Complete,
    /// The body went on past the cap: the rest, still to be read.
    More(UpstreamStream),
    /// The upstream cut the body (or went silent) before its end.
    Cut,
}

pub type UpstreamStream = std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

impl HeldBody {
    /// The body for the client as the upstream sent it: the head, then the
    /// rest as it comes (never billed: only failed answers are held). A
    /// body the upstream cut (or left silent for `idle`) is cut for the
    /// client too, never passed off as complete, nor patched up with an
    /// event of the relay's.
    pub fn into_body(self, idle: Duration) -> Body {
        let cut = || {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the upstream cut its answer",
            )
        };
        match self.tail {
            Tail::Complete => Body::from(self.head),
            Tail::Cut => Body::from_stream(futures::stream::iter([Ok(self.head), Err(cut())])),
            Tail::More(rest) => {
                let rest = futures::stream::unfold(Some(rest), move |rest| async move {
                    let mut rest = rest?;
                    match tokio::time::timeout(idle, rest.next()).await {
                        Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(rest))),
                        Ok(None) => None,
                        Ok(Some(Err(_))) | Err(_) => Some((Err(cut()), None)),
                    }
                });
                let head = futures::stream::once(std::future::ready(Ok(self.head)));
                Body::from_stream(head.chain(rest))
            }
        }
    }
}

/// Reads up to `cap` bytes of `upstream` within `idle` per chunk, keeping
/// the rest of a longer body unread so it can still be relayed whole.
pub async fn hold(upstream: reqwest::Response, idle: Duration, cap: usize) -> HeldBody {
    let mut stream: UpstreamStream = Box::pin(upstream.bytes_stream());
    let mut buf = BytesMut::new();
    loop {
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(chunk))) => {
                buf.extend_from_slice(&chunk);
                if buf.len() >= cap {
                    return HeldBody {
                        head: buf.freeze(),
                        tail: Tail::More(stream),
                    };
                }
            }
            Ok(None) => {
                return HeldBody {
                    head: buf.freeze(),
                    tail: Tail::Complete,
                };
            }
            Ok(Some(Err(_))) | Err(_) => {
                return HeldBody {
                    head: buf.freeze(),
                    tail: Tail::Cut,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use proptest::prelude::*;

    use super::*;
    use crate::observe::RequestLog;
    use crate::relay::meter::UsageSink;
    use crate::usage::tap::{Observed, UsageTap};

    const TOOL_USE: &str = include_str!("../../fixtures/sse/tool-use.sse");
    const THINKING: &str = include_str!("../../fixtures/sse/thinking.sse");

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<Observed>>>);

    impl UsageSink for Captured {
        fn count(self: Box<Self>, _request_id: &str, observed: Observed) {
            self.0.lock().unwrap().push(observed);
        }
    }

    /// Relays `chunks` (the last item may be an upstream failure) and
    /// returns what the client read and what was counted.
    async fn relay_chunks(chunks: Vec<reqwest::Result<Bytes>>) -> (Vec<u8>, Vec<Observed>) {
        let captured = Captured::default();
        let log = Arc::new(RequestLog::new("POST".into(), "/v1/messages".into()));
        let meter = Meter::new(UsageTap::sse(), Some(Box::new(captured.clone())), log);
        let body = relay(
            futures::stream::iter(chunks),
            Duration::from_secs(5),
            meter,
            Stopping::never(),
        );
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let counted = captured.0.lock().unwrap().clone();
        (bytes.to_vec(), counted)
    }

    fn split(text: &str, cuts: &[usize]) -> Vec<reqwest::Result<Bytes>> {
        let bytes = text.as_bytes();
        let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut start = 0;
        let mut chunks = Vec::new();
        for cut in cuts.into_iter().chain([bytes.len()]) {
            chunks.push(Ok(Bytes::copy_from_slice(&bytes[start..cut])));
            start = cut;
        }
        chunks
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn transcripts_are_relayed_whole_and_counted_once() {
        let (tool_bytes, tool) = relay_chunks(split(TOOL_USE, &[])).await;
        let (think_bytes, think) = relay_chunks(split(THINKING, &[])).await;

        assert_eq!(tool_bytes, TOOL_USE.as_bytes());
        assert_eq!(tool.len(), 1);
        assert_eq!(tool[0].usage.input_tokens, 612);
        assert_eq!(tool[0].usage.cache_read_input_tokens, 1800);
        assert_eq!(tool[0].usage.output_tokens, 74);
        assert_eq!(think_bytes, THINKING.as_bytes());
        assert_eq!(think[0].usage.cache_creation_input_tokens, 2100);
        assert_eq!(think[0].usage.cache_creation_5m_input_tokens, 600);
        assert_eq!(think[0].usage.cache_creation_1h_input_tokens, 1500);
        assert_eq!(think[0].usage.output_tokens, 187);
        assert!(tool[0].saw_stop && think[0].saw_stop);
        assert_eq!(tool[0].unreadable + think[0].unreadable, 0);
    }

    #[tokio::test]
    async fn a_stream_cut_mid_event_is_closed_with_one_error_event() {
        let cut_at = TOOL_USE.find("\"partial_json\"").unwrap();
        let mut chunks = split(&TOOL_USE[..cut_at], &[]);
        chunks.push(Err(cut_error().await));

        let (bytes, counted) = relay_chunks(chunks).await;

        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with(&TOOL_USE[..cut_at]));
        let tail = &text[cut_at..];
        assert!(tail.starts_with("\n\nevent: error\ndata: {"), "{tail}");
        assert_eq!(text.matches("event: error").count(), 1);
        assert_eq!(counted.len(), 1);
        assert_eq!(counted[0].usage.input_tokens, 612);
        assert_eq!(
            counted[0].usage.output_tokens, 3,
            "the last reported figure, never a guess"
        );
    }

    /// A real reqwest error, from a request to a closed port.
    async fn cut_error() -> reqwest::Error {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        reqwest::get(url).await.unwrap_err()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn prop_any_chunking_relays_the_same_bytes_and_counts_the_same_usage(
            cuts in proptest::collection::vec(0usize..4096, 0..24),
            thinking in any::<bool>(),
            crlf in any::<bool>(),
        ) {
            let mut transcript = if thinking { THINKING } else { TOOL_USE }.to_owned();
            if crlf {
                transcript = transcript.replace('\n', "\r\n");
            }
            let whole = runtime().block_on(relay_chunks(split(&transcript, &[])));

            let (bytes, counted) = runtime().block_on(relay_chunks(split(&transcript, &cuts)));

            prop_assert_eq!(&bytes, transcript.as_bytes());
            prop_assert_eq!(counted.len(), 1);
            prop_assert_eq!(&counted, &whole.1);
            prop_assert!(counted[0].saw_stop);
        }
    }
}
