//! Usage counters in Redis: per key, account and model, per day, month and
//! total. Written after the answer, off the client's path, in one round
//! trip, and exactly once per request even when a write is retried.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use time::{Date, OffsetDateTime, UtcOffset};
use tokio::sync::Notify;

use redis::Script;

use super::Usage;
use crate::limits::KeyLimits;
use crate::limits::counters::{Extra, KeyCounters};
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
/// How long a request id is remembered, so a retried write is not counted
/// twice.
const SEEN_TTL: Duration = Duration::from_secs(86_400);
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
    pub model: String,
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

/// KEYS: seen marker, day, month, total, then extra hashes. ARGV: seen
/// ttl, day ttl, month ttl, the number of field/increment pairs and the
/// pairs, then for each extra hash its ttl (0: none), its number of pairs
/// and its pairs. Counts nothing if the marker exists.
const RECORD: &str = r"
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
local at = 5
for i = 1, tonumber(ARGV[4]) do
  for k = 2, 4 do redis.call('HINCRBY', KEYS[k], ARGV[at], ARGV[at + 1]) end
  at = at + 2
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[3])
for k = 5, #KEYS do
  local ttl, pairs = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  at = at + 2
  for i = 1, pairs do
    redis.call('HINCRBY', KEYS[k], ARGV[at], ARGV[at + 1])
    at = at + 2
  end
  if ttl > 0 then redis.call('EXPIRE', KEYS[k], ttl) end
end
return 1
";

static RECORD_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RECORD));

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

/// Counts usage; cheap to clone. Tracks writes still in flight so a
/// stopping relay can wait for them, and name those it could not wait for.
#[derive(Clone)]
pub struct Recorder {
    store: Store,
    offset: UtcOffset,
    in_flight: Arc<InFlight>,
}

/// Counts not yet written, by request id.
#[derive(Default)]
struct InFlight {
    events: Mutex<HashMap<String, UsageEvent>>,
    count: AtomicUsize,
    done: Notify,
}

impl Recorder {
    pub fn new(store: Store, offset: UtcOffset) -> Recorder {
        Recorder {
            store,
            offset,
            in_flight: Arc::default(),
        }
    }

    /// The periods `at` falls in, in the configured day offset.
    pub fn periods(&self, at: OffsetDateTime) -> [Period; 3] {
        periods(at, self.offset)
    }

    /// Counts the event in the background, retrying with backoff while
    /// Redis is away; each attempt is idempotent.
    pub fn spawn(&self, event: UsageEvent) {
        let recorder = self.clone();
        self.in_flight.count.fetch_add(1, Ordering::SeqCst);
        self.in_flight
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(event.request_id.clone(), event.clone());
        tokio::spawn(async move {
            recorder.record_with_retries(&event).await;
            recorder
                .in_flight
                .events
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&event.request_id);
            if recorder.in_flight.count.fetch_sub(1, Ordering::SeqCst) == 1 {
                recorder.in_flight.done.notify_waiters();
            }
        });
    }

    async fn record_with_retries(&self, event: &UsageEvent) {
        let mut delays = retry_delays().enumerate();
        loop {
            let err = match self.record(event).await {
                Ok(()) => return,
                Err(err) => err,
            };
            let Some((retry, delay)) = delays.next() else {
                crate::telemetry::usage_write_failed(false);
                lost(event, &err.to_string(), "usage could not be counted");
                return;
            };
            crate::telemetry::usage_write_failed(true);
            if retry < RETRIES_LOGGED || retry % RETRIES_LOGGED == 0 {
                tracing::warn!(request_id = %event.request_id, retry, error = %err, "counting usage failed; retrying");
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// Waits until every background write has finished, at most `limit`.
    pub async fn drain(&self, limit: Duration) {
        let wait = async {
            loop {
                let notified = self.in_flight.done.notified();
                if self.in_flight.count.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }

    /// Logs every count still unwritten, with all its figures, for an
    /// operator to add by hand: a stopping relay calls it once it has
    /// waited for them as long as it can. Returns how many there were.
    pub fn report_unwritten(&self) -> usize {
        let events = self
            .in_flight
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for event in events.values() {
            lost(
                event,
                "the relay stopped before Redis took it",
                "usage could not be counted",
            );
        }
        events.len()
    }

    /// One round trip: a script per counter group, each on its own hash
    /// tag (so on its own Cluster node), sent together on the multiplexed
    /// connection. The key's group also feeds its limit counters, and the
    /// account's cost today goes to the copy its daily quota reads.
    pub async fn record(&self, event: &UsageEvent) -> StoreResult<()> {
        let names = self.store.names();
        let key_extras = KeyCounters::at(
            names,
            &event.key_id,
            &event.key_limits,
            event.at,
            self.offset,
        )
        .extras(Family::of(&event.model), &event.usage, event.cost_nano_usd);
        let groups = [
            (Subject::Key(&event.key_id), key_extras.as_slice()),
            (Subject::Account(&event.account_id), &[]),
            (Subject::Model(&event.model), &[]),
        ];
        let scripts = groups
            .into_iter()
            .map(|(subject, extras)| self.record_group(subject, extras, event));
        let models = async {
            let _: i64 = redis::cmd("SADD")
                .arg(names.usage_models())
                .arg(&event.model)
                .query_async(&mut self.store.conn())
                .await?;
            StoreResult::Ok(())
        };
        futures::future::try_join3(
            futures::future::try_join_all(scripts),
            models,
            self.account_spend(event),
        )
        .await?;
        Ok(())
    }

    /// The account's cost today, copied where daily quotas read it.
    async fn account_spend(&self, event: &UsageEvent) -> StoreResult<()> {
        if event.cost_nano_usd == 0 {
            return Ok(());
        }
        let day = event.at.to_offset(self.offset).date();
        self.store
            .add_account_spend(
                &event.request_id,
                &event.account_id,
                day,
                event.cost_nano_usd,
            )
            .await
    }

    async fn record_group(
        &self,
        subject: Subject<'_>,
        extras: &[Extra],
        event: &UsageEvent,
    ) -> StoreResult<()> {
        let names = self.store.names();
        let tag = names.usage_tag(subject);
        let mut invocation = RECORD_SCRIPT.prepare_invoke();
        invocation.key(names.usage_seen(&tag, &event.request_id));
        for period in &self.periods(event.at) {
            invocation.key(names.usage(&tag, period));
        }
        // A field at zero needs no write: readers take a missing field as 0,
        // and most answers have no cache figures.
        let increments: Vec<_> = event
            .increments()
            .into_iter()
            .filter(|(_, value)| *value > 0)
            .collect();
        invocation
            .arg(SEEN_TTL.as_secs())
            .arg(DAY_TTL.as_secs())
            .arg(MONTH_TTL.as_secs())
            .arg(increments.len());
        for (field, value) in increments {
            invocation.arg(field).arg(value);
        }
        for extra in extras {
            let fields: Vec<_> = extra
                .fields
                .iter()
                .filter(|(_, value)| *value > 0)
                .collect();
            invocation
                .key(&extra.key)
                .arg(extra.ttl_secs)
                .arg(fields.len());
            for (field, value) in fields {
                invocation.arg(field).arg(value);
            }
        }
        let _: i64 = invocation.invoke_async(&mut self.store.conn()).await?;
        Ok(())
    }

    /// Reads the counters of `subject` for each period.
    pub async fn read(
        &self,
        subject: Subject<'_>,
        periods: &[Period],
    ) -> StoreResult<Vec<Counters>> {
        let names = self.store.names();
        let tag = names.usage_tag(subject);
        let mut pipe = redis::pipe();
        for period in periods {
            pipe.hgetall(names.usage(&tag, period));
        }
        let hashes: Vec<HashMap<String, u64>> = pipe.query_async(&mut self.store.conn()).await?;
        Ok(hashes.iter().map(Counters::from_hash).collect())
    }

    /// Every model that has counters.
    pub async fn models(&self) -> StoreResult<Vec<String>> {
        let mut models: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.store.names().usage_models())
            .query_async(&mut self.store.conn())
            .await?;
        models.sort();
        Ok(models)
    }
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
