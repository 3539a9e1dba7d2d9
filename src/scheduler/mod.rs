//! Which upstream account serves a request, and what an upstream answer
//! does to the account that gave it.
//!
//! Account records are cached in process; the pick script checks the
//! cache's version in the same round trip that picks, so an operator's
//! change is seen by the next request. Health (cooldowns, held statuses),
//! last use, sticky sessions, account leases and spending today live only
//! in Redis, shared by every instance.

pub mod accounts;
pub mod health;
pub mod order;
pub mod plan;
pub mod session;

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use time::{OffsetDateTime, UtcOffset};

use crate::config::{Config, HealthSettings, SchedulingSettings};
use crate::limits::{Lease, lease, periods};
use crate::store::cipher::{CipherError, CredentialCipher};
use crate::store::records::{AccountStatus, Cooldown};
use crate::store::{AccountRecord, PickArg, PickReply, PickRequest, Store, StoreResult};
pub use accounts::{Account, Binding};
pub use health::{Effect, Verdict};
use plan::Clock;
pub use plan::{Plan, Wait};

/// What selection needs to know about a request.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    pub binding: Binding<'a>,
    /// `None` for requests without a model (the model list).
    pub model: Option<&'a str>,
    /// The conversation's sticky mapping name (see `session::sticky_name`).
    pub sticky: Option<String>,
    /// The request id, for requests that hold a lease on their account
    /// (Messages); `None` for those that are not held to account limits.
    pub lease: Option<&'a str>,
}

/// Whether an account can take the request now.
#[derive(Debug)]
pub enum Slot {
    /// It can; the lease, when it has a concurrency limit, must live as
    /// long as the answer.
    Free(Option<Lease>),
    /// Its concurrency limit is reached.
    Full,
}

pub struct Scheduler {
    store: Store,
    cipher: CredentialCipher,
    scheduling: SchedulingSettings,
    health: HealthSettings,
    lease_ttl: Duration,
    /// Where usage days start, and so daily quotas.
    offset: UtcOffset,
    cache: RwLock<Arc<Snapshot>>,
}

/// The account records as of one version, credentials opened.
#[derive(Default)]
struct Snapshot {
    /// Empty until loaded: never equal to a version Redis holds.
    version: String,
    accounts: Vec<Arc<Account>>,
}

/// The pick script's marker for "do not check the version".
const ANY_VERSION: &str = "*";

impl Scheduler {
    /// Fails without an account key (or explicit plaintext mode): a relay
    /// that cannot read any credential would only answer 503s.
    pub fn new(store: Store, config: &Config) -> anyhow::Result<Scheduler> {
        let cipher = CredentialCipher::from_secrets(&config.secrets)?;
        if !cipher.usable() {
            return Err(CipherError::NoKey.into());
        }
        Ok(Scheduler {
            store,
            cipher,
            scheduling: config.scheduling.clone(),
            health: config.health.clone(),
            lease_ttl: config.limits.lease_ttl,
            offset: config.usage_utc_offset,
            cache: RwLock::new(Arc::new(Snapshot::default())),
        })
    }

    pub fn health_settings(&self) -> &HealthSettings {
        &self.health
    }

    /// The accounts to try, in order. One round trip while the cached
    /// records are current; after a change, a reload and a second pick.
    pub async fn plan(&self, ask: &Ask<'_>) -> StoreResult<Plan> {
        let cached = self.cached();
        if let Some(plan) = self.pick(&cached, &cached.version, ask).await? {
            return Ok(plan);
        }
        let fresh = self.reload().await?;
        // Another change racing this one would only repeat the reload; the
        // records just read are current enough for this request. Without a
        // version check the script never answers "stale".
        let plan = self.pick(&fresh, ANY_VERSION, ask).await?;
        Ok(plan.unwrap_or_else(Plan::empty))
    }

    async fn pick(
        &self,
        snapshot: &Snapshot,
        version: &str,
        ask: &Ask<'_>,
    ) -> StoreResult<Option<Plan>> {
        let eligible = accounts::eligible(
            &snapshot.accounts,
            ask.binding,
            ask.model,
            self.scheduling.spill_to_pool,
        );
        let args: Vec<PickArg<'_>> = eligible
            .iter()
            .map(|(account, tier)| PickArg {
                id: &account.id,
                tier: *tier,
                priority: account.priority,
                concurrency_limit: account.concurrency_limit,
                daily_quota_nano_usd: account.daily_quota_nano_usd,
            })
            .collect();
        let now = OffsetDateTime::now_utc();
        let request = PickRequest {
            candidates: &args,
            sticky: ask
                .sticky
                .as_deref()
                .map(|name| (name, self.scheduling.sticky_ttl)),
            lease: ask.lease.map(|member| (member, self.lease_ttl)),
            day: now.to_offset(self.offset).date(),
        };
        // Armed before the script runs: a cancelled request releases
        // whatever lease the script may have taken.
        let guards = self.pending_leases(&args, ask.lease);
        let (chosen, found, seen) = match self.store.pick(version, &request).await? {
            PickReply::Stale => {
                guards.into_iter().for_each(|(_, guard)| guard.disarm());
                return Ok(None);
            }
            PickReply::Picked {
                chosen,
                sticky,
                seen,
            } => (chosen, sticky, seen),
        };
        let lease = self.keep_chosen(guards, chosen.as_deref());
        let clock = Clock {
            taken: Instant::now(),
            quota_resets: periods::until(now, periods::day_end(now, self.offset)),
        };
        let plan = Plan::new(
            &eligible,
            &seen,
            found.as_deref(),
            chosen,
            ask.sticky.clone(),
            clock,
        );
        Ok(Some(plan.with_lease(lease)))
    }

    /// A release guard for each candidate the pick may lease.
    fn pending_leases<'a>(
        &self,
        args: &[PickArg<'a>],
        member: Option<&str>,
    ) -> Vec<(&'a str, Lease)> {
        let Some(member) = member else {
            return Vec::new();
        };
        let names = self.store.names();
        args.iter()
            .filter(|arg| arg.concurrency_limit > 0)
            .map(|arg| {
                let set = names.account_leases(arg.id);
                let guard = Lease::pending(self.store.conn(), set, member.to_owned());
                (arg.id, guard)
            })
            .collect()
    }

    /// Keeps the lease of the chosen account alive; the other candidates
    /// got none.
    fn keep_chosen(&self, guards: Vec<(&str, Lease)>, chosen: Option<&str>) -> Option<Lease> {
        let mut kept = None;
        for (id, mut guard) in guards {
            if Some(id) == chosen {
                guard.keep_alive(self.lease_ttl);
                kept = Some(guard);
            } else {
                guard.disarm();
            }
        }
        kept
    }

    /// Whether `account` can take the request now. The plan's first
    /// account holds the lease the pick took; a later one (a failover)
    /// takes its own here, since another request may have filled it since
    /// the pick.
    pub async fn slot(&self, plan: &mut Plan, account: &Account, member: Option<&str>) -> Slot {
        if let Some(lease) = plan.take_lease(&account.id) {
            return Slot::Free(Some(lease));
        }
        let Some(member) = member.filter(|_| account.concurrency_limit > 0) else {
            return Slot::Free(None);
        };
        let set = self.store.names().account_leases(&account.id);
        let limit = account.concurrency_limit;
        match lease::take(&self.store.conn(), &set, member, self.lease_ttl, limit).await {
            Ok(Some(lease)) => return Slot::Free(Some(lease)),
            Ok(None) => {
                tracing::debug!(account_id = %account.id, "account at its concurrency limit; skipped");
            }
            // Fail closed: an account whose leases cannot be counted is
            // not risked past its limit.
            Err(error) => {
                tracing::warn!(account_id = %account.id, %error, "account lease not taken; skipped");
            }
        }
        plan.note(&account.id, Wait::Busy);
        Slot::Full
    }

    fn cached(&self) -> Arc<Snapshot> {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&cache)
    }

    async fn reload(&self) -> StoreResult<Arc<Snapshot>> {
        let (version, rows) = self.store.load_accounts().await?;
        let accounts = rows
            .into_iter()
            .filter_map(|(id, json)| self.open(&id, &json))
            .map(Arc::new)
            .collect();
        let snapshot = Arc::new(Snapshot { version, accounts });
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        *cache = Arc::clone(&snapshot);
        Ok(snapshot)
    }

    /// An account that cannot be read is left out, loudly, rather than
    /// failing every request.
    fn open(&self, id: &str, json: &str) -> Option<Account> {
        let record: AccountRecord = match serde_json::from_str(json) {
            Ok(record) => record,
            Err(error) => {
                tracing::error!(account_id = id, %error, "account record is corrupt; skipped");
                return None;
            }
        };
        match self.cipher.open(&record.id, &record.credential) {
            Ok(credential) => Some(Account::new(record, credential)),
            Err(error) => {
                tracing::error!(account_id = id, %error, "account credential unreadable; skipped");
                None
            }
        }
    }

    /// Applies what an answer did to the account. Health writes are best
    /// effort: a Redis hiccup here must not cost the request its failover.
    pub async fn apply(&self, plan: &mut Plan, account: &Account, effect: &Effect) {
        match effect {
            Effect::Nothing => {}
            Effect::CoolDown {
                reason,
                upstream_status,
                duration,
            } => {
                let cooldown = Cooldown {
                    reason: *reason,
                    upstream_status: *upstream_status,
                    since: unix_now(),
                };
                let left = match self
                    .store
                    .cool_down(&account.id, &cooldown, *duration)
                    .await
                {
                    Ok(left) => left,
                    Err(error) => {
                        tracing::warn!(account_id = %account.id, %error, "cooldown not stored");
                        *duration
                    }
                };
                tracing::info!(
                    account_id = %account.id,
                    reason = reason.as_str(),
                    upstream_status = *upstream_status,
                    cooldown_secs = left.as_secs(),
                    "account cooling down"
                );
                plan.note(&account.id, until(left));
            }
            Effect::Hold {
                state,
                upstream_status,
                reason,
            } => {
                let status = AccountStatus {
                    state: *state,
                    upstream_status: *upstream_status,
                    reason: reason.clone(),
                    since: unix_now(),
                };
                if let Err(error) = self.store.set_account_status(&account.id, &status).await {
                    tracing::warn!(account_id = %account.id, %error, "account status not stored");
                }
                tracing::warn!(
                    account_id = %account.id,
                    state = state.as_str(),
                    upstream_status,
                    "account held until an operator enables it"
                );
                plan.note(&account.id, Wait::Held);
            }
        }
    }

    /// The account answered: after a failover it becomes the last used
    /// and the conversation's account (the first pick recorded itself).
    pub async fn served(&self, plan: &Plan, account: &Account) {
        if plan.recorded() == Some(account.id.as_str()) {
            return;
        }
        let sticky = plan
            .sticky
            .as_deref()
            .map(|name| (name, self.scheduling.sticky_ttl));
        if let Err(error) = self.store.mark_served(&account.id, sticky).await {
            tracing::warn!(account_id = %account.id, %error, "last use not stored");
        }
    }
}

fn until(left: Duration) -> Wait {
    Instant::now()
        .checked_add(left)
        .map_or(Wait::Held, Wait::Until)
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
