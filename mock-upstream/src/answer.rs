//! A scripted answer: what the mock sends back for one request.

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One answer. Every field is optional; `Answer::default()` is the profile's
/// normal answer. With no body field, the profile's body is sent with this
/// answer's status, headers and faults applied.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Answer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Set on top of the defaults (`content-type`, `request-id`), replacing them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Wait before sending the headers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Never answer; the connection stays open until the client leaves.
    #[serde(skip_serializing_if = "is_false")]
    pub hang: bool,
    /// Close the connection without any answer.
    #[serde(skip_serializing_if = "is_false")]
    pub close: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sse: Option<Vec<Chunk>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sse_standard: Option<SseStandard>,
    /// Abort the connection after this many body bytes (counted on the wire).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut_after_bytes: Option<u64>,
    #[serde(skip_serializing_if = "is_false")]
    pub gzip: bool,
}

/// One write of a scripted stream, followed by a pause.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ChunkJson", into = "ChunkJson")]
pub struct Chunk {
    pub bytes: Bytes,
    pub pause_ms: u64,
}

/// Generates the standard stream with these usage values and text deltas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SseStandard {
    pub input: u64,
    pub cache_creation: u64,
    pub cache_read: u64,
    pub output: u64,
    pub deltas: Vec<String>,
    /// Pause after each text delta.
    pub delta_pause_ms: u64,
    /// Echoes the request's model when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl Default for SseStandard {
    fn default() -> Self {
        Self {
            input: 12,
            cache_creation: 0,
            cache_read: 0,
            output: 42,
            deltas: vec!["Hello".to_owned()],
            delta_pause_ms: 0,
            model: None,
        }
    }
}

impl Answer {
    /// An answer with this status (and the profile's body unless one is set).
    pub fn status(code: u16) -> Self {
        Self::default().with_status(code)
    }

    /// An Anthropic error envelope with this status.
    pub fn error(code: u16, kind: &str, message: &str) -> Self {
        Self::status(code).json(crate::anthropic::error(kind, message))
    }

    /// A stream written chunk by chunk.
    pub fn sse(chunks: Vec<Chunk>) -> Self {
        Self::default().with_body(|answer| answer.sse = Some(chunks))
    }

    /// The standard stream with the given usage and deltas.
    pub fn sse_standard(stream: SseStandard) -> Self {
        Self::default().with_body(|answer| answer.sse_standard = Some(stream))
    }

    pub fn with_status(mut self, code: u16) -> Self {
        self.status = Some(code);
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .insert(name.to_ascii_lowercase(), value.to_owned());
        self
    }

    pub fn json(self, body: Value) -> Self {
        self.with_body(|answer| answer.json = Some(body))
    }

    pub fn text(self, body: impl Into<String>) -> Self {
        self.with_body(|answer| answer.text = Some(body.into()))
    }

    pub fn delay_ms(mut self, ms: u64) -> Self {
        self.delay_ms = Some(ms);
        self
    }

    pub fn cut_after_bytes(mut self, bytes: u64) -> Self {
        self.cut_after_bytes = Some(bytes);
        self
    }

    pub fn gzip(mut self) -> Self {
        self.gzip = true;
        self
    }

    pub fn hang(mut self) -> Self {
        self.hang = true;
        self
    }

    pub fn close(mut self) -> Self {
        self.close = true;
        self
    }

    /// Builders keep at most one body, so the last one set wins.
    fn with_body(mut self, set: impl FnOnce(&mut Self)) -> Self {
        self.json = None;
        self.text = None;
        self.sse = None;
        self.sse_standard = None;
        set(&mut self);
        self
    }

    pub(crate) fn has_body(&self) -> bool {
        self.body_count() > 0
    }

    fn body_count(&self) -> usize {
        [
            self.json.is_some(),
            self.text.is_some(),
            self.sse.is_some(),
            self.sse_standard.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count()
    }

    /// The profile's `normal` answer with this body-less answer's status,
    /// headers and faults on top.
    pub(crate) fn over(self, normal: Answer) -> Answer {
        // Destructured in full so that a new field cannot be forgotten here.
        let Answer {
            status,
            headers,
            delay_ms,
            hang,
            close,
            json: _,
            text: _,
            sse: _,
            sse_standard: _,
            cut_after_bytes,
            gzip,
        } = self;
        let mut merged = normal;
        merged.status = status.or(merged.status);
        let headers = headers
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value));
        merged.headers.extend(headers);
        merged.delay_ms = delay_ms;
        merged.hang = hang;
        merged.close = close;
        merged.cut_after_bytes = cut_after_bytes;
        merged.gzip = gzip;
        merged
    }

    /// Checks what the builders cannot rule out in JSON sent over HTTP.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.body_count() > 1 {
            return Err("at most one of json, text, sse, sse_standard".to_owned());
        }
        if let Some(code) = self.status {
            StatusCode::from_u16(code).map_err(|_| format!("invalid status {code}"))?;
        }
        for (name, value) in &self.headers {
            HeaderName::try_from(name.as_str())
                .map_err(|_| format!("invalid header name {name:?}"))?;
            HeaderValue::try_from(value.as_str())
                .map_err(|_| format!("invalid value of header {name:?}"))?;
        }
        Ok(())
    }
}

impl Chunk {
    pub fn text(text: &str) -> Self {
        Self::bytes(text.as_bytes().to_vec())
    }

    pub fn bytes(bytes: impl Into<Bytes>) -> Self {
        Self {
            bytes: bytes.into(),
            pause_ms: 0,
        }
    }

    /// Wait this long after writing the chunk.
    pub fn pause_ms(mut self, ms: u64) -> Self {
        self.pause_ms = ms;
        self
    }
}

/// The wire form of a chunk: UTF-8 as `text`, anything else as `b64`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChunkJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    b64: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pause_ms: u64,
}

impl TryFrom<ChunkJson> for Chunk {
    type Error = String;

    fn try_from(json: ChunkJson) -> Result<Self, Self::Error> {
        let bytes = match (json.text, json.b64) {
            (Some(_), Some(_)) => return Err("a chunk has text or b64, not both".to_owned()),
            (Some(text), None) => Bytes::from(text),
            (None, Some(b64)) => BASE64
                .decode(b64)
                .map_err(|error| format!("chunk b64: {error}"))?
                .into(),
            // A chunk with neither is a pure pause.
            (None, None) => Bytes::new(),
        };
        Ok(Chunk {
            bytes,
            pause_ms: json.pause_ms,
        })
    }
}

impl From<Chunk> for ChunkJson {
    fn from(chunk: Chunk) -> Self {
        let (text, b64) = match std::str::from_utf8(&chunk.bytes) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(_) => (None, Some(BASE64.encode(&chunk.bytes))),
        };
        ChunkJson {
            text,
            b64,
            pause_ms: chunk.pause_ms,
        }
    }
}

fn is_false(value: &bool) -> bool {
    !value
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}
