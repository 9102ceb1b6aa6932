//! The command line: `confab [serve]`, `confab config check|show`, `confab openapi|asyncapi`,
//! `confab migrate`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::EXIT_CONFIG;
use crate::config::{self, Sources};

#[derive(Parser, Debug)]
#[command(name = "confab", version, about = "Real-time one-to-one chat server")]
pub struct Cli {
    /// A TOML file to use instead of config/default.toml.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The configuration profile (default: CONFAB_PROFILE, or production if NODE_ENV=production).
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Log format; overrides `log.format`.
    #[arg(long, global = true, value_parser = ["pretty", "json"])]
    pub log_format: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve HTTP and Socket.IO (the default).
    Serve,
    /// Print the OpenAPI document of this configuration (JSON) without serving.
    Openapi {
        /// Print YAML (what `/swagger.yaml` serves) instead of JSON.
        #[arg(long)]
        yaml: bool,
    },
    /// Print the AsyncAPI document of the Socket.IO events (JSON) without serving.
    Asyncapi {
        /// Print YAML instead of JSON.
        #[arg(long)]
        yaml: bool,
    },
    /// Migrate the old Express backend's MongoDB database (`storage.mongodb`) in place so
    /// Confab can serve it: existing users log in, existing messages show up. Idempotent.
    Migrate,
    /// Ask this configuration's server for `/health` on 127.0.0.1 (a container
    /// HEALTHCHECK without curl); exit 0 if it answers 200.
    Health,
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// Validate the configuration and print every problem with its key.
    Check,
    /// Print the merged configuration, secrets masked.
    Show,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let sources = Sources {
        file: cli.config.clone(),
        profile: cli.profile.clone(),
    };
    let plugins = crate::plugins::compiled();
    let loaded = config::load(&sources, &plugins);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Config { action } => {
            let config = match loaded {
                Ok(c) => c,
                Err(problems) => return report(&problems),
            };
            if let Err(e) = crate::host::plan(&config, &plugins) {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            match action {
                ConfigAction::Check => println!("configuration ok (profile {})", config.profile.name),
                ConfigAction::Show => print!("{}", config::show(&config)),
            }
            ExitCode::SUCCESS
        }
        Command::Migrate => {
            let config = match loaded {
                Ok(c) => c,
                Err(problems) => return report(&problems),
            };
            migrate(&config)
        }
        Command::Health => {
            let config = match loaded {
                Ok(c) => c,
                Err(problems) => return report(&problems),
            };
            match health(config.server.port) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Openapi { yaml } => print_document(loaded, &plugins, yaml, false),
        Command::Asyncapi { yaml } => print_document(loaded, &plugins, yaml, true),
        Command::Serve => {
            let config = match loaded {
                Ok(c) => c,
                Err(problems) => return report(&problems),
            };
            crate::logging::init(&config.log, cli.log_format.as_deref());
            let runtime = match crate::runtime::build(&config) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(crate::app::run(config, plugins)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "confab stopped");
                    eprintln!("error: {e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
    }
}

/// Builds the plugins of this configuration without serving (see `app::document`) and
/// prints its OpenAPI document, or the AsyncAPI document derived from it.
fn print_document(
    loaded: Result<config::Config, Vec<confab_sdk::config::ConfigProblem>>,
    plugins: &[Box<dyn confab_sdk::plugin::DynPlugin>],
    yaml: bool,
    asyncapi: bool,
) -> ExitCode {
    use confab_sdk::docs::{self, AsyncApiRenderer};
    let config = match loaded {
        Ok(c) => c,
        Err(problems) => return report(&problems),
    };
    fn render<T: serde::Serialize>(doc: &T, yaml: bool) -> Result<String, String> {
        if yaml {
            docs::to_yaml(doc)
        } else {
            serde_json::to_string_pretty(doc).map_err(|e| e.to_string())
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string());
    let doc = runtime.and_then(|rt| {
        rt.block_on(crate::app::document(&config, plugins))
            .map_err(|e| e.to_string())
    });
    // The OpenAPI document is rendered from its struct, keeping its field order.
    let text = doc.and_then(|(d, renderer)| match (asyncapi, renderer) {
        (false, _) => render(&d, yaml),
        (true, Some(AsyncApiRenderer(to_asyncapi))) => to_asyncapi(&d).and_then(|a| render(&a, yaml)),
        (true, None) => {
            Err("the AsyncAPI document comes from the docs plugin: enable it ([docs] enabled = true)".into())
        }
    });
    match text {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `GET /health` over plain HTTP/1.0 with a short timeout (no client library needed).
fn health(port: u16) -> Result<(), String> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(3);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(|e| e.to_string())?;
    let status = String::from_utf8_lossy(&head[..n]);
    let line = status.lines().next().unwrap_or_default();
    if line.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        Err(format!("/health answered {line:?}"))
    }
}

fn migrate(config: &config::Config) -> ExitCode {
    let runtime = match crate::runtime::build(config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::storage::migrate(&config.storage)) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report(problems: &[confab_sdk::config::ConfigProblem]) -> ExitCode {
    eprintln!(
        "error: invalid configuration ({} problem{})",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        eprintln!("  {p}");
    }
    ExitCode::from(EXIT_CONFIG)
}
