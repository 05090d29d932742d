//! Logs to stderr through tracing, plain or JSON.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::LogFormat;

/// Installs the global subscriber. `CAIRN_LOG` (a tracing filter), when set, wins over
/// `level`, so one run can be made verbose without touching the config.
///
/// # Errors
/// The filter does not parse.
pub fn init(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = match std::env::var("CAIRN_LOG") {
        Ok(text) if !text.is_empty() => {
            anyhow::ensure!(text.is_ascii(), "CAIRN_LOG: only ASCII is allowed");
            EnvFilter::try_new(text)?
        }
        _ => EnvFilter::try_new(level)?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::NONE)
        .with_target(true);
    let result = match format {
        LogFormat::Plain => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    // A second init (tests starting several servers in one process) keeps the first.
    let _ = result;
    Ok(())
}
