//! What clients, upstreams and Redis do wrong, and what the relay must
//! still do: answer, count each answer once, and let go of what it holds.

use std::time::Duration;

use claude_relay::usage::record::Subject;
use futures::StreamExt;
use secrecy::ExposeSecret;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::binaries::{post_stream, relay_command, serve};
use crate::harness::proxy::FlakyProxy;
use crate::harness::{Answer, K1, TestEnv, body, snapshot};

/// An upstream's `retry-after` too large for a duration once made the
/// request's task panic: the client's connection closed without an answer.
#[tokio::test]
async fn a_429_whose_retry_after_is_past_any_duration_still_gets_an_answer() {
    let env = TestEnv::start().await;
    env.mock.push_answers(
        "sk-up-A",
        vec![
            Answer::error(429, "rate_limit_error", "slow down")
                .header("retry-after", "99999999999999999999"),
        ],
    );

    let response = env.post_messages(K1, body(false)).await;

    assert!([429, 500].contains(&response.status), "{response:?}");
    assert_eq!(response.json()["type"], "error");
}

/// A client that stops sending its body half way gets an answer in time
/// instead of holding the connection for ever.
#[tokio::test]
async fn a_body_that_stops_arriving_gets_408_request_timeout() {
    let env = TestEnv::builder()
        .config(|config| config.client_timeout = Duration::from_secs(1))
        .start()
        .await;
    let request = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: relay\r\nx-api-key: {K1}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"model\":"
    );
    let mut stream = TcpStream::connect(env.addr()).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();

    let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;

    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let response = crate::harness::TestResponse {
        status: 408,
        headers: head_of(&answer),
        body: bytes::Bytes::copy_from_slice(body.as_bytes()),
    };
    snapshot::error_body("request_timeout", &response);
    env.assert_untouched().await;
}

/// Connections that send nothing, or trickle their headers, are closed
/// after the client timeout: otherwise they hold a socket each, for ever,
/// and enough of them leave the relay without file descriptors.
#[tokio::test]
async fn silent_and_trickling_connections_are_closed_after_the_client_timeout() {
    let env = TestEnv::builder()
        .config(|config| config.client_timeout = Duration::from_secs(1))
        .start()
        .await;
    let mut silent = TcpStream::connect(env.addr()).await.unwrap();
    let mut trickling = TcpStream::connect(env.addr()).await.unwrap();
    trickling
        .write_all(b"POST /v1/messages HTTP/1.1\r\nhost: relay\r\n")
        .await
        .unwrap();

    let started = tokio::time::Instant::now();
    let from_silent = read_until_closed(&mut silent, Duration::from_secs(10)).await;
    let from_trickling = read_until_closed(&mut trickling, Duration::from_secs(10)).await;

    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(from_silent.is_empty());
    assert!(!String::from_utf8_lossy(&from_trickling).starts_with("HTTP/1.1 2"));
}

/// The client timeout is about the client's request, not the answer: a
/// stream quiet for longer than it, and a kept-alive connection between
/// requests, are left alone.
#[tokio::test]
async fn a_quiet_stream_longer_than_the_client_timeout_is_not_cut() {
    let env = TestEnv::builder()
        .config(|config| config.client_timeout = Duration::from_secs(1))
        .start()
        .await;
    env.mock.push_answers(
        "sk-up-A",
        vec![Answer::sse_standard(mock_upstream::SseStandard {
            deltas: vec!["slow ".into(), "answer".into()],
            delta_pause_ms: 1_500,
            ..Default::default()
        })],
    );

    let response = env.post_messages(K1, body(true)).await;

    assert_eq!(response.status, 200);
    assert!(response.text().contains("event: message_stop"));
}

/// Ids are kept in Redis names with every character outside a small set
/// replaced: `a b` and `a_b` would share usage, leases and budgets.
#[tokio::test]
async fn a_key_id_with_characters_redis_names_do_not_keep_is_refused() {
    let env = TestEnv::start().await;

    let spaced = env
        .keys_cli(&["create", "--name", "K", "--id", "a b"])
        .await;
    let braced = env
        .keys_cli(&["create", "--name", "K", "--id", "{key:x}"])
        .await;
    let plain = env
        .keys_cli(&["create", "--name", "K", "--id", "a_b"])
        .await;

    assert!(spaced.is_err());
    assert!(braced.is_err());
    assert!(plain.is_ok(), "{plain:?}");
}

/// Redis goes away while a stream runs and comes back after it ended: the
/// answer is counted once, and its lease is released without waiting for
/// it to expire.
#[tokio::test]
async fn an_answer_that_ends_while_redis_is_away_is_counted_once_when_it_returns() {
    let proxy = FlakyProxy::start(&crate::harness::redis::redis_url()).await;
    let proxy_url = proxy.url();
    let env = TestEnv::builder()
        .k1(json!({"concurrency_limit": 1}))
        .config(move |config| config.redis.url = proxy_url.into())
        .start()
        .await;
    env.mock.push_answers(
        "sk-up-A",
        vec![Answer::sse_standard(mock_upstream::SseStandard {
            input: 7,
            output: 30,
            deltas: (0..10).map(|i| format!("part {i} ")).collect(),
            delta_pause_ms: 100,
            ..Default::default()
        })],
    );

    let response = env.messages(K1, body(true)).send().await.unwrap();
    let mut stream = response.bytes_stream();
    let mut text = String::from_utf8_lossy(&stream.next().await.unwrap().unwrap()).into_owned();
    proxy.set_up(false);
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    proxy.set_up(true);
    until_redis_answers(&env).await;

    assert!(text.contains("event: message_stop"), "{text}");
    let counted = env.usage_after(Subject::Key("key-1"), 1).await;
    assert_eq!(counted.requests, 1);
    assert_eq!(counted.input_tokens, 7);
    assert_eq!(counted.output_tokens, 30);
    env.until_no_leases("key-1").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.settled_total(Subject::Key("key-1")).await.requests, 1);
}

/// Streams still running when the shutdown grace is over end with an
/// `error` event (not a cut connection), and are counted and release their
/// leases before the process exits.
#[tokio::test]
async fn streams_outliving_the_shutdown_grace_are_ended_counted_and_released() {
    let env = TestEnv::builder()
        .k1(json!({"concurrency_limit": 2}))
        .start()
        .await;
    let answer = || {
        Answer::sse_standard(mock_upstream::SseStandard {
            input: 5,
            output: 99,
            deltas: (0..60).map(|i| format!("part {i} ")).collect(),
            delta_pause_ms: 100,
            ..Default::default()
        })
    };
    env.mock.push_answers("sk-up-A", vec![answer(), answer()]);
    let redis_url = env.config.redis.url.expose_secret().to_owned();
    let account_key = env.config.secrets.account_key.as_ref().unwrap();
    let mut command = relay_command(&redis_url, &env.config.redis.prefix);
    command
        .env("RELAY_ACCOUNT_KEY", account_key.expose_secret())
        .env("RELAY_SHUTDOWN_GRACE_SECS", "1");
    let (relay, base) = serve(command).await;
    let pid = relay.pid();
    let mut streams = Vec::new();
    for _ in 0..2 {
        let response = post_stream(&base).await;
        let mut stream = response.bytes_stream();
        stream.next().await.unwrap().unwrap();
        streams.push(stream);
    }

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let mut endings = Vec::new();
    for mut stream in streams {
        let mut text = String::new();
        while let Some(chunk) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.expect("no cut connection")));
        }
        endings.push(text);
    }
    let status = relay.wait().await;

    assert!(killed.success());
    assert!(status.success(), "exit status {status}");
    for text in endings {
        assert!(!text.contains("message_stop"), "{text}");
        assert!(text.contains("event: error\ndata: {"), "{text}");
    }
    let counted = env.total(Subject::Key("key-1")).await;
    assert_eq!(counted.requests, 2);
    assert_eq!(counted.input_tokens, 10);
    assert!(env.leases("key-1").await.is_empty());
}

/// Waits until the relay's connection and the test's answer again after an
/// outage (each notices it on its next call, which fails, and reconnects).
async fn until_redis_answers(env: &TestEnv) {
    use claude_relay::usage::record::Period;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while env.store.ping().await.is_err()
        || env
            .recorder
            .read(Subject::Key("key-1"), &[Period::Total])
            .await
            .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Redis did not come back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads until the peer closes (or resets) the connection, at most `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the relay kept the connection open");
    received
}

fn head_of(answer: &str) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    let head = &answer[..answer.find("\r\n\r\n").unwrap_or(answer.len())];
    for line in head.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            headers.append(
                reqwest::header::HeaderName::from_bytes(name.trim().as_bytes())
                    .expect("a header name"),
                reqwest::header::HeaderValue::from_str(value.trim()).expect("a header value"),
            );
        }
    }
    headers
}

/// A Redis outage longer than the lease TTL lets the leases of running
/// streams expire. Each is put back once Redis returns (they are in
/// flight, so they count) and the key's and the account's limits hold:
/// new requests are refused until the streams end, and each lease is
/// released once when its stream does.
#[tokio::test]
async fn leases_that_expire_during_a_redis_outage_are_put_back_while_their_streams_run() {
    let proxy = FlakyProxy::start(&crate::harness::redis::redis_url()).await;
    let proxy_url = proxy.url();
    let mut account = crate::harness::env::account("A", 1);
    account["concurrency_limit"] = json!(3);
    let env = TestEnv::builder()
        .k1(json!({"concurrency_limit": 3}))
        .accounts(vec![account])
        .config(move |config| {
            config.redis.url = proxy_url.into();
            config.limits.lease_ttl = Duration::from_secs(3);
        })
        .start()
        .await;
    let long_stream = || {
        Answer::sse_standard(mock_upstream::SseStandard {
            deltas: (0..120).map(|i| format!("part {i} ")).collect(),
            delta_pause_ms: 100,
            ..Default::default()
        })
    };
    env.mock
        .push_answers("sk-up-A", vec![long_stream(), long_stream(), long_stream()]);
    let mut streams = Vec::new();
    for _ in 0..3 {
        let response = env.messages(K1, body(true)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let mut stream = response.bytes_stream();
        stream.next().await.unwrap().unwrap();
        streams.push(stream);
    }
    let reading = tokio::spawn(async move {
        let mut texts = Vec::new();
        for mut stream in streams {
            let mut text = String::new();
            while let Some(chunk) = stream.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            }
            texts.push(text);
        }
        texts
    });

    proxy.set_up(false);
    tokio::time::sleep(Duration::from_secs(6)).await;
    proxy.set_up(true);
    until_redis_answers(&env).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while env.leases("key-1").await.len() < 3 || env.account_leases("acct-a").await.len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "leases not put back: key {:?}, account {:?}",
            env.leases("key-1").await,
            env.account_leases("acct-a").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut refused = Vec::new();
    for _ in 0..3 {
        refused.push(env.post_messages(K1, body(false)).await);
    }
    let texts = reading.await.unwrap();

    for answer in &refused {
        assert_eq!(answer.status, 429, "{answer:?}");
        assert_eq!(answer.error_code(), "concurrency_limit");
    }
    for text in texts {
        assert!(text.contains("event: message_stop"), "{text}");
    }
    assert_eq!(env.mock.journal().len(), 3);
    env.until_no_leases("key-1").await;
    env.until_no_account_leases("acct-a").await;
    assert_eq!(env.post_messages(K1, body(false)).await.status, 200);
}

/// Redis stalls (a paused Redis keeps the connection and runs what it
/// received once it resumes): requests refused with 503 in the meantime
/// are not forwarded, so their admissions, which Redis runs late, are
/// taken back and use up nothing of the key's rate window or leases.
#[tokio::test]
async fn requests_refused_while_redis_stalls_use_up_none_of_the_keys_rate_window() {
    let proxy = FlakyProxy::start(&crate::harness::redis::redis_url()).await;
    let proxy_url = proxy.url();
    let env = TestEnv::builder()
        .k1(json!({"concurrency_limit": 5,
                   "rate_limit": {"window_secs": 2_592_000, "requests": 5}}))
        .config(move |config| {
            config.redis.url = proxy_url.into();
            config.redis.response_timeout = Duration::from_millis(300);
            config.limits.key_cache_ttl = Duration::from_secs(3600);
        })
        .start()
        .await;
    // Caches the key and loads the admission script (a stalled `EVALSHA`
    // of a script Redis does not know would only answer `NOSCRIPT`).
    assert_eq!(env.post_messages(K1, body(false)).await.status, 200);

    proxy.stall(true);
    let mut during = Vec::new();
    for _ in 0..3 {
        during.push(env.post_messages(K1, body(false)).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.stall(false);
    let own_limits = || async {
        let own = env
            .send(
                env.request(reqwest::Method::GET, "/relay/key")
                    .header("x-api-key", K1),
            )
            .await;
        assert_eq!(own.status, 200, "{own:?}");
        own.json()["limits"].clone()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let limits = own_limits().await;
        if limits["rate_limit"]["requests"]["used"] == 1 && limits["concurrency"]["in_use"] == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refused requests still count: {limits}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut after = Vec::new();
    for _ in 0..5 {
        after.push(env.post_messages(K1, body(false)).await);
    }

    for answer in &during {
        assert_eq!(answer.status, 503, "{answer:?}");
        assert_eq!(answer.error_code(), "store_unavailable");
    }
    let statuses: Vec<u16> = after.iter().map(|answer| answer.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 429]);
    assert_eq!(after[4].error_code(), "rate_limit");
    assert_eq!(env.mock.journal().len(), 5);
}
