//! `network`: a Docker network with the agent's labels. Created when absent; recreated when its
//! settings (driver, subnet, internal) changed and no container uses it; a network of the same
//! name that kagent did not create is never touched.

use std::collections::HashMap;

use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::InspectNetworkOptions;
use kagent_proto::v1::{self, Action};
use serde::Serialize;

use super::container::{Declared, check_stack};
use super::{Change, FieldError, ResourceError};
use crate::host::docker::{self, Owner};

#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub stack: String,
    pub create: Create,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Create {
    pub driver: String,
    pub subnet: String,
    pub internal: bool,
}

pub fn from_proto(
    p: &v1::Network,
    name: &str,
    declared: &(impl Declared + ?Sized),
) -> Result<Spec, FieldError> {
    if ["bridge", "host", "none"].contains(&name) {
        return Err(FieldError::new(
            "name",
            format!("{name:?} is one of Docker's own networks; choose another name"),
        ));
    }
    let stack = check_stack(&p.stack, declared)?;
    let driver = match p.driver.as_str() {
        "" => "bridge".to_string(),
        d if d
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c)) =>
        {
            d.into()
        }
        d => {
            return Err(FieldError::new(
                "driver",
                format!("{d:?} is not a driver name"),
            ));
        }
    };
    if !p.subnet.is_empty() {
        let ok = p.subnet.split_once('/').is_some_and(|(ip, len)| {
            ip.parse::<std::net::IpAddr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 128)
        });
        if !ok {
            return Err(FieldError::new(
                "subnet",
                format!("{:?} is not a CIDR such as \"172.30.0.0/24\"", p.subnet),
            ));
        }
    }
    let create = Create {
        driver,
        subnet: p.subnet.clone(),
        internal: p.internal,
    };
    let hash = docker::spec_hash(&(name, &stack, &create));
    Ok(Spec {
        name: name.into(),
        stack,
        create,
        hash,
    })
}

#[derive(Debug, Clone)]
pub struct Current {
    pub id: String,
    pub spec_hash: String,
    /// Names of the containers attached.
    pub containers: Vec<String>,
}

pub type Observed = Option<Current>;

pub async fn read(spec: &Spec) -> Result<Observed, ResourceError> {
    let docker = docker::client().await?;
    let n = match docker
        .inspect_network(&spec.name, None::<InspectNetworkOptions>)
        .await
    {
        Ok(n) if n.name.as_deref() == Some(spec.name.as_str()) => n,
        Ok(_) => return Ok(None),
        Err(e) if docker::is_not_found(&e) => return Ok(None),
        Err(e) => return Err(docker::error(&format!("inspect network {}", spec.name), &e)),
    };
    match docker::owner(n.labels.as_ref()) {
        Owner::Foreign => Err(ResourceError {
            message: format!(
                "network {:?} exists but was not created by kagent; it is left alone",
                spec.name
            ),
            hint: format!(
                "remove it yourself (`docker network rm {}`) or give this resource another name",
                spec.name
            ),
        }),
        Owner::Managed { stack, .. } if stack != spec.stack => Err(ResourceError {
            message: format!(
                "network {:?} belongs to stack {stack:?}, not {:?}; it is left alone",
                spec.name, spec.stack
            ),
            hint: "network names are unique per host: rename this resource".into(),
        }),
        Owner::Managed { spec_hash, .. } => Ok(Some(Current {
            id: n.id.unwrap_or_default(),
            spec_hash,
            containers: n
                .containers
                .unwrap_or_default()
                .into_values()
                .filter_map(|c| c.name)
                .collect(),
        })),
    }
}

pub fn plan(spec: &Spec, observed: &Observed) -> Change {
    match observed {
        None => Change {
            action: Action::Create,
            diff: format!(
                "+ network {} (driver {}{}{})",
                spec.name,
                spec.create.driver,
                if spec.create.subnet.is_empty() {
                    String::new()
                } else {
                    format!(", subnet {}", spec.create.subnet)
                },
                if spec.create.internal {
                    ", internal"
                } else {
                    ""
                }
            ),
            warnings: Vec::new(),
        },
        Some(now) if now.spec_hash != spec.hash => Change {
            action: Action::Update,
            diff: format!(
                "~ network {}: settings changed (driver {}, subnet {:?}, internal {}): recreate",
                spec.name, spec.create.driver, spec.create.subnet, spec.create.internal
            ),
            warnings: if now.containers.is_empty() {
                Vec::new()
            } else {
                vec![format!(
                    "network {} is used by {}; it can only be recreated once they are gone",
                    spec.name,
                    now.containers.join(", ")
                )]
            },
        },
        Some(_) => Change::unchanged(),
    }
}

pub async fn apply(spec: &Spec, observed: &Observed) -> Result<String, ResourceError> {
    let docker = docker::client().await?;
    if let Some(now) = observed {
        if !now.containers.is_empty() {
            return Err(ResourceError {
                message: format!(
                    "network {} must be recreated for its new settings but containers use it: {}",
                    spec.name,
                    now.containers.join(", ")
                ),
                hint: "keep the old settings, or remove those containers first (a `stack` \
                       resource with prune), then apply again"
                    .into(),
            });
        }
        docker
            .remove_network(&now.id)
            .await
            .map_err(|e| docker::error(&format!("remove network {}", spec.name), &e))?;
    }
    let ipam = (!spec.create.subnet.is_empty()).then(|| Ipam {
        config: Some(vec![IpamConfig {
            subnet: Some(spec.create.subnet.clone()),
            ..Default::default()
        }]),
        ..Default::default()
    });
    let labels: HashMap<String, String> = docker::labels(&spec.stack, &spec.name, &spec.hash, &[]);
    let request = NetworkCreateRequest {
        name: spec.name.clone(),
        driver: Some(spec.create.driver.clone()),
        internal: Some(spec.create.internal),
        ipam,
        labels: Some(labels),
        ..Default::default()
    };
    let created = docker
        .create_network(request)
        .await
        .map_err(|e| docker::error(&format!("create network {}", spec.name), &e))?;
    Ok(format!(
        "{} network {}",
        if observed.is_some() {
            "recreated"
        } else {
            "created"
        },
        created.id.chars().take(12).collect::<String>()
    ))
}
