//! One attempt against one account: URL, headers, credential, timeouts.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, header};
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};

use crate::config::UpstreamSettings;
use crate::store::AuthScheme;

/// Where and how to reach one account.
pub struct Target<'a> {
    pub base_url: &'a str,
    pub credential: &'a SecretString,
    pub auth_scheme: AuthScheme,
}

#[derive(Clone)]
pub struct UpstreamClient {
    http: reqwest::Client,
    first_byte_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("could not connect: {0}")]
    Connect(#[source] reqwest::Error),
    #[error("request failed: {0}")]
    Other(#[source] reqwest::Error),
    #[error("invalid upstream URL {0}")]
    BadUrl(String),
}

impl UpstreamClient {
    pub fn new(settings: &UpstreamSettings) -> anyhow::Result<UpstreamClient> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            // Gzip answers are decoded (the relay reads usage from them and
            // must not pass on bytes its headers do not describe); the relay
            // itself asks for identity, see `send`.
            .gzip(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(UpstreamClient {
            http,
            first_byte_timeout: settings.first_byte_timeout,
        })
    }

    /// Sends the request and waits for the answer's head, at most the
    /// first-byte timeout. The body is left to stream.
    pub async fn send(
        &self,
        target: &Target<'_>,
        method: Method,
        path_and_query: &str,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<reqwest::Response, SendError> {
        let url = join_url(target.base_url, path_and_query)
            .ok_or_else(|| SendError::BadUrl(target.base_url.to_owned()))?;
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        let (name, value) = credential_header(target)?;
        headers.insert(name, value);
        let request = self.http.request(method, url).headers(headers).body(body);
        match tokio::time::timeout(self.first_byte_timeout, request.send()).await {
            Err(_) => Err(SendError::Timeout(self.first_byte_timeout)),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) if err.is_connect() => Err(SendError::Connect(err)),
            Ok(Err(err)) if err.is_timeout() => Err(SendError::Timeout(self.first_byte_timeout)),
            Ok(Err(err)) => Err(SendError::Other(err)),
        }
    }
}

fn credential_header(target: &Target<'_>) -> Result<(header::HeaderName, HeaderValue), SendError> {
    let secret = target.credential.expose_secret();
    let (name, text) = match target.auth_scheme {
        AuthScheme::XApiKey => (
            header::HeaderName::from_static("x-api-key"),
            secret.to_owned(),
        ),
        AuthScheme::Bearer => (header::AUTHORIZATION, format!("Bearer {secret}")),
    };
    let mut value = HeaderValue::from_str(&text)
        .map_err(|_| SendError::BadUrl("credential is not a valid header value".into()))?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// The account's base URL joined with the client's path and query. A base
/// URL may carry a path of its own (another relay mounted under `/api`).
pub fn join_url(base: &str, path_and_query: &str) -> Option<reqwest::Url> {
    let joined = format!("{}{}", base.trim_end_matches('/'), path_and_query);
    let url = reqwest::Url::parse(&joined).ok()?;
    matches!(url.scheme(), "http" | "https").then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_path_and_query_are_kept() {
        let url = join_url("https://up.example/api/", "/v1/messages?beta=true").unwrap();
        assert_eq!(url.as_str(), "https://up.example/api/v1/messages?beta=true");
    }

    #[test]
    fn non_http_base_urls_are_refused() {
        assert!(join_url("file:///etc", "/v1/messages").is_none());
        assert!(join_url("not a url", "/v1/messages").is_none());
    }
}
