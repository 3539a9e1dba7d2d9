//! The shipped binary, started as a harness would start it.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::{TestResult, body, client};

#[tokio::test]
async fn binary_prints_its_listening_line_and_answers_a_message_with_usage() -> TestResult {
    let profiles = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/mock-profiles.json"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-upstream"))
        .args(["--port", "0", "--profiles", profiles])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the mock-upstream binary")?;
    let stdout = child.stdout.take().context("the child's stdout")?;
    let mut lines = BufReader::new(stdout).lines();

    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .context("no listening line within 10 s")??
        .context("stdout closed before the listening line")?;
    let url = line.strip_prefix("listening on ").context(line.clone())?;
    let http = client()?;
    let ok = http
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", "sk-up-A")
        .json(&body(false))
        .send()
        .await?;
    let banned = http
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", "sk-up-X")
        .json(&body(false))
        .send()
        .await?;
    child.kill().await?;

    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(ok.status(), 200);
    let message: Value = ok.json().await?;
    assert!(
        message["usage"]["input_tokens"]
            .as_u64()
            .is_some_and(|tokens| tokens > 0)
    );
    assert_eq!(message["usage"]["output_tokens"], 10);
    assert_eq!(banned.status(), 403);
    Ok(())
}
