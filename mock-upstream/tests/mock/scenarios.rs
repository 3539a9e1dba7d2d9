//! Scripted answers: queued per credential, consumed one per request.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mock_upstream::{Answer, sse};
use serde_json::{Value, json};

use crate::support::{MODEL, TestResult, body, client, header, spawn};

fn rate_limited() -> Value {
    json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limited"}})
}

#[tokio::test]
async fn scripted_answers_are_consumed_in_order_then_the_profile_answers() -> TestResult {
    let env = spawn().await?;
    env.mock.push_answers(
        "sk-up-A",
        vec![
            Answer::status(429)
                .header("retry-after", "20")
                .json(rate_limited()),
            Answer::error(529, "overloaded_error", "Overloaded"),
            Answer::default(),
        ],
    );

    let first = env.messages("sk-up-A", false).await?;
    let second = env.messages("sk-up-A", false).await?;
    let third = env.messages("sk-up-A", false).await?;
    let fourth = env.messages("sk-up-A", false).await?;

    assert_eq!(first.status(), 429);
    assert_eq!(header(&first, "retry-after"), "20");
    assert_eq!(header(&first, "content-type"), "application/json");
    assert_eq!(first.text().await?, rate_limited().to_string());
    assert_eq!(second.status(), 529);
    assert_eq!(third.status(), 200);
    assert_eq!(fourth.status(), 200);
    assert!(env.mock.pending_answers().is_empty());
    Ok(())
}

#[tokio::test]
async fn answer_without_body_keeps_the_profile_body_under_its_status_headers_and_delay()
-> TestResult {
    let env = spawn().await?;
    let answer = Answer::status(201)
        .header("Request-Id", "req_test_2")
        .header("anthropic-ratelimit-unified-reset", "1700000000")
        .delay_ms(300);
    env.mock.push_answers("sk-up-A", vec![answer]);
    let started = Instant::now();

    let response = env.messages("sk-up-A", false).await?;

    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(response.status(), 201);
    assert_eq!(header(&response, "request-id"), "req_test_2");
    assert_eq!(
        header(&response, "anthropic-ratelimit-unified-reset"),
        "1700000000"
    );
    assert_eq!(response.json::<Value>().await?["type"], "message");
    Ok(())
}

#[tokio::test]
async fn scripted_answer_serves_a_credential_that_has_no_profile() -> TestResult {
    let env = spawn().await?;
    env.mock.push_answers(
        "sk-up-new",
        vec![Answer::status(200).json(json!({"ok": true}))],
    );

    let scripted = env.messages("sk-up-new", false).await?;
    let unscripted = env.messages("sk-up-new", false).await?;

    assert_eq!(scripted.status(), 200);
    assert_eq!(scripted.json::<Value>().await?, json!({"ok": true}));
    assert_eq!(unscripted.status(), 401);
    Ok(())
}

#[tokio::test]
async fn scenarios_posted_over_http_are_queued_and_delete_clears_them() -> TestResult {
    let env = spawn().await?;
    let scenario = json!({"credential": "sk-up-A", "answers": [
        {"status": 500, "text": "boom", "headers": {"content-type": "text/html"}},
        {"sse": [{"text": "event: ping\n"}, {"b64": "ZGF0YToge30KCg==", "pause_ms": 1}]},
        {},
    ]});

    let queued: Value = env
        .post("/__mock/scenarios", "")
        .json(&scenario)
        .send()
        .await?
        .json()
        .await?;
    let pending: BTreeMap<String, usize> =
        env.get("/__mock/scenarios").send().await?.json().await?;
    let first = env.messages("sk-up-A", false).await?;
    let second = env.messages("sk-up-A", false).await?;
    let cleared = env.delete("/__mock/scenarios").send().await?;
    let after_clear = env.messages("sk-up-A", false).await?;

    assert_eq!(queued, json!({"credential": "sk-up-A", "queued": 3}));
    assert_eq!(pending, BTreeMap::from([("sk-up-A".to_owned(), 3)]));
    assert_eq!(first.status(), 500);
    assert_eq!(header(&first, "content-type"), "text/html");
    assert_eq!(first.text().await?, "boom");
    assert_eq!(
        header(&second, "content-type"),
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(second.text().await?, "event: ping\ndata: {}\n\n");
    assert_eq!(cleared.status(), 204);
    assert!(env.mock.pending_answers().is_empty());
    assert_eq!(after_clear.json::<Value>().await?["type"], "message");
    Ok(())
}

#[tokio::test]
async fn scenario_with_two_bodies_is_refused() -> TestResult {
    let env = spawn().await?;
    let scenario = json!({"credential": "sk-up-A", "answers": [{"json": {}, "text": "x"}]});

    let response = env
        .post("/__mock/scenarios", "")
        .json(&scenario)
        .send()
        .await?;

    assert_eq!(response.status(), 400);
    assert!(env.mock.pending_answers().is_empty());
    Ok(())
}

#[tokio::test]
async fn sse_standard_answer_is_the_standard_stream_with_its_usage() -> TestResult {
    let env = spawn().await?;
    let scenario = json!({"credential": "sk-up-A", "answers": [
        {"sse_standard": {"input": 4, "cache_read": 2455, "output": 23}},
    ]});
    env.post("/__mock/scenarios", "")
        .json(&scenario)
        .send()
        .await?;

    let response = env.messages("sk-up-A", true).await?;

    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await?, sse::standard(MODEL, 4, 0, 2455, 23));
    Ok(())
}

#[tokio::test]
async fn close_drops_the_connection_without_an_answer() -> TestResult {
    let env = spawn().await?;
    env.mock
        .push_answers("sk-up-A", vec![Answer::default().close()]);

    let result = env.messages("sk-up-A", false).await;

    assert!(result.is_err(), "{result:?}");
    assert_eq!(env.mock.requests_for("sk-up-A").len(), 1);
    Ok(())
}

#[tokio::test]
async fn hang_holds_the_answer_until_the_client_gives_up() -> TestResult {
    let env = spawn().await?;
    env.mock
        .push_answers("sk-up-A", vec![Answer::default().hang()]);
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(200))
        .build()?;

    let result = impatient
        .post(env.url("/v1/messages"))
        .header("x-api-key", "sk-up-A")
        .json(&body(false))
        .send()
        .await;
    let next = env.messages("sk-up-A", false).await?;

    assert!(
        result.as_ref().is_err_and(reqwest::Error::is_timeout),
        "{result:?}"
    );
    assert_eq!(next.status(), 200);
    assert_eq!(env.mock.requests_for("sk-up-A").len(), 2);
    Ok(())
}

#[tokio::test]
async fn x_mock_headers_script_a_direct_call() -> TestResult {
    let env = spawn().await?;
    let overloaded =
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;

    let response = client()?
        .post(env.url("/v1/messages"))
        .header("x-mock-status", "529")
        .header("x-mock-body", overloaded)
        .send()
        .await?;

    assert_eq!(response.status(), 529);
    assert_eq!(header(&response, "content-type"), "application/json");
    assert_eq!(response.text().await?, overloaded);
    Ok(())
}
