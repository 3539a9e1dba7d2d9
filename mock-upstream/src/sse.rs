//! Server-sent event streams of the Messages API.

use serde_json::json;

use crate::anthropic::{self, Usage};

/// One frame: `event: <name>\ndata: <json>\n\n`.
pub fn event(name: &str, json: &str) -> String {
    format!("event: {name}\ndata: {json}\n\n")
}

/// An in-stream `error` event, as the API sends when it fails mid-stream.
pub fn error(kind: &str, message: &str) -> String {
    event("error", &anthropic::error(kind, message).to_string())
}

/// The standard stream: id `msg_1`, one text delta "Hello", these usage values.
pub fn standard(
    model: &str,
    input: u64,
    cache_creation: u64,
    cache_read: u64,
    output: u64,
) -> String {
    let usage = Usage {
        input,
        cache_creation,
        cache_read,
        output,
    };
    StandardStream::new("msg_1", model, usage, vec!["Hello".to_owned()])
        .events()
        .concat()
}

/// A complete message stream with chosen id, model, usage and text deltas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StandardStream {
    pub id: String,
    pub model: String,
    pub usage: Usage,
    pub deltas: Vec<String>,
}

impl StandardStream {
    pub fn new(id: &str, model: &str, usage: Usage, deltas: Vec<String>) -> Self {
        Self {
            id: id.to_owned(),
            model: model.to_owned(),
            usage,
            deltas,
        }
    }

    /// Every event in order, one string each, so each can be its own write.
    pub fn events(&self) -> Vec<String> {
        let mut events = vec![self.message_start(), content_block_start()];
        events.extend(self.deltas.iter().map(|text| text_delta(text)));
        events.push(event(
            "content_block_stop",
            r#"{"type":"content_block_stop","index":0}"#,
        ));
        events.push(self.message_delta());
        events.push(event("message_stop", r#"{"type":"message_stop"}"#));
        events
    }

    fn message_start(&self) -> String {
        let data = json!({
            "type": "message_start",
            "message": {
                "id": self.id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": self.usage.to_json(1),
            },
        });
        event("message_start", &data.to_string())
    }

    /// `output_tokens` here is cumulative for the whole message.
    fn message_delta(&self) -> String {
        let data = json!({
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": self.usage.output},
        });
        event("message_delta", &data.to_string())
    }
}

fn content_block_start() -> String {
    let data = json!({
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    });
    event("content_block_start", &data.to_string())
}

fn text_delta(text: &str) -> String {
    let data = json!({
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": text},
    });
    event("content_block_delta", &data.to_string())
}
