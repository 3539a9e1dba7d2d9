//! Key records kept in process for a short time, so the hot path reads
//! the key from Redis at most once per TTL. Unknown keys are remembered
//! too (a client retrying a wrong key costs nothing). A disabled, changed
//! or deleted key takes effect within one TTL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::store::{KeyRecord, Store, StoreResult};

/// Entries kept at most; beyond it, expired entries go first, then all.
const CAPACITY: usize = 10_000;

type Entry = (Instant, Option<Arc<KeyRecord>>);

pub struct KeyCache {
    store: Store,
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl KeyCache {
    /// A zero `ttl` reads every lookup from Redis.
    pub fn new(store: Store, ttl: Duration) -> KeyCache {
        KeyCache {
            store,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub async fn by_hash(&self, hash: &str) -> StoreResult<Option<Arc<KeyRecord>>> {
        if let Some(record) = self.fresh(hash) {
            return Ok(record);
        }
        let record = self.store.key_by_hash(hash).await?.map(Arc::new);
        if !self.ttl.is_zero() {
            self.remember(hash, record.clone());
        }
        Ok(record)
    }

    /// Drops what this instance remembers of a key, so a change made
    /// through this instance's admin API applies to its next request.
    pub fn forget(&self, hash: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.remove(hash);
    }

    fn fresh(&self, hash: &str) -> Option<Option<Arc<KeyRecord>>> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (at, record) = entries.get(hash)?;
        (at.elapsed() < self.ttl).then(|| record.clone())
    }

    fn remember(&self, hash: &str, record: Option<Arc<KeyRecord>>) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= CAPACITY {
            entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(hash.to_owned(), (Instant::now(), record));
    }
}
