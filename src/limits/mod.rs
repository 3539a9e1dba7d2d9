//! Limits that hold across relay instances: concurrency leases, rate
//! windows and cost budgets, all kept in Redis under the key's hash tag and
//! decided by one script per request.

pub mod admission;
pub mod counters;
pub mod lease;
pub mod periods;
pub mod seed;
pub mod spec;
pub mod status;
pub mod wait;

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::UtcOffset;

use crate::config::LimitSettings;
use crate::error::RelayError;
use crate::store::{KeyRecord, Store};
pub use admission::{Admission, TakeBack};
use admission::{Ask, Decision, Refusal};
pub use lease::Lease;
pub use spec::KeyLimits;
use wait::{Ticket, Waiters};

/// How often the head of a wait queue asks Redis again when no release in
/// this process woke it: slots freed by other instances or by expiry.
const WAIT_POLL: Duration = Duration::from_millis(50);

/// Admits requests against their key's limits; cheap to clone.
#[derive(Clone)]
pub struct Limits {
    store: Store,
    lease_ttl: Duration,
    offset: UtcOffset,
    waiters: Arc<Waiters>,
}

impl Limits {
    pub fn new(store: Store, settings: &LimitSettings, offset: UtcOffset) -> Limits {
        Limits {
            store,
            lease_ttl: settings.lease_ttl,
            offset,
            waiters: Waiters::new(settings.wait_queue_limit),
        }
    }

    /// Admits one Messages request of `key` for `model`. The lease, when
    /// the key has a concurrency limit, must be held until the answer is
    /// over. A key with `wait_for_slot_secs` waits for a slot that long.
    pub async fn admit(
        &self,
        key: &KeyRecord,
        model: &str,
        request_id: &str,
    ) -> Result<Admission, RelayError> {
        let ask = Ask {
            key_id: &key.id,
            limits: &key.limits,
            model,
            request_id,
            lease_ttl: self.lease_ttl,
            offset: self.offset,
        };
        let refusal = match self.decide(&ask).await? {
            Ok(admission) => return Ok(admission),
            Err(refusal) => refusal,
        };
        let wait = key.limits.wait_for_slot_secs;
        if !refusal.is_concurrency() || wait == 0 {
            return Err(RelayError::from_refusal(refusal, None));
        }
        self.wait_then_admit(&ask, wait, refusal).await
    }

    /// Queues behind the key's other waiters in this process, for `wait`
    /// seconds at most, until a slot frees up or another limit refuses.
    async fn wait_then_admit(
        &self,
        ask: &Ask<'_>,
        wait: u32,
        refusal: Refusal,
    ) -> Result<Admission, RelayError> {
        let key_id = ask.key_id;
        let Some(ticket) = self.waiters.join(key_id) else {
            tracing::info!(key_id, "wait queue full; refusing at once");
            return Err(RelayError::from_refusal(refusal, None));
        };
        let started = Instant::now();
        let limit = Duration::from_secs(u64::from(wait));
        let waited = tokio::time::timeout(limit, self.wait_for_slot(ask, &ticket)).await;
        let waited_ms = started.elapsed().as_millis() as u64;
        match waited {
            Ok(Ok(Ok(admission))) => {
                tracing::info!(key_id, waited_ms, "concurrency slot freed after waiting");
                Ok(admission)
            }
            Ok(Ok(Err(refusal))) => Err(RelayError::from_refusal(refusal, Some(wait))),
            Ok(Err(err)) => Err(err),
            Err(_) => {
                tracing::info!(key_id, waited_ms, "no concurrency slot freed in time");
                Err(RelayError::from_refusal(refusal, Some(wait)))
            }
        }
    }

    /// Asks again at the head of the key's queue until a slot is free or
    /// another limit refuses.
    async fn wait_for_slot(
        &self,
        ask: &Ask<'_>,
        ticket: &Ticket,
    ) -> Result<Result<Admission, Refusal>, RelayError> {
        let _turn = ticket.turn().await;
        loop {
            let freed = ticket.freed();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.decide(ask).await? {
                Err(refusal) if refusal.is_concurrency() => {}
                decided => return Ok(decided),
            }
            tokio::select! {
                () = &mut freed => {}
                () = tokio::time::sleep(WAIT_POLL) => {}
            }
        }
    }

    async fn decide(&self, ask: &Ask<'_>) -> Result<Result<Admission, Refusal>, RelayError> {
        let decision = admission::decide(&self.store, ask)
            .await
            .map_err(crate::relay::store_error)?;
        Ok(match decision {
            Decision::Admitted(mut admission) => {
                if let Some(lease) = &mut admission.lease {
                    let waiters = Arc::clone(&self.waiters);
                    let key_id = ask.key_id.to_owned();
                    lease.on_release(move || waiters.freed(&key_id));
                }
                Ok(admission)
            }
            Decision::Refused(refusal) => Err(refusal),
        })
    }
}
