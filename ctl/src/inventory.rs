//! The inventory: the installs kctl knows, each a Keycloak host and a KHEOPS host with the
//! settings `kctl provision` takes. A TOML file (default `<config dir>/inventory.toml`,
//! `--inventory FILE`) read through the `config` crate, with environment overrides
//! `KCTL_INVENTORY__INSTALL__<NAME>__<FIELD>=VALUE` (e.g. `KCTL_INVENTORY__INSTALL__PROD__REALM=x`;
//! `__` separates the levels, names are lowercased).
//!
//! ```toml
//! [install.prod]                      # install name: a-z 0-9 -
//! keycloak_host = "kc.example.org"    # the agents: NAME[:PORT]
//! kheops_host = "kheops.example.org"
//! keycloak_domain = "kc.example.org"
//! kheops_domain = "kheops.example.org"
//! realm = "demo"                      # optional, default demo
//! acme_contact = "ops@example.org"    # optional
//! acme_directory = "letsencrypt"      # optional
//! keycloak_stack = "keycloak-26"      # optional (a relative stack file is relative to this file)
//! kheops_stack = "kheops-0.9"         # optional
//! keycloak_ca_file = "/etc/pki/kc.pem"  # optional, on the KHEOPS host
//! [install.prod.keycloak_vars]        # optional stack variables
//! [install.prod.kheops_vars]
//! ```
//!
//! Everything is checked when the file is read: unknown keys, bad names, missing fields and
//! bad hosts are refused with the install and the field named. [`save`] rewrites one entry in
//! place and keeps the rest of the file (other entries, comments) byte for byte.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::host::Target;

/// The inventory's file name in the config directory.
pub const FILE_NAME: &str = "inventory.toml";
/// Prefix of the environment overrides (`KCTL_INVENTORY__INSTALL__PROD__REALM`).
pub const ENV_PREFIX: &str = "KCTL_INVENTORY";
/// Defaults of the optional fields (the same as `kctl provision`'s).
pub const DEFAULT_REALM: &str = "demo";
pub const DEFAULT_KEYCLOAK_STACK: &str = "keycloak-26";
pub const DEFAULT_KHEOPS_STACK: &str = "kheops-0.9";

const KNOWN_FIELDS: &str = "keycloak_host, kheops_host, keycloak_domain, kheops_domain, realm, \
                            acme_contact, acme_directory, keycloak_stack, kheops_stack, \
                            keycloak_ca_file, [keycloak_vars], [kheops_vars]";

/// One install, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Install {
    pub keycloak_host: Target,
    pub kheops_host: Target,
    pub keycloak_domain: String,
    pub kheops_domain: String,
    pub realm: String,
    pub acme_contact: Option<String>,
    pub acme_directory: Option<String>,
    /// A built-in stack name or a stack file (made absolute against the inventory's directory).
    pub keycloak_stack: String,
    pub kheops_stack: String,
    pub keycloak_ca_file: Option<String>,
    pub keycloak_vars: BTreeMap<String, String>,
    pub kheops_vars: BTreeMap<String, String>,
}

/// An install as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstall {
    keycloak_host: String,
    kheops_host: String,
    keycloak_domain: String,
    kheops_domain: String,
    #[serde(default)]
    realm: Option<String>,
    #[serde(default)]
    acme_contact: Option<String>,
    #[serde(default)]
    acme_directory: Option<String>,
    #[serde(default)]
    keycloak_stack: Option<String>,
    #[serde(default)]
    kheops_stack: Option<String>,
    #[serde(default)]
    keycloak_ca_file: Option<String>,
    #[serde(default)]
    keycloak_vars: BTreeMap<String, String>,
    #[serde(default)]
    kheops_vars: BTreeMap<String, String>,
}

/// The installs of one inventory file, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    pub path: PathBuf,
    pub installs: BTreeMap<String, Install>,
}

impl Inventory {
    /// Reads `path` with the process's `KCTL_INVENTORY__*` overrides. A missing file is an
    /// error when `required`, else an empty inventory.
    pub fn load(path: &Path, required: bool) -> Result<Inventory> {
        Inventory::load_with_env(path, required, std::env::vars())
    }

    /// As [`Inventory::load`], with the environment given (tests).
    pub fn load_with_env(
        path: &Path,
        required: bool,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Inventory> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::usage(anyhow!("no inventory at {}", path.display())).hint(
                    "write one (`kctl fleet --help` shows the format), point --inventory at it, \
                     or record an install with `kctl provision ... --save-install NAME`",
                ));
            }
            Err(e) => {
                return Err(Error::usage(anyhow!(
                    "cannot read the inventory {}: {e}",
                    path.display()
                )));
            }
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let installs = parse(&path.display().to_string(), text.as_deref(), base, env)?;
        Ok(Inventory {
            path: path.to_path_buf(),
            installs,
        })
    }

    /// The install `name`, or an error listing the known ones.
    pub fn get(&self, name: &str) -> Result<&Install> {
        self.installs.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.installs.keys().map(String::as_str).collect();
            Error::usage(anyhow!(
                "inventory {}: no install `{name}`",
                self.path.display()
            ))
            .hint(if known.is_empty() {
                "the inventory has no installs yet; add an [install.NAME] table".to_string()
            } else {
                format!("known installs: {}", known.join(", "))
            })
        })
    }
}

/// Parses an inventory's text (`None`: no file) plus the overrides in `env` (only the
/// `KCTL_INVENTORY__*` variables are looked at). Relative stack files are taken against `base`.
pub fn parse(
    origin: &str,
    text: Option<&str>,
    base: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, Install>> {
    let bad = |msg: String, hint: &str| {
        Error::usage(anyhow!("inventory {origin}: {msg}")).hint(hint.to_string())
    };
    let mut builder = ::config::Config::builder();
    if let Some(text) = text {
        builder = builder.add_source(::config::File::from_str(text, ::config::FileFormat::Toml));
    }
    let prefix = format!("{ENV_PREFIX}__");
    let env: ::config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .collect();
    let env_keys: Vec<String> = env.keys().map(|k| k.to_lowercase()).collect();
    builder = builder.add_source(
        ::config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .source(Some(env)),
    );
    let raw = builder
        .build()
        .map_err(|e| bad(e.to_string(), "fix the TOML syntax at the place named"))?;
    let top: ::config::Map<String, ::config::Value> = raw
        .try_deserialize()
        .map_err(|e| bad(e.to_string(), "the file holds [install.NAME] tables"))?;
    let mut installs = BTreeMap::new();
    for (key, value) in top {
        if key != "install" {
            return Err(bad(
                format!("unknown key `{key}`"),
                "the file holds [install.NAME] tables only; remove or rename the key",
            ));
        }
        let table = value.into_table().map_err(|e| {
            bad(
                format!("`install` must be a table of installs: {e}"),
                "write each install as [install.NAME]",
            )
        })?;
        for (name, value) in table {
            let install = check_install(&name, value, base, &env_keys)
                .map_err(|(msg, hint)| bad(format!("install `{name}`: {msg}"), &hint))?;
            installs.insert(name, install);
        }
    }
    Ok(installs)
}

/// Whether `name` can name an install: `a-z`, `0-9`, `-`, not starting or ending with `-`.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "install name {name:?} is not valid: use 1 to 63 of a-z, 0-9 and `-` (not first or \
             last), e.g. `prod` or `lab-2`"
        ))
    }
}

fn check_install(
    name: &str,
    value: ::config::Value,
    base: &Path,
    env_keys: &[String],
) -> std::result::Result<Install, (String, String)> {
    check_name(name).map_err(|m| (m, "rename the [install.NAME] table".to_string()))?;
    let raw: RawInstall = value
        .try_deserialize()
        .map_err(|e| explain(name, &e.to_string(), env_keys))?;
    let field = |field: &str, msg: String, hint: &str| {
        (format!("field `{field}`: {msg}"), hint.to_string())
    };
    let host = |f: &str, v: &str| {
        v.parse::<Target>().map_err(|e| {
            field(
                f,
                format!("{e:#}"),
                "write the agent as NAME[:PORT], e.g. \"kc.example.org\" or \"10.0.0.2:7443\"",
            )
        })
    };
    let keycloak_host = host("keycloak_host", &raw.keycloak_host)?;
    let kheops_host = host("kheops_host", &raw.kheops_host)?;
    for (f, v) in [
        ("keycloak_domain", &raw.keycloak_domain),
        ("kheops_domain", &raw.kheops_domain),
    ] {
        let dns = !v.is_empty()
            && v.len() <= 253
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if !dns {
            return Err(field(
                f,
                format!("{v:?} is not a DNS name"),
                "write the public DNS name only, e.g. \"kc.example.org\" (no scheme, port or path)",
            ));
        }
    }
    let realm = raw.realm.unwrap_or_else(|| DEFAULT_REALM.to_string());
    if realm.is_empty() {
        return Err(field(
            "realm",
            "empty".into(),
            "name the realm, or leave the field out for \"demo\"",
        ));
    }
    for (f, vars) in [
        ("keycloak_vars", &raw.keycloak_vars),
        ("kheops_vars", &raw.kheops_vars),
    ] {
        if vars.keys().any(String::is_empty) {
            return Err(field(
                f,
                "a variable without a name".into(),
                "`kctl stacks show STACK` lists the variables",
            ));
        }
    }
    let stack = |s: Option<String>, default: &str| {
        let s = s.unwrap_or_else(|| default.to_string());
        if is_stack_file(&s) && Path::new(&s).is_relative() {
            base.join(&s).display().to_string()
        } else {
            s
        }
    };
    Ok(Install {
        keycloak_host,
        kheops_host,
        keycloak_domain: raw.keycloak_domain,
        kheops_domain: raw.kheops_domain,
        realm,
        acme_contact: raw.acme_contact,
        acme_directory: raw.acme_directory,
        keycloak_stack: stack(raw.keycloak_stack, DEFAULT_KEYCLOAK_STACK),
        kheops_stack: stack(raw.kheops_stack, DEFAULT_KHEOPS_STACK),
        keycloak_ca_file: raw.keycloak_ca_file,
        keycloak_vars: raw.keycloak_vars,
        kheops_vars: raw.kheops_vars,
    })
}

/// Whether a stack argument names a file rather than a built-in stack (as `kctl provision`).
pub fn is_stack_file(stack: &str) -> bool {
    stack.ends_with(".toml") || stack.contains('/')
}

/// serde's message names the field; say where it came from and what to do.
fn explain(install: &str, msg: &str, env_keys: &[String]) -> (String, String) {
    if let Some(field) = msg
        .split("unknown field `")
        .nth(1)
        .and_then(|r| r.split('`').next())
    {
        let var = format!("{ENV_PREFIX}__INSTALL__{install}__{field}").to_uppercase();
        if env_keys.iter().any(|k| k.eq_ignore_ascii_case(&var)) {
            return (
                format!("environment variable {var} names no inventory field `{field}`"),
                format!("unset it or fix its name; the fields are {KNOWN_FIELDS}"),
            );
        }
        return (
            format!("unknown field `{field}`"),
            format!("remove or rename it; the fields are {KNOWN_FIELDS}"),
        );
    }
    // serde says "missing field `x`", the config crate "missing configuration field \"x\"".
    let missing = msg
        .split("missing field `")
        .nth(1)
        .and_then(|r| r.split('`').next())
        .or_else(|| {
            msg.split("missing configuration field \"")
                .nth(1)
                .and_then(|r| r.split('"').next())
        });
    if let Some(field) = missing {
        return (
            format!("missing field `{field}`"),
            format!(
                "add `{field} = \"...\"` to [install.{install}] (required: keycloak_host, \
                 kheops_host, keycloak_domain, kheops_domain)"
            ),
        );
    }
    (
        msg.to_string(),
        format!("the fields are {KNOWN_FIELDS}; values are strings"),
    )
}

// ---------------------------------------------------------------------------------------------
// Writing

/// Adds or replaces install `name` in the inventory at `path` (created when missing), keeping
/// the rest of the file as it is; atomic. Refuses when the result would not read back as
/// exactly this entry with the other installs unchanged (e.g. the file defines the install
/// with dotted keys or an inline table, which are not edited).
pub fn save(path: &Path, name: &str, install: &Install) -> Result<()> {
    check_name(name).map_err(|m| Error::usage(anyhow!("--save-install: {m}")))?;
    let before = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(Error::failed(anyhow!(
                "cannot read the inventory {}: {e}",
                path.display()
            )));
        }
    };
    let after = upsert(&before, name, &render_entry(name, install));
    let base = path.parent().unwrap_or(Path::new("."));
    let none = std::iter::empty::<(String, String)>;
    let mut old = parse("(before)", Some(&before), base, none())?;
    let new = parse("(after)", Some(&after), base, none())?;
    old.insert(name.to_string(), install.clone());
    if new != old {
        return Err(Error::failed(anyhow!(
            "cannot update install `{name}` in {} in place",
            path.display()
        ))
        .hint(format!(
            "the file defines it in a form kctl does not edit (dotted keys or an inline table); \
             replace its definition by hand with:\n{}",
            render_entry(name, install)
        )));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::failed(anyhow!("cannot create {}: {e}", dir.display())))?;
    }
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644)
    };
    crate::files::write_atomic(path, after.as_bytes(), mode).map_err(Error::failed)
}

/// A TOML string (quoted, escaped).
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML key: bare when it can be, else quoted.
fn key(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        s.to_string()
    } else {
        quote(s)
    }
}

/// The `[install.NAME]` table (and its variable tables) as TOML text, ending in a newline.
pub fn render_entry(name: &str, i: &Install) -> String {
    let mut out = format!("[install.{name}]\n");
    let mut line = |k: &str, v: &str| out.push_str(&format!("{k} = {}\n", quote(v)));
    line("keycloak_host", &i.keycloak_host.to_string());
    line("kheops_host", &i.kheops_host.to_string());
    line("keycloak_domain", &i.keycloak_domain);
    line("kheops_domain", &i.kheops_domain);
    line("realm", &i.realm);
    for (k, v) in [
        ("acme_contact", &i.acme_contact),
        ("acme_directory", &i.acme_directory),
    ] {
        if let Some(v) = v {
            line(k, v);
        }
    }
    line("keycloak_stack", &i.keycloak_stack);
    line("kheops_stack", &i.kheops_stack);
    if let Some(v) = &i.keycloak_ca_file {
        line("keycloak_ca_file", v);
    }
    for (table, vars) in [
        ("keycloak_vars", &i.keycloak_vars),
        ("kheops_vars", &i.kheops_vars),
    ] {
        if vars.is_empty() {
            continue;
        }
        out.push_str(&format!("\n[install.{name}.{table}]\n"));
        for (k, v) in vars {
            out.push_str(&format!("{} = {}\n", key(k), quote(v)));
        }
    }
    out
}

/// The dotted name of a table header line (`[a.b]`, `[[a]]`), quotes and blanks removed.
fn header(line: &str) -> Option<Vec<String>> {
    let t = line.trim();
    let inner = t.strip_prefix('[')?;
    let inner = inner.strip_prefix('[').unwrap_or(inner);
    let end = inner.find(']')?;
    Some(
        inner[..end]
            .split('.')
            .map(|p| p.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
            .collect(),
    )
}

/// `text` with the tables of install `name` (`[install.NAME]`, `[install.NAME.*]`) replaced by
/// `entry` (where the first of them was, else at the end). Everything else is kept as is,
/// including comments and blank lines just before the next table.
pub fn upsert(text: &str, name: &str, entry: &str) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let heads: Vec<(usize, bool)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            header(l).map(|h| (i, h.len() >= 2 && h[0] == "install" && h[1] == name))
        })
        .collect();
    let mut drop = vec![false; lines.len()];
    let mut first = None;
    for (n, &(start, ours)) in heads.iter().enumerate() {
        if !ours {
            continue;
        }
        first.get_or_insert(start);
        let next = heads.get(n + 1);
        let mut end = next.map(|h| h.0).unwrap_or(lines.len());
        // Comments and blank lines right before the next table belong to it (unless it is
        // one of this install's too).
        while end > start + 1 && !next.is_some_and(|h| h.1) {
            let l = lines[end - 1].trim();
            if l.is_empty() || l.starts_with('#') {
                end -= 1;
            } else {
                break;
            }
        }
        drop[start..end].iter_mut().for_each(|d| *d = true);
    }
    let mut out = String::new();
    let mut placed = false;
    for (i, l) in lines.iter().enumerate() {
        if Some(i) == first {
            out.push_str(entry);
            placed = true;
        }
        if !drop[i] {
            out.push_str(l);
        }
    }
    if !placed {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        if !out.trim().is_empty() && !out.ends_with("\n\n") {
            out.push('\n');
        }
        out.push_str(entry);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
# the fleet
[install.prod]                      # production
keycloak_host = "kc.example.org"
kheops_host = "kheops.example.org:7444"
keycloak_domain = "kc.example.org"
kheops_domain = "kheops.example.org"
acme_contact = "ops@example.org"
acme_directory = "letsencrypt"
kheops_stack = "stacks/my-kheops.toml"
keycloak_ca_file = "/etc/pki/kc.pem"

[install.prod.keycloak_vars]
keycloak_version = "26.0.7"

# the lab
[install.lab-2]
keycloak_host = "10.0.0.2"
kheops_host = "10.0.0.3"
keycloak_domain = "kc.lab.test"
kheops_domain = "kh.lab.test"
realm = "lab"
"#;

    fn parse_env(text: &str, env: &[(&str, &str)]) -> Result<BTreeMap<String, Install>> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse("inv.toml", Some(text), Path::new("/cfg"), env)
    }

    fn err(text: &str, env: &[(&str, &str)]) -> String {
        match parse_env(text, env) {
            Ok(v) => panic!("parsed: {v:?}"),
            Err(e) => e.render(),
        }
    }

    #[test]
    fn a_good_file_with_defaults_and_relative_stack_files() -> anyhow::Result<()> {
        let inv = parse_env(GOOD, &[]).map_err(|e| anyhow!(e.render()))?;
        assert_eq!(inv.keys().collect::<Vec<_>>(), ["lab-2", "prod"]);
        let prod = &inv["prod"];
        assert_eq!(prod.keycloak_host.to_string(), "kc.example.org:7443");
        assert_eq!(prod.kheops_host.port, 7444);
        assert_eq!(prod.realm, DEFAULT_REALM);
        assert_eq!(prod.keycloak_stack, DEFAULT_KEYCLOAK_STACK);
        assert_eq!(prod.kheops_stack, "/cfg/stacks/my-kheops.toml");
        assert_eq!(prod.acme_directory.as_deref(), Some("letsencrypt"));
        assert_eq!(prod.keycloak_ca_file.as_deref(), Some("/etc/pki/kc.pem"));
        assert_eq!(prod.keycloak_vars["keycloak_version"], "26.0.7");
        assert!(prod.kheops_vars.is_empty());
        let lab = &inv["lab-2"];
        assert_eq!(lab.realm, "lab");
        assert_eq!(lab.acme_contact, None);
        assert_eq!(lab.kheops_stack, DEFAULT_KHEOPS_STACK);
        // No file, no environment: no installs.
        assert!(
            parse("x", None, Path::new("/"), Vec::new())
                .map_err(|e| anyhow!(e.render()))?
                .is_empty()
        );
        Ok(())
    }

    #[test]
    fn an_unknown_key_is_named_with_the_fields() {
        let e = err(&GOOD.replace("realm = \"lab\"", "relm = \"lab\""), &[]);
        assert!(
            e.contains("inventory inv.toml: install `lab-2`: unknown field `relm`"),
            "{e}"
        );
        assert!(
            e.contains("hint: remove or rename it; the fields are keycloak_host"),
            "{e}"
        );
        let e = err(&format!("fleet = 1\n{GOOD}"), &[]);
        assert!(e.contains("unknown key `fleet`"), "{e}");
    }

    #[test]
    fn a_bad_name_or_host_or_domain_is_named() {
        let e = err(&GOOD.replace("[install.lab-2]", "[install.Lab_2]"), &[]);
        assert!(
            e.contains("install name \"lab_2\"") || e.contains("install name \"Lab_2\""),
            "{e}"
        );
        assert!(e.contains("a-z, 0-9 and `-`"), "{e}");
        let e = err(&GOOD.replace("\"10.0.0.2\"", "\"10.0.0.2:http\""), &[]);
        assert!(e.contains("install `lab-2`: field `keycloak_host`"), "{e}");
        assert!(e.contains("NAME[:PORT]"), "{e}");
        let e = err(
            &GOOD.replace("\"kh.lab.test\"", "\"https://kh.lab.test\""),
            &[],
        );
        assert!(
            e.contains("field `kheops_domain`: \"https://kh.lab.test\" is not a DNS name"),
            "{e}"
        );
        assert!(check_name("-x").is_err() && check_name("").is_err() && check_name("a-1").is_ok());
    }

    #[test]
    fn a_missing_field_is_named_with_the_fix() {
        let e = err(&GOOD.replace("kheops_domain = \"kh.lab.test\"\n", ""), &[]);
        assert!(
            e.contains("install `lab-2`: missing field `kheops_domain`"),
            "{e}"
        );
        assert!(
            e.contains("add `kheops_domain = \"...\"` to [install.lab-2]"),
            "{e}"
        );
    }

    #[test]
    fn the_environment_overrides_and_can_add_installs() -> anyhow::Result<()> {
        let inv = parse_env(
            GOOD,
            &[
                ("KCTL_INVENTORY__INSTALL__PROD__REALM", "prod-realm"),
                (
                    "KCTL_INVENTORY__INSTALL__PROD__KEYCLOAK_VARS__KEYCLOAK_VERSION",
                    "26.1.0",
                ),
                ("KCTL_INVENTORY__INSTALL__EXTRA__KEYCLOAK_HOST", "a.test"),
                ("KCTL_INVENTORY__INSTALL__EXTRA__KHEOPS_HOST", "b.test"),
                ("KCTL_INVENTORY__INSTALL__EXTRA__KEYCLOAK_DOMAIN", "a.test"),
                ("KCTL_INVENTORY__INSTALL__EXTRA__KHEOPS_DOMAIN", "b.test"),
                ("KCTL_INVENTORYX", "ignored"),
                ("KCTL_CONFIG_DIR", "/ignored"),
            ],
        )
        .map_err(|e| anyhow!(e.render()))?;
        assert_eq!(inv["prod"].realm, "prod-realm");
        assert_eq!(inv["prod"].keycloak_vars["keycloak_version"], "26.1.0");
        assert_eq!(
            inv["prod"].kheops_domain, "kheops.example.org",
            "the rest stays"
        );
        assert_eq!(inv["extra"].kheops_host.to_string(), "b.test:7443");
        // A variable naming no field is refused as such.
        let e = err(GOOD, &[("KCTL_INVENTORY__INSTALL__PROD__REALMS", "x")]);
        assert!(
            e.contains("environment variable KCTL_INVENTORY__INSTALL__PROD__REALMS names no inventory field `realms`"),
            "{e}"
        );
        Ok(())
    }

    fn sample() -> Install {
        Install {
            keycloak_host: Target {
                host: "kc.new.test".into(),
                port: 7443,
            },
            kheops_host: Target {
                host: "::1".into(),
                port: 7444,
            },
            keycloak_domain: "kc.new.test".into(),
            kheops_domain: "kh.new.test".into(),
            realm: "demo".into(),
            acme_contact: Some("ops@new.test".into()),
            acme_directory: None,
            keycloak_stack: "keycloak-16".into(),
            kheops_stack: "/abs/kheops \"x\".toml".into(),
            keycloak_ca_file: None,
            keycloak_vars: BTreeMap::from([("root".into(), "/srv/a b".into())]),
            kheops_vars: BTreeMap::new(),
        }
    }

    #[test]
    fn save_replaces_one_entry_in_place_and_keeps_the_rest() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("sub").join("inventory.toml");
        // Created when missing.
        save(&path, "new", &sample()).map_err(|e| anyhow!(e.render()))?;
        let inv =
            Inventory::load_with_env(&path, true, Vec::new()).map_err(|e| anyhow!(e.render()))?;
        assert_eq!(inv.installs["new"], sample());

        // Replacing `prod` keeps comments, the other entry and the comment before it.
        std::fs::write(&path, GOOD)?;
        let mut changed = sample();
        changed.realm = "changed".into();
        save(&path, "prod", &changed).map_err(|e| anyhow!(e.render()))?;
        let text = std::fs::read_to_string(&path)?;
        assert!(
            text.starts_with("\n# the fleet\n[install.prod]\n"),
            "{text}"
        );
        assert!(text.contains("realm = \"changed\""), "{text}");
        assert!(
            !text.contains("keycloak_version"),
            "the old variables are gone: {text}"
        );
        assert!(text.contains("\n# the lab\n[install.lab-2]\n"), "{text}");
        let lab_part = &GOOD[GOOD.find("# the lab").unwrap_or(0)..];
        assert!(text.ends_with(lab_part), "{text}");
        let inv =
            Inventory::load_with_env(&path, true, Vec::new()).map_err(|e| anyhow!(e.render()))?;
        assert_eq!(inv.installs["prod"], changed);
        assert_eq!(inv.installs["lab-2"].realm, "lab");

        // Appended when new; saved twice, the same file.
        save(&path, "third", &sample()).map_err(|e| anyhow!(e.render()))?;
        let once = std::fs::read_to_string(&path)?;
        assert!(once.contains("\n\n[install.third]\n"), "{once}");
        save(&path, "third", &sample()).map_err(|e| anyhow!(e.render()))?;
        assert_eq!(std::fs::read_to_string(&path)?, once);
        Ok(())
    }

    #[test]
    fn save_refuses_forms_it_cannot_edit_and_bad_names() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("inventory.toml");
        let inline = "[install]\nx = { keycloak_host = \"a\", kheops_host = \"b\", \
                      keycloak_domain = \"a\", kheops_domain = \"b\" }\n";
        std::fs::write(&path, inline)?;
        let e = save(&path, "x", &sample())
            .err()
            .map(|e| e.render())
            .unwrap_or_default();
        assert!(
            e.contains("cannot update install `x`") || e.contains("duplicate"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&path)?, inline, "left as it was");
        let e = save(&path, "Bad", &sample())
            .err()
            .map(|e| e.render())
            .unwrap_or_default();
        assert!(e.contains("--save-install: install name \"Bad\""), "{e}");
        Ok(())
    }

    #[test]
    fn a_missing_required_file_says_how_to_make_one() {
        let e = Inventory::load_with_env(Path::new("/nonexistent/inv.toml"), true, Vec::new())
            .err()
            .map(|e| e.render())
            .unwrap_or_default();
        assert!(e.contains("no inventory at /nonexistent/inv.toml"), "{e}");
        assert!(e.contains("--save-install NAME"), "{e}");
        let empty = Inventory::load_with_env(Path::new("/nonexistent/inv.toml"), false, Vec::new());
        assert!(empty.is_ok_and(|i| i.installs.is_empty()));
    }

    #[test]
    fn get_lists_the_known_installs() {
        let inv = Inventory {
            path: "i.toml".into(),
            installs: parse_env(GOOD, &[]).unwrap_or_default(),
        };
        assert!(inv.get("prod").is_ok());
        let e = inv
            .get("nope")
            .err()
            .map(|e| e.render())
            .unwrap_or_default();
        assert!(
            e.contains("no install `nope`") && e.contains("known installs: lab-2, prod"),
            "{e}"
        );
    }
}
