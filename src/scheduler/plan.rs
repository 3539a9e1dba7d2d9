//! One request's plan: the accounts it tries, in order, and what is known
//! about when each candidate can serve again, for the `retry-after` of an
//! answer when the relay gives up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::accounts::Account;
use super::order::{Ranked, order};
use crate::store::Seen;

/// When a candidate can take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Now,
    Until(Instant),
    /// Only after an operator acts.
    Held,
}

#[derive(Debug)]
pub struct Plan {
    tries: Vec<Arc<Account>>,
    waits: Vec<(String, Wait)>,
    /// The account the pick script already recorded as used and as the
    /// conversation's account.
    recorded: Option<String>,
    /// The conversation's sticky mapping, when there is a session.
    pub(super) sticky: Option<String>,
}

impl Plan {
    /// `eligible` and `seen` are in the same order; `chosen` is the pick
    /// script's first account.
    pub(super) fn new(
        eligible: &[(&Arc<Account>, u8)],
        seen: &[Seen],
        found_sticky: Option<&str>,
        chosen: Option<String>,
        sticky: Option<String>,
    ) -> Plan {
        let taken = Instant::now();
        let ranked: Vec<Ranked<'_>> = eligible
            .iter()
            .zip(seen)
            .map(|((account, tier), seen)| Ranked {
                id: &account.id,
                tier: *tier,
                priority: account.priority,
                last_used_ms: seen.last_used_ms,
                usable: seen.usable(),
            })
            .collect();
        let mut tries: Vec<Arc<Account>> = order(&ranked, found_sticky)
            .into_iter()
            .map(|at| Arc::clone(eligible[at].0))
            .collect();
        put_first(&mut tries, chosen.as_deref());
        let waits = eligible
            .iter()
            .zip(seen)
            .map(|((account, _), seen)| (account.id.clone(), wait_of(seen, taken)))
            .collect();
        Plan {
            tries,
            waits,
            recorded: chosen,
            sticky,
        }
    }

    /// No account to try and nothing known about any.
    pub fn empty() -> Plan {
        Plan {
            tries: Vec::new(),
            waits: Vec::new(),
            recorded: None,
            sticky: None,
        }
    }

    /// The usable accounts, in the order they are tried.
    pub fn accounts(&self) -> &[Arc<Account>] {
        &self.tries
    }

    pub(super) fn recorded(&self) -> Option<&str> {
        self.recorded.as_deref()
    }

    pub(super) fn note(&mut self, account_id: &str, wait: Wait) {
        for (id, known) in &mut self.waits {
            if id == account_id {
                *known = wait;
            }
        }
    }

    /// How long until the soonest candidate can serve again, when none can
    /// now and at least one has a known end to its cooldown.
    pub fn retry_after(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut soonest: Option<Duration> = None;
        for (_, wait) in &self.waits {
            match *wait {
                Wait::Now => return None,
                Wait::Until(at) if at <= now => return None,
                Wait::Until(at) => {
                    let left = at - now;
                    soonest = Some(soonest.map_or(left, |known| known.min(left)));
                }
                Wait::Held => {}
            }
        }
        soonest
    }
}

fn wait_of(seen: &Seen, taken: Instant) -> Wait {
    match (seen.held, seen.cooldown) {
        (true, _) => Wait::Held,
        (false, Some(left)) => taken.checked_add(left).map_or(Wait::Held, Wait::Until),
        (false, None) => Wait::Now,
    }
}

/// The pick script and `order` apply one rule, so this only moves
/// anything if the two ever disagree; the script's choice wins because
/// its use is already recorded.
fn put_first(tries: &mut [Arc<Account>], chosen: Option<&str>) {
    let Some(at) = chosen.and_then(|id| tries.iter().position(|account| account.id == id)) else {
        return;
    };
    if at != 0 {
        tracing::warn!(
            chosen = chosen.unwrap_or_default(),
            "the pick script and the account order disagree"
        );
        tries[..=at].rotate_right(1);
    }
}
