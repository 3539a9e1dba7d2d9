//! What each profile answers when nothing is scripted.

use serde_json::{Value, json};

use crate::support::{
    MODEL, TestResult, body, event_data, event_names, header, input_tokens, spawn,
};

#[tokio::test]
async fn ok_profile_answers_a_json_message_with_usage() -> TestResult {
    let env = spawn().await?;

    let response = env.messages("sk-up-A", false).await?;

    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), "application/json");
    assert_eq!(header(&response, "request-id"), "req_mock_1");
    let message: Value = response.json().await?;
    assert_eq!(message["type"], "message");
    assert_eq!(message["model"], MODEL);
    assert_eq!(
        message["content"][0]["text"],
        "Hi! How can I help you today?"
    );
    let usage = &message["usage"];
    assert_eq!(usage["input_tokens"], input_tokens(&body(false))?);
    assert_eq!(usage["cache_creation_input_tokens"], 0);
    assert_eq!(usage["cache_read_input_tokens"], 0);
    assert_eq!(usage["output_tokens"], 10);
    Ok(())
}

#[tokio::test]
async fn ok_profile_streams_the_standard_events_when_the_body_asks_whatever_accept_says()
-> TestResult {
    let env = spawn().await?;
    let request = json!({"model": "claude-haiku-4-5-20251001", "stream": true, "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}]});

    let response = env
        .post("/v1/messages?beta=true", "sk-up-A")
        .header("accept", "application/json")
        .json(&request)
        .send()
        .await?;

    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-type"),
        "text/event-stream; charset=utf-8"
    );
    let sse = response.text().await?;
    let expected = [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ];
    assert_eq!(event_names(&sse), expected);
    let start = event_data(&sse, "message_start")?;
    assert_eq!(start["message"]["model"], "claude-haiku-4-5-20251001");
    let usage = &start["message"]["usage"];
    assert_eq!(usage["input_tokens"], input_tokens(&request)?);
    assert_eq!(usage["cache_creation_input_tokens"], 0);
    assert_eq!(usage["cache_read_input_tokens"], 0);
    assert_eq!(usage["output_tokens"], 1);
    assert_eq!(
        event_data(&sse, "message_delta")?["usage"],
        json!({"output_tokens": 10})
    );
    Ok(())
}

#[tokio::test]
async fn client_restricted_profile_admits_only_a_claude_cli_user_agent() -> TestResult {
    let env = spawn().await?;
    let status_for = async |user_agent: Option<&str>| -> reqwest::Result<u16> {
        let mut request = env.post("/v1/messages", "sk-up-R").json(&body(false));
        if let Some(user_agent) = user_agent {
            request = request.header("user-agent", user_agent);
        }
        Ok(request.send().await?.status().as_u16())
    };

    let claude_code = status_for(Some("claude-cli/2.1.332 (external, sdk-cli)")).await?;
    let newer = status_for(Some("claude-cli/10.0.0 (external, cli)")).await?;
    let curl = status_for(Some("curl/8.5.0")).await?;
    let embedded = status_for(Some("Mozilla/5.0 claude-cli/2.0.0 (external, cli)")).await?;
    let no_version = status_for(Some("claude-cli/ (external, cli)")).await?;
    let missing = status_for(None).await?;

    assert_eq!((claude_code, newer), (200, 200));
    assert_eq!((curl, embedded, no_version, missing), (403, 403, 403, 403));
    Ok(())
}

#[tokio::test]
async fn client_restricted_profile_refuses_with_a_relay_style_body() -> TestResult {
    let env = spawn().await?;

    let response = env
        .post("/v1/messages", "sk-up-R")
        .header("user-agent", "curl/8.5.0")
        .json(&body(false))
        .send()
        .await?;

    assert_eq!(response.status(), 403);
    let expected = json!({
        "error": "Client not allowed",
        "message": "This key only accepts requests from Claude Code",
        "allowed_clients": ["claude_code"],
    });
    assert_eq!(response.json::<Value>().await?, expected);
    Ok(())
}

#[tokio::test]
async fn banned_profile_answers_403_permission_error() -> TestResult {
    let env = spawn().await?;

    let response = env.messages("sk-up-X", true).await?;

    assert_eq!(response.status(), 403);
    let expected = json!({"type": "error", "error": {"type": "permission_error",
        "message": "This organization has been disabled."}});
    assert_eq!(response.json::<Value>().await?, expected);
    Ok(())
}

#[tokio::test]
async fn no_credit_profile_answers_400_credit_balance_too_low() -> TestResult {
    let env = spawn().await?;

    let response = env.messages("sk-up-C", false).await?;

    assert_eq!(response.status(), 400);
    let error: Value = response.json().await?;
    assert_eq!(error["error"]["type"], "invalid_request_error");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Your credit balance is too low"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn unknown_or_missing_credential_gets_anthropics_401() -> TestResult {
    let env = spawn().await?;

    let unknown = env.messages("sk-up-nobody", false).await?;
    let missing = env.get("/v1/models").send().await?;

    assert_eq!(unknown.status(), 401);
    let expected = json!({"type": "error", "error": {"type": "authentication_error",
        "message": "invalid x-api-key"}});
    assert_eq!(unknown.json::<Value>().await?, expected);
    assert_eq!(missing.status(), 401);
    Ok(())
}

#[tokio::test]
async fn bearer_credential_selects_the_profile_like_x_api_key() -> TestResult {
    let env = spawn().await?;

    let banned = env.get("/v1/models").bearer_auth("sk-up-X").send().await?;
    let ok = env.get("/v1/models").bearer_auth("sk-up-A").send().await?;

    assert_eq!(banned.status(), 403);
    assert_eq!(ok.status(), 200);
    Ok(())
}

#[tokio::test]
async fn count_tokens_and_models_answer_in_anthropic_shape() -> TestResult {
    let env = spawn().await?;

    let count: Value = env
        .post("/v1/messages/count_tokens", "sk-up-A")
        .json(&body(false))
        .send()
        .await?
        .json()
        .await?;
    let models: Value = env
        .get("/v1/models?limit=20")
        .header("x-api-key", "sk-up-A")
        .send()
        .await?
        .json()
        .await?;

    assert_eq!(count, json!({"input_tokens": input_tokens(&body(false))?}));
    let ids: Vec<&str> = models["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|model| model["id"].as_str())
        .collect();
    for id in [
        "claude-sonnet-4-5-20250929",
        "claude-haiku-4-5-20251001",
        "claude-opus-4-5-20251101",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    assert_eq!(models["has_more"], false);
    assert_eq!(models["first_id"], ids[0]);
    assert_eq!(models["last_id"], ids[ids.len() - 1]);
    assert_eq!(models["data"][0]["type"], "model");
    Ok(())
}

#[tokio::test]
async fn unknown_route_gets_404_not_found_error() -> TestResult {
    let env = spawn().await?;

    let response = env
        .post("/v1/complete", "sk-up-A")
        .json(&body(false))
        .send()
        .await?;

    assert_eq!(response.status(), 404);
    let error: Value = response.json().await?;
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "not_found_error");
    Ok(())
}
