//! Keys and restrictions: who may use the relay, with which client and
//! which model. Every refusal is in the Anthropic envelope, snapshotted.

use reqwest::Method;
use serde_json::json;

use crate::harness::fixtures::{self, CAPTURED_KEY};
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

#[tokio::test]
async fn every_captured_claude_code_request_passes_a_claude_code_key() {
    let env = TestEnv::builder()
        .key(json!({"id": "key-cc", "name": "CC", "key": CAPTURED_KEY,
                    "allowed_clients": ["claude_code"]}))
        .start()
        .await;
    let http = reqwest::Client::new();
    let captures: Vec<_> = fixtures::all()
        .into_iter()
        .filter(|c| c.is_claude_code())
        .collect();
    assert_eq!(captures.len(), 5);

    for capture in captures {
        let response = env.send(capture.request(&http, &env.url(""))).await;

        assert_eq!(
            response.status,
            200,
            "{}: {}",
            capture.file,
            response.text()
        );
    }
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
