//! Leases: one per request in flight, in a sorted set per subject (member =
//! request id, score = expiry in milliseconds on the Redis clock). A lease
//! that is not refreshed expires by itself, so a crashed relay or a lost
//! release frees its slot after one TTL at the latest.
//!
//! The functions take the set's name, so any subject (a key, an account)
//! can hold leases; the caller picks a name with the subject's hash tag.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::Script;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::store::{Conn, StoreResult};

/// Lua shared by every script that takes leases. Times come from the Redis
/// clock, so relay instances with drifting clocks agree on expiry.
pub(crate) const LUA_PRELUDE: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Drops expired leases and counts the live ones.
local function live_leases(set, now)
  redis.call('ZREMRANGEBYSCORE', set, '-inf', now)
  return redis.call('ZCARD', set)
end
-- The set lives as long as its longest lease.
local function keep_set(set)
  local top = redis.call('ZRANGE', set, -1, -1, 'WITHSCORES')
  if top[2] then redis.call('PEXPIREAT', set, top[2]) end
end
local function add_lease(set, member, now, ttl)
  redis.call('ZADD', set, now + ttl, member)
  keep_set(set)
end
";

/// KEYS: set. ARGV: member, ttl ms, limit. Returns {admitted, in use}.
const ACQUIRE: &str = r"
local now = now_ms()
local in_use = live_leases(KEYS[1], now)
if in_use >= tonumber(ARGV[3]) then return {0, in_use} end
add_lease(KEYS[1], ARGV[1], now, tonumber(ARGV[2]))
return {1, in_use + 1}
";

/// KEYS: set. ARGV: member, ttl ms. Extends the lease; one that expired
/// (a Redis outage longer than the TTL) is put back, since its request
/// still runs and must count, even past the limit for a moment. Returns 1
/// when the lease was still live, 0 when it was put back.
const REFRESH: &str = r"
local now = now_ms()
local expiry = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0')
add_lease(KEYS[1], ARGV[1], now, tonumber(ARGV[2]))
if expiry > now then return 1 end
return 0
";

static ACQUIRE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{LUA_PRELUDE}{ACQUIRE}")));
static REFRESH_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{LUA_PRELUDE}{REFRESH}")));

/// The answer of [`acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    pub admitted: bool,
    /// Live leases after the call, this one included when admitted.
    pub in_use: u64,
}

/// Takes a lease on `set` for `member` unless `limit` leases are live.
/// Wrap the call in a [`Lease::pending`] guard so cancellation cannot leak
/// the lease.
pub async fn acquire(
    conn: &mut Conn,
    set: &str,
    member: &str,
    ttl: Duration,
    limit: u32,
) -> StoreResult<Acquired> {
    let (admitted, in_use): (i64, u64) = ACQUIRE_SCRIPT
        .key(set)
        .arg(member)
        .arg(millis(ttl))
        .arg(limit)
        .invoke_async(conn)
        .await?;
    Ok(Acquired {
        admitted: admitted == 1,
        in_use,
    })
}

/// Takes a lease on `set` for `member` unless `limit` leases are live, and
/// holds it: refreshed every third of `ttl`, released when dropped. `None`
/// when the limit is reached.
pub async fn take(
    conn: &Conn,
    set: &str,
    member: &str,
    ttl: Duration,
    limit: u32,
) -> StoreResult<Option<Lease>> {
    let mut lease = Lease::pending(conn.clone(), set.to_owned(), member.to_owned());
    let acquired = acquire(&mut conn.clone(), set, member, ttl, limit).await?;
    if !acquired.admitted {
        lease.disarm();
        return Ok(None);
    }
    lease.keep_alive(ttl);
    Ok(Some(lease))
}

pub async fn release(conn: &mut Conn, set: &str, member: &str) -> StoreResult<()> {
    let _: i64 = redis::cmd("ZREM")
        .arg(set)
        .arg(member)
        .query_async(conn)
        .await?;
    Ok(())
}

/// Extends the lease by `ttl` from now; `false` when it had expired and
/// was put back.
pub async fn refresh(conn: &mut Conn, set: &str, member: &str, ttl: Duration) -> StoreResult<bool> {
    let refreshed: i64 = REFRESH_SCRIPT
        .key(set)
        .arg(member)
        .arg(millis(ttl))
        .invoke_async(conn)
        .await?;
    Ok(refreshed == 1)
}

/// The live leases of `set`: member and time left, soonest first.
pub async fn live(conn: &mut Conn, set: &str) -> StoreResult<Vec<(String, Duration)>> {
    let ((secs, micros), leases): ((u64, u64), Vec<(String, f64)>) = redis::pipe()
        .cmd("TIME")
        .cmd("ZRANGE")
        .arg(set)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(conn)
        .await?;
    let now = (secs * 1000 + micros / 1000) as f64;
    Ok(leases
        .into_iter()
        .filter(|(_, expiry)| *expiry > now)
        .map(|(member, expiry)| (member, Duration::from_secs_f64((expiry - now) / 1000.0)))
        .collect())
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Holds one lease: refreshes it while alive, releases it when dropped,
/// however the holder ends (completion, error, or a cancelled future).
pub struct Lease {
    held: Option<Held>,
}

struct Held {
    conn: Conn,
    set: String,
    member: String,
    refresher: Option<JoinHandle<()>>,
    on_release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.held {
            Some(held) => f
                .debug_struct("Lease")
                .field("set", &held.set)
                .field("member", &held.member)
                .finish_non_exhaustive(),
            None => f.write_str("Lease(disarmed)"),
        }
    }
}

impl Lease {
    /// A guard taken before the script that may add the lease runs: if the
    /// caller is cancelled while the script is in flight, the release goes
    /// out on the same connection after it, and nothing leaks.
    pub fn pending(conn: Conn, set: String, member: String) -> Lease {
        Lease {
            held: Some(Held {
                conn,
                set,
                member,
                refresher: None,
                on_release: None,
            }),
        }
    }

    /// The lease was taken: refresh it every third of `ttl` from now on.
    pub fn keep_alive(&mut self, ttl: Duration) {
        if let Some(held) = &mut self.held {
            let (conn, set, member) = (held.conn.clone(), held.set.clone(), held.member.clone());
            held.refresher = Some(tokio::spawn(refresh_loop(conn, set, member, ttl)));
        }
    }

    /// Runs `notify` once the release has reached Redis (or failed).
    pub fn on_release(&mut self, notify: impl FnOnce() + Send + Sync + 'static) {
        if let Some(held) = &mut self.held {
            held.on_release = Some(Box::new(notify));
        }
    }

    /// No lease was taken: drop the guard without a release.
    pub fn disarm(mut self) {
        self.held = None;
    }
}

/// The wait before a failed refresh is tried again, when shorter than the
/// refresh period: a lease that expired during an outage is back within
/// about this long once Redis is, so new requests do not take its slot.
const REFRESH_RETRY: Duration = Duration::from_secs(1);

async fn refresh_loop(mut conn: Conn, set: String, member: String, ttl: Duration) {
    let every = (ttl / 3).max(Duration::from_millis(10));
    let mut wait = every;
    loop {
        tokio::time::sleep(wait).await;
        wait = every;
        match refresh(&mut conn, &set, &member, ttl).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(lease = %member, "lease expired while its request ran; put back");
            }
            Err(err) => {
                tracing::warn!(lease = %member, error = %err, "refreshing a lease failed; retrying");
                wait = every.min(REFRESH_RETRY);
            }
        }
    }
}

/// Waits between the attempts to release a lease while Redis is away; a
/// release that never lands leaves the lease to expire by itself.
const RELEASE_RETRIES: [Duration; 4] = [
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_secs(2),
    Duration::from_secs(5),
];

/// Releases still on their way to Redis, so a stopping relay can wait for
/// them before its runtime goes (a task left then never runs).
static RELEASING: LazyLock<(AtomicUsize, Notify)> =
    LazyLock::new(|| (AtomicUsize::new(0), Notify::new()));

/// Runs `release` (of a lease, or of whatever else a request took) off the
/// caller's path, counted so that [`drain_releases`] waits for it.
pub(crate) fn spawn_release(
    runtime: &tokio::runtime::Handle,
    release: impl Future<Output = ()> + Send + 'static,
) {
    let (count, done) = &*RELEASING;
    count.fetch_add(1, Ordering::SeqCst);
    runtime.spawn(async move {
        release.await;
        if count.fetch_sub(1, Ordering::SeqCst) == 1 {
            done.notify_waiters();
        }
    });
}

/// Waits until every release under way has reached Redis or given up, at
/// most `limit`.
pub async fn drain_releases(limit: Duration) {
    let (count, done) = &*RELEASING;
    let wait = async {
        loop {
            let notified = done.notified();
            if count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    };
    let _ = tokio::time::timeout(limit, wait).await;
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(mut held) = self.held.take() else {
            return;
        };
        // Stopped first: a refresh already sent (which puts back a lease it
        // finds gone) reaches Redis before the release, on the same
        // connection, and cannot bring the lease back after it.
        if let Some(refresher) = held.refresher.take() {
            refresher.abort();
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(lease = %held.member, "no runtime to release a lease; it will expire");
            return;
        };
        spawn_release(&runtime, async move {
            let mut retries = RELEASE_RETRIES.iter();
            loop {
                let Err(err) = release(&mut held.conn, &held.set, &held.member).await else {
                    break;
                };
                let Some(delay) = retries.next() else {
                    tracing::warn!(lease = %held.member, error = %err, "releasing a lease failed; it will expire");
                    break;
                };
                tokio::time::sleep(*delay).await;
            }
            if let Some(notify) = held.on_release.take() {
                notify();
            }
        });
    }
}
