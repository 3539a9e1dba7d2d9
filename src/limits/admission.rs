//! The one round trip before a key's request is forwarded: concurrency,
//! rate window and budgets checked, and the lease and the window's request
//! count taken, atomically, in one script on the key's hash tag.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use time::{OffsetDateTime, UtcOffset};

use super::counters::KeyCounters;
use super::lease::{LUA_PRELUDE, Lease, millis};
use super::spec::{Family, KeyLimits};
use crate::store::{Store, StoreError, StoreResult};

/// KEYS: leases, window, usage day, usage total, spend week, spend day,
/// spend total. ARGV: member, lease ttl ms, concurrency; window secs,
/// requests, tokens, cost; daily, weekly, total; family, family daily,
/// weekly, total. Zero limits nothing. Checks run in the order of the
/// relay's pipeline; the first one that fails is the answer.
const ADMIT: &str = r"
local function used(key, field)
  return tonumber(redis.call('HGET', key, field) or '0')
end
local now = now_ms()
local concurrency = tonumber(ARGV[3])
local in_use = 0
if concurrency > 0 then
  in_use = live_leases(KEYS[1], now)
  if in_use >= concurrency then return {'concurrency', in_use, concurrency} end
end
local window = tonumber(ARGV[4])
if window > 0 then
  local rates = {{'requests', ARGV[5]}, {'tokens', ARGV[6]}, {'cost_nano_usd', ARGV[7]}}
  for _, rate in ipairs(rates) do
    local limit = tonumber(rate[2])
    local n = used(KEYS[2], rate[1])
    if limit > 0 and n >= limit then return {'rate:' .. rate[1], n, limit} end
  end
end
local family = ARGV[11]
local budgets = {
  {'daily', KEYS[3], 'cost_nano_usd', ARGV[8]},
  {'weekly', KEYS[5], 'all', ARGV[9]},
  {'total', KEYS[4], 'cost_nano_usd', ARGV[10]},
  {'family_daily', KEYS[6], family, ARGV[12]},
  {'family_weekly', KEYS[5], family, ARGV[13]},
  {'family_total', KEYS[7], family, ARGV[14]},
}
for _, budget in ipairs(budgets) do
  local limit = tonumber(budget[4])
  if limit > 0 then
    local n = used(budget[2], budget[3])
    if n >= limit then return {budget[1], n, limit} end
  end
end
if concurrency > 0 then
  add_lease(KEYS[1], ARGV[1], now, tonumber(ARGV[2]))
  in_use = in_use + 1
end
if window > 0 then
  redis.call('HINCRBY', KEYS[2], 'requests', 1)
  redis.call('EXPIRE', KEYS[2], window * 2)
end
return {'admitted', in_use, concurrency}
";

static ADMIT_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{LUA_PRELUDE}{ADMIT}")));

/// Why a request may not go ahead now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Concurrency {
        limit: u64,
        in_use: u64,
    },
    Rate {
        kind: RateKind,
        limit: u64,
        used: u64,
        window_secs: u64,
        resets_at: OffsetDateTime,
    },
    Budget {
        period: BudgetPeriod,
        family: Option<Family>,
        limit_nano_usd: u64,
        used_nano_usd: u64,
        /// `None` for the total budget, which never resets.
        resets_at: Option<OffsetDateTime>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKind {
    Requests,
    Tokens,
    Cost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetPeriod {
    Daily,
    Weekly,
    Total,
}

/// What one run of the script decided.
pub enum Decision {
    /// Go ahead; the lease (when the key has a concurrency limit) must
    /// live as long as the answer.
    Admitted(Option<Lease>),
    Refused(Refusal),
}

/// One request of `key_id` for `model`, identified by `request_id`.
pub struct Ask<'a> {
    pub key_id: &'a str,
    pub limits: &'a KeyLimits,
    pub model: &'a str,
    pub request_id: &'a str,
    pub lease_ttl: Duration,
    pub offset: UtcOffset,
}

pub async fn decide(store: &Store, ask: &Ask<'_>) -> StoreResult<Decision> {
    let limits = ask.limits;
    if !limits.checks_anything() {
        return Ok(Decision::Admitted(None));
    }
    let now = OffsetDateTime::now_utc();
    let counters = KeyCounters::at(store.names(), ask.key_id, limits, now, ask.offset);
    let family = Family::of(ask.model);
    let family_budgets = limits.family_budgets(family);
    let window = limits.window().unwrap_or_default();
    let window_key = counters
        .window
        .as_ref()
        .map_or(&counters.leases, |w| &w.name);
    let mut lease = (limits.concurrency > 0).then(|| {
        Lease::pending(
            store.conn(),
            counters.leases.clone(),
            ask.request_id.to_owned(),
        )
    });
    let mut invocation = ADMIT_SCRIPT.prepare_invoke();
    invocation
        .key(&counters.leases)
        .key(window_key)
        .key(&counters.usage_day)
        .key(&counters.usage_total)
        .key(&counters.spend_week)
        .key(&counters.spend_day)
        .key(&counters.spend_total)
        .arg(ask.request_id)
        .arg(millis(ask.lease_ttl))
        .arg(limits.concurrency)
        .arg(window.window_secs)
        .arg(window.requests)
        .arg(window.tokens)
        .arg(window.cost_nano_usd)
        .arg(limits.budgets.daily_nano_usd)
        .arg(limits.budgets.weekly_nano_usd)
        .arg(limits.budgets.total_nano_usd)
        .arg(family.map_or("", Family::as_str))
        .arg(family_budgets.daily_nano_usd)
        .arg(family_budgets.weekly_nano_usd)
        .arg(family_budgets.total_nano_usd);
    let (verdict, used, limit): (String, u64, u64) =
        invocation.invoke_async(&mut store.conn()).await?;
    if verdict == "admitted" {
        if let Some(lease) = &mut lease {
            lease.keep_alive(ask.lease_ttl);
        }
        return Ok(Decision::Admitted(lease));
    }
    if let Some(lease) = lease {
        lease.disarm();
    }
    refusal(&verdict, used, limit, &counters, family)
        .map(Decision::Refused)
        .ok_or(StoreError::Script {
            script: "admission",
            reply: verdict,
        })
}

fn refusal(
    verdict: &str,
    used: u64,
    limit: u64,
    counters: &KeyCounters,
    family: Option<Family>,
) -> Option<Refusal> {
    let rate = |kind| {
        let window = counters.window.as_ref();
        Refusal::Rate {
            kind,
            limit,
            used,
            window_secs: window.map_or(0, |w| w.limits.window_secs),
            resets_at: window.map_or(counters.day_ends, |w| w.ends),
        }
    };
    let budget = |period, family| Refusal::Budget {
        period,
        family,
        limit_nano_usd: limit,
        used_nano_usd: used,
        resets_at: match period {
            BudgetPeriod::Daily => Some(counters.day_ends),
            BudgetPeriod::Weekly => Some(counters.week_ends),
            BudgetPeriod::Total => None,
        },
    };
    Some(match verdict {
        "concurrency" => Refusal::Concurrency {
            limit,
            in_use: used,
        },
        "rate:requests" => rate(RateKind::Requests),
        "rate:tokens" => rate(RateKind::Tokens),
        "rate:cost_nano_usd" => rate(RateKind::Cost),
        "daily" => budget(BudgetPeriod::Daily, None),
        "weekly" => budget(BudgetPeriod::Weekly, None),
        "total" => budget(BudgetPeriod::Total, None),
        "family_daily" => budget(BudgetPeriod::Daily, family),
        "family_weekly" => budget(BudgetPeriod::Weekly, family),
        "family_total" => budget(BudgetPeriod::Total, family),
        _ => return None,
    })
}

impl Refusal {
    pub fn is_concurrency(&self) -> bool {
        matches!(self, Refusal::Concurrency { .. })
    }
}
