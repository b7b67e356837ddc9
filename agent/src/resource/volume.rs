//! `volume`: a named Docker volume with the agent's labels. Created when absent and never
//! deleted or recreated by an apply: it holds data. Only a `stack` resource's explicit
//! `purge_volumes` removes one (see `stack`). A volume of the same name that kagent did not
//! create is never touched.

use bollard::models::VolumeCreateRequest;
use kagent_proto::v1::{self, Action};
use serde::Serialize;

use super::container::{Declared, check_stack};
use super::{Change, FieldError, ResourceError};
use crate::host::docker::{self, Owner};

#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub stack: String,
    pub driver: String,
    pub hash: String,
}

pub fn from_proto(
    p: &v1::Volume,
    name: &str,
    declared: &(impl Declared + ?Sized),
) -> Result<Spec, FieldError> {
    let stack = check_stack(&p.stack, declared)?;
    let driver = match p.driver.as_str() {
        "" => "local".to_string(),
        d if d
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:".contains(c)) =>
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
    #[derive(Serialize)]
    struct Canonical<'a> {
        name: &'a str,
        stack: &'a str,
        driver: &'a str,
    }
    let hash = docker::spec_hash(&Canonical {
        name,
        stack: &stack,
        driver: &driver,
    });
    Ok(Spec {
        name: name.into(),
        stack,
        driver,
        hash,
    })
}

#[derive(Debug, Clone)]
pub struct Current {
    pub driver: String,
}

pub type Observed = Option<Current>;

pub async fn read(spec: &Spec) -> Result<Observed, ResourceError> {
    let docker = docker::client().await?;
    let v = match docker.inspect_volume(&spec.name).await {
        Ok(v) => v,
        Err(e) if docker::is_not_found(&e) => return Ok(None),
        Err(e) => return Err(docker::error(&format!("inspect volume {}", spec.name), &e)),
    };
    match docker::owner(Some(&v.labels)) {
        Owner::Foreign => Err(ResourceError {
            message: format!(
                "volume {:?} exists but was not created by kagent; it is left alone",
                spec.name
            ),
            hint: "give this resource another name; to adopt the data, copy it into a managed \
                   volume"
                .into(),
        }),
        Owner::Managed { stack, .. } if stack != spec.stack => Err(ResourceError {
            message: format!(
                "volume {:?} belongs to stack {stack:?}, not {:?}; it is left alone",
                spec.name, spec.stack
            ),
            hint: "volume names are unique per host: rename this resource".into(),
        }),
        Owner::Managed { .. } => Ok(Some(Current { driver: v.driver })),
    }
}

pub fn plan(spec: &Spec, observed: &Observed) -> Change {
    match observed {
        None => Change {
            action: Action::Create,
            diff: format!("+ volume {} (driver {})", spec.name, spec.driver),
            warnings: Vec::new(),
        },
        Some(now) if now.driver != spec.driver => Change {
            action: Action::Unchanged,
            diff: String::new(),
            warnings: vec![format!(
                "volume {} has driver {:?}, the spec says {:?}; a volume is never recreated \
                 (its data would be lost): purge it with a `stack` resource's purge_volumes \
                 to change it",
                spec.name, now.driver, spec.driver
            )],
        },
        Some(_) => Change::unchanged(),
    }
}

pub async fn apply(spec: &Spec, observed: &Observed) -> Result<String, ResourceError> {
    if observed.is_some() {
        return Ok("kept".into());
    }
    let docker = docker::client().await?;
    let request = VolumeCreateRequest {
        name: Some(spec.name.clone()),
        driver: Some(spec.driver.clone()),
        labels: Some(docker::labels(&spec.stack, &spec.name, &spec.hash, &[])),
        ..Default::default()
    };
    docker
        .create_volume(request)
        .await
        .map_err(|e| docker::error(&format!("create volume {}", spec.name), &e))?;
    Ok(format!("created volume {}", spec.name))
}
