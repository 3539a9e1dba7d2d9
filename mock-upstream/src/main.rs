use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use mock_upstream::{MockConfig, MockUpstream};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// A scriptable mock of the Anthropic Messages API.
#[derive(Parser)]
struct Args {
    /// 0 lets the system pick a free port.
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// JSON object mapping each credential to a profile name.
    #[arg(long)]
    profiles: Option<PathBuf>,
    /// Keep only the newest N requests in the journal (0: none), for load
    /// tests.
    #[arg(long)]
    journal_limit: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing();
    let mut config = match &args.profiles {
        Some(path) => MockConfig::from_profiles_file(path)?,
        None => MockConfig::default(),
    };
    config.journal_limit = args.journal_limit;
    let mock = MockUpstream::start_on(config, SocketAddr::new(args.host, args.port)).await?;
    announce(&mock.url())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    mock.shutdown().await;
    Ok(())
}

/// Harnesses wait for this exact line on stdout before sending requests.
fn announce(url: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {url}")?;
    stdout.flush()
}

/// Silent unless `RUST_LOG` or `TEST_LOG` asks; logs go to stderr so stdout
/// carries only the listening line.
fn init_tracing() {
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_from_env("TEST_LOG"))
        .unwrap_or_else(|_| EnvFilter::new("off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
