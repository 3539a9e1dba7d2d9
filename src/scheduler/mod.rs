//! Which upstream account serves a request.

use secrecy::SecretString;

use crate::store::{AccountRecord, AuthScheme, Store, StoreResult};
use crate::upstream::client::Target;

/// An account as the forwarding path uses it.
pub struct Account {
    pub id: String,
    pub base_url: String,
    pub credential: SecretString,
    pub auth_scheme: AuthScheme,
    pub priority: u32,
}

impl Account {
    pub fn target(&self) -> Target<'_> {
        Target {
            base_url: &self.base_url,
            credential: &self.credential,
            auth_scheme: self.auth_scheme,
        }
    }
}

impl From<AccountRecord> for Account {
    fn from(record: AccountRecord) -> Account {
        Account {
            id: record.id,
            base_url: record.base_url,
            credential: SecretString::from(record.credential),
            auth_scheme: record.auth_scheme,
            priority: record.priority,
        }
    }
}

/// Schedulable accounts in the order they are tried: priority, then id.
pub async fn candidates(store: &Store) -> StoreResult<Vec<Account>> {
    let mut records: Vec<AccountRecord> = store
        .list_accounts()
        .await?
        .into_iter()
        .filter(|account| account.schedulable)
        .collect();
    records.sort_by(|a, b| a.priority.cmp(&b.priority).then_with(|| a.id.cmp(&b.id)));
    Ok(records.into_iter().map(Account::from).collect())
}
