//! Scripted bodies on the wire: chunking, pauses, cuts and gzip.

use std::io::Read;
use std::time::{Duration, Instant};

use flate2::read::GzDecoder;
use futures::StreamExt;
use mock_upstream::{Answer, Chunk, SseStandard, sse};
use serde_json::json;

use crate::support::{TestResult, header, reads, spawn};

fn gunzip(bytes: &[u8]) -> std::io::Result<String> {
    let mut text = String::new();
    GzDecoder::new(bytes).read_to_string(&mut text)?;
    Ok(text)
}

#[tokio::test]
async fn sse_chunks_arrive_as_separate_reads_with_the_pause_between_them() -> TestResult {
    let env = spawn().await?;
    let pause = Duration::from_millis(300);
    let chunks = vec![
        Chunk::text("event: a\n").pause_ms(300),
        Chunk::text("data: {}\n\n"),
    ];
    env.mock.push_answers("sk-up-A", vec![Answer::sse(chunks)]);

    let response = env.messages("sk-up-A", true).await?;
    let started = Instant::now();
    let mut body = response.bytes_stream();
    let first = body.next().await.transpose()?;
    let first_at = started.elapsed();
    let second = body.next().await.transpose()?;
    let second_at = started.elapsed();

    assert_eq!(first.as_deref(), Some(&b"event: a\n"[..]));
    assert!(first_at < pause, "first chunk after {first_at:?}");
    assert_eq!(second.as_deref(), Some(&b"data: {}\n\n"[..]));
    assert!(
        second_at - first_at >= pause - Duration::from_millis(50),
        "{second_at:?}"
    );
    assert!(body.next().await.is_none());
    Ok(())
}

#[tokio::test]
async fn chunks_split_inside_events_and_characters_reach_the_client_byte_for_byte() -> TestResult {
    let env = spawn().await?;
    let stream =
        sse::standard("claude-sonnet-4-5-20250929", 12, 0, 0, 42).replace("Hello", "héllo");
    let bytes = stream.as_bytes();
    let split_in_e_acute = stream.find('é').map_or(0, |at| at + 1);
    let split_in_usage = stream.find("\"output_tokens\":42").map_or(0, |at| at + 9);
    let writes = [
        &bytes[..split_in_e_acute],
        &bytes[split_in_e_acute..split_in_usage],
        &bytes[split_in_usage..],
    ];
    let chunks = writes
        .iter()
        .map(|write| Chunk::bytes(write.to_vec()).pause_ms(20))
        .collect();
    env.mock.push_answers("sk-up-A", vec![Answer::sse(chunks)]);

    let response = env.messages("sk-up-A", true).await?;

    assert_eq!(response.bytes().await?, bytes);
    Ok(())
}

#[tokio::test]
async fn cut_after_bytes_gives_the_client_an_error_after_exactly_that_many_bytes() -> TestResult {
    let env = spawn().await?;
    let standard = SseStandard {
        deltas: vec!["one".into(), "two".into(), "three".into()],
        ..SseStandard::default()
    };
    env.mock.push_answers(
        "sk-up-A",
        vec![
            Answer::sse_standard(standard).cut_after_bytes(300),
            Answer::default().cut_after_bytes(20),
        ],
    );

    let (stream_reads, stream_failed) = reads(env.messages("sk-up-A", true).await?).await;
    let (json_reads, json_failed) = reads(env.messages("sk-up-A", false).await?).await;

    assert!(stream_failed, "the cut stream ended cleanly");
    assert_eq!(
        stream_reads.iter().map(|read| read.len()).sum::<usize>(),
        300
    );
    assert!(json_failed, "the cut JSON body ended cleanly");
    assert_eq!(json_reads.concat(), &br#"{"id":"msg_mock_2","type"#[..20]);
    Ok(())
}

#[tokio::test]
async fn gzip_json_body_decodes_back_to_the_same_text() -> TestResult {
    let env = spawn().await?;
    let body = json!({"type": "message", "text": "x".repeat(2000)});
    env.mock.push_answers(
        "sk-up-A",
        vec![Answer::status(200).json(body.clone()).gzip(); 2],
    );
    let raw_client = reqwest::Client::builder().no_proxy().no_gzip().build()?;

    let decoded = env.messages("sk-up-A", false).await?.text().await?;
    let raw = raw_client
        .post(env.url("/v1/messages"))
        .header("x-api-key", "sk-up-A")
        .send()
        .await?;

    assert_eq!(decoded, body.to_string());
    assert_eq!(header(&raw, "content-encoding"), "gzip");
    let compressed = raw.bytes().await?;
    assert!(compressed.len() < 200, "{} bytes", compressed.len());
    assert_eq!(gunzip(&compressed)?, body.to_string());
    Ok(())
}

#[tokio::test]
async fn gzip_stream_still_streams_and_decodes_back_to_the_same_text() -> TestResult {
    let env = spawn().await?;
    let chunks = vec![
        Chunk::text("event: a\ndata: {}\n\n").pause_ms(300),
        Chunk::text("event: b\n\n"),
    ];
    env.mock
        .push_answers("sk-up-A", vec![Answer::sse(chunks).gzip()]);
    let raw_client = reqwest::Client::builder().no_proxy().no_gzip().build()?;

    let response = raw_client
        .post(env.url("/v1/messages"))
        .header("x-api-key", "sk-up-A")
        .send()
        .await?;
    let started = Instant::now();
    let mut body = response.bytes_stream();
    let first = body.next().await.transpose()?.unwrap_or_default();
    let first_at = started.elapsed();
    let mut all = first.to_vec();
    while let Some(read) = body.next().await {
        all.extend_from_slice(&read?);
    }

    assert!(
        first_at < Duration::from_millis(300),
        "first chunk after {first_at:?}"
    );
    let mut partial = String::new();
    let partial_read = GzDecoder::new(&first[..]).read_to_string(&mut partial);
    assert!(
        partial_read.is_err(),
        "the first chunk already held the whole stream"
    );
    assert_eq!(partial, "event: a\ndata: {}\n\n");
    assert_eq!(gunzip(&all)?, "event: a\ndata: {}\n\nevent: b\n\n");
    Ok(())
}
