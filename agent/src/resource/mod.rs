//! Resource kinds. Each module has the same three verbs and nothing else public:
//! `read` the host's current state, `plan` (pure: spec + observed -> change), `apply`.
//!
//! Resources know nothing of the journal, the audit log or gRPC: the engine calls them, and
//! they report progress only through the `Progress` they are handed.

pub mod certificate;
pub mod container;
pub mod docker;
pub mod file;
pub mod group_member;
pub mod keycloak_realm;
pub mod network;
pub mod secret;
pub mod stack;
pub mod volume;

use kagent_proto::v1::Action;

/// One field of one resource is wrong; the engine adds the resource's kind and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: &'static str, problem: impl Into<String>) -> FieldError {
        FieldError {
            field,
            problem: problem.into(),
        }
    }
}

/// What a plan says about one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub action: Action,
    /// Human-readable, one change per line; never a secret value.
    pub diff: String,
    pub warnings: Vec<String>,
}

impl Change {
    pub fn unchanged() -> Change {
        Change {
            action: Action::Unchanged,
            diff: String::new(),
            warnings: Vec::new(),
        }
    }
}

/// A failure while reading or applying, with what to do about it when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceError {
    pub message: String,
    pub hint: String,
}

impl ResourceError {
    pub fn io(what: &str, path: &std::path::Path, e: &std::io::Error) -> ResourceError {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                "the agent must run as root to manage this path"
            }
            std::io::ErrorKind::StorageFull => "free space on the file system",
            _ => "",
        };
        ResourceError {
            message: format!("cannot {what} {}: {e}", path.display()),
            hint: hint.into(),
        }
    }
}

/// How a resource reports progress while it applies. The engine turns calls into events.
pub trait Progress: Send + Sync {
    fn report(&self, message: &str, percent: Option<u32>);
}

/// Parses a mode field: permission bits only, no setuid/setgid (a spec must not be able to
/// plant a privileged binary).
pub fn check_mode(field: &'static str, mode: u32) -> Result<u32, FieldError> {
    if mode > 0o1777 {
        return Err(FieldError::new(
            field,
            format!(
                "{mode:#o} is not allowed; use permission bits only (at most 0o1777, no setuid/setgid)"
            ),
        ));
    }
    Ok(mode)
}

/// Renders a mode the way operators write it.
pub fn mode_str(mode: u32) -> String {
    format!("{mode:04o}")
}
