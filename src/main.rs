use clap::Parser;

// glibc's allocator spends a sixth of the relay's CPU under load in
// malloc/free and its arena locks; mimalloc's thread-local heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = claude_relay::cli::Cli::parse();
    let mut stdout = std::io::stdout();
    match claude_relay::cli::run(cli, &mut stdout).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("claude-relay: {}", claude_relay::cli::describe(&err));
            std::process::ExitCode::FAILURE
        }
    }
}
