//! The key lifecycle as an operator drives it (`claude-relay keys ...`)
//! and as a user then meets it: created keys work, disabled, rotated,
//! deleted and expired ones are refused.

use claude_relay::auth::hash_key;
use serde_json::{Value, json};
use time::macros::datetime;

use crate::harness::{TestEnv, body, snapshot};

/// The key a `create` or `rotate` printed.
fn printed_key(output: &str) -> String {
    output
        .lines()
        .find_map(|line| line.strip_prefix("key: "))
        .unwrap_or_else(|| panic!("no key in {output:?}"))
        .to_owned()
}

/// Every string value under the test's prefix, to prove a key is not
/// stored anywhere.
async fn everything_stored(env: &TestEnv) -> String {
    let mut conn = env.store.conn();
    let pattern = format!("{}*", env.store.names().prefix());
    let names: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn)
        .await
        .expect("listing the test's Redis keys");
    let mut all = String::new();
    for name in names {
        let kind: String = redis::cmd("TYPE")
            .arg(&name)
            .query_async(&mut conn)
            .await
            .expect("reading a Redis key's type");
        let command = match kind.as_str() {
            "hash" => "HGETALL",
            "set" => "SMEMBERS",
            "string" => "GET",
            "zset" => "ZRANGE",
            other => panic!("{name} has an unexpected type {other}"),
        };
        let mut cmd = redis::cmd(command);
        cmd.arg(&name);
        if command == "ZRANGE" {
            cmd.arg(0).arg(-1).arg("WITHSCORES");
        }
        let value: redis::Value = cmd
            .query_async(&mut conn)
            .await
            .expect("reading a Redis key");
        all.push_str(&format!("{name} {value:?}\n"));
    }
    all
}

#[tokio::test]
async fn created_key_works_and_only_its_hash_is_stored() {
    let env = TestEnv::start().await;

    let output = env
        .keys_cli(&[
            "create", "--name", "Laptop", "--owner", "alice", "--id", "key-new",
        ])
        .await
        .unwrap();

    let key = printed_key(&output);
    assert!(key.starts_with("cr_") && key.len() == 67, "{key}");
    assert!(
        output.starts_with("created key key-new (Laptop)\n"),
        "{output}"
    );
    let response = env.post_messages(&key, body(false)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let stored = everything_stored(&env).await;
    assert!(!stored.contains(&key[3..]), "the key itself is stored");
    assert!(stored.contains(&hash_key(&key, None)));
    let record = env.store.key_by_id("key-new").await.unwrap().unwrap();
    assert_eq!(record.owner, "alice");
    assert!(record.created_at.is_some());
}

#[tokio::test]
async fn list_and_show_describe_keys_without_ever_printing_one() {
    let env = TestEnv::start().await;
    let key = printed_key(
        &env.keys_cli(&["create", "--name", "Laptop", "--id", "key-new"])
            .await
            .unwrap(),
    );

    let list = env.keys_cli(&["list"]).await.unwrap();
    let show = env.keys_cli(&["show", "key-new"]).await.unwrap();
    let json = env.keys_cli(&["list", "--json"]).await.unwrap();

    assert!(list.starts_with("ID "), "{list}");
    assert_eq!(list.lines().count(), 5, "a header and 4 keys: {list}");
    assert!(
        list.lines()
            .any(|line| line.starts_with("key-new ") && line.contains("active"))
    );
    assert!(show.contains("name:            Laptop\n"), "{show}");
    let listed: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 4);
    for output in [list, show, json] {
        assert!(!output.contains(&key[3..]));
    }
}

#[tokio::test]
async fn disabled_key_is_refused_until_enabled_again() {
    // Without the in-process key cache, so each change shows at once; how
    // long a cached record lives is tested with the limits.
    let env = TestEnv::builder()
        .config(|config| config.limits.key_cache_ttl = std::time::Duration::ZERO)
        .start()
        .await;
    let key = printed_key(
        &env.keys_cli(&["create", "--name", "K", "--id", "k"])
            .await
            .unwrap(),
    );

    let said = env.keys_cli(&["disable", "k"]).await.unwrap();
    let refused = env.post_messages(&key, body(false)).await;
    env.keys_cli(&["enable", "k"]).await.unwrap();
    let accepted = env.post_messages(&key, body(false)).await;

    assert_eq!(said, "disabled key k\n");
    assert_eq!(refused.status, 401);
    assert_eq!(refused.error_code(), "key_disabled");
    assert_eq!(accepted.status, 200);
}

#[tokio::test]
async fn rotated_key_replaces_the_old_one_and_keeps_its_settings() {
    let env = TestEnv::start().await;
    let old = printed_key(
        &env.keys_cli(&["create", "--name", "K", "--id", "k", "--services", "models"])
            .await
            .unwrap(),
    );

    let output = env.keys_cli(&["rotate", "k"]).await.unwrap();

    let new = printed_key(&output);
    assert_ne!(old, new);
    let by_old = env
        .send(
            env.request(reqwest::Method::GET, "/v1/models")
                .header("x-api-key", &old),
        )
        .await;
    let by_new = env
        .send(
            env.request(reqwest::Method::GET, "/v1/models")
                .header("x-api-key", &new),
        )
        .await;
    assert_eq!(by_old.status, 401);
    assert_eq!(by_old.error_code(), "invalid_api_key");
    assert_eq!(by_new.status, 200, "{}", by_new.text());
    let messages = env.post_messages(&new, body(false)).await;
    assert_eq!(
        messages.error_code(),
        "service_not_permitted",
        "settings kept"
    );
}

#[tokio::test]
async fn rotation_keeps_the_first_use_so_it_never_extends_a_key() {
    let env = TestEnv::start().await;
    let key = printed_key(
        &env.keys_cli(&[
            "create",
            "--name",
            "K",
            "--id",
            "k",
            "--activation-days",
            "30",
        ])
        .await
        .unwrap(),
    );
    assert_eq!(env.post_messages(&key, body(false)).await.status, 200);
    let first_use = env
        .store
        .key_by_id("k")
        .await
        .unwrap()
        .unwrap()
        .activated_at;

    env.keys_cli(&["rotate", "k"]).await.unwrap();

    assert!(first_use.is_some());
    let rotated = env.store.key_by_id("k").await.unwrap().unwrap();
    assert_eq!(rotated.activated_at, first_use);
}

#[tokio::test]
async fn deleted_key_is_unknown_and_deleting_it_again_is_an_error() {
    let env = TestEnv::start().await;
    let key = printed_key(
        &env.keys_cli(&["create", "--name", "K", "--id", "k"])
            .await
            .unwrap(),
    );

    let said = env.keys_cli(&["delete", "k"]).await.unwrap();
    let again = env.keys_cli(&["delete", "k"]).await;

    assert_eq!(said, "deleted key k\n");
    assert!(again.unwrap_err().to_string().contains("no key with id k"));
    assert_eq!(env.post_messages(&key, body(false)).await.status, 401);
}

#[tokio::test]
async fn creating_a_key_with_an_existing_id_or_unknown_client_is_refused() {
    let env = TestEnv::start().await;

    let taken = env
        .keys_cli(&["create", "--name", "K", "--id", "key-1"])
        .await;
    let typo = env
        .keys_cli(&["create", "--name", "K", "--allowed-clients", "claude-code"])
        .await;

    assert!(taken.unwrap_err().to_string().contains("exists already"));
    assert!(
        typo.unwrap_err()
            .to_string()
            .contains("unknown client kind")
    );
    assert_eq!(env.store.list_keys().await.unwrap().len(), 3);
}

#[tokio::test]
async fn key_past_its_expiry_gets_401_key_expired() {
    let env = TestEnv::builder()
        .key(json!({"id": "key-old", "name": "Old", "key": "cr_old",
                    "expires_at": "2020-01-01T00:00:00Z"}))
        .start()
        .await;

    let response = env.post_messages("cr_old", body(false)).await;

    assert_eq!(response.status, 401);
    snapshot::error_body("key_expired", &response);
    assert!(env.mock.journal().is_empty());
}

#[tokio::test]
async fn key_valid_for_days_from_first_use_is_refused_once_they_have_passed() {
    let env = TestEnv::builder()
        .key(json!({"id": "key-days", "name": "Days", "key": "cr_days", "activation_days": 2}))
        .start()
        .await;
    let first_use = datetime!(2020-01-01 00:00 UTC);
    env.store
        .activate_key(&hash_key("cr_days", None), first_use)
        .await
        .unwrap();

    let response = env.post_messages("cr_days", body(false)).await;

    assert_eq!(response.status, 401);
    assert_eq!(response.error_code(), "key_expired");
    assert_eq!(
        response.json()["error"]["details"]["expired_at"],
        "2020-01-03T00:00:00Z"
    );
    assert!(env.mock.journal().is_empty());
}

#[tokio::test]
async fn first_use_is_only_a_request_that_passes_every_check() {
    let env = TestEnv::builder()
        .key(
            json!({"id": "key-days", "name": "Days", "key": "cr_days", "activation_days": 30,
                    "allowed_models": ["claude-sonnet-4-5"]}),
        )
        .start()
        .await;
    let first_use = || async {
        let record = env.store.key_by_id("key-days").await.unwrap().unwrap();
        record.activated_at
    };
    let opus = r#"{"model":"claude-opus-4-5","max_tokens":1,"messages":[]}"#;

    let wrong_model = env.post_messages("cr_days", opus).await;
    let bad_body = env.post_messages("cr_days", "[]").await;
    let before = first_use().await;
    let accepted = env.post_messages("cr_days", body(false)).await;
    let recorded = first_use().await;
    let again = env.post_messages("cr_days", body(false)).await;

    assert_eq!(wrong_model.status, 403);
    assert_eq!(bad_body.status, 400);
    assert_eq!(before, None, "refused requests do not start the clock");
    assert_eq!(accepted.status, 200);
    let recorded = recorded.expect("the first accepted request starts the clock");
    let age = time::OffsetDateTime::now_utc() - recorded;
    assert!(age < time::Duration::minutes(1), "{recorded}");
    assert_eq!(again.status, 200);
    assert_eq!(first_use().await, Some(recorded), "written once");
}

#[tokio::test]
async fn seeding_a_key_again_keeps_its_creation_time_and_repairs_an_unreadable_one() {
    let env = TestEnv::start().await;
    let seed = |text: &str| claude_relay::admin::seed::SeedFile::parse(text, &|_| None).unwrap();
    let key = seed(r#"{"keys":[{"id":"key-1","name":"K1 again","key":"cr_again"}]}"#);
    let mut old = env.store.key_by_id("key-1").await.unwrap().unwrap();
    old.created_at = Some(datetime!(2020-01-01 00:00 UTC));
    env.store.put_key(&old).await.unwrap();

    key.apply(&env.store, &env.config.secrets).await.unwrap();

    let record = env.store.key_by_id("key-1").await.unwrap().unwrap();
    assert_eq!(record.name, "K1 again");
    assert_eq!(record.created_at, old.created_at);
    // Written by hand on purpose: the relay's own code never writes this.
    let _: () = redis::cmd("HSET")
        .arg(env.store.names().keys_by_hash())
        .arg(hash_key("cr_again", None))
        .arg("{not json")
        .query_async(&mut env.store.conn())
        .await
        .unwrap();
    key.apply(&env.store, &env.config.secrets).await.unwrap();
    assert_eq!(env.post_messages("cr_again", body(false)).await.status, 200);
}
