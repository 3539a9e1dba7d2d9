//! The Redis schema: key names, typed records and the scripts that touch
//! them. Everything the relay and its admin commands store goes through
//! here, so seeding and serving can never disagree about the schema.

mod accounts;
pub mod cipher;
mod conn;
mod pick;
pub mod records;

use std::collections::HashMap;

use redis::AsyncCommands;
use sha2::Digest;
use time::OffsetDateTime;

use crate::config::RedisSettings;
use crate::usage::record::{Period, Subject};
pub use accounts::Health;
pub use conn::Conn;
pub use pick::{PickArg, PickReply, PickRequest, Seen};
pub use records::{AccountRecord, AuthScheme, KeyRecord, Service};

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
    /// A create found a record with its id.
    #[error("a {kind} with id {id} exists already")]
    Exists { kind: &'static str, id: String },
    /// Another key has the same secret: one secret opens one key.
    #[error("another key already has the secret given for key {id}")]
    SecretInUse { id: String },
    /// A write over an existing record found it removed meanwhile.
    #[error("no {kind} with id {id} any more")]
    Gone { kind: &'static str, id: String },
    /// An update found the key changed (rotated, deleted) since it was read.
    #[error("key {id} changed while it was being written")]
    Changed { id: String },
}

/// How a record is written: whatever is there replaced, or only when its
/// id is new (checked in the same script that writes, so two creates of
/// one id cannot both succeed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Upsert,
    Create,
    /// Only over a record that is there: a change never brings back a
    /// record removed meanwhile.
    Existing,
}

impl Put {
    pub(crate) fn flag(self) -> &'static str {
        match self {
            Put::Upsert => "upsert",
            Put::Create => "create",
            Put::Existing => "existing",
        }
    }
}

/// How many times a key change is read and written again when another
/// change got in between.
const KEY_UPDATE_TRIES: usize = 8;

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

    /// Hash: key SHA-256 → first use (Unix seconds), for keys valid for a
    /// number of days from their first use. Written once; moves with the
    /// key when it is rotated.
    pub fn keys_activated(&self) -> String {
        format!("{}{{keys}}:activated", self.prefix)
    }

    /// Hash: account id → account record.
    pub fn accounts(&self) -> String {
        format!("{}{{accounts}}:records", self.prefix)
    }

    /// Counter bumped by every change of an account record, so instances
    /// know when their cached copy is stale.
    pub fn accounts_version(&self) -> String {
        format!("{}{{accounts}}:version", self.prefix)
    }

    /// Hash: account id → status that holds until an operator acts.
    pub fn account_status(&self) -> String {
        format!("{}{{accounts}}:status", self.prefix)
    }

    /// Sorted set: account id, scored by its last pick (ms, Redis clock).
    pub fn accounts_last_used(&self) -> String {
        format!("{}{{accounts}}:last_used", self.prefix)
    }

    /// String with a TTL: why the account cools down; gone when it is over.
    pub fn cooldown(&self, account_id: &str) -> String {
        format!("{}{{accounts}}:cooldown:{account_id}", self.prefix)
    }

    /// String with a TTL: the account a conversation is pinned to.
    /// `session` is already a hash (see `scheduler::session`).
    pub fn sticky(&self, session: &str) -> String {
        format!("{}{{accounts}}:sticky:{session}", self.prefix)
    }

    /// Sorted set of an account's leases (see [`Names::leases`]). Under
    /// the `{accounts}` tag, not the account's own, so the pick script
    /// can count and take them in the same round trip.
    pub fn account_leases(&self, account_id: &str) -> String {
        format!("{}{{accounts}}:leases:{account_id}", self.prefix)
    }

    /// Hash: account id → cost in nano-dollars in one usage day. A copy of
    /// each account's `cost_nano_usd` day counter under the `{accounts}`
    /// tag, where the pick script can read it to enforce daily quotas.
    pub fn accounts_spend(&self, day: &Period) -> String {
        format!("{}{{accounts}}:spend:{day}", self.prefix)
    }

    /// Marks one write's costs as added to `accounts_spend` of `day`. A
    /// write can hold answers of two usage days (it gathers answers around
    /// midnight), and each day's addition is marked on its own.
    pub fn accounts_spend_seen(&self, write_id: &str, day: &Period) -> String {
        format!("{}{{accounts}}:spend:seen:{write_id}:{day}", self.prefix)
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

    /// String with a TTL: what one admission added (its lease, its count
    /// in the window), so it can be undone once if the relay gave up on
    /// the admission's answer.
    pub fn admitted(&self, tag: &str, request_id: &str) -> String {
        format!("{tag}:admitted:{request_id}")
    }

    /// String with a TTL: an admission the relay gave up on before it ran,
    /// so that it has no effect when it runs later.
    pub fn cancelled(&self, tag: &str, request_id: &str) -> String {
        format!("{tag}:cancelled:{request_id}")
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

    /// Sets of every key and account that has usage counters, so a report
    /// still finds them after their record is gone.
    pub fn usage_keys(&self) -> String {
        format!("{}{{usage}}:keys", self.prefix)
    }

    pub fn usage_accounts(&self) -> String {
        format!("{}{{usage}}:accounts", self.prefix)
    }

    /// Set of every model that has usage counters.
    pub fn usage_models(&self) -> String {
        format!("{}{{usage}}:models", self.prefix)
    }
}

/// Longest name kept whole in a Redis key.
const TAG_MAX_CHARS: usize = 128;

/// Names taken from answers (models) may hold any character: keep those
/// that cannot break a key name or a hash tag, replace the rest. A name
/// changed that way gets a digest of the whole name after a `~` (which no
/// kept name holds), so two models never share counters.
fn tag_safe(name: &str) -> String {
    let kept: String = name
        .chars()
        .take(TAG_MAX_CHARS)
        .map(|c| if tag_char(c) { c } else { '_' })
        .collect();
    if kept == name {
        return kept;
    }
    let digest = sha2::Sha256::digest(name.as_bytes());
    format!("{kept}~{}", hex::encode(&digest[..8]))
}

fn tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._:-@".contains(c)
}

/// An id the operator picks (a key's) names its counters, leases and
/// budgets in Redis through [`tag_safe`], so two ids that read the same
/// there would share them: only ids it keeps unchanged are accepted.
pub fn check_id(id: &str) -> Result<(), String> {
    let length = id.chars().count();
    if length == 0 || length > TAG_MAX_CHARS || !id.chars().all(tag_char) {
        return Err(format!(
            "the id {id:?} must be 1 to {TAG_MAX_CHARS} characters among letters, digits \
             and . _ : - @"
        ));
    }
    Ok(())
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

    /// The key record with its first use, in one round trip.
    pub async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<KeyRecord>> {
        let name = self.names.keys_by_hash();
        let activated_name = self.names.keys_activated();
        let (raw, activated): (Option<String>, Option<String>) = redis::pipe()
            .hget(&name, hash)
            .hget(&activated_name, hash)
            .query_async(&mut self.conn.clone())
            .await?;
        let Some(json) = raw else {
            return Ok(None);
        };
        let mut record: KeyRecord = decode(&name, &json)?;
        record.activated_at = activated
            .map(|secs| decode_time(&activated_name, &secs))
            .transpose()?;
        Ok(Some(record))
    }

    /// Records the key's first use unless one is recorded already; true
    /// when this call recorded it.
    pub async fn activate_key(&self, hash: &str, at: OffsetDateTime) -> StoreResult<bool> {
        let set: bool = self
            .conn
            .clone()
            .hset_nx(self.names.keys_activated(), hash, at.unix_timestamp())
            .await?;
        Ok(set)
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
        self.write_key(record, Put::Upsert).await
    }

    /// Writes the key; refused when its secret belongs to another key (the
    /// secret would then open this record instead of that one), and with
    /// [`Put::Create`] when the id exists.
    pub async fn write_key(&self, record: &KeyRecord, write: Put) -> StoreResult<()> {
        self.put_key_script(record, write.flag(), "").await
    }

    /// Reads the key, applies `change` and writes it back, unless another
    /// change (a rotation, a delete, another update) got in between: then
    /// it reads again and applies `change` to what is there now. `None`
    /// when there is no such key (any more).
    pub async fn update_key(
        &self,
        id: &str,
        mut change: impl FnMut(&mut KeyRecord),
    ) -> StoreResult<Option<KeyRecord>> {
        for _ in 0..KEY_UPDATE_TRIES {
            let hash: Option<String> = self.conn.clone().hget(self.names.keys_by_id(), id).await?;
            let Some(hash) = hash else { return Ok(None) };
            let Some(mut record) = self.key_by_hash(&hash).await? else {
                return Ok(None);
            };
            change(&mut record);
            match self.put_key_script(&record, "update", &hash).await {
                Err(StoreError::Changed { .. }) => continue,
                other => return other.map(|()| Some(record)),
            }
        }
        Err(StoreError::Changed { id: id.to_owned() })
    }

    /// `mode` is `create`, `upsert`, or `update` of the key as it was when
    /// its hash was `expected`.
    async fn put_key_script(
        &self,
        record: &KeyRecord,
        mode: &str,
        expected: &str,
    ) -> StoreResult<()> {
        let json = encode(record);
        let reply: String = redis::Script::new(PUT_KEY)
            .key(self.names.keys_by_id())
            .key(self.names.keys_by_hash())
            .key(self.names.keys_activated())
            .arg(&record.id)
            .arg(&record.key_sha256)
            .arg(json)
            .arg(mode)
            .arg(expected)
            .invoke_async(&mut self.conn.clone())
            .await?;
        match reply.as_str() {
            "ok" => Ok(()),
            "changed" => Err(StoreError::Changed {
                id: record.id.clone(),
            }),
            "exists" => Err(StoreError::Exists {
                kind: "key",
                id: record.id.clone(),
            }),
            "secret_in_use" => Err(StoreError::SecretInUse {
                id: record.id.clone(),
            }),
            _ => Err(StoreError::Script {
                script: "put key",
                reply,
            }),
        }
    }

    /// Removes the key; the hash it had, `None` when there was no such key.
    pub async fn delete_key(&self, id: &str) -> StoreResult<Option<String>> {
        Ok(redis::Script::new(DELETE_KEY)
            .key(self.names.keys_by_id())
            .key(self.names.keys_by_hash())
            .key(self.names.keys_activated())
            .arg(id)
            .invoke_async(&mut self.conn.clone())
            .await?)
    }

    /// Every key with its first use, sorted by id.
    pub async fn list_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        let name = self.names.keys_by_hash();
        let activated_name = self.names.keys_activated();
        let (all, activated): (Vec<(String, String)>, HashMap<String, String>) = redis::pipe()
            .hgetall(&name)
            .hgetall(&activated_name)
            .query_async(&mut self.conn.clone())
            .await?;
        let mut records = Vec::with_capacity(all.len());
        for (hash, json) in &all {
            let mut record: KeyRecord = decode(&name, json)?;
            record.activated_at = activated
                .get(hash)
                .map(|secs| decode_time(&activated_name, secs))
                .transpose()?;
            records.push(record);
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }
}

/// KEYS: by_id, by_hash, activated. ARGV: id, hash, record, `create`,
/// `upsert` or `update`, and for `update` the hash the key had when it was
/// read. A rotated key keeps its first use, so rotating never extends its
/// life. Answers `ok`, `exists` (a create of an id in use), `changed` (an
/// update of a key rotated or deleted since it was read) or
/// `secret_in_use` (the hash is another key's).
const PUT_KEY: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old and ARGV[4] == 'create' then return 'exists' end
if ARGV[4] == 'update' and old ~= ARGV[5] then return 'changed' end
if old ~= ARGV[2] and redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then
  return 'secret_in_use'
end
if old and old ~= ARGV[2] then
  redis.call('HDEL', KEYS[2], old)
  local first_use = redis.call('HGET', KEYS[3], old)
  if first_use then
    redis.call('HSET', KEYS[3], ARGV[2], first_use)
    redis.call('HDEL', KEYS[3], old)
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 'ok'
";

/// KEYS: by_id, by_hash, activated. ARGV: id. Returns the removed hash, or
/// nil when there was no such key.
const DELETE_KEY: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], old)
redis.call('HDEL', KEYS[3], old)
return old
";

pub(crate) fn encode<T: serde::Serialize>(record: &T) -> String {
    // Records are plain data with string keys: serialising cannot fail.
    serde_json::to_string(record).unwrap_or_default()
}

/// A time stored as Unix seconds.
fn decode_time(key: &str, secs: &str) -> StoreResult<OffsetDateTime> {
    let secs: i64 = decode(key, secs)?;
    OffsetDateTime::from_unix_timestamp(secs).map_err(|err| StoreError::Corrupt {
        key: key.to_owned(),
        source: serde::de::Error::custom(err),
    })
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(key: &str, json: &str) -> StoreResult<T> {
    serde_json::from_str(json).map_err(|source| StoreError::Corrupt {
        key: key.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_that_would_share_counters_with_another_id_are_refused() {
        for bad in ["a b", "a/b", "{key}", "", "é", &"k".repeat(129)] {
            assert!(super::check_id(bad).is_err(), "{bad:?}");
        }
        for good in ["key-1", "alice@laptop", "team.a:1_2", &"k".repeat(128)] {
            assert!(super::check_id(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn models_that_read_the_same_once_made_safe_keep_their_own_tags() {
        let long = "m".repeat(200);
        let longer = format!("{long}x");
        let names = [
            "claude-x!",
            "claude-x?",
            "claude-x_",
            long.as_str(),
            &longer,
        ];

        let tags: Vec<String> = names.iter().map(|name| super::tag_safe(name)).collect();

        assert_eq!(tags[2], "claude-x_", "a safe name is kept as it is");
        assert!(tags[0].starts_with("claude-x_~"), "{}", tags[0]);
        let distinct: std::collections::HashSet<&String> = tags.iter().collect();
        assert_eq!(distinct.len(), names.len(), "{tags:?}");
        assert!(tags.iter().all(|tag| !tag.contains(['{', '}', ' '])));
    }
}
