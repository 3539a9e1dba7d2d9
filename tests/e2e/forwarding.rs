//! What crosses the relay: body bytes, headers by allow-list, the upstream's
//! own errors, and bodies as large as the API accepts.

use claude_relay::usage::record::Subject;
use mock_upstream::anthropic;
use reqwest::Method;
use serde_json::json;

use crate::harness::{Answer, K1, TestEnv, body, snapshot};

/// Case C07: the client's key and secrets never reach the upstream.
#[tokio::test]
async fn client_credentials_and_unknown_headers_never_reach_the_upstream() {
    let env = TestEnv::start().await;
    let request = env
        .messages(K1, body(false))
        .header("authorization", format!("Bearer {K1}"))
        .header("cookie", "s=1")
        .header("x-custom-secret", "CANARY-7")
        .header("x-forwarded-for", "203.0.113.9");

    let response = env.send(request).await;

    assert_eq!(response.status, 200);
    let seen = env.seen_by("A");
    assert_eq!(seen.len(), 1);
    let upstream = &seen[0];
    assert_eq!(upstream.header_all("x-api-key"), ["sk-up-A"]);
    assert!(upstream.header("authorization").is_none());
    assert!(upstream.header("cookie").is_none());
    assert!(upstream.header("x-custom-secret").is_none());
    assert!(upstream.header("x-forwarded-for").is_none());
    for (name, value) in &upstream.headers {
        assert!(!value.contains(&K1[3..]), "the relay key leaked in {name}");
    }
    assert!(!String::from_utf8_lossy(&upstream.body).contains(&K1[3..]));
    assert_eq!(
        upstream.header("host"),
        Some(env.mock.addr().to_string().as_str())
    );
    assert_eq!(
        upstream.header("content-length"),
        Some(upstream.body.len().to_string().as_str())
    );
    assert_eq!(&upstream.body[..], body(false).as_bytes());
}

/// Case C06: the client's betas arrive whole, however they were sent.
#[tokio::test]
async fn anthropic_beta_tokens_arrive_merged_and_unchanged() {
    let env = TestEnv::start().await;
    let one_line = env
        .request(Method::POST, "/v1/messages?beta=true")
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", K1)
        .header("user-agent", "claude-cli/2.0.0 (external, cli)")
        .header(
            "anthropic-beta",
            "context-1m-2025-08-07,interleaved-thinking-2025-05-14",
        )
        .body(body(false));
    let two_lines = env
        .request(Method::POST, "/v1/messages?beta=true")
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", K1)
        .header("user-agent", "claude-cli/2.0.0 (external, cli)")
        .header("anthropic-beta", "context-1m-2025-08-07")
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .body(body(false));
    let answer = || Answer::default().header("request-id", "req_test_2");
    env.mock.push_answers("sk-up-A", vec![answer(), answer()]);

    let responses = [env.send(one_line).await, env.send(two_lines).await];

    for response in &responses {
        assert_eq!(response.status, 200);
        assert_eq!(response.header("request-id"), Some("req_test_2"));
    }
    for upstream in env.seen_by("A") {
        assert_eq!(upstream.path, "/v1/messages");
        assert_eq!(upstream.query.as_deref(), Some("beta=true"));
        assert_eq!(upstream.header("anthropic-version"), Some("2023-06-01"));
        let betas = upstream.header_all("anthropic-beta");
        assert_eq!(betas.len(), 1, "one comma-joined line");
        let mut tokens: Vec<&str> = betas[0].split(',').map(str::trim).collect();
        tokens.sort_unstable();
        assert_eq!(
            tokens,
            ["context-1m-2025-08-07", "interleaved-thinking-2025-05-14"]
        );
    }
}

fn prompt_too_long() -> serde_json::Value {
    anthropic::error(
        "invalid_request_error",
        "prompt is too long: 210000 tokens > 200000 maximum",
    )
}

/// Case C05 a and b: an upstream 400 is the client's answer, verbatim, and
/// is not a reason to try another account.
#[tokio::test]
async fn upstream_400_is_relayed_verbatim_without_failover() {
    let env = TestEnv::builder().two_accounts().start().await;
    let answer = || {
        Answer::status(400)
            .header("request-id", "req_test_1")
            .json(prompt_too_long())
    };
    env.mock.push_answers("sk-up-A", vec![answer(), answer()]);

    for stream in [false, true] {
        let response = env.post_messages(K1, body(stream)).await;

        assert_eq!(response.status, 400);
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.header("request-id"), Some("req_test_1"));
        assert_eq!(response.body, prompt_too_long().to_string().as_bytes());
    }
    assert_eq!(env.seen_by("A").len(), 2);
    assert!(env.seen_by("B").is_empty());
    assert_eq!(env.settled_total(Subject::Key("key-1")).await.requests, 0);
}

fn large_body(size: usize) -> String {
    let skeleton = json!({"model": "claude-sonnet-4-5-20250929", "max_tokens": 64,
                          "messages": [{"role": "user", "content": ""}]})
    .to_string();
    let filler = "a".repeat(size - skeleton.len());
    skeleton.replace(r#""content":"""#, &format!(r#""content":"{filler}""#))
}

/// Case C08: long conversations fit; only bodies over 32 MiB are refused,
/// with a 413 the client actually receives.
#[tokio::test]
async fn bodies_up_to_32_mib_pass_and_larger_ones_get_413() {
    let env = TestEnv::builder()
        .k1(json!({"concurrency_limit": 5}))
        .start()
        .await;
    const MIB: usize = 1024 * 1024;

    for size in [3 * MIB, 20 * MIB] {
        let request = large_body(size);
        let response = env.post_messages(K1, request.clone()).await;
        assert_eq!(response.status, 200, "{size} bytes");
        let seen = env.seen_by("A");
        assert_eq!(seen.last().unwrap().body.len(), size);
        assert!(seen.last().unwrap().body == request.as_bytes());
    }

    let count = large_body(3 * MIB);
    let response = env
        .send(
            env.request(Method::POST, "/v1/messages/count_tokens")
                .header("content-type", "application/json")
                .header("x-api-key", K1)
                .body(count.clone()),
        )
        .await;
    assert_eq!(response.status, 200);
    assert!(env.seen_by("A").last().unwrap().body == count.as_bytes());

    env.mock.clear_journal();
    let counted_before = env.usage_after(Subject::Key("key-1"), 2).await;
    env.until_no_leases("key-1").await;
    let response = env.post_messages(K1, large_body(33 * MIB)).await;
    assert_eq!(response.status, 413);
    assert_eq!(response.json()["error"]["type"], "request_too_large");
    snapshot::error_body("body_too_large", &response);
    assert!(env.mock.journal().is_empty());
    assert_eq!(
        env.settled_total(Subject::Key("key-1")).await,
        counted_before
    );
    assert!(
        env.leases("key-1").await.is_empty(),
        "conc(K1) is unchanged"
    );
}

/// A chunked body without a length is cut off at the limit as well.
#[tokio::test]
async fn chunked_body_over_the_limit_gets_413() {
    let env = TestEnv::builder()
        .config(|config| config.body_limit_bytes = 1024 * 1024)
        .start()
        .await;
    let oversized = large_body(2 * 1024 * 1024).into_bytes();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = oversized
        .chunks(64 * 1024)
        .map(|chunk| Ok(chunk.to_vec()))
        .collect();
    let request = env
        .request(Method::POST, "/v1/messages")
        .header("content-type", "application/json")
        .header("x-api-key", K1)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)));

    let response = env.send(request).await;

    assert_eq!(response.status, 413);
    assert_eq!(response.error_code(), "body_too_large");
    assert!(env.mock.journal().is_empty());
}
