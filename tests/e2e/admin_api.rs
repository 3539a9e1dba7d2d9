//! The HTTP admin API: off without a token, opened only by it, and doing
//! what the `keys`, `accounts` and `usage` commands do, with effects a
//! relay user meets on the next request.

use claude_relay::usage::record::Subject;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{K1, TestEnv, TestResponse, body, snapshot};

const TOKEN: &str = "admin-token-0123456789abcdef0123";

async fn with_admin() -> TestEnv {
    TestEnv::builder()
        .two_accounts()
        .config(|config| config.secrets.admin_token = Some(TOKEN.to_owned().into()))
        .start()
        .await
}

async fn admin(env: &TestEnv, method: Method, path: &str, body: Option<Value>) -> TestResponse {
    let mut request = env
        .request(method, path)
        .header("authorization", format!("Bearer {TOKEN}"));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    env.send(request).await
}

#[tokio::test]
async fn without_a_token_configured_there_is_no_admin_api() {
    let env = TestEnv::start().await;

    let response = env.send(
        env.request(Method::GET, "/admin/keys")
            .header("authorization", format!("Bearer {TOKEN}")),
    );
    let response = response.await;

    assert_eq!(response.status, 404);
    assert_eq!(response.error_code(), "not_found");
}

#[tokio::test]
async fn the_admin_api_opens_only_to_the_admin_token() {
    let env = with_admin().await;
    let get = |auth: Option<String>| {
        let mut request = env.request(Method::GET, "/admin/keys");
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        env.send(request)
    };

    let missing = get(None).await;
    let relay_key = get(Some(format!("Bearer {K1}"))).await;
    let wrong = get(Some(format!("Bearer {TOKEN}x"))).await;
    let other_scheme = get(Some(format!("Basic {TOKEN}"))).await;
    let lower_case_scheme = get(Some(format!("bearer {TOKEN}"))).await;

    snapshot::error_body("admin_unauthorized", &missing);
    for refused in [&missing, &relay_key, &wrong, &other_scheme] {
        assert_eq!(refused.status, 401, "{refused:?}");
        assert_eq!(refused.error_code(), "admin_unauthorized");
    }
    assert_eq!(lower_case_scheme.status, 200, "{lower_case_scheme:?}");
    let listed = lower_case_scheme.json();
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["key-1", "key-2", "key-3"]);
}

#[tokio::test]
async fn a_key_created_through_the_api_works_and_its_changes_apply_at_once() {
    let env = with_admin().await;

    let created = admin(
        &env,
        Method::POST,
        "/admin/keys",
        Some(json!({"id": "key-api", "name": "Dashboard", "owner": "bob",
                    "concurrency_limit": 2, "allowed_models": ["claude-sonnet-4-5"]})),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    let created = created.json();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("cr_"), "{created}");
    assert_eq!(created["status"], "active");
    assert_eq!(created["owner"], "bob");
    assert_eq!(env.post_messages(&key, body(false)).await.status, 200);
    env.usage_after(Subject::Key("key-api"), 1).await;

    let shown = admin(&env, Method::GET, "/admin/keys/key-api", None)
        .await
        .json();
    assert!(shown.get("key").is_none(), "the key is shown only once");
    assert_eq!(shown["usage"]["today"]["requests"], 1, "{shown}");
    assert_eq!(shown["limit_status"]["concurrency"]["limit"], 2, "{shown}");
    assert_eq!(shown["limit_status"]["concurrency"]["in_use"], 0, "{shown}");

    let disabled = admin(&env, Method::POST, "/admin/keys/key-api/disable", None).await;
    assert_eq!(disabled.json()["status"], "disabled");
    assert_eq!(
        env.post_messages(&key, body(false)).await.error_code(),
        "key_disabled"
    );
    admin(&env, Method::POST, "/admin/keys/key-api/enable", None).await;
    assert_eq!(env.post_messages(&key, body(false)).await.status, 200);

    let rotated = admin(&env, Method::POST, "/admin/keys/key-api/rotate", None).await;
    let new_key = rotated.json()["key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, key);
    assert_eq!(
        env.post_messages(&key, body(false)).await.error_code(),
        "invalid_api_key"
    );
    assert_eq!(env.post_messages(&new_key, body(false)).await.status, 200);

    let deleted = admin(&env, Method::DELETE, "/admin/keys/key-api", None).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(
        env.post_messages(&new_key, body(false)).await.error_code(),
        "invalid_api_key"
    );
    let gone = admin(&env, Method::GET, "/admin/keys/key-api", None).await;
    snapshot::error_body("admin_record_not_found", &gone);
    assert_eq!(gone.status, 404);
}

#[tokio::test]
async fn bad_key_entries_are_refused_with_what_is_wrong_and_nothing_stored() {
    let env = with_admin().await;
    let post = |body: Value| admin(&env, Method::POST, "/admin/keys", Some(body));

    let existing = post(json!({"id": "key-1", "name": "again"})).await;
    let unknown_field = post(json!({"name": "x", "colour": "blue"})).await;
    let unknown_client = post(json!({"name": "x", "allowed_clients": ["claude-code"]})).await;
    let bad_id = post(json!({"id": "a b", "name": "x"})).await;
    let not_an_object = admin(&env, Method::POST, "/admin/keys", Some(json!(["x"]))).await;
    let not_json = env
        .send(
            env.request(Method::POST, "/admin/keys")
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("content-type", "application/json")
                .body("{"),
        )
        .await;
    let not_declared_json = env
        .send(
            env.request(Method::POST, "/admin/keys")
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(r#"{"name":"x"}"#),
        )
        .await;
    let unusable_key = post(json!({"name": "x", "key": "a b"})).await;

    snapshot::error_body("admin_record_exists", &existing);
    assert_eq!(existing.status, 409);
    for (refused, says) in [
        (&unknown_field, "colour"),
        (&unknown_client, "claude-code"),
        (&bad_id, "a b"),
        (&not_an_object, "JSON object"),
        (&unusable_key, "visible ASCII"),
    ] {
        assert_eq!(refused.status, 400, "{refused:?}");
        assert_eq!(refused.error_code(), "invalid_body");
        let message = refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains(says), "{message}");
    }
    assert_eq!(not_json.error_code(), "invalid_json");
    assert_eq!(not_declared_json.status, 415);
    let listed = admin(&env, Method::GET, "/admin/keys", None).await.json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 3, "{listed}");
}

#[tokio::test]
async fn accounts_are_listed_with_why_they_idle_and_never_with_their_credential() {
    let env = with_admin().await;

    let disabled = admin(&env, Method::POST, "/admin/accounts/acct-a/disable", None).await;
    assert_eq!(disabled.json()["state"], "disabled");
    let served = env.post_messages(K1, body(false)).await;
    assert_eq!(served.status, 200);
    assert_eq!(env.seen_by("B").len(), 1, "A is out of the pool");

    let listed = admin(&env, Method::GET, "/admin/accounts", None).await;
    let text = listed.text();
    assert!(!text.contains("sk-up-"), "a credential leaked: {text}");
    assert!(!text.contains("credential"), "{text}");
    let listed = listed.json();
    let a = &listed["data"][0];
    assert_eq!(a["id"], "acct-a");
    assert_eq!(a["state"], "disabled");
    assert!(
        a["why"]
            .as_str()
            .unwrap()
            .contains("accounts enable acct-a"),
        "{a}"
    );
    assert_eq!(listed["data"][1]["state"], "ready");
    assert!(listed["data"][1]["last_used_secs_ago"].is_u64(), "{listed}");

    let enabled = admin(&env, Method::POST, "/admin/accounts/acct-a/enable", None).await;
    assert_eq!(enabled.json()["state"], "ready");
    assert_eq!(enabled.json()["why"], "takes traffic");
    let missing = admin(&env, Method::POST, "/admin/accounts/acct-x/disable", None).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["details"]["kind"], "account");
}

#[tokio::test]
async fn an_account_added_through_the_api_serves_and_can_be_removed() {
    let env = TestEnv::builder()
        .config(|config| config.secrets.admin_token = Some(TOKEN.to_owned().into()))
        .accounts(Vec::new())
        .start()
        .await;
    let refused = env.post_messages(K1, body(false)).await;
    assert_eq!(refused.error_code(), "no_upstream_available");

    let added = admin(
        &env,
        Method::POST,
        "/admin/accounts",
        Some(
            json!({"id": "acct-new", "name": "New", "base_url": env.mock.url(),
                    "credential": "sk-up-A", "priority": 3}),
        ),
    )
    .await;
    assert_eq!(added.status, 201, "{added:?}");
    assert!(!added.text().contains("sk-up-A"));
    assert_eq!(env.post_messages(K1, body(false)).await.status, 200);
    assert_eq!(env.seen_by("A").len(), 1);
    let again = admin(
        &env,
        Method::POST,
        "/admin/accounts",
        Some(
            json!({"id": "acct-new", "name": "New", "base_url": env.mock.url(),
                    "credential": "sk-up-A"}),
        ),
    )
    .await;
    assert_eq!(again.error_code(), "record_exists");

    let removed = admin(&env, Method::DELETE, "/admin/accounts/acct-new", None).await;
    assert_eq!(removed.status, 204);
    assert_eq!(
        env.post_messages(K1, body(false)).await.error_code(),
        "no_upstream_available"
    );
}

#[tokio::test]
async fn usage_reads_the_same_counters_as_the_usage_command() {
    let env = with_admin().await;
    env.post_messages(K1, body(false)).await;
    env.post_messages(K1, body(true)).await;
    let counted = env.usage_after(Subject::Key("key-1"), 2).await;

    let usage = admin(&env, Method::GET, "/admin/usage?key=key-1", None).await;
    let bad_since = admin(&env, Method::GET, "/admin/usage?since=yesterday", None).await;
    let unknown = admin(&env, Method::GET, "/admin/usage?colour=blue", None).await;
    let no_such_key = admin(&env, Method::GET, "/admin/usage?key=key-nope", None).await;
    let ages_ago = admin(&env, Method::GET, "/admin/usage?since=0001-01-01", None).await;

    let usage = usage.json();
    let section = &usage["data"][0];
    assert_eq!(section["kind"], "key");
    assert_eq!(section["id"], "key-1");
    let total = section["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["period"] == "total")
        .unwrap_or_else(|| panic!("no total row in {section}"));
    assert_eq!(total["requests"], counted.requests);
    assert_eq!(total["input_tokens"], counted.input_tokens);
    assert_eq!(total["output_tokens"], counted.output_tokens);
    assert_eq!(total["cost_nano_usd"], counted.cost_nano_usd);
    snapshot::error_body("admin_invalid_query", &bad_since);
    assert_eq!(bad_since.status, 400);
    assert_eq!(unknown.error_code(), "invalid_query");
    assert_eq!(no_such_key.status, 404, "{no_such_key:?}");
    assert_eq!(no_such_key.error_code(), "record_not_found");
    assert_eq!(ages_ago.error_code(), "invalid_query");
}

#[tokio::test]
async fn a_short_admin_token_stops_the_relay_from_starting() {
    let mut config = claude_relay::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    config.secrets.admin_token = Some("short".to_owned().into());

    let built = claude_relay::app::Application::build(config).await;

    let Err(err) = built else {
        panic!("a relay with a 5-character admin token started");
    };
    assert!(err.to_string().contains("at least 24"), "{err}");
}

#[tokio::test]
async fn a_key_replaced_through_the_api_keeps_its_secret_and_takes_the_new_settings() {
    let env = with_admin().await;
    let before = admin(&env, Method::GET, "/admin/keys/key-1", None)
        .await
        .json();
    assert_eq!(env.post_messages(K1, body(false)).await.status, 200);

    let replaced = admin(
        &env,
        Method::PUT,
        "/admin/keys/key-1",
        Some(
            json!({"name": "Renamed", "allowed_models": ["claude-haiku-4-5"],
                    "daily_budget_usd": 5}),
        ),
    )
    .await;
    let haiku = body(false).replace(crate::harness::SONNET, "claude-haiku-4-5");
    let wrong_id = admin(
        &env,
        Method::PUT,
        "/admin/keys/key-1",
        Some(json!({"id": "key-2", "name": "x"})),
    )
    .await;
    let new_without_key = admin(
        &env,
        Method::PUT,
        "/admin/keys/key-new",
        Some(json!({"name": "New"})),
    )
    .await;
    let new_with_hash = admin(
        &env,
        Method::PUT,
        "/admin/keys/key-new",
        Some(json!({"name": "New", "key_sha256": "a".repeat(64)})),
    )
    .await;

    assert_eq!(replaced.status, 200, "{replaced:?}");
    let replaced = replaced.json();
    assert_eq!(replaced["name"], "Renamed");
    assert_eq!(replaced["created_at"], before["created_at"]);
    assert_eq!(replaced["key_sha256"], before["key_sha256"]);
    assert_eq!(
        replaced["limits"]["budgets"]["daily_nano_usd"], 5_000_000_000u64,
        "{replaced}"
    );
    assert_eq!(env.post_messages(K1, haiku).await.status, 200);
    assert_eq!(
        env.post_messages(K1, body(false)).await.error_code(),
        "model_not_allowed"
    );
    assert_eq!(wrong_id.error_code(), "invalid_body");
    assert_eq!(new_without_key.error_code(), "invalid_body");
    assert_eq!(new_with_hash.status, 201, "{new_with_hash:?}");
}

#[tokio::test]
async fn one_secret_opens_one_key_so_a_second_key_with_it_is_refused() {
    let env = with_admin().await;
    let k1_hash = claude_relay::auth::hash_key(K1, None);

    let same_key = admin(
        &env,
        Method::POST,
        "/admin/keys",
        Some(json!({"id": "thief", "name": "t", "key": K1, "disabled": true})),
    )
    .await;
    let same_hash = admin(
        &env,
        Method::PUT,
        "/admin/keys/thief",
        Some(json!({"name": "t", "key_sha256": k1_hash})),
    )
    .await;

    snapshot::error_body("admin_secret_in_use", &same_key);
    assert_eq!(same_key.status, 409);
    assert_eq!(same_hash.error_code(), "secret_in_use");
    assert_eq!(env.post_messages(K1, body(false)).await.status, 200);
    let k1 = admin(&env, Method::GET, "/admin/keys/key-1", None)
        .await
        .json();
    assert_eq!(k1["id"], "key-1");
    let thief = admin(&env, Method::GET, "/admin/keys/thief", None).await;
    assert_eq!(thief.status, 404);
}

#[tokio::test]
async fn of_many_concurrent_creates_of_one_id_exactly_one_succeeds() {
    let env = with_admin().await;
    let key = || {
        admin(
            &env,
            Method::POST,
            "/admin/keys",
            Some(json!({"id": "raced", "name": "r"})),
        )
    };
    let account = || {
        admin(
            &env,
            Method::POST,
            "/admin/accounts",
            Some(
                json!({"id": "acct-raced", "name": "r", "base_url": env.mock.url(),
                        "credential": "sk-up-A"}),
            ),
        )
    };

    let keys = futures::future::join_all((0..12).map(|_| key())).await;
    let accounts = futures::future::join_all((0..12).map(|_| account())).await;

    for answers in [keys, accounts] {
        let mut statuses: Vec<u16> = answers.iter().map(|answer| answer.status).collect();
        statuses.sort_unstable();
        assert_eq!(statuses[0], 201);
        assert!(
            statuses[1..].iter().all(|status| *status == 409),
            "{statuses:?}"
        );
    }
}

#[tokio::test]
async fn an_admin_body_that_stops_arriving_gets_408_and_a_padded_token_still_opens() {
    let env = TestEnv::builder()
        .config(|config| {
            config.secrets.admin_token = Some(format!("  {TOKEN}\n").into());
            config.client_timeout = std::time::Duration::from_secs(1);
        })
        .start()
        .await;
    let request = format!(
        "POST /admin/keys HTTP/1.1\r\nhost: relay\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"name\""
    );

    let stalled = crate::harness::raw::send_and_stall(
        env.addr(),
        request.as_bytes(),
        std::time::Duration::from_secs(10),
    )
    .await;
    let listed = admin(&env, Method::GET, "/admin/keys", None).await;

    let stalled = stalled.expect("an answer within 10 s");
    assert_eq!(stalled.status, 408);
    assert_eq!(stalled.error_code(), "request_timeout");
    assert_eq!(listed.status, 200, "{listed:?}");
}

/// Changes to one key at the same moment never undo each other: a deleted
/// key stays deleted, a rotation is never lost, a disable holds across a
/// rotation.
#[tokio::test]
async fn concurrent_changes_to_one_key_never_undo_each_other() {
    let env = with_admin().await;
    let new_key = |id: String| {
        let env = &env;
        async move {
            let created = admin(
                env,
                Method::POST,
                "/admin/keys",
                Some(json!({"id": id, "name": "r"})),
            )
            .await;
            assert_eq!(created.status, 201);
            created.json()["key"].as_str().unwrap().to_owned()
        }
    };
    let gone = |id: String| {
        let env = &env;
        async move {
            admin(env, Method::GET, &format!("/admin/keys/{id}"), None)
                .await
                .status
                == 404
        }
    };

    for round in 0..8 {
        let id = format!("race-del-{round}");
        new_key(id.clone()).await;
        let path = format!("/admin/keys/{id}");
        let rotate_path = format!("{path}/rotate");
        let (_, _, _) = tokio::join!(
            admin(&env, Method::DELETE, &path, None),
            admin(&env, Method::POST, &rotate_path, None),
            admin(&env, Method::PUT, &path, Some(json!({"name": "renamed"}))),
        );
        assert!(gone(id.clone()).await, "{id} came back after its delete");

        let id = format!("race-dis-{round}");
        let old = new_key(id.clone()).await;
        let path = format!("/admin/keys/{id}");
        let (rotate_path, disable_path) = (format!("{path}/rotate"), format!("{path}/disable"));
        let (rotated, disabled) = tokio::join!(
            admin(&env, Method::POST, &rotate_path, None),
            admin(&env, Method::POST, &disable_path, None),
        );
        assert_eq!((rotated.status, disabled.status), (200, 200));
        let new = rotated.json()["key"].as_str().unwrap().to_owned();
        let shown = admin(&env, Method::GET, &path, None).await.json();
        assert_eq!(shown["status"], "disabled", "{id}: the disable was lost");
        assert_eq!(
            shown["key_sha256"],
            claude_relay::auth::hash_key(&new, None),
            "{id}: the rotation was lost"
        );
        assert_ne!(
            shown["key_sha256"],
            claude_relay::auth::hash_key(&old, None)
        );
    }
}

#[tokio::test]
async fn an_account_removed_while_it_is_disabled_stays_removed() {
    let env = with_admin().await;

    for round in 0..8 {
        let id = format!("acct-race-{round}");
        let added = admin(
            &env,
            Method::POST,
            "/admin/accounts",
            Some(json!({"id": id, "name": "r", "base_url": env.mock.url(),
                        "credential": "sk-up-A"})),
        )
        .await;
        assert_eq!(added.status, 201);
        let path = format!("/admin/accounts/{id}");
        let disable_path = format!("{path}/disable");

        let (removed, _) = tokio::join!(
            admin(&env, Method::DELETE, &path, None),
            admin(&env, Method::POST, &disable_path, None),
        );

        assert_eq!(removed.status, 204);
        let shown = admin(&env, Method::GET, &path, None).await;
        assert_eq!(shown.status, 404, "{id} came back after its removal");
    }
}
