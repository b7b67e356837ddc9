//! The host spec file `kctl apply -f spec.toml` reads: a list of `[[resource]]` tables, each
//! with a `kind`, turned into the API's `HostSpec`.
//!
//! ```toml
//! [[resource]]
//! kind = "file"                 # or "secret"
//! name = "motd"                 # [a-z0-9._-], 1 to 63 characters, unique per kind
//! path = "/srv/kctl/motd"
//! content = "hello\n"           # or content_file = "motd.txt" (relative to the spec's dir)
//! mode = "0644"                 # optional: an octal string, or a TOML octal literal 0o644
//! ```
//!
//! kctl checks what it can before anything is sent (unknown kinds and fields, bad modes, names,
//! duplicates, `content` vs `content_file`) and names the resource and field in every error.
//! The agent validates again, authoritatively (managed roots, symbolic links, ...).

mod certificates;
mod containers;
mod keycloak;
mod prereqs;

use std::fmt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use kagent_proto::v1;
use serde::Deserialize;

/// The whole file: only `[[resource]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    #[serde(default)]
    resource: Vec<toml::Table>,
}

/// One `[[resource]]` table. The `kind` key selects the variant.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ResourceSpec {
    File(FileSpec),
    Secret(SecretSpec),
    Docker(DockerSpec),
    GroupMember(GroupMemberSpec),
    Container(Box<ContainerSpec>),
    Network(NetworkSpec),
    Volume(VolumeSpec),
    Stack(StackSpec),
    Certificate(Box<CertificateSpec>),
    KeycloakRealm(Box<KeycloakRealmSpec>),
}

pub use certificates::CertificateSpec;
pub use containers::{ContainerSpec, NetworkSpec, StackSpec, VolumeSpec};
pub use keycloak::{KeycloakRealmSpec, admin_proto as keycloak_admin_proto};
pub use prereqs::{DockerSourceSpec, DockerSpec, GroupMemberSpec};

/// The kinds `kind` may name, for error messages.
const KINDS: &str = "\"file\", \"secret\", \"docker\", \"group_member\", \"container\", \"network\", \"volume\", \"stack\", \"certificate\" or \"keycloak_realm\"";

/// `kind = "file"`: a file with exact content.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub name: String,
    pub path: String,
    pub content: Option<String>,
    /// Read by kctl, relative to the spec file's directory.
    pub content_file: Option<PathBuf>,
    pub mode: Option<Mode>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub dir_mode: Option<Mode>,
    #[serde(default)]
    pub sensitive: bool,
}

/// `kind = "secret"`: a value generated on the host, never sent back.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    pub name: String,
    pub path: String,
    pub length: Option<u32>,
    pub alphabet: Option<AlphabetSpec>,
    pub mode: Option<Mode>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub dir_mode: Option<Mode>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlphabetSpec {
    Alphanumeric,
    Hex,
    Base64url,
}

/// A permission mode: `"0644"` (a string of octal digits, `0o` prefix allowed) or an integer
/// such as the TOML octal literal `0o644`. A plain decimal integer above 0o777 (`644`) is
/// refused rather than guessed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode(pub u32);

/// Secret lengths the agent accepts.
pub const SECRET_LENGTHS: std::ops::RangeInclusive<u32> = 16..=256;

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Mode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an octal mode such as \"0644\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Mode, E> {
                parse_mode_str(s).map(Mode).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Mode, E> {
                mode_from_int(v).map(Mode).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Mode, E> {
                mode_from_int(i64::try_from(v).unwrap_or(i64::MAX))
                    .map(Mode)
                    .map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn parse_mode_str(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let bad = || format!("{s:?} is not an octal mode; write e.g. \"0644\"");
    if digits.is_empty() || digits.len() > 5 || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
        return Err(bad());
    }
    let mode = u32::from_str_radix(digits, 8).map_err(|_| bad())?;
    if mode > 0o7777 {
        return Err(bad());
    }
    Ok(mode)
}

fn mode_from_int(v: i64) -> Result<u32, String> {
    if (0..=0o777).contains(&v) {
        return u32::try_from(v).map_err(|e| e.to_string());
    }
    if v > 0o777 && v.to_string().chars().all(|c| ('0'..='7').contains(&c)) {
        return Err(format!(
            "{v} is a decimal integer (octal {v:o}); write the mode as a string, e.g. \"0{v}\""
        ));
    }
    Err(format!(
        "{v} is not a file mode; write it as an octal string, e.g. \"0644\""
    ))
}

impl ResourceSpec {
    pub fn name(&self) -> &str {
        match self {
            ResourceSpec::File(f) => &f.name,
            ResourceSpec::Secret(s) => &s.name,
            ResourceSpec::Docker(d) => &d.name,
            ResourceSpec::GroupMember(g) => &g.name,
            ResourceSpec::Container(c) => &c.name,
            ResourceSpec::Network(n) => &n.name,
            ResourceSpec::Volume(v) => &v.name,
            ResourceSpec::Stack(s) => &s.name,
            ResourceSpec::Certificate(c) => &c.name,
            ResourceSpec::KeycloakRealm(k) => &k.name,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ResourceSpec::File(_) => "file",
            ResourceSpec::Secret(_) => "secret",
            ResourceSpec::Docker(_) => "docker",
            ResourceSpec::GroupMember(_) => "group_member",
            ResourceSpec::Container(_) => "container",
            ResourceSpec::Network(_) => "network",
            ResourceSpec::Volume(_) => "volume",
            ResourceSpec::Stack(_) => "stack",
            ResourceSpec::Certificate(_) => "certificate",
            ResourceSpec::KeycloakRealm(_) => "keycloak_realm",
        }
    }

    fn path(&self) -> Option<&str> {
        match self {
            ResourceSpec::File(f) => Some(&f.path),
            ResourceSpec::Secret(s) => Some(&s.path),
            ResourceSpec::Docker(_)
            | ResourceSpec::GroupMember(_)
            | ResourceSpec::Container(_)
            | ResourceSpec::Network(_)
            | ResourceSpec::Volume(_)
            | ResourceSpec::Stack(_)
            | ResourceSpec::Certificate(_)
            | ResourceSpec::KeycloakRealm(_) => None,
        }
    }
}

/// Reads and checks the spec at `path`, then builds the `HostSpec` to send (reading any
/// `content_file`s). Errors start with the path as given.
pub fn load(path: &Path) -> Result<v1::HostSpec> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {origin}"))?;
    let resources = parse(&text).map_err(|e| anyhow!("{origin}: {e:#}"))?;
    let base = path.parent().unwrap_or(Path::new("."));
    to_proto(&resources, base).map_err(|e| anyhow!("{origin}: {e:#}"))
}

/// Parses and checks the spec text (no file system access).
pub fn parse(text: &str) -> Result<Vec<ResourceSpec>> {
    let file: SpecFile =
        toml::from_str(text).map_err(|e| anyhow!("{}", e.to_string().trim_end()))?;
    check_file(file)
}

/// [`parse`] for a spec already read as a TOML table (a rendered stack, see `crate::stack`):
/// the same checks and the same errors.
pub fn parse_table(table: toml::Table) -> Result<Vec<ResourceSpec>> {
    let file = SpecFile::deserialize(toml::Value::Table(table))
        .map_err(|e| anyhow!("{}", e.to_string().trim_end()))?;
    check_file(file)
}

fn check_file(file: SpecFile) -> Result<Vec<ResourceSpec>> {
    if file.resource.is_empty() {
        bail!("no resources; add one or more `[[resource]]` tables (note the double brackets)");
    }
    let mut out: Vec<ResourceSpec> = Vec::with_capacity(file.resource.len());
    for (i, table) in file.resource.into_iter().enumerate() {
        let label = label(i, &table);
        let resource = deserialize(table).map_err(|e| anyhow!("{label}: {e}"))?;
        check(&resource).map_err(|e| anyhow!("{label}: {e}"))?;
        if let Some(j) = out
            .iter()
            .position(|r| r.kind() == resource.kind() && r.name() == resource.name())
        {
            bail!(
                "{label}: field `name`: {:?} is already the name of {} resource #{}; names are \
                 unique per kind",
                resource.name(),
                resource.kind(),
                j + 1
            );
        }
        out.push(resource);
    }
    Ok(out)
}

/// `resource #2 ("motd")`, or `resource #2` when the table has no usable name.
fn label(index: usize, table: &toml::Table) -> String {
    match table.get("name").and_then(|n| n.as_str()) {
        Some(name) => format!("resource #{} ({name:?})", index + 1),
        None => format!("resource #{}", index + 1),
    }
}

/// Deserializes one table. The derived, tagged enum decides; when it refuses, the table is
/// decoded again as the kind's own struct with path tracking, to name the field at fault
/// (serde's tagged enums buffer the table and lose it).
fn deserialize(table: toml::Table) -> Result<ResourceSpec, String> {
    let first = ResourceSpec::deserialize(toml::Value::Table(table.clone()));
    let Err(first) = first else {
        return first.map_err(|e| e.to_string());
    };
    let mut rest = table;
    let kind = match rest.remove("kind") {
        None => return Err(format!("field `kind`: missing; expected {KINDS}")),
        Some(toml::Value::String(kind)) => kind,
        Some(other) => {
            return Err(format!(
                "field `kind`: expected {KINDS}, found {}",
                other.type_str()
            ));
        }
    };
    let rest = toml::Value::Table(rest);
    let detail = match kind.as_str() {
        "file" => serde_path_to_error::deserialize::<_, FileSpec>(rest)
            .err()
            .map(located),
        "secret" => serde_path_to_error::deserialize::<_, SecretSpec>(rest)
            .err()
            .map(located),
        "docker" => serde_path_to_error::deserialize::<_, DockerSpec>(rest)
            .err()
            .map(located),
        "group_member" => serde_path_to_error::deserialize::<_, GroupMemberSpec>(rest)
            .err()
            .map(located),
        "container" => serde_path_to_error::deserialize::<_, ContainerSpec>(rest)
            .err()
            .map(located),
        "network" => serde_path_to_error::deserialize::<_, NetworkSpec>(rest)
            .err()
            .map(located),
        "volume" => serde_path_to_error::deserialize::<_, VolumeSpec>(rest)
            .err()
            .map(located),
        "stack" => serde_path_to_error::deserialize::<_, StackSpec>(rest)
            .err()
            .map(located),
        "certificate" => serde_path_to_error::deserialize::<_, CertificateSpec>(rest)
            .err()
            .map(located),
        "keycloak_realm" => serde_path_to_error::deserialize::<_, KeycloakRealmSpec>(rest)
            .err()
            .map(located),
        other => {
            return Err(format!(
                "field `kind`: unknown kind {other:?}; expected {KINDS}"
            ));
        }
    };
    Err(detail.unwrap_or_else(|| first.to_string().trim_end().to_string()))
}

fn located(e: serde_path_to_error::Error<toml::de::Error>) -> String {
    let path = e.path().to_string();
    // `message()`: without the "in `key`" line the toml deserializer appends.
    let message = e.inner().message().trim_end().to_string();
    if path == "." || message.starts_with("unknown field") || message.starts_with("missing field") {
        message
    } else {
        format!("field `{path}`: {message}")
    }
}

/// The checks serde cannot express.
fn check(resource: &ResourceSpec) -> Result<(), String> {
    check_name(resource.name()).map_err(|e| format!("field `name`: {e}"))?;
    if let Some(path) = resource.path() {
        check_path(path).map_err(|e| format!("field `path`: {e}"))?;
    }
    match resource {
        ResourceSpec::File(f) => match (&f.content, &f.content_file) {
            (Some(_), Some(_)) => {
                Err("fields `content` and `content_file`: give only one of them".to_string())
            }
            (None, None) => Err("field `content`: missing; give `content` (the text) or \
                                 `content_file` (a file next to the spec)"
                .to_string()),
            _ => Ok(()),
        },
        ResourceSpec::Secret(s) => match s.length {
            Some(n) if !SECRET_LENGTHS.contains(&n) => Err(format!(
                "field `length`: {n} is out of range; a secret has {} to {} characters",
                SECRET_LENGTHS.start(),
                SECRET_LENGTHS.end()
            )),
            _ => Ok(()),
        },
        ResourceSpec::Docker(d) => prereqs::check_docker(d),
        ResourceSpec::GroupMember(g) => prereqs::check_group_member(g),
        ResourceSpec::Container(c) => containers::check_container(c),
        ResourceSpec::Network(_) | ResourceSpec::Volume(_) | ResourceSpec::Stack(_) => Ok(()),
        ResourceSpec::Certificate(c) => certificates::check_certificate(c),
        ResourceSpec::KeycloakRealm(k) => keycloak::check_keycloak_realm(k),
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("{name:?} must be 1 to 63 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(*c)))
    {
        return Err(format!(
            "{name:?} contains {c:?}; names are made of a-z, 0-9, `.`, `_` and `-`"
        ));
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not an absolute path"));
    }
    if path.contains('\0') {
        return Err(format!("{path:?} contains a NUL byte"));
    }
    if Path::new(path)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        return Err(format!("{path:?} contains `..`"));
    }
    if path.ends_with('/') {
        return Err(format!("{path:?} names a directory; give the file's path"));
    }
    Ok(())
}

/// Builds the API's `HostSpec`, reading `content_file`s relative to `base`.
pub fn to_proto(resources: &[ResourceSpec], base: &Path) -> Result<v1::HostSpec> {
    let mut out = Vec::with_capacity(resources.len());
    for (i, r) in resources.iter().enumerate() {
        let kind = match r {
            ResourceSpec::File(f) => {
                let content = match (&f.content, &f.content_file) {
                    (Some(text), _) => text.as_bytes().to_vec(),
                    (None, Some(file)) => {
                        let full = base.join(file);
                        std::fs::read(&full).map_err(|e| {
                            anyhow!(
                                "resource #{} ({:?}): field `content_file`: cannot read {}: {e}",
                                i + 1,
                                f.name,
                                full.display()
                            )
                        })?
                    }
                    (None, None) => Vec::new(),
                };
                v1::resource::Kind::File(v1::File {
                    path: f.path.clone(),
                    content,
                    mode: f.mode.map(|m| m.0),
                    uid: f.uid,
                    gid: f.gid,
                    dir_mode: f.dir_mode.map(|m| m.0),
                    sensitive: f.sensitive,
                })
            }
            ResourceSpec::Secret(s) => v1::resource::Kind::Secret(v1::Secret {
                path: s.path.clone(),
                // 0 = the agent's default (32).
                length: s.length.unwrap_or(0),
                alphabet: match s.alphabet {
                    None => v1::Alphabet::Unspecified,
                    Some(AlphabetSpec::Alphanumeric) => v1::Alphabet::Alphanumeric,
                    Some(AlphabetSpec::Hex) => v1::Alphabet::Hex,
                    Some(AlphabetSpec::Base64url) => v1::Alphabet::Base64url,
                } as i32,
                mode: s.mode.map(|m| m.0),
                uid: s.uid,
                gid: s.gid,
                dir_mode: s.dir_mode.map(|m| m.0),
            }),
            ResourceSpec::Docker(d) => v1::resource::Kind::Docker(prereqs::docker_to_proto(d)),
            ResourceSpec::GroupMember(g) => {
                v1::resource::Kind::GroupMember(prereqs::group_member_to_proto(g))
            }
            ResourceSpec::Container(c) => v1::resource::Kind::Container(
                containers::container_to_proto(c)
                    .map_err(|e| anyhow!("resource #{} ({:?}): {e}", i + 1, c.name))?,
            ),
            ResourceSpec::Network(n) => {
                v1::resource::Kind::Network(containers::network_to_proto(n))
            }
            ResourceSpec::Volume(v) => v1::resource::Kind::Volume(containers::volume_to_proto(v)),
            ResourceSpec::Stack(s) => v1::resource::Kind::Stack(containers::stack_to_proto(s)),
            ResourceSpec::Certificate(c) => v1::resource::Kind::Certificate(
                certificates::certificate_to_proto(c)
                    .map_err(|e| anyhow!("resource #{} ({:?}): {e}", i + 1, c.name))?,
            ),
            ResourceSpec::KeycloakRealm(k) => v1::resource::Kind::KeycloakRealm(
                keycloak::keycloak_realm_to_proto(k)
                    .map_err(|e| anyhow!("resource #{} ({:?}): {e}", i + 1, k.name))?,
            ),
        };
        out.push(v1::Resource {
            name: r.name().to_string(),
            kind: Some(kind),
        });
    }
    Ok(v1::HostSpec { resources: out })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[resource]]
kind = "file"
name = "motd"
path = "/srv/kctl/motd"
content = "hello\n"
mode = "0644"
uid = 0
gid = 0
dir_mode = "0755"
sensitive = false

[[resource]]
kind = "file"
name = "banner"
path = "/srv/kctl/banner"
content_file = "banner.txt"
mode = 0o600

[[resource]]
kind = "secret"
name = "db-password"
path = "/srv/kctl/secrets/db"
length = 32
alphabet = "alphanumeric"
mode = "0600"

[[resource]]
kind = "secret"
name = "motd"
path = "/srv/kctl/secrets/other"
"#;

    #[test]
    fn a_good_spec_converts_to_the_api() -> Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("banner.txt"), b"\xffbinary")?;
        let spec_path = dir.path().join("spec.toml");
        std::fs::write(&spec_path, GOOD)?;
        let spec = load(&spec_path)?;
        assert_eq!(spec.resources.len(), 4);
        let r = &spec.resources[0];
        assert_eq!(r.name, "motd");
        let Some(v1::resource::Kind::File(f)) = &r.kind else {
            bail!("not a file: {r:?}")
        };
        assert_eq!(f.path, "/srv/kctl/motd");
        assert_eq!(f.content, b"hello\n");
        assert_eq!(
            (f.mode, f.uid, f.gid, f.dir_mode),
            (Some(0o644), Some(0), Some(0), Some(0o755))
        );
        let Some(v1::resource::Kind::File(f)) = &spec.resources[1].kind else {
            bail!("file")
        };
        assert_eq!(f.content, b"\xffbinary");
        assert_eq!((f.mode, f.uid, f.dir_mode), (Some(0o600), None, None));
        let Some(v1::resource::Kind::Secret(s)) = &spec.resources[2].kind else {
            bail!("secret")
        };
        assert_eq!(s.length, 32);
        assert_eq!(s.alphabet, v1::Alphabet::Alphanumeric as i32);
        assert_eq!(s.mode, Some(0o600));
        // Defaults are left to the agent.
        let Some(v1::resource::Kind::Secret(s)) = &spec.resources[3].kind else {
            bail!("secret")
        };
        assert_eq!((s.length, s.alphabet, s.mode), (0, 0, None));
        Ok(())
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode_str("0644"), Ok(0o644));
        assert_eq!(parse_mode_str("644"), Ok(0o644));
        assert_eq!(parse_mode_str("0o755"), Ok(0o755));
        assert_eq!(parse_mode_str("4755"), Ok(0o4755));
        assert_eq!(parse_mode_str("0"), Ok(0));
        assert!(parse_mode_str("0999").is_err());
        assert!(parse_mode_str("").is_err());
        assert!(parse_mode_str("rw-r--r--").is_err());
        assert!(parse_mode_str("77777").is_err());
        assert_eq!(mode_from_int(0o644), Ok(0o644));
        assert_eq!(mode_from_int(420), Ok(0o644));
        assert!(
            mode_from_int(644)
                .err()
                .unwrap_or_default()
                .contains("decimal integer")
        );
        assert!(mode_from_int(-1).is_err());
        assert!(mode_from_int(99999).is_err());
    }

    fn file(extra: &str) -> String {
        format!(
            "[[resource]]\nkind = \"file\"\nname = \"motd\"\npath = \"/srv/kctl/motd\"\n{extra}\n"
        )
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(r) => format!("unexpectedly parsed: {r:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn every_refusal_names_the_resource_and_field() {
        let two = |second: &str| format!("{}{second}", file("content = \"x\""));
        let cases: Vec<(String, &str)> = vec![
            (
                two(&file("content = \"x\"\nmode = \"0999\"").replace("\"motd\"", "\"m2\"")),
                r#"resource #2 ("m2"): field `mode`: "0999" is not an octal mode; write e.g. "0644""#,
            ),
            (
                file("content = \"x\"\ndir_mode = \"abc\""),
                r#"resource #1 ("motd"): field `dir_mode`: "abc" is not an octal mode"#,
            ),
            (
                file("content = \"x\"\nmode = 644"),
                r#"resource #1 ("motd"): field `mode`: 644 is a decimal integer (octal 1204); write the mode as a string, e.g. "0644""#,
            ),
            (
                file("content = \"x\"\nmode = true"),
                r#"resource #1 ("motd"): field `mode`: invalid type: boolean `true`, expected an octal mode such as "0644""#,
            ),
            (
                file("content = \"x\"\nuid = \"root\""),
                r#"resource #1 ("motd"): field `uid`: invalid type: string "root", expected u32"#,
            ),
            (
                file("content = \"x\"\ngid = -1"),
                r#"resource #1 ("motd"): field `gid`: invalid value"#,
            ),
            (
                file("content = \"x\"\nsensitive = \"yes\""),
                r#"resource #1 ("motd"): field `sensitive`: invalid type: string "yes""#,
            ),
            (
                file("contnt = \"x\""),
                r#"resource #1 ("motd"): unknown field `contnt`, expected one of"#,
            ),
            (
                file("content = \"x\"\nlength = 32"),
                r#"resource #1 ("motd"): unknown field `length`"#,
            ),
            (file(""), r#"resource #1 ("motd"): field `content`: missing; give `content`"#),
            (
                file("content = \"x\"\ncontent_file = \"y\""),
                r#"resource #1 ("motd"): fields `content` and `content_file`: give only one"#,
            ),
            (
                "[[resource]]\nkind = \"dir\"\nname = \"d\"\npath = \"/srv/kctl/d\"\n".into(),
                r#"resource #1 ("d"): field `kind`: unknown kind "dir"; expected "file", "secret","#,
            ),
            (
                "[[resource]]\nname = \"d\"\npath = \"/srv/kctl/d\"\n".into(),
                r#"resource #1 ("d"): field `kind`: missing; expected "file", "secret","#,
            ),
            (
                "[[resource]]\nkind = 3\nname = \"d\"\npath = \"/srv/kctl/d\"\n".into(),
                r#"resource #1 ("d"): field `kind`: expected "file", "secret","#,
            ),
            (
                "[[resource]]\nkind = \"file\"\npath = \"/srv/kctl/d\"\ncontent = \"\"\n".into(),
                "resource #1: missing field `name`",
            ),
            (
                "[[resource]]\nkind = \"file\"\nname = \"d\"\ncontent = \"\"\n".into(),
                r#"resource #1 ("d"): missing field `path`"#,
            ),
            (
                file("content = \"x\"").replace("name = \"motd\"", "name = \"\""),
                r#"resource #1 (""): field `name`: "" must be 1 to 63 characters"#,
            ),
            (
                file("content = \"x\"").replace("\"motd\"", "\"Motd\""),
                r#"resource #1 ("Motd"): field `name`: "Motd" contains 'M'; names are made of a-z"#,
            ),
            (
                file("content = \"x\"").replace("\"motd\"", &format!("\"{}\"", "a".repeat(64))),
                "must be 1 to 63 characters",
            ),
            (
                file("content = \"x\"").replace("/srv/kctl/motd", "srv/motd"),
                r#"resource #1 ("motd"): field `path`: "srv/motd" is not an absolute path"#,
            ),
            (
                file("content = \"x\"").replace("/srv/kctl/motd", "/srv/kctl/../etc/passwd"),
                r#"resource #1 ("motd"): field `path`: "/srv/kctl/../etc/passwd" contains `..`"#,
            ),
            (
                file("content = \"x\"").replace("/srv/kctl/motd", "/srv/kctl/"),
                r#"field `path`: "/srv/kctl/" names a directory"#,
            ),
            (
                two(&file("content = \"y\"")),
                r#"resource #2 ("motd"): field `name`: "motd" is already the name of file resource #1"#,
            ),
            (
                "[[resource]]\nkind = \"secret\"\nname = \"s\"\npath = \"/srv/s\"\nlength = 8\n".into(),
                r#"resource #1 ("s"): field `length`: 8 is out of range; a secret has 16 to 256 characters"#,
            ),
            (
                "[[resource]]\nkind = \"secret\"\nname = \"s\"\npath = \"/srv/s\"\nalphabet = \"emoji\"\n".into(),
                r#"resource #1 ("s"): field `alphabet`: unknown variant `emoji`, expected one of `alphanumeric`, `hex`, `base64url`"#,
            ),
            (
                "[[resource]]\nkind = \"secret\"\nname = \"s\"\npath = \"/srv/s\"\ncontent = \"x\"\n".into(),
                r#"resource #1 ("s"): unknown field `content`"#,
            ),
            ("".into(), "no resources; add one or more `[[resource]]` tables"),
            ("[resource]\nkind = \"file\"\n".into(), "invalid type: map, expected a sequence"),
            ("[[resources]]\nkind = \"file\"\n".into(), "unknown field `resources`"),
            ("[[resource]\n".into(), "TOML parse error at line 1"),
        ];
        for (text, want) in cases {
            let got = err(&text);
            assert!(
                got.contains(want),
                "spec:\n{text}\nwant: {want}\ngot:  {got}"
            );
            if got.contains("resource #") {
                assert!(!got.contains('\n'), "one line expected: {got:?}");
            }
        }
        assert_eq!(
            err(&file("content = \"x\"\nmode = \"0999\"")),
            r#"resource #1 ("motd"): field `mode`: "0999" is not an octal mode; write e.g. "0644""#
        );
    }

    #[test]
    fn load_prefixes_the_file_and_reports_content_file_problems() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let spec_path = dir.path().join("spec.toml");
        std::fs::write(&spec_path, file("content_file = \"missing.txt\""))?;
        let got = format!(
            "{:#}",
            load(&spec_path).err().unwrap_or_else(|| anyhow!("loaded"))
        );
        let want = format!(
            "{}: resource #1 (\"motd\"): field `content_file`: cannot read {}",
            spec_path.display(),
            dir.path().join("missing.txt").display()
        );
        assert!(got.starts_with(&want), "{got}");
        std::fs::write(&spec_path, file("mode = \"0999\"\ncontent = \"x\""))?;
        let got = format!(
            "{:#}",
            load(&spec_path).err().unwrap_or_else(|| anyhow!("loaded"))
        );
        assert!(
            got.starts_with(&format!("{}: resource #1", spec_path.display())),
            "{got}"
        );
        Ok(())
    }

    #[test]
    fn the_shipped_sample_spec_is_valid() -> Result<()> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sample-spec.toml");
        let spec = load(&path)?;
        assert!(spec.resources.len() >= 3);
        assert!(
            spec.resources
                .iter()
                .any(|r| matches!(r.kind, Some(v1::resource::Kind::Secret(_))))
        );
        Ok(())
    }
}
