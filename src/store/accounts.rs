//! Accounts in Redis: records, health, last use, sticky sessions and the
//! copy of each account's spending today that daily quotas are read from.
//!
//! Every key here carries the `{accounts}` hash tag, so each script below
//! touches one slot and runs unchanged on Redis Cluster. Records change
//! only through these functions, and each change writes a new random
//! version: instances cache the records and learn from the pick script, in
//! the same round trip, when their copy is out of date. A counter would not
//! do: after Redis loses its data and is seeded again, it can count back up
//! to the very number an instance cached.

use std::time::Duration;

use redis::AsyncCommands;
use time::Date;

use super::records::{AccountStatus, Cooldown};
use super::{AccountRecord, Put, Store, StoreError, StoreResult, decode, encode};
use crate::usage::record::Period;

/// An account's health as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Health {
    pub status: Option<AccountStatus>,
    pub cooldown: Option<(Cooldown, Duration)>,
    pub last_used_ms: Option<u64>,
    /// Requests holding a lease on the account now.
    pub in_flight: u64,
    /// Cost in the usage day asked about, as daily quotas see it.
    pub spent_nano_usd: u64,
}

/// How long the copy of a day's spending is kept: past the day in any
/// usage offset, which is all a quota reads.
const SPEND_TTL: Duration = Duration::from_secs(3 * 86_400);

impl Store {
    /// Inserts or replaces the account with this id.
    pub async fn put_account(&self, record: &AccountRecord) -> StoreResult<()> {
        self.write_account(record, Put::Upsert).await
    }

    /// Reads the account, applies `change` and writes it back over the
    /// record that is there: `None` when there is no such account (any
    /// more), so one removed meanwhile stays removed.
    pub async fn update_account(
        &self,
        id: &str,
        change: impl FnOnce(&mut AccountRecord),
    ) -> StoreResult<Option<AccountRecord>> {
        let Some(mut record) = self.account(id).await? else {
            return Ok(None);
        };
        change(&mut record);
        match self.write_account(&record, Put::Existing).await {
            Ok(()) => Ok(Some(record)),
            Err(StoreError::Gone { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Writes the account; with [`Put::Create`], only when its id is new.
    pub async fn write_account(&self, record: &AccountRecord, write: Put) -> StoreResult<()> {
        let written: i64 = redis::Script::new(PUT_ACCOUNT)
            .key(self.names.accounts())
            .key(self.names.accounts_version())
            .arg(&record.id)
            .arg(encode(record))
            .arg(fresh_version())
            .arg(write.flag())
            .invoke_async(&mut self.conn.clone())
            .await?;
        match (written, write) {
            (1, _) => Ok(()),
            (_, Put::Existing) => Err(StoreError::Gone {
                kind: "account",
                id: record.id.clone(),
            }),
            _ => Err(StoreError::Exists {
                kind: "account",
                id: record.id.clone(),
            }),
        }
    }

    pub async fn account(&self, id: &str) -> StoreResult<Option<AccountRecord>> {
        let name = self.names.accounts();
        let raw: Option<String> = self.conn.clone().hget(&name, id).await?;
        raw.map(|json| decode(&name, &json)).transpose()
    }

    /// Removes the record with its health and last use.
    pub async fn delete_account(&self, id: &str) -> StoreResult<bool> {
        let removed: i64 = redis::Script::new(DELETE_ACCOUNT)
            .key(self.names.accounts())
            .key(self.names.accounts_version())
            .key(self.names.account_status())
            .key(self.names.accounts_last_used())
            .key(self.names.cooldown(id))
            .key(self.names.account_leases(id))
            .arg(id)
            .arg(fresh_version())
            .invoke_async(&mut self.conn.clone())
            .await?;
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

    /// The records' version and their JSON, read together.
    pub async fn load_accounts(&self) -> StoreResult<(String, Vec<(String, String)>)> {
        Ok(redis::Script::new(LOAD_ACCOUNTS)
            .key(self.names.accounts())
            .key(self.names.accounts_version())
            .invoke_async(&mut self.conn.clone())
            .await?)
    }

    /// Keeps the account out of the pool for `duration`, unless a longer
    /// cooldown is already running. Returns the time left in the one that
    /// holds.
    pub async fn cool_down(
        &self,
        id: &str,
        cooldown: &Cooldown,
        duration: Duration,
    ) -> StoreResult<Duration> {
        let left: i64 = redis::Script::new(COOL_DOWN)
            .key(self.names.cooldown(id))
            .arg(encode(cooldown))
            .arg(millis(duration).max(1))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(Duration::from_millis(u64::try_from(left).unwrap_or(0)))
    }

    /// Holds the account out of the pool until an operator acts.
    pub async fn set_account_status(&self, id: &str, status: &AccountStatus) -> StoreResult<()> {
        let _: () = self
            .conn
            .clone()
            .hset(self.names.account_status(), id, encode(status))
            .await?;
        Ok(())
    }

    /// Forgets the account's status and cooldown: an operator vouches for it.
    pub async fn clear_account_health(&self, id: &str) -> StoreResult<()> {
        let _: () = redis::Script::new(CLEAR_HEALTH)
            .key(self.names.account_status())
            .key(self.names.cooldown(id))
            .arg(id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// After a failover: the account that answered becomes the last used
    /// and, when there is a session, the conversation's account.
    pub async fn mark_served(&self, id: &str, sticky: Option<(&str, Duration)>) -> StoreResult<()> {
        let _: () = redis::Script::new(SERVED)
            .key(self.names.accounts_last_used())
            .key(
                self.names
                    .sticky(sticky.map_or("-", |(session, _)| session)),
            )
            .arg(id)
            .arg(sticky.map_or(0, |(_, ttl)| millis(ttl)))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// The account a session is mapped to, if any.
    pub async fn sticky_account(&self, session: &str) -> StoreResult<Option<String>> {
        Ok(self.conn.clone().get(self.names.sticky(session)).await?)
    }

    /// Adds costs to the accounts' spending on `day`, once per `write_id`
    /// however often the write is retried. Sits beside the account's
    /// own usage counters (on another hash tag), so the pick script can
    /// read it in its one slot. Returns the additions Redis refused.
    pub async fn add_account_spend(
        &self,
        write_id: &str,
        day: Date,
        costs: &std::collections::BTreeMap<String, u64>,
    ) -> StoreResult<Vec<String>> {
        let day = Period::Day(day);
        let mut call = ADD_SPEND.prepare_invoke();
        call.key(self.names.accounts_spend_seen(write_id, &day))
            .key(self.names.accounts_spend(&day))
            .arg(crate::usage::record::SEEN_TTL.as_secs())
            .arg(SPEND_TTL.as_secs());
        for (account_id, cost) in costs {
            call.arg(account_id).arg(cost);
        }
        Ok(call.invoke_async(&mut self.conn.clone()).await?)
    }

    /// Health of each account, in the order of `ids`, with its spending
    /// on `day`.
    pub async fn account_health(&self, ids: &[&str], day: Date) -> StoreResult<Vec<Health>> {
        let script = redis::Script::new(HEALTH);
        let mut call = script.prepare_invoke();
        call.key(self.names.account_status())
            .key(self.names.accounts_last_used())
            .key(self.names.accounts_spend(&Period::Day(day)));
        for id in ids {
            call.key(self.names.cooldown(id))
                .key(self.names.account_leases(id))
                .arg(*id);
        }
        let rows: Vec<HealthRow> = call.invoke_async(&mut self.conn.clone()).await?;
        rows.into_iter().map(|row| self.health_row(row)).collect()
    }

    fn health_row(
        &self,
        (status, cooldown, left_ms, used, in_flight, spent): HealthRow,
    ) -> StoreResult<Health> {
        let status_key = self.names.account_status();
        let status = status.map(|json| decode(&status_key, &json)).transpose()?;
        let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
        let cooldown = cooldown
            .map(|json| decode::<Cooldown>(&self.names.cooldown("*"), &json))
            .transpose()?
            .map(|cooldown| (cooldown, left));
        let last_used_ms = used
            .and_then(|score| score.parse::<f64>().ok())
            .map(|ms| ms as u64);
        Ok(Health {
            status,
            cooldown,
            last_used_ms,
            in_flight: u64::try_from(in_flight).unwrap_or(0),
            spent_nano_usd: spent.and_then(|text| text.parse().ok()).unwrap_or(0),
        })
    }
}

/// Status, cooldown, its time left, last use, leases, spending.
type HealthRow = (
    Option<String>,
    Option<String>,
    i64,
    Option<String>,
    i64,
    Option<String>,
);

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A version no earlier write used: 128 random bits, or where the system
/// has no randomness, the time, the process and a counter.
fn fresh_version() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_ok() {
        return hex::encode(bytes);
    }
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let count = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{nanos:x}-{:x}-{count:x}", std::process::id())
}

/// KEYS: records, version. ARGV: id, record, new version, `create`,
/// `upsert` or `existing`. Returns 1 when written, 0 when a create found
/// the id or a write over an existing record found none.
const PUT_ACCOUNT: &str = r"
local exists = redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1
if (ARGV[4] == 'create' and exists) or (ARGV[4] == 'existing' and not exists) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
return 1
";

/// KEYS: records, version, status, last_used, cooldown, leases. ARGV: id,
/// new version.
const DELETE_ACCOUNT: &str = r"
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('DEL', KEYS[5], KEYS[6])
redis.call('SET', KEYS[2], ARGV[2])
return removed
";

/// KEYS: records, version.
const LOAD_ACCOUNTS: &str = r"
return {redis.call('GET', KEYS[2]) or '0', redis.call('HGETALL', KEYS[1])}
";

/// KEYS: cooldown. ARGV: cooldown record, duration in ms.
const COOL_DOWN: &str = r"
local left = redis.call('PTTL', KEYS[1])
local wanted = tonumber(ARGV[2])
if left == -1 then return -1 end
if left >= wanted then return left end
redis.call('SET', KEYS[1], ARGV[1], 'PX', wanted)
return wanted
";

/// KEYS: status, cooldown. ARGV: id.
const CLEAR_HEALTH: &str = r"
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
";

/// KEYS: last_used, sticky. ARGV: id, sticky TTL in ms (0: no session).
const SERVED: &str = r"
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2]) end
";

/// KEYS: seen marker, spend. ARGV: seen TTL, spend TTL (seconds), then
/// account id and cost pairs. Adds nothing if the marker exists; returns
/// the additions Redis refused (past its 64-bit range), the others made.
const ADD_SPEND_LUA: &str = r"
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return {} end
local refused = {}
for i = 3, #ARGV, 2 do
  local reply = redis.pcall('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
  if type(reply) == 'table' and reply.err then
    refused[#refused + 1] = KEYS[2] .. ' ' .. ARGV[i] .. ' +' .. ARGV[i + 1] .. ': ' .. reply.err
  end
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
return refused
";

static ADD_SPEND: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(ADD_SPEND_LUA));

/// KEYS: status, last_used, spend, then per id its cooldown and leases.
/// ARGV: ids. Reads only: expired leases are left for the next pick.
const HEALTH: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rows = {}
for i = 1, #ARGV do
  local id = ARGV[i]
  rows[i] = {
    redis.call('HGET', KEYS[1], id),
    redis.call('GET', KEYS[2 + 2 * i]),
    redis.call('PTTL', KEYS[2 + 2 * i]),
    redis.call('ZSCORE', KEYS[2], id),
    redis.call('ZCOUNT', KEYS[3 + 2 * i], string.format('(%d', now), '+inf'),
    redis.call('HGET', KEYS[3], id),
  }
end
return rows
";
