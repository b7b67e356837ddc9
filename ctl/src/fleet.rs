//! Fleet status: what every host of the inventory's installs answered, and the rules that say
//! whether a host is healthy. Pure: the replies come in as proto messages (gathered by
//! `commands::fleet`), so the rules are unit-tested without agents.
//!
//! A host is **failing** when any of these holds (`kctl fleet status --help` says the same):
//! - a call failed (unreachable, TLS refused, timed out, ...);
//! - the agent speaks another API than this kctl;
//! - Docker is not running;
//! - a certificate has fewer than [`CERT_MIN_DAYS`] days left, or was never issued;
//! - a managed container is not running, unhealthy, or still starting its health check;
//! - the newest operation that was not a dry run failed or was interrupted.

use kagent_proto::v1;
use time::OffsetDateTime;

use crate::error::Error;
use crate::host::Target;
use crate::inventory::Inventory;

/// Fewer days left than this on any certificate counts as failing.
pub const CERT_MIN_DAYS: f64 = 14.0;
/// How many hosts are queried at once by default.
pub const DEFAULT_CONCURRENCY: u16 = 8;
/// How many operations are read to find the newest one that was not a dry run.
pub const OPERATIONS_LIMIT: u32 = 20;

/// Which side of an install a host is: the role of the stack it runs.
pub use crate::stack::Role;

/// One host to ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostTarget {
    pub install: String,
    pub role: Role,
    pub host: Target,
}

/// The hosts of the installs named in `only` (every install when empty), in inventory order
/// (by name), the Keycloak host first.
pub fn targets(inventory: &Inventory, only: &[String]) -> crate::error::Result<Vec<HostTarget>> {
    for name in only {
        inventory.get(name)?;
    }
    Ok(inventory
        .installs
        .iter()
        .filter(|(name, _)| only.is_empty() || only.contains(name))
        .flat_map(|(name, i)| {
            [
                (Role::Keycloak, i.keycloak_host.clone()),
                (Role::Kheops, i.kheops_host.clone()),
            ]
            .map(|(role, host)| HostTarget {
                install: name.clone(),
                role,
                host,
            })
        })
        .collect())
}

/// A call that failed, explained as kctl explains errors elsewhere (message and hint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallError {
    /// `connect`, `Facts`, `ListCertificates`, `ContainerStatus` or `ListOperations`.
    pub call: String,
    pub message: String,
    pub hint: Option<String>,
}

impl CallError {
    pub fn new(call: &str, e: &Error) -> CallError {
        CallError {
            call: call.to_string(),
            message: format!("{:#}", e.error),
            hint: e.hint.clone(),
        }
    }
}

/// What one host answered; `None` where the call failed or was not made (see `errors`).
#[derive(Clone, Debug, PartialEq)]
pub struct HostStatus {
    pub target: HostTarget,
    pub facts: Option<v1::FactsReply>,
    pub certificates: Option<Vec<v1::CertificateStatus>>,
    pub containers: Option<Vec<v1::ContainerInfo>>,
    pub operations: Option<Vec<v1::OperationSummary>>,
    pub errors: Vec<CallError>,
}

impl HostStatus {
    /// A host that answered nothing.
    pub fn failed(target: HostTarget, error: CallError) -> HostStatus {
        HostStatus {
            target,
            facts: None,
            certificates: None,
            containers: None,
            operations: None,
            errors: vec![error],
        }
    }
}

/// The certificate with the fewest days left (one never issued counts as fewest).
pub fn soonest_certificate(certs: &[v1::CertificateStatus]) -> Option<&v1::CertificateStatus> {
    certs.iter().min_by(|a, b| {
        let days =
            |c: &v1::CertificateStatus| c.not_after.map_or(f64::NEG_INFINITY, |_| c.days_left);
        days(a).total_cmp(&days(b))
    })
}

/// Running, and healthy or without a health check.
pub fn container_ok(c: &v1::ContainerInfo) -> bool {
    c.state == "running" && (c.health.is_empty() || c.health == "healthy")
}

/// `(ok, total)` managed containers.
pub fn container_counts(cs: &[v1::ContainerInfo]) -> (usize, usize) {
    (cs.iter().filter(|c| container_ok(c)).count(), cs.len())
}

/// The newest operation that was not a dry run (the agent lists newest first).
pub fn last_operation(ops: &[v1::OperationSummary]) -> Option<&v1::OperationSummary> {
    ops.iter().find(|o| !o.dry_run)
}

pub fn op_state(op: &v1::OperationSummary) -> v1::OperationState {
    v1::OperationState::try_from(op.state).unwrap_or(v1::OperationState::Unspecified)
}

/// Seconds since the operation finished (or started, while it runs).
pub fn op_age(op: &v1::OperationSummary, now: OffsetDateTime) -> Option<i64> {
    let t = crate::output::from_proto(op.finished.as_ref().or(op.started.as_ref()))?;
    Some((now - t).whole_seconds().max(0))
}

/// Why the host is failing, one line each; empty when it is healthy.
pub fn problems(s: &HostStatus) -> Vec<String> {
    let mut out: Vec<String> = s
        .errors
        .iter()
        .map(|e| match e.call.as_str() {
            "connect" => e.message.clone(),
            call => format!("{call}: {}", e.message),
        })
        .collect();
    if let Some(f) = &s.facts {
        if f.api_version != kagent_proto::API_VERSION {
            out.push(format!(
                "agent API {:?}, this kctl speaks {}",
                f.api_version,
                kagent_proto::API_VERSION
            ));
        }
        match &f.docker {
            Some(d) if d.running => {}
            Some(d) if !d.installed => out.push("Docker is not installed".into()),
            Some(d) if !d.error.is_empty() => {
                out.push(format!("Docker is not running: {}", d.error))
            }
            _ => out.push("Docker is not running".into()),
        }
    }
    for c in s.certificates.iter().flatten() {
        if c.not_after.is_none() {
            let why = if c.last_error.is_empty() {
                String::new()
            } else {
                format!(": {}", c.last_error)
            };
            out.push(format!("certificate {} was never issued{why}", c.name));
        } else if c.days_left < CERT_MIN_DAYS {
            out.push(format!(
                "certificate {} has {:.1} days left (less than {CERT_MIN_DAYS})",
                c.name, c.days_left
            ));
        }
    }
    for c in s.containers.iter().flatten().filter(|c| !container_ok(c)) {
        let health = if c.health.is_empty() {
            String::new()
        } else {
            format!(", {}", c.health)
        };
        out.push(format!("container {} is {}{health}", c.name, c.state));
    }
    if let Some(op) = s.operations.as_deref().and_then(last_operation) {
        let state = op_state(op);
        if matches!(
            state,
            v1::OperationState::Failed | v1::OperationState::Interrupted
        ) {
            let why = if op.error.is_empty() {
                String::new()
            } else {
                format!(": {}", op.error.lines().next().unwrap_or_default())
            };
            out.push(format!(
                "last operation {} {}{why}",
                op.operation_id,
                state.word()
            ));
        }
    }
    out
}

/// How many hosts `kctl fleet renew` renews at once by default.
pub const DEFAULT_RENEW_CONCURRENCY: u16 = 4;

/// One host to renew, with the installs it belongs to (a host in several installs is renewed
/// once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenewTarget {
    pub installs: Vec<String>,
    pub host: Target,
}

/// The hosts of `targets`, each once, in order.
pub fn renew_targets(targets: &[HostTarget]) -> Vec<RenewTarget> {
    let mut out: Vec<RenewTarget> = Vec::new();
    for t in targets {
        match out.iter_mut().find(|r| r.host == t.host) {
            Some(r) if !r.installs.contains(&t.install) => r.installs.push(t.install.clone()),
            Some(_) => {}
            None => out.push(RenewTarget {
                installs: vec![t.install.clone()],
                host: t.host.clone(),
            }),
        }
    }
    out
}

/// How one host's renewal ended.
#[derive(Clone, Debug, PartialEq)]
pub enum RenewOutcome {
    /// The operation ran to its end (in any state).
    Finished {
        operation_id: String,
        finished: v1::OperationFinished,
    },
    /// The agent manages no certificate: nothing to renew (not a failure).
    NoCertificates,
    /// kctl could not connect, or the call or its stream failed.
    Error(CallError),
}

#[derive(Clone, Debug, PartialEq)]
pub struct RenewRow {
    pub target: RenewTarget,
    pub outcome: RenewOutcome,
}

impl RenewRow {
    /// The operation succeeded with no failed certificate, or there was nothing to renew.
    pub fn ok(&self) -> bool {
        match &self.outcome {
            RenewOutcome::Finished { finished, .. } => {
                finished.state == v1::OperationState::Succeeded as i32
                    && finished.counts.as_ref().is_none_or(|c| c.failed == 0)
            }
            RenewOutcome::NoCertificates => true,
            RenewOutcome::Error(_) => false,
        }
    }

    /// `(renewed, unchanged, failed)` certificates: renewed are the planned creates and
    /// updates, failed also counts changes not attempted.
    pub fn counts(&self) -> Option<(u32, u32, u32)> {
        match &self.outcome {
            RenewOutcome::Finished { finished, .. } => {
                let c = finished.counts.unwrap_or_default();
                Some((c.create + c.update, c.unchanged, c.failed + c.skipped))
            }
            _ => None,
        }
    }

    /// `succeeded`, `failed`, `interrupted`, `no certificates` or `error`.
    pub fn result(&self) -> String {
        match &self.outcome {
            RenewOutcome::Finished { finished, .. } => {
                let state = v1::OperationState::try_from(finished.state)
                    .unwrap_or(v1::OperationState::Unspecified);
                if state == v1::OperationState::Succeeded && !self.ok() {
                    "failed".into()
                } else {
                    state.word().to_string()
                }
            }
            RenewOutcome::NoCertificates => "no certificates".into(),
            RenewOutcome::Error(_) => "error".into(),
        }
    }
}

/// Runs `f` on every item, at most `concurrency` at once, in this task (the futures need not
/// be `Send`); the results in the items' order. Items start in order as permits free up.
pub async fn bounded<T, R, F, Fut>(items: Vec<T>, concurrency: usize, f: F) -> Vec<R>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = R>,
{
    let permits = tokio::sync::Semaphore::new(concurrency.max(1));
    let permits = &permits;
    let mut futures: Vec<_> = items
        .into_iter()
        .map(|item| {
            let fut = f(item);
            Box::pin(async move {
                // The semaphore is never closed: acquiring only waits.
                let _permit = permits.acquire().await;
                fut.await
            })
        })
        .collect();
    let mut out: Vec<Option<R>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (fut, slot) in futures.iter_mut().zip(out.iter_mut()) {
            if slot.is_none()
                && let std::task::Poll::Ready(r) = fut.as_mut().poll(cx)
            {
                *slot = Some(r);
            }
        }
        if out.iter().all(Option::is_some) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    pub fn target(install: &str, role: Role, host: &str) -> HostTarget {
        HostTarget {
            install: install.into(),
            role,
            host: host.parse().unwrap_or(Target {
                host: host.into(),
                port: 7443,
            }),
        }
    }

    pub fn healthy(now: i64) -> HostStatus {
        HostStatus {
            target: target("prod", Role::Keycloak, "kc.example.org"),
            facts: Some(v1::FactsReply {
                agent_version: "0.3.1".into(),
                api_version: "kagent.v1".into(),
                os: Some(v1::OsFacts {
                    id: "rocky".into(),
                    version_id: "9.4".into(),
                    pretty_name: "Rocky Linux 9.4 (Blue Onyx)".into(),
                    ..Default::default()
                }),
                docker: Some(v1::DockerFacts {
                    installed: true,
                    running: true,
                    version: "27.3.1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            certificates: Some(vec![
                v1::CertificateStatus {
                    name: "keycloak".into(),
                    not_after: ts(now + 60 * 86_400),
                    days_left: 60.0,
                    ..Default::default()
                },
                v1::CertificateStatus {
                    name: "internal".into(),
                    not_after: ts(now + 20 * 86_400),
                    days_left: 20.4,
                    ..Default::default()
                },
            ]),
            containers: Some(vec![
                v1::ContainerInfo {
                    name: "keycloak".into(),
                    state: "running".into(),
                    health: "healthy".into(),
                    ..Default::default()
                },
                v1::ContainerInfo {
                    name: "db".into(),
                    state: "running".into(),
                    ..Default::default()
                },
            ]),
            operations: Some(vec![
                v1::OperationSummary {
                    operation_id: "op-dry".into(),
                    state: v1::OperationState::Failed as i32,
                    dry_run: true,
                    started: ts(now - 10),
                    finished: ts(now - 9),
                    ..Default::default()
                },
                v1::OperationSummary {
                    operation_id: "op-1".into(),
                    state: v1::OperationState::Succeeded as i32,
                    started: ts(now - 7300),
                    finished: ts(now - 7200),
                    ..Default::default()
                },
            ]),
            errors: Vec::new(),
        }
    }

    #[test]
    fn a_healthy_host_has_no_problems_and_dry_runs_do_not_count() {
        let s = healthy(1_800_000_000);
        assert_eq!(problems(&s), Vec::<String>::new());
        let certs = s.certificates.as_deref().unwrap_or_default();
        assert_eq!(
            soonest_certificate(certs).map(|c| c.name.as_str()),
            Some("internal")
        );
        assert_eq!(
            container_counts(s.containers.as_deref().unwrap_or_default()),
            (2, 2)
        );
        let ops = s.operations.as_deref().unwrap_or_default();
        assert_eq!(
            last_operation(ops).map(|o| o.operation_id.as_str()),
            Some("op-1")
        );
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).ok();
        assert_eq!(now.and_then(|n| op_age(&ops[1], n)), Some(7200));
    }

    #[test]
    fn each_rule_makes_the_host_fail_with_its_reason() {
        let now = 1_800_000_000;
        type Change = Box<dyn Fn(&mut HostStatus)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "certificate internal has 13.9 days left (less than 14)",
                Box::new(|s| {
                    if let Some(c) = s.certificates.as_mut() {
                        c[1].days_left = 13.9;
                    }
                }),
            ),
            (
                "certificate keycloak was never issued: rate limited",
                Box::new(|s| {
                    if let Some(c) = s.certificates.as_mut() {
                        c[0].not_after = None;
                        c[0].last_error = "rate limited".into();
                    }
                }),
            ),
            (
                "container keycloak is running, unhealthy",
                Box::new(|s| {
                    if let Some(c) = s.containers.as_mut() {
                        c[0].health = "unhealthy".into();
                    }
                }),
            ),
            (
                "container db is exited",
                Box::new(|s| {
                    if let Some(c) = s.containers.as_mut() {
                        c[1].state = "exited".into();
                    }
                }),
            ),
            (
                "container keycloak is running, starting",
                Box::new(|s| {
                    if let Some(c) = s.containers.as_mut() {
                        c[0].health = "starting".into();
                    }
                }),
            ),
            (
                "last operation op-1 failed: file/conf: permission denied",
                Box::new(|s| {
                    if let Some(o) = s.operations.as_mut() {
                        o[1].state = v1::OperationState::Failed as i32;
                        o[1].error = "file/conf: permission denied\nmore".into();
                    }
                }),
            ),
            (
                "last operation op-1 interrupted",
                Box::new(|s| {
                    if let Some(o) = s.operations.as_mut() {
                        o[1].state = v1::OperationState::Interrupted as i32;
                    }
                }),
            ),
            (
                "Docker is not running: permission denied",
                Box::new(|s| {
                    if let Some(f) = s.facts.as_mut() {
                        f.docker = Some(v1::DockerFacts {
                            installed: true,
                            error: "permission denied".into(),
                            ..Default::default()
                        });
                    }
                }),
            ),
            (
                "agent API \"kagent.v2\", this kctl speaks kagent.v1",
                Box::new(|s| {
                    if let Some(f) = s.facts.as_mut() {
                        f.api_version = "kagent.v2".into();
                    }
                }),
            ),
            (
                "ContainerStatus: the engine is gone",
                Box::new(|s| {
                    s.containers = None;
                    s.errors.push(CallError {
                        call: "ContainerStatus".into(),
                        message: "the engine is gone".into(),
                        hint: None,
                    });
                }),
            ),
        ];
        for (want, change) in cases {
            let mut s = healthy(now);
            change(&mut s);
            assert_eq!(problems(&s), vec![want.to_string()]);
        }
        // A running operation and a missing one are not failures.
        let mut s = healthy(now);
        if let Some(o) = s.operations.as_mut() {
            o[1].state = v1::OperationState::Running as i32;
        }
        assert!(problems(&s).is_empty());
        s.operations = Some(Vec::new());
        s.certificates = Some(Vec::new());
        s.containers = Some(Vec::new());
        assert!(problems(&s).is_empty());
    }

    #[test]
    fn targets_follow_the_inventory_and_unknown_installs_are_refused() -> anyhow::Result<()> {
        let text = "[install.b]\nkeycloak_host = \"kc-b\"\nkheops_host = \"kh-b:7444\"\n\
                    keycloak_domain = \"b\"\nkheops_domain = \"b\"\n\
                    [install.a]\nkeycloak_host = \"kc-a\"\nkheops_host = \"kh-a\"\n\
                    keycloak_domain = \"a\"\nkheops_domain = \"a\"\n";
        let inv = Inventory {
            path: "inv.toml".into(),
            installs: crate::inventory::parse(
                "inv.toml",
                Some(text),
                std::path::Path::new("/"),
                Vec::new(),
            )
            .map_err(|e| anyhow::anyhow!(e.render()))?,
        };
        let all = targets(&inv, &[]).map_err(|e| anyhow::anyhow!(e.render()))?;
        let names: Vec<String> = all
            .iter()
            .map(|t| format!("{} {} {}", t.install, t.role.name(), t.host))
            .collect();
        assert_eq!(
            names,
            [
                "a keycloak kc-a:7443",
                "a kheops kh-a:7443",
                "b keycloak kc-b:7443",
                "b kheops kh-b:7444"
            ]
        );
        let only = targets(&inv, &["b".into()]).map_err(|e| anyhow::anyhow!(e.render()))?;
        assert_eq!(only.len(), 2);
        let e = targets(&inv, &["c".into()])
            .err()
            .map(|e| e.render())
            .unwrap_or_default();
        assert!(
            e.contains("no install `c`") && e.contains("known installs: a, b"),
            "{e}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn bounded_runs_at_most_n_at_once_and_keeps_the_order() {
        use std::cell::Cell;
        let in_flight = Cell::new(0usize);
        let peak = Cell::new(0usize);
        let items: Vec<u64> = (0..9).collect();
        let out = bounded(items, 3, |i| {
            let (f, p) = (&in_flight, &peak);
            async move {
                f.set(f.get() + 1);
                p.set(p.get().max(f.get()));
                // Later items finish first: the order of results is the items' anyway.
                tokio::time::sleep(std::time::Duration::from_millis(20 - 2 * i)).await;
                f.set(f.get() - 1);
                i * 10
            }
        })
        .await;
        assert_eq!(out, (0..9).map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(peak.get(), 3);
        assert_eq!(in_flight.get(), 0);
        // One at a time is one at a time.
        let peak1 = Cell::new(0usize);
        let now = Cell::new(0usize);
        bounded(vec![1, 2, 3], 1, |_| async {
            now.set(now.get() + 1);
            peak1.set(peak1.get().max(now.get()));
            tokio::task::yield_now().await;
            now.set(now.get() - 1);
        })
        .await;
        assert_eq!(peak1.get(), 1);
        assert!(bounded(Vec::<u8>::new(), 4, |_| async {}).await.is_empty());
    }

    #[test]
    fn a_host_in_several_installs_is_renewed_once() {
        let t = |install: &str, role, host: &str| target(install, role, host);
        let targets = [
            t("one", Role::Keycloak, "a"),
            t("one", Role::Kheops, "b"),
            t("two", Role::Keycloak, "b"),
            t("two", Role::Kheops, "c"),
        ];
        let r = renew_targets(&targets);
        let got: Vec<(String, Vec<String>)> = r
            .iter()
            .map(|r| (r.host.host.clone(), r.installs.clone()))
            .collect();
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            [
                ("a".to_string(), v(&["one"])),
                ("b".to_string(), v(&["one", "two"])),
                ("c".to_string(), v(&["two"])),
            ]
        );
    }

    #[test]
    fn a_renewal_fails_on_a_failed_operation_a_failed_certificate_or_an_error() {
        let target = RenewTarget {
            installs: vec!["one".into()],
            host: target("one", Role::Keycloak, "a").host,
        };
        let row = |state: v1::OperationState, failed: u32| RenewRow {
            target: target.clone(),
            outcome: RenewOutcome::Finished {
                operation_id: "op".into(),
                finished: v1::OperationFinished {
                    state: state as i32,
                    counts: Some(v1::Counts {
                        update: 2,
                        unchanged: 1,
                        failed,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            },
        };
        let ok = row(v1::OperationState::Succeeded, 0);
        assert!(ok.ok());
        assert_eq!(ok.counts(), Some((2, 1, 0)));
        assert_eq!(ok.result(), "succeeded");
        assert!(!row(v1::OperationState::Failed, 1).ok());
        assert_eq!(row(v1::OperationState::Failed, 1).result(), "failed");
        assert!(!row(v1::OperationState::Succeeded, 1).ok());
        assert_eq!(row(v1::OperationState::Succeeded, 1).result(), "failed");
        let none = RenewRow {
            target: target.clone(),
            outcome: RenewOutcome::NoCertificates,
        };
        assert!(none.ok() && none.counts().is_none());
        let err = RenewRow {
            target,
            outcome: RenewOutcome::Error(CallError {
                call: "connect".into(),
                message: "cannot connect".into(),
                hint: None,
            }),
        };
        assert!(!err.ok());
        assert_eq!(err.result(), "error");
    }
}
