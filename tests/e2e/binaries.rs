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
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
            "seeded 1 accounts and 1 keys"
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

    let mut child = relay_command(&redis_url, &prefix)
        .arg("serve")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let relay = Running(child);
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .expect("the listening line")
        .to_owned();

    let response = reqwest::Client::new()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", K1)
        .header("content-type", "application/json")
        .body(body(true))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.starts_with("event: message_start"));
    assert!(text.contains("event: message_stop"));
    assert_eq!(mock.requests_for("sk-up-A").len(), 1);
    drop(relay);
}
