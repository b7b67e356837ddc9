//! Facts about the host: what a plan or a preflight check needs to know before acting.
//! Read-only; every source that fails yields an empty value rather than an error, because a
//! partial answer is more useful to an operator than none.

use std::path::Path;
use std::time::Duration;

use kagent_proto::v1;

/// Gathers the facts. `state_dir` is where free space matters most (journal, certificates).
pub async fn gather(state_dir: &Path) -> v1::FactsReply {
    let uts = nix::sys::utsname::uname().ok();
    let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uts.as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let free = nix::sys::statvfs::statvfs(state_dir)
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or(0);
    v1::FactsReply {
        os: Some(os_release(
            &std::fs::read_to_string("/etc/os-release").unwrap_or_default(),
        )),
        kernel: field(|u| u.release()),
        arch: field(|u| u.machine()),
        hostname: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(0),
        memory_total_bytes: meminfo_kib(&meminfo, "MemTotal") * 1024,
        memory_available_bytes: meminfo_kib(&meminfo, "MemAvailable") * 1024,
        state_dir_free_bytes: free,
        docker: Some(docker().await),
        clock: Some(crate::time::now()),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        api_version: kagent_proto::API_VERSION.into(),
    }
}

/// Parses `/etc/os-release` (shell-style `KEY=value`, values optionally quoted).
pub fn os_release(text: &str) -> v1::OsFacts {
    let mut os = v1::OsFacts::default();
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        let value = value
            .trim()
            .trim_matches(|c| c == '"' || c == '\'')
            .to_string();
        match key.trim() {
            "ID" => os.id = value,
            "ID_LIKE" => os.id_like = value.split_whitespace().map(str::to_owned).collect(),
            "VERSION_ID" => os.version_id = value,
            "PRETTY_NAME" => os.pretty_name = value,
            _ => {}
        }
    }
    os
}

fn meminfo_kib(meminfo: &str, key: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Whether dockerd is installed (on PATH) and answers on its socket (`DOCKER_HOST` honoured).
async fn docker() -> v1::DockerFacts {
    let installed = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join("dockerd").is_file()))
        .unwrap_or(false);
    let mut facts = v1::DockerFacts {
        installed,
        ..Default::default()
    };
    let client = match bollard::Docker::connect_with_defaults() {
        Ok(c) => c.with_timeout(Duration::from_secs(3)),
        Err(e) => {
            facts.error = e.to_string();
            return facts;
        }
    };
    // Debian's dockerd 20.10 refuses bollard's default API version; negotiate down first.
    let client =
        match tokio::time::timeout(Duration::from_secs(3), client.negotiate_version()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                facts.error = e.to_string();
                return facts;
            }
            Err(_) => {
                facts.error = "the Docker engine did not answer within 3 s".into();
                return facts;
            }
        };
    match client.version().await {
        Ok(v) => {
            facts.running = true;
            facts.version = v.version.unwrap_or_default();
            facts.api_version = v.api_version.unwrap_or_default();
        }
        Err(e) => facts.error = e.to_string(),
    }
    facts
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_os_release() {
        let os = super::os_release(
            "NAME=\"Rocky Linux\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\n\
             PRETTY_NAME=\"Rocky Linux 9.4 (Blue Onyx)\"\n# comment\n",
        );
        assert_eq!(os.id, "rocky");
        assert_eq!(os.id_like, ["rhel", "centos", "fedora"]);
        assert_eq!(os.version_id, "9.4");
        assert_eq!(os.pretty_name, "Rocky Linux 9.4 (Blue Onyx)");
    }

    #[test]
    fn reads_meminfo() {
        let m = "MemTotal:       24000000 kB\nMemFree: 1 kB\nMemAvailable:   12000 kB\n";
        assert_eq!(super::meminfo_kib(m, "MemTotal"), 24_000_000);
        assert_eq!(super::meminfo_kib(m, "MemAvailable"), 12_000);
        assert_eq!(super::meminfo_kib(m, "Nope"), 0);
    }
}
