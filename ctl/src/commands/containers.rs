//! `kctl ps HOST`, `kctl logs HOST NAME`, `kctl restart HOST NAME`: the managed containers of a
//! host. Logs stream as they come (`-f` until Ctrl-C or the container stops).

use std::io::Write;

use anyhow::anyhow;
use kagent_proto::v1;

use super::{Context, connect, print, print_json};
use crate::error::{EXIT_INTERRUPTED, Error, Result};
use crate::host::Target;
use crate::output::{self, Format};

pub async fn ps(ctx: &Context, host: &Target, stack: Option<&str>) -> Result<u8> {
    let mut client = connect(ctx, host).await?;
    let containers = client
        .container_status("", stack.unwrap_or(""))
        .await
        .map_err(|s| client.explain("ContainerStatus", &s))?;
    match ctx.format {
        Format::Human => print(&output::containers_human(
            &containers,
            time::OffsetDateTime::now_utc(),
        ))?,
        Format::Json => print_json(&output::containers_json(&containers))?,
    }
    Ok(0)
}

pub async fn logs(
    ctx: &Context,
    host: &Target,
    name: &str,
    follow: bool,
    tail: Option<u32>,
    since: Option<&str>,
) -> Result<u8> {
    let since = since
        .map(|s| super::trust::parse_since(s, time::OffsetDateTime::now_utc()))
        .transpose()?
        .map(|t| prost_types::Timestamp {
            seconds: t.unix_timestamp(),
            nanos: 0,
        });
    let mut client = connect(ctx, host).await?;
    let request = v1::ContainerLogsRequest {
        name: name.to_string(),
        follow,
        tail,
        since,
    };
    let mut stream = client
        .container_logs(request)
        .await
        .map_err(|s| client.explain("ContainerLogs", &s))?;
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    loop {
        let next = tokio::select! {
            m = stream.message() => m,
            _ = tokio::signal::ctrl_c() => return Ok(EXIT_INTERRUPTED),
        };
        let Some(chunk) = next.map_err(|s| client.explain("ContainerLogs", &s))? else {
            return Ok(0);
        };
        let is_err = chunk.stream == v1::LogStream::Stderr as i32;
        let written = match ctx.format {
            Format::Json => {
                let line = serde_json::json!({
                    "stream": if is_err { "stderr" } else { "stdout" },
                    "data": String::from_utf8_lossy(&chunk.data),
                });
                writeln!(stdout, "{line}").and_then(|()| stdout.flush())
            }
            Format::Human if is_err => stderr.write_all(&chunk.data).and_then(|()| stderr.flush()),
            Format::Human => stdout.write_all(&chunk.data).and_then(|()| stdout.flush()),
        };
        written.map_err(|e| Error::failed(anyhow!("cannot write the output: {e}")))?;
    }
}

pub async fn restart(ctx: &Context, host: &Target, name: &str, timeout: Option<u32>) -> Result<u8> {
    let mut client = connect(ctx, host).await?;
    let info = client
        .restart_container(name, timeout.unwrap_or(0))
        .await
        .map_err(|s| client.explain("RestartContainer", &s))?;
    match ctx.format {
        Format::Human => print(&format!(
            "restarted {} ({})\n",
            info.name,
            if info.state.is_empty() {
                "-"
            } else {
                &info.state
            }
        ))?,
        Format::Json => print_json(&output::container_json(&info))?,
    }
    Ok(0)
}
