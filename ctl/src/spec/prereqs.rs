//! The host prerequisite kinds of the spec file: `docker` and `group_member`.
//!
//! ```toml
//! [[resource]]
//! kind = "docker"
//! name = "engine"
//! source = "docker"             # default; or "distro", "repository", "directory"
//! # repository_url = "https://mirror.example/docker-ce/linux/debian"   # source = "repository"
//! # signing_key = "https://mirror.example/docker-ce/gpg"               # optional, repository
//! # package_directory = "/srv/packages/docker"                         # source = "directory"
//! # version = "5:27.5.1-1~debian.12~bookworm"   # optional pin; default the newest
//! allow_eol = false             # install on an end-of-life release anyway
//! remove_conflicts = false      # remove podman, runc, docker.io, ... when installed
//! log_max_size = "10m"          # json-file rotation; default "10m"
//! log_max_file = 3              # default 3, 1 to 100
//!
//! [[resource]]
//! kind = "group_member"
//! name = "centos-docker"
//! user = "centos"
//! group = "docker"              # default "docker"
//! create_user = false           # create the user (with a home) when missing
//! ```
//!
//! The checks mirror the agent's (`agent/src/resource/{docker,group_member}.rs`), which
//! validates again.

use kagent_proto::v1;
use serde::Deserialize;

/// `kind = "docker"`: Docker Engine installed the way Docker's docs say.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerSpec {
    pub name: String,
    pub source: Option<DockerSourceSpec>,
    pub repository_url: Option<String>,
    pub signing_key: Option<String>,
    pub package_directory: Option<String>,
    pub version: Option<String>,
    #[serde(default)]
    pub allow_eol: bool,
    #[serde(default)]
    pub remove_conflicts: bool,
    pub log_max_size: Option<String>,
    pub log_max_file: Option<u32>,
}

/// Where the Docker packages come from (`DockerSource` in the API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DockerSourceSpec {
    /// Docker's repository, download.docker.com (the default).
    Docker,
    /// The distribution's own docker.io (Debian, Ubuntu).
    Distro,
    /// A local mirror of Docker's repository (air-gapped).
    Repository,
    /// A directory of .deb or .rpm files on the host (air-gapped).
    Directory,
}

/// `kind = "group_member"`: a user in a supplementary group, other memberships kept.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMemberSpec {
    pub name: String,
    pub user: String,
    /// Default "docker" (the agent's).
    pub group: Option<String>,
    #[serde(default)]
    pub create_user: bool,
}

/// Log files the agent keeps per container.
pub const LOG_MAX_FILES: std::ops::RangeInclusive<u32> = 1..=100;

pub fn check_docker(d: &DockerSpec) -> Result<(), String> {
    let source = d.source.unwrap_or(DockerSourceSpec::Docker);
    let only = |field: &str, value: &Option<String>, with: &str| match value.as_deref() {
        Some(v) if !v.is_empty() => Err(format!(
            "field `{field}`: only used with source = \"{with}\"; remove it or set source = \
             \"{with}\""
        )),
        _ => Ok(()),
    };
    if source == DockerSourceSpec::Repository {
        match d.repository_url.as_deref() {
            None | Some("") => {
                return Err(
                    "field `repository_url`: missing; source = \"repository\" needs \
                            the URL of the local mirror (http://, https:// or file:///)"
                        .to_string(),
                );
            }
            Some(url) => check_url(url).map_err(|e| format!("field `repository_url`: {e}"))?,
        }
        match d.signing_key.as_deref() {
            None | Some("") => {}
            Some(key) if key.starts_with('/') => {
                check_abs_path(key).map_err(|e| format!("field `signing_key`: {e}"))?
            }
            Some(key) => check_url(key).map_err(|e| format!("field `signing_key`: {e}"))?,
        }
    } else {
        only("repository_url", &d.repository_url, "repository")?;
        only("signing_key", &d.signing_key, "repository")?;
    }
    if source == DockerSourceSpec::Directory {
        match d.package_directory.as_deref() {
            None | Some("") => {
                return Err(
                    "field `package_directory`: missing; source = \"directory\" needs \
                            the absolute path of a directory of .deb or .rpm files"
                        .to_string(),
                );
            }
            Some(dir) => {
                check_abs_path(dir).map_err(|e| format!("field `package_directory`: {e}"))?
            }
        }
    } else {
        only("package_directory", &d.package_directory, "directory")?;
    }
    if let Some(version) = &d.version {
        let ok = |c: char| c.is_ascii_alphanumeric() || ".:~+_-".contains(c);
        if version.len() > 64 || !version.chars().all(ok) {
            return Err(format!(
                "field `version`: {version:?} is not a package version; write it as \
                 `apt-cache madison docker-ce` or `dnf list docker-ce --showduplicates` prints \
                 it, e.g. \"5:27.5.1-1~debian.12~bookworm\""
            ));
        }
    }
    if let Some(size) = &d.log_max_size {
        let digits = size.trim_end_matches(['k', 'm', 'g']);
        if digits.is_empty()
            || !digits.chars().all(|c| c.is_ascii_digit())
            || size.len() - digits.len() > 1
            || size.len() > 12
        {
            return Err(format!(
                "field `log_max_size`: {size:?} is not a size; write a number with k, m or g, \
                 e.g. \"10m\""
            ));
        }
    }
    match d.log_max_file {
        Some(n) if !LOG_MAX_FILES.contains(&n) => Err(format!(
            "field `log_max_file`: {n} is out of range; keep {} to {} log files",
            LOG_MAX_FILES.start(),
            LOG_MAX_FILES.end()
        )),
        _ => Ok(()),
    }
}

pub fn check_group_member(g: &GroupMemberSpec) -> Result<(), String> {
    check_account_name(&g.user).map_err(|e| format!("field `user`: {e}"))?;
    if let Some(group) = &g.group {
        check_account_name(group).map_err(|e| format!("field `group`: {e}"))?;
    }
    Ok(())
}

/// What `useradd` accepts by default: `[a-z_][a-z0-9_-]*[$]?`, at most 32 characters.
fn check_account_name(name: &str) -> Result<(), String> {
    let body = name.strip_suffix('$').unwrap_or(name);
    let ok = !body.is_empty()
        && name.len() <= 32
        && body.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && body
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name: use a lower-case letter or `_`, then lower-case \
             letters, digits, `_` or `-` (optionally a final `$`), at most 32 characters"
        ))
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let scheme_ok = ["http://", "https://", "file:///"]
        .iter()
        .any(|s| url.starts_with(s));
    if !scheme_ok || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{url:?} is not a URL; write http://, https:// or file:///... without spaces"
        ));
    }
    Ok(())
}

fn check_abs_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/')
        || path.split('/').any(|c| c == "..")
        || path.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{path:?} must be an absolute path without `..` or spaces"
        ));
    }
    Ok(())
}

/// Unset fields stay empty / 0: the agent applies its defaults.
pub fn docker_to_proto(d: &DockerSpec) -> v1::Docker {
    v1::Docker {
        source: match d.source {
            None => v1::DockerSource::Unspecified,
            Some(DockerSourceSpec::Docker) => v1::DockerSource::Docker,
            Some(DockerSourceSpec::Distro) => v1::DockerSource::Distro,
            Some(DockerSourceSpec::Repository) => v1::DockerSource::Repository,
            Some(DockerSourceSpec::Directory) => v1::DockerSource::Directory,
        } as i32,
        repository_url: d.repository_url.clone().unwrap_or_default(),
        signing_key: d.signing_key.clone().unwrap_or_default(),
        package_directory: d.package_directory.clone().unwrap_or_default(),
        version: d.version.clone().unwrap_or_default(),
        allow_eol: d.allow_eol,
        remove_conflicts: d.remove_conflicts,
        log_max_size: d.log_max_size.clone().unwrap_or_default(),
        log_max_file: d.log_max_file.unwrap_or(0),
    }
}

pub fn group_member_to_proto(g: &GroupMemberSpec) -> v1::GroupMember {
    v1::GroupMember {
        user: g.user.clone(),
        group: g.group.clone().unwrap_or_default(),
        create_user: g.create_user,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[resource]]
kind = "docker"
name = "engine"
source = "distro"
version = "26.1.5+dfsg1-9+b9"
allow_eol = true
remove_conflicts = true
log_max_size = "20m"
log_max_file = 5

[[resource]]
kind = "docker"
name = "mirrored"
source = "repository"
repository_url = "https://mirror.example/docker-ce/linux/debian"
signing_key = "/etc/pki/docker.asc"

[[resource]]
kind = "docker"
name = "offline"
source = "directory"
package_directory = "/srv/packages/docker"

[[resource]]
kind = "docker"
name = "defaults"

[[resource]]
kind = "group_member"
name = "centos-docker"
user = "centos"
group = "docker"
create_user = true

[[resource]]
kind = "group_member"
name = "ci"
user = "_ci-runner$"
"#;

    #[test]
    fn docker_and_group_member_convert_to_the_api() -> anyhow::Result<()> {
        let resources = super::super::parse(GOOD)?;
        let spec = super::super::to_proto(&resources, std::path::Path::new("."))?;
        assert_eq!(spec.resources.len(), 6);
        let kinds: Vec<_> = spec.resources.iter().map(|r| r.kind.clone()).collect();
        let Some(v1::resource::Kind::Docker(d)) = &kinds[0] else {
            anyhow::bail!("not docker: {:?}", spec.resources[0])
        };
        assert_eq!(spec.resources[0].name, "engine");
        assert_eq!(
            d,
            &v1::Docker {
                source: v1::DockerSource::Distro as i32,
                version: "26.1.5+dfsg1-9+b9".into(),
                allow_eol: true,
                remove_conflicts: true,
                log_max_size: "20m".into(),
                log_max_file: 5,
                ..Default::default()
            }
        );
        let Some(v1::resource::Kind::Docker(d)) = &kinds[1] else {
            anyhow::bail!("docker")
        };
        assert_eq!(d.source, v1::DockerSource::Repository as i32);
        assert_eq!(
            d.repository_url,
            "https://mirror.example/docker-ce/linux/debian"
        );
        assert_eq!(d.signing_key, "/etc/pki/docker.asc");
        let Some(v1::resource::Kind::Docker(d)) = &kinds[2] else {
            anyhow::bail!("docker")
        };
        assert_eq!(d.source, v1::DockerSource::Directory as i32);
        assert_eq!(d.package_directory, "/srv/packages/docker");
        // Defaults are left to the agent.
        let Some(v1::resource::Kind::Docker(d)) = &kinds[3] else {
            anyhow::bail!("docker")
        };
        assert_eq!(d, &v1::Docker::default());
        let Some(v1::resource::Kind::GroupMember(g)) = &kinds[4] else {
            anyhow::bail!("not group_member: {:?}", spec.resources[4])
        };
        assert_eq!(
            g,
            &v1::GroupMember {
                user: "centos".into(),
                group: "docker".into(),
                create_user: true,
            }
        );
        let Some(v1::resource::Kind::GroupMember(g)) = &kinds[5] else {
            anyhow::bail!("group_member")
        };
        assert_eq!((g.user.as_str(), g.group.as_str()), ("_ci-runner$", ""));
        assert!(!g.create_user);
        Ok(())
    }

    #[test]
    fn docker_and_group_member_refusals_name_the_resource_and_field() {
        let d =
            |extra: &str| format!("[[resource]]\nkind = \"docker\"\nname = \"engine\"\n{extra}\n");
        let g = |extra: &str| {
            format!("[[resource]]\nkind = \"group_member\"\nname = \"member\"\n{extra}\n")
        };
        for (text, want) in [
            // docker
            (
                d("sorce = \"distro\""),
                r#"resource #1 ("engine"): unknown field `sorce`, expected one of"#,
            ),
            (
                d("source = \"mirror\""),
                r#"resource #1 ("engine"): field `source`: unknown variant `mirror`, expected one of `docker`, `distro`, `repository`, `directory`"#,
            ),
            (
                d("source = \"Distro\""),
                r#"resource #1 ("engine"): field `source`: unknown variant `Distro`"#,
            ),
            (
                d("source = 2"),
                r#"resource #1 ("engine"): field `source`: invalid type"#,
            ),
            (
                "[[resource]]\nkind = \"docker\"\nsource = \"distro\"\n".to_string(),
                "resource #1: missing field `name`",
            ),
            (
                d("source = \"repository\""),
                r#"resource #1 ("engine"): field `repository_url`: missing; source = "repository" needs"#,
            ),
            (
                d("source = \"repository\"\nrepository_url = \"mirror.example/docker\""),
                r#"resource #1 ("engine"): field `repository_url`: "mirror.example/docker" is not a URL"#,
            ),
            (
                d(
                    "source = \"repository\"\nrepository_url = \"https://m/\"\nsigning_key = \"gpg\"",
                ),
                r#"resource #1 ("engine"): field `signing_key`: "gpg" is not a URL"#,
            ),
            (
                d("repository_url = \"https://m/\""),
                r#"resource #1 ("engine"): field `repository_url`: only used with source = "repository""#,
            ),
            (
                d("source = \"distro\"\nsigning_key = \"/k.asc\""),
                r#"resource #1 ("engine"): field `signing_key`: only used with source = "repository""#,
            ),
            (
                d("source = \"directory\""),
                r#"resource #1 ("engine"): field `package_directory`: missing; source = "directory" needs"#,
            ),
            (
                d("source = \"directory\"\npackage_directory = \"pkgs\""),
                r#"resource #1 ("engine"): field `package_directory`: "pkgs" must be an absolute path"#,
            ),
            (
                d("package_directory = \"/srv/pkgs\""),
                r#"resource #1 ("engine"): field `package_directory`: only used with source = "directory""#,
            ),
            (
                d("version = \"27 latest\""),
                r#"resource #1 ("engine"): field `version`: "27 latest" is not a package version"#,
            ),
            (
                d("log_max_size = \"10MB\""),
                r#"resource #1 ("engine"): field `log_max_size`: "10MB" is not a size; write a number with k, m or g"#,
            ),
            (
                d("log_max_file = 0"),
                r#"resource #1 ("engine"): field `log_max_file`: 0 is out of range; keep 1 to 100 log files"#,
            ),
            (
                d("log_max_file = 101"),
                r#"resource #1 ("engine"): field `log_max_file`: 101 is out of range"#,
            ),
            (
                d("log_max_file = \"3\""),
                r#"resource #1 ("engine"): field `log_max_file`: invalid type: string "3", expected u32"#,
            ),
            (
                d("allow_eol = \"yes\""),
                r#"resource #1 ("engine"): field `allow_eol`: invalid type: string "yes""#,
            ),
            (
                "[[resource]]\nkind = \"dockr\"\nname = \"engine\"\n".to_string(),
                r#"resource #1 ("engine"): field `kind`: unknown kind "dockr"; expected "file", "secret", "docker", "group_member","#,
            ),
            // group_member
            (
                g("user = \"centos\"\ngroupe = \"docker\""),
                r#"resource #1 ("member"): unknown field `groupe`, expected one of"#,
            ),
            (
                g("group = \"docker\""),
                r#"resource #1 ("member"): missing field `user`"#,
            ),
            (
                g("user = \"Centos\""),
                r#"resource #1 ("member"): field `user`: "Centos" is not a valid name: use a lower-case letter"#,
            ),
            (
                g("user = \"\""),
                r#"resource #1 ("member"): field `user`: "" is not a valid name"#,
            ),
            (
                g("user = \"1centos\""),
                r#"resource #1 ("member"): field `user`: "1centos" is not a valid name"#,
            ),
            (
                g(&format!("user = \"{}\"", "a".repeat(33))),
                "field `user`: \"aaaa",
            ),
            (
                g("user = \"centos\"\ngroup = \"docker users\""),
                r#"resource #1 ("member"): field `group`: "docker users" is not a valid name"#,
            ),
            (
                g("user = \"centos\"\ncreate_user = 1"),
                r#"resource #1 ("member"): field `create_user`: invalid type: integer `1`"#,
            ),
            (
                g("user = 1000"),
                r#"resource #1 ("member"): field `user`: invalid type: integer `1000`, expected a string"#,
            ),
        ] {
            let got = super::super::parse(&text)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_else(|| "parsed".to_string());
            assert!(
                got.contains(want),
                "spec:\n{text}\nwant: {want}\ngot:  {got}"
            );
            assert!(!got.contains('\n'), "one line expected: {got:?}");
        }
    }

    #[test]
    fn the_shipped_docker_host_example_is_valid() -> anyhow::Result<()> {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/docker-host.toml");
        let spec = super::super::load(&path)?;
        let kinds: Vec<_> = spec.resources.iter().map(|r| r.kind.clone()).collect();
        let [
            Some(v1::resource::Kind::Docker(d)),
            Some(v1::resource::Kind::GroupMember(g)),
        ] = kinds.as_slice()
        else {
            anyhow::bail!("expected docker then group_member: {kinds:?}")
        };
        assert_eq!(d.source, v1::DockerSource::Distro as i32);
        assert_eq!((d.log_max_size.as_str(), d.log_max_file), ("10m", 3));
        assert_eq!((g.user.as_str(), g.group.as_str()), ("centos", "docker"));
        Ok(())
    }

    #[test]
    fn account_names_follow_useradd() {
        for ok in ["centos", "_svc", "ci-runner_2", "machine$", &"a".repeat(32)] {
            assert_eq!(check_account_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "$",
            "Root",
            "9lives",
            "-x",
            "a.b",
            "a$b",
            &"a".repeat(33),
        ] {
            assert!(check_account_name(bad).is_err(), "{bad:?}");
        }
    }
}
