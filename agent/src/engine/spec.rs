//! The validated host spec. `validate` checks the whole spec, every resource and field,
//! before the engine changes anything: a spec is applied entirely or not at all.

use std::collections::HashSet;

use kagent_proto::v1::{self, resource::Kind as ProtoKind};

use crate::host::fs::{ManagedPath, Roots};
use crate::resource::{self, Change, FieldError, ResourceError, file, secret};

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
}

/// The current state read for one resource, by kind.
pub enum Observed {
    File(file::Observed),
    Secret(secret::Observed),
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
                    "no resource kind is set; use one of: file, secret".into(),
                ));
            }
            Some(ProtoKind::File(f)) => Kind::File(file::from_proto(f, roots).map_err(field)?),
            Some(ProtoKind::Secret(s)) => {
                Kind::Secret(secret::from_proto(s, roots).map_err(field)?)
            }
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
    }
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::File(_) => "file",
            Kind::Secret(_) => "secret",
        }
    }

    fn path(&self) -> Option<&ManagedPath> {
        match self {
            Kind::File(s) => Some(&s.path),
            Kind::Secret(s) => Some(&s.path),
        }
    }

    /// Reads the host. File kinds do blocking I/O; they run it in `block_in_place` so the
    /// async threads stay free, while Docker-backed kinds await their API calls.
    pub async fn read(&self) -> Result<Observed, ResourceError> {
        Ok(match self {
            Kind::File(s) => Observed::File(tokio::task::block_in_place(|| file::read(s))?),
            Kind::Secret(s) => Observed::Secret(tokio::task::block_in_place(|| secret::read(s))?),
        })
    }

    pub fn plan(&self, observed: &Observed) -> Change {
        match (self, observed) {
            (Kind::File(s), Observed::File(o)) => file::plan(s, o),
            (Kind::Secret(s), Observed::Secret(o)) => secret::plan(s, o),
            _ => mismatch(),
        }
    }

    /// Applies the planned change, reporting through `progress`.
    pub async fn apply(
        &self,
        observed: &Observed,
        _progress: &(dyn resource::Progress + '_),
    ) -> Result<String, ResourceError> {
        match (self, observed) {
            (Kind::File(s), Observed::File(o)) => tokio::task::block_in_place(|| file::apply(s, o)),
            (Kind::Secret(s), Observed::Secret(o)) => {
                tokio::task::block_in_place(|| secret::apply(s, o))
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
