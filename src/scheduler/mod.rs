//! Which upstream account serves a request, and what an upstream answer
//! does to the account that gave it.
//!
//! Account records are cached in process; the pick script checks the
//! cache's version in the same round trip that picks, so an operator's
//! change is seen by the next request. Health (cooldowns, held statuses),
//! last use and sticky sessions live only in Redis, shared by every
//! instance.

pub mod accounts;
pub mod health;
pub mod order;
pub mod plan;
pub mod session;

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::config::{Config, HealthSettings, SchedulingSettings};
use crate::store::cipher::{CipherError, CredentialCipher};
use crate::store::records::{AccountStatus, Cooldown};
use crate::store::{AccountRecord, PickArg, PickReply, Store, StoreResult};
pub use accounts::{Account, Binding};
pub use health::{Effect, Verdict};
pub use plan::{Plan, Wait};

/// What selection needs to know about a request.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    pub binding: Binding<'a>,
    /// `None` for requests without a model (the model list).
    pub model: Option<&'a str>,
    /// The conversation's sticky mapping name (see `session::sticky_name`).
    pub sticky: Option<String>,
}

pub struct Scheduler {
    store: Store,
    cipher: CredentialCipher,
    scheduling: SchedulingSettings,
    health: HealthSettings,
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
        // TODO(#6): accounts with a concurrency limit take a lease in this
        // same script and are skipped while they are full.
        let args: Vec<PickArg<'_>> = eligible
            .iter()
            .map(|(account, tier)| PickArg {
                id: &account.id,
                tier: *tier,
                priority: account.priority,
            })
            .collect();
        let sticky = ask
            .sticky
            .as_deref()
            .map(|name| (name, self.scheduling.sticky_ttl));
        match self.store.pick(version, &args, sticky).await? {
            PickReply::Stale => Ok(None),
            PickReply::Picked {
                chosen,
                sticky: found,
                seen,
            } => Ok(Some(Plan::new(
                &eligible,
                &seen,
                found.as_deref(),
                chosen,
                ask.sticky.clone(),
            ))),
        }
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
