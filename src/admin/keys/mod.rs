//! `claude-relay keys ...`: the key lifecycle, written straight to the
//! store. A key is printed once, when it is created or rotated; the store
//! keeps only its hash.

pub(crate) mod view;

use std::io::Write;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::auth::{generate_key, hash_key, lifetime};
use crate::config::Config;
use crate::store::{KeyRecord, Put, Service, Store, StoreError};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it, once.
    Create(CreateArgs),
    /// List every key.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one key's settings and state.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Refuse the key from now on (401 key_disabled).
    Disable { id: String },
    /// Accept a disabled key again.
    Enable { id: String },
    /// Remove the key for good.
    Delete { id: String },
    /// Replace the key's secret, keeping its id, settings and first use;
    /// prints the new key, once. The old key stops working at once.
    Rotate {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A name for people.
    #[arg(long)]
    pub name: String,
    /// The id scripts and logs use; generated when left out.
    #[arg(long)]
    pub id: Option<String>,
    /// Who the key is issued to.
    #[arg(long, default_value = "")]
    pub owner: String,
    /// Refuse the key from this moment (RFC 3339, or a date: midnight UTC).
    #[arg(long, value_parser = parse_moment)]
    pub expires_at: Option<OffsetDateTime>,
    /// Valid for this many days from its first use.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub activation_days: Option<u32>,
    /// Services the key may call (comma-separated); all when left out.
    #[arg(long, value_delimiter = ',')]
    pub services: Vec<Service>,
    /// Client kinds the key accepts (comma-separated); any when left out.
    #[arg(long, value_delimiter = ',')]
    pub allowed_clients: Vec<String>,
    /// Models the key may use (comma-separated); any when left out.
    #[arg(long, value_delimiter = ',')]
    pub allowed_models: Vec<String>,
    /// Models the key may not use (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub denied_models: Vec<String>,
    /// Create the key disabled.
    #[arg(long)]
    pub disabled: bool,
    #[arg(long)]
    pub json: bool,
}

/// Runs one keys command against the configured store.
pub async fn run(command: KeysCommand, config: &Config, out: &mut dyn Write) -> anyhow::Result<()> {
    let store = Store::connect(&config.redis)?;
    let pepper = config.secrets.key_pepper.as_ref();
    let now = OffsetDateTime::now_utc();
    match command {
        KeysCommand::Create(args) => create(&store, config, pepper, args, out).await,
        KeysCommand::List { json } => {
            let keys = store.list_keys().await.context("reading the keys")?;
            view::list(&keys, now, json, out)
        }
        KeysCommand::Show { id, json } => view::show(&existing(&store, &id).await?, now, json, out),
        KeysCommand::Disable { id } => set_disabled(&store, &id, true, out).await,
        KeysCommand::Enable { id } => set_disabled(&store, &id, false, out).await,
        KeysCommand::Delete { id } => delete(&store, &id, out).await,
        KeysCommand::Rotate { id, json } => rotate(&store, pepper, &id, json, out).await,
    }
}

async fn create(
    store: &Store,
    config: &Config,
    pepper: Option<&SecretString>,
    args: CreateArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    check_clients(config, &args.allowed_clients)?;
    let id = match args.id {
        Some(id) => {
            crate::store::check_id(&id).map_err(|err| anyhow::anyhow!("--id: {err}"))?;
            id
        }
        None => generated_id()?,
    };
    let key = generate_key()?;
    let record = KeyRecord {
        id,
        name: args.name,
        key_sha256: hash_key(key.expose_secret(), pepper),
        owner: args.owner,
        created_at: Some(lifetime::now()),
        disabled: args.disabled,
        expires_at: args.expires_at,
        activation_days: args.activation_days,
        activated_at: None,
        services: match args.services {
            services if services.is_empty() => Service::all(),
            services => services,
        },
        allowed_clients: args.allowed_clients,
        allowed_models: args.allowed_models,
        denied_models: args.denied_models,
        account: None,
        limits: Default::default(),
    };
    match store.write_key(&record, Put::Create).await {
        Ok(()) => {}
        Err(StoreError::Exists { id, .. }) => {
            bail!("a key with id {id} exists already; pick another id or rotate that key")
        }
        Err(err) => return Err(err).context("storing the key"),
    }
    view::issued("created", &record, &key, args.json, out)
}

/// A key limited to a client kind the relay does not know could never be
/// used: refuse it while the operator is still there to fix the typo.
pub(crate) fn check_clients(config: &Config, names: &[String]) -> anyhow::Result<()> {
    for name in names {
        if !config.clients.iter().any(|rule| &rule.name == name) {
            let known: Vec<&str> = config.clients.iter().map(|r| r.name.as_str()).collect();
            bail!(
                "unknown client kind `{name}`; known kinds: {}",
                known.join(", ")
            );
        }
    }
    Ok(())
}

async fn existing(store: &Store, id: &str) -> anyhow::Result<KeyRecord> {
    store
        .key_by_id(id)
        .await
        .context("reading the key")?
        .with_context(|| format!("no key with id {id}"))
}

async fn set_disabled(
    store: &Store,
    id: &str,
    disabled: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    store
        .update_key(id, |record| record.disabled = disabled)
        .await
        .context("storing the key")?
        .with_context(|| format!("no key with id {id}"))?;
    let done = if disabled { "disabled" } else { "enabled" };
    writeln!(out, "{done} key {id}")?;
    Ok(())
}

async fn delete(store: &Store, id: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    if store
        .delete_key(id)
        .await
        .context("deleting the key")?
        .is_none()
    {
        bail!("no key with id {id}");
    }
    writeln!(out, "deleted key {id}")?;
    Ok(())
}

async fn rotate(
    store: &Store,
    pepper: Option<&SecretString>,
    id: &str,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let key = generate_key()?;
    let hash = hash_key(key.expose_secret(), pepper);
    let record = store
        .update_key(id, |record| record.key_sha256.clone_from(&hash))
        .await
        .context("storing the key")?
        .with_context(|| format!("no key with id {id}"))?;
    view::issued("rotated", &record, &key, json, out)
}

/// `key-` and 12 random hex characters.
pub(crate) fn generated_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("no system randomness: {err}"))?;
    Ok(format!("key-{}", hex::encode(bytes)))
}

/// RFC 3339, or a bare date meaning its midnight UTC.
fn parse_moment(text: &str) -> Result<OffsetDateTime, String> {
    if let Ok(moment) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(moment);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &format)
        .map(|date| date.midnight().assume_utc())
        .map_err(|_| format!("{text:?} is neither RFC 3339 (2026-12-31T00:00:00Z) nor a date"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn moments_are_rfc3339_or_a_date_at_midnight_utc() {
        assert_eq!(
            parse_moment("2026-12-31T08:30:00+02:00"),
            Ok(datetime!(2026-12-31 06:30 UTC))
        );
        assert_eq!(
            parse_moment("2026-12-31"),
            Ok(datetime!(2026-12-31 00:00 UTC))
        );
        assert!(parse_moment("31.12.2026").is_err());
    }

    #[test]
    fn generated_ids_are_key_and_12_hex() {
        let id = generated_id().unwrap();

        assert_eq!(id.len(), 16);
        assert!(id.starts_with("key-"));
        assert!(id[4..].bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn unknown_client_kinds_are_refused_with_the_known_ones() {
        let config = Config::default();

        assert!(check_clients(&config, &["claude_code".into()]).is_ok());
        let err = check_clients(&config, &["claude-code".into()]).unwrap_err();
        assert!(
            err.to_string().contains("claude_code, anthropic_sdk"),
            "{err}"
        );
    }
}
