//! The typed records stored in Redis. Fields added later carry serde
//! defaults so older records keep loading.

use serde::{Deserialize, Serialize};

use crate::limits::KeyLimits;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    /// Lowercase hex SHA-256 of the key (pepper applied).
    pub key_sha256: String,
    #[serde(default)]
    pub disabled: bool,
    /// Client kinds allowed to use the key; empty allows every client.
    #[serde(default)]
    pub allowed_clients: Vec<String>,
    /// Models the key may use; empty allows every model.
    #[serde(default)]
    pub allowed_models: Vec<String>,
    #[serde(default, skip_serializing_if = "KeyLimits::is_none")]
    pub limits: KeyLimits,
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
