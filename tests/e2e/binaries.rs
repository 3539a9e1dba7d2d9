//! The shipped `claude-relay` binary: `seed` and `serve` as an operator
//! runs them.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use claude_relay::store::Store;
use mock_upstream::{MockConfig, MockUpstream, Profile};

use crate::harness::{K1, body, redis};

const BIN: &str = env!("CARGO_BIN_EXE_claude-relay");

/// This test process's account key, the same for each command it runs.
fn account_key() -> &'static str {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        use secrecy::ExposeSecret;
        claude_relay::store::cipher::generate_key()
            .expect("a random account key")
            .expose_secret()
            .to_owned()
    })
}

pub fn relay_command(redis_url: &str, prefix: &str) -> Command {
    let mut command = Command::new(BIN);
    command
        .env("RELAY_REDIS_URL", redis_url)
        .env("RELAY_REDIS_PREFIX", prefix)
        .env("RELAY_LISTEN", "127.0.0.1:0")
        .env("RELAY_ACCOUNT_KEY", account_key())
        .env("RUST_LOG", "warn");
    command
}

/// Stops the child when dropped, whatever the test did.
pub struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits for the process to end by itself.
    pub async fn wait(mut self) -> std::process::ExitStatus {
        tokio::task::spawn_blocking(move || self.0.wait())
            .await
            .expect("the waiting thread")
            .expect("the relay's exit status")
    }
}

/// Starts `claude-relay serve` from `command` and returns it with its base
/// URL, read from the line it prints once it accepts connections.
pub async fn serve(mut command: Command) -> (Running, String) {
    let mut child = command
        .arg("serve")
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the relay binary");
    let stdout = child.stdout.take().expect("the relay's stdout");
    let relay = Running(child);
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .expect("the reading thread")
    .expect("the relay's first line");
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("not the listening line: {line:?}"))
        .to_owned();
    (relay, base)
}

/// A streamed Messages request with K1 to a relay started from the binary.
pub async fn post_stream(base: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", K1)
        .header("content-type", "application/json")
        .body(body(true))
        .send()
        .await
        .expect("sending to the relay binary")
}

fn seed_file(mock_url: &str) -> tempfile_path::TempSeed {
    tempfile_path::TempSeed::new(&format!(
        r#"{{"accounts":[{{"id":"acct-a","name":"A","kind":"console","base_url":"{mock_url}",
             "credential":"sk-up-A","auth_scheme":"x-api-key","priority":1,"schedulable":true}}],
            "keys":[{{"id":"key-1","name":"K1","key":"{K1}","disabled":false,
             "allowed_clients":[],"allowed_models":[]}}]}}"#
    ))
}

mod tempfile_path {
    /// A seed file in the system's temp folder, removed when dropped.
    pub struct TempSeed(pub std::path::PathBuf);

    impl TempSeed {
        pub fn new(text: &str) -> TempSeed {
            let path = std::env::temp_dir().join(format!(
                "claude-relay-seed-{}.json",
                uuid::Uuid::new_v4().simple()
            ));
            std::fs::write(&path, text).expect("writing the seed file");
            TempSeed(path)
        }
    }

    impl Drop for TempSeed {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[tokio::test]
async fn seed_command_loads_the_file_and_running_it_twice_is_harmless() {
    let redis_url = redis::redis_url();
    let prefix = format!("t-bin-{}:", uuid::Uuid::new_v4().simple());
    let seed = seed_file("http://127.0.0.1:9");

    for _ in 0..2 {
        let output = relay_command(&redis_url, &prefix)
            .arg("seed")
            .arg(&seed.0)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "seeded 1 account and 1 key"
        );
    }

    let mut config = claude_relay::Config::default();
    config.redis.url = redis_url.into();
    config.redis.prefix = prefix;
    let store = Store::connect(&config.redis).unwrap();
    let keys = store.list_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].key_sha256, claude_relay::auth::hash_key(K1, None));
    assert_eq!(store.list_accounts().await.unwrap().len(), 1);
}

#[tokio::test]
async fn seed_command_names_an_unset_variable() {
    let seed = tempfile_path::TempSeed::new(
        r#"{"accounts":[{"id":"a","name":"A","base_url":"${NOT_SET_ANYWHERE}","credential":"c"}]}"#,
    );

    let output = relay_command("redis://127.0.0.1:1", "t:")
        .arg("seed")
        .arg(&seed.0)
        .output()
        .unwrap();

    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("NOT_SET_ANYWHERE is not set"));
}

#[tokio::test]
async fn shipped_binary_serves_a_streamed_request_end_to_end() {
    let redis_url = redis::redis_url();
    let prefix = format!("t-bin-{}:", uuid::Uuid::new_v4().simple());
    let mock = MockUpstream::start(MockConfig::default().with_profile("sk-up-A", Profile::Ok))
        .await
        .unwrap();
    let seed = seed_file(&mock.url());
    let seeded = relay_command(&redis_url, &prefix)
        .arg("seed")
        .arg(&seed.0)
        .output()
        .unwrap();
    assert!(seeded.status.success());

    let (relay, base) = serve(relay_command(&redis_url, &prefix)).await;

    let response = post_stream(&base).await;

    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.starts_with("event: message_start"));
    assert!(text.contains("event: message_stop"));
    assert_eq!(mock.requests_for("sk-up-A").len(), 1);
    drop(relay);
}

#[tokio::test]
async fn usage_command_reports_the_numbers_the_relay_counted() {
    use claude_relay::usage::record::Subject;
    use secrecy::ExposeSecret;
    let env = crate::harness::TestEnv::start().await;
    env.mock
        .push_answers("sk-up-A", vec![crate::harness::case_c03_a()]);
    env.post_messages(K1, body(true)).await;
    env.usage_after(Subject::Key("key-1"), 1).await;
    let redis_url = env.config.redis.url.expose_secret().to_owned();

    let json = relay_command(&redis_url, &env.config.redis.prefix)
        .args(["usage", "--key", "key-1", "--json"])
        .output()
        .unwrap();
    let table = relay_command(&redis_url, &env.config.redis.prefix)
        .args(["usage", "--key", "key-1"])
        .output()
        .unwrap();
    let unknown = relay_command(&redis_url, &env.config.redis.prefix)
        .args(["usage", "--key", "key-nope"])
        .output()
        .unwrap();
    let unused_model = relay_command(&redis_url, &env.config.redis.prefix)
        .args(["usage", "--model", "claude-nope"])
        .output()
        .unwrap();
    let ages_ago = relay_command(&redis_url, &env.config.redis.prefix)
        .args(["usage", "--since", "0001-01-01"])
        .output()
        .unwrap();

    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let sections: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let rows = sections[0]["rows"].as_array().unwrap();
    let total = rows.iter().find(|row| row["period"] == "total").unwrap();
    assert_eq!(total["requests"], 1);
    assert_eq!(total["cache_read_input_tokens"], 2455);
    assert_eq!(total["cost_nano_usd"], 1_093_500);
    assert!(
        rows.iter()
            .any(|row| row["period"].as_str().unwrap().starts_with("day:"))
    );
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("key key-1\n"), "{table}");
    assert!(table.contains("0.0010935"), "{table}");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no key with id key-nope"));
    assert!(!unused_model.status.success());
    let said = String::from_utf8_lossy(&unused_model.stderr);
    assert!(
        said.contains("no usage recorded for the model claude-nope; models with usage: "),
        "{said}"
    );
    assert!(!ages_ago.status.success());
    let said = String::from_utf8_lossy(&ages_ago.stderr);
    assert!(said.contains("more than 400 days"), "{said}");
}

/// SIGTERM stops new work but lets a running stream finish.
#[tokio::test]
async fn sigterm_lets_the_running_stream_finish_then_exits() {
    use futures::StreamExt;
    let redis_url = redis::redis_url();
    let prefix = format!("t-bin-{}:", uuid::Uuid::new_v4().simple());
    let mock = MockUpstream::start(MockConfig::default().with_profile("sk-up-A", Profile::Ok))
        .await
        .unwrap();
    let deltas: Vec<String> = (0..8).map(|i| format!("part {i} ")).collect();
    mock.push_answers(
        "sk-up-A",
        vec![crate::harness::Answer::sse_standard(
            mock_upstream::SseStandard {
                deltas,
                delta_pause_ms: 100,
                ..Default::default()
            },
        )],
    );
    let seed = seed_file(&mock.url());
    assert!(
        relay_command(&redis_url, &prefix)
            .arg("seed")
            .arg(&seed.0)
            .output()
            .unwrap()
            .status
            .success()
    );
    let (relay, base) = serve(relay_command(&redis_url, &prefix)).await;
    let pid = relay.pid();

    let response = post_stream(&base).await;
    let mut stream = response.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let mut text = String::from_utf8_lossy(&first).into_owned();
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let status = relay.wait().await;

    assert!(killed.success());
    assert!(text.contains("part 7"), "the stream ran to its end: {text}");
    assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn shipped_binary_manages_a_key_and_prints_it_only_when_issued() {
    let redis_url = redis::redis_url();
    let prefix = format!("t-bin-{}:", uuid::Uuid::new_v4().simple());
    let run = |args: &[&str]| {
        let output = relay_command(&redis_url, &prefix)
            .arg("keys")
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), stdout, stderr)
    };
    let issued = |stdout: &str| -> String {
        let view: serde_json::Value = serde_json::from_str(stdout).unwrap();
        view["key"].as_str().unwrap().to_owned()
    };

    let (ok, created, _) = run(&["create", "--name", "Ops", "--id", "key-ops", "--json"]);
    assert!(ok, "{created}");
    let first = issued(&created);
    let (_, list, _) = run(&["list"]);
    let (_, disabled, _) = run(&["disable", "key-ops"]);
    let (_, shown, _) = run(&["show", "key-ops", "--json"]);
    let (_, rotated, _) = run(&["rotate", "key-ops", "--json"]);
    let second = issued(&rotated);

    assert!(
        list.lines().any(|line| line.starts_with("key-ops ")),
        "{list}"
    );
    assert_eq!(disabled, "disabled key key-ops\n");
    let view: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(view["status"], "disabled");
    for output in [&list, &disabled, &shown] {
        assert!(!output.contains(&first[3..]));
    }
    assert_ne!(first, second);
    let mut config = claude_relay::Config::default();
    config.redis.url = redis_url.clone().into();
    config.redis.prefix = prefix.clone();
    let store = Store::connect(&config.redis).unwrap();
    let record = store.key_by_id("key-ops").await.unwrap().unwrap();
    assert_eq!(
        record.key_sha256,
        claude_relay::auth::hash_key(&second, None)
    );
    assert!(record.disabled, "rotation keeps the settings");

    let (deleted_ok, _, _) = run(&["delete", "key-ops"]);
    let (shown_ok, _, missing) = run(&["show", "key-ops"]);
    assert!(deleted_ok);
    assert!(!shown_ok);
    assert!(missing.contains("no key with id key-ops"), "{missing}");
}

#[tokio::test]
async fn limits_show_prints_a_keys_leases_window_and_budgets() {
    use claude_relay::usage::record::Subject;
    use secrecy::ExposeSecret;
    let env = crate::harness::TestEnv::builder()
        .key(
            serde_json::json!({"id": "key-s", "name": "S", "key": "cr_show",
            "concurrency_limit": 2, "daily_budget_usd": 1, "total_budget_usd": 5,
            "rate_limit": {"window_secs": 2_592_000, "requests": 10}}),
        )
        .config(|config| config.usage_utc_offset = crate::harness::midday_offset())
        .start()
        .await;
    env.post_messages("cr_show", body(false)).await;
    env.usage_after(Subject::Key("key-s"), 1).await;
    env.until_no_leases("key-s").await;
    let redis_url = env.config.redis.url.expose_secret().to_owned();
    let show = |args: &[&str]| {
        relay_command(&redis_url, &env.config.redis.prefix)
            .args(["limits", "show"])
            .args(args)
            .env(
                "RELAY_USAGE_UTC_OFFSET",
                offset_text(env.config.usage_utc_offset),
            )
            .output()
            .unwrap()
    };

    let text = show(&["key-s"]);
    let json = show(&["key-s", "--json"]);
    let unknown = show(&["key-nope"]);

    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.starts_with("key key-s (S)\n"), "{text}");
    assert!(text.contains("\ntoday           1 requests, "), "{text}");
    assert!(text.contains("concurrency     0 of 2 in use"), "{text}");
    assert!(text.contains("  requests      1 of 10\n"), "{text}");
    assert!(text.contains("daily budget    $"), "{text}");
    assert!(text.contains("total budget    $"), "{text}");
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["id"], "key-s");
    assert_eq!(json["leases"], serde_json::json!([]));
    assert_eq!(json["usage"]["today"]["requests"], 1);
    assert_eq!(
        json["limits"]["daily_budget"]["limit_nano_usd"],
        1_000_000_000u64
    );
    assert_eq!(
        json["limits"]["daily_budget"]["used_nano_usd"],
        json["usage"]["today"]["cost_nano_usd"]
    );
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no key with id key-nope"));
}

fn offset_text(offset: time::UtcOffset) -> String {
    let (hours, minutes, _) = offset.as_hms();
    let sign = if offset.is_negative() { '-' } else { '+' };
    format!(
        "{sign}{:02}:{:02}",
        hours.unsigned_abs(),
        minutes.unsigned_abs()
    )
}
