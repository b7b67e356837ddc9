//! Host prerequisites for real: the `docker` and `group_member` resources' own code (read ->
//! plan -> apply -> read back) against real package managers and account tools, pointed at
//! throwaway roots, never at this machine's /etc.
//!
//! - apt: a debootstrapped Debian bookworm (minbase, Debian's mirror), cached pristine under
//!   target/testroots/bookworm and copied per run; `source = distro` installs docker.io for real
//!   through `chroot ROOT apt-get`.
//! - dnf: Debian's dnf with `--installroot`, Docker's repository layout served from file://
//!   with small stand-in RPMs (docker-ce, containerd.io obsoleting runc, podman needing runc).
//! - usermod: `usermod --root` on a copy of account files.
//!
//! Docker's real EL repositories (download.docker.com) are not reachable from this machine;
//! their command sequences are checked as data in the agent's unit tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use kagent::host::target::Target;
use kagent::resource::{Progress, docker, group_member};
use kagent_proto::v1::{self, Action, DockerSource};

/// Collects progress reports, as the engine would turn them into events.
#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl Progress for Lines {
    fn report(&self, message: &str, _percent: Option<u32>) {
        self.0.lock().unwrap().push(message.to_string());
    }
}

impl Lines {
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

use kagent_tests::rootfs::{bookworm, copy_root, sh};

fn need(program: &str, package: &str) {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .any(|d: PathBuf| d.join(program).exists());
    assert!(
        found,
        "{program} is missing: apt-get install {package} (tests/run installs it)"
    );
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

fn history_programs(t: &Target) -> Vec<String> {
    t.runner()
        .history()
        .iter()
        .map(|argv| {
            // `chroot ROOT apt-get ...` counts as apt-get.
            if argv[0] == "chroot" {
                argv[2].clone()
            } else {
                argv[0].clone()
            }
        })
        .collect()
}

const PACKAGE_MANAGERS: [&str; 5] = ["apt-get", "apt", "dnf", "yum", "dpkg"];

#[test]
fn apt_installs_docker_io_in_a_debootstrapped_debian_and_then_is_unchanged() {
    if !is_root() {
        panic!("this test needs root (chroot, debootstrap); tests/run runs as root");
    }
    let root = copy_root(&bookworm());
    // No service may start inside the throwaway root (standard for chroots).
    std::fs::write(
        root.path().join("usr/sbin/policy-rc.d"),
        "#!/bin/sh\nexit 101\n",
    )
    .unwrap();
    sh(Command::new("chmod")
        .args(["0755"])
        .arg(root.path().join("usr/sbin/policy-rc.d")));

    let mut spec = docker::from_proto(&v1::Docker {
        source: DockerSource::Distro as i32,
        ..Default::default()
    })
    .unwrap();
    spec.target = Target::at(root.path());

    let observed = docker::read(&spec).unwrap();
    assert!(!observed.installed.contains_key("docker.io"));
    let change = docker::plan(&spec, &observed);
    assert_eq!(change.action, Action::Create, "{change:?}");
    let chroot = format!("chroot {}", root.path().display());
    assert!(
        change.diff.contains(&format!(
            "{chroot} apt-get install -y docker.io docker-compose"
        )),
        "{}",
        change.diff
    );
    assert!(
        change
            .warnings
            .iter()
            .any(|w| w.contains("could not be enabled or started")),
        "{:?}",
        change.warnings
    );

    let lines = Lines::default();
    let started = std::time::Instant::now();
    let message = docker::apply(&spec, &observed, &lines).unwrap();
    eprintln!(
        "apt install of docker.io in the root: {:?}",
        started.elapsed()
    );
    assert!(message.contains("install docker.io"), "{message}");
    assert!(
        message.contains("could not be enabled or started"),
        "{message}"
    );
    let progress = lines.all();
    assert!(
        progress.iter().any(|l| l.contains("Setting up docker.io")),
        "apt's output should stream as progress: {progress:?}"
    );

    // Independently of the resource: dpkg in the root says installed.
    let status = sh(Command::new("chroot").arg(root.path()).args([
        "dpkg-query",
        "-W",
        "-f=${Status} ${Version}",
        "docker.io",
    ]));
    assert!(status.starts_with("install ok installed"), "{status}");
    let daemon: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.path().join("etc/docker/daemon.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(daemon["log-driver"], "json-file");
    assert_eq!(daemon["log-opts"]["max-size"], "10m");
    assert_eq!(daemon["log-opts"]["max-file"], "3");

    // Read back with a fresh runner: unchanged, and no package manager ran.
    spec.target = Target::at(root.path());
    let again = docker::read(&spec).unwrap();
    let change = docker::plan(&spec, &again);
    assert_eq!(change.action, Action::Unchanged, "{}", change.diff);
    let ran = history_programs(&spec.target);
    assert_eq!(ran, ["dpkg-query"], "only the package query may run");
    assert!(!ran.iter().any(|p| PACKAGE_MANAGERS.contains(&p.as_str())));
}

// ------------------------------------------------------------------------------------------------
// dnf

const ROCKY_9: &str = "NAME=\"Rocky Linux\"\nVERSION=\"9.5 (Blue Onyx)\"\nID=\"rocky\"\n\
    ID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.5\"\nPRETTY_NAME=\"Rocky Linux 9.5 (Blue Onyx)\"\n";

/// Builds a noarch stand-in RPM with the given extra tags.
fn rpm(topdir: &Path, out: &Path, name: &str, tags: &str) {
    let spec = topdir.join(format!("{name}.spec"));
    std::fs::write(
        &spec,
        format!(
            "Name: {name}\nVersion: 28.0.0\nRelease: 1\nSummary: kagent test stand-in for {name}\n\
             License: Apache-2.0\nBuildArch: noarch\n{tags}\n%description\nStand-in.\n\
             %install\nmkdir -p %{{buildroot}}/usr/share/kagent-standin\n\
             echo {name} > %{{buildroot}}/usr/share/kagent-standin/{name}\n\
             %files\n/usr/share/kagent-standin/{name}\n"
        ),
    )
    .unwrap();
    sh(Command::new("rpmbuild")
        .arg("-bb")
        .arg("--define")
        .arg(format!("_topdir {}", topdir.display()))
        .arg("--define")
        .arg(format!("_rpmdir {}", out.display()))
        .arg("--define")
        .arg("_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm")
        .arg(&spec));
}

#[test]
fn dnf_installs_from_docker_repo_layout_into_an_installroot_resolving_podman_conflict() {
    if !is_root() {
        panic!("this test needs root (dnf --installroot); tests/run runs as root");
    }
    for (p, pkg) in [
        ("dnf", "dnf"),
        ("rpm", "rpm"),
        ("rpmbuild", "rpm"),
        ("createrepo_c", "createrepo-c"),
    ] {
        need(p, pkg);
    }
    let work = tempfile::tempdir().unwrap();
    let top = work.path().join("rpmbuild");
    std::fs::create_dir_all(&top).unwrap();
    // download.docker.com's layout: linux/rhel/docker-ce.repo and the repository it names.
    let download = work.path().join("download");
    let stable = download.join("linux/rhel/9/noarch/stable");
    let base = work.path().join("base");
    std::fs::create_dir_all(&stable).unwrap();
    std::fs::create_dir_all(&base).unwrap();
    for name in [
        "docker-ce",
        "docker-ce-cli",
        "docker-buildx-plugin",
        "docker-compose-plugin",
    ] {
        rpm(&top, &stable, name, "");
    }
    // As the real one: containerd.io obsoletes and provides runc (containerd/containerd#5417).
    rpm(
        &top,
        &stable,
        "containerd.io",
        "Provides: runc\nObsoletes: runc\nConflicts: runc",
    );
    rpm(&top, &base, "runc", "");
    rpm(&top, &base, "podman", "Requires: runc");
    sh(Command::new("createrepo_c").arg(&stable));
    sh(Command::new("createrepo_c").arg(&base));
    std::fs::write(
        download.join("linux/rhel/docker-ce.repo"),
        format!(
            "[docker-ce-stable]\nname=Docker CE Stable (stand-in)\nbaseurl=file://{}\nenabled=1\ngpgcheck=0\n",
            stable.display()
        ),
    )
    .unwrap();

    // The installroot: a Rocky 9 os-release, a base repository holding podman and runc.
    let root = work.path().join("root");
    std::fs::create_dir_all(root.join("etc/yum.repos.d")).unwrap();
    std::fs::create_dir_all(root.join("etc/dnf")).unwrap();
    std::fs::write(root.join("etc/os-release"), ROCKY_9).unwrap();
    std::fs::write(
        root.join("etc/yum.repos.d/base.repo"),
        format!(
            "[base]\nname=base (stand-in)\nbaseurl=file://{}\nenabled=1\ngpgcheck=0\n",
            base.display()
        ),
    )
    .unwrap();
    // The installroot's own dnf.conf (dnf reads it from the installroot). Plugin settings are
    // host paths for dnf, so point them at a copy in the root, with Debian's `local` plugin
    // (not on EL hosts) turned off; the host's /etc/dnf is left alone.
    sh(Command::new("cp")
        .args(["-r", "/etc/dnf/plugins"])
        .arg(root.join("etc/dnf/plugins")));
    std::fs::write(
        root.join("etc/dnf/plugins/local.conf"),
        "[main]\nenabled=0\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/dnf/dnf.conf"),
        format!(
            "[main]\ngpgcheck=1\ninstallonly_limit=3\nclean_requirements_on_remove=True\n\
             best=True\nskip_if_unavailable=False\npluginconfpath={}/etc/dnf/plugins\n",
            root.display()
        ),
    )
    .unwrap();
    let setup = Target::at(&root);
    let out = setup
        .runner()
        .output(&setup.dnf("9").args(["-y", "install", "podman"]))
        .unwrap();
    assert!(out.success(), "{}{}", out.stdout, out.stderr);

    let mut spec = docker::from_proto(&v1::Docker::default()).unwrap();
    spec.target = Target::at(&root);
    spec.download = format!("file://{}", download.display());

    // 1. Conflict detected, reported, the apply refuses before any package manager runs.
    let observed = docker::read(&spec).unwrap();
    assert!(observed.installed.contains_key("podman") && observed.installed.contains_key("runc"));
    let change = docker::plan(&spec, &observed);
    assert!(
        change.warnings[0].contains("podman runc")
            && change.warnings[0].contains("remove_conflicts"),
        "{:?}",
        change.warnings
    );
    let err = docker::apply(&spec, &observed, &Lines::default()).unwrap_err();
    assert!(
        err.message.contains("containerd.io obsoletes runc"),
        "{err:?}"
    );
    let ran: Vec<Vec<String>> = spec.target.runner().history();
    assert!(
        ran.iter()
            .all(|argv| argv[0] == "rpm" || argv[1..3] == ["config-manager", "--help"]),
        "only queries may have run: {ran:?}"
    );

    // 2. With remove_conflicts: podman and runc go, Docker's repo is added with
    //    `dnf config-manager --add-repo` (dnf4), the packages are installed.
    spec.remove_conflicts = true;
    spec.target = Target::at(&root);
    let observed = docker::read(&spec).unwrap();
    let lines = Lines::default();
    let started = std::time::Instant::now();
    let message = docker::apply(&spec, &observed, &lines).unwrap();
    eprintln!("dnf remove + add-repo + install: {:?}", started.elapsed());
    assert!(
        message.contains("remove conflicting packages: podman runc"),
        "{message}"
    );
    let cmds: Vec<String> = spec
        .target
        .runner()
        .history()
        .iter()
        .map(|a| a.join(" "))
        .collect();
    let dnf = format!(
        "dnf --installroot={r} --releasever=9 --setopt=reposdir={r}/etc/yum.repos.d",
        r = root.display()
    );
    let want_tail = [
        format!("{dnf} -y remove podman runc"),
        format!(
            "{dnf} config-manager --add-repo {}/linux/rhel/docker-ce.repo",
            spec.download
        ),
        format!(
            "{dnf} -y install docker-ce docker-ce-cli containerd.io docker-buildx-plugin docker-compose-plugin"
        ),
    ];
    assert!(cmds.ends_with(&want_tail), "{cmds:#?}");
    assert!(root.join("etc/yum.repos.d/docker-ce.repo").exists());
    let q = sh(Command::new("rpm").arg("--root").arg(&root).args([
        "-q",
        "docker-ce",
        "containerd.io",
        "docker-compose-plugin",
    ]));
    assert_eq!(q.lines().count(), 3, "{q}");
    let gone = Command::new("rpm")
        .arg("--root")
        .arg(&root)
        .args(["-q", "podman"])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "podman should be removed");
    assert!(
        lines
            .all()
            .iter()
            .any(|l| l.contains("Installing") || l.contains("Complete!")),
        "dnf's output should stream as progress: {:?}",
        lines.all()
    );

    // 3. Read back with a fresh runner: unchanged, only `rpm -q` ran.
    spec.target = Target::at(&root);
    let again = docker::read(&spec).unwrap();
    let change = docker::plan(&spec, &again);
    assert_eq!(change.action, Action::Unchanged, "{}", change.diff);
    assert_eq!(history_programs(&spec.target), ["rpm"]);
}

// ------------------------------------------------------------------------------------------------
// Refusals before any command

#[test]
fn end_of_life_and_unsupported_systems_are_refused_before_any_command() {
    let cases = [
        (
            "NAME=\"CentOS Linux\"\nID=\"centos\"\nID_LIKE=\"rhel fedora\"\nVERSION_ID=\"7\"\n",
            "end-of-life",
        ),
        (
            "NAME=\"CentOS Linux\"\nID=\"centos\"\nVERSION_ID=\"8\"\n",
            "vault.centos.org",
        ),
        (
            "ID=debian\nVERSION_ID=\"10\"\nVERSION_CODENAME=buster\n",
            "end-of-life",
        ),
        (
            "ID=ubuntu\nVERSION_ID=\"20.04\"\nVERSION_CODENAME=focal\n",
            "standard support",
        ),
        (
            "NAME=\"Red Hat Enterprise Linux Server\"\nID=\"rhel\"\nVERSION_ID=\"7.9\"\n",
            "end-of-life",
        ),
        (
            "ID=arch\nBUILD_ID=rolling\n",
            "unsupported: ID=arch, VERSION_ID=(none)",
        ),
        (
            "ID=\"opensuse-tumbleweed\"\nVERSION_ID=\"20261201\"\n",
            "unsupported: ID=opensuse-tumbleweed",
        ),
    ];
    for (os, says) in cases {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/os-release"), os).unwrap();
        let mut spec = docker::from_proto(&v1::Docker::default()).unwrap();
        spec.target = Target::at(root.path());
        let err = docker::read(&spec).unwrap_err();
        assert!(err.message.contains(says), "{os}: {err:?}");
        assert!(
            spec.target.runner().history().is_empty(),
            "{os}: commands ran: {:?}",
            spec.target.runner().history()
        );
    }
}

// ------------------------------------------------------------------------------------------------
// group_member with usermod --root

fn account_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let files = [
        (
            "passwd",
            "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice:/home/alice:/bin/bash\nbob:x:1001:1001::/home/bob:/bin/sh\n",
            0o644,
        ),
        (
            "shadow",
            "root:*:20000:0:99999:7:::\nalice:!:20000:0:99999:7:::\nbob:!:20000:0:99999:7:::\n",
            0o640,
        ),
        (
            "group",
            "root:x:0:\nadm:x:4:alice\nsudo:x:27:alice\ndocker:x:999:bob\nalice:x:1000:\nbob:x:1001:\n",
            0o644,
        ),
        (
            "gshadow",
            "root:*::\nadm:*::alice\nsudo:*::alice\ndocker:!::bob\nalice:!::\nbob:!::\n",
            0o640,
        ),
    ];
    for (name, content, mode) in files {
        let p = etc.join(name);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    }
    root
}

fn member_spec(root: &Path, user: &str, group: &str, create: bool) -> group_member::Spec {
    let mut s = group_member::from_proto(&v1::GroupMember {
        user: user.into(),
        group: group.into(),
        create_user: create,
    })
    .unwrap();
    s.target = Target::at(root);
    s
}

#[test]
fn usermod_adds_alice_to_docker_keeping_every_other_membership() {
    if !is_root() {
        panic!("this test needs root (usermod --root chroots); tests/run runs as root");
    }
    need("usermod", "passwd");
    let root = account_root();
    let spec = member_spec(root.path(), "alice", "", false);
    let observed = group_member::read(&spec).unwrap();
    let change = group_member::plan(&spec, &observed);
    assert_eq!(change.action, Action::Update);
    assert!(change.diff.contains("keeps adm, sudo"), "{}", change.diff);
    assert!(
        change
            .warnings
            .iter()
            .any(|w| w.contains("equivalent to root"))
    );

    let message = group_member::apply(&spec, &observed).unwrap();
    assert!(message.contains("newgrp docker"), "{message}");
    assert!(message.contains("adm, sudo"), "{message}");
    assert_eq!(
        spec.target.runner().history(),
        [vec![
            "usermod".to_string(),
            "--root".into(),
            root.path().display().to_string(),
            "--append".into(),
            "--groups".into(),
            "docker".into(),
            "alice".into()
        ]]
    );
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    assert!(group.contains("docker:x:999:bob,alice\n"), "{group}");
    assert!(
        group.contains("adm:x:4:alice\n") && group.contains("sudo:x:27:alice\n"),
        "{group}"
    );
    let gshadow = std::fs::read_to_string(root.path().join("etc/gshadow")).unwrap();
    assert!(gshadow.contains("docker:!::bob,alice\n"), "{gshadow}");

    // Second apply: unchanged, nothing runs.
    let spec = member_spec(root.path(), "alice", "docker", false);
    let again = group_member::read(&spec).unwrap();
    assert_eq!(group_member::plan(&spec, &again).action, Action::Unchanged);
    assert!(spec.target.runner().history().is_empty());
}

#[test]
fn group_member_refusals_change_nothing_and_create_user_works() {
    if !is_root() {
        panic!("this test needs root (useradd --root chroots); tests/run runs as root");
    }
    need("useradd", "passwd");
    let root = account_root();
    let before = std::fs::read_to_string(root.path().join("etc/group")).unwrap();

    let spec = member_spec(root.path(), "mallory", "docker", false);
    let err = group_member::read(&spec).unwrap_err();
    assert!(err.message.starts_with("field `user`"), "{err:?}");

    let spec = member_spec(root.path(), "alice", "wheel", false);
    let observed = group_member::read(&spec).unwrap();
    let change = group_member::plan(&spec, &observed);
    assert!(
        change
            .warnings
            .iter()
            .any(|w| w.contains("does not exist now"))
    );
    let err = group_member::apply(&spec, &observed).unwrap_err();
    assert!(err.message.starts_with("field `group`"), "{err:?}");
    assert!(spec.target.runner().history().is_empty());
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/group")).unwrap(),
        before
    );

    for (user, group, field) in [("Alice", "docker", "user"), ("alice", "dock er", "group")] {
        let e = group_member::from_proto(&v1::GroupMember {
            user: user.into(),
            group: group.into(),
            create_user: false,
        })
        .unwrap_err();
        assert_eq!(e.field, field);
    }

    let spec = member_spec(root.path(), "carol", "docker", true);
    let observed = group_member::read(&spec).unwrap();
    assert_eq!(group_member::plan(&spec, &observed).action, Action::Create);
    group_member::apply(&spec, &observed).unwrap();
    let again = group_member::read(&member_spec(root.path(), "carol", "docker", false)).unwrap();
    assert!(again.user.is_some());
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    assert!(group.contains("docker:x:999:bob,carol\n"), "{group}");
}
