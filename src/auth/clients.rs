//! Client kinds a key can be restricted to, defined as data: a name and
//! anchored patterns over the User-Agent and other headers. Operators add
//! their own kinds in the config file without code.

use axum::http::HeaderMap;
use regex::Regex;
use serde::Deserialize;

/// Claude Code sends `claude-cli/<semver>` and then whatever the CLI adds
/// (`(external, cli)`, `(external, claude-vscode)`, `(external, sdk-cli)`).
/// Any version matches, so a CLI release never breaks the check.
const CLAUDE_CODE_UA: &str = r"^claude-cli/[0-9]+\.[0-9]+\.[0-9]+([-+.][0-9A-Za-z.+-]*)?( .*)?$";

/// The official SDKs send `Anthropic/<Language> <version>`, the async
/// Python client `AsyncAnthropic/Python <version>`.
const ANTHROPIC_SDK_UA: &str = r"^(Async)?Anthropic/[A-Za-z]+ [0-9]+\.[0-9]+\.[0-9]+\S*$";

/// A client kind: every pattern must match for a request to be of this kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRule {
    pub name: String,
    /// Pattern the whole User-Agent must match; an absent User-Agent never
    /// matches a rule that has one.
    #[serde(default, with = "pattern_opt")]
    pub user_agent: Option<Regex>,
    /// Further headers that must be present and match.
    #[serde(default)]
    pub headers: Vec<HeaderPattern>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderPattern {
    pub name: String,
    #[serde(with = "pattern")]
    pub value: Regex,
}

impl ClientRule {
    pub fn builtin() -> Vec<ClientRule> {
        vec![
            ClientRule::user_agent_rule("claude_code", CLAUDE_CODE_UA),
            ClientRule::user_agent_rule("anthropic_sdk", ANTHROPIC_SDK_UA),
        ]
    }

    fn user_agent_rule(name: &str, pattern: &str) -> ClientRule {
        ClientRule {
            name: name.into(),
            user_agent: Regex::new(pattern).ok(),
            headers: Vec::new(),
        }
    }

    pub fn matches(&self, headers: &HeaderMap) -> bool {
        let ua_ok = match &self.user_agent {
            Some(pattern) => {
                header_text(headers, "user-agent").is_some_and(|ua| full_match(pattern, ua))
            }
            None => true,
        };
        ua_ok
            && self.headers.iter().all(|rule| {
                header_text(headers, &rule.name).is_some_and(|value| full_match(&rule.value, value))
            })
    }
}

/// Patterns are anchored at both ends whatever the operator wrote, so a
/// pattern can never match as a substring (`Mozilla/5.0 claude-cli/...`).
fn full_match(pattern: &Regex, text: &str) -> bool {
    pattern
        .find(text)
        .is_some_and(|found| found.start() == 0 && found.end() == text.len())
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Whether the request comes from one of the `allowed` client kinds. An
/// empty list allows every client. Names without a rule match nothing.
pub fn client_allowed(rules: &[ClientRule], allowed: &[String], headers: &HeaderMap) -> bool {
    allowed.is_empty()
        || allowed.iter().any(|name| {
            rules
                .iter()
                .any(|rule| &rule.name == name && rule.matches(headers))
        })
}

mod pattern {
    use regex::Regex;
    use serde::{Deserialize, Deserializer, de::Error};

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Regex, D::Error> {
        let text = String::deserialize(de)?;
        Regex::new(&text).map_err(D::Error::custom)
    }
}

mod pattern_opt {
    use regex::Regex;
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Regex>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::pattern")] Regex);
        Option::<Wrapped>::deserialize(de).map(|found| found.map(|Wrapped(regex)| regex))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    fn with_ua(ua: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(ua) = ua {
            headers.insert("user-agent", HeaderValue::from_str(ua).unwrap());
        }
        headers
    }

    fn is_claude_code(ua: Option<&str>) -> bool {
        client_allowed(
            &ClientRule::builtin(),
            &["claude_code".into()],
            &with_ua(ua),
        )
    }

    #[test]
    fn claude_code_user_agents_are_recognised_across_versions_and_suffixes() {
        for ua in [
            "claude-cli/2.0.0 (external, cli)",
            "claude-cli/2.0.0 (external, claude-vscode)",
            "claude-cli/2.1.39 (external, sdk-ts)",
            "claude-cli/2.1.332 (external, sdk-cli)",
            "claude-cli/10.0.0 (external, cli)",
            "claude-cli/1.0.0",
            "claude-cli/2.0.0-beta.1 (external, cli)",
        ] {
            assert!(is_claude_code(Some(ua)), "{ua}");
        }
    }

    #[test]
    fn other_user_agents_are_not_claude_code() {
        for ua in [
            Some("curl/8.5.0"),
            Some("Mozilla/5.0 claude-cli/2.0.0 (external, cli)"),
            Some("claude-cli/2.0"),
            Some("claude-cli/"),
            Some("Anthropic/Python 2.17.0"),
            None,
        ] {
            assert!(!is_claude_code(ua), "{ua:?}");
        }
    }

    #[test]
    fn sdk_user_agents_are_recognised() {
        let rules = ClientRule::builtin();
        let sdk = ["anthropic_sdk".to_owned()];
        for ua in [
            "Anthropic/Python 2.17.0",
            "AsyncAnthropic/Python 2.17.0",
            "Anthropic/JS 0.65.0",
        ] {
            assert!(client_allowed(&rules, &sdk, &with_ua(Some(ua))), "{ua}");
        }
        assert!(!client_allowed(
            &rules,
            &sdk,
            &with_ua(Some("claude-cli/2.0.0 (external, cli)"))
        ));
    }

    #[test]
    fn operator_rules_are_anchored_even_without_anchors() {
        let rule: ClientRule = toml::from_str(
            r#"name = "my_cli"
               user_agent = "mycli/[0-9]+"
               headers = [{ name = "x-app", value = "cli" }]"#,
        )
        .unwrap();
        let mut headers = with_ua(Some("mycli/3"));

        assert!(!rule.matches(&headers), "x-app is required");
        headers.insert("x-app", HeaderValue::from_static("cli"));
        assert!(rule.matches(&headers));
        headers.insert("user-agent", HeaderValue::from_static("not-mycli/3"));
        assert!(!rule.matches(&headers));
    }

    #[test]
    fn unknown_client_names_match_nothing() {
        let headers = with_ua(Some("curl/8.5.0"));
        assert!(!client_allowed(
            &ClientRule::builtin(),
            &["nonexistent".into()],
            &headers
        ));
        assert!(client_allowed(&ClientRule::builtin(), &[], &headers));
    }

    fn digits(text: &str) -> bool {
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
    }

    /// Claude Code's User-Agent grammar written out by hand: `claude-cli/`,
    /// a version `N.N.N` with an optional pre-release or build tail, then
    /// nothing or a space and anything.
    fn claude_code_by_hand(ua: &str) -> bool {
        let Some(rest) = ua.strip_prefix("claude-cli/") else {
            return false;
        };
        let version = rest.split(' ').next().unwrap_or_default();
        let mut parts = version.splitn(3, '.');
        let (Some(major), Some(minor), Some(patch)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let tail_at = patch
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(patch.len());
        let tail = &patch[tail_at..];
        digits(major)
            && digits(minor)
            && digits(&patch[..tail_at])
            && (tail.is_empty()
                || (tail.starts_with(['-', '+', '.'])
                    && tail
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-+.".contains(c))))
    }

    /// The SDKs' grammar by hand: `Anthropic/` or `AsyncAnthropic/`, a
    /// language of letters, one space, `N.N.N` and anything but blanks.
    fn sdk_by_hand(ua: &str) -> bool {
        let rest = ua.strip_prefix("Async").unwrap_or(ua);
        let Some(rest) = rest.strip_prefix("Anthropic/") else {
            return false;
        };
        let Some((language, version)) = rest.split_once(' ') else {
            return false;
        };
        let mut parts = version.splitn(3, '.');
        let (Some(major), Some(minor), Some(patch)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let patch_digits = patch.bytes().take_while(u8::is_ascii_digit).count();
        !language.is_empty()
            && language.bytes().all(|b| b.is_ascii_alphabetic())
            && digits(major)
            && digits(minor)
            && patch_digits > 0
            && !patch.contains(char::is_whitespace)
    }

    /// User-Agents built from pieces of real ones and near misses, and
    /// some printable noise.
    fn user_agent() -> impl Strategy<Value = String> {
        let pick = |items: &[&'static str]| proptest::sample::select(items.to_vec());
        let version = prop_oneof![
            3 => "[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}([-+._a-z ][0-9A-Za-z.+_ -]{0,4})?",
            1 => pick(&["2.0", "2", "a.b.c", "2.0.x", "", "2..0", "-1.0.0"]).prop_map(String::from),
        ];
        let suffix = pick(&[
            "",
            " (external, cli)",
            "(external, cli)",
            " ",
            "\tx",
            " x\ty",
        ]);
        let claude_code = pick(&["claude-cli/", "Claude-cli/", "claude-cli", " claude-cli/"]);
        let sdk = pick(&[
            "Anthropic/",
            "AsyncAnthropic/",
            "anthropic/",
            "SyncAnthropic/",
        ]);
        let language = pick(&["Python ", "JS ", "Go  ", "Py3 ", "Python", " "]);
        prop_oneof![
            3 => (claude_code, version.clone(), suffix.clone())
                .prop_map(|(p, v, s)| format!("{p}{v}{s}")),
            3 => (sdk, language, version, suffix)
                .prop_map(|(p, l, v, s)| format!("{p}{l}{v}{s}")),
            1 => "[ -~]{0,30}",
        ]
    }

    /// Compiled once: the property below runs many cases.
    static RULES: std::sync::LazyLock<Vec<ClientRule>> =
        std::sync::LazyLock::new(ClientRule::builtin);

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn prop_client_kinds_match_exactly_their_user_agent_grammar(ua in user_agent()) {
            let headers = with_ua(Some(&ua));
            let kind = |name: &str| client_allowed(&RULES, &[name.to_owned()], &headers);

            prop_assert_eq!(kind("claude_code"), claude_code_by_hand(&ua), "claude_code");
            prop_assert_eq!(kind("anthropic_sdk"), sdk_by_hand(&ua), "anthropic_sdk");
            prop_assert!(!(kind("claude_code") && kind("anthropic_sdk")));
        }
    }

    proptest! {
        #[test]
        fn prop_any_claude_cli_version_and_suffix_matches(
            major in 0u32..1000, minor in 0u32..1000, patch in 0u32..1000,
            suffix in proptest::option::of("\\([a-z, -]{0,30}\\)"),
        ) {
            let ua = match suffix {
                Some(suffix) => format!("claude-cli/{major}.{minor}.{patch} {suffix}"),
                None => format!("claude-cli/{major}.{minor}.{patch}"),
            };
            prop_assert!(is_claude_code(Some(&ua)));
        }

        #[test]
        fn prop_nothing_before_claude_cli_matches(prefix in "[!-~]{1,12}", ua_tail in "[ -~]{0,20}") {
            let ua = format!("{prefix}claude-cli/2.0.0{ua_tail}");
            prop_assert!(!is_claude_code(Some(&ua)));
        }
    }
}
