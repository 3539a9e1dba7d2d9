//! The `/__mock/` routes that script the mock and read its journal over HTTP.

use std::collections::HashMap;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::answer::Answer;
use crate::anthropic;
use crate::profile::Profile;
use crate::state::State;

pub(crate) const PREFIX: &str = "/__mock/";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushAnswers {
    credential: String,
    answers: Vec<Answer>,
}

pub(crate) fn handle(state: &State, parts: &Parts, body: &[u8]) -> Response {
    let route = parts.uri.path().trim_start_matches(PREFIX);
    match (&parts.method, route) {
        (&Method::POST, "scenarios") => push_answers(state, body),
        (&Method::GET, "scenarios") => Json(state.scenarios.pending()).into_response(),
        (&Method::DELETE, "scenarios") => {
            state.scenarios.clear();
            StatusCode::NO_CONTENT.into_response()
        }
        (&Method::GET, "requests") => Json(state.journal.all()).into_response(),
        (&Method::DELETE, "requests") => {
            state.journal.clear();
            StatusCode::NO_CONTENT.into_response()
        }
        (&Method::POST, "profiles") => set_profiles(state, body),
        _ => {
            let message = format!(
                "{} {} is not a mock control route",
                parts.method,
                parts.uri.path()
            );
            (
                StatusCode::NOT_FOUND,
                Json(anthropic::error("not_found_error", &message)),
            )
                .into_response()
        }
    }
}

fn push_answers(state: &State, body: &[u8]) -> Response {
    match parse_push(body) {
        Ok(push) => {
            let queued = state.scenarios.push(&push.credential, push.answers);
            Json(json!({"credential": push.credential, "queued": queued})).into_response()
        }
        Err(message) => bad_request(&message),
    }
}

fn parse_push(body: &[u8]) -> Result<PushAnswers, String> {
    let push: PushAnswers = parse(body)?;
    for answer in &push.answers {
        answer.validate()?;
    }
    Ok(push)
}

/// Merges a credential → profile object into the profiles.
fn set_profiles(state: &State, body: &[u8]) -> Response {
    let profiles: HashMap<String, Profile> = match parse(body) {
        Ok(profiles) => profiles,
        Err(message) => return bad_request(&message),
    };
    for (credential, profile) in &profiles {
        state.set_profile(credential, *profile);
    }
    StatusCode::NO_CONTENT.into_response()
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|error| error.to_string())
}

fn bad_request(message: &str) -> Response {
    let body = anthropic::error("invalid_request_error", message);
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}
