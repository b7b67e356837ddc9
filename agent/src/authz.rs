//! Which role each RPC needs. One table, checked by a test against the API's descriptor set,
//! so a new RPC cannot ship without a rule.
//!
//! Roles come from the client certificate's Organization and are ordered:
//! `viewer` < `operator` < `admin`. Health and reflection need only a valid fleet certificate.

use crate::caller::Caller;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads: facts, operations, status, logs.
    Viewer,
    /// Day-2 actions: renew certificates, restart containers.
    Operator,
    /// Changes the declared state; reads secrets explicitly.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// What a call must bring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// A fleet client certificate carrying at least this role.
    Role(Role),
    /// A valid one-time enrollment token (checked by the enrollment service itself).
    EnrollmentToken,
}

/// Every RPC of the `kagent.v1` services and what it needs.
pub const RULES: &[(&str, Need)] = &[
    ("/kagent.v1.Agent/Facts", Need::Role(Role::Viewer)),
    ("/kagent.v1.Agent/Apply", Need::Role(Role::Admin)),
    ("/kagent.v1.Agent/WatchOperation", Need::Role(Role::Viewer)),
    ("/kagent.v1.Agent/ListOperations", Need::Role(Role::Viewer)),
    ("/kagent.v1.Agent/ContainerStatus", Need::Role(Role::Viewer)),
    ("/kagent.v1.Agent/ContainerLogs", Need::Role(Role::Viewer)),
    (
        "/kagent.v1.Agent/RestartContainer",
        Need::Role(Role::Operator),
    ),
    // Who did what is for the people who act, not for every dashboard.
    ("/kagent.v1.Agent/ListAudit", Need::Role(Role::Operator)),
    ("/kagent.v1.Agent/PrepareRotation", Need::Role(Role::Admin)),
    ("/kagent.v1.Agent/CompleteRotation", Need::Role(Role::Admin)),
    (
        "/kagent.v1.Agent/ListCertificates",
        Need::Role(Role::Viewer),
    ),
    // Day-2: renewing reruns the recorded spec, it cannot change it.
    (
        "/kagent.v1.Agent/RenewCertificate",
        Need::Role(Role::Operator),
    ),
    // Explicit secret reads and realm exports (which may carry secrets): admin, audited.
    (
        "/kagent.v1.Agent/RetireCertificate",
        Need::Role(Role::Operator),
    ),
    ("/kagent.v1.Agent/RevealSecret", Need::Role(Role::Admin)),
    (
        "/kagent.v1.Agent/ExportKeycloakRealm",
        Need::Role(Role::Admin),
    ),
    ("/kagent.v1.Agent/CheckKeycloak", Need::Role(Role::Admin)),
    (
        "/kagent.v1.Enrollment/BeginEnrollment",
        Need::EnrollmentToken,
    ),
    (
        "/kagent.v1.Enrollment/CompleteEnrollment",
        Need::EnrollmentToken,
    ),
];

/// Why a call is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("{rpc} needs the role `{need}`; the client certificate of {who} carries {has}")]
    Role {
        rpc: String,
        need: &'static str,
        who: String,
        has: String,
    },
    #[error("{0} has no authorization rule (bug: every RPC needs one)")]
    NoRule(String),
}

/// Allows the call when the caller's role is at least the RPC's.
pub fn check(caller: &Caller, rpc: &str) -> Result<(), Denied> {
    let need = RULES
        .iter()
        .find(|(name, _)| *name == rpc)
        .map(|(_, need)| *need)
        .ok_or_else(|| Denied::NoRule(rpc.into()))?;
    let need = match need {
        Need::Role(r) => r,
        Need::EnrollmentToken => return Ok(()),
    };
    let has = caller.role.as_deref().and_then(Role::parse);
    match has {
        Some(r) if r >= need => Ok(()),
        _ => Err(Denied::Role {
            rpc: rpc.into(),
            need: need.name(),
            who: caller.name.clone(),
            has: match &caller.role {
                Some(r) => format!("`{r}`"),
                None => "no role".into(),
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Every method of every service in the compiled API, as `/pkg.Service/Method`.
    fn api_methods() -> Vec<String> {
        let fds = prost_types::FileDescriptorSet::decode(kagent_proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_default();
        let mut out = Vec::new();
        for file in &fds.file {
            for svc in &file.service {
                for m in &svc.method {
                    out.push(format!("/{}.{}/{}", file.package(), svc.name(), m.name()));
                }
            }
        }
        out
    }

    #[test]
    fn every_rpc_has_a_rule_and_every_rule_an_rpc() {
        let methods = api_methods();
        assert!(
            methods.len() >= 4,
            "descriptor set not readable: {methods:?}"
        );
        for m in &methods {
            assert!(
                RULES.iter().any(|(r, _)| r == m),
                "{m} has no rule in authz::RULES"
            );
        }
        for (r, _) in RULES {
            assert!(methods.contains(&r.to_string()), "rule for unknown RPC {r}");
        }
    }

    fn caller(role: Option<&str>) -> Caller {
        Caller {
            subject: "CN=t".into(),
            name: "t".into(),
            role: role.map(str::to_owned),
            fingerprint: String::new(),
        }
    }

    #[test]
    fn every_rpc_against_every_role() {
        for (rpc, need) in RULES {
            for role in [
                None,
                Some("viewer"),
                Some("operator"),
                Some("admin"),
                Some("root"),
            ] {
                let got = check(&caller(role), rpc);
                // Token-authenticated RPCs are checked by their service, for any caller.
                let Need::Role(need) = need else {
                    assert!(got.is_ok(), "{rpc} as {role:?}: {got:?}");
                    continue;
                };
                let allowed = role.and_then(Role::parse).is_some_and(|r| r >= *need);
                assert_eq!(got.is_ok(), allowed, "{rpc} as {role:?}: {got:?}");
                if let Err(e) = got {
                    assert!(e.to_string().contains(need.name()), "{e}");
                }
            }
        }
    }
}
