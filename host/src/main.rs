//! The `hookgate` command: `hookgate serve --config FILE`, `hookgate plugin check FILE`,
//! `hookgate plugin run FILE --event EVENT.json [--config JSON]`, `hookgate plugin new NAME
//! [--dir DIR]`, `hookgate store compact`, `hookgate store migrate`, and `hookgate payment create|get|list` against a
//! running gateway's admin API.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hookgate::config::{Config, StoreBackend};
use hookgate::gateway::Gateway;
use hookgate::plugins;
use hookgate::store::postgres::PgStore;
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
    /// Run the gateway: admin API, chain scanners and delivery engine.
    Serve {
        /// The TOML configuration file (see host/config.example.toml).
        #[arg(long, short, env = "HOOKGATE_CONFIG")]
        config: PathBuf,
    },
    /// Start a plugin, or test one without a running gateway.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Maintain the redb file while the gateway is stopped.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Create and look up payments on a running gateway (through its admin API).
    Payment {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: PaymentCommand,
    },
}

/// Where the running gateway's admin API is.
#[derive(clap::Args)]
struct ApiArgs {
    /// The admin API's base URL.
    #[arg(long, env = "HOOKGATE_API", default_value = "http://127.0.0.1:8600")]
    api: String,
    /// The admin bearer token.
    #[arg(long, env = "HOOKGATE_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
}

#[derive(Subcommand)]
enum PaymentCommand {
    /// Creates a payment and prints it (with the address to pay).
    Create {
        /// A configured chain's name.
        #[arg(long)]
        chain: String,
        /// Decimal amount in the token's units, e.g. 12.5.
        #[arg(long)]
        amount: String,
        /// A configured token's symbol; omit for the native coin.
        #[arg(long)]
        token: Option<String>,
        /// RFC 3339 expiry; default: the gateway's payments.default_expiry from now.
        #[arg(long)]
        expires_at: Option<String>,
        /// The address to watch; default: derived from the gateway's payments.xpub.
        #[arg(long)]
        address: Option<String>,
        /// Merchant metadata, a JSON object.
        #[arg(long)]
        metadata: Option<String>,
    },
    /// Prints one payment with its transfers.
    Get { id: String },
    /// Lists payments, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        chain: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Returns the free pages left by the retention sweep to the file system. The gateway must
    /// be stopped (redb holds the file locked while it runs).
    Compact {
        /// The gateway's TOML configuration file (for `store.path`).
        #[arg(long, short, env = "HOOKGATE_CONFIG")]
        config: PathBuf,
    },
    /// Applies the PostgreSQL schema migrations this build has and the database lacks
    /// (`store.backend = "postgres"`). Safe to run again, and from several nodes at once.
    Migrate {
        /// The gateway's TOML configuration file (for `store.url`).
        #[arg(long, short, env = "HOOKGATE_CONFIG")]
        config: PathBuf,
    },
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
    /// Creates DIR/NAME: a plugin crate that builds with `cargo build --release --target
    /// wasm32-wasip2`, with the SDK and the contract of this gateway, an example and its tests.
    New {
        /// The plugin's name (letters, digits, `-`, `_`): the crate, and the plugin on the gateway.
        name: String,
        /// The directory to create the crate in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
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
        Command::Payment { api, command } => payment(api, command),
        Command::Serve { config } => serve(config),
        Command::Store(StoreCommand::Compact { config }) => {
            let config = Config::load(&config)?;
            let (before, after) = hookgate::store::compact(&config.store.path)?;
            println!(
                "compacted {}: {before} bytes -> {after} bytes",
                config.store.path.display()
            );
            Ok(())
        }
        Command::Store(StoreCommand::Migrate { config }) => migrate(config),
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
        Command::Plugin(PluginCommand::New { name, dir }) => {
            let root = plugins::scaffold::scaffold(&dir, &name)?;
            println!("{}", plugins::scaffold::next_steps(&root, &name));
            Ok(())
        }
    }
}

fn migrate(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    let Some(url) = config.store.url.as_ref() else {
        anyhow::bail!("store.url is not set: `store migrate` applies the PostgreSQL schema");
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let report = runtime.block_on(async {
        let store = PgStore::connect(url.expose(), 1)?;
        hookgate::store::postgres::migrate::migrate(&store).await
    })?;
    match report.applied.as_slice() {
        [] => println!("schema is up to date at version {}", report.version),
        applied => println!(
            "applied migrations {applied:?}; schema is at version {}",
            report.version
        ),
    }
    Ok(())
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
        match config.store.backend {
            StoreBackend::Redb => {
                tracing::info!(%address, store = %config.store.path.display(), "hookgate started")
            }
            StoreBackend::Postgres => {
                tracing::info!(%address, store = "postgres", "hookgate started")
            }
        }
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "hookgate: admin API listening on http://{address}")?;
        stdout.flush()?;
        drop(stdout);
        let limits = hookgate::admin::ListenerLimits {
            header_read_timeout: config.server.header_read_timeout,
            max_connections: config.server.max_connections,
        };
        let router = hookgate::admin::router(
            gateway,
            token,
            config.server.body_timeout,
            config.server.probes_need_token,
        );
        hookgate::admin::serve(listener, router, limits, shutdown_signal()).await;
        tracing::info!("shut down; pending deliveries resume at the next start");
        Ok(())
    })
}

/// Runs one payment command against the admin API and prints the JSON answer.
fn payment(api: ApiArgs, command: PaymentCommand) -> anyhow::Result<()> {
    let base = api.api.trim_end_matches('/');
    // reqwest is built without a default TLS provider; the gateway uses ring throughout.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .context("cannot build an HTTP client")?;
    let request = match command {
        PaymentCommand::Create {
            chain,
            amount,
            token,
            expires_at,
            address,
            metadata,
        } => {
            let metadata: Option<serde_json::Value> = metadata
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .context("--metadata is not JSON")?;
            let mut body = serde_json::json!({"chain": chain, "amount": amount});
            for (name, value) in [
                ("token", token.map(serde_json::Value::from)),
                ("expires_at", expires_at.map(serde_json::Value::from)),
                ("address", address.map(serde_json::Value::from)),
                ("metadata", metadata),
            ] {
                if let Some(value) = value {
                    body[name] = value;
                }
            }
            client.post(format!("{base}/v1/payments")).json(&body)
        }
        PaymentCommand::Get { id } => client.get(format!("{base}/v1/payments/{id}")),
        PaymentCommand::List {
            status,
            chain,
            limit,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(status.map(|status| ("status", status)));
            query.extend(chain.map(|chain| ("chain", chain)));
            let url = url::Url::parse_with_params(&format!("{base}/v1/payments"), &query)
                .with_context(|| format!("`{base}` is not a URL"))?;
            client.get(url)
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let (status, text) = runtime.block_on(async {
        let response = request
            .bearer_auth(&api.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {base}"))?;
        let status = response.status();
        let text = response.text().await.context("reading the answer")?;
        anyhow::Ok((status, text))
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|_| serde_json::Value::String(text.to_string()));
    if !status.is_success() {
        let message = json["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| json.to_string());
        anyhow::bail!("the gateway answered {status}: {message}");
    }
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
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
