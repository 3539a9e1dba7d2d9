//! JSON shapes of the Messages API, as real clients accept them.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The model answered with when a request names none.
pub const DEFAULT_MODEL: &str = "claude-sonnet-4-5-20250929";

/// Token counts of one answer, named as in the scenario JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input: u64,
    pub cache_creation: u64,
    pub cache_read: u64,
    pub output: u64,
}

impl Usage {
    /// The `usage` object with a chosen `output_tokens`: streams report 1 at
    /// `message_start` and the final count only in `message_delta`.
    pub(crate) fn to_json(self, output_tokens: u64) -> Value {
        json!({
            "input_tokens": self.input,
            "cache_creation_input_tokens": self.cache_creation,
            "cache_read_input_tokens": self.cache_read,
            "output_tokens": output_tokens,
        })
    }
}

/// A non-streaming message answering "Hello", with the id `msg_1`.
pub fn message(model: &str, usage: Usage) -> Value {
    message_with("msg_1", model, "Hello", usage)
}

/// A non-streaming message with every part chosen.
pub fn message_with(id: &str, model: &str, text: &str, usage: Usage) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": usage.to_json(usage.output),
    })
}

/// Anthropic's error envelope.
pub fn error(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// The answer of `POST /v1/messages/count_tokens`.
pub fn count_tokens(input_tokens: u64) -> Value {
    json!({ "input_tokens": input_tokens })
}

const MODELS: [(&str, &str, &str); 5] = [
    (
        "claude-opus-4-5-20251101",
        "Claude Opus 4.5",
        "2025-11-01T00:00:00Z",
    ),
    (
        "claude-haiku-4-5-20251001",
        "Claude Haiku 4.5",
        "2025-10-01T00:00:00Z",
    ),
    (
        "claude-sonnet-4-5-20250929",
        "Claude Sonnet 4.5",
        "2025-09-29T00:00:00Z",
    ),
    (
        "claude-opus-4-1-20250805",
        "Claude Opus 4.1",
        "2025-08-05T00:00:00Z",
    ),
    (
        "claude-sonnet-4-20250514",
        "Claude Sonnet 4",
        "2025-05-14T00:00:00Z",
    ),
];

/// The answer of `GET /v1/models`: one page holding every model, newest first.
pub fn models() -> Value {
    let data: Vec<Value> = MODELS
        .iter()
        .map(|(id, name, created)| {
            json!({"type": "model", "id": id, "display_name": name, "created_at": created})
        })
        .collect();
    json!({
        "data": data,
        "has_more": false,
        "first_id": MODELS[0].0,
        "last_id": MODELS[MODELS.len() - 1].0,
    })
}
