//! The Messages API routes: record the request, then answer as scripted or as
//! the credential's profile would.

use axum::body::Body;
use bytes::Bytes;
use http::Response;
use http::request::Parts;
use serde::Deserialize;

use crate::answer::{Answer, Chunk};
use crate::anthropic::{self, DEFAULT_MODEL, Usage};
use crate::in_flight::CountedBody;
use crate::journal::RecordedRequest;
use crate::profile;
use crate::respond::{self, CloseConnection};
use crate::sse::StandardStream;
use crate::state::State;

/// The reply of the normal answer, split as the fixtures' fake upstream
/// split it; real clients accepted exactly this.
const REPLY_DELTAS: [&str; 2] = ["Hi! How can ", "I help you today?"];
const REPLY_OUTPUT_TOKENS: u64 = 10;

/// The parts of a Messages request body that shape the answer.
#[derive(Deserialize)]
struct MessageBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
}

/// One request on its way to an answer.
struct Exchange {
    request: RecordedRequest,
    number: u64,
    /// `None` when the body is not a JSON object.
    body: Option<MessageBody>,
}

impl Exchange {
    fn model(&self) -> &str {
        let model = self.body.as_ref().and_then(|body| body.model.as_deref());
        model.unwrap_or(DEFAULT_MODEL)
    }

    fn id(&self, prefix: &str) -> String {
        format!("{prefix}_mock_{}", self.number)
    }
}

pub(crate) async fn answer(
    state: &State,
    parts: &Parts,
    body: Bytes,
) -> Result<Response<Body>, CloseConnection> {
    let request = RecordedRequest::new(parts, body);
    // Recorded before any delay, so a request the client abandons still shows.
    state.journal.record(request.clone());
    let counted = state.in_flight.enter();
    let exchange = Exchange {
        body: serde_json::from_slice(&request.body).ok(),
        number: state.next_number(),
        request,
    };
    tracing::debug!(
        number = exchange.number,
        method = %parts.method,
        path = %parts.uri.path(),
        "request received"
    );
    let answer = match scripted(state, &exchange.request) {
        Some(answer) if answer.has_body() => answer,
        Some(answer) => answer.over(normal(state, &exchange)),
        None => normal(state, &exchange),
    };
    let response = respond::render(answer, &exchange.id("req"), exchange.model()).await?;
    Ok(response.map(|body| CountedBody::wrap(body, counted)))
}

fn scripted(state: &State, request: &RecordedRequest) -> Option<Answer> {
    let queued = request
        .credential
        .as_deref()
        .and_then(|credential| state.scenarios.pop(credential));
    queued.or_else(|| from_mock_headers(request))
}

/// `x-mock-*` headers script a single request when calling the mock by hand.
fn from_mock_headers(request: &RecordedRequest) -> Option<Answer> {
    let number = |name| {
        request
            .header(name)
            .and_then(|value| value.trim().parse().ok())
    };
    let status = number("x-mock-status").and_then(|code: u64| u16::try_from(code).ok());
    let delay_ms = number("x-mock-delay-ms");
    let body = request.header("x-mock-body");
    if status.is_none() && delay_ms.is_none() && body.is_none() {
        return None;
    }
    let mut answer = Answer {
        status,
        delay_ms,
        ..Answer::default()
    };
    if let Some(body) = body {
        if serde_json::from_str::<serde_json::Value>(body).is_ok() {
            answer = answer.header("content-type", "application/json");
        }
        answer = answer.text(body);
    }
    Some(answer)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Messages,
    CountTokens,
    Models,
}

impl Route {
    fn of(request: &RecordedRequest) -> Option<Route> {
        match (request.method.as_str(), request.path.as_str()) {
            ("POST", "/v1/messages") => Some(Route::Messages),
            ("POST", "/v1/messages/count_tokens") => Some(Route::CountTokens),
            ("GET", "/v1/models") => Some(Route::Models),
            _ => None,
        }
    }
}

/// What the credential's profile answers when nothing is scripted.
fn normal(state: &State, exchange: &Exchange) -> Answer {
    let request = &exchange.request;
    let Some(route) = Route::of(request) else {
        let message = format!("{} {} not found", request.method, request.path);
        return Answer::error(404, "not_found_error", &message);
    };
    let profile = state.profile(request.credential.as_deref());
    if let Some(refusal) = profile::refusal(profile, request) {
        return refusal;
    }
    let input = input_tokens(&request.body);
    match (route, &exchange.body) {
        (Route::Models, _) => Answer::status(200).json(anthropic::models()),
        (_, None) => Answer::error(
            400,
            "invalid_request_error",
            "The request body is not a valid JSON request.",
        ),
        (Route::CountTokens, Some(_)) => Answer::status(200).json(anthropic::count_tokens(input)),
        (Route::Messages, Some(body)) if body.stream == Some(true) => stream(exchange, input),
        (Route::Messages, Some(_)) => message(exchange, input),
    }
}

/// Deterministic and roughly realistic: about four bytes per token.
fn input_tokens(body: &[u8]) -> u64 {
    u64::try_from(body.len() / 4).unwrap_or(u64::MAX).max(1)
}

fn reply_usage(input: u64) -> Usage {
    Usage {
        input,
        output: REPLY_OUTPUT_TOKENS,
        ..Usage::default()
    }
}

fn message(exchange: &Exchange, input: u64) -> Answer {
    let text = REPLY_DELTAS.concat();
    let body = anthropic::message_with(
        &exchange.id("msg"),
        exchange.model(),
        &text,
        reply_usage(input),
    );
    Answer::status(200).json(body)
}

fn stream(exchange: &Exchange, input: u64) -> Answer {
    let deltas = REPLY_DELTAS
        .iter()
        .map(|delta| (*delta).to_owned())
        .collect();
    let stream = StandardStream::new(
        &exchange.id("msg"),
        exchange.model(),
        reply_usage(input),
        deltas,
    );
    Answer::sse(
        stream
            .events()
            .iter()
            .map(|event| Chunk::text(event))
            .collect(),
    )
}
