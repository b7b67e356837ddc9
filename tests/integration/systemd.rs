//! The shipped systemd unit and tmpfiles config pass systemd's own checks.

use std::process::Command;

use kagent_tests::*;

fn unit_text() -> String {
    std::fs::read_to_string(workspace_root().join("systemd/kagent.service"))
        .expect("read systemd/kagent.service")
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let bin = kagent_bin();
    let dir = tempfile::tempdir().unwrap();
    // Point ExecStart at the built binary so the check does not need an installed one.
    let text: String = unit_text()
        .lines()
        .map(|l| {
            if l.starts_with("ExecStart=") {
                format!(
                    "ExecStart={} --config /etc/kagent/kagent.toml\n",
                    bin.display()
                )
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let unit = dir.path().join("kagent.service");
    std::fs::write(&unit, &text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze not found: install Debian's `systemd` package (tests/run does)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // Warnings (unknown keys, bad values) do not change the exit code: none may name our unit.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("kagent.service"))
        .collect();
    assert!(
        ours.is_empty(),
        "systemd-analyze complains about the unit:\n{}",
        ours.join("\n")
    );
}

#[test]
fn unit_has_the_required_settings() {
    let text = unit_text();
    let settings: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    for want in [
        "Type=notify",
        "ExecStart=/usr/local/bin/kagent --config /etc/kagent/kagent.toml",
        "Restart=on-failure",
        "RestartSec=2s",
        "StateDirectory=kagent",
        "StateDirectoryMode=0700",
        "ConfigurationDirectory=kagent",
        "TimeoutStopSec=90s",
        "KillMode=mixed",
        "NoNewPrivileges=yes",
        "UMask=0077",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    ] {
        assert!(settings.contains(&want), "kagent.service lacks {want:?}");
    }
    for banned in [
        "ProtectSystem=strict",
        "ProtectSystem=full",
        "MemoryDenyWriteExecute=yes",
    ] {
        assert!(
            !settings.contains(&banned),
            "{banned} would break package installs"
        );
    }
}

#[test]
fn tmpfiles_config_creates_the_managed_roots() {
    let conf = workspace_root().join("systemd/kagent.tmpfiles.conf");
    let root = tempfile::tempdir().unwrap();
    let out = Command::new("systemd-tmpfiles")
        .arg("--create")
        .arg(format!("--root={}", root.path().display()))
        .arg(&conf)
        .output()
        .expect("systemd-tmpfiles not found: install Debian's `systemd` package");
    assert!(
        out.status.success(),
        "systemd-tmpfiles --create failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for d in ["etc/kagent/managed", "srv/kctl"] {
        assert!(
            root.path().join(d).is_dir(),
            "{d} not created by {}",
            conf.display()
        );
    }
}
