//! `kctl ps`: the managed containers of a host, as a table or JSON.

use kagent_proto::v1;
use serde_json::json;
use time::OffsetDateTime;

use super::{Table, from_proto, proto_timestamp_json, truncate};

/// `NAME  STACK  STATE  HEALTH  RESTARTS  UP  IMAGE  PORTS`, sorted as the agent sent them.
pub fn containers_human(containers: &[v1::ContainerInfo], now: OffsetDateTime) -> String {
    if containers.is_empty() {
        return "no managed containers on this host\n".to_string();
    }
    let mut t = Table::new([
        "NAME", "STACK", "STATE", "HEALTH", "RESTARTS", "UP", "IMAGE", "PORTS",
    ]);
    for c in containers {
        let up = match (c.state.as_str(), from_proto(c.started_at.as_ref())) {
            ("running", Some(started)) => age((now - started).whole_seconds()),
            ("exited", _) => format!("exit {}", c.exit_code),
            _ => "-".to_string(),
        };
        t.row([
            c.name.clone(),
            c.stack.clone(),
            c.state.clone(),
            if c.health.is_empty() {
                "-".into()
            } else {
                c.health.clone()
            },
            c.restarts.to_string(),
            up,
            truncate(&c.image, 40),
            c.ports.join(", "),
        ]);
    }
    t.render()
}

/// A duration in seconds for a table: `45s`, `12m`, `5h`, `3d`.
pub(super) fn age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

pub fn container_json(c: &v1::ContainerInfo) -> serde_json::Value {
    json!({
        "name": c.name,
        "id": c.id,
        "stack": c.stack,
        "resource": c.resource,
        "state": c.state,
        "health": c.health,
        "last_health_output": c.last_health_output,
        "restarts": c.restarts,
        "started_at": proto_timestamp_json(c.started_at.as_ref()),
        "exit_code": c.exit_code,
        "image": c.image,
        "image_id": c.image_id,
        "spec_hash": c.spec_hash,
        "ports": c.ports,
    })
}

pub fn containers_json(containers: &[v1::ContainerInfo]) -> serde_json::Value {
    json!({ "containers": containers.iter().map(container_json).collect::<Vec<_>>() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_row_per_container() {
        let now =
            OffsetDateTime::from_unix_timestamp(1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let c = v1::ContainerInfo {
            name: "web".into(),
            stack: "kheops".into(),
            state: "running".into(),
            health: "healthy".into(),
            restarts: 2,
            started_at: Some(prost_types::Timestamp {
                seconds: 1_000_000 - 7200,
                nanos: 0,
            }),
            image: "local/busybox:test".into(),
            ports: vec!["127.0.0.1:8080->80/tcp".into()],
            ..Default::default()
        };
        let text = containers_human(std::slice::from_ref(&c), now);
        assert!(text.starts_with("NAME"), "{text}");
        assert!(
            text.contains("web   kheops  running  healthy  2         2h  local/busybox:test  127.0.0.1:8080->80/tcp"),
            "{text}"
        );
        assert_eq!(containers_json(&[c])["containers"][0]["restarts"], 2);
        assert_eq!(
            containers_human(&[], now),
            "no managed containers on this host\n"
        );
    }
}
