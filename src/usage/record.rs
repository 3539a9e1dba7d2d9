//! Usage counters in Redis: per key, account and model, per day, month and
//! total. Written after the answer, off the client's path, gathered for a
//! moment and merged into one round trip, and exactly once per request even
//! when a write is retried.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use time::{Date, OffsetDateTime, UtcOffset};
use tokio::sync::Notify;

use redis::Script;

use super::Usage;
use super::batch::Merged;
use crate::limits::KeyLimits;
use crate::limits::counters::KeyCounters;
use crate::limits::spec::Family;
use crate::store::{Store, StoreResult};

/// Counter fields, the same in every counter hash.
pub const FIELDS: [&str; 8] = [
    "requests",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_creation_5m_input_tokens",
    "cache_creation_1h_input_tokens",
    "cache_read_input_tokens",
    "cost_nano_usd",
];

const DAY_TTL: Duration = Duration::from_secs(400 * 86_400);
const MONTH_TTL: Duration = Duration::from_secs(5 * 366 * 86_400);
/// How long a write id is remembered, so a retried write is not counted
/// twice: as long as a write is retried, and a little more. Every write
/// leaves a marker per counter group (a busy relay, millions a day), so
/// not longer.
pub const SEEN_TTL: Duration = Duration::from_secs(7 * 3600);
/// While Redis is away a count is retried, the wait growing from the first
/// delay to at most the longest, for `RETRY_FOR`: an outage of hours loses
/// nothing. Well inside `SEEN_TTL`, so a write that landed but whose reply
/// was lost is still recognised when it is sent again.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(30);
const RETRY_FOR: Duration = Duration::from_secs(6 * 3600);
/// Every retry is logged up to here, then one in this many.
const RETRIES_LOGGED: usize = 5;

/// One answer's usage, ready to be counted.
#[derive(Debug, Clone)]
pub struct UsageEvent {
    pub request_id: String,
    pub key_id: String,
    pub account_id: String,
    /// The model that answered, as the upstream says.
    pub model: String,
    /// The model the client asked for: a key's family budgets are checked
    /// and charged by it, whatever an account maps it to.
    pub requested_model: String,
    pub usage: Usage,
    pub cost_nano_usd: u64,
    pub at: OffsetDateTime,
    /// The key's limits decide which limit counters the answer adds to.
    pub key_limits: Arc<KeyLimits>,
}

/// A counter hash, read back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_creation_5m_input_tokens: u64,
    pub cache_creation_1h_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cost_nano_usd: u64,
}

impl Counters {
    pub fn from_hash(hash: &HashMap<String, u64>) -> Counters {
        let get = |name: &str| hash.get(name).copied().unwrap_or(0);
        Counters {
            requests: get("requests"),
            input_tokens: get("input_tokens"),
            output_tokens: get("output_tokens"),
            cache_creation_input_tokens: get("cache_creation_input_tokens"),
            cache_creation_5m_input_tokens: get("cache_creation_5m_input_tokens"),
            cache_creation_1h_input_tokens: get("cache_creation_1h_input_tokens"),
            cache_read_input_tokens: get("cache_read_input_tokens"),
            cost_nano_usd: get("cost_nano_usd"),
        }
    }
}

impl UsageEvent {
    fn increments(&self) -> [(&'static str, u64); 8] {
        let u = &self.usage;
        [
            ("requests", 1),
            ("input_tokens", u.input_tokens),
            ("output_tokens", u.output_tokens),
            ("cache_creation_input_tokens", u.cache_creation_input_tokens),
            (
                "cache_creation_5m_input_tokens",
                u.cache_creation_5m_input_tokens,
            ),
            (
                "cache_creation_1h_input_tokens",
                u.cache_creation_1h_input_tokens,
            ),
            ("cache_read_input_tokens", u.cache_read_input_tokens),
            ("cost_nano_usd", self.cost_nano_usd),
        ]
    }
}

/// The periods an event is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day(Date),
    Month(i32, u8),
    Total,
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Period::Day(date) => write!(
                f,
                "day:{:04}-{:02}-{:02}",
                date.year(),
                u8::from(date.month()),
                date.day()
            ),
            Period::Month(year, month) => write!(f, "month:{year:04}-{month:02}"),
            Period::Total => f.write_str("total"),
        }
    }
}

/// Whose counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    Key(&'a str),
    Account(&'a str),
    Model(&'a str),
}

/// KEYS: the seen marker, then the hashes. ARGV: the marker's ttl, then
/// for each hash its ttl (0: none), its number of field/increment pairs and
/// the pairs. Counts nothing if the marker exists, so a retried write is
/// never counted twice. An increment Redis refuses (a counter that would
/// pass its 64-bit range) is skipped and named in the reply; the others
/// are counted all the same, since the marker is already set.
const RECORD: &str = r"
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return {} end
local refused = {}
local at = 2
for k = 2, #KEYS do
  local ttl, pairs = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  at = at + 2
  for i = 1, pairs do
    local reply = redis.pcall('HINCRBY', KEYS[k], ARGV[at], ARGV[at + 1])
    if type(reply) == 'table' and reply.err then
      refused[#refused + 1] = KEYS[k] .. ' ' .. ARGV[at] .. ' +' .. ARGV[at + 1] .. ': ' .. reply.err
    end
    at = at + 2
  end
  if ttl > 0 then redis.call('EXPIRE', KEYS[k], ttl) end
end
return refused
";

static RECORD_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RECORD));

/// How long answers are gathered before their counts are written, and how
/// many at most: counts show this much later, for far fewer Redis calls.
const GATHER_FOR: Duration = Duration::from_millis(50);
const GATHER_AT_MOST: usize = 2_000;

/// The waits between the attempts to count one answer: growing fourfold
/// from `FIRST_RETRY` up to `LONGEST_RETRY`, for `RETRY_FOR` in all.
fn retry_delays() -> impl Iterator<Item = Duration> {
    let mut next = FIRST_RETRY;
    let mut waited = Duration::ZERO;
    std::iter::from_fn(move || {
        if waited >= RETRY_FOR {
            return None;
        }
        let delay = next;
        waited += delay;
        next = (next * 4).min(LONGEST_RETRY);
        Some(delay)
    })
}

/// Counts usage; cheap to clone. Answers are gathered for a moment and
/// written together; the recorder tracks counts not yet written so a
/// stopping relay can wait for them, and name those it could not wait for.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Inner>,
    signals: Arc<Signals>,
}

struct Inner {
    store: Store,
    offset: UtcOffset,
    /// Answers not yet handed to a write.
    gathered: Mutex<Vec<UsageEvent>>,
    /// Every count not yet written, by request id.
    unwritten: Mutex<HashMap<String, UsageEvent>>,
    pending: AtomicUsize,
    done: Notify,
}

/// Shared with the gathering task, which must not keep the recorder alive.
#[derive(Default)]
struct Signals {
    /// Something was gathered.
    gathered: Notify,
    /// Write what is gathered without waiting.
    now: Notify,
}

impl Recorder {
    /// Starts the task that writes gathered counts; needs a Tokio runtime.
    pub fn new(store: Store, offset: UtcOffset) -> Recorder {
        let recorder = Recorder {
            inner: Arc::new(Inner {
                store,
                offset,
                gathered: Mutex::default(),
                unwritten: Mutex::default(),
                pending: AtomicUsize::new(0),
                done: Notify::new(),
            }),
            signals: Arc::default(),
        };
        tokio::spawn(gather(
            Arc::downgrade(&recorder.inner),
            Arc::clone(&recorder.signals),
        ));
        recorder
    }

    /// The periods `at` falls in, in the configured day offset.
    pub fn periods(&self, at: OffsetDateTime) -> [Period; 3] {
        periods(at, self.inner.offset)
    }

    /// Counts the event in the background: it is written with the others
    /// gathered in the next moment, retried with backoff while Redis is
    /// away; each attempt is idempotent.
    pub fn spawn(&self, event: UsageEvent) {
        let reads_counters = event.key_limits.reads_counters();
        self.inner.pending.fetch_add(1, Ordering::SeqCst);
        lock(&self.inner.unwritten).insert(event.request_id.clone(), event.clone());
        let gathered = {
            let mut gathered = lock(&self.inner.gathered);
            gathered.push(event);
            gathered.len()
        };
        if gathered == 1 {
            self.signals.gathered.notify_one();
        }
        // A key whose window or budgets are checked against these counters
        // gets them at once: waiting would let more requests through.
        if gathered >= GATHER_AT_MOST || reads_counters {
            self.signals.now.notify_one();
        }
    }

    /// Writes what is gathered at once and waits until every count has
    /// been written (or given up), at most `limit`.
    pub async fn drain(&self, limit: Duration) {
        let inner = &self.inner;
        let wait = async {
            loop {
                let done = inner.done.notified();
                if inner.pending.load(Ordering::SeqCst) == 0 {
                    return;
                }
                self.signals.now.notify_one();
                done.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }

    /// Logs every count still unwritten, with all its figures, for an
    /// operator to add by hand: a stopping relay calls it once it has
    /// waited for them as long as it can. Returns how many there were.
    pub fn report_unwritten(&self) -> usize {
        let events = lock(&self.inner.unwritten);
        for event in events.values() {
            lost(
                event,
                "the relay stopped before Redis took it",
                "usage could not be counted",
            );
        }
        events.len()
    }

    /// Writes one answer's counts now, in one round trip.
    pub async fn record(&self, event: &UsageEvent) -> StoreResult<()> {
        let merged = self.inner.merge(std::slice::from_ref(event));
        self.inner.write(&merged, &event.request_id).await
    }

    /// Reads the counters of `subject` for each period.
    pub async fn read(
        &self,
        subject: Subject<'_>,
        periods: &[Period],
    ) -> StoreResult<Vec<Counters>> {
        let names = self.inner.store.names();
        let tag = names.usage_tag(subject);
        let mut pipe = redis::pipe();
        for period in periods {
            pipe.hgetall(names.usage(&tag, period));
        }
        let hashes: Vec<HashMap<String, u64>> =
            pipe.query_async(&mut self.inner.store.conn()).await?;
        Ok(hashes.iter().map(Counters::from_hash).collect())
    }

    /// Every model that has counters.
    pub async fn models(&self) -> StoreResult<Vec<String>> {
        self.members(self.inner.store.names().usage_models()).await
    }

    /// Every key and every account that has counters, removed ones too.
    pub async fn keys_and_accounts(&self) -> StoreResult<(Vec<String>, Vec<String>)> {
        let names = self.inner.store.names();
        Ok((
            self.members(names.usage_keys()).await?,
            self.members(names.usage_accounts()).await?,
        ))
    }

    async fn members(&self, set: String) -> StoreResult<Vec<String>> {
        let mut members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(set)
            .query_async(&mut self.inner.store.conn())
            .await?;
        members.sort();
        Ok(members)
    }
}

impl Inner {
    /// The writes of `events`, merged.
    fn merge(&self, events: &[UsageEvent]) -> Merged {
        let names = self.store.names();
        let mut merged = Merged::default();
        for event in events {
            let key_extras = KeyCounters::at(
                names,
                &event.key_id,
                &event.key_limits,
                event.at,
                self.offset,
            )
            .extras(
                Family::of(&event.requested_model),
                &event.usage,
                event.cost_nano_usd,
            );
            let groups = [
                (Subject::Key(&event.key_id), key_extras.as_slice()),
                (Subject::Account(&event.account_id), &[]),
                (Subject::Model(&event.model), &[]),
            ];
            let ttls = [DAY_TTL.as_secs(), MONTH_TTL.as_secs(), 0];
            for (subject, extras) in groups {
                let tag = names.usage_tag(subject);
                for (period, ttl) in periods(event.at, self.offset).iter().zip(ttls) {
                    merged.add(&tag, names.usage(&tag, period), ttl, event.increments());
                }
                for extra in extras {
                    let fields = extra
                        .fields
                        .iter()
                        .map(|(name, value)| (name.as_str(), *value));
                    merged.add(&tag, extra.key.clone(), extra.ttl_secs, fields);
                }
            }
            let day = event.at.to_offset(self.offset).date();
            merged.add_spend(day, &event.account_id, event.cost_nano_usd);
            merged.models.insert(event.model.clone());
            merged.keys.insert(event.key_id.clone());
            merged.accounts.insert(event.account_id.clone());
        }
        merged
    }

    /// One round trip: a script per hash tag (so each on its own Cluster
    /// node), the accounts' spending and the model set, sent together on
    /// the multiplexed connection. `write_id` marks the write so that
    /// sending it again counts nothing twice.
    async fn write(&self, merged: &Merged, write_id: &str) -> StoreResult<()> {
        let names = self.store.names();
        let scripts = merged.groups.iter().map(|(tag, hashes)| async move {
            let mut invocation = RECORD_SCRIPT.prepare_invoke();
            invocation
                .key(names.usage_seen(tag, write_id))
                .arg(SEEN_TTL.as_secs());
            for (name, hash) in hashes {
                invocation
                    .key(name)
                    .arg(hash.ttl_secs)
                    .arg(hash.fields.len());
                for (field, value) in &hash.fields {
                    invocation.arg(field).arg(value);
                }
            }
            let refused: Vec<String> = invocation.invoke_async(&mut self.store.conn()).await?;
            refused_increments(&refused);
            StoreResult::Ok(())
        });
        let spend = merged.spend.iter().map(|(day, accounts)| async move {
            let refused = self
                .store
                .add_account_spend(write_id, *day, accounts)
                .await?;
            refused_increments(&refused);
            StoreResult::Ok(())
        });
        let subjects = [
            (names.usage_models(), &merged.models),
            (names.usage_keys(), &merged.keys),
            (names.usage_accounts(), &merged.accounts),
        ];
        let subjects = subjects
            .into_iter()
            .filter(|(_, members)| !members.is_empty())
            .map(|(set, members)| async move {
                let _: i64 = redis::cmd("SADD")
                    .arg(set)
                    .arg(members.iter().collect::<Vec<_>>())
                    .query_async(&mut self.store.conn())
                    .await?;
                StoreResult::Ok(())
            });
        futures::future::try_join3(
            futures::future::try_join_all(scripts),
            futures::future::try_join_all(spend),
            futures::future::try_join_all(subjects),
        )
        .await?;
        Ok(())
    }

    /// The write was confirmed, so it will never be sent again: its seen
    /// markers are no longer needed. Best effort; their TTL is the backstop.
    async fn forget_markers(&self, merged: &Merged, write_id: &str) {
        let names = self.store.names();
        let mut markers: Vec<String> = merged
            .groups
            .keys()
            .map(|tag| names.usage_seen(tag, write_id))
            .collect();
        markers.extend(
            merged
                .spend
                .keys()
                .map(|day| names.accounts_spend_seen(write_id, &Period::Day(*day))),
        );
        // One DEL per marker: on Redis Cluster they sit on different slots.
        let deletes = markers.iter().map(|marker| async move {
            let result: redis::RedisResult<i64> = redis::cmd("DEL")
                .arg(marker)
                .query_async(&mut self.store.conn())
                .await;
            result
        });
        if let Err(error) = futures::future::try_join_all(deletes).await {
            tracing::debug!(%error, "usage write markers left to expire");
        }
    }

    /// Writes `events`, retrying while Redis is away, then marks them done.
    async fn write_with_retries(&self, events: Vec<UsageEvent>) {
        let merged = self.merge(&events);
        let write_id = uuid::Uuid::new_v4().simple().to_string();
        let mut delays = retry_delays().enumerate();
        loop {
            let err = match self.write(&merged, &write_id).await {
                Ok(()) => {
                    self.forget_markers(&merged, &write_id).await;
                    break;
                }
                Err(err) => err,
            };
            let Some((retry, delay)) = delays.next() else {
                crate::telemetry::usage_write_failed(false);
                for event in &events {
                    lost(event, &err.to_string(), "usage could not be counted");
                }
                break;
            };
            crate::telemetry::usage_write_failed(true);
            if retry < RETRIES_LOGGED || retry % RETRIES_LOGGED == 0 {
                tracing::warn!(answers = events.len(), retry, error = %err, "counting usage failed; retrying");
            }
            tokio::time::sleep(delay).await;
        }
        let mut unwritten = lock(&self.unwritten);
        for event in &events {
            unwritten.remove(&event.request_id);
        }
        drop(unwritten);
        if self.pending.fetch_sub(events.len(), Ordering::SeqCst) == events.len() {
            self.done.notify_waiters();
        }
    }
}

/// Waits for a first answer, gathers for a moment (less when asked to
/// write now, or when many have come), then hands the lot to a write of
/// its own and waits again. Ends with the recorder.
async fn gather(inner: std::sync::Weak<Inner>, signals: Arc<Signals>) {
    loop {
        tokio::select! {
            () = signals.gathered.notified() => {
                tokio::select! {
                    () = tokio::time::sleep(GATHER_FOR) => {}
                    () = signals.now.notified() => {}
                }
            }
            () = signals.now.notified() => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        let events = std::mem::take(&mut *lock(&inner.gathered));
        if !events.is_empty() {
            tokio::spawn(async move { inner.write_with_retries(events).await });
        }
    }
}

/// Increments Redis refused while it counted the rest of a write: the
/// counters named are short of them.
fn refused_increments(refused: &[String]) {
    for increment in refused {
        tracing::error!(increment, "a usage counter refused an increment");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One count given up, logged with every figure it had.
fn lost(event: &UsageEvent, error: &str, message: &str) {
    let usage = &event.usage;
    tracing::error!(
        request_id = %event.request_id,
        key_id = event.key_id.as_str(),
        account_id = event.account_id.as_str(),
        model = event.model.as_str(),
        at = %event.at,
        input_tokens = usage.input_tokens,
        output_tokens = usage.output_tokens,
        cache_creation_5m_input_tokens = usage.cache_creation_5m_input_tokens,
        cache_creation_1h_input_tokens = usage.cache_creation_1h_input_tokens,
        cache_read_input_tokens = usage.cache_read_input_tokens,
        cost_nano_usd = event.cost_nano_usd,
        error,
        "{message}"
    );
}

pub fn periods(at: OffsetDateTime, offset: UtcOffset) -> [Period; 3] {
    let local = at.to_offset(offset);
    [
        Period::Day(local.date()),
        Period::Month(local.year(), u8::from(local.month())),
        Period::Total,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{datetime, offset};

    #[test]
    fn a_count_is_retried_for_hours_at_most_thirty_seconds_apart_within_the_seen_window() {
        let delays: Vec<Duration> = retry_delays().collect();
        let total: Duration = delays.iter().sum();

        assert_eq!(delays[0], FIRST_RETRY);
        assert!(delays.iter().all(|delay| *delay <= LONGEST_RETRY));
        assert!(total >= RETRY_FOR, "{total:?}");
        assert!(total + LONGEST_RETRY < SEEN_TTL, "{total:?}");
    }

    #[test]
    fn days_and_months_follow_the_configured_offset() {
        let at = datetime!(2026-12-31 23:30 UTC);

        let utc = periods(at, UtcOffset::UTC).map(|p| p.to_string());
        let east = periods(at, offset!(+1)).map(|p| p.to_string());

        assert_eq!(utc, ["day:2026-12-31", "month:2026-12", "total"]);
        assert_eq!(east, ["day:2027-01-01", "month:2027-01", "total"]);
    }
}
