//! Log output: `--log` picks what is logged, `--log-format` how (text or JSON lines), on
//! standard error. Colour only when standard error is a terminal, so logs piped to a file or
//! a collector carry no ANSI escapes.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// Installs the global subscriber. An invalid filter falls back to `info` (with a note on
/// standard error) rather than failing: logging must not stop the server from starting.
pub fn init(config: &Config) {
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|e| {
        eprintln!("invalid --log filter {:?}: {e}; using \"info\"", config.log);
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init();
        }
        // One object a line: the event's fields at the top level (`message`, `code`,
        // `reason`, ...) and the innermost span's fields under `span` (`conn`: `id`, `doc`,
        // `user`; `room`: `doc`), so a collector can filter by document or connection.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_ansi(false)
            .init(),
    }
}
