//! What the mock received, kept in arrival order so tests can assert on it.

use std::sync::{Mutex, MutexGuard, PoisonError};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use bytes::Bytes;
use http::request::Parts;
use serde::{Deserialize, Serialize};

/// One request as received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "RecordedJson", try_from = "RecordedJson")]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Lowercase names, every line, duplicates kept. Lines of one name sit
    /// together at that name's first position: hyper's header map does not
    /// keep the interleaving of different names.
    pub headers: Vec<(String, String)>,
    /// The body exactly as received.
    pub body: Bytes,
    /// From `x-api-key`, else from `Authorization: Bearer`.
    pub credential: Option<String>,
}

impl RecordedRequest {
    pub(crate) fn new(parts: &Parts, body: Bytes) -> Self {
        let headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect();
        let mut request = RecordedRequest {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers,
            body,
            credential: None,
        };
        request.credential = request.find_credential();
        request
    }

    /// The first value of a header, whatever the case of `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    /// Every value of a header, in received order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(line_name, _)| line_name.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// The body as JSON, or `Value::Null` when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    fn find_credential(&self) -> Option<String> {
        if let Some(key) = self.header("x-api-key") {
            return Some(key.trim().to_owned());
        }
        let (scheme, token) = self.header("authorization")?.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
    }
}

/// The JSON form: the body as base64, and also as text when it is UTF-8.
#[derive(Serialize, Deserialize)]
struct RecordedJson {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    credential: Option<String>,
    body: Option<String>,
    body_b64: String,
    body_len: usize,
}

impl From<RecordedRequest> for RecordedJson {
    fn from(request: RecordedRequest) -> Self {
        RecordedJson {
            body: std::str::from_utf8(&request.body).ok().map(str::to_owned),
            body_b64: BASE64.encode(&request.body),
            body_len: request.body.len(),
            method: request.method,
            path: request.path,
            query: request.query,
            headers: request.headers,
            credential: request.credential,
        }
    }
}

impl TryFrom<RecordedJson> for RecordedRequest {
    type Error = base64::DecodeError;

    fn try_from(json: RecordedJson) -> Result<Self, Self::Error> {
        Ok(RecordedRequest {
            method: json.method,
            path: json.path,
            query: json.query,
            headers: json.headers,
            body: BASE64.decode(json.body_b64)?.into(),
            credential: json.credential,
        })
    }
}

#[derive(Default)]
pub(crate) struct Journal {
    requests: Mutex<Vec<RecordedRequest>>,
    limit: Option<usize>,
}

impl Journal {
    pub(crate) fn with_limit(limit: Option<usize>) -> Journal {
        Journal {
            requests: Mutex::default(),
            limit,
        }
    }

    pub(crate) fn record(&self, request: RecordedRequest) {
        let mut requests = self.lock();
        match self.limit {
            Some(0) => {}
            Some(limit) => {
                // Drop the older half at once rather than one per request.
                if requests.len() >= limit {
                    let keep = limit / 2;
                    let drop = requests.len() - keep;
                    requests.drain(..drop);
                }
                requests.push(request);
            }
            None => requests.push(request),
        }
    }

    pub(crate) fn all(&self) -> Vec<RecordedRequest> {
        self.lock().clone()
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    // A panic elsewhere while holding the lock leaves the list intact, so a
    // poisoned lock is still safe to use.
    fn lock(&self) -> MutexGuard<'_, Vec<RecordedRequest>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n: usize) -> RecordedRequest {
        RecordedRequest {
            method: "POST".into(),
            path: format!("/{n}"),
            query: None,
            headers: Vec::new(),
            body: bytes::Bytes::new(),
            credential: None,
        }
    }

    #[test]
    fn a_limited_journal_keeps_the_newest_requests() {
        let journal = Journal::with_limit(Some(4));
        for n in 0..10 {
            journal.record(request(n));
        }
        let kept: Vec<String> = journal.all().into_iter().map(|r| r.path).collect();

        assert!(kept.len() <= 4);
        assert_eq!(kept.last().map(String::as_str), Some("/9"));
        assert!(Journal::with_limit(Some(0)).all().is_empty());
    }
}
