//! Where the relay key is read from.
//!
//! Policy, in order:
//! 1. `x-api-key`, if present with a non-blank value. Surrounding
//!    whitespace is ignored.
//! 2. else `Authorization` with the `Bearer` scheme (scheme name
//!    case-insensitive, whitespace around scheme and token ignored). Other
//!    schemes are not a relay key.
//! 3. else no key.
//!
//! When both headers carry a key, `x-api-key` wins: it is the header the
//! Messages API defines, and clients that send both send the same key.
//! Blank lines and lines of another scheme are skipped. Repeated lines of
//! the chosen header must agree, otherwise the request is ambiguous and
//! refused (`ambiguous_api_key`) rather than tried with either key. A line
//! that is not visible ASCII makes the key invalid (`invalid_api_key`), not
//! missing: the client did send something, and no relay key looks like it.
//!
//! Each decision has a unit test here, a property test against the policy
//! written out by hand, and an end-to-end test through the relay.

use axum::http::{HeaderMap, HeaderValue, header};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    Missing,
    /// The header was present but its value cannot be a key.
    Malformed,
    /// Several lines of the header disagree.
    Ambiguous,
}

pub fn extract_key(headers: &HeaderMap) -> Result<&str, KeyError> {
    if let Some(key) = single(headers, "x-api-key", |value| Some(value.trim()))? {
        return Ok(key);
    }
    match single(headers, header::AUTHORIZATION.as_str(), bearer_token)? {
        Some(token) => Ok(token),
        None => Err(KeyError::Missing),
    }
}

/// The one value of `name` after `parse`, skipping lines that yield
/// nothing (blank, other scheme).
fn single<'a>(
    headers: &'a HeaderMap,
    name: &str,
    parse: impl Fn(&'a str) -> Option<&'a str>,
) -> Result<Option<&'a str>, KeyError> {
    let mut found: Option<&str> = None;
    for value in headers.get_all(name) {
        let text = visible_ascii(value)?;
        let Some(key) = parse(text).filter(|key| !key.is_empty()) else {
            continue;
        };
        match found {
            Some(previous) if previous != key => return Err(KeyError::Ambiguous),
            _ => found = Some(key),
        }
    }
    Ok(found)
}

/// A header value never holds control characters other than tab (the
/// HTTP layer refuses them), so visible ASCII is all that is left to check.
fn visible_ascii(value: &HeaderValue) -> Result<&str, KeyError> {
    value.to_str().map_err(|_| KeyError::Malformed)
}

fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, token) = value.split_once([' ', '\t'])?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn x_api_key_is_read_and_trimmed() {
        assert_eq!(extract_key(&headers(&[("x-api-key", "  k1 ")])), Ok("k1"));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_whitespace_tolerant() {
        for value in ["Bearer k1", "bearer k1", "BEARER   k1  ", "  Bearer\tk1"] {
            assert_eq!(
                extract_key(&headers(&[("authorization", value)])),
                Ok("k1"),
                "{value}"
            );
        }
    }

    #[test]
    fn x_api_key_wins_over_authorization() {
        let map = headers(&[("authorization", "Bearer k2"), ("x-api-key", "k1")]);
        assert_eq!(extract_key(&map), Ok("k1"));
    }

    #[test]
    fn blank_x_api_key_falls_back_to_authorization() {
        let map = headers(&[("x-api-key", "  "), ("authorization", "Bearer k2")]);
        assert_eq!(extract_key(&map), Ok("k2"));
    }

    #[test]
    fn other_schemes_and_empty_tokens_are_no_key() {
        for value in ["Basic a2V5", "Bearer", "Bearer   ", "k1", ""] {
            let map = headers(&[("authorization", value)]);
            assert_eq!(extract_key(&map), Err(KeyError::Missing), "{value:?}");
        }
    }

    #[test]
    fn repeated_lines_must_agree() {
        let same = headers(&[("x-api-key", "k1"), ("x-api-key", "k1")]);
        let different = headers(&[("x-api-key", "k1"), ("x-api-key", "k2")]);

        assert_eq!(extract_key(&same), Ok("k1"));
        assert_eq!(extract_key(&different), Err(KeyError::Ambiguous));
    }

    #[test]
    fn non_ascii_values_are_malformed() {
        let mut map = HeaderMap::new();
        map.insert("x-api-key", HeaderValue::from_bytes(b"k\xff1").unwrap());
        assert_eq!(extract_key(&map), Err(KeyError::Malformed));
    }

    /// The policy written out the long way, to check the extraction
    /// against: each header in turn, every line visible ASCII, the lines
    /// that hold a key agreeing.
    fn by_hand(x_api_key: &[Vec<u8>], authorization: &[Vec<u8>]) -> Result<String, KeyError> {
        for (lines, bearer) in [(x_api_key, false), (authorization, true)] {
            let mut keys: Vec<String> = Vec::new();
            for line in lines {
                if line
                    .iter()
                    .any(|b| !(b' '..=b'~').contains(b) && *b != b'\t')
                {
                    return Err(KeyError::Malformed);
                }
                let text = String::from_utf8_lossy(line).trim().to_owned();
                let key = if !bearer {
                    text
                } else if text.len() > 6
                    && text[..6].eq_ignore_ascii_case("bearer")
                    && matches!(text.as_bytes()[6], b' ' | b'\t')
                {
                    text[7..].trim().to_owned()
                } else {
                    String::new()
                };
                if !key.is_empty() && !keys.contains(&key) {
                    keys.push(key);
                }
            }
            match keys.len() {
                0 => continue,
                1 => return Ok(keys.remove(0)),
                _ => return Err(KeyError::Ambiguous),
            }
        }
        Err(KeyError::Missing)
    }

    /// A header line as clients send them, and as they should not: a value
    /// with blanks around it, a scheme and a token, bytes past ASCII.
    fn line() -> impl Strategy<Value = Vec<u8>> {
        let schemes = vec![
            "Bearer", "bearer", "BEARER", "Basic", "Token", "Bearerx", "",
        ];
        prop_oneof![
            4 => "[ \t]{0,2}[a-c]{0,3}[ \t]{0,2}".prop_map(String::into_bytes),
            4 => (proptest::sample::select(schemes), "[ \t]{0,2}", "[a-c]{0,3}[ \t]?")
                .prop_map(|(scheme, gap, token)| format!("{scheme}{gap}{token}").into_bytes()),
            1 => ("[a-c]{0,3}", 0x80u8..=0xff).prop_map(|(text, byte)| {
                let mut line = text.into_bytes();
                line.push(byte);
                line
            }),
        ]
    }

    proptest! {
        #[test]
        fn prop_any_header_set_gets_the_key_the_policy_names(
            x_api_key in proptest::collection::vec(line(), 0..3),
            authorization in proptest::collection::vec(line(), 0..3),
            noise in proptest::collection::vec(("x-[a-z]{1,6}", "[ -~]{0,8}"), 0..3),
        ) {
            let mut map = HeaderMap::new();
            for (name, value) in &noise {
                map.append(
                    axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            for (name, lines) in [("x-api-key", &x_api_key), ("authorization", &authorization)] {
                for line in lines {
                    map.append(name, HeaderValue::from_bytes(line).unwrap());
                }
            }

            let found = extract_key(&map).map(str::to_owned);

            prop_assert_eq!(found, by_hand(&x_api_key, &authorization));
        }

        #[test]
        fn prop_key_comes_from_x_api_key_else_bearer(
            api_key in proptest::option::of("[!-~]{0,20}"),
            auth in proptest::option::of((
                proptest::sample::select(vec!["Bearer", "bearer", "BEARER", "bEaReR", "Basic", "Token"]),
                "[ \t]{1,3}",
                "[!-~]{0,20}",
            )),
            noise in proptest::collection::vec(("x-[a-z]{1,8}", "[!-~]{0,10}"), 0..4),
        ) {
            let mut pairs: Vec<(String, String)> = noise;
            if let Some(key) = &api_key {
                pairs.push(("x-api-key".into(), key.clone()));
            }
            if let Some((scheme, gap, token)) = &auth {
                pairs.push(("authorization".into(), format!("{scheme}{gap}{token}")));
            }
            let map = {
                let mut map = HeaderMap::new();
                for (name, value) in &pairs {
                    map.append(
                        axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                        HeaderValue::from_str(value).unwrap(),
                    );
                }
                map
            };

            let expected = match (&api_key, &auth) {
                (Some(key), _) if !key.trim().is_empty() => Ok(key.trim()),
                (_, Some((scheme, _, token)))
                    if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
                {
                    Ok(token.trim())
                }
                _ => Err(KeyError::Missing),
            };
            prop_assert_eq!(extract_key(&map), expected);
        }
    }
}
