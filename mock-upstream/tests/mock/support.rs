//! A mock with the standard profiles and a client pointed at it.

use anyhow::Context;
use futures::StreamExt;
use mock_upstream::{MockConfig, MockUpstream, Profile};
use reqwest::{RequestBuilder, Response};
use serde_json::{Value, json};

pub type TestResult = anyhow::Result<()>;

pub const MODEL: &str = "claude-sonnet-4-5-20250929";

pub struct TestMock {
    pub mock: MockUpstream,
    http: reqwest::Client,
}

pub async fn spawn() -> anyhow::Result<TestMock> {
    let config = MockConfig::default()
        .with_profile("sk-up-A", Profile::Ok)
        .with_profile("sk-up-R", Profile::ClientRestricted)
        .with_profile("sk-up-X", Profile::Banned)
        .with_profile("sk-up-C", Profile::NoCredit);
    Ok(TestMock {
        mock: MockUpstream::start(config).await?,
        http: client()?,
    })
}

/// Talks to 127.0.0.1 directly, whatever proxy the environment names.
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder().no_proxy().build()
}

/// `BODY(stream)` of the relay cases.
pub fn body(stream: bool) -> Value {
    json!({
        "model": MODEL,
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
    })
}

/// The input tokens the mock reports for a body.
pub fn input_tokens(body: &Value) -> anyhow::Result<u64> {
    Ok((serde_json::to_vec(body)?.len() / 4).max(1) as u64)
}

impl TestMock {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.mock.url())
    }

    pub fn post(&self, path: &str, credential: &str) -> RequestBuilder {
        self.http
            .post(self.url(path))
            .header("x-api-key", credential)
            .header("anthropic-version", "2023-06-01")
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.http.get(self.url(path))
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.http.delete(self.url(path))
    }

    pub async fn messages(&self, credential: &str, stream: bool) -> reqwest::Result<Response> {
        self.post("/v1/messages", credential)
            .json(&body(stream))
            .send()
            .await
    }
}

pub fn header<'a>(response: &'a Response, name: &str) -> &'a str {
    let value = response.headers().get(name);
    value
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}

/// The event names of an SSE text, in order.
pub fn event_names(sse: &str) -> Vec<&str> {
    sse.lines()
        .filter_map(|line| line.strip_prefix("event: "))
        .collect()
}

/// The data of the first event with this name.
pub fn event_data(sse: &str, name: &str) -> anyhow::Result<Value> {
    let frame = sse
        .split("\n\n")
        .find(|frame| frame.starts_with(&format!("event: {name}\n")))
        .with_context(|| format!("no {name} event in {sse:?}"))?;
    let data = frame
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .context("event without data")?;
    Ok(serde_json::from_str(data)?)
}

/// Every body read until the stream ends, and whether it ended in an error.
pub async fn reads(response: Response) -> (Vec<bytes::Bytes>, bool) {
    let mut stream = response.bytes_stream();
    let mut chunks = Vec::new();
    while let Some(read) = stream.next().await {
        match read {
            Ok(chunk) => chunks.push(chunk),
            Err(_) => return (chunks, true),
        }
    }
    (chunks, false)
}
