//! Per-credential queues of scripted answers, consumed one per request.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::answer::Answer;

#[derive(Default)]
pub(crate) struct Scenarios {
    queues: Mutex<HashMap<String, VecDeque<Answer>>>,
}

impl Scenarios {
    /// Appends to the credential's queue and returns how many now wait.
    pub(crate) fn push(&self, credential: &str, answers: Vec<Answer>) -> usize {
        let mut queues = self.lock();
        let queue = queues.entry(credential.to_owned()).or_default();
        queue.extend(answers);
        queue.len()
    }

    pub(crate) fn pop(&self, credential: &str) -> Option<Answer> {
        self.lock().get_mut(credential)?.pop_front()
    }

    pub(crate) fn pending(&self) -> BTreeMap<String, usize> {
        self.lock()
            .iter()
            .filter(|(_, queue)| !queue.is_empty())
            .map(|(credential, queue)| (credential.clone(), queue.len()))
            .collect()
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    // A poisoned lock still holds consistent queues: each change is one call.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, VecDeque<Answer>>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
