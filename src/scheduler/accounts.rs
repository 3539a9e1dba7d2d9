//! Accounts as the relay serves with them, and which of them may take a
//! request: the key's binding, the schedulable flag and the model.

use std::collections::BTreeMap;

use secrecy::SecretString;

use crate::auth::models::same_model;
use crate::store::records::AccountKind;
use crate::store::{AccountRecord, AuthScheme};
use crate::upstream::client::Target;

/// An account with its credential opened, cached in process.
pub struct Account {
    pub id: String,
    pub name: String,
    pub kind: AccountKind,
    pub base_url: String,
    pub credential: SecretString,
    pub auth_scheme: AuthScheme,
    pub priority: u32,
    pub schedulable: bool,
    pub models: Vec<String>,
    pub model_map: BTreeMap<String, String>,
    pub concurrency_limit: u32,
    pub daily_quota_nano_usd: u64,
    pub group: Option<String>,
}

impl Account {
    pub fn new(record: AccountRecord, credential: SecretString) -> Account {
        Account {
            id: record.id,
            name: record.name,
            kind: record.kind,
            base_url: record.base_url,
            credential,
            auth_scheme: record.auth_scheme,
            priority: record.priority,
            schedulable: record.schedulable,
            models: record.models,
            model_map: record.model_map,
            concurrency_limit: record.concurrency_limit,
            daily_quota_nano_usd: record.daily_quota_nano_usd,
            group: record.group,
        }
    }

    pub fn target(&self) -> Target<'_> {
        Target {
            base_url: &self.base_url,
            credential: &self.credential,
            auth_scheme: self.auth_scheme,
        }
    }

    /// Whether the account takes requests for `model`: it lists no models,
    /// lists this one (dated id or alias), or maps it.
    pub fn serves(&self, model: &str) -> bool {
        self.models.is_empty()
            || self.models.iter().any(|listed| same_model(listed, model))
            || self.upstream_model(model).is_some()
    }

    /// The id this upstream expects for the requested `model`, when the
    /// account maps it: an exact entry first, else one naming the same
    /// model as a dated id or alias.
    pub fn upstream_model(&self, model: &str) -> Option<&str> {
        if let Some(exact) = self.model_map.get(model) {
            return Some(exact);
        }
        self.model_map
            .iter()
            .find(|(requested, _)| same_model(requested, model))
            .map(|(_, upstream)| upstream.as_str())
    }
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("id", &self.id)
            .field("base_url", &self.base_url)
            .field("priority", &self.priority)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

/// Which accounts a key may use, from its `account` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding<'a> {
    /// The shared pool: every account without a group.
    Pool,
    /// One dedicated account.
    Account(&'a str),
    /// The accounts of one group.
    Group(&'a str),
}

impl<'a> Binding<'a> {
    /// `None` or blank: the pool; `group:NAME`: a group; else an account id.
    pub fn of(account: Option<&'a str>) -> Binding<'a> {
        match account.map(str::trim) {
            None | Some("") => Binding::Pool,
            Some(text) => match text.strip_prefix("group:") {
                Some(group) => Binding::Group(group),
                None => Binding::Account(text),
            },
        }
    }

    fn owns(&self, account: &Account) -> bool {
        match self {
            Binding::Pool => account.group.is_none(),
            Binding::Account(id) => account.id == *id,
            Binding::Group(group) => account.group.as_deref() == Some(*group),
        }
    }
}

/// The accounts that may take a request, with their tier (0: the key's
/// own, 1: the pool after a spill), in a stable order: tier, priority, id.
pub fn eligible<'s>(
    accounts: &'s [std::sync::Arc<Account>],
    binding: Binding<'_>,
    model: Option<&str>,
    spill_to_pool: bool,
) -> Vec<(&'s std::sync::Arc<Account>, u8)> {
    let fits = |account: &Account| account.schedulable && model.is_none_or(|m| account.serves(m));
    let mut chosen: Vec<(&std::sync::Arc<Account>, u8)> = accounts
        .iter()
        .filter(|account| fits(account))
        .filter_map(|account| {
            if binding.owns(account) {
                Some((account, 0))
            } else if spill_to_pool && binding != Binding::Pool && Binding::Pool.owns(account) {
                Some((account, 1))
            } else {
                None
            }
        })
        .collect();
    chosen.sort_by(|(a, tier_a), (b, tier_b)| {
        (tier_a, a.priority, &a.id).cmp(&(tier_b, b.priority, &b.id))
    });
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::store::records::StoredCredential;

    fn record(id: &str, priority: u32, group: Option<&str>) -> AccountRecord {
        AccountRecord {
            id: id.into(),
            name: id.into(),
            kind: AccountKind::Console,
            base_url: "http://127.0.0.1:9".into(),
            credential: StoredCredential::Plaintext(String::new()),
            auth_scheme: AuthScheme::XApiKey,
            priority,
            schedulable: true,
            models: Vec::new(),
            model_map: BTreeMap::new(),
            concurrency_limit: 0,
            daily_quota_nano_usd: 0,
            group: group.map(str::to_owned),
        }
    }

    fn account(id: &str, priority: u32, group: Option<&str>) -> Arc<Account> {
        Arc::new(Account::new(
            record(id, priority, group),
            SecretString::from("c"),
        ))
    }

    fn ids(list: &[(&Arc<Account>, u8)]) -> Vec<(String, u8)> {
        list.iter().map(|(a, tier)| (a.id.clone(), *tier)).collect()
    }

    #[test]
    fn bindings_parse_from_the_key_field() {
        assert_eq!(Binding::of(None), Binding::Pool);
        assert_eq!(Binding::of(Some(" ")), Binding::Pool);
        assert_eq!(Binding::of(Some("acct-a")), Binding::Account("acct-a"));
        assert_eq!(Binding::of(Some("group:team")), Binding::Group("team"));
    }

    #[test]
    fn keys_see_only_their_binding_unless_spill_is_on() {
        let mut off = record("p0", 0, None);
        off.schedulable = false;
        let all = vec![
            Arc::new(Account::new(off, SecretString::from("c"))),
            account("p2", 2, None),
            account("p1", 1, None),
            account("t1", 5, Some("team")),
            account("o1", 1, Some("other")),
        ];

        let pool = eligible(&all, Binding::Pool, None, false);
        let team = eligible(&all, Binding::Group("team"), None, false);
        let spill = eligible(&all, Binding::Group("team"), None, true);
        let dedicated = eligible(&all, Binding::Account("o1"), None, false);

        assert_eq!(ids(&pool), [("p1".into(), 0), ("p2".into(), 0)]);
        assert_eq!(ids(&team), [("t1".into(), 0)]);
        assert_eq!(
            ids(&spill),
            [("t1".into(), 0), ("p1".into(), 1), ("p2".into(), 1)]
        );
        assert_eq!(ids(&dedicated), [("o1".into(), 0)]);
    }

    #[test]
    fn model_lists_and_maps_decide_what_an_account_serves() {
        let mut listed = record("a", 1, None);
        listed.models = vec!["claude-sonnet-4-5".into()];
        listed
            .model_map
            .insert("claude-opus-4-5".into(), "anthropic/opus".into());
        let only = Account::new(listed, SecretString::from("c"));

        assert!(only.serves("claude-sonnet-4-5-20250929"));
        assert!(only.serves("claude-opus-4-5-20251101"));
        assert!(!only.serves("claude-haiku-4-5"));
        assert_eq!(
            only.upstream_model("claude-opus-4-5-20251101"),
            Some("anthropic/opus")
        );
        assert_eq!(only.upstream_model("claude-sonnet-4-5"), None);
    }
}
