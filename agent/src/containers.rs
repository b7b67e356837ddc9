//! Day-2 container calls behind `ContainerStatus`, `ContainerLogs` and `RestartContainer`.
//! Only containers with the agent's labels are listed, streamed or restarted: a name that
//! belongs to someone else's container is answered as "not managed".

use std::pin::Pin;

use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptions, LogsOptions, RestartContainerOptions,
};
use kagent_proto::v1;
use tokio_stream::{Stream, StreamExt};

use crate::host::docker::{self, Owner};
use crate::resource::ResourceError;

/// Why a container call failed, for the gRPC layer to map.
#[derive(Debug)]
pub enum CallError {
    /// No container of that name, or not one of ours.
    NotFound(String),
    Invalid(String),
    Docker(ResourceError),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NotFound(m) | CallError::Invalid(m) => f.write_str(m),
            CallError::Docker(e) if e.hint.is_empty() => f.write_str(&e.message),
            CallError::Docker(e) => write!(f, "{} ({})", e.message, e.hint),
        }
    }
}

impl From<ResourceError> for CallError {
    fn from(e: ResourceError) -> CallError {
        CallError::Docker(e)
    }
}

/// Status of one managed container (by name), or of all of them (of `stack`, if given).
pub async fn status(name: &str, stack: &str) -> Result<Vec<v1::ContainerInfo>, CallError> {
    let docker = docker::client().await?;
    if !name.is_empty() {
        return Ok(vec![info(&inspect_managed(name).await?)]);
    }
    let filters = docker::managed_filter((!stack.is_empty()).then_some(stack));
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| docker::error("list containers", &e))?;
    let mut out = Vec::with_capacity(list.len());
    for c in list {
        let Some(id) = c.id else { continue };
        match docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
        {
            Ok(i) => out.push(info(&i)),
            // Removed between list and inspect.
            Err(e) if docker::is_not_found(&e) => {}
            Err(e) => return Err(docker::error("inspect container", &e).into()),
        }
    }
    out.sort_by(|a, b| (&a.stack, &a.name).cmp(&(&b.stack, &b.name)));
    Ok(out)
}

/// The inspected container `name`, if it exists and is managed.
async fn inspect_managed(name: &str) -> Result<ContainerInspectResponse, CallError> {
    crate::engine::spec::check_name(name).map_err(CallError::Invalid)?;
    let docker = docker::client().await?;
    let c = match docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
    {
        Ok(c) if c.name.as_deref() == Some(&format!("/{name}")) => c,
        Ok(_) => return Err(not_found(name)),
        Err(e) if docker::is_not_found(&e) => return Err(not_found(name)),
        Err(e) => return Err(docker::error(&format!("inspect container {name}"), &e).into()),
    };
    match docker::owner(c.config.as_ref().and_then(|k| k.labels.as_ref())) {
        Owner::Managed { .. } => Ok(c),
        Owner::Foreign => Err(CallError::NotFound(format!(
            "container {name:?} is not managed by kagent; the agent only shows and restarts \
             its own containers"
        ))),
    }
}

fn not_found(name: &str) -> CallError {
    CallError::NotFound(format!(
        "no container {name:?} on this host; `kctl ps HOST` lists the managed ones"
    ))
}

fn info(c: &ContainerInspectResponse) -> v1::ContainerInfo {
    let labels = c.config.as_ref().and_then(|k| k.labels.as_ref());
    let (stack, resource, spec_hash) = match docker::owner(labels) {
        Owner::Managed {
            stack,
            resource,
            spec_hash,
        } => (stack, resource, spec_hash),
        Owner::Foreign => Default::default(),
    };
    let state = c.state.clone().unwrap_or_default();
    let health = state
        .health
        .as_ref()
        .and_then(|h| h.status)
        .map(|s| s.to_string())
        .filter(|s| !s.is_empty() && s != "none")
        .unwrap_or_default();
    let last_health_output = state
        .health
        .as_ref()
        .and_then(|h| h.log.as_ref())
        .and_then(|l| l.last())
        .and_then(|r| r.output.clone())
        .map(|o| o.trim().to_string())
        .unwrap_or_default();
    let started_at = state
        .started_at
        .as_deref()
        .filter(|s| !s.starts_with("0001-"))
        .and_then(parse_rfc3339);
    let mut ports = Vec::new();
    if let Some(map) = c.network_settings.as_ref().and_then(|n| n.ports.as_ref()) {
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort();
        for k in keys {
            for b in map.get(k).and_then(|b| b.as_ref()).into_iter().flatten() {
                ports.push(format!(
                    "{}:{}->{k}",
                    b.host_ip.as_deref().unwrap_or(""),
                    b.host_port.as_deref().unwrap_or("")
                ));
            }
        }
    }
    v1::ContainerInfo {
        name: c
            .name
            .as_deref()
            .unwrap_or("")
            .trim_start_matches('/')
            .to_string(),
        id: c.id.clone().unwrap_or_default(),
        image: c
            .config
            .as_ref()
            .and_then(|k| k.image.clone())
            .unwrap_or_default(),
        image_id: c.image.clone().unwrap_or_default(),
        state: state.status.map(|s| s.to_string()).unwrap_or_default(),
        health,
        restarts: c.restart_count.unwrap_or(0).max(0) as u32,
        started_at,
        exit_code: state.exit_code.unwrap_or(0),
        stack,
        resource,
        spec_hash,
        ports,
        last_health_output,
    }
}

/// `2026-05-01T09:30:00.123456789Z` (Docker's format) as a protobuf timestamp.
fn parse_rfc3339(s: &str) -> Option<prost_types::Timestamp> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let rest = rest.strip_suffix('Z')?;
    let (hms, frac) = rest.split_once('.').unwrap_or((rest, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let digits: String = frac.chars().take(9).collect();
    let nanos = format!("{digits:0<9}").parse::<i32>().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(prost_types::Timestamp {
        seconds: days * 86_400 + hh * 3600 + mm * 60 + ss,
        nanos,
    })
}

pub type LogStream = Pin<Box<dyn Stream<Item = Result<v1::LogChunk, CallError>> + Send>>;

/// The logs of a managed container: the last `tail` lines (all when `None`), from `since`
/// (Unix seconds, 0 = the start), then new output as it comes when `follow`.
pub async fn logs(
    name: &str,
    follow: bool,
    tail: Option<u32>,
    since: i64,
) -> Result<LogStream, CallError> {
    inspect_managed(name).await?;
    let docker = docker::client().await?;
    let options = LogsOptions {
        follow,
        stdout: true,
        stderr: true,
        since: i32::try_from(since.max(0)).unwrap_or(i32::MAX),
        tail: tail.map(|n| n.to_string()).unwrap_or_else(|| "all".into()),
        ..Default::default()
    };
    let name = name.to_string();
    let stream = docker.logs(&name, Some(options)).map(move |item| {
        use bollard::container::LogOutput;
        match item {
            Ok(out) => {
                let stream = match out {
                    LogOutput::StdErr { .. } => v1::LogStream::Stderr,
                    _ => v1::LogStream::Stdout,
                };
                Ok(v1::LogChunk {
                    stream: stream as i32,
                    data: out.into_bytes().to_vec(),
                })
            }
            Err(e) => Err(CallError::Docker(docker::error(
                &format!("read the logs of {name}"),
                &e,
            ))),
        }
    });
    Ok(Box::pin(stream))
}

/// Restarts a managed container (stop with `timeout_s`, default its own, then start).
pub async fn restart(name: &str, timeout_s: u32) -> Result<v1::ContainerInfo, CallError> {
    let c = inspect_managed(name).await?;
    let docker = docker::client().await?;
    let t = match timeout_s {
        0 => c
            .config
            .as_ref()
            .and_then(|k| k.stop_timeout)
            .and_then(|t| i32::try_from(t).ok())
            .unwrap_or(10),
        n => i32::try_from(n.min(600)).unwrap_or(600),
    };
    docker
        .restart_container(
            name,
            Some(RestartContainerOptions {
                t: Some(t),
                ..Default::default()
            }),
        )
        .await
        .map_err(|e| docker::error(&format!("restart container {name}"), &e))?;
    Ok(info(&inspect_managed(name).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_times_parse() {
        let t = parse_rfc3339("2026-05-01T09:30:00.25Z");
        assert_eq!(
            t,
            Some(prost_types::Timestamp {
                seconds: 1_777_627_800,
                nanos: 250_000_000
            })
        );
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:00Z").map(|t| t.seconds),
            Some(0)
        );
        assert_eq!(parse_rfc3339("garbage"), None);
    }
}
