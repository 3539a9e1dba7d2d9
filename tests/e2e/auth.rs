//! Keys and restrictions: who may use the relay, with which client and
//! which model. Every refusal is in the Anthropic envelope, snapshotted.

use reqwest::Method;
use serde_json::json;

use crate::harness::fixtures;
use crate::harness::{K1, K2, K3, TestEnv, body, snapshot};

#[tokio::test]
async fn missing_key_gets_401_in_anthropic_envelope() {
    let env = TestEnv::start().await;

    let response = env
        .send(
            env.request(Method::POST, "/v1/messages")
                .header("content-type", "application/json")
                .body(body(false)),
        )
        .await;

    assert_eq!(response.status, 401);
    snapshot::error_body("missing_api_key", &response);
    assert!(env.mock.journal().is_empty());
}

#[tokio::test]
async fn unknown_key_gets_401_in_anthropic_envelope() {
    let env = TestEnv::start().await;
    let unknown = format!("cr_{}", "9".repeat(64));

    let response = env.post_messages(&unknown, body(false)).await;

    assert_eq!(response.status, 401);
    snapshot::error_body("invalid_api_key", &response);
    assert!(!response.text().contains(&unknown));
    assert!(env.mock.journal().is_empty());
}

#[tokio::test]
async fn disabled_key_gets_401_key_disabled() {
    let env = TestEnv::builder()
        .key(json!({"id": "key-off", "name": "Off", "key": "cr_off", "disabled": true}))
        .start()
        .await;

    let response = env.post_messages("cr_off", body(false)).await;

    assert_eq!(response.status, 401);
    snapshot::error_body("key_disabled", &response);
}

#[tokio::test]
async fn key_restricted_to_claude_code_refuses_curl_with_403() {
    let env = TestEnv::start().await;

    let response = env
        .send(
            env.messages(K2, body(false))
                .header("user-agent", "curl/8.5.0"),
        )
        .await;

    assert_eq!(response.status, 403);
    snapshot::error_body("client_not_allowed", &response);
    assert!(env.mock.journal().is_empty());
}

/// Case C09: the Claude Code restriction accepts every real variant of its
/// User-Agent and nothing else, whichever header carries the key.
#[tokio::test]
async fn claude_code_restriction_accepts_real_user_agents_and_nothing_else() {
    let env = TestEnv::start().await;
    let cases = [
        (Some("claude-cli/2.0.0 (external, cli)"), 200),
        (Some("claude-cli/2.0.0 (external, claude-vscode)"), 200),
        (Some("claude-cli/2.1.39 (external, sdk-ts)"), 200),
        (Some("claude-cli/2.1.332 (external, sdk-cli)"), 200),
        (Some("claude-cli/10.0.0 (external, cli)"), 200),
        (Some("curl/8.5.0"), 403),
        (Some("Mozilla/5.0 claude-cli/2.0.0 (external, cli)"), 403),
        (None, 403),
    ];

    for bearer in [false, true] {
        for (ua, expected) in cases {
            env.mock.clear_journal();
            let mut request = env
                .request(Method::POST, "/v1/messages?beta=true")
                .header("content-type", "application/json")
                .header("anthropic-version", "2023-06-01")
                .body(body(false));
            request = if bearer {
                request.header("authorization", format!("Bearer {K2}"))
            } else {
                request.header("x-api-key", K2)
            };
            if let Some(ua) = ua {
                request = request.header("user-agent", ua);
            }

            let response = env.send(request).await;

            assert_eq!(response.status, expected, "ua {ua:?} bearer {bearer}");
            let seen = env.seen_by("A");
            if expected == 200 {
                assert_eq!(seen.len(), 1);
                assert_eq!(
                    seen[0].header("user-agent"),
                    ua,
                    "the real User-Agent is forwarded"
                );
            } else {
                assert!(seen.is_empty(), "refused requests never reach the upstream");
                assert_eq!(response.json()["error"]["type"], "permission_error");
            }
        }
    }
}

/// A key restricted to the Python SDK.
const SDK_ONLY: &str = "cr_4444444444444444444444444444444444444444444444444444444444444444";

/// Case C09 on real traffic: every captured request of both clients, with
/// the key in `x-api-key` or as Bearer as the client sent it, passes an
/// open key and a key for its own kind, and a key for the other kind
/// refuses it before the upstream.
#[tokio::test]
async fn every_captured_request_passes_its_own_client_kind_and_fails_the_other() {
    let env = TestEnv::builder()
        .key(json!({"id": "key-sdk", "name": "SDK", "key": SDK_ONLY,
                    "allowed_clients": ["anthropic_sdk"]}))
        .start()
        .await;
    let http = reqwest::Client::new();
    let mut ways = std::collections::BTreeSet::new();

    for capture in fixtures::all() {
        assert!(
            capture.is_claude_code() || capture.client.starts_with("anthropic-python"),
            "{}",
            capture.file
        );
        let (own, other) = if capture.is_claude_code() {
            (K2, SDK_ONLY)
        } else {
            (SDK_ONLY, K2)
        };
        ways.insert((capture.is_claude_code(), capture.key_header()));
        for (key, expected) in [(K1, 200), (own, 200), (other, 403)] {
            env.mock.clear_journal();

            let request = capture.request_with_key(&http, &env.url(""), key);
            let response = env.send(request).await;

            let label = format!("{} with {}", capture.file, &key[..4]);
            assert_eq!(response.status, expected, "{label}: {}", response.text());
            if expected == 200 {
                assert_eq!(env.seen_by("A").len(), 1, "{label}");
            } else {
                assert_eq!(response.error_code(), "client_not_allowed", "{label}");
                assert!(env.mock.journal().is_empty(), "{label}");
            }
        }
    }
    assert_eq!(ways.len(), 4, "both clients, both key headers: {ways:?}");
}

/// The extraction policy of `src/auth/extract.rs`, decision by decision.
#[tokio::test]
async fn the_key_is_read_as_the_documented_policy_says() {
    let env = TestEnv::start().await;
    let unknown = format!("cr_{}", "9".repeat(64));
    let bearer = |key: &str| format!("Bearer {key}");
    type Headers = Vec<(&'static str, String)>;
    let cases: Vec<(&str, Headers, u16, &str)> = vec![
        (
            "x-api-key wins over Authorization",
            vec![
                ("x-api-key", K1.into()),
                ("authorization", bearer(&unknown)),
            ],
            200,
            "",
        ),
        (
            "x-api-key wins even when only Bearer holds a valid key",
            vec![
                ("x-api-key", unknown.clone()),
                ("authorization", bearer(K1)),
            ],
            401,
            "invalid_api_key",
        ),
        (
            "the scheme is case-insensitive and whitespace is ignored",
            vec![("authorization", format!("bEaReR \t  {K1}  "))],
            200,
            "",
        ),
        (
            "a blank x-api-key falls back to Bearer",
            vec![("x-api-key", " ".into()), ("authorization", bearer(K1))],
            200,
            "",
        ),
        (
            "another scheme is no key",
            vec![("authorization", format!("Basic {K1}"))],
            401,
            "missing_api_key",
        ),
        (
            "Bearer without a token is no key",
            vec![("authorization", "Bearer ".into())],
            401,
            "missing_api_key",
        ),
        (
            "repeated lines that agree are one key",
            vec![("x-api-key", K1.into()), ("x-api-key", K1.into())],
            200,
            "",
        ),
        (
            "repeated Bearer lines that disagree are refused",
            vec![("authorization", bearer(K1)), ("authorization", bearer(K2))],
            401,
            "ambiguous_api_key",
        ),
    ];

    for (decision, headers, status, code) in cases {
        let mut request = env
            .request(Method::POST, "/v1/messages")
            .header("content-type", "application/json")
            .body(body(false));
        for (name, value) in headers {
            request = request.header(name, value);
        }

        let response = env.send(request).await;

        assert_eq!(response.status, status, "{decision}: {}", response.text());
        if status != 200 {
            assert_eq!(response.error_code(), code, "{decision}");
        }
    }
}

#[tokio::test]
async fn disagreeing_x_api_key_lines_get_401_ambiguous_api_key() {
    let env = TestEnv::start().await;

    let response = env
        .send(env.messages(K1, body(false)).header("x-api-key", K3))
        .await;

    assert_eq!(response.status, 401);
    snapshot::error_body("ambiguous_api_key", &response);
    assert!(!response.text().contains(&K1[3..]) && !response.text().contains(&K3[3..]));
    assert!(env.mock.journal().is_empty());
}

#[tokio::test]
async fn key_limited_to_count_tokens_may_not_send_messages_or_list_models() {
    let env = TestEnv::builder()
        .key(json!({"id": "key-ct", "name": "CT", "key": "cr_ct", "services": ["count_tokens"]}))
        .start()
        .await;

    let messages = env.post_messages("cr_ct", body(false)).await;
    let models = env
        .send(
            env.request(Method::GET, "/v1/models")
                .header("x-api-key", "cr_ct"),
        )
        .await;
    let count = env
        .send(
            env.request(Method::POST, "/v1/messages/count_tokens")
                .header("content-type", "application/json")
                .header("x-api-key", "cr_ct")
                .body(body(false)),
        )
        .await;

    assert_eq!(messages.status, 403);
    snapshot::error_body("service_not_permitted", &messages);
    assert_eq!(models.status, 403);
    assert_eq!(models.error_code(), "service_not_permitted");
    assert_eq!(count.status, 200, "{}", count.text());
    let seen = env.seen_by("A");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/messages/count_tokens");
}

#[tokio::test]
async fn keys_hashed_with_a_pepper_elsewhere_can_be_imported() {
    use sha2::Digest;
    let imported = "sk-old-deployment-key";
    let hash = hex::encode(sha2::Sha256::digest(format!("{imported}pepper-1")));
    let env = TestEnv::builder()
        .config(|config| config.secrets.key_pepper = Some("pepper-1".to_owned().into()))
        .key(json!({"id": "key-imp", "name": "Imported", "key_sha256": hash}))
        .start()
        .await;

    let response = env.post_messages(imported, body(false)).await;

    assert_eq!(response.status, 200, "{}", response.text());
}

/// Case C10: dated ids and aliases match each other, nothing else does.
#[tokio::test]
async fn model_allow_list_matches_dated_ids_and_aliases_only() {
    let env = TestEnv::start().await;
    let cases = [
        ("claude-haiku-4-5", 200),
        ("claude-haiku-4-5-20251001", 200),
        ("claude-sonnet-4-5-20250929", 200),
        ("claude-opus-4-5-20251101", 403),
        ("claude-haiku-4-5-evil", 403),
        ("claude-haiku-4", 403),
    ];

    for (model, expected) in cases {
        env.mock.clear_journal();
        let request = format!(
            r#"{{"model":"{model}","max_tokens":64,"messages":[{{"role":"user","content":"hi"}}]}}"#
        );

        let response = env.post_messages(K3, request).await;

        assert_eq!(response.status, expected, "{model}");
        let seen = env.seen_by("A");
        if expected == 200 {
            assert_eq!(
                seen[0].json()["model"],
                model,
                "the model string reaches the upstream unchanged"
            );
        } else {
            assert!(seen.is_empty());
            assert_eq!(response.error_code(), "model_not_allowed");
        }
    }
    env.mock.clear_journal();
    let no_model = r#"{"max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
    let response = env.post_messages(K3, no_model).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"]["type"], "invalid_request_error");
    assert!(env.mock.journal().is_empty());
}

#[tokio::test]
async fn model_outside_the_allow_list_gets_403_model_not_allowed() {
    let env = TestEnv::start().await;
    let request = r#"{"model":"claude-opus-4-5-20251101","max_tokens":64,"messages":[]}"#;

    let response = env.post_messages(K3, request).await;

    assert_eq!(response.status, 403);
    snapshot::error_body("model_not_allowed", &response);
}

/// Case C05 c and C10 7: bodies the relay cannot read never reach the
/// upstream and are never a 500.
#[tokio::test]
async fn unreadable_bodies_get_400_and_never_reach_the_upstream() {
    let env = TestEnv::start().await;
    let cases = [
        ("truncated_json", r#"{"model":"#),
        ("body_is_array", r#"[{"model":"claude-sonnet-4-5"}]"#),
        (
            "model_missing",
            r#"{"max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#,
        ),
        (
            "stream_is_string",
            r#"{"model":"claude-sonnet-4-5","stream":"true","messages":[]}"#,
        ),
        ("messages_missing", r#"{"model":"claude-sonnet-4-5"}"#),
    ];

    for (name, request) in cases {
        let response = env.post_messages(K1, request).await;

        assert_eq!(response.status, 400, "{name}: {}", response.text());
        assert_eq!(
            response.json()["error"]["type"],
            "invalid_request_error",
            "{name}"
        );
        snapshot::error_body(&format!("invalid_body_{name}"), &response);
    }
    assert!(env.mock.journal().is_empty());
}

#[tokio::test]
async fn unknown_route_wrong_method_and_wrong_content_type_are_enveloped() {
    let env = TestEnv::start().await;

    let not_found = env
        .send(
            env.request(Method::GET, "/v1/nothing")
                .header("x-api-key", K1),
        )
        .await;
    let wrong_method = env
        .send(
            env.request(Method::GET, "/v1/messages")
                .header("x-api-key", K1),
        )
        .await;
    let form = env
        .send(
            env.request(Method::POST, "/v1/messages")
                .header("x-api-key", K1)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("model=x"),
        )
        .await;

    assert_eq!(not_found.status, 404);
    snapshot::error_body("not_found", &not_found);
    assert_eq!(wrong_method.status, 405);
    snapshot::error_body("method_not_allowed", &wrong_method);
    assert_eq!(form.status, 415);
    snapshot::error_body("unsupported_media_type", &form);
    assert!(env.mock.journal().is_empty());
}
