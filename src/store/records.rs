//! The typed records stored in Redis. Fields added later carry serde
//! defaults so older records keep loading.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    /// Lowercase hex SHA-256 of the key (pepper applied).
    pub key_sha256: String,
    /// Who the key was issued to; a label for operators.
    #[serde(default)]
    pub owner: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub disabled: bool,
    /// The key is refused from this moment on.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// The key is valid for this many days from its first use.
    #[serde(default)]
    pub activation_days: Option<u32>,
    /// When the key was first used. Not part of the stored record: it lives
    /// beside it, written once by the first request that passes every
    /// check, and is filled in when the record is read.
    #[serde(skip)]
    pub activated_at: Option<OffsetDateTime>,
    /// The relay services the key may call.
    #[serde(default = "Service::all")]
    pub services: Vec<Service>,
    /// Client kinds allowed to use the key; empty allows every client.
    #[serde(default)]
    pub allowed_clients: Vec<String>,
    /// Models the key may use; empty allows every model.
    #[serde(default)]
    pub allowed_models: Vec<String>,
    /// Models the key may not use, whatever the allow-list says.
    #[serde(default)]
    pub denied_models: Vec<String>,
}

/// The relay's client-facing services; a key may be limited to some.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    /// `POST /v1/messages`.
    Messages,
    /// `POST /v1/messages/count_tokens`.
    CountTokens,
    /// `GET /v1/models`.
    Models,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Messages, Service::CountTokens, Service::Models];

    pub fn all() -> Vec<Service> {
        Service::ALL.to_vec()
    }

    /// The name used in seed files, the CLI and error details.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Messages => "messages",
            Service::CountTokens => "count_tokens",
            Service::Models => "models",
        }
    }

    pub fn route(self) -> &'static str {
        match self {
            Service::Messages => "POST /v1/messages",
            Service::CountTokens => "POST /v1/messages/count_tokens",
            Service::Models => "GET /v1/models",
        }
    }
}

impl std::str::FromStr for Service {
    type Err = String;

    fn from_str(text: &str) -> Result<Service, String> {
        Service::ALL
            .into_iter()
            .find(|service| service.as_str() == text)
            .ok_or_else(|| {
                format!("unknown service `{text}`: use messages, count_tokens or models")
            })
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// Reached with an API key at a base URL.
    #[default]
    Console,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AuthScheme {
    /// `x-api-key: <credential>`.
    #[default]
    XApiKey,
    /// `Authorization: Bearer <credential>`.
    Bearer,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub kind: AccountKind,
    pub base_url: String,
    // TODO(#4): encrypt credentials at rest (AES-256-GCM under the account key).
    pub credential: String,
    #[serde(default)]
    pub auth_scheme: AuthScheme,
    /// Lower is preferred.
    pub priority: u32,
    pub schedulable: bool,
}

impl std::fmt::Debug for AccountRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("credential", &"[redacted]")
            .field("auth_scheme", &self.auth_scheme)
            .field("priority", &self.priority)
            .field("schedulable", &self.schedulable)
            .finish()
    }
}
