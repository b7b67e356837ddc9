//! `kctl apply HOST -f SPEC` and `kctl watch HOST ID`: start or find an operation, then follow
//! its events to the end with the same renderer. Exit code 0 when the operation succeeded,
//! 1 when it failed or was interrupted, 130 when the operator pressed Ctrl-C (the operation
//! goes on in the agent; kctl prints how to pick it up again).

use std::io::Write;
use std::path::Path;

use kagent_proto::v1;
use tonic::Streaming;

use super::{Context, connect};
use crate::agent_client::AgentClient;
use crate::error::{EXIT_FAILED, EXIT_INTERRUPTED, Error, Result, ResultExt};
use crate::follow::{self, Position, RetryPolicy, Sink};
use crate::host::Target;
use crate::output::{EventRenderer, Format, event_json_line};

pub async fn apply(ctx: &Context, host: &Target, file: &Path, dry_run: bool) -> Result<u8> {
    let spec =
        crate::spec::load(file).usage_hint("fix the spec file; nothing was sent to the agent")?;
    let mut client = connect(ctx, host).await?;
    let stream = client
        .apply(spec, dry_run)
        .await
        .map_err(|s| client.explain("Apply", &s))?;
    follow_to_end(ctx, &mut client, stream, Position::default()).await
}

pub async fn watch(ctx: &Context, host: &Target, operation_id: &str, from: u64) -> Result<u8> {
    let mut client = connect(ctx, host).await?;
    let stream = client
        .watch(operation_id, from)
        .await
        .map_err(|s| client.explain("WatchOperation", &s))?;
    let position = Position {
        operation_id: Some(operation_id.to_string()),
        next_index: from,
    };
    follow_to_end(ctx, &mut client, stream, position).await
}

pub(super) async fn follow_to_end(
    ctx: &Context,
    client: &mut AgentClient,
    stream: Streaming<v1::Event>,
    mut position: Position,
) -> Result<u8> {
    let mut sink = StdoutSink::new(ctx);
    let policy = RetryPolicy::default();
    let outcome = tokio::select! {
        result = follow::follow(client, stream, &mut position, &mut sink, &policy) => Some(result),
        _ = tokio::signal::ctrl_c() => None,
    };
    let finished = match outcome {
        Some(result) => result.map_err(|e| with_resume_hint(e, &position, client))?,
        None => {
            eprintln!();
            match position.resume_command(client) {
                Some(resume) => eprintln!(
                    "detached; the operation goes on in the agent. Follow it again with:\n  {resume}"
                ),
                None => eprintln!(
                    "detached before the agent named the operation; see `kctl ops {}`",
                    client.target()
                ),
            }
            return Ok(EXIT_INTERRUPTED);
        }
    };
    let state =
        v1::OperationState::try_from(finished.state).unwrap_or(v1::OperationState::Unspecified);
    match state {
        v1::OperationState::Succeeded => Ok(0),
        v1::OperationState::Interrupted => {
            eprintln!(
                "hint: the agent stopped before the operation finished; applying the same spec \
                 again converges (resources are read back from the host)"
            );
            Ok(EXIT_FAILED)
        }
        _ => Ok(EXIT_FAILED),
    }
}

/// Errors that leave the operation running get the resume command, when one is known and
/// the error carries no better hint.
fn with_resume_hint(e: Error, position: &Position, client: &AgentClient) -> Error {
    match (&e.hint, position.resume_command(client)) {
        (None, Some(resume)) => e.hint(format!("follow the operation again with `{resume}`")),
        _ => e,
    }
}

/// Prints events on stdout as they arrive (human lines or JSON Lines), notes on stderr.
struct StdoutSink {
    format: Format,
    renderer: EventRenderer,
}

impl StdoutSink {
    fn new(ctx: &Context) -> StdoutSink {
        StdoutSink {
            format: ctx.format,
            renderer: EventRenderer::new(ctx.style),
        }
    }
}

impl Sink for StdoutSink {
    fn event(&mut self, event: &v1::Event) -> std::io::Result<()> {
        let text = match self.format {
            Format::Human => self.renderer.render(event),
            Format::Json => format!("{}\n", event_json_line(event)),
        };
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()
    }

    fn note(&mut self, message: &str) {
        eprintln!("note: {message}");
    }
}

/// Event lines of one host among several (`kctl provision`, `kctl fleet renew`): `host | line`
/// for people, a `host` field in JSON.
pub(super) struct HostSink {
    host: String,
    format: Format,
    renderer: EventRenderer,
}

impl HostSink {
    pub(super) fn new(host: &str, ctx: &Context) -> HostSink {
        HostSink::with(host, ctx.format, ctx.style)
    }

    /// Without a [`Context`] (in a spawned task).
    pub(super) fn with(host: &str, format: Format, style: crate::output::Style) -> HostSink {
        HostSink {
            host: host.to_string(),
            format,
            renderer: EventRenderer::new(style),
        }
    }
}

impl Sink for HostSink {
    fn event(&mut self, event: &v1::Event) -> std::io::Result<()> {
        let text = match self.format {
            Format::Human => self
                .renderer
                .render(event)
                .lines()
                .map(|l| format!("{} | {l}\n", self.host))
                .collect::<String>(),
            Format::Json => {
                let mut v = crate::output::event_json(event);
                if let Some(o) = v.as_object_mut() {
                    o.insert("host".into(), serde_json::json!(self.host));
                }
                format!("{v}\n")
            }
        };
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()
    }

    fn note(&mut self, message: &str) {
        eprintln!("{}: note: {message}", self.host);
    }
}
