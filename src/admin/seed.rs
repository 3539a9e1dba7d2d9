//! The seed file: one JSON format for tests, the demo and operators.
//! Seeding upserts by id through the store, so running it twice is
//! harmless and it can never drift from the schema the relay reads.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::hash_key;
use crate::limits::seed::{SeedBudgets, SeedLimits, SeedRateLimit, Usd};
use crate::limits::spec::{Family, KeyLimits, WeeklyReset};
use crate::store::records::AccountKind;
use crate::store::{AccountRecord, AuthScheme, KeyRecord, Store};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedFile {
    #[serde(default)]
    pub accounts: Vec<SeedAccount>,
    #[serde(default)]
    pub keys: Vec<SeedKey>,
}

#[derive(Debug, Deserialize)]
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
    pub disabled: bool,
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
            if crate::upstream::client::join_url(&account.base_url, "/").is_none() {
                bail!(
                    "account {}: base_url {:?} is not an http(s) URL",
                    account.id,
                    account.base_url
                );
            }
        }
        for key in &self.keys {
            if !ids.insert(("key", key.id.as_str())) {
                bail!("key id {} appears twice", key.id);
            }
            match (&key.key, &key.key_sha256) {
                (Some(_), None) => {}
                (None, Some(hash)) if is_sha256_hex(hash) => {}
                (None, Some(_)) => bail!(
                    "key {}: key_sha256 must be 64 lowercase hex characters",
                    key.id
                ),
                _ => bail!("key {}: give exactly one of `key` and `key_sha256`", key.id),
            }
            key.limits()
                .check()
                .with_context(|| format!("key {}", key.id))?;
        }
        Ok(())
    }

    /// Upserts every record. Keys are hashed here; the key text is dropped.
    pub async fn apply(
        &self,
        store: &Store,
        pepper: Option<&SecretString>,
    ) -> anyhow::Result<SeedReport> {
        for account in &self.accounts {
            store.put_account(&account.record()).await?;
        }
        for key in &self.keys {
            store.put_key(&key.record(pepper)).await?;
        }
        Ok(SeedReport {
            accounts: self.accounts.len(),
            keys: self.keys.len(),
        })
    }
}

impl SeedAccount {
    fn record(&self) -> AccountRecord {
        AccountRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: self.kind,
            base_url: self.base_url.clone(),
            credential: self.credential.clone(),
            auth_scheme: self.auth_scheme,
            priority: self.priority,
            schedulable: self.schedulable,
        }
    }
}

impl SeedKey {
    fn record(&self, pepper: Option<&SecretString>) -> KeyRecord {
        let key_sha256 = match (&self.key, &self.key_sha256) {
            (Some(key), _) => hash_key(key, pepper),
            (None, Some(hash)) => hash.clone(),
            (None, None) => String::new(),
        };
        KeyRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            key_sha256,
            disabled: self.disabled,
            allowed_clients: self.allowed_clients.clone(),
            allowed_models: self.allowed_models.clone(),
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
    fn unknown_fields_are_errors() {
        let err = SeedFile::parse(
            r#"{"keys":[{"id":"k","name":"K","key":"x","colour":1}]}"#,
            &env,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("colour"), "{err:#}");
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
