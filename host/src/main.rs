//! The `hookgate` command: `hookgate serve --config FILE`, `hookgate plugin check FILE`,
//! `hookgate plugin run FILE --event EVENT.json [--config JSON]`.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hookgate::config::Config;
use hookgate::gateway::Gateway;
use hookgate::plugins;
use tracing_subscriber::EnvFilter;

/// The gateway allocates and frees many small buffers per request on several threads; mimalloc
/// is markedly faster than glibc's allocator at that (see the delivery benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "hookgate",
    version,
    about = "WebAssembly-pluggable webhook gateway for crypto payments"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: admin API, delivery engine and retry scheduler.
    Serve {
        /// The TOML configuration file (see host/config.example.toml).
        #[arg(long, short, env = "HOOKGATE_CONFIG")]
        config: PathBuf,
    },
    /// Test a plugin without a running gateway.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Is FILE a valid plugin? Prints its world, imports and exports, and smoke-tests it.
    Check {
        /// A `.wasm` component.
        file: PathBuf,
    },
    /// Runs FILE's filter and transform on an event and prints the decision and the body.
    Run {
        /// A `.wasm` component.
        file: PathBuf,
        /// A JSON file: a webhook body `{"type","timestamp","id","data"}` or `{"type","data"}`.
        #[arg(long)]
        event: PathBuf,
        /// The plugin's configuration as JSON text.
        #[arg(long, default_value = "{}")]
        config: String,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse().command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the chain of causes on one line, without a backtrace.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => serve(config),
        Command::Plugin(PluginCommand::Check { file }) => {
            println!("{}", plugins::tool::check(&file)?);
            Ok(())
        }
        Command::Plugin(PluginCommand::Run {
            file,
            event,
            config,
        }) => {
            let event = std::fs::read_to_string(&event)
                .with_context(|| format!("cannot read the event file {}", event.display()))?;
            println!("{}", plugins::tool::run(&file, &event, &config)?);
            Ok(())
        }
    }
}

fn serve(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let token = config
            .server
            .admin_token
            .clone()
            .context("server.admin_token is not set")?;
        let gateway = Gateway::start(&config).await?;
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let address = listener.local_addr()?;
        tracing::info!(%address, store = %config.store.path.display(), "hookgate started");
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "hookgate: admin API listening on http://{address}")?;
        stdout.flush()?;
        drop(stdout);
        axum::serve(listener, hookgate::admin::router(gateway, token))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("the admin API stopped")?;
        tracing::info!("shut down; pending deliveries resume at the next start");
        Ok(())
    })
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
