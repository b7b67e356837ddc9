//! `stack`: what happens to the managed objects of one stack that the spec no longer lists.
//! `Resource.name` is the stack; it comes after every resource of its stack.
//!
//! Without `prune`, leftovers are only reported (warnings in the plan). With `prune`, the
//! leftover containers (stopped with their timeout, removed, volumes kept) and networks are
//! removed. Volumes are removed only when `purge_volumes` names them, whether or not prune is
//! set, and never one the spec still declares. Objects without the agent's labels are never
//! listed, so never touched.

use std::collections::BTreeSet;

use bollard::query_parameters::{ListContainersOptions, ListNetworksOptions, ListVolumesOptions};
use kagent_proto::v1::{self, Action};

use super::{Change, FieldError, ResourceError, container};
use crate::engine::spec::{Kind, Resource};
use crate::host::docker;

#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub prune: bool,
    pub purge_volumes: BTreeSet<String>,
    /// What the spec declares of this stack, by kind.
    pub containers: BTreeSet<String>,
    pub networks: BTreeSet<String>,
    pub volumes: BTreeSet<String>,
}

pub fn from_proto(p: &v1::Stack, name: &str, earlier: &[Resource]) -> Result<Spec, FieldError> {
    let mut spec = Spec {
        name: name.into(),
        prune: p.prune,
        purge_volumes: BTreeSet::new(),
        containers: BTreeSet::new(),
        networks: BTreeSet::new(),
        volumes: BTreeSet::new(),
    };
    for r in earlier {
        match &r.kind {
            Kind::Container(c) if c.stack == name => {
                spec.containers.insert(r.name.clone());
            }
            Kind::Network(n) if n.stack == name => {
                spec.networks.insert(r.name.clone());
            }
            Kind::Volume(v) if v.stack == name => {
                spec.volumes.insert(r.name.clone());
            }
            _ => {}
        }
    }
    for v in &p.purge_volumes {
        crate::engine::spec::check_name(v).map_err(|e| FieldError::new("purge_volumes", e))?;
        if spec.volumes.contains(v) {
            return Err(FieldError::new(
                "purge_volumes",
                format!(
                    "volume {v:?} is declared in this spec; purging it would delete the data \
                     the spec keeps (remove its `volume` resource first)"
                ),
            ));
        }
        spec.purge_volumes.insert(v.clone());
    }
    Ok(spec)
}

/// Managed objects of the stack that the spec does not declare.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// (name, id)
    pub containers: Vec<(String, String)>,
    /// (name, id)
    pub networks: Vec<(String, String)>,
    pub volumes: Vec<String>,
}

pub async fn read(spec: &Spec) -> Result<Observed, ResourceError> {
    let docker = docker::client().await?;
    let filters = docker::managed_filter(Some(&spec.name));
    let (containers, networks, volumes) = tokio::join!(
        docker.list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        })),
        docker.list_networks(Some(ListNetworksOptions {
            filters: Some(filters.clone()),
        })),
        docker.list_volumes(Some(ListVolumesOptions {
            filters: Some(filters.clone()),
        })),
    );
    let what = |k: &str| format!("list the {k} of stack {}", spec.name);
    let mut out = Observed::default();
    for c in containers.map_err(|e| docker::error(&what("containers"), &e))? {
        let name = c
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default();
        if !spec.containers.contains(&name) {
            out.containers.push((name, c.id.unwrap_or_default()));
        }
    }
    for n in networks.map_err(|e| docker::error(&what("networks"), &e))? {
        let name = n.name.unwrap_or_default();
        if !spec.networks.contains(&name) {
            out.networks.push((name, n.id.unwrap_or_default()));
        }
    }
    let volumes = volumes.map_err(|e| docker::error(&what("volumes"), &e))?;
    for v in volumes.volumes.unwrap_or_default() {
        if !spec.volumes.contains(&v.name) {
            out.volumes.push(v.name);
        }
    }
    out.containers.sort();
    out.networks.sort();
    out.volumes.sort();
    Ok(out)
}

pub fn plan(spec: &Spec, observed: &Observed) -> Change {
    let mut lines = Vec::new();
    let mut warnings = Vec::new();
    let leftover = |kind: &str, name: &str| {
        format!(
            "{kind} {name} of stack {} is no longer in the spec; set `prune = true` on the \
             stack resource to remove it",
            spec.name
        )
    };
    for (name, _) in &observed.containers {
        if spec.prune {
            lines.push(format!("- container {name}"));
        } else {
            warnings.push(leftover("container", name));
        }
    }
    for (name, _) in &observed.networks {
        if spec.prune {
            lines.push(format!("- network {name}"));
        } else {
            warnings.push(leftover("network", name));
        }
    }
    for name in &observed.volumes {
        if spec.purge_volumes.contains(name) {
            lines.push(format!("- volume {name} (purged: its data is deleted)"));
        } else {
            warnings.push(format!(
                "volume {name} of stack {} is no longer in the spec and is kept with its data; \
                 name it in `purge_volumes` to delete it",
                spec.name
            ));
        }
    }
    Change {
        action: if lines.is_empty() {
            Action::Unchanged
        } else {
            Action::Delete
        },
        diff: lines.join("\n"),
        warnings,
    }
}

pub async fn apply(spec: &Spec, observed: &Observed) -> Result<String, ResourceError> {
    let docker = docker::client().await?;
    let mut removed = Vec::new();
    if spec.prune {
        for (name, id) in &observed.containers {
            container::stop_and_remove(docker, id, name, 10).await?;
            removed.push(format!("container {name}"));
        }
        for (name, id) in &observed.networks {
            match docker.remove_network(id).await {
                Ok(()) => {}
                Err(e) if docker::is_not_found(&e) => {}
                Err(e) => return Err(docker::error(&format!("remove network {name}"), &e)),
            }
            removed.push(format!("network {name}"));
        }
    }
    for name in &observed.volumes {
        if spec.purge_volumes.contains(name) {
            match docker
                .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
                .await
            {
                Ok(()) => {}
                Err(e) if docker::is_not_found(&e) => {}
                Err(e) => {
                    let mut err = docker::error(&format!("remove volume {name}"), &e);
                    err.hint = "a container still uses it; remove that container first".into();
                    return Err(err);
                }
            }
            removed.push(format!("volume {name}"));
        }
    }
    Ok(format!("removed {}", removed.join(", ")))
}
