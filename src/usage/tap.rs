//! Reads usage from an answer while it is relayed: SSE events as they
//! complete, or a JSON body once it is whole. The tap never changes or
//! holds back a byte; it only looks.

use serde::Deserialize;

use super::sse::{SseEvent, SseParser};
use super::{Usage, WireUsage};

/// Longest SSE line the tap keeps; usage events are far shorter.
const MAX_LINE: usize = 1024 * 1024;
/// Largest non-streamed body the tap keeps to read its usage.
const MAX_JSON: usize = 16 * 1024 * 1024;

/// What the tap saw by the end of an answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub usage: Usage,
    /// The model the upstream says answered.
    pub model: Option<String>,
    /// Usage was reported at all (a `message_start`, or a whole JSON body).
    pub reported: bool,
    pub saw_stop: bool,
    pub saw_error: bool,
    /// Events or bodies the tap could not read.
    pub unreadable: u32,
}

pub struct UsageTap {
    mode: Mode,
    observed: Observed,
}

enum Mode {
    Sse(SseParser),
    Json(Vec<u8>),
}

fn usage_events(name: Option<&str>) -> bool {
    matches!(
        name,
        None | Some("message_start" | "message_delta" | "message_stop" | "error")
    )
}

#[derive(Deserialize)]
struct EventData {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<MessageData>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct MessageData {
    model: Option<String>,
    usage: Option<WireUsage>,
}

impl UsageTap {
    pub fn sse() -> UsageTap {
        UsageTap {
            mode: Mode::Sse(SseParser::new(usage_events, MAX_LINE)),
            observed: Observed::default(),
        }
    }

    pub fn json() -> UsageTap {
        UsageTap {
            mode: Mode::Json(Vec::new()),
            observed: Observed::default(),
        }
    }

    /// A tap suited to an answer of this content type.
    pub fn for_content_type(content_type: Option<&str>) -> UsageTap {
        match content_type {
            Some(kind) if kind.trim_start().starts_with("text/event-stream") => UsageTap::sse(),
            _ => UsageTap::json(),
        }
    }

    pub fn is_sse(&self) -> bool {
        matches!(self.mode, Mode::Sse(_))
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        match &mut self.mode {
            Mode::Sse(parser) => {
                let observed = &mut self.observed;
                parser.feed(chunk, &mut |event| observe_event(observed, event));
            }
            Mode::Json(body) => {
                if body.len() + chunk.len() <= MAX_JSON {
                    body.extend_from_slice(chunk);
                } else {
                    body.clear();
                    body.shrink_to_fit();
                    self.observed.unreadable += 1;
                }
            }
        }
    }

    /// Bytes that end whatever event the stream stopped in, so an event
    /// appended after them stands on its own.
    pub fn to_boundary(&self) -> &'static [u8] {
        match &self.mode {
            Mode::Sse(parser) => parser.to_boundary(),
            Mode::Json(_) => b"",
        }
    }

    pub fn saw_stop_or_error(&self) -> bool {
        self.observed.saw_stop || self.observed.saw_error
    }

    /// The answer ended (whole or not); `complete` says whether the body
    /// arrived whole.
    pub fn finish(self, complete: bool) -> Observed {
        let mut observed = self.observed;
        if let Mode::Json(body) = self.mode
            && complete
            && !body.is_empty()
        {
            match serde_json::from_slice::<MessageData>(&body) {
                Ok(message) => take_message(&mut observed, message),
                Err(_) => observed.unreadable += 1,
            }
        }
        observed
    }
}

fn take_message(observed: &mut Observed, message: MessageData) {
    if let Some(model) = message.model {
        observed.model = Some(model);
    }
    if let Some(usage) = message.usage {
        observed.usage.apply(&usage);
        observed.reported = true;
    }
}

fn observe_event(observed: &mut Observed, event: SseEvent) {
    let Ok(data) = serde_json::from_slice::<EventData>(&event.data) else {
        observed.unreadable += 1;
        return;
    };
    let kind = event.name.as_deref().or(data.kind.as_deref());
    match kind {
        Some("message_start") => {
            if let Some(message) = data.message {
                take_message(observed, message);
            }
        }
        Some("message_delta") => {
            if let Some(usage) = data.usage {
                observed.usage.apply(&usage);
                observed.reported = true;
            }
        }
        Some("message_stop") => observed.saw_stop = true,
        Some("error") => observed.saw_error = true,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "event: message_start\n",
        r#"data: {"type":"message_start","message":{"id":"m","model":"claude-sonnet-4-5-20250929","usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}"#,
        "\n\nevent: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hé"}}"#,
        "\n\nevent: message_delta\n",
        r#"data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}"#,
        "\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    fn tap_in_chunks(size: usize) -> Observed {
        let mut tap = UsageTap::sse();
        for chunk in STREAM.as_bytes().chunks(size) {
            tap.feed(chunk);
        }
        tap.finish(true)
    }

    #[test]
    fn stream_usage_is_read_whatever_the_chunk_size() {
        for size in [1, 2, 3, 7, 64, STREAM.len()] {
            let observed = tap_in_chunks(size);
            assert_eq!(observed.usage.input_tokens, 25, "{size}");
            assert_eq!(observed.usage.output_tokens, 15, "{size}");
            assert_eq!(
                observed.model.as_deref(),
                Some("claude-sonnet-4-5-20250929")
            );
            assert!(observed.saw_stop && observed.reported);
            assert_eq!(observed.unreadable, 0);
        }
    }

    #[test]
    fn json_usage_is_read_from_the_whole_body_only() {
        let body =
            br#"{"type":"message","model":"m1","usage":{"input_tokens":25,"output_tokens":15}}"#;
        let mut whole = UsageTap::json();
        whole.feed(&body[..10]);
        whole.feed(&body[10..]);
        let mut cut = UsageTap::json();
        cut.feed(&body[..10]);

        let whole = whole.finish(true);
        let cut = cut.finish(false);

        assert_eq!(whole.usage.output_tokens, 15);
        assert_eq!(whole.model.as_deref(), Some("m1"));
        assert!(!cut.reported);
    }

    #[test]
    fn error_events_are_noticed() {
        let mut tap = UsageTap::sse();
        tap.feed(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n");
        assert!(tap.saw_stop_or_error());
    }
}
