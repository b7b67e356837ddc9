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
            apt(
                "debian",
                &os.version_codename,
                vec!["docker.io", "docker-compose"],
            )?,
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
    Systemd {
        enabled: bool,
        active: bool,
    },
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
        (
            Source::Distro,
            Family::Apt {
                distro_packages, ..
            },
        ) => distro_packages.clone(),
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
            hint:
                "use source docker (Docker's repository) or repository/directory for a local copy"
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
            let key_present = t
                .path(&key)
                .metadata()
                .map(|m| m.len() > 0)
                .unwrap_or(false);
            let want = apt_sources(spec, family);
            let now = read(&format!("{APT_SOURCES}/docker.sources"))?;
            (
                key_present && now.as_deref() == Some(want.as_str()),
                key_present,
            )
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
            (
                key_present && now.as_deref() == Some(want.as_str()),
                key_present,
            )
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
            format!("Types: deb\nURIs: {url}\nSuites: {codename}\nComponents: stable\n{trust}\n")
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
    let no_epoch = |v: &str| {
        v.split_once(':')
            .map(|(_, r)| r.to_string())
            .unwrap_or(v.into())
    };
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
            s.changes.push(format!(
                "- remove conflicting packages: {}",
                conflicts.join(" ")
            ));
            s.steps
                .push(Step::Run(remove_cmd(t, &obs.distro.family, &conflicts)));
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
        s.changes
            .extend(json_diff(obs.daemon_json.as_ref(), &want_json));
        let mut content =
            serde_json::to_string_pretty(&Value::Object(want_json)).unwrap_or_else(|_| "{}".into());
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
                        .args([
                            "-fsSL",
                            &format!("{}/linux/{repo}/gpg", spec.download),
                            "-o",
                        ])
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
        (
            Source::Docker,
            Family::Dnf {
                repo,
                releasever,
                yum,
            },
        ) => {
            let url = format!("{}/linux/{repo}/docker-ce.repo", spec.download);
            s.changes.push(format!("+ dnf repository {url}"));
            if !obs.config_manager {
                let plugins = if *yum {
                    "yum-utils"
                } else {
                    "dnf-plugins-core"
                };
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
                t.dnf(releasever)
                    .args(["config-manager", "--add-repo", &url])
            };
            s.steps.push(Step::Run(add.timeout(INSTALL_TIMEOUT)));
        }
        (Source::Repository { url, signing_key }, family @ Family::Apt { .. }) => {
            s.changes
                .push(format!("+ apt repository {url} (local mirror)"));
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
                    s.steps
                        .push(Step::Run(Cmd::new("chmod").args(["a+r", &key])));
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
            s.changes
                .push(format!("+ dnf repository {url} (local mirror)"));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(p: v1::Docker) -> Spec {
        match from_proto(&p) {
            Ok(s) => s,
            Err(e) => panic!("{e:?}"),
        }
    }

    /// A host as freshly installed: nothing of Docker's, systemd running, docker not enabled.
    fn fresh(os_release: &str, spec: &Spec, dnf5: bool) -> Observed {
        let os = OsRelease::parse(os_release);
        let distro = match classify(&os, spec.allow_eol) {
            Ok(d) => d,
            Err(e) => panic!("{e:?}"),
        };
        Observed {
            os,
            distro,
            installed: BTreeMap::new(),
            repo_ok: false,
            key_present: false,
            config_manager: false,
            dnf5,
            daemon_json: None,
            service: Service::Systemd {
                enabled: false,
                active: false,
            },
            package_files: Vec::new(),
        }
    }

    fn commands(s: &Steps) -> Vec<String> {
        s.steps.iter().map(|st| st.to_string()).collect()
    }

    // os-release fixtures, as the distributions ship them (relevant keys).
    const RHEL_9: &str = "NAME=\"Red Hat Enterprise Linux\"\nVERSION=\"9.4 (Plow)\"\nID=\"rhel\"\n\
        ID_LIKE=\"fedora\"\nVERSION_ID=\"9.4\"\nPRETTY_NAME=\"Red Hat Enterprise Linux 9.4 (Plow)\"\n";
    const RHEL_8: &str =
        "NAME=\"Red Hat Enterprise Linux\"\nID=\"rhel\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"8.10\"\n";
    const RHEL_10: &str = "NAME=\"Red Hat Enterprise Linux\"\nID=\"rhel\"\nID_LIKE=\"centos fedora\"\nVERSION_ID=\"10.0\"\n";
    const ROCKY_9: &str =
        "NAME=\"Rocky Linux\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.5\"\n";
    const ALMA_10: &str = "NAME=\"AlmaLinux\"\nID=\"almalinux\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"10.0\"\n";
    const STREAM_9: &str =
        "NAME=\"CentOS Stream\"\nID=\"centos\"\nID_LIKE=\"rhel fedora\"\nVERSION_ID=\"9\"\n";
    const STREAM_10: &str =
        "NAME=\"CentOS Stream\"\nID=\"centos\"\nID_LIKE=\"rhel fedora\"\nVERSION_ID=\"10\"\n";
    const FEDORA_43: &str = "NAME=\"Fedora Linux\"\nID=fedora\nVERSION_ID=43\n";
    const DEBIAN_11: &str =
        "NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"11\"\nVERSION_CODENAME=bullseye\n";
    const DEBIAN_12: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
        VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n";
    const DEBIAN_13: &str =
        "NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"13\"\nVERSION_CODENAME=trixie\n";
    const UBUNTU_24: &str = "NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"24.04\"\n\
        VERSION_CODENAME=noble\nUBUNTU_CODENAME=noble\n";
    const UBUNTU_22: &str = "NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"22.04\"\n\
        VERSION_CODENAME=jammy\nUBUNTU_CODENAME=jammy\n";

    const EL_INSTALL: &str = "dnf -y install docker-ce docker-ce-cli containerd.io docker-buildx-plugin docker-compose-plugin";
    const APT_INSTALL: &str = "apt-get install -y docker-ce docker-ce-cli containerd.io docker-buildx-plugin docker-compose-plugin";

    /// Docker's documented steps per distribution, as the expected data. `sudo` dropped, `-y`
    /// added where the docs leave the confirmation to the operator; the docs' `tee` of the apt
    /// source and our daemon.json are atomic writes.
    fn documented() -> Vec<(&'static str, &'static str, bool, Vec<String>)> {
        let el = |repo: &str| {
            vec![
                "dnf -y install dnf-plugins-core".to_string(),
                format!(
                    "dnf config-manager --add-repo https://download.docker.com/linux/{repo}/docker-ce.repo"
                ),
                "write /etc/docker/daemon.json".into(),
                EL_INSTALL.into(),
                "systemctl enable --now docker".into(),
            ]
        };
        let apt = |repo: &str| {
            vec![
                "apt-get update".to_string(),
                "apt-get install -y ca-certificates curl".into(),
                "install -m 0755 -d /etc/apt/keyrings".into(),
                format!(
                    "curl -fsSL https://download.docker.com/linux/{repo}/gpg -o /etc/apt/keyrings/docker.asc"
                ),
                "chmod a+r /etc/apt/keyrings/docker.asc".into(),
                "write /etc/apt/sources.list.d/docker.sources".into(),
                "write /etc/docker/daemon.json".into(),
                "apt-get update".into(),
                APT_INSTALL.into(),
                "systemctl enable --now docker".into(),
            ]
        };
        vec![
            // https://docs.docker.com/engine/install/rhel/ ("Install using the rpm repository")
            ("RHEL 8", RHEL_8, false, el("rhel")),
            ("RHEL 9", RHEL_9, false, el("rhel")),
            ("RHEL 10", RHEL_10, false, el("rhel")),
            // Rocky and AlmaLinux: the rhel repository (get.docker.com refuses AlmaLinux,
            // docker/docker-install#533; Docker's docs and the distributions point at rhel).
            ("Rocky 9", ROCKY_9, false, el("rhel")),
            ("AlmaLinux 10", ALMA_10, false, el("rhel")),
            // https://docs.docker.com/engine/install/centos/
            ("CentOS Stream 9", STREAM_9, false, el("centos")),
            ("CentOS Stream 10", STREAM_10, false, el("centos")),
            // https://docs.docker.com/engine/install/fedora/ (dnf5 since Fedora 41)
            (
                "Fedora 43",
                FEDORA_43,
                true,
                vec![
                    "dnf -y install dnf-plugins-core".to_string(),
                    "dnf config-manager addrepo --from-repofile=https://download.docker.com/linux/fedora/docker-ce.repo".into(),
                    "write /etc/docker/daemon.json".into(),
                    EL_INSTALL.into(),
                    "systemctl enable --now docker".into(),
                ],
            ),
            // https://docs.docker.com/engine/install/debian/ ("Install using the apt repository")
            ("Debian 11", DEBIAN_11, false, apt("debian")),
            ("Debian 12", DEBIAN_12, false, apt("debian")),
            ("Debian 13", DEBIAN_13, false, apt("debian")),
            // https://docs.docker.com/engine/install/ubuntu/
            ("Ubuntu 22.04", UBUNTU_22, false, apt("ubuntu")),
            ("Ubuntu 24.04", UBUNTU_24, false, apt("ubuntu")),
        ]
    }

    #[test]
    fn fresh_hosts_get_the_documented_commands() {
        let s = spec(v1::Docker::default());
        for (name, os, dnf5, want) in documented() {
            let got = steps(&s, &fresh(os, &s, dnf5));
            assert_eq!(commands(&got), want, "{name}");
            assert_eq!(got.blocker, None, "{name}");
        }
    }

    #[test]
    fn apt_source_is_deb822_with_the_codename() {
        let s = spec(v1::Docker::default());
        for (os, want) in [
            (
                DEBIAN_12,
                "https://download.docker.com/linux/debian\nSuites: bookworm",
            ),
            (
                UBUNTU_24,
                "https://download.docker.com/linux/ubuntu\nSuites: noble",
            ),
        ] {
            let st = steps(&s, &fresh(os, &s, false));
            let content = st.steps.iter().find_map(|x| match x {
                Step::Write {
                    name: "docker.sources",
                    content,
                    ..
                } => Some(content.clone()),
                _ => None,
            });
            let content = content.unwrap_or_default();
            assert_eq!(
                content,
                format!(
                    "Types: deb\nURIs: {want}\nComponents: stable\nSigned-By: /etc/apt/keyrings/docker.asc\n"
                )
            );
        }
    }

    #[test]
    fn distro_source_installs_docker_io_and_compose() {
        let s = spec(v1::Docker {
            source: DockerSource::Distro as i32,
            ..Default::default()
        });
        let cases = [
            (DEBIAN_12, "apt-get install -y docker.io docker-compose"),
            (
                DEBIAN_13,
                "apt-get install -y docker.io docker-compose docker-buildx",
            ),
            (
                UBUNTU_24,
                "apt-get install -y docker.io docker-compose-v2 docker-buildx",
            ),
        ];
        for (os, install) in cases {
            let st = steps(&s, &fresh(os, &s, false));
            assert_eq!(
                commands(&st),
                [
                    "write /etc/docker/daemon.json",
                    "apt-get update",
                    install,
                    "systemctl enable --now docker"
                ]
            );
        }
        let st = steps(&s, &fresh(DEBIAN_12, &s, false));
        assert!(st.warnings.iter().any(|w| w.contains("Compose v1")));
    }

    #[test]
    fn version_pin_and_dnf4_vs_dnf5() {
        let s = spec(v1::Docker {
            version: "3:28.0.0-1.el9".into(),
            ..Default::default()
        });
        let mut o = fresh(RHEL_9, &s, false);
        o.repo_ok = true;
        let st = steps(&s, &o);
        assert!(commands(&st).contains(
            &"dnf -y install docker-ce-3:28.0.0-1.el9 docker-ce-cli-3:28.0.0-1.el9 containerd.io docker-buildx-plugin docker-compose-plugin".to_string()
        ));
        let s = spec(v1::Docker {
            version: "5:28.0.0-1~debian.12~bookworm".into(),
            ..Default::default()
        });
        let mut o = fresh(DEBIAN_12, &s, false);
        o.repo_ok = true;
        for p in DOCKER_PACKAGES {
            o.installed
                .insert(p.into(), "5:27.5.1-1~debian.12~bookworm".into());
        }
        let st = steps(&s, &o);
        assert!(commands(&st).contains(&"apt-get install -y --allow-downgrades docker-ce=5:28.0.0-1~debian.12~bookworm docker-ce-cli=5:28.0.0-1~debian.12~bookworm containerd.io docker-buildx-plugin docker-compose-plugin".to_string()), "{:?}", commands(&st));
        assert!(version_matches("3:28.0.0-1.el9", "28.0.0-1.el9"));
        assert!(version_matches("5:28.0.0-1~debian.12~bookworm", "28.0.0"));
        assert!(!version_matches("5:28.0.1-1~debian.12~bookworm", "28.0.0"));
    }

    #[test]
    fn podman_conflict_is_reported_and_removed_only_when_asked() {
        let s = spec(v1::Docker::default());
        let mut o = fresh(ROCKY_9, &s, false);
        o.installed.insert("podman".into(), "4:5.2.2-1.el9".into());
        o.installed.insert("runc".into(), "4:1.1.13-1.el9".into());
        let st = steps(&s, &o);
        let blocker = st.blocker.clone().unwrap_or_default();
        assert!(
            blocker.contains("podman runc") && blocker.contains("remove_conflicts"),
            "{blocker}"
        );
        assert!(!commands(&st).iter().any(|c| c.contains("remove")));
        let c = plan(&s, &o);
        assert!(
            c.warnings[0].starts_with("the apply will refuse to start"),
            "{:?}",
            c.warnings
        );
        let s = spec(v1::Docker {
            remove_conflicts: true,
            ..Default::default()
        });
        let st = steps(&s, &o);
        assert_eq!(st.blocker, None);
        assert_eq!(commands(&st)[0], "dnf -y remove podman runc");
    }

    #[test]
    fn an_installed_host_is_unchanged_and_daemon_json_keeps_other_keys() {
        let s = spec(v1::Docker::default());
        let mut o = fresh(DEBIAN_12, &s, false);
        o.repo_ok = true;
        o.key_present = true;
        for p in DOCKER_PACKAGES {
            o.installed
                .insert(p.into(), "5:28.0.0-1~debian.12~bookworm".into());
        }
        o.service = Service::Systemd {
            enabled: true,
            active: true,
        };
        let mut existing = Map::new();
        existing.insert("data-root".into(), Value::String("/srv/docker".into()));
        existing.insert("log-driver".into(), Value::String("journald".into()));
        o.daemon_json = Some(existing);
        let st = steps(&s, &o);
        assert_eq!(commands(&st), ["write /etc/docker/daemon.json"]);
        let Some(Step::Write { content, .. }) = st.steps.first() else {
            panic!("no write");
        };
        let v: Value = serde_json::from_str(content).unwrap_or_default();
        assert_eq!(v["data-root"], "/srv/docker");
        assert_eq!(v["log-driver"], "json-file");
        assert_eq!(v["log-opts"]["max-size"], "10m");
        assert_eq!(v["log-opts"]["max-file"], "3");
        assert!(
            st.warnings
                .iter()
                .any(|w| w.contains("systemctl restart docker"))
        );
        // Once merged: nothing to do.
        o.daemon_json = v.as_object().cloned();
        assert_eq!(plan(&s, &o), Change::unchanged());
    }

    #[test]
    fn without_systemd_the_service_is_reported_not_pretended() {
        let s = spec(v1::Docker::default());
        let mut o = fresh(DEBIAN_12, &s, false);
        o.service = Service::Unmanaged("systemd is not PID 1 here (no /run/systemd/system)".into());
        let st = steps(&s, &o);
        assert!(!commands(&st).iter().any(|c| c.starts_with("systemctl")));
        let note = st.service_note.unwrap_or_default();
        assert!(note.contains("could not be enabled or started") && note.contains("PID 1"));
    }

    #[test]
    fn end_of_life_and_unknown_systems_are_refused() {
        let eol = [
            (
                "NAME=\"CentOS Linux\"\nID=\"centos\"\nID_LIKE=\"rhel fedora\"\nVERSION_ID=\"7\"\n",
                "vault.centos.org",
            ),
            (
                "NAME=\"CentOS Linux\"\nID=\"centos\"\nVERSION_ID=\"8\"\n",
                "vault.centos.org",
            ),
            (
                "NAME=\"CentOS Stream\"\nID=\"centos\"\nVERSION_ID=\"8\"\n",
                "2024-05-31",
            ),
            (
                "NAME=\"Red Hat Enterprise Linux Server\"\nID=\"rhel\"\nVERSION_ID=\"7.9\"\n",
                "2024-06-30",
            ),
            (
                "ID=debian\nVERSION_ID=\"10\"\nVERSION_CODENAME=buster\n",
                "archive.debian.org",
            ),
            (
                "ID=ubuntu\nVERSION_ID=\"20.04\"\nVERSION_CODENAME=focal\n",
                "2025-05-31",
            ),
            ("ID=fedora\nVERSION_ID=40\n", "end-of-life"),
        ];
        for (os, says) in eol {
            let os = OsRelease::parse(os);
            let e = classify(&os, false)
                .err()
                .unwrap_or_else(|| panic!("{os:?} accepted"));
            assert!(e.message.contains(says), "{}", e.message);
            assert!(e.hint.contains("allow_eol"), "{}", e.hint);
            let ok = classify(&os, true).unwrap_or_else(|e| panic!("{e:?}"));
            assert!(ok.warnings.iter().any(|w| w.contains("end-of-life")));
        }
        let centos7 = OsRelease::parse("NAME=\"CentOS Linux\"\nID=centos\nVERSION_ID=7\n");
        let d = classify(&centos7, true).unwrap_or_else(|e| panic!("{e:?}"));
        let s = spec(v1::Docker {
            allow_eol: true,
            ..Default::default()
        });
        let mut o = fresh(
            "NAME=\"CentOS Linux\"\nID=centos\nVERSION_ID=7\n",
            &s,
            false,
        );
        o.distro = d;
        assert_eq!(
            commands(&steps(&s, &o))[..2],
            [
                "yum -y install yum-utils",
                "yum-config-manager --add-repo https://download.docker.com/linux/centos/docker-ce.repo"
            ]
        );
        for (os, msg) in [
            ("ID=arch\n", "unsupported: ID=arch, VERSION_ID=(none)"),
            (
                "ID=\"opensuse-leap\"\nVERSION_ID=\"15.6\"\nID_LIKE=\"suse opensuse\"\n",
                "unsupported: ID=opensuse-leap, VERSION_ID=15.6, ID_LIKE=suse opensuse",
            ),
            (
                "ID=\"ol\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"9.4\"\n",
                "unsupported: ID=ol, VERSION_ID=9.4",
            ),
            (
                "ID=debian\nVERSION_ID=\"14\"\nVERSION_CODENAME=forky\n",
                "unsupported: ID=debian, VERSION_ID=14",
            ),
            (
                "ID=ubuntu\nVERSION_ID=\"26.10\"\n",
                "unsupported: ID=ubuntu, VERSION_ID=26.10",
            ),
            ("", "unsupported: ID=(none)"),
        ] {
            let e = classify(&OsRelease::parse(os), true).err();
            let m = e.map(|e| e.message).unwrap_or_default();
            assert!(m.starts_with(msg), "{m}");
        }
    }

    #[test]
    fn fields_are_validated() {
        let bad = [
            (
                v1::Docker {
                    source: 9,
                    ..Default::default()
                },
                "source",
            ),
            (
                v1::Docker {
                    source: DockerSource::Repository as i32,
                    ..Default::default()
                },
                "repository_url",
            ),
            (
                v1::Docker {
                    source: DockerSource::Repository as i32,
                    repository_url: "ftp://x".into(),
                    ..Default::default()
                },
                "repository_url",
            ),
            (
                v1::Docker {
                    repository_url: "https://m/".into(),
                    ..Default::default()
                },
                "repository_url",
            ),
            (
                v1::Docker {
                    source: DockerSource::Directory as i32,
                    package_directory: "rel/dir".into(),
                    ..Default::default()
                },
                "package_directory",
            ),
            (
                v1::Docker {
                    source: DockerSource::Directory as i32,
                    package_directory: "/a/../b".into(),
                    ..Default::default()
                },
                "package_directory",
            ),
            (
                v1::Docker {
                    version: "1.0; rm -rf /".into(),
                    ..Default::default()
                },
                "version",
            ),
            (
                v1::Docker {
                    log_max_size: "10 MB".into(),
                    ..Default::default()
                },
                "log_max_size",
            ),
            (
                v1::Docker {
                    log_max_size: "mm".into(),
                    ..Default::default()
                },
                "log_max_size",
            ),
            (
                v1::Docker {
                    log_max_file: 1000,
                    ..Default::default()
                },
                "log_max_file",
            ),
        ];
        for (p, field) in bad {
            assert_eq!(from_proto(&p).err().map(|e| e.field), Some(field), "{p:?}");
        }
    }

    #[test]
    fn local_sources_for_air_gapped_hosts() {
        let s = spec(v1::Docker {
            source: DockerSource::Repository as i32,
            repository_url: "http://mirror.lan/docker/rhel/9/x86_64/stable/".into(),
            signing_key: "http://mirror.lan/docker/rhel/gpg".into(),
            ..Default::default()
        });
        let st = steps(&s, &fresh(ROCKY_9, &s, false));
        assert_eq!(
            commands(&st)[..2],
            [
                "write /etc/yum.repos.d/docker-ce-local.repo",
                "write /etc/docker/daemon.json"
            ]
        );
        assert!(local_repo_file(&s).contains("baseurl=http://mirror.lan/docker/rhel/9/x86_64/stable\nenabled=1\ngpgcheck=1\ngpgkey=http://mirror.lan/docker/rhel/gpg\n"));
        let s = spec(v1::Docker {
            source: DockerSource::Directory as i32,
            package_directory: "/srv/pkgs".into(),
            ..Default::default()
        });
        let mut o = fresh(DEBIAN_12, &s, false);
        o.repo_ok = true;
        o.package_files = vec![
            "/srv/pkgs/containerd.io_1.7.25-1_amd64.deb".into(),
            "/srv/pkgs/docker-ce_28.0.0_amd64.deb".into(),
        ];
        assert_eq!(
            commands(&steps(&s, &o))[1],
            "apt-get install -y /srv/pkgs/containerd.io_1.7.25-1_amd64.deb /srv/pkgs/docker-ce_28.0.0_amd64.deb"
        );
    }
}
