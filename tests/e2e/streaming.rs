//! Streams pass through as they come: first byte without delay, gzip
//! decoded, the upstream's own in-stream errors untouched, stalls ended.

use std::time::{Duration, Instant};

use claude_relay::usage::record::Subject;
use futures::StreamExt;
use mock_upstream::sse;

use crate::harness::{Answer, Chunk, K1, Lcg, SONNET, TestEnv, body};

const KEY: Subject<'static> = Subject::Key("key-1");

/// The first event reaches the client while the upstream is still
/// pausing: nothing waits for more data.
#[tokio::test]
async fn first_event_reaches_the_client_before_the_upstream_pause_ends() {
    let env = TestEnv::start().await;
    let stream = sse::standard(SONNET, 12, 0, 0, 42);
    let first_end = stream.find("\n\n").unwrap() + 2;
    env.mock.push_answers(
        "sk-up-A",
        vec![Answer::sse(vec![
            Chunk::text(&stream[..first_end]).pause_ms(1000),
            Chunk::text(&stream[first_end..]),
        ])],
    );
    let started = Instant::now();

    let response = env.messages(K1, body(true)).send().await.unwrap();
    let mut chunks = response.bytes_stream();
    let first = chunks.next().await.unwrap().unwrap();
    let first_at = started.elapsed();
    let mut rest = Vec::new();
    while let Some(chunk) = chunks.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }

    assert_eq!(&first[..], &stream.as_bytes()[..first_end]);
    assert!(
        first_at < Duration::from_millis(800),
        "first event after {first_at:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert_eq!(rest, &stream.as_bytes()[first_end..]);
}

#[tokio::test]
async fn gzip_answers_are_relayed_decoded_with_no_content_encoding() {
    let env = TestEnv::start().await;
    let stream = sse::standard(SONNET, 12, 0, 0, 42);
    let chunks = stream.split_inclusive("\n\n").map(Chunk::text).collect();
    env.mock
        .push_answers("sk-up-A", vec![Answer::sse(chunks).gzip()]);

    let response = env.post_messages(K1, body(true)).await;

    assert_eq!(response.status, 200);
    assert!(response.header("content-encoding").is_none());
    assert_eq!(response.text(), stream);
    assert_eq!(env.usage_after(KEY, 1).await.output_tokens, 42);
}

/// An `error` event from the upstream is relayed as it came, and the relay
/// adds nothing of its own after it.
#[tokio::test]
async fn upstream_in_stream_error_is_relayed_untouched() {
    let env = TestEnv::start().await;
    let standard = sse::standard(SONNET, 30, 0, 0, 9);
    let cut = standard.find("event: content_block_stop").unwrap();
    let stream = format!(
        "{}{}",
        &standard[..cut],
        sse::error("overloaded_error", "Overloaded")
    );
    env.mock
        .push_answers("sk-up-A", vec![Answer::sse(vec![Chunk::text(&stream)])]);

    let response = env.post_messages(K1, body(true)).await;

    assert_eq!(response.text(), stream);
    assert_eq!(response.text().matches("event: error").count(), 1);
    let counted = env.usage_after(KEY, 1).await;
    assert_eq!(counted.input_tokens, 30);
    assert_eq!(counted.output_tokens, 1);
}

#[tokio::test]
async fn stalled_stream_ends_with_an_error_event_after_the_idle_timeout() {
    let env = TestEnv::builder()
        .config(|config| config.upstream.idle_timeout = Duration::from_millis(300))
        .start()
        .await;
    let stream = sse::standard(SONNET, 12, 0, 0, 42);
    let first_end = stream.find("\n\n").unwrap() + 2;
    env.mock.push_answers(
        "sk-up-A",
        vec![Answer::sse(vec![
            Chunk::text(&stream[..first_end]).pause_ms(5000),
            Chunk::text(&stream[first_end..]),
        ])],
    );
    let started = Instant::now();

    let response = env.post_messages(K1, body(true)).await;

    assert!(started.elapsed() < Duration::from_secs(4));
    let text = response.text();
    assert!(text.starts_with(&stream[..first_end]));
    assert!(text[first_end..].starts_with("event: error\n"), "{text}");
    assert_eq!(env.usage_after(KEY, 1).await.input_tokens, 12);
}

/// The recorded transcripts under many chunkings: the same bytes reach the
/// client and the same usage is counted each time.
#[tokio::test]
async fn recorded_streams_under_random_chunkings_give_identical_bytes_and_usage() {
    let transcripts = [
        (include_str!("../../fixtures/sse/tool-use.sse"), 612, 74),
        (include_str!("../../fixtures/sse/thinking.sse"), 35, 187),
    ];
    let env = TestEnv::start().await;
    let mut random = Lcg(7);
    let rounds = 12;
    let mut expected_input = 0;
    let mut expected_output = 0;

    for round in 0..rounds {
        let (transcript, input, output) = transcripts[round % 2];
        let bytes = transcript.as_bytes();
        let mut cuts: Vec<usize> = (0..random.next(30))
            .map(|_| random.next(bytes.len()))
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut chunks = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            chunks.push(Chunk::bytes(bytes[start..cut].to_vec()));
            start = cut;
        }
        env.mock.push_answers("sk-up-A", vec![Answer::sse(chunks)]);

        let response = env.post_messages(K1, body(true)).await;

        assert_eq!(response.body, bytes, "round {round}");
        expected_input += input;
        expected_output += output;
    }

    let counted = env.usage_after(KEY, rounds as u64).await;
    assert_eq!(counted.requests, rounds as u64);
    assert_eq!(counted.input_tokens, expected_input);
    assert_eq!(counted.output_tokens, expected_output);
}
