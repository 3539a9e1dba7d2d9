//! Header policy, by allow-list in both directions.
//!
//! To the upstream go the headers that describe the request and the client:
//! `content-type`, `accept`, `user-agent`, every `anthropic-*`, `x-app`,
//! `x-stainless-*`, `x-claude-code-*`, plus names the operator adds.
//! Everything else stays behind, above all every credential the client
//! sent. The relay never invents a User-Agent: an upstream that checks the
//! client must see the real one.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

const EXACT: &[&str] = &["content-type", "accept", "user-agent", "x-app"];
const PREFIXES: &[&str] = &["anthropic-", "x-stainless-", "x-claude-code-"];

/// Headers relayed back to the client from an upstream answer.
const RESPONSE_EXACT: &[&str] = &["content-type", "request-id", "retry-after"];
const RESPONSE_PREFIXES: &[&str] = &["anthropic-ratelimit-"];

/// Headers the operator may not add to the forwarded ones. The client's
/// credentials: its relay key would reach the upstream beside the
/// account's credential.
const CREDENTIALS: &[&str] = &[
    "x-api-key",
    "authorization",
    "proxy-authorization",
    "cookie",
];
/// What describes the client's connection to the relay, not the request:
/// the upstream request gets its own.
const CONNECTION: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Why `name` (lower case) may not be forwarded on the operator's say, if
/// it may not.
pub fn refused_extra(name: &str) -> Option<&'static str> {
    if CREDENTIALS.contains(&name) {
        Some("it carries the client's credentials, which never reach an upstream")
    } else if CONNECTION.contains(&name) {
        Some("it describes the client's connection; the upstream request gets its own")
    } else {
        None
    }
}

pub fn forwardable(name: &str, extra: &[String]) -> bool {
    EXACT.contains(&name)
        || PREFIXES.iter().any(|prefix| name.starts_with(prefix))
        || extra.iter().any(|allowed| allowed == name)
}

/// The client's headers that may reach the upstream. Several lines of one
/// header become one comma-joined line (for `anthropic-beta`: the union of
/// the client's tokens, each once, in first-seen order).
pub fn request_headers(client: &HeaderMap, extra: &[String]) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(client.keys_len());
    for name in client.keys() {
        if !forwardable(name.as_str(), extra) {
            continue;
        }
        let mut values = client.get_all(name).iter();
        let (Some(first), None) = (values.next(), values.next()) else {
            if let Some(joined) = join_lines(client, name) {
                out.insert(name.clone(), joined);
            }
            continue;
        };
        let value = if name == "anthropic-beta" {
            join_lines(client, name).unwrap_or_else(|| first.clone())
        } else {
            first.clone()
        };
        out.insert(name.clone(), value);
    }
    out
}

/// All lines of `name` as one comma-separated list without repeated items.
fn join_lines(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut items: Vec<&[u8]> = Vec::new();
    for value in headers.get_all(name) {
        for item in value.as_bytes().split(|b| *b == b',') {
            let item = item.trim_ascii();
            if !item.is_empty() && !items.contains(&item) {
                items.push(item);
            }
        }
    }
    HeaderValue::from_bytes(&items.join(&b","[..])).ok()
}

/// The headers of an upstream answer that the client gets.
pub fn response_headers(upstream: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in upstream {
        let name_str = name.as_str();
        if RESPONSE_EXACT.contains(&name_str)
            || RESPONSE_PREFIXES
                .iter()
                .any(|prefix| name_str.starts_with(prefix))
        {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn credentials_and_unknown_headers_stay_behind() {
        let client = map(&[
            ("x-api-key", "cr_secret"),
            ("authorization", "Bearer cr_secret"),
            ("cookie", "s=1"),
            ("x-custom-secret", "CANARY-7"),
            ("x-forwarded-for", "203.0.113.9"),
            ("host", "relay.example"),
            ("content-length", "12"),
            ("connection", "keep-alive"),
            ("accept-encoding", "gzip"),
            ("user-agent", "claude-cli/2.0.0 (external, cli)"),
            ("anthropic-version", "2023-06-01"),
            ("x-stainless-lang", "js"),
            ("x-claude-code-session-id", "s1"),
            ("x-app", "cli"),
        ]);

        let forwarded = request_headers(&client, &[]);

        let mut names: Vec<&str> = forwarded.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "anthropic-version",
                "user-agent",
                "x-app",
                "x-claude-code-session-id",
                "x-stainless-lang"
            ]
        );
    }

    #[test]
    fn beta_lines_are_joined_without_duplicates() {
        let client = map(&[
            ("anthropic-beta", "context-1m-2025-08-07"),
            (
                "anthropic-beta",
                "interleaved-thinking-2025-05-14, context-1m-2025-08-07",
            ),
        ]);

        let forwarded = request_headers(&client, &[]);

        assert_eq!(
            forwarded.get("anthropic-beta").unwrap(),
            "context-1m-2025-08-07,interleaved-thinking-2025-05-14"
        );
    }

    #[test]
    fn operator_can_allow_more_headers() {
        let client = map(&[("x-trace", "t1")]);
        assert!(request_headers(&client, &[]).is_empty());
        assert_eq!(
            request_headers(&client, &["x-trace".into()])
                .get("x-trace")
                .unwrap(),
            "t1"
        );
    }

    #[test]
    fn response_keeps_only_what_clients_use() {
        let upstream = map(&[
            ("content-type", "application/json"),
            ("request-id", "req_1"),
            ("retry-after", "20"),
            ("anthropic-ratelimit-requests-remaining", "5"),
            ("anthropic-organization-id", "org"),
            ("set-cookie", "a=b"),
            ("content-encoding", "gzip"),
            ("transfer-encoding", "chunked"),
        ]);

        let relayed = response_headers(&upstream);

        assert_eq!(relayed.len(), 4);
        assert!(relayed.get("anthropic-organization-id").is_none());
    }

    proptest! {
        #[test]
        fn prop_only_allowed_names_are_forwarded(
            pairs in proptest::collection::vec(("[a-z][a-z-]{0,20}", "[ -~]{0,16}"), 0..12),
        ) {
            let mut client = HeaderMap::new();
            for (name, value) in &pairs {
                if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                    client.append(name, value);
                }
            }

            let forwarded = request_headers(&client, &[]);

            for name in forwarded.keys() {
                prop_assert!(forwardable(name.as_str(), &[]));
                prop_assert_eq!(forwarded.get_all(name).iter().count(), 1);
            }
            for name in client.keys() {
                if forwardable(name.as_str(), &[]) {
                    prop_assert!(forwarded.contains_key(name) || client.get_all(name).iter().all(|v| v.as_bytes().iter().all(|b| *b == b',' || b.is_ascii_whitespace())));
                }
            }
            prop_assert!(forwarded.get("x-api-key").is_none());
            prop_assert!(forwarded.get("authorization").is_none());
        }
    }
}
