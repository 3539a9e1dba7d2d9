//! The pick script: the hot path's one round trip for the account. It
//! checks the caller's cached records are current, reads every
//! candidate's health, last use, leases and spending today, picks the
//! first account, records the pick and takes the account's lease.
//!
//! Every key it touches carries the `{accounts}` hash tag, so it runs
//! unchanged on Redis Cluster.

use std::sync::LazyLock;
use std::time::Duration;

use time::Date;

use super::{Store, StoreResult};
use crate::limits::lease::{LUA_PRELUDE, millis};
use crate::usage::record::Period;

/// One account as the pick script sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickArg<'a> {
    pub id: &'a str,
    /// 0 for the key's own accounts, 1 for the shared pool it spills into.
    pub tier: u8,
    pub priority: u32,
    /// In-flight requests at most; 0: no limit (or a request that takes
    /// no lease).
    pub concurrency_limit: u32,
    /// Cost per usage day at most, in nano-dollars; 0: no quota.
    pub daily_quota_nano_usd: u64,
}

/// What one pick asks.
#[derive(Debug, Clone)]
pub struct PickRequest<'a> {
    pub candidates: &'a [PickArg<'a>],
    /// The conversation's sticky mapping and how long it lives.
    pub sticky: Option<(&'a str, Duration)>,
    /// The lease's member (the request id) and time to live, taken on the
    /// chosen account when it has a concurrency limit.
    pub lease: Option<(&'a str, Duration)>,
    /// The usage day whose spending counts against daily quotas.
    pub day: Date,
}

impl PickRequest<'_> {
    /// A request that takes no lease is not held back by a limit.
    fn limit_of(&self, candidate: &PickArg<'_>) -> u32 {
        if self.lease.is_some() {
            candidate.concurrency_limit
        } else {
            0
        }
    }
}

/// What the pick script saw of one candidate, before its own writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seen {
    /// Time left in a cooldown; `None` when there is none.
    pub cooldown: Option<Duration>,
    /// Held out until an operator acts (unauthorized, blocked).
    pub held: bool,
    /// Milliseconds since the epoch, Redis's clock; `None` if never used.
    pub last_used_ms: Option<u64>,
    /// Live leases; counted only when the account has a limit.
    pub in_use: u64,
    /// The candidate's concurrency limit, as given to the script.
    pub concurrency_limit: u32,
    /// Cost today; read only when the account has a quota.
    pub spent_nano_usd: u64,
    /// The candidate's daily quota, as given to the script.
    pub daily_quota_nano_usd: u64,
}

impl Seen {
    /// Every lease the limit allows is taken.
    pub fn full(&self) -> bool {
        self.concurrency_limit > 0 && self.in_use >= u64::from(self.concurrency_limit)
    }

    /// Today's cost has reached the daily quota.
    pub fn over_quota(&self) -> bool {
        self.daily_quota_nano_usd > 0 && self.spent_nano_usd >= self.daily_quota_nano_usd
    }

    pub fn usable(&self) -> bool {
        self.cooldown.is_none() && !self.held && !self.full() && !self.over_quota()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickReply {
    /// The records changed since the caller's copy was loaded.
    Stale,
    Picked {
        /// The account the request goes to first; its last use, the
        /// sticky mapping and its lease are written already.
        chosen: Option<String>,
        /// The sticky mapping as found, before the script's write.
        sticky: Option<String>,
        /// One entry per candidate, in the order given.
        seen: Vec<Seen>,
    },
}

impl Store {
    /// Picks the first account for a request. `version` `*` skips the
    /// check of the cached records.
    pub async fn pick(&self, version: &str, request: &PickRequest<'_>) -> StoreResult<PickReply> {
        let names = &self.names;
        let mut call = PICK.prepare_invoke();
        call.key(names.accounts_version())
            .key(names.account_status())
            .key(names.accounts_last_used())
            .key(names.sticky(request.sticky.map_or("-", |(session, _)| session)))
            .key(names.accounts_spend(&Period::Day(request.day)))
            .arg(version)
            .arg(request.sticky.map_or(0, |(_, ttl)| millis(ttl)))
            .arg(if request.sticky.is_some() { "1" } else { "0" })
            .arg(request.lease.map_or("", |(member, _)| member))
            .arg(request.lease.map_or(0, |(_, ttl)| millis(ttl)));
        for candidate in request.candidates {
            call.key(names.cooldown(candidate.id))
                .key(names.account_leases(candidate.id))
                .arg(candidate.id)
                .arg(candidate.tier)
                .arg(candidate.priority)
                .arg(request.limit_of(candidate))
                .arg(candidate.daily_quota_nano_usd);
        }
        let reply: (String, String, String, Vec<i64>) =
            call.invoke_async(&mut self.conn.clone()).await?;
        Ok(pick_reply(reply, request))
    }
}

fn pick_reply(
    (outcome, chosen, sticky, flat): (String, String, String, Vec<i64>),
    request: &PickRequest<'_>,
) -> PickReply {
    if outcome != "ok" {
        return PickReply::Stale;
    }
    let unsigned = |n: i64| u64::try_from(n).unwrap_or(0);
    let seen = flat
        .chunks_exact(5)
        .zip(request.candidates)
        .map(|(row, candidate)| Seen {
            cooldown: (row[0] != -2)
                .then(|| Duration::from_millis(u64::try_from(row[0]).unwrap_or(u64::MAX))),
            held: row[1] != 0,
            last_used_ms: u64::try_from(row[2]).ok(),
            in_use: unsigned(row[3]),
            concurrency_limit: request.limit_of(candidate),
            spent_nano_usd: unsigned(row[4]),
            daily_quota_nano_usd: candidate.daily_quota_nano_usd,
        })
        .collect();
    let some = |text: String| (!text.is_empty()).then_some(text);
    PickReply::Picked {
        chosen: some(chosen),
        sticky: some(sticky),
        seen,
    }
}

/// KEYS: version, status, last_used, sticky, spend today, then per
/// candidate its cooldown and its leases. ARGV: cached version ('*' skips
/// the check), sticky TTL in ms, '1' when there is a session, lease member,
/// lease TTL in ms, then per candidate id, tier, priority, concurrency
/// limit, daily quota (0: none).
///
/// Replies {outcome, chosen, sticky as found, {pttl, held, last_used,
/// in_use, spent} per candidate}. A candidate is usable when it is neither
/// cooling down nor held, has a free lease and has not reached its quota.
/// The choice is the sticky account when it is usable, else the usable
/// candidate lowest in (tier, priority, last use, position): the same rule
/// as `scheduler::order`, which orders the rest in Rust.
static PICK: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(&format!("{LUA_PRELUDE}{PICK_LUA}")));

const PICK_LUA: &str = r"
local version = redis.call('GET', KEYS[1]) or '0'
if ARGV[1] ~= '*' and version ~= ARGV[1] then return {'stale', '', '', {}} end
local session = ARGV[3] == '1'
local sticky = false
if session then sticky = redis.call('GET', KEYS[4]) end
local now = now_ms()
local seen = {}
local best, best_rank, sticky_at = nil, nil, nil
local n = (#ARGV - 5) / 5
for i = 1, n do
  local at = 5 * i
  local id = ARGV[at + 1]
  local tier = tonumber(ARGV[at + 2])
  local priority = tonumber(ARGV[at + 3])
  local limit = tonumber(ARGV[at + 4])
  local quota = tonumber(ARGV[at + 5])
  local ttl = redis.call('PTTL', KEYS[4 + 2 * i])
  local held = redis.call('HEXISTS', KEYS[2], id)
  local used = tonumber(redis.call('ZSCORE', KEYS[3], id) or '-1')
  local in_use = 0
  if limit > 0 then in_use = live_leases(KEYS[5 + 2 * i], now) end
  local spent = 0
  if quota > 0 then spent = tonumber(redis.call('HGET', KEYS[5], id) or '0') end
  for _, value in ipairs({ttl, held, used, in_use, spent}) do seen[#seen + 1] = value end
  local free = (limit == 0 or in_use < limit) and (quota == 0 or spent < quota)
  if ttl == -2 and held == 0 and free then
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
local id = ARGV[5 * chosen + 1]
if tonumber(ARGV[5 * chosen + 4]) > 0 then
  add_lease(KEYS[5 + 2 * chosen], ARGV[4], now, tonumber(ARGV[5]))
end
redis.call('ZADD', KEYS[3], now, id)
if session then redis.call('SET', KEYS[4], id, 'PX', ARGV[2]) end
return {'ok', id, sticky or '', seen}
";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arg(concurrency_limit: u32, daily_quota_nano_usd: u64) -> PickArg<'static> {
        PickArg {
            id: "a",
            tier: 0,
            priority: 1,
            concurrency_limit,
            daily_quota_nano_usd,
        }
    }

    fn reply(candidates: &[PickArg<'_>], lease: bool, row: [i64; 5]) -> Seen {
        let request = PickRequest {
            candidates,
            sticky: None,
            lease: lease.then_some(("req_1", Duration::from_secs(60))),
            day: time::macros::date!(2026 - 12 - 04),
        };
        let raw = ("ok".into(), String::new(), String::new(), row.to_vec());
        match pick_reply(raw, &request) {
            PickReply::Picked { seen, .. } => seen[0],
            PickReply::Stale => panic!("not stale"),
        }
    }

    #[test]
    fn a_request_without_a_lease_is_not_held_back_by_a_full_account() {
        let candidates = [arg(2, 0)];

        let leased = reply(&candidates, true, [-2, 0, 5, 2, 0]);
        let unleased = reply(&candidates, false, [-2, 0, 5, 2, 0]);

        assert!(leased.full() && !leased.usable());
        assert!(!unleased.full() && unleased.usable());
    }

    #[test]
    fn the_reply_reads_cooldown_hold_use_leases_and_spending() {
        let seen = reply(&[arg(3, 10)], true, [1500, 1, 42, 1, 10]);

        assert_eq!(seen.cooldown, Some(Duration::from_millis(1500)));
        assert!(seen.held);
        assert_eq!(seen.last_used_ms, Some(42));
        assert_eq!((seen.in_use, seen.spent_nano_usd), (1, 10));
        assert!(seen.over_quota() && !seen.full());
    }

    proptest! {
        #[test]
        fn prop_no_limit_and_no_quota_never_hold_an_account_back(
            in_use in any::<u64>(),
            spent in any::<u64>(),
        ) {
            let seen = Seen { in_use, spent_nano_usd: spent, ..Seen::default() };

            prop_assert!(seen.usable());
        }

        #[test]
        fn prop_an_account_is_full_from_its_limit_on(limit in 1u32..10, in_use in 0u64..20) {
            let seen = Seen { concurrency_limit: limit, in_use, ..Seen::default() };

            prop_assert_eq!(seen.full(), in_use >= u64::from(limit));
            prop_assert_eq!(seen.usable(), !seen.full());
        }

        #[test]
        fn prop_an_account_leaves_once_its_spending_reaches_its_quota(
            quota in 1u64..u64::MAX,
            spent in any::<u64>(),
        ) {
            let seen = Seen {
                daily_quota_nano_usd: quota,
                spent_nano_usd: spent,
                ..Seen::default()
            };

            prop_assert_eq!(seen.over_quota(), spent >= quota);
            prop_assert_eq!(seen.usable(), spent < quota);
        }
    }
}
