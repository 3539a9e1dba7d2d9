//! State shared by every connection of one mock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::in_flight::InFlight;
use crate::journal::Journal;
use crate::profile::Profile;
use crate::scenarios::Scenarios;

pub(crate) struct State {
    profiles: Mutex<HashMap<String, Profile>>,
    pub(crate) scenarios: Scenarios,
    pub(crate) journal: Journal,
    pub(crate) in_flight: Arc<InFlight>,
    requests_seen: AtomicU64,
}

impl State {
    pub(crate) fn new(profiles: HashMap<String, Profile>, journal_limit: Option<usize>) -> Self {
        Self {
            profiles: Mutex::new(profiles),
            scenarios: Scenarios::default(),
            journal: Journal::with_limit(journal_limit),
            in_flight: Arc::default(),
            requests_seen: AtomicU64::new(0),
        }
    }

    pub(crate) fn profile(&self, credential: Option<&str>) -> Option<Profile> {
        let profiles = self.profiles.lock().unwrap_or_else(PoisonError::into_inner);
        profiles.get(credential?).copied()
    }

    pub(crate) fn set_profile(&self, credential: &str, profile: Profile) {
        let mut profiles = self.profiles.lock().unwrap_or_else(PoisonError::into_inner);
        profiles.insert(credential.to_owned(), profile);
    }

    /// Numbers requests from 1, for request ids and message ids.
    pub(crate) fn next_number(&self) -> u64 {
        self.requests_seen.fetch_add(1, Ordering::Relaxed) + 1
    }
}
