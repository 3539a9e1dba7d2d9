//! Which accounts a request may use and in which order: priority, least
//! recent use, dedicated bindings and groups, models, model mapping.

use claude_relay::Application;
use claude_relay::store::records::StoredCredential;
use serde_json::{Value, json};

use crate::harness::env::account;
use crate::harness::{Answer, K1, SONNET, TestEnv, body};

const BOUND: &str = "cr_4444444444444444444444444444444444444444444444444444444444444444";

fn conversation(n: u32) -> String {
    json!({"model": SONNET, "max_tokens": 8,
           "messages": [{"role": "user", "content": format!("conversation {n}")}]})
    .to_string()
}

fn grouped(name: &str, priority: u32, group: &str) -> Value {
    let mut account = account(name, priority);
    account["group"] = json!(group);
    account
}

fn bound_key(account: &str) -> Value {
    json!({"id": "key-bound", "name": "Bound", "key": BOUND, "account": account})
}

fn builder_with(names: &[&str]) -> crate::harness::env::Builder {
    let mut builder = TestEnv::builder();
    for name in names {
        builder = builder.profile(&format!("sk-up-{name}"), crate::harness::Profile::Ok);
    }
    builder
}

#[tokio::test]
async fn pool_takes_the_best_priority_and_spreads_over_equals_by_last_use() {
    let env = builder_with(&["C"])
        .accounts(vec![account("A", 1), account("B", 1), account("C", 2)])
        .start()
        .await;

    for n in 0..6 {
        assert_eq!(env.post_messages(K1, conversation(n)).await.status, 200);
    }

    assert_eq!(env.seen_by("A").len(), 3);
    assert_eq!(env.seen_by("B").len(), 3);
    assert!(env.seen_by("C").is_empty());
}

#[tokio::test]
async fn key_bound_to_an_account_uses_it_and_never_spills_into_the_pool() {
    let env = TestEnv::builder()
        .two_accounts()
        .key(bound_key("acct-b"))
        .start()
        .await;
    env.mock
        .push_answers("sk-up-B", vec![Answer::error(500, "api_error", "down")]);

    let served = env.post_messages(BOUND, conversation(1)).await;
    let refused = env.post_messages(BOUND, conversation(2)).await;

    assert_eq!(served.status, 500, "B's answer, verbatim");
    assert_eq!(refused.status, 503, "B cools down; A is not the key's");
    assert_eq!(refused.error_code(), "no_upstream_available");
    assert!(env.seen_by("A").is_empty());
}

#[tokio::test]
async fn key_bound_to_an_unknown_account_gets_503() {
    let env = TestEnv::builder().key(bound_key("acct-nope")).start().await;

    let response = env.post_messages(BOUND, body(false)).await;

    assert_eq!(response.status, 503);
    assert_eq!(response.error_code(), "no_upstream_available");
    assert!(env.mock.journal().is_empty());
}

#[tokio::test]
async fn group_accounts_serve_only_their_keys() {
    let env = builder_with(&["G"])
        .accounts(vec![account("A", 1), grouped("G", 1, "team")])
        .key(bound_key("group:team"))
        .start()
        .await;
    env.mock
        .push_answers("sk-up-A", vec![Answer::error(500, "api_error", "down")]);

    let pool_key = env.post_messages(K1, conversation(1)).await;
    let group_key = env.post_messages(BOUND, conversation(2)).await;

    assert_eq!(pool_key.status, 500, "the pool has only A; G is not in it");
    assert_eq!(group_key.status, 200);
    assert_eq!(env.mock.requests_for("sk-up-G").len(), 1);
    assert_eq!(env.seen_by("A").len(), 1);
}

#[tokio::test]
async fn bound_keys_spill_into_the_pool_only_when_configured() {
    for spill in [false, true] {
        let env = builder_with(&["G"])
            .accounts(vec![account("A", 1), grouped("G", 1, "team")])
            .key(bound_key("group:team"))
            .config(move |config| config.scheduling.spill_to_pool = spill)
            .start()
            .await;
        env.mock.push_answers(
            "sk-up-G",
            vec![Answer::error(529, "overloaded_error", "Overloaded")],
        );

        let response = env.post_messages(BOUND, conversation(1)).await;

        let expected = if spill { 200 } else { 529 };
        assert_eq!(response.status, expected, "spill={spill}");
        assert_eq!(env.seen_by("A").len(), usize::from(spill), "spill={spill}");
    }
}

#[tokio::test]
async fn accounts_that_do_not_serve_the_model_are_skipped() {
    let mut haiku_only = account("A", 1);
    haiku_only["models"] = json!(["claude-haiku-4-5"]);
    let env = TestEnv::builder()
        .accounts(vec![haiku_only, account("B", 2)])
        .start()
        .await;

    let sonnet = env.post_messages(K1, body(false)).await;
    let haiku = env
        .post_messages(K1, body(false).replace(SONNET, "claude-haiku-4-5-20251001"))
        .await;

    assert_eq!((sonnet.status, haiku.status), (200, 200));
    assert_eq!(env.seen_by("B").len(), 1);
    let a = env.seen_by("A");
    assert_eq!(a.len(), 1);
    assert!(String::from_utf8_lossy(&a[0].body).contains("claude-haiku-4-5-20251001"));
}

#[tokio::test]
async fn model_map_replaces_only_the_model_value_in_the_body() {
    let mut mapped = account("A", 1);
    mapped["model_map"] = json!({"claude-sonnet-4-5": "vendor/sonnet-4.5"});
    let env = TestEnv::builder().accounts(vec![mapped]).start().await;
    let sent = format!(
        "{{ \"max_tokens\" : 64,\n  \"model\":\"{SONNET}\", \"messages\":[{{\"role\":\"user\",\"content\":\"caf\\u00e9\"}}]}}"
    );

    let response = env.post_messages(K1, sent.clone()).await;

    assert_eq!(response.status, 200);
    let seen = &env.seen_by("A")[0];
    assert_eq!(
        String::from_utf8_lossy(&seen.body),
        sent.replace(SONNET, "vendor/sonnet-4.5")
    );
    assert_eq!(
        seen.header("content-length"),
        Some(seen.body.len().to_string().as_str())
    );
}

#[tokio::test]
async fn operator_changes_reach_the_next_request() {
    let env = TestEnv::builder().two_accounts().start().await;

    let before = env.post_messages(K1, conversation(1)).await;
    let said = env
        .accounts_cli(&["set-priority", "acct-b", "0"])
        .await
        .unwrap();
    let after = env.post_messages(K1, conversation(2)).await;

    assert_eq!((before.status, after.status), (200, 200));
    assert!(said.contains("priority 0"), "{said}");
    assert_eq!(env.seen_by("A").len(), 1);
    assert_eq!(env.seen_by("B").len(), 1);
}

#[tokio::test]
async fn credentials_are_encrypted_at_rest_under_the_account_key() {
    let env = TestEnv::start().await;

    let record = env.store.account("acct-a").await.unwrap().unwrap();

    let StoredCredential::Aes256Gcm(sealed) = &record.credential else {
        panic!("stored as {:?}", record.credential);
    };
    assert!(!sealed.contains("sk-up-A"));
    assert!(!serde_json::to_string(&record).unwrap().contains("sk-up-A"));
    assert_eq!(env.post_messages(K1, body(false)).await.status, 200);
}

#[tokio::test]
async fn plaintext_credentials_work_only_when_switched_on() {
    let env = TestEnv::builder()
        .config(|config| {
            config.secrets.account_key = None;
            config.secrets.plaintext_credentials = true;
        })
        .start()
        .await;

    let response = env.post_messages(K1, body(false)).await;

    assert_eq!(response.status, 200);
    let record = env.store.account("acct-a").await.unwrap().unwrap();
    assert!(matches!(record.credential, StoredCredential::Plaintext(_)));
}

#[tokio::test]
async fn relay_without_an_account_key_refuses_to_start() {
    let mut config = claude_relay::Config {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        ..claude_relay::Config::default()
    };
    config.secrets.account_key = None;

    let built = Application::build(config).await;

    let message = format!("{:#}", built.err().expect("refused"));
    assert!(message.contains("RELAY_ACCOUNT_KEY"), "{message}");
}

#[tokio::test]
async fn an_account_sealed_under_another_key_is_skipped_not_fatal() {
    let env = TestEnv::builder().two_accounts().start().await;
    let mut foreign = env.store.account("acct-a").await.unwrap().unwrap();
    let other_key = claude_relay::store::cipher::generate_key().unwrap();
    let other = claude_relay::store::cipher::CredentialCipher::from_secrets(
        &claude_relay::config::Secrets {
            account_key: Some(other_key),
            ..Default::default()
        },
    )
    .unwrap();
    foreign.credential = other
        .seal("acct-a", &secrecy::SecretString::from("sk-up-A"))
        .unwrap();
    env.store.put_account(&foreign).await.unwrap();

    let response = env.post_messages(K1, body(false)).await;

    assert_eq!(response.status, 200);
    assert!(env.seen_by("A").is_empty());
    assert_eq!(env.seen_by("B").len(), 1);
}

/// Redis lost its data and was seeded again, with account A now disabled:
/// the relay's cached records must not survive that, even though the same
/// number of writes happened since.
#[tokio::test]
async fn records_seeded_again_after_redis_lost_its_data_replace_the_cached_ones() {
    let env = TestEnv::builder().two_accounts().start().await;
    let first = env.post_messages(K1, conversation(1)).await;
    assert_eq!(env.seen_by("A").len(), 1, "A serves while it is first");

    let mut conn = env.store.conn();
    let names: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", env.store.names().prefix()))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&names)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut disabled_a = account("A", 1);
    disabled_a["schedulable"] = json!(false);
    let seed = json!({
        "accounts": [disabled_a, account("B", 2)],
        "keys": [{"id": "key-1", "name": "K1", "key": K1}],
    });
    let mock_url = env.mock.url();
    claude_relay::admin::seed::SeedFile::parse(&seed.to_string(), &|name| {
        (name == "MOCK_URL").then(|| mock_url.clone())
    })
    .unwrap()
    .apply(&env.store, &env.config.secrets)
    .await
    .unwrap();
    let after = env.post_messages(K1, conversation(2)).await;

    assert_eq!((first.status, after.status), (200, 200));
    assert_eq!(env.seen_by("A").len(), 1, "the disabled A took a request");
    assert_eq!(env.seen_by("B").len(), 1);
}
