//! `claude-relay accounts ...`: upstream accounts, written straight to the
//! store. `list` says for each account whether it takes traffic and, if
//! not, why and for how long.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use secrecy::SecretString;

use super::health_view::{self, Row, Today};
use crate::config::{Config, Secrets};
use crate::limits::seed::Usd;
use crate::store::cipher::CredentialCipher;
use crate::store::records::{AccountKind, StoredCredential};
use crate::store::{AccountRecord, AuthScheme, Store};

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Add an account. The credential is read from a file or stdin, never
    /// from the command line, and stored encrypted.
    Add(Box<AddArgs>),
    /// Every account: whether it takes traffic, and if not, why.
    List,
    /// One account in full (never its credential).
    Show { id: String },
    /// Take an account out of the pool.
    Disable { id: String },
    /// Put an account back into the pool; also clears a status the relay
    /// set (unauthorized, blocked) and any cooldown.
    Enable { id: String },
    /// Delete an account with its health and last use.
    Remove { id: String },
    /// Change an account's priority (lower is tried first).
    SetPriority { id: String, priority: u32 },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    #[arg(long)]
    pub id: String,
    /// Defaults to the id.
    #[arg(long)]
    pub name: Option<String>,
    /// Only `console` (an API key at a base URL) for now.
    #[arg(long, default_value = "console")]
    pub kind: String,
    #[arg(long)]
    pub base_url: String,
    /// A file holding the credential, or `-` for stdin.
    #[arg(long, value_name = "PATH")]
    pub credential_file: PathBuf,
    /// `x-api-key` or `bearer`.
    #[arg(long, default_value = "x-api-key")]
    pub auth_scheme: String,
    #[arg(long, default_value_t = 50)]
    pub priority: u32,
    /// Store it out of the pool; `accounts enable` puts it in.
    #[arg(long)]
    pub disabled: bool,
    /// Models it serves, comma-separated; none means all.
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// `REQUESTED=UPSTREAM`: the model id this upstream expects; repeatable.
    #[arg(long = "map", value_name = "REQUESTED=UPSTREAM")]
    pub model_map: Vec<String>,
    /// In-flight Messages requests at most; 0 means no limit.
    #[arg(long, default_value_t = 0)]
    pub concurrency_limit: u32,
    /// Dollars the account may cost per usage day (e.g. `25` or `0.5`);
    /// once reached it takes no traffic until the day ends.
    #[arg(long, value_name = "USD")]
    pub daily_quota_usd: Option<Usd>,
    /// Serve only keys bound to this group instead of the shared pool.
    #[arg(long)]
    pub group: Option<String>,
}

/// Runs one accounts command; what it says for a person goes to `out`.
pub async fn run(
    command: AccountsCommand,
    store: &Store,
    config: &Config,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let secrets = &config.secrets;
    let today = Today::now(config.usage_utc_offset);
    match command {
        AccountsCommand::Add(args) => add(*args, store, secrets, out).await,
        AccountsCommand::List => list(store, &today, out).await,
        AccountsCommand::Show { id } => show(&id, store, secrets, &today, out).await,
        AccountsCommand::Disable { id } => {
            update(store, &id, |record| record.schedulable = false).await?;
            writeln!(out, "account {id} disabled: it takes no traffic")?;
            Ok(())
        }
        AccountsCommand::Enable { id } => {
            update(store, &id, |record| record.schedulable = true).await?;
            store.clear_account_health(&id).await?;
            writeln!(out, "account {id} enabled: status and cooldown cleared")?;
            Ok(())
        }
        AccountsCommand::Remove { id } => {
            if !store.delete_account(&id).await? {
                bail!("no account {id}");
            }
            writeln!(out, "account {id} removed")?;
            Ok(())
        }
        AccountsCommand::SetPriority { id, priority } => {
            update(store, &id, |record| record.priority = priority).await?;
            writeln!(out, "account {id} now has priority {priority}")?;
            Ok(())
        }
    }
}

/// The checks shared by `accounts add` and the seed file.
pub fn check_fields(id: &str, base_url: &str, group: Option<&str>) -> anyhow::Result<()> {
    // Ids become Redis key names and hash tags; ids that differ only in
    // other characters would share counters and leases.
    crate::store::check_id(id).map_err(|err| anyhow::anyhow!("account: {err}"))?;
    check_base_url(base_url)?;
    if group.is_some_and(|group| group.trim().is_empty()) {
        bail!("group must not be empty; leave it out for the shared pool");
    }
    Ok(())
}

async fn add(
    args: AddArgs,
    store: &Store,
    secrets: &Secrets,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    check_fields(&args.id, &args.base_url, args.group.as_deref())?;
    if store.account(&args.id).await?.is_some() {
        bail!(
            "account {} exists; remove it first, or upsert it with a seed file",
            args.id
        );
    }
    let cipher = CredentialCipher::from_secrets(secrets)?;
    let credential = read_credential(&args.credential_file)?;
    let record = AccountRecord {
        name: args.name.clone().unwrap_or_else(|| args.id.clone()),
        kind: parse_kind(&args.kind)?,
        base_url: args.base_url.clone(),
        credential: cipher.seal(&args.id, &credential)?,
        auth_scheme: parse_scheme(&args.auth_scheme)?,
        priority: args.priority,
        schedulable: !args.disabled,
        models: args.models.clone(),
        model_map: parse_map(&args.model_map)?,
        concurrency_limit: args.concurrency_limit,
        daily_quota_nano_usd: args.daily_quota_usd.unwrap_or_default().0,
        group: args.group.clone(),
        id: args.id.clone(),
    };
    store.put_account(&record).await?;
    writeln!(out, "account {} added", record.id)?;
    Ok(())
}

fn read_credential(path: &Path) -> anyhow::Result<SecretString> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the credential from stdin")?;
    } else {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the credential from {}", path.display()))?;
    }
    let credential = text.trim_end_matches(['\n', '\r']);
    super::check_header_secret("credential", credential)?;
    Ok(SecretString::from(credential.to_owned()))
}

fn parse_kind(text: &str) -> anyhow::Result<AccountKind> {
    match text {
        "console" => Ok(AccountKind::Console),
        other => bail!("unknown account kind {other:?}: only `console` exists"),
    }
}

fn parse_scheme(text: &str) -> anyhow::Result<AuthScheme> {
    match text {
        "x-api-key" => Ok(AuthScheme::XApiKey),
        "bearer" => Ok(AuthScheme::Bearer),
        other => bail!("unknown auth scheme {other:?}: use `x-api-key` or `bearer`"),
    }
}

fn parse_map(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((from, to)) if !from.trim().is_empty() && !to.trim().is_empty() => {
                Ok((from.trim().to_owned(), to.trim().to_owned()))
            }
            _ => bail!("--map {pair:?}: write REQUESTED=UPSTREAM"),
        })
        .collect()
}

/// Request paths are appended to the base URL, and the account's
/// credential is the only one sent: a base URL with a query or fragment
/// (which the path would land behind) or with a user and password (sent
/// in the clear as Basic auth, and stored unsealed) is refused.
fn check_base_url(base_url: &str) -> anyhow::Result<()> {
    if base_url.trim() != base_url {
        bail!("base_url {base_url:?} has spaces around it");
    }
    let Ok(url) = reqwest::Url::parse(base_url) else {
        bail!("base_url {base_url:?} is not a URL");
    };
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        bail!("base_url {base_url:?} is not an http(s) URL with a host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        bail!("base_url must not carry a user or password; the credential is the account's own");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("base_url {base_url:?} must not have a query or fragment: paths are appended to it");
    }
    Ok(())
}

/// Changes one record (its new version makes every relay instance see it
/// on its next request).
async fn update(
    store: &Store,
    id: &str,
    change: impl FnOnce(&mut AccountRecord),
) -> anyhow::Result<()> {
    store
        .update_account(id, change)
        .await?
        .with_context(|| format!("no account {id}"))?;
    Ok(())
}

async fn list(store: &Store, today: &Today, out: &mut dyn Write) -> anyhow::Result<()> {
    let records = store.list_accounts().await?;
    let ids: Vec<&str> = records.iter().map(|record| record.id.as_str()).collect();
    let health = store.account_health(&ids, today.date()).await?;
    let rows: Vec<Row> = records
        .iter()
        .zip(&health)
        .map(|(record, health)| Row::new(record, health, today))
        .collect();
    health_view::write_table(&rows, out)?;
    Ok(())
}

async fn show(
    id: &str,
    store: &Store,
    secrets: &Secrets,
    today: &Today,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let record = store
        .account(id)
        .await?
        .with_context(|| format!("no account {id}"))?;
    let health = store.account_health(&[id], today.date()).await?;
    let health = health.into_iter().next().unwrap_or_default();
    let row = Row::new(&record, &health, today);
    let form = match record.credential {
        StoredCredential::Aes256Gcm(_) => "encrypted (AES-256-GCM)",
        StoredCredential::Plaintext(_) => "plaintext",
    };
    let readable = CredentialCipher::from_secrets(secrets)
        .map_err(|err| format!("{err:#}"))
        .and_then(|cipher| {
            cipher
                .open(id, &record.credential)
                .map_err(|err| err.to_string())
        });
    let opens = match readable {
        Ok(_) => format!("{form}, readable with this configuration"),
        Err(why) => format!("{form}, cannot be read: {why}"),
    };
    health_view::write_details(&record, &health, &row, &opens, out)?;
    Ok(())
}
