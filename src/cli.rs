//! The command line: `serve` and the operator subcommands.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::admin::accounts::{self, AccountsCommand};
use crate::admin::seed::SeedFile;
use crate::app::{Application, shutdown_signal};
use crate::config::Config;
use crate::store::Store;

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
}

/// Runs one command; what it says for a person goes to `out`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    crate::observe::init_tracing(config.log_format);
    match cli.command {
        Command::Serve => serve(config, out).await,
        Command::Seed { file } => seed(&config, &file, out).await,
        Command::Accounts { command } => {
            let store = Store::connect(&config.redis)?;
            accounts::run(command, &store, &config.secrets, out).await
        }
    }
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
    writeln!(
        out,
        "seeded {} accounts and {} keys",
        report.accounts, report.keys
    )?;
    Ok(())
}
