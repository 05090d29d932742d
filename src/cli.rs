//! The command line: `serve`, `version`, `config check`, `config show`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Loaded, LogFormat, Overrides};
use crate::system::{notify, signals};
use crate::{app, build_info, telemetry};

#[derive(Debug, Parser)]
#[command(name = "cairn", version, about = "An ML appliance for edge hardware in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the appliance: HTTP(S) API, console, metrics.
    Serve(ConfigArgs),
    /// Print version, commit and build date.
    Version {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check or show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the configuration (file, env, flags) and exit 0 if it is usable.
    Check(ConfigArgs),
    /// Print the effective configuration as TOML, secrets redacted.
    Show(ConfigArgs),
}

/// Where the configuration comes from; each flag overrides file and env.
#[derive(Debug, Args)]
struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, short, env = "CAIRN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (store, TLS material, lock).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Plain HTTP listener, ADDR:PORT or `off`.
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// HTTPS listener, ADDR:PORT or `off`.
    #[arg(long, value_name = "ADDR")]
    https_listen: Option<String>,
    /// Log filter: error, warn, info, debug, trace, or per target (`cairn=debug`).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Log format.
    #[arg(long, value_name = "FORMAT", value_parser = ["plain", "json"])]
    log_format: Option<String>,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<Loaded> {
        let mut flags = Overrides::default();
        if let Some(dir) = &self.data_dir {
            flags.set("data_dir", dir.to_string_lossy());
        }
        for (key, value) in [
            ("http.listen", &self.http_listen),
            ("https.listen", &self.https_listen),
            ("log.level", &self.log_level),
            ("log.format", &self.log_format),
        ] {
            if let Some(value) = value {
                flags.set(key, value.clone());
            }
        }
        config::load(self.config.as_deref(), &config::process_env(), &flags)
    }
}

/// Runs the command line; the exit code is 0 on success, 1 on error, 2 on usage errors.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Version { json } => {
            version(json);
            Ok(())
        }
        Command::Config(ConfigCommand::Check(args)) => args.load().map(|loaded| {
            match &loaded.file {
                Some(file) => println!("configuration OK ({})", file.display()),
                None => println!("configuration OK (defaults, environment and flags)"),
            }
        }),
        Command::Config(ConfigCommand::Show(args)) => args.load().map(|loaded| {
            print!("{}", loaded.config.to_redacted_toml());
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn version(json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "version": build_info::VERSION,
                "commit": build_info::GIT_COMMIT,
                "build_date": build_info::BUILD_DATE,
                "linkage": build_info::LINKAGE,
            })
        );
    } else {
        println!(
            "cairn {} (commit {}, built {}, {} C runtime)",
            build_info::VERSION,
            build_info::GIT_COMMIT,
            build_info::BUILD_DATE,
            build_info::LINKAGE
        );
    }
}

fn serve(args: &ConfigArgs) -> anyhow::Result<()> {
    let loaded = args.load()?;
    let config = loaded.config;
    telemetry::logging::init(&config.log.level, config.log.format)?;
    if config.log.format == LogFormat::Plain {
        tracing::info!(version = build_info::VERSION, commit = build_info::GIT_COMMIT, "starting cairn");
    }
    tracing::info!(
        config_file = ?loaded.file,
        data_dir = %config.data_dir.display(),
        "configuration loaded"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cairn-worker")
        .build()?;
    runtime.block_on(async move {
        let running = app::start(config).await?;
        let mut requests = signals::listen(running.shutdown_handle())?;
        let status = format!(
            "serving{}{}",
            running.http_addr.map(|a| format!(" http://{a}")).unwrap_or_default(),
            running.https_addr.map(|a| format!(" https://{a}")).unwrap_or_default()
        );
        notify::ready(&status);
        let watchdog = notify::spawn_watchdog();
        let tls = running.app.tls.clone();
        let reloads = tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                if request == signals::Request::Reload {
                    match &tls {
                        Some(tls) => match tls.reload() {
                            Ok(()) => tracing::info!("TLS certificate reloaded"),
                            Err(e) => tracing::error!(error = format!("{e:#}"), "TLS reload failed; keeping the old certificate"),
                        },
                        None => tracing::info!("SIGHUP: nothing to reload (HTTPS is off)"),
                    }
                }
            }
        });
        let result = running.wait().await;
        reloads.abort();
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        result
    })?;
    // Connections still open after the deadline are dropped with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    Ok(())
}
