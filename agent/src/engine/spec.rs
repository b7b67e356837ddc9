//! The validated host spec. `validate` checks the whole spec, every resource and field,
//! before the engine changes anything: a spec is applied entirely or not at all.

use std::collections::HashSet;

use kagent_proto::v1::{self, resource::Kind as ProtoKind};

use crate::host::fs::{ManagedPath, Roots};
use crate::resource::certificate;
use crate::resource::{
    self, Change, FieldError, ResourceError, docker, file, group_member, secret,
};
use crate::resource::{container, keycloak_realm, network, stack, volume};

pub struct HostSpec {
    pub resources: Vec<Resource>,
}

pub struct Resource {
    pub name: String,
    pub kind: Kind,
}

pub enum Kind {
    File(file::Spec),
    Secret(secret::Spec),
    Docker(docker::Spec),
    GroupMember(group_member::Spec),
    Container(Box<container::Spec>),
    Network(network::Spec),
    Volume(volume::Spec),
    Stack(stack::Spec),
    Certificate(Box<certificate::Spec>),
    KeycloakRealm(Box<keycloak_realm::Spec>),
}

/// The current state read for one resource, by kind.
pub enum Observed {
    File(file::Observed),
    Secret(secret::Observed),
    Docker(Box<docker::Observed>),
    GroupMember(group_member::Observed),
    Container(Box<container::Observed>),
    Network(network::Observed),
    Volume(volume::Observed),
    Stack(stack::Observed),
    Certificate(Box<certificate::Observed>),
    KeycloakRealm(Box<keycloak_realm::Observed>),
}

/// A spec refused before anything ran: which resource, which field, what is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("resource {kind} {name:?} (#{number}): field `{field}`: {problem}")]
pub struct SpecError {
    pub kind: &'static str,
    pub name: String,
    /// 1-based position in the spec, for names that are empty or repeated.
    pub number: usize,
    pub field: &'static str,
    pub problem: String,
}

/// Names are `[a-z0-9._-]{1,63}` and start with a letter or digit.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
    if name.is_empty() || name.len() > 63 {
        return Err("must be 1 to 63 characters".into());
    }
    if !name.chars().all(ok_char) || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "{name:?} may only hold a-z, 0-9, '.', '_', '-' and must start with a letter or digit"
        ));
    }
    Ok(())
}

pub fn validate(spec: &v1::HostSpec, roots: &Roots) -> Result<HostSpec, SpecError> {
    let mut names = HashSet::new();
    let mut paths: Vec<(ManagedPath, String)> = Vec::new();
    let mut resources = Vec::with_capacity(spec.resources.len());
    for (i, r) in spec.resources.iter().enumerate() {
        let kind_name = r.kind.as_ref().map(proto_kind_name).unwrap_or("(none)");
        let err = |field: &'static str, problem: String| SpecError {
            kind: kind_name,
            name: r.name.clone(),
            number: i + 1,
            field,
            problem,
        };
        check_name(&r.name).map_err(|p| err("name", p))?;
        if !names.insert((kind_name, r.name.clone())) {
            return Err(err(
                "name",
                format!("another {kind_name} resource is named {:?}", r.name),
            ));
        }
        let field = |e: FieldError| err(e.field, e.problem);
        let kind = match &r.kind {
            None => {
                return Err(err(
                    "kind",
                    "no resource kind is set; use one of: file, secret, docker, group_member, container, network, volume, stack, certificate, keycloak_realm"
                        .into(),
                ));
            }
            Some(ProtoKind::File(f)) => Kind::File(file::from_proto(f, roots).map_err(field)?),
            Some(ProtoKind::Secret(s)) => {
                Kind::Secret(secret::from_proto(s, roots).map_err(field)?)
            }
            Some(ProtoKind::Docker(d)) => Kind::Docker(docker::from_proto(d).map_err(field)?),
            Some(ProtoKind::GroupMember(g)) => {
                Kind::GroupMember(group_member::from_proto(g).map_err(field)?)
            }
            // Containers, networks and volumes may only name resources listed before them.
            Some(ProtoKind::Container(c)) => Kind::Container(Box::new(
                container::from_proto(c, &r.name, resources.as_slice()).map_err(field)?,
            )),
            Some(ProtoKind::Network(n)) => {
                Kind::Network(network::from_proto(n, &r.name, resources.as_slice()).map_err(field)?)
            }
            Some(ProtoKind::Volume(v)) => {
                Kind::Volume(volume::from_proto(v, &r.name, resources.as_slice()).map_err(field)?)
            }
            Some(ProtoKind::Stack(st)) => {
                Kind::Stack(stack::from_proto(st, &r.name, &resources).map_err(field)?)
            }
            Some(ProtoKind::Certificate(c)) => Kind::Certificate(Box::new(
                certificate::from_proto(&r.name, c, roots).map_err(field)?,
            )),
            Some(ProtoKind::KeycloakRealm(k)) => Kind::KeycloakRealm(Box::new(
                keycloak_realm::from_proto(k, roots).map_err(field)?,
            )),
        };
        if let Some(path) = kind.path() {
            if let Some((_, other)) = paths.iter().find(|(p, _)| p == path) {
                return Err(err(
                    "path",
                    format!("{path} is already managed by resource {other:?} of this spec"),
                ));
            }
            paths.push((path.clone(), r.name.clone()));
        }
        resources.push(Resource {
            name: r.name.clone(),
            kind,
        });
    }
    Ok(HostSpec { resources })
}

fn proto_kind_name(k: &ProtoKind) -> &'static str {
    match k {
        ProtoKind::File(_) => "file",
        ProtoKind::Secret(_) => "secret",
        ProtoKind::Docker(_) => "docker",
        ProtoKind::GroupMember(_) => "group_member",
        ProtoKind::Container(_) => "container",
        ProtoKind::Network(_) => "network",
        ProtoKind::Volume(_) => "volume",
        ProtoKind::Stack(_) => "stack",
        ProtoKind::Certificate(_) => "certificate",
        ProtoKind::KeycloakRealm(_) => "keycloak_realm",
    }
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::File(_) => "file",
            Kind::Secret(_) => "secret",
            Kind::Docker(_) => "docker",
            Kind::GroupMember(_) => "group_member",
            Kind::Container(_) => "container",
            Kind::Network(_) => "network",
            Kind::Volume(_) => "volume",
            Kind::Stack(_) => "stack",
            Kind::Certificate(_) => "certificate",
            Kind::KeycloakRealm(_) => "keycloak_realm",
        }
    }

    fn path(&self) -> Option<&ManagedPath> {
        match self {
            Kind::File(s) => Some(&s.path),
            Kind::Secret(s) => Some(&s.path),
            Kind::Docker(_) | Kind::GroupMember(_) => None,
            Kind::Container(_) | Kind::Network(_) | Kind::Volume(_) | Kind::Stack(_) => None,
            // Deploy targets are checked against each other by the kind itself.
            Kind::Certificate(_) => None,
            // Reads its secret files, writes none.
            Kind::KeycloakRealm(_) => None,
        }
    }

    /// Reads the host. File kinds do blocking I/O; they run it in `block_in_place` so the
    /// async threads stay free, while Docker-backed kinds await their API calls.
    pub async fn read(&self) -> Result<Observed, ResourceError> {
        Ok(match self {
            Kind::File(s) => Observed::File(tokio::task::block_in_place(|| file::read(s))?),
            Kind::Secret(s) => Observed::Secret(tokio::task::block_in_place(|| secret::read(s))?),
            // Package queries and account lookups: blocking commands and files.
            Kind::Docker(s) => {
                Observed::Docker(Box::new(tokio::task::block_in_place(|| docker::read(s))?))
            }
            Kind::GroupMember(s) => {
                Observed::GroupMember(tokio::task::block_in_place(|| group_member::read(s))?)
            }
            Kind::Container(s) => Observed::Container(Box::new(container::read(s).await?)),
            Kind::Network(s) => Observed::Network(network::read(s).await?),
            Kind::Volume(s) => Observed::Volume(volume::read(s).await?),
            Kind::Stack(s) => Observed::Stack(stack::read(s).await?),
            // The agent's store and the deploy targets: small blocking reads.
            Kind::Certificate(s) => {
                Observed::Certificate(Box::new(tokio::task::block_in_place(|| {
                    certificate::read(s)
                })?))
            }
            // Keycloak's Admin REST API: awaited HTTP calls.
            Kind::KeycloakRealm(s) => {
                Observed::KeycloakRealm(Box::new(keycloak_realm::read(s).await?))
            }
        })
    }

    pub fn plan(&self, observed: &Observed) -> Change {
        match (self, observed) {
            (Kind::File(s), Observed::File(o)) => file::plan(s, o),
            (Kind::Secret(s), Observed::Secret(o)) => secret::plan(s, o),
            (Kind::Docker(s), Observed::Docker(o)) => docker::plan(s, o),
            (Kind::GroupMember(s), Observed::GroupMember(o)) => group_member::plan(s, o),
            (Kind::Container(s), Observed::Container(o)) => container::plan(s, o),
            (Kind::Network(s), Observed::Network(o)) => network::plan(s, o),
            (Kind::Volume(s), Observed::Volume(o)) => volume::plan(s, o),
            (Kind::Stack(s), Observed::Stack(o)) => stack::plan(s, o),
            (Kind::Certificate(s), Observed::Certificate(o)) => certificate::plan(s, o),
            (Kind::KeycloakRealm(s), Observed::KeycloakRealm(o)) => keycloak_realm::plan(s, o),
            _ => mismatch(),
        }
    }

    /// Applies the planned change, reporting through `progress`.
    pub async fn apply(
        &self,
        observed: &Observed,
        progress: &(dyn resource::Progress + '_),
    ) -> Result<String, ResourceError> {
        match (self, observed) {
            (Kind::File(s), Observed::File(o)) => tokio::task::block_in_place(|| file::apply(s, o)),
            (Kind::Secret(s), Observed::Secret(o)) => {
                tokio::task::block_in_place(|| secret::apply(s, o))
            }
            // The package manager's output streams through `progress` while it runs.
            (Kind::Docker(s), Observed::Docker(o)) => {
                tokio::task::block_in_place(|| docker::apply(s, o, progress))
            }
            (Kind::GroupMember(s), Observed::GroupMember(o)) => {
                tokio::task::block_in_place(|| group_member::apply(s, o))
            }
            // Docker API calls are awaited; pulls, loads and health waits report progress.
            (Kind::Container(s), Observed::Container(o)) => container::apply(s, o, progress).await,
            (Kind::Network(s), Observed::Network(o)) => network::apply(s, o).await,
            (Kind::Volume(s), Observed::Volume(o)) => volume::apply(s, o).await,
            (Kind::Stack(s), Observed::Stack(o)) => stack::apply(s, o).await,
            // ACME orders, deploys and consumer reloads: awaited, reporting progress.
            (Kind::Certificate(s), Observed::Certificate(o)) => {
                certificate::apply(s, o, progress).await
            }
            (Kind::KeycloakRealm(s), Observed::KeycloakRealm(o)) => {
                keycloak_realm::apply(s, o, progress).await
            }
            _ => Err(ResourceError {
                message: "observed state of another kind (bug)".into(),
                hint: "please file a bug".into(),
            }),
        }
    }
}

fn mismatch() -> Change {
    Change {
        action: v1::Action::Unspecified,
        diff: "observed state of another kind (bug)".into(),
        warnings: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, path: &str) -> v1::Resource {
        v1::Resource {
            name: name.into(),
            kind: Some(ProtoKind::File(v1::File {
                path: path.into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn errors_name_resource_and_field() {
        let roots = Roots::new(&["/r".into()]);
        let cases = [
            (vec![file("Bad Name", "/r/a")], "name"),
            (vec![file("a", "/r/a"), file("a", "/r/b")], "name"),
            (vec![file("a", "/r/a"), file("b", "/r/a")], "path"),
            (vec![file("a", "/r/a"), file("b", "/etc/passwd")], "path"),
            (
                vec![v1::Resource {
                    name: "x".into(),
                    kind: None,
                }],
                "kind",
            ),
        ];
        for (resources, field) in cases {
            let err = validate(&v1::HostSpec { resources }, &roots).err();
            assert_eq!(err.as_ref().map(|e| e.field), Some(field), "{err:?}");
        }
        let err = validate(
            &v1::HostSpec {
                resources: vec![file("a", "/r/a"), file("b", "/x")],
            },
            &roots,
        );
        let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.starts_with("resource file \"b\" (#2): field `path`:"),
            "{msg}"
        );
    }
}
