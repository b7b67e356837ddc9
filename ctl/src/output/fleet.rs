//! `kctl fleet status`: one row per host, or one JSON document. The rules that make a host
//! failing live in [`crate::fleet`]; this only shows them.

use kagent_proto::v1;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::containers::age;
use super::{Table, proto_timestamp_json, truncate};
use crate::fleet::{self, HostStatus, RenewOutcome, RenewRow};

const PROBLEM_WIDTH: usize = 70;

fn os(f: &v1::FactsReply) -> String {
    match &f.os {
        Some(o) if !o.pretty_name.is_empty() => o.pretty_name.clone(),
        Some(o) if !o.id.is_empty() => format!("{} {}", o.id, o.version_id),
        _ => "-".into(),
    }
}

fn docker(f: &v1::FactsReply) -> String {
    match &f.docker {
        Some(d) if d.running => d.version.clone(),
        Some(d) if d.installed => "not running".into(),
        _ => "not installed".into(),
    }
}

fn cert_cell(certs: &[v1::CertificateStatus]) -> String {
    match fleet::soonest_certificate(certs) {
        None => "-".into(),
        Some(c) if c.not_after.is_none() => format!("{} not issued", c.name),
        Some(c) => format!("{} {:.0}d", c.name, c.days_left.floor()),
    }
}

fn last_op_cell(ops: &[v1::OperationSummary], now: OffsetDateTime) -> String {
    match fleet::last_operation(ops) {
        None => "-".into(),
        Some(op) => {
            let state = fleet::op_state(op);
            match fleet::op_age(op, now) {
                Some(a) if state == v1::OperationState::Running => {
                    format!("running {}", age(a))
                }
                Some(a) => format!("{} {} ago", state.word(), age(a)),
                None => state.word().to_string(),
            }
        }
    }
}

/// `INSTALL ROLE HOST AGENT OS DOCKER CERT CONTAINERS LAST-OP PROBLEMS`, then the full text and
/// hint of every failed call, then a summary line.
pub fn fleet_human(hosts: &[HostStatus], now: OffsetDateTime) -> String {
    if hosts.is_empty() {
        return "no installs in the inventory\n".into();
    }
    let mut t = Table::new([
        "INSTALL",
        "ROLE",
        "HOST",
        "AGENT",
        "OS",
        "DOCKER",
        "CERT",
        "CONTAINERS",
        "LAST-OP",
        "PROBLEMS",
    ]);
    let err = |what: bool| if what { "error" } else { "-" }.to_string();
    let mut failing = 0;
    for s in hosts {
        let problems = fleet::problems(s);
        if !problems.is_empty() {
            failing += 1;
        }
        let failed = |call: &str| s.errors.iter().any(|e| e.call == call);
        let (agent, os, docker) = match &s.facts {
            Some(f) if f.api_version == kagent_proto::API_VERSION => {
                (f.agent_version.clone(), self::os(f), self::docker(f))
            }
            Some(f) => (
                format!("{} ({})", f.agent_version, f.api_version),
                self::os(f),
                self::docker(f),
            ),
            None => (err(!s.errors.is_empty()), "-".into(), "-".into()),
        };
        let certs = s
            .certificates
            .as_deref()
            .map(cert_cell)
            .unwrap_or_else(|| err(failed("ListCertificates")));
        let containers = match s.containers.as_deref() {
            Some([]) => "-".to_string(),
            Some(cs) => {
                let (ok, total) = fleet::container_counts(cs);
                format!("{ok}/{total}")
            }
            None => err(failed("ContainerStatus")),
        };
        let last_op = s
            .operations
            .as_deref()
            .map(|o| last_op_cell(o, now))
            .unwrap_or_else(|| err(failed("ListOperations")));
        t.row([
            s.target.install.clone(),
            s.target.role.name().to_string(),
            s.target.host.to_string(),
            agent,
            os,
            docker,
            certs,
            containers,
            last_op,
            truncate(&problems.join("; "), PROBLEM_WIDTH),
        ]);
    }
    let mut out = t.render();
    for s in hosts {
        for e in &s.errors {
            let call = if e.call == "connect" {
                String::new()
            } else {
                format!("{}: ", e.call)
            };
            out.push_str(&format!(
                "\n{} {} {}: {call}{}\n",
                s.target.install,
                s.target.role.name(),
                s.target.host,
                e.message
            ));
            if let Some(h) = &e.hint {
                out.push_str(&format!("  hint: {h}\n"));
            }
        }
    }
    out.push_str(&format!(
        "\n{} of {} hosts ok{}\n",
        hosts.len() - failing,
        hosts.len(),
        if failing > 0 {
            format!(", {failing} failing")
        } else {
            String::new()
        }
    ));
    out
}

/// `{"ok": bool, "hosts": [...]}`, one object per host with what it answered, its problems and
/// its failed calls.
pub fn fleet_json(hosts: &[HostStatus], now: OffsetDateTime) -> Value {
    let list: Vec<Value> = hosts
        .iter()
        .map(|s| {
            let problems = fleet::problems(s);
            let facts = s.facts.as_ref().map(|f| {
                let d = f.docker.clone().unwrap_or_default();
                json!({
                    "agent_version": f.agent_version,
                    "api_version": f.api_version,
                    "hostname": f.hostname,
                    "os": os(f),
                    "docker": {"installed": d.installed, "running": d.running, "version": d.version},
                })
            });
            let certs = s.certificates.as_deref().map(|cs| {
                json!({
                    "count": cs.len(),
                    "soonest": fleet::soonest_certificate(cs).map(|c| json!({
                        "name": c.name,
                        "days_left": c.not_after.map(|_| c.days_left),
                    })),
                })
            });
            let containers = s.containers.as_deref().map(|cs| {
                let (ok, total) = fleet::container_counts(cs);
                json!({
                    "healthy": ok,
                    "total": total,
                    "not_healthy": cs.iter().filter(|c| !fleet::container_ok(c)).map(|c| &c.name).collect::<Vec<_>>(),
                })
            });
            let last_op = s.operations.as_deref().map(|ops| {
                fleet::last_operation(ops).map(|op| {
                    json!({
                        "operation_id": op.operation_id,
                        "state": fleet::op_state(op).word(),
                        "started": proto_timestamp_json(op.started.as_ref()),
                        "finished": proto_timestamp_json(op.finished.as_ref()),
                        "age_seconds": fleet::op_age(op, now),
                        "error": op.error,
                    })
                })
            });
            let errors: Vec<Value> = s
                .errors
                .iter()
                .map(|e| json!({"call": e.call, "message": e.message, "hint": e.hint}))
                .collect();
            json!({
                "install": s.target.install,
                "role": s.target.role.name(),
                "host": s.target.host.to_string(),
                "ok": problems.is_empty(),
                "problems": problems,
                "errors": errors,
                "facts": facts,
                "certificates": certs,
                "containers": containers,
                "last_operation": last_op,
            })
        })
        .collect();
    let ok = hosts.iter().all(|s| fleet::problems(s).is_empty());
    json!({ "ok": ok, "hosts": list })
}

/// `HOST INSTALLS RESULT RENEWED UNCHANGED FAILED OPERATION`, then the error and hint of every
/// host that could not be renewed, then a summary line.
pub fn fleet_renew_human(rows: &[RenewRow]) -> String {
    if rows.is_empty() {
        return "no installs in the inventory\n".into();
    }
    let mut t = Table::new([
        "HOST",
        "INSTALLS",
        "RESULT",
        "RENEWED",
        "UNCHANGED",
        "FAILED",
        "OPERATION",
    ]);
    for r in rows {
        let (renewed, unchanged, failed) = match r.counts() {
            Some((a, b, c)) => (a.to_string(), b.to_string(), c.to_string()),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let op = match &r.outcome {
            RenewOutcome::Finished { operation_id, .. } => operation_id.clone(),
            _ => "-".into(),
        };
        t.row([
            r.target.host.to_string(),
            r.target.installs.join(","),
            r.result(),
            renewed,
            unchanged,
            failed,
            op,
        ]);
    }
    let mut out = t.render();
    for r in rows {
        let (message, hint) = match &r.outcome {
            RenewOutcome::Error(e) => {
                let call = if e.call == "connect" {
                    String::new()
                } else {
                    format!("{}: ", e.call)
                };
                (format!("{call}{}", e.message), e.hint.clone())
            }
            RenewOutcome::Finished { finished, .. } if !r.ok() && !finished.error.is_empty() => {
                (finished.error.clone(), None)
            }
            _ => continue,
        };
        out.push_str(&format!("\n{}: {message}\n", r.target.host));
        if let Some(h) = hint {
            out.push_str(&format!("  hint: {h}\n"));
        }
    }
    let failing = rows.iter().filter(|r| !r.ok()).count();
    out.push_str(&format!(
        "\n{} of {} hosts renewed{}\n",
        rows.len() - failing,
        rows.len(),
        if failing > 0 {
            format!(", {failing} failed")
        } else {
            String::new()
        }
    ));
    out
}

/// `{"type": "summary", "ok": bool, "hosts": [...]}`: the last JSON line of `fleet renew`.
pub fn fleet_renew_json(rows: &[RenewRow]) -> Value {
    let hosts: Vec<Value> = rows
        .iter()
        .map(|r| {
            let counts = r.counts().map(|(renewed, unchanged, failed)| {
                json!({"renewed": renewed, "unchanged": unchanged, "failed": failed})
            });
            let (operation_id, error) = match &r.outcome {
                RenewOutcome::Finished {
                    operation_id,
                    finished,
                } => (
                    json!(operation_id),
                    if finished.error.is_empty() {
                        Value::Null
                    } else {
                        json!({"message": finished.error})
                    },
                ),
                RenewOutcome::NoCertificates => (Value::Null, Value::Null),
                RenewOutcome::Error(e) => (
                    Value::Null,
                    json!({"call": e.call, "message": e.message, "hint": e.hint}),
                ),
            };
            json!({
                "host": r.target.host.to_string(),
                "installs": r.target.installs,
                "ok": r.ok(),
                "result": r.result(),
                "certificates": counts,
                "operation_id": operation_id,
                "error": error,
            })
        })
        .collect();
    json!({
        "type": "summary",
        "ok": rows.iter().all(RenewRow::ok),
        "hosts": hosts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::tests::{healthy, target};
    use crate::fleet::{CallError, Role};

    const NOW: i64 = 1_800_000_000;

    fn sample() -> Vec<HostStatus> {
        let ok = healthy(NOW);
        let mut bad = healthy(NOW);
        bad.target = target("prod", Role::Kheops, "kh.example.org:7444");
        if let Some(c) = bad.containers.as_mut() {
            c[0].health = "unhealthy".into();
        }
        bad.certificates = Some(Vec::new());
        bad.operations = Some(Vec::new());
        let gone = HostStatus::failed(
            target("lab", Role::Keycloak, "10.0.0.9:7443"),
            CallError {
                call: "connect".into(),
                message: "cannot connect to 10.0.0.9:7443: Connection refused".into(),
                hint: Some("is kagent running and listening on 10.0.0.9:7443?".into()),
            },
        );
        vec![ok, bad, gone]
    }

    #[test]
    fn one_row_per_host_with_errors_and_hints_below() -> anyhow::Result<()> {
        let now = OffsetDateTime::from_unix_timestamp(NOW)?;
        assert_eq!(
            fleet_human(&sample(), now),
            "\
INSTALL  ROLE      HOST                 AGENT  OS                           DOCKER  CERT          CONTAINERS  LAST-OP           PROBLEMS
prod     keycloak  kc.example.org:7443  0.3.1  Rocky Linux 9.4 (Blue Onyx)  27.3.1  internal 20d  2/2         succeeded 2h ago
prod     kheops    kh.example.org:7444  0.3.1  Rocky Linux 9.4 (Blue Onyx)  27.3.1  -             1/2         -                 container keycloak is running, unhealthy
lab      keycloak  10.0.0.9:7443        error  -                            -       -             -           -                 cannot connect to 10.0.0.9:7443: Connection refused

lab keycloak 10.0.0.9:7443: cannot connect to 10.0.0.9:7443: Connection refused
  hint: is kagent running and listening on 10.0.0.9:7443?

1 of 3 hosts ok, 2 failing
"
        );
        assert_eq!(fleet_human(&[], now), "no installs in the inventory\n");
        Ok(())
    }

    #[test]
    fn json_has_the_values_the_problems_and_the_errors() -> anyhow::Result<()> {
        let now = OffsetDateTime::from_unix_timestamp(NOW)?;
        let v = fleet_json(&sample(), now);
        assert_eq!(v["ok"], false);
        let h = &v["hosts"];
        assert_eq!(h[0]["ok"], true);
        assert_eq!(h[0]["facts"]["agent_version"], "0.3.1");
        assert_eq!(h[0]["facts"]["docker"]["version"], "27.3.1");
        assert_eq!(h[0]["certificates"]["soonest"]["name"], "internal");
        assert_eq!(h[0]["certificates"]["soonest"]["days_left"], 20.4);
        assert_eq!(h[0]["containers"]["healthy"], 2);
        assert_eq!(h[0]["last_operation"]["operation_id"], "op-1");
        assert_eq!(h[0]["last_operation"]["age_seconds"], 7200);
        assert_eq!(h[1]["ok"], false);
        assert_eq!(h[1]["containers"]["not_healthy"][0], "keycloak");
        assert_eq!(h[1]["last_operation"], Value::Null);
        assert_eq!(h[2]["facts"], Value::Null);
        assert_eq!(h[2]["errors"][0]["call"], "connect");
        assert!(
            h[2]["errors"][0]["hint"]
                .as_str()
                .is_some_and(|s| s.contains("is kagent running"))
        );
        assert_eq!(
            fleet_json(&sample()[..1], now)["ok"],
            true,
            "all healthy: ok"
        );
        Ok(())
    }

    #[test]
    fn cells_for_running_and_unissued() -> anyhow::Result<()> {
        let now = OffsetDateTime::from_unix_timestamp(NOW)?;
        let mut s = healthy(NOW);
        if let Some(o) = s.operations.as_mut() {
            o[1].state = v1::OperationState::Running as i32;
            o[1].finished = None;
            o[1].started = crate::fleet::tests::ts(NOW - 45);
        }
        if let Some(c) = s.certificates.as_mut() {
            c[0].not_after = None;
        }
        let text = fleet_human(&[s], now);
        assert!(text.contains("keycloak not issued"), "{text}");
        assert!(text.contains("running 45s"), "{text}");
        Ok(())
    }
}
