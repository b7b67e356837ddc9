//! The Docker Engine API (bollard), the only code that talks to dockerd.
//!
//! One client per agent process, connected on first use to the configured endpoint
//! (`docker_host`, default [`DEFAULT_HOST`]) and version-negotiated (dockerd 20.10 refuses
//! bollard's default API version on versioned paths). A failed first connection is not cached:
//! the next call tries again, so an agent started before dockerd recovers by itself. Requests
//! open a fresh connection each (bollard's unix transport keeps no idle pool), so a dockerd
//! restart costs only the calls in flight.
//!
//! Also here: the ownership labels every managed object carries, and Docker errors turned into
//! [`ResourceError`]s that say what to do.

use std::collections::HashMap;
use std::sync::OnceLock;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use sha2::{Digest, Sha256};

use crate::resource::ResourceError;

pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// `io.kctl.managed-by=kagent`: the agent created this object and may change it.
pub const LABEL_MANAGED_BY: &str = "io.kctl.managed-by";
pub const MANAGED_BY: &str = "kagent";
/// The stack (`Container.stack`, ...) the object belongs to.
pub const LABEL_STACK: &str = "io.kctl.stack";
/// The resource name of the spec that declares it.
pub const LABEL_RESOURCE: &str = "io.kctl.resource";
/// SHA-256 of the canonical encoding of the resource's spec: decides keep vs recreate.
pub const LABEL_SPEC_HASH: &str = "io.kctl.spec-hash";
/// Labels a spec may not set itself.
pub const RESERVED_PREFIX: &str = "io.kctl.";

/// Seconds a single Docker request may take (pulls and loads stream longer; the limit is on
/// the response head).
const REQUEST_TIMEOUT_S: u64 = 120;

static HOST: OnceLock<String> = OnceLock::new();
static CLIENT: tokio::sync::OnceCell<Docker> = tokio::sync::OnceCell::const_new();

/// Sets the endpoint, once, before the first call (the daemon does this from its config).
pub fn configure(host: &str) {
    let _ = HOST.set(host.to_string());
}

/// The configured endpoint.
pub fn host() -> &'static str {
    HOST.get().map(String::as_str).unwrap_or(DEFAULT_HOST)
}

/// The connected, version-negotiated client.
pub async fn client() -> Result<&'static Docker, ResourceError> {
    CLIENT
        .get_or_try_init(|| async {
            let endpoint = host();
            let docker = if endpoint.starts_with("unix://") || endpoint.starts_with('/') {
                let path = endpoint.trim_start_matches("unix://");
                Docker::connect_with_unix(path, REQUEST_TIMEOUT_S, bollard::API_DEFAULT_VERSION)
            } else {
                Docker::connect_with_host(endpoint)
            }
            .map_err(|e| unreachable(endpoint, &e))?;
            docker
                .negotiate_version()
                .await
                .map_err(|e| unreachable(endpoint, &e))
        })
        .await
}

fn unreachable(endpoint: &str, e: &DockerError) -> ResourceError {
    ResourceError {
        message: format!("cannot reach the Docker engine at {endpoint}: {e}"),
        hint: "start dockerd (or install it with a `docker` resource); the endpoint is the \
               agent's `docker_host` setting (env KAGENT_DOCKER_HOST)"
            .into(),
    }
}

/// Whether the engine answered 404 (no such container, image, network or volume).
pub fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// A failed Docker call: `what` says which ("create container web"), the hint what to try.
pub fn error(what: &str, e: &DockerError) -> ResourceError {
    let (message, hint) = match e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => {
            let hint = match status_code {
                409 => "another object holds this name or the object is in use",
                500 if message.contains("address already in use")
                    || message.contains("port is already allocated") =>
                {
                    "another process or container uses this host port; pick another `host_port`"
                }
                500 if message.contains("cannot assign requested address") => {
                    "the host has no such address; use one of its own addresses as `host_ip`"
                }
                _ => "",
            };
            (
                format!("cannot {what}: {message} (HTTP {status_code})"),
                hint,
            )
        }
        DockerError::RequestTimeoutError => (
            format!("cannot {what}: the Docker engine did not answer within {REQUEST_TIMEOUT_S} s"),
            "check dockerd (`docker info`)",
        ),
        DockerError::HyperResponseError { .. }
        | DockerError::HyperLegacyError { .. }
        | DockerError::IOError { .. }
        | DockerError::SocketNotFoundError(_) => (
            format!(
                "cannot {what}: lost the Docker engine at {}: {}",
                host(),
                with_causes(e)
            ),
            "check that dockerd runs; apply again once it answers",
        ),
        other => (format!("cannot {what}: {other}"), ""),
    };
    ResourceError {
        message,
        hint: hint.into(),
    }
}

/// `e` and its causes ("client error (SendRequest): connection closed ..."), each said once.
fn with_causes(e: &DockerError) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Who owns an object, from its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// Carries `io.kctl.managed-by=kagent`.
    Managed {
        stack: String,
        resource: String,
        spec_hash: String,
    },
    /// Made by someone else: never touched.
    Foreign,
}

pub fn owner(labels: Option<&HashMap<String, String>>) -> Owner {
    let Some(labels) = labels else {
        return Owner::Foreign;
    };
    if labels.get(LABEL_MANAGED_BY).map(String::as_str) != Some(MANAGED_BY) {
        return Owner::Foreign;
    }
    let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
    Owner::Managed {
        stack: get(LABEL_STACK),
        resource: get(LABEL_RESOURCE),
        spec_hash: get(LABEL_SPEC_HASH),
    }
}

/// The labels of a managed object (plus the spec's own `extra`).
pub fn labels(
    stack: &str,
    resource: &str,
    spec_hash: &str,
    extra: &[(String, String)],
) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = extra.iter().cloned().collect();
    out.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    out.insert(LABEL_STACK.into(), stack.into());
    out.insert(LABEL_RESOURCE.into(), resource.into());
    out.insert(LABEL_SPEC_HASH.into(), spec_hash.into());
    out
}

/// SHA-256 (hex) of a canonical encoding: struct fields in declaration order, lists in spec
/// order, so equal specs hash equal across agent restarts.
pub fn spec_hash(canonical: &impl serde::Serialize) -> String {
    let bytes = serde_json::to_vec(canonical).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

/// A label filter for list calls: managed by kagent, and of `stack` when given.
pub fn managed_filter(stack: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut label = vec![format!("{LABEL_MANAGED_BY}={MANAGED_BY}")];
    if let Some(s) = stack {
        label.push(format!("{LABEL_STACK}={s}"));
    }
    HashMap::from([("label".to_string(), label)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_comes_from_labels() {
        assert_eq!(owner(None), Owner::Foreign);
        let l = labels("s", "web", "abc", &[("app".into(), "x".into())]);
        assert_eq!(
            owner(Some(&l)),
            Owner::Managed {
                stack: "s".into(),
                resource: "web".into(),
                spec_hash: "abc".into()
            }
        );
        let mut other = l.clone();
        other.insert(LABEL_MANAGED_BY.into(), "compose".into());
        assert_eq!(owner(Some(&other)), Owner::Foreign);
        assert_eq!(l.get("app").map(String::as_str), Some("x"));
    }

    #[test]
    fn hashes_are_stable_and_sensitive() {
        assert_eq!(spec_hash(&("a", 1)), spec_hash(&("a", 1)));
        assert_ne!(spec_hash(&("a", 1)), spec_hash(&("a", 2)));
        assert_eq!(spec_hash(&"x").len(), 64);
    }
}
