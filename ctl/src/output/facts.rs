//! `kctl facts HOST`: the agent's `FactsReply` as a key/value table or one JSON document.

use kagent_proto::v1;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{Table, bytes, from_proto, proto_timestamp, proto_timestamp_json};

/// Clock skew above which the facts table flags the agent's clock.
const SKEW_WARN_SECONDS: f64 = 5.0;

/// The facts as a two-column table. `now` is this machine's clock, to show the skew.
pub fn facts_human(f: &v1::FactsReply, now: OffsetDateTime) -> String {
    let mut t = Table::headless();
    t.row(["hostname", &f.hostname]);
    let os = match &f.os {
        Some(os) => {
            let mut s = format!("{} {}", os.id, os.version_id);
            if !os.id_like.is_empty() {
                s.push_str(&format!(", like {}", os.id_like.join(" ")));
            }
            if !os.pretty_name.is_empty() {
                s = format!("{}: {s}", os.pretty_name);
            }
            s
        }
        None => "-".to_string(),
    };
    t.row(["os", os.trim()]);
    t.row(["kernel", &format!("{} ({})", f.kernel, f.arch)]);
    t.row(["cpus", &f.cpus.to_string()]);
    t.row([
        "memory",
        &format!(
            "{} total, {} available",
            bytes(f.memory_total_bytes),
            bytes(f.memory_available_bytes)
        ),
    ]);
    t.row(["state dir free", &bytes(f.state_dir_free_bytes)]);
    let docker = match &f.docker {
        None => "-".to_string(),
        Some(d) if !d.installed => "not installed".to_string(),
        Some(d) if d.running => format!("{} (API {}), running", d.version, d.api_version),
        Some(d) if d.error.is_empty() => "installed, not running".to_string(),
        Some(d) => format!("installed, not running: {}", d.error),
    };
    t.row(["docker", &docker]);
    let clock = match from_proto(f.clock.as_ref()) {
        Some(agent) => {
            let skew = (agent - now).as_seconds_f64();
            let mut s = format!("{} (skew {skew:+.1} s)", proto_timestamp(f.clock.as_ref()));
            if skew.abs() > SKEW_WARN_SECONDS {
                s.push_str(" <- check NTP on the host: TLS and ACME need a correct clock");
            }
            s
        }
        None => "-".to_string(),
    };
    t.row(["clock", &clock]);
    let mut agent = format!("kagent {}, API {}", f.agent_version, f.api_version);
    if f.api_version != kagent_proto::API_VERSION {
        agent.push_str(&format!(
            " <- this kctl speaks {}",
            kagent_proto::API_VERSION
        ));
    }
    t.row(["agent", &agent]);
    t.render()
}

/// The facts as one JSON document, with the proto's field names.
pub fn facts_json(f: &v1::FactsReply) -> Value {
    let os = f.os.clone().unwrap_or_default();
    let docker = f.docker.clone().unwrap_or_default();
    json!({
        "os": {
            "id": os.id,
            "id_like": os.id_like,
            "version_id": os.version_id,
            "pretty_name": os.pretty_name,
        },
        "kernel": f.kernel,
        "arch": f.arch,
        "hostname": f.hostname,
        "cpus": f.cpus,
        "memory_total_bytes": f.memory_total_bytes,
        "memory_available_bytes": f.memory_available_bytes,
        "state_dir_free_bytes": f.state_dir_free_bytes,
        "docker": {
            "installed": docker.installed,
            "running": docker.running,
            "version": docker.version,
            "api_version": docker.api_version,
            "error": docker.error,
        },
        "clock": proto_timestamp_json(f.clock.as_ref()),
        "agent_version": f.agent_version,
        "api_version": f.api_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> v1::FactsReply {
        v1::FactsReply {
            os: Some(v1::OsFacts {
                id: "rocky".into(),
                id_like: vec!["rhel".into(), "centos".into(), "fedora".into()],
                version_id: "9.4".into(),
                pretty_name: "Rocky Linux 9.4 (Blue Onyx)".into(),
            }),
            kernel: "5.14.0-427.el9.x86_64".into(),
            arch: "x86_64".into(),
            hostname: "vm1".into(),
            cpus: 4,
            memory_total_bytes: 8 * 1024 * 1024 * 1024,
            memory_available_bytes: 6 * 1024 * 1024 * 1024,
            state_dir_free_bytes: 40 * 1024 * 1024 * 1024,
            docker: Some(v1::DockerFacts {
                installed: true,
                running: false,
                version: String::new(),
                api_version: String::new(),
                error: "permission denied on /var/run/docker.sock".into(),
            }),
            clock: Some(prost_types::Timestamp {
                seconds: 1_777_627_800,
                nanos: 0,
            }),
            agent_version: "0.1.0".into(),
            api_version: "kagent.v1".into(),
        }
    }

    #[test]
    fn human_table() -> anyhow::Result<()> {
        let now = OffsetDateTime::from_unix_timestamp(1_777_627_799)?;
        assert_eq!(
            facts_human(&sample(), now),
            "\
hostname        vm1
os              Rocky Linux 9.4 (Blue Onyx): rocky 9.4, like rhel centos fedora
kernel          5.14.0-427.el9.x86_64 (x86_64)
cpus            4
memory          8.0 GiB total, 6.0 GiB available
state dir free  40.0 GiB
docker          installed, not running: permission denied on /var/run/docker.sock
clock           2026-05-01T09:30:00Z (skew +1.0 s)
agent           kagent 0.1.0, API kagent.v1
"
        );
        Ok(())
    }

    #[test]
    fn skew_and_version_mismatch_are_flagged() -> anyhow::Result<()> {
        let mut f = sample();
        f.api_version = "kagent.v2".into();
        let now = OffsetDateTime::from_unix_timestamp(1_777_627_700)?;
        let text = facts_human(&f, now);
        assert!(text.contains("(skew +100.0 s) <- check NTP"), "{text}");
        assert!(text.contains("<- this kctl speaks kagent.v1"), "{text}");
        Ok(())
    }

    #[test]
    fn json_document() {
        let v = facts_json(&sample());
        assert_eq!(v["os"]["id_like"][0], "rhel");
        assert_eq!(v["docker"]["running"], false);
        assert_eq!(v["clock"], "2026-05-01T09:30:00Z");
        assert_eq!(v["cpus"], 4);
    }
}
