//! The `colloquy` binary: parses the command line and hands over to the library.

use clap::Parser;
use colloquy::config::{Cli, Command, DatabaseSettings, LogFormat, Settings, TeamCommand};
use colloquy::{startup, store, teams, telemetry};

/// mimalloc instead of glibc malloc: the request path allocates small, short-lived buffers on
/// two worker threads, where glibc spent ~10 % of CPU (perf, scripts/bench.sh poll-tail).
/// Built with `no_thp` (Cargo.toml): with transparent huge pages every sparsely used 8 KiB
/// connection buffer kept a whole huge page resident (10,000 SSE streams: 218 → 127 MB RSS).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("colloquy: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let settings = Settings::from_args(&args)?;
            telemetry::init(settings.log_format);
            let app = startup::Application::build(settings).await?;
            app.run_until_stopped().await
        }
        Command::Migrate(args) => {
            telemetry::init(LogFormat::Text);
            let db = DatabaseSettings::from_args(&args)?;
            store::migrate(&db.config).await
        }
        Command::Team(TeamCommand::Create {
            name,
            if_not_exists,
            database,
        }) => {
            let db = DatabaseSettings::from_args(&database)?;
            store::migrate(&db.config).await?;
            let store = store::connect(&db, None)?;
            let created = teams::create_from_cli(&store, &name, if_not_exists).await?;
            println!("{}", serde_json::to_string_pretty(&created)?);
            Ok(())
        }
    }
}
