//! `GET /v1/models` lists only what a key may use: from the upstream's
//! list when an account answers, else from the configured list.

use claude_relay::config::ListedModel;
use mock_upstream::anthropic;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Answer, K1, K3, TestEnv, TestResponse, body};

async fn list_models(env: &TestEnv, key: &str) -> TestResponse {
    env.send(
        env.request(Method::GET, "/v1/models")
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01"),
    )
    .await
}

fn ids(list: &Value) -> Vec<&str> {
    list["data"]
        .as_array()
        .expect("a list has data")
        .iter()
        .map(|entry| entry["id"].as_str().expect("an id"))
        .collect()
}

fn configured(ids: &[&str]) -> Vec<ListedModel> {
    ids.iter()
        .map(|id| ListedModel {
            id: (*id).into(),
            display_name: (*id).into(),
            created_at: "2025-01-01T00:00:00Z".into(),
        })
        .collect()
}

/// Case C10: K3 allows `claude-haiku-4-5` and `claude-sonnet-4-5`.
#[tokio::test]
async fn model_restricted_key_lists_only_its_models() {
    let env = TestEnv::start().await;

    let response = list_models(&env, K3).await;

    assert_eq!(response.status, 200, "{}", response.text());
    let list = response.json();
    assert_eq!(
        ids(&list),
        ["claude-haiku-4-5-20251001", "claude-sonnet-4-5-20250929"]
    );
    assert_eq!(list["first_id"], "claude-haiku-4-5-20251001");
    assert_eq!(list["last_id"], "claude-sonnet-4-5-20250929");
    assert_eq!(list["has_more"], false);
    assert_eq!(list["data"][0]["display_name"], "Claude Haiku 4.5");
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert!(
        response.header("request-id").is_some(),
        "upstream headers kept"
    );
}

#[tokio::test]
async fn denied_models_are_left_out_of_the_list_and_refused() {
    let env = TestEnv::builder()
        .key(json!({"id": "key-d", "name": "D", "key": "cr_d", "denied_models": ["claude-opus-4-5"]}))
        .start()
        .await;
    let opus = r#"{"model":"claude-opus-4-5-20251101","max_tokens":1,"messages":[]}"#;

    let list = list_models(&env, "cr_d").await.json();
    let refused = env.post_messages("cr_d", opus).await;
    let allowed = env.post_messages("cr_d", body(false)).await;

    assert!(!ids(&list).contains(&"claude-opus-4-5-20251101"));
    assert_eq!(
        ids(&list).len(),
        anthropic::models()["data"].as_array().unwrap().len() - 1
    );
    assert_eq!(refused.status, 403);
    assert_eq!(refused.error_code(), "model_not_allowed");
    assert_eq!(allowed.status, 200);
}

#[tokio::test]
async fn open_key_gets_the_upstream_list_unchanged() {
    let env = TestEnv::start().await;

    let response = list_models(&env, K1).await;

    assert_eq!(response.status, 200);
    assert_eq!(response.json(), anthropic::models());
}

#[tokio::test]
async fn configured_models_stand_in_when_no_account_answers_the_listing() {
    let env = TestEnv::builder()
        .config(|config| {
            config.models = configured(&["claude-haiku-4-5-20251001", "claude-opus-4-5-20251101"])
        })
        .start()
        .await;
    env.mock
        .push_answers("sk-up-A", vec![Answer::error(500, "api_error", "down")]);

    let restricted = list_models(&env, K3).await;
    let open = list_models(&env, K1).await;

    assert_eq!(restricted.status, 200, "{}", restricted.text());
    let list = restricted.json();
    assert_eq!(ids(&list), ["claude-haiku-4-5-20251001"]);
    assert_eq!(list["first_id"], "claude-haiku-4-5-20251001");
    assert_eq!(list["last_id"], "claude-haiku-4-5-20251001");
    assert_eq!(
        ids(&open.json()),
        ["claude-haiku-4-5-20251001", "claude-opus-4-5-20251101"]
    );
    // The 500 cools A down, so the second listing does not ask it at all.
    assert_eq!(env.seen_by("A").len(), 1, "the upstream was asked first");
}

#[tokio::test]
async fn configured_models_stand_in_when_there_is_no_account_at_all() {
    let env = TestEnv::builder()
        .accounts(Vec::new())
        .config(|config| config.models = configured(&["claude-sonnet-4-5-20250929"]))
        .start()
        .await;

    let response = list_models(&env, K3).await;

    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!({"first_id": "claude-sonnet-4-5-20250929", "last_id": "claude-sonnet-4-5-20250929",
               "data": [{"type": "model", "id": "claude-sonnet-4-5-20250929",
                         "display_name": "claude-sonnet-4-5-20250929",
                         "created_at": "2025-01-01T00:00:00Z"}],
               "has_more": false})
    );
}

#[tokio::test]
async fn without_configured_models_a_failed_listing_is_the_usual_error() {
    let env = TestEnv::builder().accounts(Vec::new()).start().await;

    let response = list_models(&env, K3).await;

    assert_eq!(response.status, 503);
    assert_eq!(response.error_code(), "no_upstream_available");
}

/// HEAD is answered like GET without a body; the upstream is asked with
/// GET, never HEAD (which an upstream may not serve).
#[tokio::test]
async fn head_on_the_model_list_asks_the_upstream_with_get() {
    let env = TestEnv::start().await;

    let response = env
        .send(
            env.request(Method::HEAD, "/v1/models")
                .header("x-api-key", K1)
                .header("anthropic-version", "2023-06-01"),
        )
        .await;

    assert_eq!(response.status, 200);
    assert!(response.text().is_empty());
    let seen = env.seen_by("A");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
}
