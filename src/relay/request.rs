//! What the relay reads from a Messages request body: a borrowed, partial
//! parse. The body itself is forwarded as received and never re-serialised,
//! so fields the relay does not know (tools, thinking, images, future
//! fields) reach the upstream untouched.

use std::borrow::Cow;
use std::ops::Range;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::RelayError;

/// Longest `model` accepted. Model ids are a few dozen characters; the
/// value goes into log lines, error details and usage records, so a
/// megabyte of it is refused before it reaches any of them.
pub const MODEL_MAX_CHARS: usize = 256;

/// The facts the pipeline needs from a request body.
#[derive(Debug, Clone)]
pub struct MessageRequest {
    pub model: String,
    /// Byte range of the `model` string literal (quotes included) in the
    /// body, so an account's model mapping can replace it in place.
    pub model_span: Range<usize>,
    pub stream: bool,
    /// `metadata.user_id` as sent.
    pub user_id: Option<String>,
}

#[derive(Deserialize)]
struct View<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    stream: Option<&'a RawValue>,
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(borrow, default)]
    user_id: Option<Cow<'a, str>>,
}

impl MessageRequest {
    pub fn parse(body: &Bytes) -> Result<MessageRequest, RelayError> {
        let text = std::str::from_utf8(body).map_err(|err| RelayError::InvalidJson {
            reason: format!("not UTF-8 at byte {}", err.valid_up_to()),
        })?;
        let value: &RawValue =
            serde_json::from_str(text).map_err(|err| RelayError::InvalidJson {
                reason: err.to_string(),
            })?;
        if !value.get().trim_start().starts_with('{') {
            return Err(invalid_body("the body must be a JSON object"));
        }
        let view: View<'_> = serde_json::from_str(text).map_err(|err| RelayError::InvalidBody {
            reason: err.to_string(),
        })?;
        let raw_model = view
            .model
            .ok_or_else(|| invalid_body("`model` is required"))?;
        let model: Cow<'_, str> = serde_json::from_str(raw_model.get())
            .map_err(|_| invalid_body("`model` must be a string"))?;
        if model.trim().is_empty() {
            return Err(invalid_body("`model` must not be empty"));
        }
        if model.chars().count() > MODEL_MAX_CHARS {
            return Err(invalid_body(&format!(
                "`model` must be at most {MODEL_MAX_CHARS} characters"
            )));
        }
        match view.messages {
            Some(messages) if messages.get().starts_with('[') => {}
            Some(_) => return Err(invalid_body("`messages` must be an array")),
            None => return Err(invalid_body("`messages` is required")),
        }
        let stream = match view.stream.map(RawValue::get) {
            None | Some("null") | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(invalid_body("`stream` must be true or false")),
        };
        let user_id = match view.metadata {
            None => None,
            Some(raw) => serde_json::from_str::<Metadata<'_>>(raw.get())
                .map_err(|_| {
                    invalid_body("`metadata` must be an object whose `user_id` is a string")
                })?
                .user_id
                .map(Cow::into_owned),
        };
        Ok(MessageRequest {
            model: model.into_owned(),
            model_span: span_in(text, raw_model.get()),
            stream,
            user_id,
        })
    }
}

fn invalid_body(reason: &str) -> RelayError {
    RelayError::InvalidBody {
        reason: reason.to_owned(),
    }
}

/// Where `part`, a slice borrowed from `whole`, sits inside it.
fn span_in(whole: &str, part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
}

/// The body with the `model` value replaced, every other byte unchanged.
pub fn replace_model(body: &Bytes, span: &Range<usize>, model: &str) -> Bytes {
    let quoted = serde_json::Value::String(model.to_owned()).to_string();
    let mut out = Vec::with_capacity(body.len() + quoted.len());
    out.extend_from_slice(&body[..span.start]);
    out.extend_from_slice(quoted.as_bytes());
    out.extend_from_slice(&body[span.end..]);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MessageRequest, RelayError> {
        MessageRequest::parse(&Bytes::copy_from_slice(text.as_bytes()))
    }

    fn code(result: Result<MessageRequest, RelayError>) -> &'static str {
        result.err().map(|err| err.class().code).unwrap_or("ok")
    }

    #[test]
    fn reads_model_stream_and_user_id() {
        let request = parse(
            r#"{"model":"claude-x","stream":true,"metadata":{"user_id":"u\"1"},"messages":[]}"#,
        )
        .unwrap();

        assert_eq!(request.model, "claude-x");
        assert!(request.stream);
        assert_eq!(request.user_id.as_deref(), Some("u\"1"));
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        assert_eq!(code(parse(r#"{"model":"#)), "invalid_json");
        assert_eq!(code(parse("[1,2]")), "invalid_body");
        assert_eq!(code(parse(r#"{"messages":[]}"#)), "invalid_body");
        assert_eq!(code(parse(r#"{"model":1,"messages":[]}"#)), "invalid_body");
        assert_eq!(
            code(parse(r#"{"model":"m","messages":{}}"#)),
            "invalid_body"
        );
        assert_eq!(
            code(parse(r#"{"model":"m","stream":"yes","messages":[]}"#)),
            "invalid_body"
        );
        assert_eq!(code(parse(r#"{"model":"m"}"#)), "invalid_body");
        assert_eq!(
            code(parse(r#"{"model":"m","messages":[]} x"#)),
            "invalid_json"
        );
    }

    #[test]
    fn a_model_longer_than_the_limit_is_refused_and_one_at_the_limit_is_read() {
        let at_limit = "m".repeat(MODEL_MAX_CHARS);
        let over = "é".repeat(MODEL_MAX_CHARS + 1);

        let read = parse(&format!(r#"{{"model":"{at_limit}","messages":[]}}"#)).unwrap();
        let refused = parse(&format!(r#"{{"model":"{over}","messages":[]}}"#));

        assert_eq!(read.model, at_limit);
        assert_eq!(code(refused), "invalid_body");
    }

    #[test]
    fn model_is_replaced_in_place_and_nothing_else_changes() {
        let body = Bytes::from_static(br#"{ "max_tokens":5, "model" : "a\u0062c", "x":[1] }"#);
        let request = MessageRequest::parse(&Bytes::from(
            [&body[..body.len() - 2], br#","messages":[]}"#].concat(),
        ))
        .unwrap();
        assert_eq!(request.model, "abc");

        let replaced = replace_model(&body, &request.model_span, "up-\"model\"");
        assert_eq!(
            &replaced[..],
            br#"{ "max_tokens":5, "model" : "up-\"model\"", "x":[1] }"#
        );
    }
}
