//! Log output: human on a terminal, plain lines under systemd (journald adds time and unit),
//! JSON with `--log-format json`. The level comes from `KAGENT_LOG` (default `info`).
//! Secret values never reach a log call: resources log paths and sizes only.

use std::io::IsTerminal;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Coloured, with timestamps (default on a terminal).
    Human,
    /// No colours, no timestamps: journald adds its own (default otherwise).
    Plain,
    /// One JSON object per line.
    Json,
}

impl Format {
    pub fn detect() -> Format {
        if std::io::stderr().is_terminal() {
            Format::Human
        } else {
            Format::Plain
        }
    }
}

pub fn init(format: Format) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KAGENT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        Format::Human => builder.with_ansi(true).init(),
        Format::Plain => builder
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .init(),
        Format::Json => builder.json().with_current_span(false).init(),
    }
}
