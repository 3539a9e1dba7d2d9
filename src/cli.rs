//! The command line: `serve` and the operator subcommands.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::admin::accounts::{self, AccountsCommand};
use crate::admin::keys::KeysCommand;
use crate::admin::seed::SeedFile;
use crate::app::{Application, shutdown_signal};
use crate::config::Config;
use crate::store::Store;
use crate::usage::record::Recorder;
use crate::usage::report;

#[derive(Debug, Parser)]
#[command(
    name = "claude-relay",
    version,
    about = "A relay for the Anthropic Messages API"
)]
pub struct Cli {
    /// TOML config file; `RELAY_*` environment variables override it.
    #[arg(long, global = true, env = "RELAY_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay.
    Serve,
    /// Load keys and accounts from a seed file (upsert by id).
    Seed {
        /// The seed file (JSON).
        file: PathBuf,
    },
    /// Upstream accounts: add, list (with why an account takes no
    /// traffic), show, disable, enable, remove, set-priority.
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// Create, inspect, disable, rotate and delete relay keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Usage and cost counters, per day, month and total.
    Usage(UsageArgs),
    /// Limits of a key as they stand now.
    #[command(subcommand)]
    Limits(LimitsCommand),
}

#[derive(Debug, Subcommand)]
pub enum LimitsCommand {
    /// Current leases, rate window use, budget use and resets of one key.
    Show {
        /// The key's id.
        key_id: String,
        /// Print JSON (the `GET /relay/key` body plus the leases).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct UsageArgs {
    /// Only this key (by id).
    #[arg(long)]
    key: Option<String>,
    /// Only this account (by id).
    #[arg(long)]
    account: Option<String>,
    /// Only this model.
    #[arg(long)]
    model: Option<String>,
    /// First day shown (YYYY-MM-DD); default a week back.
    #[arg(long)]
    since: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// An error and its causes on one line, each cause said once: some
/// errors (Redis's, the time crate's) repeat their source in their own
/// message.
pub fn describe(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let said = cause.to_string();
        if text.contains(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}

/// Runs one command; what it says for a person goes to `out`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    crate::observe::init_tracing(config.log_format);
    match cli.command {
        Command::Serve => serve(config, out).await,
        Command::Seed { file } => seed(&config, &file, out).await,
        Command::Keys { command } => crate::admin::keys::run(command, &config, out).await,
        Command::Usage(args) => usage(&config, args, out).await,
        Command::Accounts { command } => {
            let store = Store::connect(&config.redis)?;
            accounts::run(command, &store, &config, out).await
        }
        Command::Limits(LimitsCommand::Show { key_id, json }) => {
            crate::admin::limits::show(&config, &key_id, json, out).await
        }
    }
}

async fn usage(config: &Config, args: UsageArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let since = args
        .since
        .map(|text| {
            let format = time::macros::format_description!("[year]-[month]-[day]");
            time::Date::parse(&text, &format)
                .with_context(|| format!("--since {text:?} is not a date like 2026-12-01"))
        })
        .transpose()?;
    let query = report::Query {
        key: args.key,
        account: args.account,
        model: args.model,
        since,
    };
    let store = Store::connect(&config.redis)?;
    let recorder = Recorder::new(store.clone(), config.usage_utc_offset);
    let sections = report::build(&store, &recorder, &query).await?;
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &sections)?;
        writeln!(out)?;
    } else {
        report::write_table(out, &sections)?;
    }
    Ok(())
}

async fn serve(config: Config, out: &mut dyn Write) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    writeln!(out, "listening on http://{}", app.local_addr()?)?;
    out.flush()?;
    app.run_until_stopped(shutdown_signal()).await
}

async fn seed(config: &Config, file: &std::path::Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let seed = SeedFile::load(file, &|name| std::env::var(name).ok())?;
    let store = Store::connect(&config.redis)?;
    let report = seed
        .apply(&store, &config.secrets)
        .await
        .context("writing the seed to Redis")?;
    let plural = |count: usize, one: &str, many: &str| {
        format!("{count} {}", if count == 1 { one } else { many })
    };
    writeln!(
        out,
        "seeded {} and {}",
        plural(report.accounts, "account", "accounts"),
        plural(report.keys, "key", "keys")
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = anyhow::Error::new(io)
            .context("connecting: refused")
            .context("reading the keys");

        assert_eq!(describe(&err), "reading the keys: connecting: refused");
    }
}
