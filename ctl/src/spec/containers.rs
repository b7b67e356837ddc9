//! The container kinds of the spec file: `container`, `network`, `volume` and `stack`.
//!
//! ```toml
//! [[resource]]
//! kind = "volume"
//! name = "pgdata"
//! stack = "kheops"                     # default "default"
//!
//! [[resource]]
//! kind = "network"
//! name = "kheops-net"
//! stack = "kheops"
//! subnet = "172.30.0.0/24"             # optional; also driver, internal
//!
//! [[resource]]
//! kind = "container"
//! name = "db"
//! stack = "kheops"
//! image = "postgres:16"
//! image_archive = "/srv/images/postgres-16.tar"   # optional: `docker load` it when absent
//! env = { POSTGRES_DB = "kheops" }
//! ports = ["127.0.0.1:5432:5432"]      # ADDRESS:HOST_PORT:CONTAINER_PORT[/udp]
//! mounts = [
//!   { volume = "pgdata", target = "/var/lib/postgresql/data" },
//!   { secret = "db-password", target = "/run/secrets/db", },   # always read-only
//! ]
//! networks = [{ name = "kheops-net", aliases = ["db"] }]      # or ["kheops-net"]
//! health = { command = ["pg_isready"], timeout_s = 60 }       # or tcp = / http = "http://..."
//! # TLS probes (agent side): `tls = "127.0.0.1:8443"` (handshake) or `http = "https://..."`,
//! # with `ca_file = "/etc/kctl/ca.pem"` (on the agent host) or `insecure_skip_verify = true`
//! # (lab use), and optionally `server_name = "db.lab"`.
//!
//! [[resource]]
//! kind = "container"
//! name = "web"
//! after = ["db"]                       # started once db is healthy
//! # ...
//!
//! [[resource]]
//! kind = "stack"                       # last: what to do with leftovers of the stack
//! name = "kheops"
//! prune = true                         # remove containers and networks no longer listed
//! purge_volumes = ["old-data"]         # volumes are only ever deleted when named here
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;

use kagent_proto::v1;
use serde::Deserialize;

/// `kind = "container"`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub image_archive: Option<String>,
    #[serde(default)]
    pub stack: String,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub command: Vec<String>,
    /// Sorted by name (a TOML table has no order).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    #[serde(default)]
    pub networks: Vec<NetworkRef>,
    #[serde(default)]
    pub extra_hosts: Vec<String>,
    pub restart: Option<RestartSpec>,
    #[serde(default)]
    pub user: String,
    pub init: Option<bool>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub memory_bytes: Option<u64>,
    /// CPUs, e.g. 1.5.
    pub cpus: Option<f64>,
    pub health: Option<HealthSpec>,
    #[serde(default)]
    pub after: Vec<String>,
    pub stop_timeout_s: Option<u32>,
    #[serde(default)]
    pub read_only_rootfs: bool,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountSpec {
    pub bind: Option<String>,
    pub volume: Option<String>,
    pub secret: Option<String>,
    pub file: Option<String>,
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum NetworkRef {
    Name(String),
    WithAliases {
        name: String,
        #[serde(default)]
        aliases: Vec<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartSpec {
    No,
    Always,
    UnlessStopped,
    OnFailure,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub tcp: String,
    #[serde(default)]
    pub send: String,
    #[serde(default)]
    pub http: String,
    #[serde(default)]
    pub tls: String,
    #[serde(default)]
    pub server_name: String,
    #[serde(default)]
    pub ca_file: String,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    pub expect_status: Option<u32>,
    pub interval_ms: Option<u32>,
    pub timeout_s: Option<u32>,
}

/// `kind = "network"`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    pub name: String,
    #[serde(default)]
    pub stack: String,
    #[serde(default)]
    pub driver: String,
    #[serde(default)]
    pub subnet: String,
    #[serde(default)]
    pub internal: bool,
}

/// `kind = "volume"`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    pub name: String,
    #[serde(default)]
    pub stack: String,
    #[serde(default)]
    pub driver: String,
}

/// `kind = "stack"`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackSpec {
    pub name: String,
    #[serde(default)]
    pub prune: bool,
    #[serde(default)]
    pub purge_volumes: Vec<String>,
}

/// `ADDRESS:HOST_PORT:CONTAINER_PORT[/tcp|/udp]`, IPv6 addresses in brackets.
pub fn parse_port(text: &str) -> Result<v1::PortBinding, String> {
    let (rest, protocol) = match text.rsplit_once('/') {
        Some((r, p @ ("tcp" | "udp"))) => (r, p),
        Some((_, p)) => return Err(format!("{text:?}: protocol {p:?}; use /tcp or /udp")),
        None => (text, "tcp"),
    };
    let (ip, ports) = if let Some(v6) = rest.strip_prefix('[') {
        let (ip, ports) = v6
            .split_once("]:")
            .ok_or_else(|| format!("{text:?}: expected [IPv6]:HOST_PORT:CONTAINER_PORT"))?;
        (ip, ports)
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.as_slice() {
            [ip, _, _] => (*ip, &rest[ip.len() + 1..]),
            [_, _] | [_] => {
                return Err(format!(
                    "{text:?} has no host address; write e.g. \"127.0.0.1:{rest}\" (or \
                     \"0.0.0.0:{rest}\" to publish on every interface)"
                ));
            }
            _ => return Err(format!("{text:?} is not ADDRESS:HOST_PORT:CONTAINER_PORT")),
        }
    };
    ip.parse::<IpAddr>()
        .map_err(|_| format!("{text:?}: {ip:?} is not an IP address"))?;
    let (host, container) = ports
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not ADDRESS:HOST_PORT:CONTAINER_PORT"))?;
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{text:?}: {p:?} is not a port (1 to 65535)"))
    };
    Ok(v1::PortBinding {
        host_ip: ip.to_string(),
        host_port: u32::from(port(host)?),
        container_port: u32::from(port(container)?),
        protocol: protocol.to_string(),
    })
}

/// The checks serde cannot express, as `field `x`: problem`.
pub fn check_container(c: &ContainerSpec) -> Result<(), String> {
    if c.image.trim().is_empty() {
        return Err("field `image`: empty; name the image, e.g. \"local/app:1.0\"".into());
    }
    for p in &c.ports {
        parse_port(p).map_err(|e| format!("field `ports`: {e}"))?;
    }
    for m in &c.mounts {
        let given = [&m.bind, &m.volume, &m.secret, &m.file]
            .iter()
            .filter(|s| s.is_some())
            .count();
        if given != 1 {
            return Err(format!(
                "field `mounts`: {}: give exactly one of bind, volume, secret or file",
                m.target
            ));
        }
    }
    if let Some(h) = &c.health {
        let given = [
            !h.command.is_empty(),
            !h.tcp.is_empty(),
            !h.http.is_empty(),
            !h.tls.is_empty(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        if given != 1 {
            return Err("field `health`: give exactly one of command, tcp, http or tls".into());
        }
        let wants_tls = !h.tls.is_empty() || h.http.starts_with("https://");
        if wants_tls && h.ca_file.is_empty() && !h.insecure_skip_verify {
            return Err(
                "field `health`: a TLS probe needs `ca_file` (a PEM CA bundle on the \
                        agent host) or, for lab use, `insecure_skip_verify = true`: there are \
                        no system roots to verify against offline"
                    .into(),
            );
        }
    }
    if let Some(cpus) = c.cpus
        && !(cpus > 0.0 && cpus <= 1024.0)
    {
        return Err(format!(
            "field `cpus`: {cpus} is not a CPU count such as 0.5 or 2"
        ));
    }
    Ok(())
}

pub fn container_to_proto(c: &ContainerSpec) -> Result<v1::Container, String> {
    let mut ports = Vec::with_capacity(c.ports.len());
    for p in &c.ports {
        ports.push(parse_port(p).map_err(|e| format!("field `ports`: {e}"))?);
    }
    let mounts = c
        .mounts
        .iter()
        .map(|m| {
            use v1::mount::Source;
            let source = if let Some(b) = &m.bind {
                Source::Bind(b.clone())
            } else if let Some(v) = &m.volume {
                Source::Volume(v.clone())
            } else if let Some(s) = &m.secret {
                Source::Secret(s.clone())
            } else {
                Source::File(m.file.clone().unwrap_or_default())
            };
            v1::Mount {
                source: Some(source),
                target: m.target.clone(),
                read_only: m.read_only,
            }
        })
        .collect();
    let networks = c
        .networks
        .iter()
        .map(|n| match n {
            NetworkRef::Name(name) => v1::NetworkAttachment {
                name: name.clone(),
                aliases: Vec::new(),
            },
            NetworkRef::WithAliases { name, aliases } => v1::NetworkAttachment {
                name: name.clone(),
                aliases: aliases.clone(),
            },
        })
        .collect();
    let restart = match c.restart {
        None => v1::RestartPolicy::Unspecified,
        Some(RestartSpec::No) => v1::RestartPolicy::No,
        Some(RestartSpec::Always) => v1::RestartPolicy::Always,
        Some(RestartSpec::UnlessStopped) => v1::RestartPolicy::UnlessStopped,
        Some(RestartSpec::OnFailure) => v1::RestartPolicy::OnFailure,
    };
    Ok(v1::Container {
        image: c.image.clone(),
        image_archive: c.image_archive.clone().unwrap_or_default(),
        entrypoint: c.entrypoint.clone(),
        command: c.command.clone(),
        env: c
            .env
            .iter()
            .map(|(k, v)| v1::EnvVar {
                name: k.clone(),
                value: v.clone(),
            })
            .collect(),
        ports,
        mounts,
        networks,
        extra_hosts: c.extra_hosts.clone(),
        restart: restart as i32,
        user: c.user.clone(),
        init: c.init,
        labels: c
            .labels
            .iter()
            .map(|(k, v)| v1::Label {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        memory_bytes: c.memory_bytes.unwrap_or(0),
        cpu_millis: c.cpus.map(|x| (x * 1000.0).round() as u32).unwrap_or(0),
        health: c.health.as_ref().map(|h| v1::HealthCheck {
            command: h.command.clone(),
            tcp: h.tcp.clone(),
            send: h.send.as_bytes().to_vec(),
            http: h.http.clone(),
            tls: h.tls.clone(),
            server_name: h.server_name.clone(),
            ca_file: h.ca_file.clone(),
            insecure_skip_verify: h.insecure_skip_verify,
            expect_status: h.expect_status.unwrap_or(0),
            interval_ms: h.interval_ms.unwrap_or(0),
            timeout_s: h.timeout_s.unwrap_or(0),
        }),
        after: c.after.clone(),
        stack: c.stack.clone(),
        stop_timeout_s: c.stop_timeout_s.unwrap_or(0),
        read_only_rootfs: c.read_only_rootfs,
    })
}

pub fn network_to_proto(n: &NetworkSpec) -> v1::Network {
    v1::Network {
        driver: n.driver.clone(),
        subnet: n.subnet.clone(),
        internal: n.internal,
        stack: n.stack.clone(),
    }
}

pub fn volume_to_proto(v: &VolumeSpec) -> v1::Volume {
    v1::Volume {
        driver: v.driver.clone(),
        stack: v.stack.clone(),
    }
}

pub fn stack_to_proto(s: &StackSpec) -> v1::Stack {
    v1::Stack {
        prune: s.prune,
        purge_volumes: s.purge_volumes.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STACK: &str = r#"
[[resource]]
kind = "secret"
name = "db-password"
path = "/srv/kctl/secrets/db"

[[resource]]
kind = "volume"
name = "pgdata"
stack = "kheops"

[[resource]]
kind = "network"
name = "kheops-net"
stack = "kheops"
subnet = "172.30.0.0/24"

[[resource]]
kind = "container"
name = "db"
stack = "kheops"
image = "postgres:16"
image_archive = "/srv/images/pg.tar"
env = { POSTGRES_DB = "kheops", A = "1" }
ports = ["127.0.0.1:5432:5432"]
mounts = [
  { volume = "pgdata", target = "/var/lib/postgresql/data" },
  { secret = "db-password", target = "/run/secrets/db" },
]
networks = [{ name = "kheops-net", aliases = ["db"] }]
health = { command = ["pg_isready"], timeout_s = 60 }
restart = "on-failure"
cpus = 1.5

[[resource]]
kind = "container"
name = "web"
stack = "kheops"
image = "local/web:1"
networks = ["kheops-net"]
after = ["db"]
health = { http = "http://127.0.0.1:8080/health", expect_status = 200 }

[[resource]]
kind = "container"
name = "proxy"
stack = "kheops"
image = "local/proxy:1"
health = { tls = "127.0.0.1:8443", server_name = "proxy.lab", ca_file = "/etc/kctl/ca.pem" }

[[resource]]
kind = "stack"
name = "kheops"
prune = true
purge_volumes = ["old-data"]
"#;

    #[test]
    fn a_container_stack_converts_to_the_api() -> anyhow::Result<()> {
        let resources = super::super::parse(STACK)?;
        let spec = super::super::to_proto(&resources, std::path::Path::new("."))?;
        assert_eq!(spec.resources.len(), 7);
        let Some(v1::resource::Kind::Container(db)) = &spec.resources[3].kind else {
            anyhow::bail!("not a container: {:?}", spec.resources[3])
        };
        assert_eq!(db.stack, "kheops");
        assert_eq!(
            db.env.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["A", "POSTGRES_DB"],
            "env is sorted: a TOML table has no order"
        );
        assert_eq!(db.ports[0].host_ip, "127.0.0.1");
        assert_eq!(db.mounts.len(), 2);
        assert_eq!(db.networks[0].aliases, ["db"]);
        assert_eq!(db.restart, v1::RestartPolicy::OnFailure as i32);
        assert_eq!(db.cpu_millis, 1500);
        assert_eq!(db.image_archive, "/srv/images/pg.tar");
        let Some(v1::resource::Kind::Container(web)) = &spec.resources[4].kind else {
            anyhow::bail!("web")
        };
        assert_eq!(web.after, ["db"]);
        assert_eq!(web.networks[0].name, "kheops-net");
        assert_eq!(web.health.as_ref().map(|h| h.expect_status), Some(200));
        let Some(v1::resource::Kind::Container(proxy)) = &spec.resources[5].kind else {
            anyhow::bail!("proxy")
        };
        let h = proxy.health.clone().unwrap_or_default();
        assert_eq!(
            (h.tls.as_str(), h.server_name.as_str(), h.ca_file.as_str()),
            ("127.0.0.1:8443", "proxy.lab", "/etc/kctl/ca.pem")
        );
        assert!(!h.insecure_skip_verify);
        let Some(v1::resource::Kind::Stack(st)) = &spec.resources[6].kind else {
            anyhow::bail!("stack")
        };
        assert!(st.prune);
        assert_eq!(st.purge_volumes, ["old-data"]);
        Ok(())
    }

    #[test]
    fn container_refusals_name_the_resource_and_field() {
        let c = |extra: &str| {
            format!(
                "[[resource]]\nkind = \"container\"\nname = \"web\"\nimage = \"x:1\"\n{extra}\n"
            )
        };
        for (text, want) in [
            (
                c("ports = [\"8080:80\"]"),
                r#"resource #1 ("web"): field `ports`: "8080:80" has no host address"#,
            ),
            (
                c("imgae = \"y\""),
                r#"resource #1 ("web"): unknown field `imgae`"#,
            ),
            (
                c("restart = \"sometimes\""),
                r#"resource #1 ("web"): field `restart`: unknown variant `sometimes`"#,
            ),
            (
                c("mounts = [{ target = \"/x\" }]"),
                "field `mounts`: /x: give exactly one of bind, volume",
            ),
            (
                c("health = { tcp = \"a:1\", http = \"http://a:1/\" }"),
                "field `health`: give exactly one",
            ),
            (
                c("health = { http = \"https://a:1/\" }"),
                "field `health`: a TLS probe needs `ca_file`",
            ),
            (
                c("health = { tls = \"a:1\", insecure_skip_verify = true, verify = 1 }"),
                "unknown field `verify`",
            ),
            (c("cpus = -1.0"), "field `cpus`"),
            (
                "[[resource]]\nkind = \"container\"\nname = \"web\"\n".to_string(),
                r#"resource #1 ("web"): missing field `image`"#,
            ),
            (
                "[[resource]]\nkind = \"stack\"\nname = \"s\"\nprune = \"yes\"\n".to_string(),
                r#"resource #1 ("s"): field `prune`: invalid type"#,
            ),
        ] {
            let got = super::super::parse(&text)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
            assert!(
                got.contains(want),
                "spec:\n{text}\nwant: {want}\ngot:  {got}"
            );
        }
    }

    #[test]
    fn ports_need_an_address() {
        let p = parse_port("127.0.0.1:8080:80").map_err(|e| e.to_string());
        assert_eq!(
            p.map(|p| (p.host_ip, p.host_port, p.container_port, p.protocol)),
            Ok(("127.0.0.1".into(), 8080, 80, "tcp".into()))
        );
        let p = parse_port("[::1]:53:53/udp").map_err(|e| e.to_string());
        assert_eq!(
            p.map(|p| (p.host_ip, p.protocol)),
            Ok(("::1".into(), "udp".into()))
        );
        let e = parse_port("8080:80").err().unwrap_or_default();
        assert!(e.contains("no host address"), "{e}");
        assert!(parse_port("127.0.0.1:0:80").is_err());
        assert!(parse_port("localhost:80:80").is_err());
        assert!(parse_port("127.0.0.1:80:80/sctp").is_err());
    }
}
