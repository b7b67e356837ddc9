//! Consumers of a certificate: after a deploy, restart or signal them, then (when the spec
//! names a probe address) check that they serve the new certificate.
//!
//! Containers are reached through the Docker API (bollard, local socket); a host process
//! through its pid file. Container stop/start for the HTTP-01 "pause the owner" strategy lives
//! here as well.

use std::str::FromStr;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{
    InspectContainerOptions, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    RestartContainerOptions, StopContainerOptions,
};
use nix::sys::signal::Signal;

// Restart and stop pass no timeout: Docker then waits the container's own `StopTimeout` (the
// `container` resource's `stop_timeout_s`; 10 s when unset) before SIGKILL, as `docker restart`
// does. Passing one would override what the container was configured with.

/// Who to tell about a new certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Container(String),
    PidFile(std::path::PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub target: Target,
    /// None: restart the container (pid files need a signal).
    pub signal: Option<Signal>,
    /// `host:port` to probe over TLS afterwards.
    pub probe: Option<String>,
}

impl Consumer {
    pub fn describe(&self) -> String {
        let who = match &self.target {
            Target::Container(c) => format!("container {c}"),
            Target::PidFile(p) => format!("process of {}", p.display()),
        };
        match self.signal {
            Some(s) => format!("{s} to {who}"),
            None => format!("restart {who}"),
        }
    }
}

/// Parses "SIGHUP", "HUP" or "hup".
pub fn parse_signal(s: &str) -> Result<Signal, String> {
    let up = s.trim().to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    Signal::from_str(&name).map_err(|_| format!("{s:?} is not a signal name; use e.g. SIGHUP"))
}

async fn docker() -> Result<Docker, String> {
    let d = Docker::connect_with_unix_defaults()
        .map_err(|e| format!("cannot reach the Docker engine: {e}"))?;
    d.negotiate_version()
        .await
        .map_err(|e| format!("the Docker engine does not answer: {e}"))
}

/// Whether a consumer container exists yet. On a fresh host the certificate is issued before
/// the container that reads it is created (later in the same spec): such a container reads the
/// files when it starts, and has nothing to restart.
pub async fn container_exists(name: &str) -> Result<bool, String> {
    match docker()
        .await?
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if crate::host::docker::is_not_found(&e) => Ok(false),
        Err(e) => Err(format!("cannot inspect container {name}: {e}")),
    }
}

/// Restarts or signals one consumer.
pub async fn notify(c: &Consumer) -> Result<(), String> {
    match (&c.target, c.signal) {
        (Target::Container(name), None) => docker()
            .await?
            .restart_container(name, None::<RestartContainerOptions>)
            .await
            .map_err(|e| format!("cannot restart container {name}: {e}")),
        (Target::Container(name), Some(sig)) => {
            let opts = KillContainerOptionsBuilder::default()
                .signal(sig.as_str())
                .build();
            docker()
                .await?
                .kill_container(name, Some(opts))
                .await
                .map_err(|e| format!("cannot send {sig} to container {name}: {e}"))
        }
        (Target::PidFile(path), sig) => {
            let sig = sig.unwrap_or(Signal::SIGHUP);
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read pid file {}: {e}", path.display()))?;
            let pid: i32 = text.trim().parse().map_err(|_| {
                format!(
                    "pid file {} holds {:?}, not a pid",
                    path.display(),
                    text.trim()
                )
            })?;
            if pid <= 1 {
                return Err(format!(
                    "pid file {} names pid {pid}; refusing",
                    path.display()
                ));
            }
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
                .map_err(|e| format!("cannot send {sig} to pid {pid} ({}): {e}", path.display()))
        }
    }
}

/// The name of a running container that publishes host port `port`, if any (best effort: no
/// Docker engine means no answer).
pub async fn container_publishing(port: u16) -> Option<String> {
    let d = tokio::time::timeout(Duration::from_secs(2), docker())
        .await
        .ok()?
        .ok()?;
    let opts = ListContainersOptionsBuilder::default().build();
    let list = tokio::time::timeout(Duration::from_secs(3), d.list_containers(Some(opts)))
        .await
        .ok()?
        .ok()?;
    list.into_iter().find_map(|c| {
        let publishes = c
            .ports
            .unwrap_or_default()
            .iter()
            .any(|p| p.public_port == Some(port));
        publishes.then(|| {
            c.names
                .unwrap_or_default()
                .first()
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_else(|| c.id.unwrap_or_default())
        })
    })
}

/// Stops a container for the HTTP-01 "pause" strategy; returns when it is stopped.
pub async fn stop_container(name: &str) -> Result<Instant, String> {
    let d = docker().await?;
    d.stop_container(name, None::<StopContainerOptions>)
        .await
        .map_err(|e| format!("cannot stop container {name}: {e}"))?;
    Ok(Instant::now())
}

pub async fn start_container(name: &str) -> Result<(), String> {
    docker()
        .await?
        .start_container(name, None)
        .await
        .map_err(|e| format!("cannot start container {name} again: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_in_every_spelling() {
        assert_eq!(parse_signal("SIGHUP"), Ok(Signal::SIGHUP));
        assert_eq!(parse_signal("hup"), Ok(Signal::SIGHUP));
        assert_eq!(parse_signal("USR1"), Ok(Signal::SIGUSR1));
        assert!(parse_signal("SIGNOPE").is_err());
    }
}
