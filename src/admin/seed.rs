//! The seed file: one JSON format for tests, the demo and operators.
//! Seeding upserts by id through the store, so running it twice is
//! harmless and it can never drift from the schema the relay reads.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;

use crate::auth::hash_key;
use crate::config::Secrets;
use crate::limits::seed::{SeedBudgets, SeedLimits, SeedRateLimit, Usd};
use crate::limits::spec::{Family, KeyLimits, WeeklyReset};
use crate::store::cipher::CredentialCipher;
use crate::store::records::AccountKind;
use crate::store::{AccountRecord, AuthScheme, KeyRecord, Service, Store, StoreError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedFile {
    #[serde(default)]
    pub accounts: Vec<SeedAccount>,
    #[serde(default)]
    pub keys: Vec<SeedKey>,
}

/// Debug leaves the credential out (see the impl below).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedAccount {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub kind: AccountKind,
    pub base_url: String,
    pub credential: String,
    #[serde(default)]
    pub auth_scheme: AuthScheme,
    #[serde(default = "default_priority")]
    pub priority: u32,
    #[serde(default = "yes")]
    pub schedulable: bool,
    /// Models the account serves; empty serves all.
    #[serde(default)]
    pub models: Vec<String>,
    /// Requested model → the id this upstream expects.
    #[serde(default)]
    pub model_map: BTreeMap<String, String>,
    /// In-flight Messages requests at most; 0 or null: no limit.
    #[serde(default)]
    pub concurrency_limit: Option<u32>,
    #[serde(default)]
    pub group: Option<String>,
    /// Dollars per usage day at most; 0 or null: no quota.
    #[serde(default)]
    pub daily_quota_usd: Option<Usd>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedKey {
    pub id: String,
    pub name: String,
    /// The key itself, hashed on load ...
    pub key: Option<String>,
    /// ... or, for a key imported from elsewhere, its hash (pepper applied).
    pub key_sha256: Option<String>,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default, deserialize_with = "rfc3339_field")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub activation_days: Option<u32>,
    #[serde(default = "Service::all")]
    pub services: Vec<Service>,
    #[serde(default)]
    pub allowed_clients: Vec<String>,
    #[serde(default)]
    pub allowed_models: Vec<String>,
    // Limits: 0 or null means none; dollars are JSON numbers.
    #[serde(default)]
    pub concurrency_limit: Option<u32>,
    #[serde(default)]
    pub wait_for_slot_secs: Option<u32>,
    #[serde(default)]
    pub rate_limit: Option<SeedRateLimit>,
    #[serde(default)]
    pub daily_budget_usd: Option<Usd>,
    #[serde(default)]
    pub weekly_budget_usd: Option<Usd>,
    #[serde(default)]
    pub total_budget_usd: Option<Usd>,
    #[serde(default)]
    pub weekly_reset: Option<WeeklyReset>,
    #[serde(default)]
    pub family_budgets_usd: BTreeMap<Family, SeedBudgets>,
    /// An account id, `group:NAME`, or null for the shared pool.
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub denied_models: Vec<String>,
}

/// An RFC 3339 time, with an error that says which field and what form.
fn rfc3339_field<'de, D>(de: D) -> Result<Option<OffsetDateTime>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let Some(text) = Option::<String>::deserialize(de)? else {
        return Ok(None);
    };
    let format = time::format_description::well_known::Rfc3339;
    OffsetDateTime::parse(&text, &format)
        .map(Some)
        .map_err(|_| {
            serde::de::Error::custom(format!(
                "expires_at {text:?} is not an RFC 3339 time such as 2026-12-31T00:00:00Z"
            ))
        })
}

fn default_priority() -> u32 {
    50
}

fn yes() -> bool {
    true
}

/// What a seeding run wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SeedReport {
    pub accounts: usize,
    pub keys: usize,
}

impl SeedFile {
    /// Reads the file, replacing `${VAR}` in every string from `var`.
    pub fn load(path: &Path, var: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<SeedFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading seed file {}", path.display()))?;
        SeedFile::parse(&text, var).with_context(|| format!("in seed file {}", path.display()))
    }

    pub fn parse(text: &str, var: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<SeedFile> {
        let mut value: Value = serde_json::from_str(text)?;
        substitute(&mut value, var)?;
        let seed: SeedFile = serde_json::from_value(value)?;
        seed.check()?;
        Ok(seed)
    }

    fn check(&self) -> anyhow::Result<()> {
        let mut ids = std::collections::HashSet::new();
        for account in &self.accounts {
            if !ids.insert(("account", account.id.as_str())) {
                bail!("account id {} appears twice", account.id);
            }
            account.check()?;
        }
        // One secret opens one key: caught here, before anything is written.
        let mut secrets = std::collections::HashMap::new();
        for key in &self.keys {
            if !ids.insert(("key", key.id.as_str())) {
                bail!("key id {} appears twice", key.id);
            }
            key.check()?;
            let secret = key.key.as_deref().or(key.key_sha256.as_deref());
            if let Some(other) = secret.and_then(|secret| secrets.insert(secret, &key.id)) {
                bail!(
                    "keys {other} and {} have the same secret; give each its own",
                    key.id
                );
            }
        }
        Ok(())
    }

    /// Upserts every record. Keys are hashed and credentials sealed here;
    /// neither text is stored. A key seeded again keeps its creation time.
    pub async fn apply(&self, store: &Store, secrets: &Secrets) -> anyhow::Result<SeedReport> {
        if !self.accounts.is_empty() {
            let cipher = CredentialCipher::from_secrets(secrets)?;
            for account in &self.accounts {
                store.put_account(&account.record(&cipher)?).await?;
            }
        }
        let now = crate::auth::lifetime::now();
        for key in &self.keys {
            // A record that no longer reads is what seeding repairs.
            let existing = match store.key_by_id(&key.id).await {
                Err(StoreError::Corrupt { .. }) => None,
                other => other?,
            };
            let created_at = existing.and_then(|old| old.created_at).unwrap_or(now);
            store
                .put_key(&key.record(secrets.key_pepper.as_ref(), created_at))
                .await?;
        }
        Ok(SeedReport {
            accounts: self.accounts.len(),
            keys: self.keys.len(),
        })
    }
}

impl std::fmt::Debug for SeedAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedAccount")
            .field("id", &self.id)
            .field("base_url", &self.base_url)
            .field("credential", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl SeedAccount {
    pub fn check(&self) -> anyhow::Result<()> {
        super::accounts::check_fields(&self.id, &self.base_url, self.group.as_deref())
            .and_then(|()| super::check_header_secret("credential", &self.credential))
            .with_context(|| format!("account {}", self.id))
    }

    pub fn record(&self, cipher: &CredentialCipher) -> anyhow::Result<AccountRecord> {
        let credential = SecretString::from(self.credential.clone());
        let sealed = cipher
            .seal(&self.id, &credential)
            .with_context(|| format!("storing the credential of account {}", self.id))?;
        Ok(AccountRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: self.kind,
            base_url: self.base_url.clone(),
            credential: sealed,
            auth_scheme: self.auth_scheme,
            priority: self.priority,
            schedulable: self.schedulable,
            models: self.models.clone(),
            model_map: self.model_map.clone(),
            concurrency_limit: self.concurrency_limit.unwrap_or(0),
            daily_quota_nano_usd: self.daily_quota_usd.unwrap_or_default().0,
            group: self.group.clone(),
        })
    }
}

impl SeedKey {
    /// The checks a key entry passes before anything is stored.
    pub fn check(&self) -> anyhow::Result<()> {
        crate::store::check_id(&self.id).map_err(|err| anyhow::anyhow!("key: {err}"))?;
        match (&self.key, &self.key_sha256) {
            (Some(key), None) => super::check_header_secret("key", key)
                .with_context(|| format!("key {}", self.id))?,
            (None, Some(hash)) if is_sha256_hex(hash) => {}
            (None, Some(_)) => bail!(
                "key {}: key_sha256 must be 64 lowercase hex characters",
                self.id
            ),
            _ => bail!(
                "key {}: give exactly one of `key` and `key_sha256`",
                self.id
            ),
        }
        check_key_terms(self)?;
        self.limits()
            .check()
            .with_context(|| format!("key {}", self.id))
    }

    pub fn record(&self, pepper: Option<&SecretString>, created_at: OffsetDateTime) -> KeyRecord {
        let key_sha256 = match (&self.key, &self.key_sha256) {
            (Some(key), _) => hash_key(key, pepper),
            (None, Some(hash)) => hash.clone(),
            (None, None) => String::new(),
        };
        KeyRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            key_sha256,
            owner: self.owner.clone(),
            created_at: Some(created_at),
            disabled: self.disabled,
            expires_at: self.expires_at,
            activation_days: self.activation_days,
            activated_at: None,
            services: self.services.clone(),
            allowed_clients: self.allowed_clients.clone(),
            allowed_models: self.allowed_models.clone(),
            denied_models: self.denied_models.clone(),
            account: self.account.clone(),
            limits: self.limits(),
        }
    }

    fn limits(&self) -> KeyLimits {
        SeedLimits {
            concurrency_limit: self.concurrency_limit,
            wait_for_slot_secs: self.wait_for_slot_secs,
            rate_limit: self.rate_limit,
            daily_budget_usd: self.daily_budget_usd,
            weekly_budget_usd: self.weekly_budget_usd,
            total_budget_usd: self.total_budget_usd,
            weekly_reset: self.weekly_reset,
            family_budgets_usd: &self.family_budgets_usd,
        }
        .to_limits()
    }
}

/// What a key may do must make sense: a key with no service could never be
/// used (disable it instead), and a validity of zero days ends at once.
fn check_key_terms(key: &SeedKey) -> anyhow::Result<()> {
    if key.services.is_empty() {
        bail!(
            "key {}: `services` is empty; list at least one, or set `disabled`",
            key.id
        );
    }
    if key.activation_days == Some(0) {
        bail!("key {}: `activation_days` must be at least 1", key.id);
    }
    Ok(())
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Replaces `${NAME}` in every string of the document.
fn substitute(value: &mut Value, var: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<()> {
    match value {
        Value::String(text) => *text = expand(text, var)?,
        Value::Array(items) => {
            for item in items {
                substitute(item, var)?;
            }
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                substitute(item, var)?;
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

fn expand(text: &str, var: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .with_context(|| format!("unclosed ${{ in {text:?}"))?;
        let name = &after[..end];
        let value = var(name).with_context(|| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "MOCK_URL").then(|| "http://127.0.0.1:9".to_owned())
    }

    #[test]
    fn variables_are_replaced_and_unset_ones_named() {
        let ok = SeedFile::parse(
            r#"{"accounts":[{"id":"a","name":"A","base_url":"${MOCK_URL}/x","credential":"c"}]}"#,
            &env,
        )
        .unwrap();
        assert_eq!(ok.accounts[0].base_url, "http://127.0.0.1:9/x");

        let err = SeedFile::parse(
            r#"{"accounts":[{"id":"a","name":"A","base_url":"${NOPE}","credential":"c"}]}"#,
            &env,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("NOPE is not set"), "{err:#}");
    }

    #[test]
    fn base_urls_with_a_user_a_query_or_a_fragment_are_refused() {
        for (base_url, says) in [
            ("http://user:p%40ss@127.0.0.1:9", "user or password"),
            ("http://127.0.0.1:9/?x=1", "query or fragment"),
            ("http://127.0.0.1:9/#frag", "query or fragment"),
            ("file:///etc", "http(s)"),
            ("127.0.0.1:9", "URL"),
            ("http://127.0.0.1:9 ", "spaces"),
        ] {
            let seed = serde_json::json!({"accounts": [{"id": "a", "name": "A",
                "base_url": base_url, "credential": "sk"}]});
            let err = SeedFile::parse(&seed.to_string(), &env).unwrap_err();
            assert!(format!("{err:#}").contains(says), "{base_url}: {err:#}");
        }
        let fine = serde_json::json!({"accounts": [{"id": "a", "name": "A",
            "base_url": "https://relay.example/api/", "credential": "sk"}]});
        assert!(SeedFile::parse(&fine.to_string(), &env).is_ok());
    }

    #[test]
    fn credentials_that_cannot_be_a_header_value_are_refused() {
        for (credential, says) in [
            ("sk-a\nb", "a line break"),
            ("sk a", "a space"),
            ("", "empty"),
            ("sk-\u{e9}", "visible ASCII"),
        ] {
            let seed = serde_json::json!({"accounts": [{"id": "a", "name": "A",
                "base_url": "http://127.0.0.1:9", "credential": credential}]});
            let err = SeedFile::parse(&seed.to_string(), &env).unwrap_err();
            assert!(format!("{err:#}").contains(says), "{credential:?}: {err:#}");
        }
    }

    #[test]
    fn two_keys_with_one_secret_are_refused_before_anything_is_written() {
        let err = SeedFile::parse(
            r#"{"keys":[{"id":"a","name":"A","key":"cr_same"},{"id":"b","name":"B","key":"cr_same"}]}"#,
            &env,
        )
        .unwrap_err();

        assert!(
            format!("{err:#}").contains("keys a and b have the same secret"),
            "{err:#}"
        );
    }

    #[test]
    fn unknown_fields_are_errors() {
        let err = SeedFile::parse(
            r#"{"keys":[{"id":"k","name":"K","key":"x","colour":1}]}"#,
            &env,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("colour"), "{err:#}");
    }

    #[test]
    fn keys_accept_owner_lifetime_services_and_a_deny_list() {
        let seed = SeedFile::parse(
            r#"{"keys":[{"id":"k","name":"K","key":"x","owner":"alice",
                "expires_at":"2026-12-31T00:00:00+01:00","activation_days":30,
                "services":["messages","models"],"denied_models":["claude-opus-4-5"]}]}"#,
            &env,
        )
        .unwrap();

        let record = seed.keys[0].record(None, time::macros::datetime!(2026-01-01 0:00 UTC));
        assert_eq!(record.owner, "alice");
        assert_eq!(
            record.expires_at,
            Some(time::macros::datetime!(2026-12-30 23:00 UTC))
        );
        assert_eq!(record.activation_days, Some(30));
        assert_eq!(record.services, [Service::Messages, Service::Models]);
        assert_eq!(record.denied_models, ["claude-opus-4-5"]);
        assert_eq!(record.activated_at, None);
    }

    #[test]
    fn a_key_without_services_may_call_every_service() {
        let seed = SeedFile::parse(r#"{"keys":[{"id":"k","name":"K","key":"x"}]}"#, &env).unwrap();

        assert_eq!(seed.keys[0].services, Service::all());
    }

    #[test]
    fn key_terms_that_make_no_sense_are_errors() {
        for (key, expected) in [
            (r#""services":[]"#, "services"),
            (r#""services":["chat"]"#, "chat"),
            (r#""activation_days":0"#, "activation_days"),
            (r#""expires_at":"tomorrow""#, "expires_at"),
        ] {
            let text = format!(r#"{{"keys":[{{"id":"k","name":"K","key":"x",{key}}}]}}"#);
            let err = SeedFile::parse(&text, &env).unwrap_err();
            assert!(format!("{err:#}").contains(expected), "{key}: {err:#}");
        }
    }

    #[test]
    fn every_account_field_and_the_key_binding_are_accepted() {
        let seed = SeedFile::parse(
            r#"{"accounts":[{"id":"acct-a","name":"A","kind":"console","base_url":"${MOCK_URL}",
                 "credential":"sk-up-A","auth_scheme":"bearer","priority":1,"schedulable":false,
                 "models":["claude-sonnet-4-5"],"model_map":{"claude-sonnet-4-5":"up-sonnet"},
                 "concurrency_limit":2,"group":"team","daily_quota_usd":0.001}],
                "keys":[{"id":"k","name":"K","key":"x","account":"group:team"}]}"#,
            &env,
        )
        .unwrap();

        let account = &seed.accounts[0];
        assert_eq!(account.concurrency_limit, Some(2));
        assert_eq!(account.daily_quota_usd, Some(Usd(1_000_000)));
        assert_eq!(account.auth_scheme, AuthScheme::Bearer);
        assert_eq!(account.group.as_deref(), Some("team"));
        assert_eq!(account.model_map["claude-sonnet-4-5"], "up-sonnet");
        assert!(!format!("{account:?}").contains("sk-up-A"));
        assert_eq!(seed.keys[0].account.as_deref(), Some("group:team"));
    }

    #[test]
    fn blank_groups_bad_urls_and_impossible_quotas_are_refused() {
        for account in [
            r#"{"id":"a","name":"A","base_url":"${MOCK_URL}","credential":"c","group":" "}"#,
            r#"{"id":"a","name":"A","base_url":"ftp://x","credential":"c"}"#,
            r#"{"id":"a b","name":"A","base_url":"${MOCK_URL}","credential":"c"}"#,
            r#"{"id":"acct/x","name":"A","base_url":"${MOCK_URL}","credential":"c"}"#,
            r#"{"id":"acct{x","name":"A","base_url":"${MOCK_URL}","credential":"c"}"#,
            r#"{"id":"a","name":"A","base_url":"${MOCK_URL}","credential":"c","daily_quota_usd":-1}"#,
            r#"{"id":"a","name":"A","base_url":"${MOCK_URL}","credential":"c","daily_quota_usd":"1"}"#,
        ] {
            let text = format!(r#"{{"accounts":[{account}]}}"#);
            assert!(SeedFile::parse(&text, &env).is_err(), "{account}");
        }
    }

    #[test]
    fn key_limits_are_read_in_dollars_and_stored_in_nano_dollars() {
        let seed = SeedFile::parse(
            r#"{"keys":[{"id":"k","name":"K","key":"x","concurrency_limit":5,
                "wait_for_slot_secs":10,"daily_budget_usd":0.01,"weekly_budget_usd":null,
                "total_budget_usd":0,"rate_limit":{"window_secs":60,"requests":3,"cost_usd":0.5},
                "weekly_reset":{"day":"fri","hour":9},
                "family_budgets_usd":{"opus":{"daily":0,"weekly":50},"haiku":{"daily":0}}}]}"#,
            &env,
        )
        .unwrap();

        let limits = seed.keys[0].limits();

        assert_eq!(limits.concurrency, 5);
        assert_eq!(limits.wait_for_slot_secs, 10);
        assert_eq!(limits.budgets.daily_nano_usd, 10_000_000);
        assert_eq!(limits.budgets.weekly_nano_usd, 0);
        let rate = limits.rate.unwrap();
        assert_eq!((rate.window_secs, rate.requests), (60, 3));
        assert_eq!(rate.cost_nano_usd, 500_000_000);
        assert_eq!(limits.weekly_reset.hour, 9);
        assert_eq!(
            limits.family_budgets.len(),
            1,
            "a family without budgets is dropped"
        );
        assert_eq!(
            limits.family_budgets[&Family::Opus].weekly_nano_usd,
            50_000_000_000
        );
    }

    #[test]
    fn impossible_limits_are_errors() {
        for key in [
            r#""daily_budget_usd":-1"#,
            r#""daily_budget_usd":"1""#,
            r#""weekly_reset":{"day":"monday","hour":0}"#,
            r#""weekly_reset":{"day":"mon","hour":24}"#,
            r#""rate_limit":{"window_secs":0,"requests":1}"#,
            r#""rate_limit":{"window_secs":60,"requests":1,"cost":1}"#,
            r#""family_budgets_usd":{"gpt":{"daily":1}}"#,
        ] {
            let text = format!(r#"{{"keys":[{{"id":"k","name":"K","key":"x",{key}}}]}}"#);
            assert!(SeedFile::parse(&text, &env).is_err(), "{key}");
        }
    }

    #[test]
    fn a_key_needs_exactly_one_of_key_and_hash() {
        for keys in [
            r#"[{"id":"k","name":"K"}]"#,
            r#"[{"id":"k","name":"K","key":"x","key_sha256":"00"}]"#,
            r#"[{"id":"k","name":"K","key_sha256":"ABC"}]"#,
        ] {
            assert!(
                SeedFile::parse(&format!(r#"{{"keys":{keys}}}"#), &env).is_err(),
                "{keys}"
            );
        }
    }
}
