//! Accounts in Redis: records, health, last use and sticky sessions.
//!
//! Every key here carries the `{accounts}` hash tag, so each script below
//! touches one slot and runs unchanged on Redis Cluster. Records change
//! only through these functions, and each change bumps a version counter:
//! instances cache the records and learn from the pick script, in the same
//! round trip, when their copy is out of date.

use std::sync::LazyLock;
use std::time::Duration;

use redis::AsyncCommands;

use super::records::{AccountStatus, Cooldown};
use super::{AccountRecord, Store, StoreResult, decode, encode};

/// One account as the pick script sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickArg<'a> {
    pub id: &'a str,
    /// 0 for the key's own accounts, 1 for the shared pool it spills into.
    pub tier: u8,
    pub priority: u32,
}

/// What the pick script saw of one candidate, before its own writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// Time left in a cooldown; `None` when there is none.
    pub cooldown: Option<Duration>,
    /// Held out until an operator acts (unauthorized, blocked).
    pub held: bool,
    /// Milliseconds since the epoch, Redis's clock; `None` if never used.
    pub last_used_ms: Option<u64>,
}

impl Seen {
    pub fn usable(&self) -> bool {
        self.cooldown.is_none() && !self.held
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickReply {
    /// The records changed since the caller's copy was loaded.
    Stale,
    Picked {
        /// The account the request goes to first; its last use and the
        /// sticky mapping are written already.
        chosen: Option<String>,
        /// The sticky mapping as found, before the script's write.
        sticky: Option<String>,
        /// One entry per candidate, in the order given.
        seen: Vec<Seen>,
    },
}

/// An account's health as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Health {
    pub status: Option<AccountStatus>,
    pub cooldown: Option<(Cooldown, Duration)>,
    pub last_used_ms: Option<u64>,
}

impl Store {
    /// Inserts or replaces the account with this id.
    pub async fn put_account(&self, record: &AccountRecord) -> StoreResult<()> {
        let _: () = redis::Script::new(PUT_ACCOUNT)
            .key(self.names.accounts())
            .key(self.names.accounts_version())
            .arg(&record.id)
            .arg(encode(record))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
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
            .arg(id)
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

    /// The hot path's one round trip for the account: checks the caller's
    /// records are current, reads every candidate's health and last use and
    /// the sticky mapping, picks the first account and records the pick.
    /// `version` `*` skips the check.
    pub async fn pick(
        &self,
        version: &str,
        candidates: &[PickArg<'_>],
        sticky: Option<(&str, Duration)>,
    ) -> StoreResult<PickReply> {
        let mut call = PICK.prepare_invoke();
        call.key(self.names.accounts_version())
            .key(self.names.account_status())
            .key(self.names.accounts_last_used())
            .key(
                self.names
                    .sticky(sticky.map_or("-", |(session, _)| session)),
            )
            .arg(version)
            .arg(sticky.map_or(0, |(_, ttl)| millis(ttl)))
            .arg(if sticky.is_some() { "1" } else { "0" });
        for candidate in candidates {
            call.key(self.names.cooldown(candidate.id))
                .arg(candidate.id)
                .arg(candidate.tier)
                .arg(candidate.priority);
        }
        let reply: (String, String, String, Vec<i64>) =
            call.invoke_async(&mut self.conn.clone()).await?;
        Ok(pick_reply(reply))
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

    /// Health of each account, in the order of `ids`.
    pub async fn account_health(&self, ids: &[&str]) -> StoreResult<Vec<Health>> {
        let script = redis::Script::new(HEALTH);
        let mut call = script.prepare_invoke();
        call.key(self.names.account_status())
            .key(self.names.accounts_last_used());
        for id in ids {
            call.key(self.names.cooldown(id)).arg(*id);
        }
        type Row = (Option<String>, Option<String>, i64, Option<String>);
        let rows: Vec<Row> = call.invoke_async(&mut self.conn.clone()).await?;
        rows.into_iter()
            .map(|(status, cooldown, left, used)| self.health_row(status, cooldown, left, used))
            .collect()
    }

    fn health_row(
        &self,
        status: Option<String>,
        cooldown: Option<String>,
        left_ms: i64,
        used: Option<String>,
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
        })
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn pick_reply((outcome, chosen, sticky, flat): (String, String, String, Vec<i64>)) -> PickReply {
    if outcome != "ok" {
        return PickReply::Stale;
    }
    let seen = flat
        .chunks_exact(3)
        .map(|row| Seen {
            cooldown: (row[0] != -2)
                .then(|| Duration::from_millis(u64::try_from(row[0]).unwrap_or(u64::MAX))),
            held: row[1] != 0,
            last_used_ms: u64::try_from(row[2]).ok(),
        })
        .collect();
    let some = |text: String| (!text.is_empty()).then_some(text);
    PickReply::Picked {
        chosen: some(chosen),
        sticky: some(sticky),
        seen,
    }
}

/// KEYS: records, version. ARGV: id, record.
const PUT_ACCOUNT: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
";

/// KEYS: records, version, status, last_used, cooldown. ARGV: id.
const DELETE_ACCOUNT: &str = r"
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('DEL', KEYS[5])
redis.call('INCR', KEYS[2])
return removed
";

/// KEYS: records, version.
const LOAD_ACCOUNTS: &str = r"
return {redis.call('GET', KEYS[2]) or '0', redis.call('HGETALL', KEYS[1])}
";

/// KEYS: version, status, last_used, sticky, then one cooldown key per
/// candidate. ARGV: cached version ('*' skips the check), sticky TTL in ms,
/// '1' when there is a session, then id, tier, priority per candidate.
///
/// Replies {outcome, chosen, sticky as found, {pttl, held, last_used} per
/// candidate}. The choice is the sticky account when it is usable, else
/// the usable candidate lowest in (tier, priority, last use, position):
/// the same rule as `scheduler::order`, which orders the rest in Rust.
static PICK: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(PICK_LUA));

const PICK_LUA: &str = r"
local version = redis.call('GET', KEYS[1]) or '0'
if ARGV[1] ~= '*' and version ~= ARGV[1] then return {'stale', '', '', {}} end
local session = ARGV[3] == '1'
local sticky = false
if session then sticky = redis.call('GET', KEYS[4]) end
local seen = {}
local best, best_rank, sticky_at = nil, nil, nil
local n = (#ARGV - 3) / 3
for i = 1, n do
  local id = ARGV[3 * i + 1]
  local tier = tonumber(ARGV[3 * i + 2])
  local priority = tonumber(ARGV[3 * i + 3])
  local ttl = redis.call('PTTL', KEYS[4 + i])
  local held = redis.call('HEXISTS', KEYS[2], id)
  local used = tonumber(redis.call('ZSCORE', KEYS[3], id) or '-1')
  seen[#seen + 1] = ttl
  seen[#seen + 1] = held
  seen[#seen + 1] = used
  if ttl == -2 and held == 0 then
    if id == sticky then sticky_at = i end
    local r = best_rank
    if r == nil or tier < r[1] or (tier == r[1] and (priority < r[2]
        or (priority == r[2] and used < r[3]))) then
      best = i
      best_rank = {tier, priority, used}
    end
  end
end
local chosen = sticky_at or best
if not chosen then return {'ok', '', sticky or '', seen} end
local id = ARGV[3 * chosen + 1]
local t = redis.call('TIME')
redis.call('ZADD', KEYS[3], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), id)
if session then redis.call('SET', KEYS[4], id, 'PX', ARGV[2]) end
return {'ok', id, sticky or '', seen}
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

/// KEYS: status, last_used, then one cooldown key per id. ARGV: ids.
const HEALTH: &str = r"
local rows = {}
for i = 1, #ARGV do
  local id = ARGV[i]
  rows[i] = {
    redis.call('HGET', KEYS[1], id),
    redis.call('GET', KEYS[2 + i]),
    redis.call('PTTL', KEYS[2 + i]),
    redis.call('ZSCORE', KEYS[2], id),
  }
end
return rows
";
