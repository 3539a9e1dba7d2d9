//! One request's plan: the accounts it tries, in order, the lease the pick
//! took on the first, and what is known about when each candidate can
//! serve again, for the `retry-after` of an answer when the relay gives up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::accounts::Account;
use super::order::{Ranked, order};
use crate::limits::Lease;
use crate::store::Seen;

/// When an account at its concurrency limit may have a free slot: any of
/// its requests may end at any moment.
pub const BUSY_RETRY: Duration = Duration::from_secs(1);

/// When a candidate can take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Now,
    Until(Instant),
    /// At its concurrency limit: free again whenever one of its requests
    /// ends, so worth asking again in [`BUSY_RETRY`].
    Busy,
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
    /// The lease the pick script took on the recorded account, until the
    /// attempt on it claims it.
    lease: Option<Lease>,
    /// The conversation's sticky mapping, when there is a session.
    pub(super) sticky: Option<String>,
}

/// What a candidate's state says about when it can serve again.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    /// When the pick read the candidates.
    pub taken: Instant,
    /// Time left in the usage day, after which daily quotas start over.
    pub quota_resets: Duration,
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
        clock: Clock,
    ) -> Plan {
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
            .map(|((account, _), seen)| (account.id.clone(), wait_of(seen, clock)))
            .collect();
        Plan {
            tries,
            waits,
            recorded: chosen,
            lease: None,
            sticky,
        }
    }

    /// Hands the plan the lease the pick took on its first account.
    pub(super) fn with_lease(mut self, lease: Option<Lease>) -> Plan {
        self.lease = lease;
        self
    }

    /// The lease the pick took on `account_id`, if it took one there.
    pub(super) fn take_lease(&mut self, account_id: &str) -> Option<Lease> {
        if self.recorded.as_deref() == Some(account_id) {
            self.lease.take()
        } else {
            None
        }
    }

    /// No account to try and nothing known about any.
    pub fn empty() -> Plan {
        Plan {
            tries: Vec::new(),
            waits: Vec::new(),
            recorded: None,
            lease: None,
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
                Wait::Busy => {
                    soonest = Some(soonest.map_or(BUSY_RETRY, |known| known.min(BUSY_RETRY)));
                }
                Wait::Held => {}
            }
        }
        soonest
    }
}

/// The later of the moments a cooldown and a spent quota end; a full
/// account with neither is only busy.
fn wait_of(seen: &Seen, clock: Clock) -> Wait {
    if seen.held {
        return Wait::Held;
    }
    let timed = [
        seen.cooldown,
        seen.over_quota().then_some(clock.quota_resets),
    ];
    match (timed.into_iter().flatten().max(), seen.full()) {
        (Some(left), _) => clock
            .taken
            .checked_add(left)
            .map_or(Wait::Held, Wait::Until),
        (None, true) => Wait::Busy,
        (None, false) => Wait::Now,
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

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_LEFT: Duration = Duration::from_secs(5 * 3600);

    fn clock() -> Clock {
        Clock {
            taken: Instant::now(),
            quota_resets: DAY_LEFT,
        }
    }

    fn seen(in_use: u64, limit: u32, spent: u64, quota: u64) -> Seen {
        Seen {
            in_use,
            concurrency_limit: limit,
            spent_nano_usd: spent,
            daily_quota_nano_usd: quota,
            ..Seen::default()
        }
    }

    fn left(wait: Wait, clock: Clock) -> Duration {
        match wait {
            Wait::Until(at) => at - clock.taken,
            other => panic!("not a timed wait: {other:?}"),
        }
    }

    #[test]
    fn a_full_account_is_back_soon_and_one_over_quota_when_the_day_ends() {
        let clock = clock();

        let full = wait_of(&seen(2, 2, 0, 0), clock);
        let over = wait_of(&seen(0, 0, 10, 10), clock);
        let both = wait_of(&seen(2, 2, 10, 10), clock);
        let free = wait_of(&seen(1, 2, 9, 10), clock);

        assert_eq!(full, Wait::Busy);
        assert_eq!(left(over, clock), DAY_LEFT);
        assert_eq!(left(both, clock), DAY_LEFT);
        assert_eq!(free, Wait::Now);
    }

    #[test]
    fn a_busy_account_says_retry_in_a_second_unless_another_is_free_sooner() {
        let plan = |waits: Vec<Wait>| Plan {
            tries: Vec::new(),
            waits: waits
                .into_iter()
                .map(|wait| ("a".to_owned(), wait))
                .collect(),
            recorded: None,
            lease: None,
            sticky: None,
        };
        let soon = Instant::now() + Duration::from_millis(300);
        let later = Instant::now() + Duration::from_secs(60);

        assert_eq!(
            plan(vec![Wait::Busy, Wait::Held]).retry_after(),
            Some(BUSY_RETRY)
        );
        assert_eq!(
            plan(vec![Wait::Busy, Wait::Until(later)]).retry_after(),
            Some(BUSY_RETRY)
        );
        let sooner = plan(vec![Wait::Busy, Wait::Until(soon)]).retry_after();
        assert!(sooner.is_some_and(|after| after < BUSY_RETRY), "{sooner:?}");
        assert_eq!(plan(vec![Wait::Busy, Wait::Now]).retry_after(), None);
    }

    #[test]
    fn a_cooldown_longer_than_the_day_outlasts_the_quota() {
        let clock = clock();
        let cooling = Seen {
            cooldown: Some(DAY_LEFT * 2),
            ..seen(0, 0, 10, 10)
        };
        let held = Seen {
            held: true,
            ..seen(0, 0, 10, 10)
        };

        assert_eq!(left(wait_of(&cooling, clock), clock), DAY_LEFT * 2);
        assert_eq!(wait_of(&held, clock), Wait::Held);
    }
}
