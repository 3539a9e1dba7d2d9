//! The typed records stored in Redis. Fields added later carry serde
//! defaults so older records keep loading.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::limits::KeyLimits;

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
    #[serde(default, skip_serializing_if = "KeyLimits::is_none")]
    pub limits: KeyLimits,
    /// An account id, `group:NAME`, or none for the shared pool.
    #[serde(default)]
    pub account: Option<String>,
    /// Models the key may not use, whatever the allow-list says.
    #[serde(default)]
    pub denied_models: Vec<String>,
}

/// The relay's client-facing services; a key may be limited to some.
impl KeyRecord {
    /// A key with this id, name and hash and no restrictions or limits.
    pub fn new(id: &str, name: &str, key_sha256: String) -> KeyRecord {
        KeyRecord {
            id: id.to_owned(),
            name: name.to_owned(),
            key_sha256,
            owner: String::new(),
            created_at: None,
            disabled: false,
            expires_at: None,
            activation_days: None,
            activated_at: None,
            services: Service::all(),
            allowed_clients: Vec::new(),
            allowed_models: Vec::new(),
            limits: KeyLimits::default(),
            account: None,
            denied_models: Vec::new(),
        }
    }
}

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

/// A credential as stored: sealed under the account key, or in plaintext
/// when that was switched on explicitly (see `store::cipher`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoredCredential {
    /// Hex of nonce, ciphertext and tag.
    Aes256Gcm(String),
    Plaintext(String),
}

impl std::fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoredCredential::Aes256Gcm(_) => f.write_str("Aes256Gcm([sealed])"),
            StoredCredential::Plaintext(_) => f.write_str("Plaintext([redacted])"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub kind: AccountKind,
    pub base_url: String,
    pub credential: StoredCredential,
    #[serde(default)]
    pub auth_scheme: AuthScheme,
    /// Lower is preferred.
    pub priority: u32,
    /// Off: an operator took the account out of the pool.
    pub schedulable: bool,
    /// Models the account serves; empty serves every model.
    #[serde(default)]
    pub models: Vec<String>,
    /// Requested model → the id this upstream expects.
    #[serde(default)]
    pub model_map: BTreeMap<String, String>,
    /// In-flight Messages requests at most; 0 means no limit.
    #[serde(default)]
    pub concurrency_limit: u32,
    /// Cost per usage day at most, in nano-dollars; 0 means no quota. An
    /// account that reached it takes no traffic until the day ends.
    #[serde(default)]
    pub daily_quota_nano_usd: u64,
    /// Accounts in a group serve only keys bound to that group; accounts
    /// without one form the shared pool.
    #[serde(default)]
    pub group: Option<String>,
}

/// A state that keeps an account out of the pool until an operator acts
/// (`accounts enable`). Stored apart from the record, so the relay can set
/// it without rewriting what an operator wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountStatus {
    pub state: HealthState,
    pub upstream_status: u16,
    /// Why, in the relay's words (a matched marker), never upstream text
    /// that could echo a credential.
    pub reason: String,
    /// Unix seconds.
    pub since: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// The upstream refused the credential (401).
    Unauthorized,
    /// The upstream said the account itself is disabled (a 403 marker).
    Blocked,
}

/// A timed exclusion; the Redis key holding it expires with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cooldown {
    pub reason: CooldownReason,
    pub upstream_status: Option<u16>,
    /// Unix seconds.
    pub since: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CooldownReason {
    RateLimited,
    OutOfCredit,
    Overloaded,
    ServerError,
    Unavailable,
    Timeout,
    Unreachable,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Unauthorized => "unauthorized",
            HealthState::Blocked => "blocked",
        }
    }
}

impl CooldownReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CooldownReason::RateLimited => "rate_limited",
            CooldownReason::OutOfCredit => "out_of_credit",
            CooldownReason::Overloaded => "overloaded",
            CooldownReason::ServerError => "server_error",
            CooldownReason::Unavailable => "unavailable",
            CooldownReason::Timeout => "timeout",
            CooldownReason::Unreachable => "unreachable",
        }
    }
}
