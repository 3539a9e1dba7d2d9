//! `claude-relay accounts ...`: an operator adds and changes accounts and
//! sees from `list` why an account takes no traffic.

use claude_relay::usage::record::Subject;
use claude_relay::usage::report::usd;
use secrecy::ExposeSecret;

use crate::binaries::relay_command;
use crate::harness::{Answer, K1, TestEnv, body};

/// The `list` line of one account, split into its columns (the last one,
/// WHY, whole).
fn line_of(list: &str, id: &str) -> Vec<String> {
    let line = list
        .lines()
        .find(|line| line.starts_with(&format!("{id} ")))
        .unwrap_or_else(|| panic!("no line for {id} in\n{list}"));
    let mut columns: Vec<String> = Vec::new();
    let mut rest = line;
    for _ in 0..7 {
        let trimmed = rest.trim_start();
        let (cell, tail) = split_cell(trimmed);
        columns.push(cell);
        rest = tail;
    }
    columns.push(rest.trim().to_owned());
    columns
}

/// A cell ends at two spaces (cells such as `3s ago` hold one).
fn split_cell(text: &str) -> (String, &str) {
    match text.find("  ") {
        Some(end) => (text[..end].to_owned(), &text[end..]),
        None => (text.to_owned(), ""),
    }
}

fn temp_file(text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "claude-relay-credential-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&path, text).expect("writing the credential file");
    path
}

#[tokio::test]
async fn add_stores_an_encrypted_account_that_serves_at_once() {
    let env = TestEnv::builder().accounts(Vec::new()).start().await;
    let credential = temp_file("sk-up-A\n");
    let mock_url = env.mock.url();
    let path = credential.to_string_lossy().into_owned();

    let added = env
        .accounts_cli(&[
            "add",
            "--id",
            "acct-a",
            "--name",
            "A",
            "--base-url",
            &mock_url,
            "--credential-file",
            &path,
            "--priority",
            "3",
            "--models",
            "claude-sonnet-4-5,claude-haiku-4-5",
            "--map",
            "claude-haiku-4-5=vendor-haiku",
            "--concurrency-limit",
            "2",
            "--daily-quota-usd",
            "0.5",
        ])
        .await
        .unwrap();
    let again = env
        .accounts_cli(&[
            "add",
            "--id",
            "acct-a",
            "--base-url",
            &mock_url,
            "--credential-file",
            &path,
        ])
        .await;
    let response = env.post_messages(K1, body(false)).await;
    env.until_no_account_leases("acct-a").await;
    let spent = env.usage_after(Subject::Account("acct-a"), 1).await;
    let show = env.accounts_cli(&["show", "acct-a"]).await.unwrap();
    let _ = std::fs::remove_file(&credential);

    assert_eq!(added.trim(), "account acct-a added");
    assert!(format!("{:#}", again.unwrap_err()).contains("exists"));
    assert_eq!(response.status, 200);
    assert_eq!(env.seen_by("A").len(), 1);
    assert!(!show.contains("sk-up-A"), "{show}");
    let quota = format!(
        "daily_quota        $0.50 (spent ${} today)",
        usd(spent.cost_nano_usd)
    );
    assert!(spent.cost_nano_usd > 0);
    assert!(show.contains(&quota), "{quota:?} in\n{show}");
    for expected in [
        "priority           3",
        "encrypted (AES-256-GCM), readable with this configuration",
        "models             claude-sonnet-4-5, claude-haiku-4-5",
        "model_map          claude-haiku-4-5 -> vendor-haiku",
        "concurrency_limit  2 (0 in flight)",
        "state              ready",
        "why                takes traffic",
    ] {
        assert!(show.contains(expected), "{expected:?} in\n{show}");
    }
}

#[tokio::test]
async fn list_says_why_each_account_takes_no_traffic() {
    let env = TestEnv::builder()
        .accounts(vec![
            crate::harness::env::account("A", 1),
            crate::harness::env::account("B", 2),
            crate::harness::env::account("C", 3),
            crate::harness::env::account("D", 4),
        ])
        .profile("sk-up-C", crate::harness::Profile::Ok)
        .profile("sk-up-D", crate::harness::Profile::Ok)
        .start()
        .await;
    env.mock.push_answers(
        "sk-up-A",
        vec![Answer::error(429, "rate_limit_error", "limited").header("retry-after", "120")],
    );
    env.mock.push_answers(
        "sk-up-B",
        vec![Answer::error(
            401,
            "authentication_error",
            "invalid x-api-key",
        )],
    );
    let served = env.post_messages(K1, body(false)).await;
    env.accounts_cli(&["disable", "acct-d"]).await.unwrap();

    let list = env.accounts_cli(&["list"]).await.unwrap();

    assert_eq!(served.status, 200);
    assert!(list.starts_with("ID "), "{list}");
    let a = line_of(&list, "acct-a");
    assert_eq!(a[4], "rate_limited", "{list}");
    assert!(a[5] == "2m00s" || a[5] == "1m59s", "{list}");
    assert!(
        a[7].starts_with("rate limited by the upstream (429); back by itself in"),
        "{list}"
    );
    let b = line_of(&list, "acct-b");
    assert_eq!(b[4], "unauthorized", "{list}");
    assert_eq!(b[5], "-");
    assert!(b[7].contains("401"), "{list}");
    assert!(
        b[7].contains("claude-relay accounts enable acct-b"),
        "{list}"
    );
    let c = line_of(&list, "acct-c");
    assert_eq!((c[4].as_str(), c[7].as_str()), ("ready", "takes traffic"));
    assert!(c[6].ends_with(" ago"), "{list}");
    let d = line_of(&list, "acct-d");
    assert_eq!(d[4], "disabled");
    assert_eq!(d[6], "never");
    assert!(d[7].starts_with("disabled by an operator"), "{list}");
}

#[tokio::test]
async fn set_priority_enable_and_remove_change_what_the_relay_does() {
    let env = TestEnv::builder().two_accounts().start().await;

    env.accounts_cli(&["disable", "acct-a"]).await.unwrap();
    let to_b = env.post_messages(K1, body(false)).await;
    env.accounts_cli(&["enable", "acct-a"]).await.unwrap();
    env.accounts_cli(&["set-priority", "acct-a", "9"])
        .await
        .unwrap();
    let removed = env.accounts_cli(&["remove", "acct-b"]).await.unwrap();
    let to_a = env.post_messages(K1, body(false)).await;
    let gone = env.accounts_cli(&["remove", "acct-b"]).await;
    let list = env.accounts_cli(&["list"]).await.unwrap();

    assert_eq!((to_b.status, to_a.status), (200, 200));
    assert_eq!(env.seen_by("B").len(), 1);
    assert_eq!(env.seen_by("A").len(), 1);
    assert_eq!(removed.trim(), "account acct-b removed");
    assert!(gone.is_err());
    assert_eq!(line_of(&list, "acct-a")[2], "9");
    assert!(!list.contains("acct-b"));
}

#[tokio::test]
async fn shipped_binary_lists_accounts_with_their_state() {
    let env = TestEnv::builder().two_accounts().start().await;
    env.mock.push_answers(
        "sk-up-A",
        vec![Answer::error(503, "api_error", "unavailable")],
    );
    let _ = env.post_messages(K1, body(false)).await;

    let output = relay_command(
        env.config.redis.url.expose_secret(),
        &env.config.redis.prefix,
    )
    .args(["accounts", "list"])
    .output()
    .expect("running claude-relay accounts list");

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let list = String::from_utf8_lossy(&output.stdout);
    let a = line_of(&list, "acct-a");
    assert_eq!(a[4], "unavailable");
    assert!(
        a[7].starts_with("the upstream is unavailable (503); back by itself in"),
        "{list}"
    );
    assert_eq!(line_of(&list, "acct-b")[4], "ready");
}
