use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = claude_relay::cli::Cli::parse();
    let mut stdout = std::io::stdout();
    match claude_relay::cli::run(cli, &mut stdout).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("claude-relay: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
