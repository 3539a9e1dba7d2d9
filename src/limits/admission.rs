//! The one round trip before a key's request is forwarded: concurrency,
//! rate window and budgets checked, and the lease and the window's request
//! count taken, atomically, in one script on the key's hash tag.
//!
//! When the relay stops waiting for that script's answer (Redis did not
//! answer in time, or the caller went away), the script may have run, may
//! still run later (a stalled connection delivers it when it resumes) or
//! may never run. The request is not forwarded, so whatever the script
//! took is taken back, once, off the request's path: see [`Undo`].

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use redis::Script;
use time::{OffsetDateTime, UtcOffset};

use super::counters::KeyCounters;
use super::lease::{self, LUA_PRELUDE, Lease, millis};
use super::spec::{Family, KeyLimits};
use crate::store::{Conn, Store, StoreError, StoreResult};

/// How long the relay tries to undo an admission it gave up on.
const UNDO_FOR: Duration = Duration::from_secs(120);
/// The first wait between attempts to undo; it doubles up to the last.
const UNDO_RETRY_FIRST: Duration = Duration::from_millis(100);
const UNDO_RETRY_LAST: Duration = Duration::from_secs(5);
/// How long an admission's record of what it took is kept: past every
/// attempt to undo it, which start a Redis response timeout (seconds)
/// after the admission was sent. Every admitted request of a key with a
/// concurrency limit or a rate window leaves one for this long.
const ADMITTED_TTL: Duration = UNDO_FOR.saturating_add(Duration::from_secs(60));
/// How long the cancellation of an admission that has not run yet is
/// kept, for that admission to meet it however late it reaches Redis.
const CANCELLED_TTL: Duration = Duration::from_secs(3600);

/// KEYS: leases, window, usage day, usage total, spend week, spend day,
/// spend total, admitted, cancelled. ARGV: member, lease ttl ms,
/// concurrency; window secs, requests, tokens, cost; daily, weekly, total;
/// family, family daily, weekly, total; admitted ttl ms. Zero limits
/// nothing. Checks run in the order of the relay's pipeline; the first one
/// that fails is the answer.
///
/// What an admission takes (`lease`, `window`) is recorded in `admitted`
/// for [`UNDO`]. An admission [`UNDO`] cancelled before it ran answers
/// `cancelled` and takes nothing; nobody reads that answer, since the
/// relay cancels only admissions it stopped waiting for.
const ADMIT: &str = r"
local function used(key, field)
  return tonumber(redis.call('HGET', key, field) or '0')
end
if redis.call('EXISTS', KEYS[9]) == 1 then return {'cancelled', 0, 0} end
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
local taken = {}
if concurrency > 0 then
  add_lease(KEYS[1], ARGV[1], now, tonumber(ARGV[2]))
  in_use = in_use + 1
  taken[#taken + 1] = 'lease'
end
if window > 0 then
  redis.call('HINCRBY', KEYS[2], 'requests', 1)
  redis.call('EXPIRE', KEYS[2], window * 2)
  taken[#taken + 1] = 'window'
end
if #taken > 0 then
  redis.call('SET', KEYS[8], table.concat(taken, ' '), 'PX', ARGV[15])
end
return {'admitted', in_use, concurrency}
";

/// KEYS: leases, window, admitted, cancelled, as the admission named
/// them. ARGV: member, cancelled ttl ms. Takes back what the admission
/// took, if it ran; else cancels it, so it takes nothing when it runs.
/// Either way once: the record of what was taken goes with the undo.
/// Returns 1 when it took something back, 0 when it cancelled.
const UNDO: &str = r"
local taken = redis.call('GET', KEYS[3])
if not taken then
  redis.call('SET', KEYS[4], '1', 'PX', ARGV[2])
  return 0
end
if string.find(taken, 'lease', 1, true) then redis.call('ZREM', KEYS[1], ARGV[1]) end
if string.find(taken, 'window', 1, true) and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'requests', -1)
end
redis.call('DEL', KEYS[3])
return 1
";

static ADMIT_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{LUA_PRELUDE}{ADMIT}")));
static UNDO_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(UNDO));

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
    Admitted(Admission),
    Refused(Refusal),
}

/// A request let through: its lease (when the key has a concurrency
/// limit), which must live as long as the answer, and what it took, to
/// take back should the request end with no upstream answer after all.
pub struct Admission {
    pub lease: Option<Lease>,
    taken: Option<Taken>,
}

impl Admission {
    /// For a key without limits: nothing held, nothing taken.
    pub fn free() -> Admission {
        Admission {
            lease: None,
            taken: None,
        }
    }

    /// The lease, and what takes the admission back.
    pub fn split(self) -> (Option<Lease>, TakeBack) {
        (self.lease, TakeBack(self.taken))
    }
}

/// Takes back what an admission took (its count in the rate window, its
/// lease), once, off the caller's path: for a request the relay refused
/// after admitting it, with nothing from an upstream (Redis stopped
/// answering before an account was picked, or no account could serve). A
/// request refused with 503 uses up nothing.
pub struct TakeBack(Option<Taken>);

impl TakeBack {
    pub fn run(self) {
        if let Some(taken) = self.0 {
            taken.spawn_undo();
        }
    }
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
        return Ok(Decision::Admitted(Admission::free()));
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
    let names = store.names();
    let tag = names.key_tag(ask.key_id);
    let admitted = names.admitted(&tag, ask.request_id);
    let cancelled = names.cancelled(&tag, ask.request_id);
    // Armed before the script is sent: a caller that stops waiting for
    // its answer, by an error or by being cancelled, takes back what it
    // took. An admission that takes nothing needs no undo.
    let undo = Undo(
        (limits.concurrency > 0 || window.window_secs > 0).then(|| Taken {
            conn: store.conn(),
            leases: counters.leases.clone(),
            window: window_key.clone(),
            admitted: admitted.clone(),
            cancelled: cancelled.clone(),
            member: ask.request_id.to_owned(),
        }),
    );
    let mut invocation = ADMIT_SCRIPT.prepare_invoke();
    invocation
        .key(&counters.leases)
        .key(window_key)
        .key(&counters.usage_day)
        .key(&counters.usage_total)
        .key(&counters.spend_week)
        .key(&counters.spend_day)
        .key(&counters.spend_total)
        .key(&admitted)
        .key(&cancelled)
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
        .arg(family_budgets.total_nano_usd)
        .arg(millis(ADMITTED_TTL));
    let (verdict, used, limit): (String, u64, u64) =
        invocation.invoke_async(&mut store.conn()).await?;
    let taken = undo.disarm();
    if verdict == "admitted" {
        if let Some(lease) = &mut lease {
            lease.keep_alive(ask.lease_ttl);
        }
        return Ok(Decision::Admitted(Admission { lease, taken }));
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

/// Where one admission may take something (a lease, a count in the
/// window): enough to take it back.
struct Taken {
    conn: Conn,
    leases: String,
    window: String,
    admitted: String,
    cancelled: String,
    member: String,
}

/// Takes back what one admission took when dropped before
/// [`Undo::disarm`], that is before the relay read the script's answer.
/// The undo runs off the request's path and is retried while Redis does
/// not answer, for [`UNDO_FOR`] at most; past that, a lease still expires
/// by itself and a window count with its window.
struct Undo(Option<Taken>);

impl Undo {
    /// The script's answer was read: what it took is the request's.
    fn disarm(mut self) -> Option<Taken> {
        self.0.take()
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(taken) = self.0.take() {
            taken.spawn_undo();
        }
    }
}

impl Taken {
    /// Runs [`Taken::undo`] off the caller's path, counted with the lease
    /// releases a stopping relay waits for.
    fn spawn_undo(self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(request_id = %self.member, "no runtime to undo an admission");
            return;
        };
        lease::spawn_release(&runtime, self.undo());
    }

    async fn undo(mut self) {
        let started = Instant::now();
        let mut wait = UNDO_RETRY_FIRST;
        loop {
            match self.attempt().await {
                Ok(true) => {
                    tracing::info!(request_id = %self.member, "admission the relay gave up on taken back");
                    return;
                }
                Ok(false) => {
                    tracing::info!(request_id = %self.member, "admission the relay gave up on cancelled before it ran");
                    return;
                }
                Err(err) if started.elapsed() + wait < UNDO_FOR => {
                    tracing::debug!(request_id = %self.member, error = %err, "undoing an admission failed; retrying");
                }
                Err(err) => {
                    tracing::warn!(request_id = %self.member, error = %err, "undoing an admission failed; what it took expires by itself");
                    return;
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(UNDO_RETRY_LAST);
        }
    }

    /// `true` when it took something back, `false` when it cancelled.
    async fn attempt(&mut self) -> StoreResult<bool> {
        let undone: i64 = UNDO_SCRIPT
            .key(&self.leases)
            .key(&self.window)
            .key(&self.admitted)
            .key(&self.cancelled)
            .arg(&self.member)
            .arg(millis(CANCELLED_TTL))
            .invoke_async(&mut self.conn)
            .await?;
        Ok(undone == 1)
    }
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
