//! Output: formats, never decides. Human text (aligned tables, one line per event) and JSON
//! (`--output json`: one JSON object per line for event streams, in the manner of ripgrep's
//! JSON printer; one JSON document for facts and operation lists).
//!
//! Every function here is pure: it takes data (and `now` where relative times are shown) and
//! returns text, so the renderings are unit-tested without a terminal or an agent.

mod certs;
mod containers;
mod events;
mod facts;
mod fleet;
mod keycloak;
mod operations;
pub mod table;

pub use certs::{certificates_human, certificates_json};
pub use containers::{container_json, containers_human, containers_json};
pub use events::{EventRenderer, counts_json, event_json, event_json_line};
pub use facts::{facts_human, facts_json};
pub use fleet::{fleet_human, fleet_json, fleet_renew_human, fleet_renew_json};
pub use keycloak::{keycloak_checks_human, keycloak_checks_json};
pub use operations::{operations_human, operations_json};
pub use table::{Table, truncate};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `--output`: how results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables and one line per event, for people.
    #[default]
    Human,
    /// JSON: one object per line for event streams, one document otherwise.
    Json,
}

/// Whether to colour human output. Decided once, by the caller (a TTY and no `NO_COLOR`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Style {
    pub colour: bool,
}

/// Colours kctl uses, by meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Good,
    Change,
    Bad,
    Quiet,
    Strong,
}

impl Style {
    /// Colour when stdout is a terminal and `NO_COLOR` is unset or empty.
    pub fn detect() -> Style {
        use std::io::IsTerminal;
        let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            colour: !no_colour && std::io::stdout().is_terminal(),
        }
    }

    pub fn paint(&self, tone: Tone, text: &str) -> String {
        if !self.colour || text.is_empty() {
            return text.to_string();
        }
        let code = match tone {
            Tone::Good => "32",
            Tone::Change => "33",
            Tone::Bad => "31;1",
            Tone::Quiet => "2",
            Tone::Strong => "1",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

/// RFC 3339 in UTC, to the second: `2026-05-01T09:30:00Z`.
pub fn timestamp(t: OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t);
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// RFC 3339 in UTC with the fraction the value carries, for JSON.
pub fn timestamp_precise(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// A protobuf timestamp as a date-time (`None` when unset or out of range).
pub fn from_proto(t: Option<&prost_types::Timestamp>) -> Option<OffsetDateTime> {
    let t = t?;
    let base = OffsetDateTime::from_unix_timestamp(t.seconds).ok()?;
    Some(base + time::Duration::nanoseconds(i64::from(t.nanos)))
}

/// A protobuf timestamp for tables (`-` when unset).
pub fn proto_timestamp(t: Option<&prost_types::Timestamp>) -> String {
    from_proto(t)
        .map(timestamp)
        .unwrap_or_else(|| "-".to_string())
}

/// A protobuf timestamp for JSON (`null` when unset).
pub fn proto_timestamp_json(t: Option<&prost_types::Timestamp>) -> serde_json::Value {
    from_proto(t)
        .map(|t| serde_json::Value::String(timestamp_precise(t)))
        .unwrap_or_default()
}

/// A duration for people: `12 ms`, `3.4 s`, `42 s`, `5 min 3 s`, `2 h 5 min`.
pub fn duration_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..10_000 => format!("{:.1} s", ms as f64 / 1000.0),
        10_000..60_000 => format!("{} s", ms / 1000),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// A size for people, in binary units: `512 B`, `1.5 KiB`, `7.6 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_ms(0), "0 ms");
        assert_eq!(duration_ms(12), "12 ms");
        assert_eq!(duration_ms(999), "999 ms");
        assert_eq!(duration_ms(3_400), "3.4 s");
        assert_eq!(duration_ms(42_900), "42 s");
        assert_eq!(duration_ms(303_000), "5 min 3 s");
        assert_eq!(duration_ms(7_500_000), "2 h 5 min");
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(8_160_000_000), "7.6 GiB");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = prost_types::Timestamp {
            seconds: 1_777_627_800,
            nanos: 250_000_000,
        };
        assert_eq!(proto_timestamp(Some(&t)), "2026-05-01T09:30:00Z");
        assert_eq!(proto_timestamp_json(Some(&t)), "2026-05-01T09:30:00.25Z");
        assert_eq!(proto_timestamp(None), "-");
        assert_eq!(proto_timestamp_json(None), serde_json::Value::Null);
        let offset = from_proto(Some(&t)).map(|t| {
            t.to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap_or(time::UtcOffset::UTC))
        });
        assert_eq!(
            offset.map(timestamp).unwrap_or_default(),
            "2026-05-01T09:30:00Z"
        );
    }

    #[test]
    fn paint_only_with_colour() {
        assert_eq!(Style { colour: false }.paint(Tone::Bad, "x"), "x");
        assert_eq!(
            Style { colour: true }.paint(Tone::Good, "ok"),
            "\x1b[32mok\x1b[0m"
        );
    }
}
