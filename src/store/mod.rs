//! The Redis schema: key names, typed records and the scripts that touch
//! them. Everything the relay and its admin commands store goes through
//! here, so seeding and serving can never disagree about the schema.

mod conn;
pub mod records;

use redis::AsyncCommands;

use crate::config::RedisSettings;
use crate::usage::record::{Period, Subject};
pub use conn::Conn;
pub use records::{AccountRecord, AuthScheme, KeyRecord};

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("stored record {key} is corrupt: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the {script} script answered {reply:?}, which this relay does not know")]
    Script { script: &'static str, reply: String },
}

/// A handle on the relay's Redis data under one prefix. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Conn,
    names: Names,
}

/// Every Redis key name the relay uses, in one place.
#[derive(Clone, Debug)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: &str) -> Names {
        Names {
            prefix: prefix.to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Hash: key SHA-256 → key record. The hot lookup.
    pub fn keys_by_hash(&self) -> String {
        format!("{}{{keys}}:by_hash", self.prefix)
    }

    /// Hash: key id → key SHA-256, for admin commands.
    pub fn keys_by_id(&self) -> String {
        format!("{}{{keys}}:by_id", self.prefix)
    }

    /// Hash: account id → account record.
    pub fn accounts(&self) -> String {
        format!("{}{{accounts}}:records", self.prefix)
    }

    /// The hash tag every limit and counter of one relay key shares, so the
    /// scripts that touch them run on Redis Cluster too.
    pub fn key_tag(&self, id: &str) -> String {
        format!("{}{{key:{}}}", self.prefix, tag_safe(id))
    }

    pub fn account_tag(&self, id: &str) -> String {
        format!("{}{{account:{}}}", self.prefix, tag_safe(id))
    }

    pub fn model_tag(&self, model: &str) -> String {
        format!("{}{{model:{}}}", self.prefix, tag_safe(model))
    }

    pub fn usage_tag(&self, subject: Subject<'_>) -> String {
        match subject {
            Subject::Key(id) => self.key_tag(id),
            Subject::Account(id) => self.account_tag(id),
            Subject::Model(model) => self.model_tag(model),
        }
    }

    /// Hash of usage counters of one subject in one period.
    pub fn usage(&self, tag: &str, period: &Period) -> String {
        format!("{tag}:usage:{period}")
    }

    /// Marks a request as counted for one subject.
    pub fn usage_seen(&self, tag: &str, request_id: &str) -> String {
        format!("{tag}:usage:seen:{request_id}")
    }

    /// Sorted set of leases of requests in flight: member = request id,
    /// score = expiry in milliseconds (Redis clock).
    pub fn leases(&self, tag: &str) -> String {
        format!("{tag}:leases")
    }

    /// Hash of requests, tokens and cost in one fixed rate window.
    pub fn window(&self, tag: &str, secs: u64, start: i64) -> String {
        format!("{tag}:window:{secs}:{start}")
    }

    /// Hash of spending in one period (`day:..`, `week:..`, `total`): the
    /// field `all`, and one field per model family.
    pub fn spend(&self, tag: &str, period: &str) -> String {
        format!("{tag}:spend:{period}")
    }

    /// Set of every model that has usage counters.
    pub fn usage_models(&self) -> String {
        format!("{}{{usage}}:models", self.prefix)
    }
}

/// Names taken from requests (models) may hold any character: keep those
/// that cannot break a key name or a hash tag, replace the rest.
fn tag_safe(name: &str) -> String {
    name.chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._:-@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Store {
    /// Connects lazily: the relay starts while Redis is down and reports
    /// itself not ready until it comes back.
    pub fn connect(settings: &RedisSettings) -> anyhow::Result<Store> {
        Ok(Store {
            conn: Conn::lazy(settings)?,
            names: Names::new(&settings.prefix),
        })
    }

    /// A store on a connection made elsewhere (a Redis Cluster).
    pub fn from_conn(conn: Conn, prefix: &str) -> Store {
        Store {
            conn,
            names: Names::new(prefix),
        }
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    pub fn conn(&self) -> Conn {
        self.conn.clone()
    }

    pub async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    pub async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<KeyRecord>> {
        let name = self.names.keys_by_hash();
        let raw: Option<String> = self.conn.clone().hget(&name, hash).await?;
        raw.map(|json| decode(&name, &json)).transpose()
    }

    pub async fn key_by_id(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        let hash: Option<String> = self.conn.clone().hget(self.names.keys_by_id(), id).await?;
        match hash {
            Some(hash) => self.key_by_hash(&hash).await,
            None => Ok(None),
        }
    }

    /// Inserts or replaces the key with this id; a changed hash (rotation)
    /// drops the old one in the same step.
    pub async fn put_key(&self, record: &KeyRecord) -> StoreResult<()> {
        let json = encode(record);
        let _: () = redis::Script::new(PUT_KEY)
            .key(self.names.keys_by_id())
            .key(self.names.keys_by_hash())
            .arg(&record.id)
            .arg(&record.key_sha256)
            .arg(json)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    pub async fn delete_key(&self, id: &str) -> StoreResult<bool> {
        let removed: i64 = redis::Script::new(DELETE_KEY)
            .key(self.names.keys_by_id())
            .key(self.names.keys_by_hash())
            .arg(id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(removed > 0)
    }

    pub async fn list_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        let name = self.names.keys_by_hash();
        let all: Vec<(String, String)> = self.conn.clone().hgetall(&name).await?;
        let mut records = all
            .iter()
            .map(|(_, json)| decode(&name, json))
            .collect::<StoreResult<Vec<KeyRecord>>>()?;
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    pub async fn put_account(&self, record: &AccountRecord) -> StoreResult<()> {
        let _: () = self
            .conn
            .clone()
            .hset(self.names.accounts(), &record.id, encode(record))
            .await?;
        Ok(())
    }

    pub async fn account(&self, id: &str) -> StoreResult<Option<AccountRecord>> {
        let name = self.names.accounts();
        let raw: Option<String> = self.conn.clone().hget(&name, id).await?;
        raw.map(|json| decode(&name, &json)).transpose()
    }

    pub async fn delete_account(&self, id: &str) -> StoreResult<bool> {
        let removed: i64 = self.conn.clone().hdel(self.names.accounts(), id).await?;
        Ok(removed > 0)
    }

    /// Every account, sorted by id.
    pub async fn list_accounts(&self) -> StoreResult<Vec<AccountRecord>> {
        let name = self.names.accounts();
        let all: Vec<(String, String)> = self.conn.clone().hgetall(&name).await?;
        let mut records = all
            .iter()
            .map(|(_, json)| decode(&name, json))
            .collect::<StoreResult<Vec<AccountRecord>>>()?;
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }
}

/// KEYS: by_id, by_hash. ARGV: id, hash, record.
const PUT_KEY: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old and old ~= ARGV[2] then redis.call('HDEL', KEYS[2], old) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
";

/// KEYS: by_id, by_hash. ARGV: id.
const DELETE_KEY: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], old)
return 1
";

fn encode<T: serde::Serialize>(record: &T) -> String {
    // Records are plain data with string keys: serialising cannot fail.
    serde_json::to_string(record).unwrap_or_default()
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, json: &str) -> StoreResult<T> {
    serde_json::from_str(json).map_err(|source| StoreError::Corrupt {
        key: key.to_owned(),
        source,
    })
}
