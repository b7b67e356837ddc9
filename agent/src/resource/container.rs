//! `container`: a Docker container kept running as the spec says, through the Docker API.
//!
//! Ownership and change detection live in labels, read back from the engine on every plan
//! (never from a cache): `io.kctl.managed-by=kagent`, `io.kctl.stack`, `io.kctl.resource`,
//! `io.kctl.spec-hash` (SHA-256 of the canonical spec, see [`Create`]) and `io.kctl.spec` (that
//! canonical spec, so a plan can say which fields changed). A container of the same name
//! without them is never touched: the read fails and nothing of the spec is applied.
//!
//! The plan is one of: create; recreate (spec hash, image behind the tag, or networks differ);
//! start (stopped or killed by hand); unchanged. Apply waits for the `after` dependencies to be
//! healthy, makes sure the image is there (local, else loaded from `image_archive`, else
//! pulled), then stop (timeout) / remove / create / start, and waits for the container's own
//! health check. Volumes are never removed here (`remove` keeps even anonymous ones).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, HealthConfig,
    HealthStatusEnum, HostConfig, Mount as DockerMount, MountType, NetworkConnectRequest,
    NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ImportImageOptions, InspectContainerOptions,
    LogsOptions, RemoveContainerOptions, StartContainerOptions, StopContainerOptions,
};
use kagent_proto::v1::{self, Action};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;

use super::{Change, FieldError, Progress, ResourceError};
use crate::engine::spec::{Kind, Resource};
use crate::host::docker::{self, Owner};

mod tls;
pub use tls::TlsOpts;

pub const DEFAULT_STACK: &str = "default";
/// The canonical spec, as JSON, for field-level plan diffs.
pub const LABEL_SPEC: &str = "io.kctl.spec";
const DEFAULT_STOP_TIMEOUT_S: u32 = 10;
const MAX_STOP_TIMEOUT_S: u32 = 600;
const DEFAULT_HEALTH_TIMEOUT_S: u32 = 60;
const MAX_HEALTH_TIMEOUT_S: u32 = 3600;
const DEFAULT_INTERVAL_MS: u32 = 1000;
/// How long one agent probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a long wait reports progress.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// What the spec declares before a resource. References point backwards because resources
/// apply in order: a container's network, volume and secret exist before it is created.
pub trait Declared {
    fn secret_path(&self, name: &str) -> Option<String>;
    fn file_path(&self, name: &str) -> Option<String>;
    fn volume(&self, name: &str) -> bool;
    fn network(&self, name: &str) -> bool;
    fn container(&self, name: &str) -> Option<&Spec>;
    /// Whether a `stack` resource of this name came already (it must come last).
    fn stack_declared(&self, stack: &str) -> bool;
}

impl Declared for [Resource] {
    fn secret_path(&self, name: &str) -> Option<String> {
        self.iter().find_map(|r| match &r.kind {
            Kind::Secret(s) if r.name == name => Some(s.path.to_string()),
            _ => None,
        })
    }
    fn file_path(&self, name: &str) -> Option<String> {
        self.iter().find_map(|r| match &r.kind {
            Kind::File(f) if r.name == name => Some(f.path.to_string()),
            _ => None,
        })
    }
    fn volume(&self, name: &str) -> bool {
        self.iter()
            .any(|r| r.name == name && matches!(r.kind, Kind::Volume(_)))
    }
    fn network(&self, name: &str) -> bool {
        self.iter()
            .any(|r| r.name == name && matches!(r.kind, Kind::Network(_)))
    }
    fn container(&self, name: &str) -> Option<&Spec> {
        self.iter().find_map(|r| match &r.kind {
            Kind::Container(c) if r.name == name => Some(c.as_ref()),
            _ => None,
        })
    }
    fn stack_declared(&self, stack: &str) -> bool {
        self.iter()
            .any(|r| r.name == stack && matches!(r.kind, Kind::Stack(_)))
    }
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub stack: String,
    /// Everything Docker is told at create time; its hash decides keep vs recreate.
    pub create: Create,
    pub image_archive: Option<String>,
    pub health: Option<Health>,
    pub after: Vec<Dependency>,
    pub hash: String,
}

/// The canonical spec: field order fixed, lists in spec order, defaults resolved.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Create {
    pub image: String,
    pub entrypoint: Vec<String>,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub ports: Vec<Port>,
    pub mounts: Vec<Mount>,
    pub networks: Vec<(String, Vec<String>)>,
    pub extra_hosts: Vec<String>,
    pub restart: String,
    pub user: String,
    pub init: bool,
    pub labels: Vec<(String, String)>,
    pub memory_bytes: u64,
    pub cpu_millis: u32,
    /// Docker's own health check (exec form), empty when none.
    pub healthcheck: Vec<String>,
    pub health_interval_ms: u32,
    pub read_only_rootfs: bool,
    pub stop_timeout_s: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Port {
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Mount {
    /// "bind" or "volume".
    pub kind: String,
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone)]
pub struct Health {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum Probe {
    /// Docker runs `Create::healthcheck` in the container; the agent reads its verdict.
    Docker,
    /// Connect, send `send`, healthy when bytes come back (a bare connect proves nothing:
    /// docker-proxy accepts before the application listens).
    Tcp { addr: String, send: Vec<u8> },
    /// `GET path` over HTTP/1.0 (over TLS when `tls`); healthy on `expect` (or any 2xx/3xx).
    Http {
        addr: String,
        host: String,
        path: String,
        expect: Option<u16>,
        tls: Option<TlsOpts>,
    },
    /// Healthy when a TLS handshake with `addr` succeeds.
    Tls { addr: String, tls: TlsOpts },
}

/// A container that must be healthy before this one starts.
#[derive(Debug, Clone)]
pub struct Dependency {
    pub name: String,
    pub health: Option<Health>,
}

pub fn from_proto(
    p: &v1::Container,
    name: &str,
    declared: &(impl Declared + ?Sized),
) -> Result<Spec, FieldError> {
    if name.len() < 2 {
        return Err(FieldError::new(
            "name",
            "Docker container names have at least 2 characters",
        ));
    }
    let stack = check_stack(&p.stack, declared)?;
    let image = check_image(&p.image)?;
    let image_archive = match p.image_archive.as_str() {
        "" => None,
        a => Some(check_abs("image_archive", a)?),
    };
    let mut env: Vec<(String, String)> = Vec::new();
    for e in &p.env {
        if e.name.is_empty() || e.name.contains(['=', '\0']) {
            return Err(FieldError::new(
                "env",
                format!(
                    "{:?} is not a variable name (non-empty, no '=' or NUL)",
                    e.name
                ),
            ));
        }
        if e.value.contains('\0') {
            return Err(FieldError::new(
                "env",
                format!("the value of {} contains a NUL byte", e.name),
            ));
        }
        if env.iter().any(|(n, _)| *n == e.name) {
            return Err(FieldError::new("env", format!("{} is set twice", e.name)));
        }
        env.push((e.name.clone(), e.value.clone()));
    }
    let ports = check_ports(&p.ports)?;
    let mounts = check_mounts(&p.mounts, declared)?;
    let mut networks: Vec<(String, Vec<String>)> = Vec::new();
    for n in &p.networks {
        if n.name != "bridge" && !declared.network(&n.name) {
            return Err(FieldError::new(
                "networks",
                format!(
                    "network {:?} is not declared before this container; add a `network` \
                     resource named {:?} earlier in the spec (or use \"bridge\")",
                    n.name, n.name
                ),
            ));
        }
        if networks.iter().any(|(x, _)| *x == n.name) {
            return Err(FieldError::new(
                "networks",
                format!("network {:?} is listed twice", n.name),
            ));
        }
        for a in &n.aliases {
            crate::engine::spec::check_name(a)
                .map_err(|e| FieldError::new("networks", format!("alias: {e}")))?;
        }
        if n.name == "bridge" && !n.aliases.is_empty() {
            return Err(FieldError::new(
                "networks",
                "Docker's default bridge has no aliases; declare a `network` resource",
            ));
        }
        networks.push((n.name.clone(), n.aliases.clone()));
    }
    for h in &p.extra_hosts {
        let ok = h
            .split_once(':')
            .is_some_and(|(n, ip)| !n.is_empty() && ip.parse::<IpAddr>().is_ok());
        if !ok {
            return Err(FieldError::new(
                "extra_hosts",
                format!("{h:?} is not NAME:ADDRESS (e.g. \"db.internal:10.0.0.5\")"),
            ));
        }
    }
    let restart = match v1::RestartPolicy::try_from(p.restart) {
        Ok(v1::RestartPolicy::Unspecified | v1::RestartPolicy::UnlessStopped) => "unless-stopped",
        Ok(v1::RestartPolicy::No) => "no",
        Ok(v1::RestartPolicy::Always) => "always",
        Ok(v1::RestartPolicy::OnFailure) => "on-failure",
        Err(_) => {
            return Err(FieldError::new(
                "restart",
                format!("unknown policy {}", p.restart),
            ));
        }
    };
    let mut labels = Vec::new();
    for l in &p.labels {
        if l.key.is_empty() || l.key.starts_with(docker::RESERVED_PREFIX) {
            return Err(FieldError::new(
                "labels",
                format!(
                    "{:?}: keys must be non-empty and must not start with {:?} (the agent's own)",
                    l.key,
                    docker::RESERVED_PREFIX
                ),
            ));
        }
        labels.push((l.key.clone(), l.value.clone()));
    }
    let (health, healthcheck, health_interval_ms) = check_health(p.health.as_ref())?;
    let mut after = Vec::new();
    for a in &p.after {
        if a == name {
            return Err(FieldError::new(
                "after",
                "a container cannot wait for itself",
            ));
        }
        let Some(dep) = declared.container(a) else {
            return Err(FieldError::new(
                "after",
                format!(
                    "{a:?} is not a container declared before this one; list it earlier in \
                     the spec"
                ),
            ));
        };
        after.push(Dependency {
            name: a.clone(),
            health: dep.health.clone(),
        });
    }
    let stop_timeout_s = match p.stop_timeout_s {
        0 => DEFAULT_STOP_TIMEOUT_S,
        n if n > MAX_STOP_TIMEOUT_S => {
            return Err(FieldError::new(
                "stop_timeout_s",
                format!("{n} is more than {MAX_STOP_TIMEOUT_S}"),
            ));
        }
        n => n,
    };
    let create = Create {
        image,
        entrypoint: p.entrypoint.clone(),
        command: p.command.clone(),
        env,
        ports,
        mounts,
        networks,
        extra_hosts: p.extra_hosts.clone(),
        restart: restart.into(),
        user: p.user.clone(),
        init: p.init.unwrap_or(true),
        labels,
        memory_bytes: p.memory_bytes,
        cpu_millis: p.cpu_millis,
        healthcheck,
        health_interval_ms,
        read_only_rootfs: p.read_only_rootfs,
        stop_timeout_s,
    };
    let hash = docker::spec_hash(&(name, &stack, &create));
    Ok(Spec {
        name: name.into(),
        stack,
        create,
        image_archive,
        health,
        after,
        hash,
    })
}

/// The stack label: given, or [`DEFAULT_STACK`]; its `stack` resource must come after.
pub fn check_stack(stack: &str, declared: &(impl Declared + ?Sized)) -> Result<String, FieldError> {
    let stack = if stack.is_empty() {
        DEFAULT_STACK
    } else {
        stack
    };
    crate::engine::spec::check_name(stack).map_err(|e| FieldError::new("stack", e))?;
    if declared.stack_declared(stack) {
        return Err(FieldError::new(
            "stack",
            format!(
                "the `stack` resource {stack:?} comes earlier in the spec; list it after \
                 every resource of its stack"
            ),
        ));
    }
    Ok(stack.into())
}

fn check_image(image: &str) -> Result<String, FieldError> {
    if image.is_empty() {
        return Err(FieldError::new(
            "image",
            "missing; name the image, e.g. \"local/app:1.0\" or \"repo/app@sha256:...\"",
        ));
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) || image.starts_with('-') {
        return Err(FieldError::new(
            "image",
            format!("{image:?} is not an image reference"),
        ));
    }
    Ok(image.into())
}

fn check_abs(field: &'static str, path: &str) -> Result<String, FieldError> {
    let p = std::path::Path::new(path);
    if !p.is_absolute() || p.components().any(|c| c.as_os_str() == "..") || path.contains('\0') {
        return Err(FieldError::new(
            field,
            format!("{path:?} must be an absolute path without `..`"),
        ));
    }
    Ok(path.into())
}

fn check_ports(ports: &[v1::PortBinding]) -> Result<Vec<Port>, FieldError> {
    let mut out: Vec<Port> = Vec::new();
    for p in ports {
        if p.host_ip.parse::<IpAddr>().is_err() {
            return Err(FieldError::new(
                "ports",
                format!(
                    "host_ip {:?} is not an address; publish on a chosen address (e.g. \
                     \"127.0.0.1\" or the VM's own); \"0.0.0.0\" means every interface",
                    p.host_ip
                ),
            ));
        }
        let port = |v: u32, what: &str| {
            u16::try_from(v)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| FieldError::new("ports", format!("{what} {v} is not 1 to 65535")))
        };
        let protocol = match p.protocol.as_str() {
            "" | "tcp" => "tcp",
            "udp" => "udp",
            other => {
                return Err(FieldError::new(
                    "ports",
                    format!("protocol {other:?}: use \"tcp\" or \"udp\""),
                ));
            }
        };
        let port = Port {
            host_ip: p.host_ip.clone(),
            host_port: port(p.host_port, "host_port")?,
            container_port: port(p.container_port, "container_port")?,
            protocol: protocol.into(),
        };
        if out.iter().any(|o| {
            (&o.host_ip, o.host_port, &o.protocol)
                == (&port.host_ip, port.host_port, &port.protocol)
        }) {
            return Err(FieldError::new(
                "ports",
                format!(
                    "{}:{}/{} is published twice",
                    port.host_ip, port.host_port, port.protocol
                ),
            ));
        }
        out.push(port);
    }
    Ok(out)
}

fn check_mounts(
    mounts: &[v1::Mount],
    declared: &(impl Declared + ?Sized),
) -> Result<Vec<Mount>, FieldError> {
    use v1::mount::Source;
    let mut out: Vec<Mount> = Vec::new();
    for m in mounts {
        let target = check_abs("mounts", &m.target)
            .map_err(|e| FieldError::new("mounts", format!("target: {}", e.problem)))?;
        let missing = |kind: &str, name: &str| {
            FieldError::new(
                "mounts",
                format!(
                    "{kind} {name:?} is not declared before this container; add a `{kind}` \
                     resource named {name:?} earlier in the spec"
                ),
            )
        };
        let (kind, source, read_only) = match &m.source {
            None => {
                return Err(FieldError::new(
                    "mounts",
                    format!("{target}: give one of bind, volume, secret or file"),
                ));
            }
            Some(Source::Bind(path)) => (
                "bind",
                check_abs("mounts", path)
                    .map_err(|e| FieldError::new("mounts", format!("bind: {}", e.problem)))?,
                m.read_only,
            ),
            Some(Source::Volume(v)) => {
                if !declared.volume(v) {
                    return Err(missing("volume", v));
                }
                ("volume", v.clone(), m.read_only)
            }
            // Secrets are files on the host, mounted read-only: never env, never writable.
            Some(Source::Secret(s)) => (
                "bind",
                declared
                    .secret_path(s)
                    .ok_or_else(|| missing("secret", s))?,
                true,
            ),
            Some(Source::File(f)) => (
                "bind",
                declared.file_path(f).ok_or_else(|| missing("file", f))?,
                m.read_only,
            ),
        };
        if out.iter().any(|o| o.target == target) {
            return Err(FieldError::new(
                "mounts",
                format!("{target} is mounted twice"),
            ));
        }
        out.push(Mount {
            kind: kind.into(),
            source,
            target,
            read_only,
        });
    }
    Ok(out)
}

type HealthParts = (Option<Health>, Vec<String>, u32);

fn check_health(h: Option<&v1::HealthCheck>) -> Result<HealthParts, FieldError> {
    let Some(h) = h else {
        return Ok((None, Vec::new(), 0));
    };
    let given = [
        !h.command.is_empty(),
        !h.tcp.is_empty(),
        !h.http.is_empty(),
        !h.tls.is_empty(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(FieldError::new(
            "health",
            "give exactly one of `command` (Docker runs it in the container), `tcp`, `http` or \
             `tls` (the agent probes)",
        ));
    }
    let wants_tls = !h.tls.is_empty() || h.http.starts_with("https://");
    if !wants_tls && (!h.server_name.is_empty() || !h.ca_file.is_empty() || h.insecure_skip_verify)
    {
        return Err(FieldError::new(
            "health",
            "`server_name`, `ca_file` and `insecure_skip_verify` apply only to a `tls` probe or \
             an https:// `http` probe",
        ));
    }
    let interval_ms = match h.interval_ms {
        0 => DEFAULT_INTERVAL_MS,
        n if n < 100 => {
            return Err(FieldError::new(
                "health",
                format!("interval_ms {n} is below 100"),
            ));
        }
        n => n,
    };
    let timeout_s = match h.timeout_s {
        0 => DEFAULT_HEALTH_TIMEOUT_S,
        n if n > MAX_HEALTH_TIMEOUT_S => {
            return Err(FieldError::new(
                "health",
                format!("timeout_s {n} is more than {MAX_HEALTH_TIMEOUT_S}"),
            ));
        }
        n => n,
    };
    let expect = match h.expect_status {
        0 => None,
        s @ 100..=599 => Some(s as u16),
        s => {
            return Err(FieldError::new(
                "health",
                format!("expect_status {s} is not an HTTP status"),
            ));
        }
    };
    let probe = if !h.command.is_empty() {
        Probe::Docker
    } else if !h.tcp.is_empty() {
        check_addr(&h.tcp)?;
        Probe::Tcp {
            addr: h.tcp.clone(),
            send: h.send.clone(),
        }
    } else if !h.tls.is_empty() {
        check_addr(&h.tls)?;
        Probe::Tls {
            addr: h.tls.clone(),
            tls: check_tls(h, &h.tls)?,
        }
    } else {
        let (rest, https) = match (
            h.http.strip_prefix("http://"),
            h.http.strip_prefix("https://"),
        ) {
            (Some(rest), _) => (rest, false),
            (None, Some(rest)) => (rest, true),
            (None, None) => {
                return Err(FieldError::new(
                    "health",
                    format!(
                        "http {:?}: give an http:// or https:// URL (or a `tls` probe)",
                        h.http
                    ),
                ));
            }
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        check_addr(authority)?;
        let host = host_of(authority).to_string();
        let tls = if https {
            Some(check_tls(h, authority)?)
        } else {
            None
        };
        Probe::Http {
            addr: authority.into(),
            host,
            path: path.into(),
            expect,
            tls,
        }
    };
    let health = Health {
        probe,
        interval: Duration::from_millis(u64::from(interval_ms)),
        timeout: Duration::from_secs(u64::from(timeout_s)),
    };
    // Only Docker's own check is part of what Docker is told (and so of the hash).
    let (cmd, ms) = match health.probe {
        Probe::Docker => (h.command.clone(), interval_ms),
        _ => (Vec::new(), 0),
    };
    Ok((Some(health), cmd, ms))
}

/// The host of `HOST:PORT` (brackets of an IPv6 address removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// How a `tls` or https probe of `addr` verifies the server.
fn check_tls(h: &v1::HealthCheck, addr: &str) -> Result<TlsOpts, FieldError> {
    let ca_file = match (h.ca_file.as_str(), h.insecure_skip_verify) {
        ("", false) => {
            return Err(FieldError::new(
                "health",
                format!(
                    "{addr}: a TLS probe needs `ca_file` (a PEM CA bundle on the agent host to \
                     verify the certificate against) or, for lab use, `insecure_skip_verify = \
                     true`: there are no system roots to verify against offline"
                ),
            ));
        }
        ("", true) => None,
        (_, true) => {
            return Err(FieldError::new(
                "health",
                "give `ca_file` or `insecure_skip_verify`, not both",
            ));
        }
        (path, false) if !path.starts_with('/') => {
            return Err(FieldError::new(
                "health",
                format!("ca_file {path:?} is not an absolute path"),
            ));
        }
        (path, false) => Some(std::path::PathBuf::from(path)),
    };
    let name_given = !h.server_name.is_empty();
    let server_name = if name_given {
        h.server_name.clone()
    } else {
        host_of(addr).to_string()
    };
    if rustls::pki_types::ServerName::try_from(server_name.as_str()).is_err() {
        return Err(FieldError::new(
            "health",
            format!("server name {server_name:?} is neither a DNS name nor an IP address"),
        ));
    }
    Ok(TlsOpts {
        server_name,
        name_given,
        ca_file,
        insecure: h.insecure_skip_verify,
    })
}

fn check_addr(addr: &str) -> Result<(), FieldError> {
    let ok = addr.parse::<std::net::SocketAddr>().is_ok()
        || addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "health",
            format!("{addr:?} is not HOST:PORT (e.g. \"127.0.0.1:8080\")"),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// read

#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub current: Option<Current>,
    /// The image id the spec's reference resolves to locally; `None` when absent.
    pub image_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Current {
    pub id: String,
    pub spec_hash: String,
    /// The canonical spec it was made from (its `io.kctl.spec` label).
    pub made_from: Option<Create>,
    pub running: bool,
    pub status: String,
    pub exit_code: i64,
    pub image_id: String,
    pub networks: BTreeSet<String>,
}

pub async fn read(spec: &Spec) -> Result<Observed, ResourceError> {
    let docker = docker::client().await?;
    let (image, container) = tokio::join!(
        docker.inspect_image(&spec.create.image),
        docker.inspect_container(&spec.name, None::<InspectContainerOptions>)
    );
    let image_id = match image {
        Ok(i) => i.id,
        Err(e) if docker::is_not_found(&e) => None,
        Err(e) => {
            return Err(docker::error(
                &format!("inspect image {}", spec.create.image),
                &e,
            ));
        }
    };
    let current = match container {
        Ok(c) if c.name.as_deref() == Some(&format!("/{}", spec.name)) => Some(current(spec, c)?),
        // An id prefix matched, not the name: no container of this name.
        Ok(_) => None,
        Err(e) if docker::is_not_found(&e) => None,
        Err(e) => {
            return Err(docker::error(
                &format!("inspect container {}", spec.name),
                &e,
            ));
        }
    };
    Ok(Observed { current, image_id })
}

fn current(spec: &Spec, c: ContainerInspectResponse) -> Result<Current, ResourceError> {
    let labels = c.config.as_ref().and_then(|k| k.labels.as_ref());
    match docker::owner(labels) {
        Owner::Foreign => Err(foreign(&spec.name)),
        Owner::Managed {
            stack, resource, ..
        } if stack != spec.stack || resource != spec.name => Err(ResourceError {
            message: format!(
                "container {:?} belongs to resource {resource:?} of stack {stack:?}, not to \
                 stack {:?}; it is left alone",
                spec.name, spec.stack
            ),
            hint: "container names are unique per host: rename this resource, or move it back \
                   to its stack"
                .into(),
        }),
        Owner::Managed { spec_hash, .. } => {
            let made_from = labels
                .and_then(|l| l.get(LABEL_SPEC))
                .and_then(|s| serde_json::from_str(s).ok());
            let state = c.state.unwrap_or_default();
            Ok(Current {
                id: c.id.unwrap_or_default(),
                spec_hash,
                made_from,
                running: state.running.unwrap_or(false),
                status: state.status.map(|s| s.to_string()).unwrap_or_default(),
                exit_code: state.exit_code.unwrap_or(0),
                image_id: c.image.unwrap_or_default(),
                networks: c
                    .network_settings
                    .and_then(|n| n.networks)
                    .map(|n| n.into_keys().collect())
                    .unwrap_or_default(),
            })
        }
    }
}

pub fn foreign(name: &str) -> ResourceError {
    ResourceError {
        message: format!(
            "container {name:?} exists but was not created by kagent (no label \
             {}={}); it is left alone",
            docker::LABEL_MANAGED_BY,
            docker::MANAGED_BY
        ),
        hint: format!(
            "remove or rename that container yourself (`docker rm -f {name}`), or give this \
             resource another name"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// plan

#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Keep,
    Create,
    Recreate(Vec<String>),
    Start(String),
}

fn wanted_networks(spec: &Spec) -> BTreeSet<String> {
    if spec.create.networks.is_empty() {
        BTreeSet::from(["bridge".to_string()])
    } else {
        spec.create
            .networks
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }
}

fn decide(spec: &Spec, observed: &Observed) -> Decision {
    let Some(now) = &observed.current else {
        return Decision::Create;
    };
    let mut why = Vec::new();
    if now.spec_hash != spec.hash {
        match &now.made_from {
            Some(old) => why.extend(field_diff(old, &spec.create)),
            None => why.push(format!(
                "~ spec: {} -> {} (spec hash)",
                short(&now.spec_hash),
                short(&spec.hash)
            )),
        }
        if why.is_empty() {
            why.push("~ name or stack".into());
        }
    }
    if let Some(image_id) = &observed.image_id
        && *image_id != now.image_id
    {
        why.push(format!(
            "~ image {} now is {} (the container runs {})",
            spec.create.image,
            short(image_id),
            short(&now.image_id)
        ));
    }
    let want = wanted_networks(spec);
    if now.networks != want {
        why.push(format!(
            "~ networks: {:?} -> {:?} (changed by hand)",
            now.networks, want
        ));
    }
    if !why.is_empty() {
        return Decision::Recreate(why);
    }
    if !now.running {
        return Decision::Start(format!(
            "~ state: {} (exit code {}) -> running",
            now.status, now.exit_code
        ));
    }
    Decision::Keep
}

/// One line per top-level field that differs.
fn field_diff(old: &Create, new: &Create) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in &b {
        let before = a.get(k).cloned().unwrap_or_default();
        if before != *v {
            if k == "env" {
                out.extend(env_diff(&old.env, &new.env));
            } else {
                out.push(format!(
                    "~ {k}: {} -> {}",
                    clip(&before.to_string()),
                    clip(&v.to_string())
                ));
            }
        }
    }
    out
}

fn env_diff(old: &[(String, String)], new: &[(String, String)]) -> Vec<String> {
    let get =
        |l: &[(String, String)], k: &str| l.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut out = Vec::new();
    for (k, v) in new {
        match get(old, k) {
            None => out.push(format!("+ env {k}={}", clip(v))),
            Some(o) if o != *v => out.push(format!("~ env {k}: {} -> {}", clip(&o), clip(v))),
            _ => {}
        }
    }
    for (k, _) in old {
        if get(new, k).is_none() {
            out.push(format!("- env {k}"));
        }
    }
    if out.is_empty() {
        out.push("~ env: order".into());
    }
    out
}

fn clip(s: &str) -> String {
    if s.chars().count() > 120 {
        let mut c: String = s.chars().take(119).collect();
        c.push('…');
        c
    } else {
        s.into()
    }
}

fn short(id: &str) -> String {
    let id = id.trim_start_matches("sha256:");
    id.chars().take(12).collect()
}

pub fn plan(spec: &Spec, observed: &Observed) -> Change {
    let image_line = |observed: &Observed| match (&observed.image_id, &spec.image_archive) {
        (Some(_), _) => None,
        (None, Some(a)) => Some(format!(
            "  image {} is not present: load it from {a}",
            spec.create.image
        )),
        (None, None) => Some(format!(
            "  image {} is not present: pull it",
            spec.create.image
        )),
    };
    match decide(spec, observed) {
        Decision::Keep => Change::unchanged(),
        Decision::Create => {
            let mut lines = vec![format!(
                "+ container {} (image {}, stack {})",
                spec.name, spec.create.image, spec.stack
            )];
            for p in &spec.create.ports {
                lines.push(format!(
                    "  port {}:{} -> {}/{}",
                    p.host_ip, p.host_port, p.container_port, p.protocol
                ));
            }
            lines.extend(image_line(observed));
            Change {
                action: Action::Create,
                diff: lines.join("\n"),
                warnings: Vec::new(),
            }
        }
        Decision::Recreate(why) => {
            let mut lines = why;
            lines.push("  recreate: stop, remove, create, start".into());
            lines.extend(image_line(observed));
            Change {
                action: Action::Update,
                diff: lines.join("\n"),
                warnings: Vec::new(),
            }
        }
        Decision::Start(why) => Change {
            action: Action::Update,
            diff: why,
            warnings: Vec::new(),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// apply

pub async fn apply(
    spec: &Spec,
    observed: &Observed,
    progress: &(dyn Progress + '_),
) -> Result<String, ResourceError> {
    let docker = docker::client().await?;
    let decision = decide(spec, observed);
    for dep in &spec.after {
        progress.report(&format!("waiting for {} to be healthy", dep.name), None);
        wait_healthy(docker, &dep.name, dep.health.as_ref(), progress)
            .await
            .map_err(|e| ResourceError {
                message: format!("dependency {:?} is not healthy: {}", dep.name, e.message),
                hint: e.hint,
            })?;
    }
    let message = match decision {
        Decision::Keep => return Ok("unchanged".into()),
        Decision::Start(_) => {
            let id = observed
                .current
                .as_ref()
                .map(|c| c.id.clone())
                .unwrap_or_else(|| spec.name.clone());
            docker
                .start_container(&id, None::<StartContainerOptions>)
                .await
                .map_err(|e| docker::error(&format!("start container {}", spec.name), &e))?;
            "started".to_string()
        }
        Decision::Create | Decision::Recreate(_) => {
            // The image first: an unavailable image must not take the running container down.
            ensure_image(docker, spec, observed.image_id.is_some(), progress).await?;
            let old = observed.current.as_ref().map(|c| c.id.clone());
            if let Some(old) = &old {
                progress.report(
                    &format!(
                        "stopping {} (timeout {} s)",
                        spec.name, spec.create.stop_timeout_s
                    ),
                    None,
                );
                stop_and_remove(docker, old, &spec.name, spec.create.stop_timeout_s).await?;
            }
            let id = create(docker, spec).await?;
            docker
                .start_container(&id, None::<StartContainerOptions>)
                .await
                .map_err(|e| docker::error(&format!("start container {}", spec.name), &e))?;
            match old {
                Some(old) => format!("recreated {} (was {})", short(&id), short(&old)),
                None => format!("created {}", short(&id)),
            }
        }
    };
    if spec.health.is_some() {
        progress.report(&format!("waiting for {} to be healthy", spec.name), None);
    }
    wait_healthy(docker, &spec.name, spec.health.as_ref(), progress).await?;
    Ok(if spec.health.is_some() {
        format!("{message}; healthy")
    } else {
        message
    })
}

/// Stops (SIGTERM, then SIGKILL after `timeout_s`) and removes a container; volumes stay.
pub async fn stop_and_remove(
    docker: &Docker,
    id: &str,
    name: &str,
    timeout_s: u32,
) -> Result<(), ResourceError> {
    let stop = StopContainerOptions {
        t: Some(i32::try_from(timeout_s).unwrap_or(i32::MAX)),
        ..Default::default()
    };
    match docker.stop_container(id, Some(stop)).await {
        Ok(()) => {}
        // 304: already stopped; 404: already gone.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        }) => {}
        Err(e) if docker::is_not_found(&e) => return Ok(()),
        Err(e) => return Err(docker::error(&format!("stop container {name}"), &e)),
    }
    let remove = RemoveContainerOptions {
        force: true,
        v: false,
        ..Default::default()
    };
    match docker.remove_container(id, Some(remove)).await {
        Ok(()) => Ok(()),
        Err(e) if docker::is_not_found(&e) => Ok(()),
        Err(e) => Err(docker::error(&format!("remove container {name}"), &e)),
    }
}

async fn create(docker: &Docker, spec: &Spec) -> Result<String, ResourceError> {
    let c = &spec.create;
    let mut labels = docker::labels(&spec.stack, &spec.name, &spec.hash, &c.labels);
    labels.insert(
        LABEL_SPEC.into(),
        serde_json::to_string(c).unwrap_or_default(),
    );
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut exposed: Vec<String> = Vec::new();
    for p in &c.ports {
        let key = format!("{}/{}", p.container_port, p.protocol);
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        port_bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(p.host_ip.clone()),
                host_port: Some(p.host_port.to_string()),
            });
    }
    let mounts = c
        .mounts
        .iter()
        .map(|m| DockerMount {
            target: Some(m.target.clone()),
            source: Some(m.source.clone()),
            typ: Some(if m.kind == "volume" {
                MountType::VOLUME
            } else {
                MountType::BIND
            }),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect();
    let healthcheck = (!c.healthcheck.is_empty()).then(|| {
        let interval = i64::from(c.health_interval_ms) * 1_000_000;
        let mut test = vec!["CMD".to_string()];
        test.extend(c.healthcheck.iter().cloned());
        HealthConfig {
            test: Some(test),
            interval: Some(interval),
            timeout: Some(interval.max(5_000_000_000)),
            retries: Some(3),
            start_period: Some(0),
            ..Default::default()
        }
    });
    let restart = match c.restart.as_str() {
        "no" => RestartPolicyNameEnum::NO,
        "always" => RestartPolicyNameEnum::ALWAYS,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        _ => RestartPolicyNameEnum::UNLESS_STOPPED,
    };
    let (first, first_aliases) = c
        .networks
        .first()
        .cloned()
        .unwrap_or_else(|| ("bridge".into(), Vec::new()));
    let endpoint = EndpointSettings {
        aliases: (!first_aliases.is_empty()).then_some(first_aliases),
        ..Default::default()
    };
    let some_vec = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let body = ContainerCreateBody {
        image: Some(c.image.clone()),
        entrypoint: some_vec(&c.entrypoint),
        cmd: some_vec(&c.command),
        env: Some(c.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(labels),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck,
        user: (!c.user.is_empty()).then(|| c.user.clone()),
        stop_timeout: Some(i64::from(c.stop_timeout_s)),
        host_config: Some(HostConfig {
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            mounts: Some(mounts),
            restart_policy: Some(RestartPolicy {
                name: Some(restart),
                maximum_retry_count: None,
            }),
            init: Some(c.init),
            extra_hosts: some_vec(&c.extra_hosts),
            memory: (c.memory_bytes > 0).then(|| i64::try_from(c.memory_bytes).unwrap_or(i64::MAX)),
            nano_cpus: (c.cpu_millis > 0).then(|| i64::from(c.cpu_millis) * 1_000_000),
            readonly_rootfs: Some(c.read_only_rootfs),
            network_mode: Some(first.clone()),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(first, endpoint)])),
        }),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some(spec.name.clone()),
        ..Default::default()
    };
    let created = docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| {
            let mut err = docker::error(&format!("create container {}", spec.name), &e);
            if matches!(
                e,
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 409,
                    ..
                }
            ) {
                err.hint = "a container of this name appeared since the plan; apply again".into();
            }
            err
        })?;
    // Docker 20.10 attaches one network at create time; the others before start.
    for (net, aliases) in c.networks.iter().skip(1) {
        let request = NetworkConnectRequest {
            container: created.id.clone(),
            endpoint_config: Some(EndpointSettings {
                aliases: (!aliases.is_empty()).then(|| aliases.clone()),
                ..Default::default()
            }),
        };
        docker
            .connect_network(net, request)
            .await
            .map_err(|e| docker::error(&format!("connect {} to network {net}", spec.name), &e))?;
    }
    Ok(created.id)
}

/// `repo[:tag]` split for a pull (an untagged reference would pull every tag).
fn pull_ref(image: &str) -> (String, String) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo.into(), digest.into());
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => {
            let repo = &image[..image.len() - tag.len() - 1];
            (repo.into(), tag.into())
        }
        None => (image.into(), "latest".into()),
    }
}

async fn ensure_image(
    docker: &Docker,
    spec: &Spec,
    present: bool,
    progress: &(dyn Progress + '_),
) -> Result<(), ResourceError> {
    if present {
        return Ok(());
    }
    let image = &spec.create.image;
    if let Some(archive) = &spec.image_archive {
        load_archive(docker, archive, progress).await?;
        return match docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(e) if docker::is_not_found(&e) => Err(ResourceError {
                message: format!("the archive {archive} was loaded but holds no image {image}"),
                hint: "check the tag in `image` against `docker save`'s arguments".into(),
            }),
            Err(e) => Err(docker::error(&format!("inspect image {image}"), &e)),
        };
    }
    let (repo, tag) = pull_ref(image);
    progress.report(&format!("pulling image {image}"), None);
    let options = CreateImageOptions {
        from_image: Some(repo),
        tag: Some(tag),
        ..Default::default()
    };
    let mut stream = docker.create_image(Some(options), None, None);
    // Per-layer (current, total) bytes, for a percentage.
    let mut layers: HashMap<String, (i64, i64)> = HashMap::new();
    let mut last_report = Instant::now();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| pull_failed(image, &e.to_string()))?;
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            return Err(pull_failed(image, &err));
        }
        if let (Some(id), Some(detail)) = (info.id, info.progress_detail)
            && let (Some(cur), Some(total)) = (detail.current, detail.total)
        {
            layers.insert(id, (cur, total));
        }
        if last_report.elapsed() > Duration::from_millis(500) && !layers.is_empty() {
            let (cur, total) = layers
                .values()
                .fold((0i64, 0i64), |(c, t), (a, b)| (c + a, t + b));
            let percent = (total > 0).then(|| u32::try_from(cur * 100 / total).unwrap_or(100));
            progress.report(
                &format!(
                    "pulling {image}: {} layers, {} of {} bytes",
                    layers.len(),
                    cur,
                    total
                ),
                percent,
            );
            last_report = Instant::now();
        }
    }
    match docker.inspect_image(image).await {
        Ok(_) => {
            progress.report(&format!("pulled {image}"), Some(100));
            Ok(())
        }
        Err(e) => Err(pull_failed(image, &e.to_string())),
    }
}

fn pull_failed(image: &str, why: &str) -> ResourceError {
    ResourceError {
        message: format!("image {image} is not present and cannot be pulled: {why}"),
        hint: "check the image name and the registry; without a registry, load it with \
               `image_archive` (a `docker save` file) or `docker load` on the host"
            .into(),
    }
}

/// `docker load` of a `docker save` archive, streamed from disk.
async fn load_archive(
    docker: &Docker,
    archive: &str,
    progress: &(dyn Progress + '_),
) -> Result<(), ResourceError> {
    let path = std::path::Path::new(archive);
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| ResourceError::io("open the image archive", path, &e))?;
    progress.report(&format!("loading images from {archive}"), None);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        loop {
            let mut buf = vec![0u8; 1 << 20];
            match file.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send(Ok(bytes::Bytes::from(buf))).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    let body = bollard::body_try_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut stream = docker.import_image(ImportImageOptions::default(), body, None);
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| ResourceError {
            message: format!("cannot load the image archive {archive}: {e}"),
            hint: "the file must be made by `docker save`".into(),
        })?;
        if let Some(s) = info
            .stream
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            progress.report(s, None);
        }
    }
    Ok(())
}

/// Waits until the container is healthy by `health` (or merely running without one). Fails
/// when it stops running for good or after the timeout, with the last health output.
pub async fn wait_healthy(
    docker: &Docker,
    name: &str,
    health: Option<&Health>,
    progress: &(dyn Progress + '_),
) -> Result<(), ResourceError> {
    let timeout = health.map(|h| h.timeout).unwrap_or(Duration::from_secs(10));
    let interval = health
        .map(|h| h.interval)
        .unwrap_or(Duration::from_millis(200));
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut last = String::from("no check has run yet");
    loop {
        let info = docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
            .map_err(|e| docker::error(&format!("inspect container {name}"), &e))?;
        let state = info.state.unwrap_or_default();
        let running = state.running.unwrap_or(false);
        let restarting = state.restarting.unwrap_or(false);
        if !running && !restarting {
            let logs = tail_logs(docker, name, 5).await;
            return Err(ResourceError {
                message: format!(
                    "container {name} is not running ({}, exit code {}); last output: {}",
                    state.status.map(|s| s.to_string()).unwrap_or_default(),
                    state.exit_code.unwrap_or(0),
                    if logs.is_empty() {
                        "(none)".into()
                    } else {
                        logs
                    }
                ),
                hint: format!("see `kctl logs HOST {name}`"),
            });
        }
        if running && !restarting {
            match health.map(|h| &h.probe) {
                None => return Ok(()),
                Some(Probe::Docker) => {
                    let h = state.health.unwrap_or_default();
                    if h.status == Some(HealthStatusEnum::HEALTHY) {
                        return Ok(());
                    }
                    if let Some(r) = h.log.as_ref().and_then(|l| l.last()) {
                        last = format!(
                            "exit code {}: {}",
                            r.exit_code.unwrap_or(-1),
                            r.output.as_deref().unwrap_or("").trim()
                        );
                    }
                }
                Some(p) => match probe(p).await {
                    Ok(()) => return Ok(()),
                    Err(e) => last = e,
                },
            }
        } else {
            last = "the container is restarting".into();
        }
        if started.elapsed() >= timeout {
            return Err(ResourceError {
                message: format!(
                    "container {name} did not become healthy within {} s; last health check: \
                     {last}",
                    timeout.as_secs()
                ),
                hint: format!(
                    "see `kctl logs HOST {name}`; raise `health.timeout_s` if it only needs longer"
                ),
            });
        }
        if last_report.elapsed() >= REPORT_EVERY {
            progress.report(
                &format!(
                    "{name}: not healthy yet after {} s: {last}",
                    started.elapsed().as_secs()
                ),
                None,
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(interval).await;
    }
}

/// One agent probe: `Ok` when healthy, otherwise what went wrong.
pub async fn probe(p: &Probe) -> Result<(), String> {
    let run = async {
        match p {
            Probe::Docker => Ok(()),
            Probe::Tcp { addr, send } => {
                let mut s = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(|e| format!("tcp {addr}: {e}"))?;
                if !send.is_empty() {
                    s.write_all(send)
                        .await
                        .map_err(|e| format!("tcp {addr}: send: {e}"))?;
                }
                let mut buf = [0u8; 64];
                match s.read(&mut buf).await {
                    Ok(0) => Err(format!("tcp {addr}: closed without a reply")),
                    Ok(_) => Ok(()),
                    Err(e) => Err(format!("tcp {addr}: {e}")),
                }
            }
            Probe::Http {
                addr,
                host,
                path,
                expect,
                tls: None,
            } => {
                let url = format!("http://{addr}{path}");
                let s = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(|e| format!("GET {url}: {e}"))?;
                http_status(s, &url, host, path, *expect).await
            }
            Probe::Http {
                addr,
                host,
                path,
                expect,
                tls: Some(opts),
            } => {
                let url = format!("https://{addr}{path}");
                let s = tls::connect(addr, opts)
                    .await
                    .map_err(|e| format!("GET {url}: {e}"))?;
                http_status(s, &url, host, path, *expect).await
            }
            Probe::Tls { addr, tls: opts } => tls::connect(addr, opts).await.map(|_| ()),
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, run).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
    }
}

/// Sends `GET path` over HTTP/1.0 on `s`; `Ok` on `expect` (or any 2xx/3xx).
async fn http_status<S>(
    mut s: S,
    url: &str,
    host: &str,
    path: &str,
    expect: Option<u16>,
) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: kagent-probe\r\n\
         Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    s.flush().await.map_err(|e| format!("GET {url}: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < 4096 {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("GET {url}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("");
    let status = line
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|s| s.parse::<u16>().ok());
    match (status, expect) {
        (None, _) => Err(format!(
            "GET {url}: no HTTP status line (got {:?})",
            clip(line)
        )),
        (Some(s), Some(want)) if s == want => Ok(()),
        (Some(s), None) if (200..400).contains(&s) => Ok(()),
        (Some(s), _) => Err(format!("GET {url}: status {s}")),
    }
}

/// The container's last `n` log lines, joined with " | ".
pub async fn tail_logs(docker: &Docker, name: &str, n: usize) -> String {
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        tail: n.to_string(),
        ..Default::default()
    };
    let mut stream = docker.logs(name, Some(options));
    let mut out = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        let text = String::from_utf8_lossy(&chunk.into_bytes()).into_owned();
        out.extend(
            text.lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty()),
        );
    }
    clip(&out.join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    impl Declared for Nothing {
        fn secret_path(&self, name: &str) -> Option<String> {
            (name == "db-pass").then(|| "/srv/kctl/secrets/db".into())
        }
        fn file_path(&self, _: &str) -> Option<String> {
            None
        }
        fn volume(&self, name: &str) -> bool {
            name == "data"
        }
        fn network(&self, name: &str) -> bool {
            name == "backend"
        }
        fn container(&self, _: &str) -> Option<&Spec> {
            None
        }
        fn stack_declared(&self, stack: &str) -> bool {
            stack == "closed"
        }
    }

    fn proto() -> v1::Container {
        v1::Container {
            image: "local/busybox:test".into(),
            command: vec!["httpd".into(), "-f".into()],
            env: vec![v1::EnvVar {
                name: "A".into(),
                value: "1".into(),
            }],
            ports: vec![v1::PortBinding {
                host_ip: "127.0.0.1".into(),
                host_port: 8080,
                container_port: 80,
                protocol: String::new(),
            }],
            mounts: vec![
                v1::Mount {
                    source: Some(v1::mount::Source::Volume("data".into())),
                    target: "/data".into(),
                    read_only: false,
                },
                v1::Mount {
                    source: Some(v1::mount::Source::Secret("db-pass".into())),
                    target: "/run/secrets/db".into(),
                    read_only: false,
                },
            ],
            networks: vec![v1::NetworkAttachment {
                name: "backend".into(),
                aliases: vec!["web".into()],
            }],
            ..Default::default()
        }
    }

    fn current(spec: &Spec, running: bool) -> Current {
        Current {
            id: "c1".into(),
            spec_hash: spec.hash.clone(),
            made_from: Some(spec.create.clone()),
            running,
            status: if running { "running" } else { "exited" }.into(),
            exit_code: if running { 0 } else { 137 },
            image_id: "sha256:img".into(),
            networks: BTreeSet::from(["backend".to_string()]),
        }
    }

    #[test]
    fn validation_resolves_references() -> Result<(), FieldError> {
        let s = from_proto(&proto(), "web", &Nothing)?;
        assert_eq!(s.stack, DEFAULT_STACK);
        assert!(
            s.create.init,
            "init defaults to true (busybox as PID 1 ignores SIGTERM)"
        );
        assert_eq!(s.create.restart, "unless-stopped");
        let secret = &s.create.mounts[1];
        assert_eq!(
            (
                secret.kind.as_str(),
                secret.source.as_str(),
                secret.read_only
            ),
            ("bind", "/srv/kctl/secrets/db", true),
            "secrets are always read-only bind mounts"
        );
        Ok(())
    }

    type Edit = Box<dyn Fn(&mut v1::Container)>;

    #[test]
    fn refusals_name_the_field() {
        let cases: Vec<(Edit, &str, &str)> = vec![
            (Box::new(|c| c.image.clear()), "image", "missing"),
            (
                Box::new(|c| c.ports[0].host_ip.clear()),
                "ports",
                "chosen address",
            ),
            (
                Box::new(|c| c.ports[0].host_port = 70000),
                "ports",
                "host_port",
            ),
            (
                Box::new(|c| c.mounts[0].source = Some(v1::mount::Source::Volume("x".into()))),
                "mounts",
                "add a `volume` resource",
            ),
            (
                Box::new(|c| c.mounts[1].source = Some(v1::mount::Source::Secret("x".into()))),
                "mounts",
                "`secret`",
            ),
            (
                Box::new(|c| c.mounts[0].target = "rel".into()),
                "mounts",
                "absolute",
            ),
            (
                Box::new(|c| c.networks[0].name = "front".into()),
                "networks",
                "not declared",
            ),
            (
                Box::new(|c| c.after = vec!["db".into()]),
                "after",
                "earlier",
            ),
            (
                Box::new(|c| c.after = vec!["web".into()]),
                "after",
                "itself",
            ),
            (Box::new(|c| c.stack = "closed".into()), "stack", "after"),
            (
                Box::new(|c| {
                    c.labels = vec![v1::Label {
                        key: "io.kctl.stack".into(),
                        value: "x".into(),
                    }]
                }),
                "labels",
                "io.kctl.",
            ),
            (
                Box::new(|c| {
                    c.health = Some(v1::HealthCheck {
                        tcp: "127.0.0.1:1".into(),
                        http: "http://127.0.0.1:1/".into(),
                        ..Default::default()
                    })
                }),
                "health",
                "exactly one",
            ),
            (
                Box::new(|c| {
                    c.health = Some(v1::HealthCheck {
                        http: "ftp://x:1/".into(),
                        ..Default::default()
                    })
                }),
                "health",
                "https://",
            ),
            (
                Box::new(|c| {
                    c.health = Some(v1::HealthCheck {
                        http: "https://127.0.0.1:8443/".into(),
                        ..Default::default()
                    })
                }),
                "health",
                "insecure_skip_verify = true",
            ),
            (
                Box::new(|c| {
                    c.health = Some(v1::HealthCheck {
                        tls: "127.0.0.1:8443".into(),
                        ca_file: "ca.pem".into(),
                        ..Default::default()
                    })
                }),
                "health",
                "absolute",
            ),
            (
                Box::new(|c| {
                    c.health = Some(v1::HealthCheck {
                        tls: "127.0.0.1:8443".into(),
                        ca_file: "/ca.pem".into(),
                        insecure_skip_verify: true,
                        ..Default::default()
                    })
                }),
                "health",
                "not both",
            ),
            (
                Box::new(|c| {
                    c.health = Some(v1::HealthCheck {
                        http: "http://127.0.0.1:8080/".into(),
                        insecure_skip_verify: true,
                        ..Default::default()
                    })
                }),
                "health",
                "apply only",
            ),
            (
                Box::new(|c| c.extra_hosts = vec!["nocolon".into()]),
                "extra_hosts",
                "NAME:ADDRESS",
            ),
            (
                Box::new(|c| {
                    c.env.push(v1::EnvVar {
                        name: "A".into(),
                        value: "2".into(),
                    })
                }),
                "env",
                "twice",
            ),
        ];
        for (edit, field, text) in cases {
            let mut p = proto();
            edit(&mut p);
            let err = from_proto(&p, "web", &Nothing).err();
            assert_eq!(err.as_ref().map(|e| e.field), Some(field), "{err:?}");
            let problem = err.map(|e| e.problem).unwrap_or_default();
            assert!(problem.contains(text), "{field}: {problem}");
        }
    }

    #[test]
    fn plan_decides_from_labels_and_state() -> Result<(), FieldError> {
        let s = from_proto(&proto(), "web", &Nothing)?;
        let obs = |c: Option<Current>| Observed {
            current: c,
            image_id: Some("sha256:img".into()),
        };
        assert_eq!(plan(&s, &obs(None)).action, Action::Create);
        assert_eq!(plan(&s, &obs(Some(current(&s, true)))), Change::unchanged());
        let stopped = plan(&s, &obs(Some(current(&s, false))));
        assert_eq!(stopped.action, Action::Update);
        assert!(stopped.diff.contains("exited"), "{}", stopped.diff);

        let mut p = proto();
        p.env[0].value = "2".into();
        let changed = from_proto(&p, "web", &Nothing)?;
        assert_ne!(changed.hash, s.hash);
        let c = plan(&changed, &obs(Some(current(&s, true))));
        assert_eq!(c.action, Action::Update);
        assert!(c.diff.contains("~ env A: 1 -> 2"), "{}", c.diff);
        assert!(c.diff.contains("recreate"), "{}", c.diff);

        let mut moved = obs(Some(current(&s, true)));
        moved.image_id = Some("sha256:newer".into());
        assert!(
            plan(&s, &moved)
                .diff
                .contains("image local/busybox:test now is")
        );
        // An image absent locally does not by itself recreate a running container.
        let mut gone = obs(Some(current(&s, true)));
        gone.image_id = None;
        assert_eq!(plan(&s, &gone), Change::unchanged());

        let mut unplugged = current(&s, true);
        unplugged.networks.clear();
        assert!(plan(&s, &obs(Some(unplugged))).diff.contains("networks"));
        Ok(())
    }

    #[test]
    fn hash_ignores_agent_side_probe_settings() -> Result<(), FieldError> {
        let mut a = proto();
        a.health = Some(v1::HealthCheck {
            tcp: "127.0.0.1:8080".into(),
            timeout_s: 5,
            ..Default::default()
        });
        let mut b = a.clone();
        if let Some(h) = b.health.as_mut() {
            h.timeout_s = 50;
        }
        assert_eq!(
            from_proto(&a, "web", &Nothing)?.hash,
            from_proto(&b, "web", &Nothing)?.hash
        );
        Ok(())
    }

    #[test]
    fn pull_references_always_carry_a_tag() {
        assert_eq!(pull_ref("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(
            pull_ref("local/app:1.2"),
            ("local/app".into(), "1.2".into())
        );
        assert_eq!(
            pull_ref("registry:5000/app"),
            ("registry:5000/app".into(), "latest".into())
        );
        assert_eq!(
            pull_ref("app@sha256:abc"),
            ("app".into(), "sha256:abc".into())
        );
    }
}
