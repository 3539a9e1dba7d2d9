//! Which conversation a request belongs to, so that its turns stay on one
//! account (the upstream's prompt cache lives there).
//!
//! In order: the session id in `metadata.user_id` (Claude Code's current
//! JSON string with `session_id`, or the older
//! `user_<hex>_account_<...>_session_<uuid>`), else the
//! `X-Claude-Code-Session-Id` header, else a hash of the cached prefix: the
//! texts of the system prompt and of the first user message, without
//! `cache_control`, which clients move from turn to turn.

use std::borrow::Cow;

use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::auth::models::family;

const SESSION_HEADER: &str = "x-claude-code-session-id";

/// The conversation's identity as the client states it, or a digest of
/// its opening when it states none.
pub fn identity(user_id: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let stated = user_id
        .and_then(session_in_user_id)
        .or_else(|| session_header(headers));
    match stated {
        Some(session) => Some(format!("session:{session}")),
        None => prefix_digest(body).map(|digest| format!("prefix:{digest}")),
    }
}

/// The name of the conversation's sticky mapping: one per key and model
/// family, since a prompt cache serves one model and a session id is only
/// unique among one user's conversations.
pub fn sticky_name(key_id: &str, model: &str, identity: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [key_id, family(model), identity] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..16])
}

/// `session_id` from either format Claude Code has put in `user_id`.
pub fn session_in_user_id(user_id: &str) -> Option<String> {
    if user_id.trim_start().starts_with('{') {
        #[derive(Deserialize)]
        struct Stated<'a> {
            #[serde(borrow)]
            session_id: Option<Cow<'a, str>>,
        }
        let stated: Stated<'_> = serde_json::from_str(user_id).ok()?;
        return stated
            .session_id
            .map(Cow::into_owned)
            .filter(|id| !id.is_empty());
    }
    let rest = user_id.strip_prefix("user_")?;
    let (before, session) = rest.rsplit_once("_session_")?;
    (before.contains("_account_") && !session.is_empty()).then(|| session.to_owned())
}

fn session_header(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(SESSION_HEADER)?.to_str().ok()?.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

#[derive(Deserialize)]
struct Opening<'a> {
    #[serde(borrow)]
    system: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Vec<Message<'a>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

/// A string, or blocks of which only the kind and the text count.
#[derive(Deserialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Blocks(#[serde(borrow)] Vec<Block<'a>>),
}

#[derive(Deserialize)]
struct Block<'a> {
    #[serde(borrow, rename = "type", default)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

fn prefix_digest(body: &[u8]) -> Option<String> {
    let opening: Opening<'_> = serde_json::from_slice(body).ok()?;
    let first_user = opening
        .messages
        .iter()
        .find(|message| message.role == "user")
        .and_then(|message| message.content);
    let mut hasher = Sha256::new();
    let mut any = false;
    for (label, raw) in [("system", opening.system), ("user", first_user)] {
        let Some(content) = raw.and_then(|raw| serde_json::from_str::<Content<'_>>(raw.get()).ok())
        else {
            continue;
        };
        hasher.update(label.as_bytes());
        any |= feed(&mut hasher, &content);
    }
    any.then(|| hex::encode(&hasher.finalize()[..16]))
}

/// Length-prefixed parts, so that no two different openings feed the same
/// bytes.
fn feed(hasher: &mut Sha256, content: &Content<'_>) -> bool {
    let mut part = |text: &str| {
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    };
    match content {
        Content::Text(text) => {
            part(text);
            !text.is_empty()
        }
        Content::Blocks(blocks) => {
            for block in blocks {
                part(&block.kind);
                part(block.text.as_deref().unwrap_or_default());
            }
            !blocks.is_empty()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CURRENT: &str = r#"{"device_id":"dec0de01","account_uuid":"","session_id":"5e55e55e-0000-4000-8000-000000000001"}"#;

    #[test]
    fn both_user_id_formats_give_the_session() {
        assert_eq!(
            session_in_user_id(CURRENT).as_deref(),
            Some("5e55e55e-0000-4000-8000-000000000001")
        );
        assert_eq!(
            session_in_user_id("user_ab12_account__session_1b2c-3d").as_deref(),
            Some("1b2c-3d")
        );
        assert_eq!(
            session_in_user_id("user_ab12_account_9f_session_77").as_deref(),
            Some("77")
        );
        assert_eq!(session_in_user_id("user-123"), None);
        assert_eq!(session_in_user_id("user_ab12_session_77"), None);
        assert_eq!(session_in_user_id(r#"{"device_id":"x"}"#), None);
    }

    #[test]
    fn metadata_wins_over_the_header_which_wins_over_the_prefix() {
        let mut headers = HeaderMap::new();
        headers.insert(SESSION_HEADER, "from-header".parse().unwrap());
        let body = br#"{"messages":[{"role":"user","content":"hi"}]}"#;

        assert_eq!(
            identity(Some(CURRENT), &headers, body).as_deref(),
            Some("session:5e55e55e-0000-4000-8000-000000000001")
        );
        assert_eq!(
            identity(Some("someone"), &headers, body).as_deref(),
            Some("session:from-header")
        );
        assert!(
            identity(None, &HeaderMap::new(), body)
                .unwrap()
                .starts_with("prefix:")
        );
        assert_eq!(identity(None, &HeaderMap::new(), b"{}"), None);
    }

    #[test]
    fn prefix_ignores_cache_control_and_later_turns() {
        let first = br#"{"system":[{"type":"text","text":"S","cache_control":{"type":"ephemeral"}}],
            "messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]}]}"#;
        let second = br#"{"system":[{"type":"text","text":"S"}],
            "messages":[{"role":"user","content":[{"type":"text","text":"hi"}]},
                        {"role":"assistant","content":"hello"},
                        {"role":"user","content":[{"type":"text","text":"more","cache_control":{"type":"ephemeral"}}]}]}"#;
        let other = br#"{"system":[{"type":"text","text":"S"}],
            "messages":[{"role":"user","content":[{"type":"text","text":"bye"}]}]}"#;

        assert_eq!(prefix_digest(first), prefix_digest(second));
        assert_ne!(prefix_digest(first), prefix_digest(other));
    }

    #[test]
    fn sticky_names_differ_by_key_and_model_family_only() {
        let base = sticky_name("key-1", "claude-sonnet-4-5-20250929", "session:s");

        assert_eq!(base, sticky_name("key-1", "claude-sonnet-4-5", "session:s"));
        assert_ne!(base, sticky_name("key-2", "claude-sonnet-4-5", "session:s"));
        assert_ne!(base, sticky_name("key-1", "claude-haiku-4-5", "session:s"));
        assert_ne!(base, sticky_name("key-1", "claude-sonnet-4-5", "session:t"));
    }
}
