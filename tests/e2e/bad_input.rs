//! Input the relay must refuse cleanly: every refusal is a 4xx in the
//! Anthropic envelope, nothing reaches the upstream, nothing is counted.

use reqwest::header::HeaderValue;

use crate::harness::raw;
use crate::harness::{K1, K2, TestEnv, body, snapshot};

#[tokio::test]
async fn a_64_kib_header_gets_431_in_the_envelope() {
    let env = TestEnv::start().await;

    let response = env
        .send(
            env.messages(K1, body(false))
                .header("anthropic-beta", "b".repeat(64 * 1024)),
        )
        .await;

    assert_eq!(response.status, 431);
    snapshot::error_body("headers_too_large", &response);
    env.assert_untouched().await;
}

#[tokio::test]
async fn oversized_headers_are_refused_before_the_key_is_looked_at() {
    let env = TestEnv::start().await;
    let unknown = format!("cr_{}", "9".repeat(64));

    let response = env
        .send(
            env.messages(&unknown, body(false))
                .header("x-padding", "p".repeat(40 * 1024)),
        )
        .await;

    assert_eq!(response.status, 431);
    assert_eq!(response.error_code(), "headers_too_large");
}

/// A body declared far over the limit that then stalls gets its 413 once
/// the client goes quiet, not after the whole time allowed for draining.
#[tokio::test]
async fn an_oversized_body_that_stalls_gets_its_413_soon() {
    let env = TestEnv::start().await;
    let request = "POST /v1/messages HTTP/1.1\r\nhost: relay\r\ncontent-type: application/json\r\n\
                   content-length: 1000000000000000\r\n\r\n{}";

    let answer = raw::send_and_stall(
        env.addr(),
        request.as_bytes(),
        std::time::Duration::from_secs(10),
    )
    .await;

    let answer = answer.expect("an answer within 10 s");
    assert_eq!(answer.status, 413);
    assert_eq!(answer.error_code(), "body_too_large");
    env.assert_untouched().await;
}

/// HTTP/2 carries headers in its own frames with its own limit: a header
/// under the relay's limit is served, one over it gets the relay's 431
/// envelope, as over HTTP/1.1.
#[tokio::test]
async fn over_http2_the_header_limit_and_its_envelope_are_the_same() {
    let env = TestEnv::start().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    let send = |padding: usize| {
        h2.post(env.url("/v1/messages"))
            .header("x-api-key", K1)
            .header("anthropic-version", "2023-06-01")
            .header("content-type", "application/json")
            .header("x-padding", "p".repeat(padding))
            .body(body(false))
            .send()
    };

    let under = send(20 * 1024).await.unwrap();
    let over = send(40 * 1024).await.unwrap();

    assert_eq!(under.version(), reqwest::Version::HTTP_2);
    assert_eq!(under.status(), 200);
    assert_eq!(over.status(), 431);
    let over: serde_json::Value = over.json().await.unwrap();
    assert_eq!(over["error"]["code"], "headers_too_large", "{over}");
}

/// Past hyper's read buffer (about 400 KiB) or its 100 header lines, hyper
/// answers before the relay sees the request; such an answer cannot carry
/// the envelope, but it is still a 4xx and nothing is forwarded.
#[tokio::test]
async fn headers_past_what_hyper_reads_get_its_bare_431() {
    let env = TestEnv::start().await;
    let huge = format!("x-big: {}\r\n", "b".repeat(1024 * 1024));
    let many: String = (0..120).map(|n| format!("x-n{n}: v\r\n")).collect();

    for extra in [huge, many] {
        let request = format!(
            "POST /v1/messages HTTP/1.1\r\nhost: relay\r\nx-api-key: {K1}\r\n{extra}\
             content-length: 0\r\n\r\n"
        );

        let answer = raw::send_then_half_close(env.addr(), request.as_bytes()).await;

        let answer = answer.expect("hyper answers");
        assert_eq!(answer.status, 431);
        assert!(answer.body.is_empty());
    }
    env.assert_untouched().await;
}

#[tokio::test]
async fn a_body_cut_before_its_declared_length_gets_400_in_the_envelope() {
    let env = TestEnv::start().await;
    let whole = body(false);
    let request = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: relay\r\nx-api-key: {K1}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
        whole.len() + 100,
        whole
    );

    let answer = raw::send_then_half_close(env.addr(), request.as_bytes()).await;

    let answer = answer.expect("the relay answers a half-closed connection");
    assert_eq!(answer.status, 400);
    snapshot::error_body("invalid_body_truncated_body", &answer);
    env.assert_untouched().await;
}

#[tokio::test]
async fn a_header_value_that_is_not_utf8_gets_400_invalid_header() {
    let env = TestEnv::start().await;

    let response = env
        .send(env.messages(K1, body(false)).header(
            "anthropic-beta",
            HeaderValue::from_bytes(b"beta-\xff\xfe").unwrap(),
        ))
        .await;

    assert_eq!(response.status, 400);
    snapshot::error_body("invalid_header", &response);
    env.assert_untouched().await;
    for path in ["/v1/models", "/relay/key"] {
        let other_route = env
            .send(
                env.request(reqwest::Method::GET, path)
                    .header("x-api-key", K1)
                    .header("x-note", HeaderValue::from_bytes(b"\xff").unwrap()),
            )
            .await;
        assert_eq!(other_route.error_code(), "invalid_header", "{path}");
    }
}

#[tokio::test]
async fn a_user_agent_that_is_not_utf8_fails_a_client_restricted_key() {
    let env = TestEnv::start().await;

    let response = env
        .send(env.messages(K2, body(false)).header(
            "user-agent",
            HeaderValue::from_bytes(b"claude-cli/2.0.0 \xff").unwrap(),
        ))
        .await;

    assert_eq!(response.status, 403);
    assert_eq!(response.error_code(), "client_not_allowed");
    env.assert_untouched().await;
}

#[tokio::test]
async fn a_key_header_that_is_not_utf8_gets_401_invalid_api_key() {
    let env = TestEnv::start().await;

    let response = env
        .send(
            env.request(reqwest::Method::POST, "/v1/messages")
                .header("content-type", "application/json")
                .header(
                    "x-api-key",
                    HeaderValue::from_bytes(b"cr_\xff\xfe").unwrap(),
                )
                .body(body(false)),
        )
        .await;

    assert_eq!(response.status, 401);
    assert_eq!(response.error_code(), "invalid_api_key");
    env.assert_untouched().await;
}

/// A model id is a few dozen characters; a megabyte of one would land in
/// log lines, error details and usage records.
#[tokio::test]
async fn a_model_of_a_megabyte_gets_400_invalid_body_and_reaches_nothing() {
    let env = TestEnv::start().await;
    let model = format!("claude-sonnet-4-5{}", "x".repeat(1024 * 1024));
    let request = format!(r#"{{"model":"{model}","max_tokens":5,"messages":[]}}"#);

    let response = env.post_messages(K1, request).await;

    assert_eq!(response.status, 400);
    snapshot::error_body("invalid_body_model_too_long", &response);
    env.assert_untouched().await;
}

/// curl and other clients send `Expect: 100-continue` before a large body:
/// the refusal must come before the body is invited, not after it was
/// uploaded for nothing.
#[tokio::test]
async fn an_oversized_body_announced_with_expect_continue_is_refused_before_it_is_sent() {
    let env = TestEnv::start().await;
    let request = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: relay\r\nx-api-key: {K1}\r\n\
         content-type: application/json\r\nexpect: 100-continue\r\n\
         content-length: {}\r\n\r\n",
        64 * 1024 * 1024
    );

    let answer = raw::send_then_half_close(env.addr(), request.as_bytes()).await;

    let answer = answer.expect("the relay answers");
    assert_eq!(answer.status, 413);
    assert_eq!(answer.error_code(), "body_too_large");
    env.assert_untouched().await;
}
