//! `docker`: Docker Engine, its CLI, containerd and the compose plugin, installed the way
//! Docker's install documentation says for the distribution `/etc/os-release` names; the
//! daemon's log rotation merged into `/etc/docker/daemon.json`; the service enabled and
//! started when systemd runs the system.
//!
//! `read` classifies the distribution first, from the file alone: an end-of-life or unknown
//! release is refused before any command runs. It then queries the package database
//! (`dpkg-query -W`, `rpm -q`), the repository definition, `daemon.json` and the service. A host
//! that is already right plans `unchanged` and no package manager runs at all. `plan` is pure:
//! it turns spec + observed into the exact command sequence, which `apply` runs, streaming the
//! package manager's output as progress.
//!
//! Sources of the command sequences (the expected data of the tests quotes them):
//! <https://docs.docker.com/engine/install/debian/>, <https://docs.docker.com/engine/install/ubuntu/>,
//! <https://docs.docker.com/engine/install/rhel/>, <https://docs.docker.com/engine/install/centos/>,
//! <https://docs.docker.com/engine/install/fedora/>.

use std::collections::BTreeMap;

use kagent_proto::v1::{self, Action, DockerSource};
use serde_json::{Map, Value};

use super::{Change, FieldError, Progress, ResourceError};
use crate::host::cmd::{Cmd, CmdError, INSTALL_TIMEOUT, Output};
use crate::host::os_release::OsRelease;
use crate::host::target::Target;

/// Docker's download site. Tests point `Spec::download` at a local copy.
pub const DOCKER_DOWNLOAD: &str = "https://download.docker.com";
/// What Docker's docs install, on every distribution.
pub const DOCKER_PACKAGES: [&str; 5] = [
    "docker-ce",
    "docker-ce-cli",
    "containerd.io",
    "docker-buildx-plugin",
    "docker-compose-plugin",
];
pub const DEFAULT_LOG_MAX_SIZE: &str = "10m";
pub const DEFAULT_LOG_MAX_FILE: u32 = 3;

const KEYRINGS: &str = "/etc/apt/keyrings";
const APT_SOURCES: &str = "/etc/apt/sources.list.d";
const YUM_REPOS: &str = "/etc/yum.repos.d";
const DOCKER_ETC: &str = "/etc/docker";
const DAEMON_JSON: &str = "/etc/docker/daemon.json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Docker's repository at download.docker.com.
    Docker,
    /// The distribution's own packages (`docker.io`); Debian and Ubuntu only.
    Distro,
    /// A local mirror of Docker's repository (air-gapped hosts).
    Repository {
        url: String,
        signing_key: Option<String>,
    },
    /// A directory of package files on the target (air-gapped hosts).
    Directory(String),
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub source: Source,
    pub version: Option<String>,
    pub allow_eol: bool,
    pub remove_conflicts: bool,
    pub log_max_size: String,
    pub log_max_file: u32,
    /// The system to manage: the host, or a root in tests.
    pub target: Target,
    /// Base URL of Docker's download site ([`DOCKER_DOWNLOAD`]); not part of the API.
    pub download: String,
}

pub fn from_proto(p: &v1::Docker) -> Result<Spec, FieldError> {
    let source = match DockerSource::try_from(p.source) {
        Ok(DockerSource::Unspecified | DockerSource::Docker) => Source::Docker,
        Ok(DockerSource::Distro) => Source::Distro,
        Ok(DockerSource::Repository) => {
            if p.repository_url.is_empty() {
                return Err(FieldError::new(
                    "repository_url",
                    "source repository needs the URL of the local mirror (http://, https:// or file://)",
                ));
            }
            check_url("repository_url", &p.repository_url)?;
            let signing_key = if p.signing_key.is_empty() {
                None
            } else {
                if !p.signing_key.starts_with('/') {
                    check_url("signing_key", &p.signing_key)?;
                } else {
                    check_abs_path("signing_key", &p.signing_key)?;
                }
                Some(p.signing_key.clone())
            };
            Source::Repository {
                url: p.repository_url.trim_end_matches('/').to_string(),
                signing_key,
            }
        }
        Ok(DockerSource::Directory) => {
            check_abs_path("package_directory", &p.package_directory)?;
            Source::Directory(p.package_directory.trim_end_matches('/').to_string())
        }
        Err(_) => {
            return Err(FieldError::new(
                "source",
                format!(
                    "{} is not a source; use docker, distro, repository or directory",
                    p.source
                ),
            ));
        }
    };
    if !matches!(source, Source::Repository { .. })
        && (!p.repository_url.is_empty() || !p.signing_key.is_empty())
    {
        let field = if p.repository_url.is_empty() {
            "signing_key"
        } else {
            "repository_url"
        };
        return Err(FieldError::new(
            field,
            "only used with source repository; remove it or set source = repository",
        ));
    }
    if !matches!(source, Source::Directory(_)) && !p.package_directory.is_empty() {
        return Err(FieldError::new(
            "package_directory",
            "only used with source directory; remove it or set source = directory",
        ));
    }
    let version = if p.version.is_empty() {
        None
    } else {
        let ok = |c: char| c.is_ascii_alphanumeric() || ".:~+_-".contains(c);
        if p.version.len() > 64 || !p.version.chars().all(ok) {
            return Err(FieldError::new(
                "version",
                format!(
                    "{:?} is not a package version; write it as `apt-cache madison docker-ce` \
                     or `dnf list docker-ce --showduplicates` prints it, e.g. 5:27.5.1-1~debian.12~bookworm",
                    p.version
                ),
            ));
        }
        Some(p.version.clone())
    };
    let log_max_size = if p.log_max_size.is_empty() {
        DEFAULT_LOG_MAX_SIZE.to_string()
    } else {
        let digits = p.log_max_size.trim_end_matches(['k', 'm', 'g']);
        if digits.is_empty()
            || !digits.chars().all(|c| c.is_ascii_digit())
            || p.log_max_size.len() - digits.len() > 1
            || p.log_max_size.len() > 12
        {
            return Err(FieldError::new(
                "log_max_size",
                format!(
                    "{:?} is not a size; write a number with k, m or g, e.g. 10m",
                    p.log_max_size
                ),
            ));
        }
        p.log_max_size.clone()
    };
    let log_max_file = match p.log_max_file {
        0 => DEFAULT_LOG_MAX_FILE,
        n @ 1..=100 => n,
        n => {
            return Err(FieldError::new(
                "log_max_file",
                format!("{n} is out of range; keep 1 to 100 log files"),
            ));
        }
    };
    Ok(Spec {
        source,
        version,
        allow_eol: p.allow_eol,
        remove_conflicts: p.remove_conflicts,
        log_max_size,
        log_max_file,
        target: Target::host(),
        download: DOCKER_DOWNLOAD.to_string(),
    })
}

fn check_url(field: &'static str, url: &str) -> Result<(), FieldError> {
    let scheme_ok = ["http://", "https://", "file:///"]
        .iter()
        .any(|s| url.starts_with(s));
    if !scheme_ok || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(FieldError::new(
            field,
            format!("{url:?} is not a URL; write http://, https:// or file:///... without spaces"),
        ));
    }
    Ok(())
}

fn check_abs_path(field: &'static str, path: &str) -> Result<(), FieldError> {
    if !path.starts_with('/')
        || path.split('/').any(|c| c == "..")
        || path.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(FieldError::new(
            field,
            format!("{path:?} must be an absolute path without `..` or spaces"),
        ));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Distributions

/// How packages are installed on a distribution, and from where Docker's repo serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Family {
    /// Debian or Ubuntu: `repo` is the path under download.docker.com/linux/.
    Apt {
        repo: &'static str,
        codename: String,
        /// The distribution's own Docker packages (`source = distro`).
        distro_packages: Vec<&'static str>,
    },
    /// RHEL-family and Fedora (`yum` on EL7-era systems).
    Dnf {
        repo: &'static str,
        releasever: String,
        yum: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distro {
    pub family: Family,
    /// Said in every plan for this system (end of life accepted with `allow_eol`, ...).
    pub warnings: Vec<String>,
}

struct Eol {
    why: String,
    todo: &'static str,
}

const SUPPORTED: &str = "supported: RHEL, Rocky Linux and AlmaLinux 8/9/10, CentOS Stream 9/10, \
                         Fedora 43 and later, Debian 11/12/13, Ubuntu 22.04/24.04";

/// Which family and repository a system gets, or why it is refused. Reads nothing but the
/// parsed os-release: refusals happen before any command.
pub fn classify(os: &OsRelease, allow_eol: bool) -> Result<Distro, ResourceError> {
    let version = os.version();
    let major = version.map(|v| v.0);
    let unsupported = || {
        let like = if os.id_like.is_empty() {
            String::new()
        } else {
            format!(", ID_LIKE={}", os.id_like.join(" "))
        };
        let hint = if os.is_like("rhel") || os.is_like("fedora") || os.is_like("debian") {
            format!(
                "{SUPPORTED}; a derivative is not assumed to work like its parent (Docker does not \
                 publish packages for it)"
            )
        } else {
            SUPPORTED.to_string()
        };
        ResourceError {
            message: format!(
                "unsupported: ID={}, VERSION_ID={}{like}",
                if os.id.is_empty() { "(none)" } else { &os.id },
                if os.version_id.is_empty() {
                    "(none)"
                } else {
                    &os.version_id
                }
            ),
            hint,
        }
    };
    let apt = |repo: &'static str, codename: &str, distro_packages: Vec<&'static str>| {
        if codename.is_empty() {
            return Err(ResourceError {
                message: format!(
                    "{} {} has no VERSION_CODENAME in /etc/os-release",
                    os.id, os.version_id
                ),
                hint: "the codename names Docker's apt suite; repair /etc/os-release".into(),
            });
        }
        Ok(Family::Apt {
            repo,
            codename: codename.to_string(),
            distro_packages,
        })
    };
    let dnf = |repo: &'static str, yum: bool| Family::Dnf {
        repo,
        releasever: major.map(|m| m.to_string()).unwrap_or_default(),
        yum,
    };
    let mut warnings = Vec::new();
    let (family, eol) = match (os.id.as_str(), major) {
        ("debian", Some(m @ 11..=13)) => {
            if m == 11 {
                warnings.push(
                    "Debian 11 (bullseye) left Debian LTS on 2026-08-31; Docker still serves it, \
                     but plan the upgrade to Debian 12 or 13"
                        .to_string(),
                );
            }
            let pkgs = match m {
                13 => vec!["docker.io", "docker-compose", "docker-buildx"],
                _ => vec!["docker.io", "docker-compose"],
            };
            (apt("debian", &os.version_codename, pkgs)?, None)
        }
        ("debian", Some(m)) if m <= 10 => (
            apt("debian", &os.version_codename, vec!["docker.io", "docker-compose"])?,
            Some(Eol {
                why: format!(
                    "Debian {m} is end-of-life (Debian 10's LTS ended on 2024-06-30): it gets no \
                     security updates and its packages moved to archive.debian.org"
                ),
                todo: "upgrade to Debian 12 or 13",
            }),
        ),
        ("ubuntu", Some(_)) => {
            let codename = if os.ubuntu_codename.is_empty() {
                &os.version_codename
            } else {
                &os.ubuntu_codename
            };
            let pkgs = vec!["docker.io", "docker-compose-v2", "docker-buildx"];
            match version {
                Some((22, 4) | (24, 4)) => (apt("ubuntu", codename, pkgs)?, None),
                Some(v) if v < (26, 4) => (
                    apt("ubuntu", codename, pkgs)?,
                    Some(Eol {
                        why: format!(
                            "Ubuntu {} is past its standard support (20.04 ended on 2025-05-31; \
                             interim releases get 9 months) and Docker no longer publishes for it",
                            os.version_id
                        ),
                        todo: "upgrade to Ubuntu 24.04 LTS",
                    }),
                ),
                _ => return Err(unsupported()),
            }
        }
        ("rhel" | "rocky" | "almalinux", Some(8..=10)) => (dnf("rhel", false), None),
        ("rhel" | "rocky" | "almalinux", Some(m)) if m <= 7 => (
            dnf("rhel", true),
            Some(Eol {
                why: format!(
                    "{} {m} is end-of-life (EL7's maintenance ended on 2024-06-30) and Docker no \
                     longer publishes packages for it",
                    os.name
                ),
                todo: "move to RHEL, Rocky Linux or AlmaLinux 9 or 10",
            }),
        ),
        ("centos", Some(9 | 10)) => (dnf("centos", false), None),
        ("centos", Some(m)) if m <= 8 => (
            dnf("centos", m <= 7),
            Some(Eol {
                why: format!(
                    "{} {m} is end-of-life (CentOS Linux 7 on 2024-06-30, CentOS Linux 8 on \
                     2021-12-31, CentOS Stream 8 on 2024-05-31): mirrorlist.centos.org is gone and \
                     the packages moved to vault.centos.org, so the default repositories no longer \
                     resolve",
                    os.name
                ),
                todo: "migrate to CentOS Stream 9/10, RHEL, Rocky Linux or AlmaLinux 9/10; to \
                       proceed anyway, point /etc/yum.repos.d at vault.centos.org",
            }),
        ),
        ("fedora", Some(m)) if m >= 43 => (dnf("fedora", false), None),
        ("fedora", Some(m)) => (
            dnf("fedora", false),
            Some(Eol {
                why: format!(
                    "Fedora {m} is end-of-life and Docker publishes packages only for current \
                     Fedora releases"
                ),
                todo: "upgrade Fedora (dnf system-upgrade)",
            }),
        ),
        _ => return Err(unsupported()),
    };
    if let Some(eol) = eol {
        if !allow_eol {
            return Err(ResourceError {
                message: format!("refusing to install Docker: {}", eol.why),
                hint: format!(
                    "{}; or set allow_eol = true to install on it anyway, at your own risk",
                    eol.todo
                ),
            });
        }
        warnings.push(format!(
            "end-of-life system, installing because allow_eol = true: {}",
            eol.why
        ));
    }
    Ok(Distro { family, warnings })
}

// ------------------------------------------------------------------------------------------------
// Reading the system

/// The service, as far as it can be managed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    Systemd { enabled: bool, active: bool },
    /// Why the service cannot be managed here (no systemd as PID 1, not the running system).
    Unmanaged(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub os: OsRelease,
    pub distro: Distro,
    /// Installed packages among those asked about: name -> version.
    pub installed: BTreeMap<String, String>,
    /// The repository definition (and key) is as this spec wants it.
    pub repo_ok: bool,
    /// The apt signing key file exists (Docker source).
    pub key_present: bool,
    /// `dnf config-manager` works (probed only when a repository must be added).
    pub config_manager: bool,
    /// The `dnf` that runs is dnf5 (other `config-manager` syntax).
    pub dnf5: bool,
    /// `/etc/docker/daemon.json` as a JSON object; `None` when absent.
    pub daemon_json: Option<Map<String, Value>>,
    pub service: Service,
    /// Package files found in the source directory (paths inside the target).
    pub package_files: Vec<String>,
}

fn wanted_packages(spec: &Spec, distro: &Distro) -> Vec<&'static str> {
    match (&spec.source, &distro.family) {
        (Source::Distro, Family::Apt {
            distro_packages, ..
        }) => distro_packages.clone(),
        _ => DOCKER_PACKAGES.to_vec(),
    }
}

/// Installed packages that stand in the way, per Docker's "uninstall old versions" lists.
fn conflicting_packages(spec: &Spec, distro: &Distro) -> Vec<&'static str> {
    match (&spec.source, &distro.family) {
        (Source::Distro, _) => vec!["docker-ce", "docker-ce-cli", "containerd.io"],
        (_, Family::Apt { repo: "ubuntu", .. }) => vec![
            "docker.io",
            "docker-doc",
            "docker-compose",
            "docker-compose-v2",
            "podman-docker",
            "containerd",
            "runc",
        ],
        (_, Family::Apt { .. }) => vec![
            "docker.io",
            "docker-doc",
            "docker-compose",
            "podman-docker",
            "containerd",
            "runc",
        ],
        (_, Family::Dnf { repo, .. }) => {
            let mut v = vec![
                "docker",
                "docker-client",
                "docker-client-latest",
                "docker-common",
                "docker-latest",
                "docker-latest-logrotate",
                "docker-logrotate",
                "docker-engine",
            ];
            if *repo == "fedora" {
                v.extend(["docker-selinux", "docker-engine-selinux"]);
            }
            // containerd.io obsoletes runc, which podman needs (containerd/containerd#5417).
            v.extend(["podman", "runc"]);
            v
        }
    }
}

fn main_package(spec: &Spec) -> &'static str {
    match spec.source {
        Source::Distro => "docker.io",
        _ => "docker-ce",
    }
}

fn read_err(what: &str, e: &std::io::Error, path: &str) -> ResourceError {
    ResourceError::io(what, std::path::Path::new(path), e)
}

fn cmd_err(e: CmdError) -> ResourceError {
    let hint = match &e {
        CmdError::Spawn {
            not_found: true, ..
        } => "install the program or check the distribution detection",
        _ => "",
    };
    ResourceError {
        message: e.to_string(),
        hint: hint.into(),
    }
}

pub fn read(spec: &Spec) -> Result<Observed, ResourceError> {
    let t = &spec.target;
    let text = match t.read("/etc/os-release") {
        Ok(Some(s)) => s,
        Ok(None) => t
            .read("/usr/lib/os-release")
            .map_err(|e| read_err("read", &e, "/usr/lib/os-release"))?
            .ok_or_else(|| ResourceError {
                message: "neither /etc/os-release nor /usr/lib/os-release exists".into(),
                hint: "the distribution cannot be detected; nothing was changed".into(),
            })?,
        Err(e) => return Err(read_err("read", &e, "/etc/os-release")),
    };
    let os = OsRelease::parse(&text);
    // Refusals (end of life, unknown) come here, before any command.
    let distro = classify(&os, spec.allow_eol)?;
    if spec.source == Source::Distro && !matches!(distro.family, Family::Apt { .. }) {
        return Err(ResourceError {
            message: format!(
                "source distro: {} ships no Docker Engine package",
                os.pretty_name
            ),
            hint: "use source docker (Docker's repository) or repository/directory for a local copy"
                .into(),
        });
    }

    let package_files = match &spec.source {
        Source::Directory(dir) => list_packages(t, dir, &distro.family)?,
        _ => Vec::new(),
    };

    let mut names: Vec<&str> = wanted_packages(spec, &distro);
    names.extend(conflicting_packages(spec, &distro));
    if matches!(distro.family, Family::Apt { .. }) && spec.source == Source::Docker {
        names.extend(["ca-certificates", "curl"]);
    }
    let installed = query_packages(t, &distro.family, &names)?;

    let (repo_ok, key_present) = read_repo(spec, &distro.family)?;
    let dnf5 = std::path::Path::new("/usr/bin/dnf5").exists();
    let config_manager = match (&spec.source, &distro.family) {
        (Source::Docker, Family::Dnf { yum, .. }) if !repo_ok => {
            if *yum {
                std::path::Path::new("/usr/bin/yum-config-manager").exists()
            } else {
                // The dnf that runs is the agent's own (also with --installroot).
                let probe = Cmd::new("dnf").args(["config-manager", "--help"]);
                t.runner()
                    .output(&probe)
                    .map(|o| o.success())
                    .unwrap_or(false)
            }
        }
        _ => true,
    };

    let daemon_json = match t.read(DAEMON_JSON) {
        Ok(None) => None,
        Ok(Some(text)) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(m)) => Some(m),
            Ok(_) => {
                return Err(ResourceError {
                    message: format!("{DAEMON_JSON} is not a JSON object"),
                    hint: "fix or remove it; kagent does not overwrite a file it cannot merge"
                        .into(),
                });
            }
            Err(e) => {
                return Err(ResourceError {
                    message: format!("{DAEMON_JSON} is not valid JSON: {e}"),
                    hint: "fix or remove it; kagent does not overwrite a file it cannot merge"
                        .into(),
                });
            }
        },
        Err(e) => return Err(read_err("read", &e, DAEMON_JSON)),
    };

    Ok(Observed {
        os,
        distro,
        installed,
        repo_ok,
        key_present,
        config_manager,
        dnf5,
        daemon_json,
        service: read_service(t)?,
        package_files,
    })
}

fn list_packages(t: &Target, dir: &str, family: &Family) -> Result<Vec<String>, ResourceError> {
    let ext = match family {
        Family::Apt { .. } => ".deb",
        Family::Dnf { .. } => ".rpm",
    };
    let entries = std::fs::read_dir(t.path(dir)).map_err(|e| read_err("list", &e, dir))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| read_err("list", &e, dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(ext) {
            files.push(format!("{dir}/{name}"));
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(ResourceError {
            message: format!("{dir} holds no {ext} files"),
            hint: format!(
                "copy Docker's packages ({}) there, or use another source",
                DOCKER_PACKAGES.join(", ")
            ),
        });
    }
    Ok(files)
}

/// Installed versions of `names` (absent names are not installed). Queries only.
fn query_packages(
    t: &Target,
    family: &Family,
    names: &[&str],
) -> Result<BTreeMap<String, String>, ResourceError> {
    let mut installed = BTreeMap::new();
    match family {
        Family::Apt { .. } => {
            let cmd = t
                .dpkg_query()
                .arg("-W")
                .arg("-f=${Package}\t${db:Status-Abbrev}\t${Version}\n")
                .args(names.iter().copied());
            let out = t.runner().output(&cmd).map_err(cmd_err)?;
            // Exit 1 means "some names matched nothing"; anything else is a failure.
            if !matches!(out.code, Some(0 | 1)) {
                return Err(query_failed(&cmd, &out));
            }
            for line in out.stdout.lines() {
                let mut f = line.split('\t');
                if let (Some(name), Some(status), Some(version)) = (f.next(), f.next(), f.next())
                    && status.starts_with("ii")
                {
                    installed.insert(name.to_string(), version.to_string());
                }
            }
        }
        Family::Dnf { .. } => {
            let cmd = t
                .rpm()
                .arg("-q")
                .arg("--qf")
                .arg("%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\n")
                .args(names.iter().copied());
            let out = t.runner().output(&cmd).map_err(cmd_err)?;
            let mut accounted = 0;
            for line in out.stdout.lines() {
                if let Some((name, version)) = line.split_once('\t') {
                    installed.insert(name.to_string(), version.to_string());
                    accounted += 1;
                } else if line.starts_with("package ") && line.ends_with(" is not installed") {
                    accounted += 1;
                }
            }
            if accounted < names.len() || !out.stderr.trim().is_empty() && !out.success() {
                return Err(query_failed(&cmd, &out));
            }
        }
    }
    Ok(installed)
}

fn query_failed(cmd: &Cmd, out: &Output) -> ResourceError {
    ResourceError {
        message: format!(
            "`{cmd}` failed (exit {}): {}",
            out.code.map(|c| c.to_string()).unwrap_or("signal".into()),
            out.tail()
        ),
        hint: "the package database could not be read; check it by hand".into(),
    }
}

/// Whether the repository definition this spec wants is in place (and the apt key exists).
fn read_repo(spec: &Spec, family: &Family) -> Result<(bool, bool), ResourceError> {
    let t = &spec.target;
    let read = |path: &str| t.read(path).map_err(|e| read_err("read", &e, path));
    Ok(match (&spec.source, family) {
        (Source::Distro | Source::Directory(_), _) => (true, true),
        (Source::Docker, Family::Apt { .. }) => {
            let key = format!("{KEYRINGS}/docker.asc");
            let key_present = t.path(&key).metadata().map(|m| m.len() > 0).unwrap_or(false);
            let want = apt_sources(spec, family);
            let now = read(&format!("{APT_SOURCES}/docker.sources"))?;
            (key_present && now.as_deref() == Some(want.as_str()), key_present)
        }
        (Source::Docker, Family::Dnf { .. }) => {
            // Docker's .repo file as `config-manager` saved it; its content is Docker's.
            (t.exists(&format!("{YUM_REPOS}/docker-ce.repo")), true)
        }
        (Source::Repository { signing_key, .. }, Family::Apt { .. }) => {
            let key_present = match signing_key {
                None => true,
                Some(_) => t
                    .path(&format!("{KEYRINGS}/docker-local.asc"))
                    .metadata()
                    .map(|m| m.len() > 0)
                    .unwrap_or(false),
            };
            let now = read(&format!("{APT_SOURCES}/docker-local.sources"))?;
            let want = apt_sources(spec, family);
            (key_present && now.as_deref() == Some(want.as_str()), key_present)
        }
        (Source::Repository { .. }, Family::Dnf { .. }) => {
            let now = read(&format!("{YUM_REPOS}/docker-ce-local.repo"))?;
            (now.as_deref() == Some(local_repo_file(spec).as_str()), true)
        }
    })
}

fn read_service(t: &Target) -> Result<Service, ResourceError> {
    if !t.is_host() {
        return Ok(Service::Unmanaged(format!(
            "{} is not the running system, so no service manager runs it",
            t.root().display()
        )));
    }
    if !t.path("/run/systemd/system").is_dir() {
        return Ok(Service::Unmanaged(
            "systemd is not PID 1 here (no /run/systemd/system)".into(),
        ));
    }
    let ask = |what: &str| -> Result<bool, ResourceError> {
        let out = t
            .runner()
            .output(&Cmd::new("systemctl").args([what, "docker.service"]))
            .map_err(cmd_err)?;
        Ok(out.success())
    };
    Ok(Service::Systemd {
        enabled: ask("is-enabled")?,
        active: ask("is-active")?,
    })
}

// ------------------------------------------------------------------------------------------------
// Planning (pure)

/// One step of an install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Run(Cmd),
    /// A file of the target written atomically (`dir` + `name`), like the docs' `tee`.
    Write {
        dir: &'static str,
        name: &'static str,
        content: String,
        mode: u32,
    },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Run(c) => write!(f, "{c}"),
            Step::Write { dir, name, .. } => write!(f, "write {dir}/{name}"),
        }
    }
}

/// Everything `plan` and `apply` need: the steps, what they change, what to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steps {
    pub steps: Vec<Step>,
    /// Diff lines (what changes, in words).
    pub changes: Vec<String>,
    pub warnings: Vec<String>,
    /// A reason the apply must not start (a conflict the spec does not allow resolving).
    pub blocker: Option<String>,
    /// What the done message says about the service when it cannot be managed.
    pub service_note: Option<String>,
}

/// The desired `daemon.json`: the existing object with log rotation merged in.
pub fn merged_daemon_json(spec: &Spec, now: Option<&Map<String, Value>>) -> Map<String, Value> {
    let mut m = now.cloned().unwrap_or_default();
    m.insert("log-driver".into(), Value::String("json-file".into()));
    let opts = m
        .entry("log-opts")
        .or_insert_with(|| Value::Object(Map::new()));
    if !opts.is_object() {
        *opts = Value::Object(Map::new());
    }
    if let Value::Object(o) = opts {
        // dockerd wants log-opts values as strings.
        o.insert("max-size".into(), Value::String(spec.log_max_size.clone()));
        o.insert(
            "max-file".into(),
            Value::String(spec.log_max_file.to_string()),
        );
    }
    m
}

fn apt_sources(spec: &Spec, family: &Family) -> String {
    let Family::Apt { repo, codename, .. } = family else {
        return String::new();
    };
    match &spec.source {
        Source::Repository { url, signing_key } => {
            let trust = match signing_key {
                Some(_) => format!("Signed-By: {KEYRINGS}/docker-local.asc"),
                None => "Trusted: yes".into(),
            };
            format!(
                "Types: deb\nURIs: {url}\nSuites: {codename}\nComponents: stable\n{trust}\n"
            )
        }
        _ => format!(
            "Types: deb\nURIs: {}/linux/{repo}\nSuites: {codename}\nComponents: stable\n\
             Signed-By: {KEYRINGS}/docker.asc\n",
            spec.download
        ),
    }
}

fn local_repo_file(spec: &Spec) -> String {
    let Source::Repository { url, signing_key } = &spec.source else {
        return String::new();
    };
    let check = match signing_key {
        Some(k) if k.starts_with('/') => format!("gpgcheck=1\ngpgkey=file://{k}\n"),
        Some(k) => format!("gpgcheck=1\ngpgkey={k}\n"),
        None => "gpgcheck=0\n".into(),
    };
    format!(
        "[docker-ce-local]\nname=Docker CE (local mirror, managed by kagent)\nbaseurl={url}\n\
         enabled=1\n{check}"
    )
}

fn version_matches(installed: &str, pin: &str) -> bool {
    let no_epoch = |v: &str| v.split_once(':').map(|(_, r)| r.to_string()).unwrap_or(v.into());
    let upstream = |v: &str| {
        let v = no_epoch(v);
        v.split_once('-').map(|(u, _)| u.to_string()).unwrap_or(v)
    };
    installed == pin || no_epoch(installed) == no_epoch(pin) || upstream(installed) == pin
}

/// The steps from `observed` to the spec, in the order Docker's docs give them.
pub fn steps(spec: &Spec, obs: &Observed) -> Steps {
    let t = &spec.target;
    let mut s = Steps {
        steps: Vec::new(),
        changes: Vec::new(),
        warnings: obs.distro.warnings.clone(),
        blocker: None,
        service_note: None,
    };
    let wanted = wanted_packages(spec, &obs.distro);
    let pinned: &[&str] = match spec.source {
        Source::Distro => &["docker.io"],
        _ => &["docker-ce", "docker-ce-cli"],
    };
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|p| !obs.installed.contains_key(*p))
        .collect();
    let off_pin: Vec<(&str, &str)> = match &spec.version {
        None => Vec::new(),
        Some(pin) => pinned
            .iter()
            .filter_map(|p| obs.installed.get(*p).map(|v| (*p, v.as_str())))
            .filter(|(_, v)| !version_matches(v, pin))
            .collect(),
    };
    let conflicts: Vec<&str> = conflicting_packages(spec, &obs.distro)
        .into_iter()
        .filter(|p| obs.installed.contains_key(*p))
        .collect();
    let install = !missing.is_empty() || !off_pin.is_empty();
    let source_words = match (&spec.source, &obs.distro.family) {
        (Source::Docker, Family::Apt { repo, .. } | Family::Dnf { repo, .. }) => {
            format!("Docker's {repo} repository")
        }
        (Source::Distro, _) => format!("{}'s own packages", obs.os.name),
        (Source::Repository { url, .. }, _) => format!("the local repository {url}"),
        (Source::Directory(d), _) => format!("the package files in {d}"),
    };

    // Conflicts: reported always, removed only when the spec says so.
    if !conflicts.is_empty() && (install || spec.source != Source::Distro) {
        if spec.remove_conflicts {
            s.changes
                .push(format!("- remove conflicting packages: {}", conflicts.join(" ")));
            s.steps.push(Step::Run(remove_cmd(t, &obs.distro.family, &conflicts)));
        } else {
            let why = if conflicts.contains(&"podman") || conflicts.contains(&"runc") {
                " (containerd.io obsoletes runc, which podman needs)"
            } else {
                ""
            };
            let msg = format!(
                "installed packages conflict with {}: {}{why}; set remove_conflicts = true to \
                 have them removed, or remove them yourself",
                source_words,
                conflicts.join(" ")
            );
            if install {
                s.blocker = Some(msg.clone());
            }
            s.warnings.push(msg);
        }
    }

    // Repository definition: kept in place even when the packages are there, for updates.
    if !obs.repo_ok {
        repo_steps(spec, obs, &mut s);
    }

    // daemon.json before the packages, so the first start already rotates logs.
    let want_json = merged_daemon_json(spec, obs.daemon_json.as_ref());
    if obs.daemon_json.as_ref() != Some(&want_json) {
        s.changes.extend(json_diff(obs.daemon_json.as_ref(), &want_json));
        let mut content = serde_json::to_string_pretty(&Value::Object(want_json))
            .unwrap_or_else(|_| "{}".into());
        content.push('\n');
        s.steps.push(Step::Write {
            dir: DOCKER_ETC,
            name: "daemon.json",
            content,
            mode: 0o644,
        });
        if obs.installed.contains_key(main_package(spec))
            && matches!(obs.service, Service::Systemd { active: true, .. })
        {
            s.warnings.push(
                "dockerd reads daemon.json at start: run `systemctl restart docker` to apply the \
                 new log settings (it stops running containers unless live-restore is on, so \
                 kagent does not do it)"
                    .into(),
            );
        }
    }

    // Packages.
    if install {
        let mut what: Vec<String> = missing.iter().map(|p| p.to_string()).collect();
        what.extend(
            off_pin
                .iter()
                .map(|(p, v)| format!("{p} {v} -> {}", spec.version.as_deref().unwrap_or(""))),
        );
        s.changes
            .push(format!("+ install {} from {source_words}", what.join(", ")));
        install_steps(spec, obs, &wanted, !off_pin.is_empty(), &mut s);
    }
    if spec.source == Source::Distro && obs.os.id == "debian" && obs.os.major() <= Some(12) {
        s.warnings.push(format!(
            "Debian {}'s docker-compose is Compose v1 (the `docker-compose` command, not the \
             `docker compose` plugin); use source docker for Compose v2",
            obs.os.version_id
        ));
    }

    // Service.
    match &obs.service {
        Service::Systemd { enabled, active } => {
            if !enabled || !active {
                s.changes.push("~ service docker: enable and start".into());
                s.steps.push(Step::Run(
                    Cmd::new("systemctl").args(["enable", "--now", "docker"]),
                ));
            }
        }
        Service::Unmanaged(why) => {
            let note = format!(
                "the docker service could not be enabled or started: {why}; start dockerd \
                 another way, or on a systemd host run `systemctl enable --now docker`"
            );
            s.warnings.push(note.clone());
            s.service_note = Some(note);
        }
    }
    s
}

fn remove_cmd(t: &Target, family: &Family, pkgs: &[&str]) -> Cmd {
    match family {
        Family::Apt { .. } => t
            .apt_get()
            .args(["remove", "-y"])
            .args(pkgs.iter().copied())
            .timeout(INSTALL_TIMEOUT),
        Family::Dnf {
            releasever, yum, ..
        } => pm(t, releasever, *yum)
            .args(["-y", "remove"])
            .args(pkgs.iter().copied())
            .timeout(INSTALL_TIMEOUT),
    }
}

/// `dnf`, or `yum` on EL7-era systems.
fn pm(t: &Target, releasever: &str, yum: bool) -> Cmd {
    if yum && t.is_host() {
        Cmd::new("yum")
    } else {
        t.dnf(releasever)
    }
}

fn repo_steps(spec: &Spec, obs: &Observed, s: &mut Steps) {
    let t = &spec.target;
    let host_path = |p: &str| t.path(p).display().to_string();
    match (&spec.source, &obs.distro.family) {
        (Source::Docker, family @ Family::Apt { repo, .. }) => {
            s.changes.push(format!(
                "+ apt repository {}/linux/{repo} (key {KEYRINGS}/docker.asc)",
                spec.download
            ));
            if !obs.key_present {
                let prereqs: Vec<&str> = ["ca-certificates", "curl"]
                    .into_iter()
                    .filter(|p| !obs.installed.contains_key(*p))
                    .collect();
                if !prereqs.is_empty() {
                    s.steps.push(Step::Run(
                        t.apt_get().arg("update").timeout(INSTALL_TIMEOUT),
                    ));
                    s.steps.push(Step::Run(
                        t.apt_get()
                            .args(["install", "-y"])
                            .args(prereqs)
                            .timeout(INSTALL_TIMEOUT),
                    ));
                }
                let key = host_path(&format!("{KEYRINGS}/docker.asc"));
                s.steps.push(Step::Run(Cmd::new("install").args([
                    "-m",
                    "0755",
                    "-d",
                    &host_path(KEYRINGS),
                ])));
                s.steps.push(Step::Run(
                    Cmd::new("curl")
                        .args(["-fsSL", &format!("{}/linux/{repo}/gpg", spec.download), "-o"])
                        .arg(key.clone())
                        .timeout(INSTALL_TIMEOUT),
                ));
                s.steps
                    .push(Step::Run(Cmd::new("chmod").args(["a+r", &key])));
            }
            s.steps.push(Step::Write {
                dir: APT_SOURCES,
                name: "docker.sources",
                content: apt_sources(spec, family),
                mode: 0o644,
            });
        }
        (Source::Docker, Family::Dnf {
            repo,
            releasever,
            yum,
        }) => {
            let url = format!("{}/linux/{repo}/docker-ce.repo", spec.download);
            s.changes.push(format!("+ dnf repository {url}"));
            if !obs.config_manager {
                let plugins = if *yum { "yum-utils" } else { "dnf-plugins-core" };
                s.steps.push(Step::Run(
                    pm(t, releasever, *yum)
                        .args(["-y", "install", plugins])
                        .timeout(INSTALL_TIMEOUT),
                ));
            }
            let add = if *yum && t.is_host() {
                Cmd::new("yum-config-manager").args(["--add-repo", &url])
            } else if obs.dnf5 {
                t.dnf(releasever).args([
                    "config-manager".to_string(),
                    "addrepo".into(),
                    format!("--from-repofile={url}"),
                ])
            } else {
                t.dnf(releasever).args(["config-manager", "--add-repo", &url])
            };
            s.steps.push(Step::Run(add.timeout(INSTALL_TIMEOUT)));
        }
        (Source::Repository { url, signing_key }, family @ Family::Apt { .. }) => {
            s.changes.push(format!("+ apt repository {url} (local mirror)"));
            match signing_key {
                Some(k) if !obs.key_present => {
                    let from = if k.starts_with('/') {
                        format!("file://{}", host_path(k))
                    } else {
                        k.clone()
                    };
                    let key = host_path(&format!("{KEYRINGS}/docker-local.asc"));
                    s.steps.push(Step::Run(Cmd::new("install").args([
                        "-m",
                        "0755",
                        "-d",
                        &host_path(KEYRINGS),
                    ])));
                    s.steps.push(Step::Run(
                        Cmd::new("curl")
                            .args(["-fsSL", &from, "-o", &key])
                            .timeout(INSTALL_TIMEOUT),
                    ));
                    s.steps.push(Step::Run(Cmd::new("chmod").args(["a+r", &key])));
                }
                Some(_) => {}
                None => s.warnings.push(format!(
                    "no signing_key: packages from {url} are trusted without a signature check"
                )),
            }
            s.steps.push(Step::Write {
                dir: APT_SOURCES,
                name: "docker-local.sources",
                content: apt_sources(spec, family),
                mode: 0o644,
            });
        }
        (Source::Repository { url, signing_key }, Family::Dnf { .. }) => {
            s.changes.push(format!("+ dnf repository {url} (local mirror)"));
            if signing_key.is_none() {
                s.warnings.push(format!(
                    "no signing_key: packages from {url} are installed without gpgcheck"
                ));
            }
            s.steps.push(Step::Write {
                dir: YUM_REPOS,
                name: "docker-ce-local.repo",
                content: local_repo_file(spec),
                mode: 0o644,
            });
        }
        (Source::Distro | Source::Directory(_), _) => {}
    }
}

fn install_steps(spec: &Spec, obs: &Observed, wanted: &[&str], repin: bool, s: &mut Steps) {
    let t = &spec.target;
    let pin = |p: &str, sep: &str| match &spec.version {
        Some(v) if ["docker-ce", "docker-ce-cli", "docker.io"].contains(&p) => {
            format!("{p}{sep}{v}")
        }
        _ => p.to_string(),
    };
    match &obs.distro.family {
        Family::Apt { .. } => {
            let pkgs: Vec<String> = match &spec.source {
                Source::Directory(_) => obs.package_files.clone(),
                _ => wanted.iter().map(|p| pin(p, "=")).collect(),
            };
            if !matches!(spec.source, Source::Directory(_)) {
                s.steps.push(Step::Run(
                    t.apt_get().arg("update").timeout(INSTALL_TIMEOUT),
                ));
            }
            let mut c = t.apt_get().args(["install", "-y"]);
            if repin {
                c = c.arg("--allow-downgrades");
            }
            s.steps
                .push(Step::Run(c.args(pkgs).timeout(INSTALL_TIMEOUT)));
        }
        Family::Dnf {
            releasever, yum, ..
        } => {
            let pkgs: Vec<String> = match &spec.source {
                Source::Directory(_) => obs
                    .package_files
                    .iter()
                    .map(|f| t.path(f).display().to_string())
                    .collect(),
                _ => wanted.iter().map(|p| pin(p, "-")).collect(),
            };
            s.steps.push(Step::Run(
                pm(t, releasever, *yum)
                    .args(["-y", "install"])
                    .args(pkgs)
                    .timeout(INSTALL_TIMEOUT),
            ));
        }
    }
}

fn json_diff(now: Option<&Map<String, Value>>, want: &Map<String, Value>) -> Vec<String> {
    let Some(now) = now else {
        return vec![format!(
            "+ {DAEMON_JSON}: {}",
            serde_json::to_string(want).unwrap_or_default()
        )];
    };
    let mut lines = Vec::new();
    for (k, v) in want {
        match now.get(k) {
            Some(old) if old == v => {}
            Some(old) => lines.push(format!("~ {DAEMON_JSON} {k}: {old} -> {v}")),
            None => lines.push(format!("+ {DAEMON_JSON} {k}: {v}")),
        }
    }
    lines
}

pub fn plan(spec: &Spec, observed: &Observed) -> Change {
    let s = steps(spec, observed);
    if s.steps.is_empty() {
        return Change {
            warnings: s.warnings,
            ..Change::unchanged()
        };
    }
    let mut diff = s.changes.clone();
    diff.push("commands:".into());
    diff.extend(s.steps.iter().map(|st| format!("  {st}")));
    let action = if observed.installed.contains_key(main_package(spec)) {
        Action::Update
    } else {
        Action::Create
    };
    let mut warnings = s.warnings;
    if let Some(b) = &s.blocker {
        warnings.insert(0, format!("the apply will refuse to start: {b}"));
    }
    Change {
        action,
        diff: diff.join("\n"),
        warnings,
    }
}

// ------------------------------------------------------------------------------------------------
// Applying

pub fn apply(
    spec: &Spec,
    observed: &Observed,
    progress: &dyn Progress,
) -> Result<String, ResourceError> {
    let s = steps(spec, observed);
    if let Some(b) = s.blocker {
        return Err(ResourceError {
            message: b,
            hint: "nothing was changed".into(),
        });
    }
    let t = &spec.target;
    let total = s.steps.len();
    for (n, step) in s.steps.iter().enumerate() {
        let percent = Some((n * 100 / total.max(1)) as u32);
        progress.report(&format!("step {}/{total}: {step}", n + 1), percent);
        match step {
            Step::Run(cmd) => {
                let out = t
                    .runner()
                    .run(cmd, &mut |_, line| {
                        if !line.trim().is_empty() {
                            progress.report(line, None);
                        }
                    })
                    .map_err(cmd_err)?;
                if !out.success() {
                    return Err(ResourceError {
                        message: format!(
                            "`{cmd}` failed (exit {}): {}",
                            out.code.map(|c| c.to_string()).unwrap_or("signal".into()),
                            out.tail()
                        ),
                        hint: format!(
                            "steps 1 to {n} of {total} ran; fix the cause and apply again \
                             (the next plan starts from what is installed)"
                        ),
                    });
                }
            }
            Step::Write {
                dir,
                name,
                content,
                mode,
            } => {
                t.write(dir, name, content.as_bytes(), *mode)
                    .map_err(|e| read_err("write", &e, &format!("{dir}/{name}")))?;
            }
        }
    }
    let mut message = s.changes.join("; ");
    if let Some(note) = s.service_note {
        message.push_str("; ");
        message.push_str(&note);
    }
    Ok(message)
}
