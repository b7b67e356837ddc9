//! Stacks as data: the Keycloak and KHEOPS deployments are versioned TOML files (`ctl/stacks/`,
//! embedded in the binary) that kctl renders into host specs.
//!
//! A stack file is a host spec in exactly the format `kctl apply -f` reads (`[[resource]]`
//! tables, see [`crate::spec`]), plus one header table:
//!
//! ```toml
//! [stack]
//! name = "keycloak-26"          # [a-z0-9.-]; the name `kctl stacks` and provisioning use
//! version = "1"                 # the revision of this definition
//! role = "keycloak"             # or "kheops": which VM of an install it is for
//! description = "Keycloak 26.x for KHEOPS"
//!
//! [stack.vars.keycloak_domain]  # referenced as ${keycloak_domain} in string values
//! description = "the public DNS name of the Keycloak host"
//! kind = "hostname"             # optional (default "word"): see `vars::Kind`
//! # default = "..."             # optional; without it the variable is required.
//! #                             # default = "" makes it optional and empty when not given.
//!
//! [stack.shared_env]            # optional: env every container of the file gets, like
//! KHEOPS_API_PATH = "/api"      # compose's `env_file:`; a container's own `env` wins
//! ```
//!
//! Rendering checks every variable (missing required ones and unknown ones are named, values
//! are validated by kind), substitutes them in the *parsed* string values (a value can never
//! change the TOML structure), merges `shared_env`, and hands the result to the spec parser
//! ([`crate::spec::parse_table`]): the same checks, the same `HostSpec` as `kctl apply -f`.
//! Every error starts with `stack NAME:` and names the variable or the resource and field.
//! A stack is checked when it is parsed, by rendering it once with an example value of each
//! variable's kind, so an authoring mistake never waits for an operator to find it.

pub mod vars;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use kagent_proto::v1;
use serde::Deserialize;

use crate::spec::{self, ResourceSpec};
pub use vars::Kind;

/// The built-in stacks: (file name, text).
const BUILTIN: [(&str, &str); 4] = [
    (
        "keycloak-26.toml",
        include_str!("../../stacks/keycloak-26.toml"),
    ),
    (
        "keycloak-16.toml",
        include_str!("../../stacks/keycloak-16.toml"),
    ),
    (
        "kheops-0.9.toml",
        include_str!("../../stacks/kheops-0.9.toml"),
    ),
    (
        "kheops-1.x.toml",
        include_str!("../../stacks/kheops-1.x.toml"),
    ),
];

/// Which VM of an install a stack is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Keycloak,
    Kheops,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Keycloak => "keycloak",
            Role::Kheops => "kheops",
        }
    }
}

/// One declared variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Var {
    pub name: String,
    pub description: String,
    pub kind: Kind,
    /// `None`: required. `Some("")`: optional, empty when not given.
    pub default: Option<String>,
}

impl Var {
    pub fn required(&self) -> bool {
        self.default.is_none()
    }
}

/// A parsed, checked stack definition.
#[derive(Clone, Debug)]
pub struct Stack {
    pub name: String,
    pub version: String,
    pub role: Role,
    pub description: String,
    vars: Vec<Var>,
    shared_env: toml::Table,
    /// The spec part of the file: everything but `[stack]`, unsubstituted.
    body: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    name: String,
    version: String,
    role: Role,
    description: String,
    #[serde(default)]
    vars: BTreeMap<String, VarHeader>,
    #[serde(default)]
    shared_env: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VarHeader {
    description: String,
    default: Option<String>,
    kind: Option<Kind>,
}

/// The built-in stacks, in a stable order (Keycloak first, then KHEOPS).
pub fn builtin() -> Result<Vec<Stack>> {
    BUILTIN
        .iter()
        .map(|(file, text)| Stack::parse(file, text))
        .collect()
}

/// The built-in stack named `name`; the error lists the names there are.
pub fn find(name: &str) -> Result<Stack> {
    let all = builtin()?;
    let names: Vec<String> = all.iter().map(|s| s.name.clone()).collect();
    all.into_iter().find(|s| s.name == name).ok_or_else(|| {
        anyhow!(
            "there is no stack named {name:?}; the built-in stacks are {} (see `kctl stacks list`)",
            names.join(", ")
        )
    })
}

/// A built-in stack by name, or a stack file: `what` ending in `.toml` or holding a `/` is a
/// path.
pub fn load(what: &str) -> Result<Stack> {
    if what.ends_with(".toml") || what.contains('/') {
        let text = std::fs::read_to_string(what)
            .map_err(|e| anyhow!("cannot read the stack file {what}: {e}"))?;
        Stack::parse(what, &text)
    } else {
        find(what)
    }
}

impl Stack {
    /// Parses and checks a stack file. `origin` names it in errors until its own name is known.
    pub fn parse(origin: &str, text: &str) -> Result<Stack> {
        let mut table: toml::Table = toml::from_str(text)
            .map_err(|e| anyhow!("stack {origin}: {}", e.to_string().trim_end()))?;
        let header = table.remove("stack").ok_or_else(|| {
            anyhow!(
                "stack {origin}: no `[stack]` table; a stack file starts with [stack] (name, \
                 version, role, description) and its [stack.vars.NAME] entries"
            )
        })?;
        let header: Header = serde_path_to_error::deserialize(header).map_err(|e| {
            let message = e.inner().message().trim_end().to_string();
            let mut path = e.path().to_string();
            // "unknown field `x`" names the field itself: show where it is.
            if message.starts_with("unknown field") {
                path = path
                    .rsplit_once('.')
                    .map(|(p, _)| p.to_string())
                    .unwrap_or(".".into());
            }
            let at = if path == "." {
                String::new()
            } else {
                format!("field `{path}`: ")
            };
            anyhow!("stack {origin}: table `[stack]`: {at}{message}")
        })?;
        let name = header.name.clone();
        let ok_name = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-".contains(c));
        if !ok_name {
            bail!(
                "stack {origin}: field `stack.name`: {name:?} is not a stack name (a-z, 0-9, '.', \
                 '-'), e.g. keycloak-26"
            );
        }
        let at = |what: String| anyhow!("stack {name}: {what}");
        if header.version.trim().is_empty() {
            return Err(at(
                "field `stack.version`: empty; give the revision of this definition, e.g. \"1\""
                    .into(),
            ));
        }
        let mut vars = Vec::with_capacity(header.vars.len());
        for (var_name, v) in header.vars {
            vars::check_name(&var_name)
                .map_err(|e| at(format!("table `[stack.vars.{var_name}]`: {e}")))?;
            let kind = v.kind.unwrap_or(Kind::Word);
            if let Some(d) = &v.default
                && !d.is_empty()
            {
                kind.check(d).map_err(|e| {
                    at(format!(
                        "variable `{var_name}`: the default: {e} (kind {})",
                        kind.name()
                    ))
                })?;
            }
            vars.push(Var {
                name: var_name,
                description: v.description,
                kind,
                default: v.default,
            });
        }
        for (k, v) in &header.shared_env {
            if !v.is_str() {
                return Err(at(format!(
                    "table `[stack.shared_env]`: {k} is a TOML {}; env values are strings",
                    v.type_str()
                )));
            }
        }
        // Every reference names a declared variable, and every variable is used.
        let mut refs = Vec::new();
        for (k, v) in &table {
            vars::references(v, k, &mut refs).map_err(at)?;
        }
        vars::references(
            &toml::Value::Table(header.shared_env.clone()),
            "stack.shared_env",
            &mut refs,
        )
        .map_err(at)?;
        let declared: BTreeSet<&str> = vars.iter().map(|v| v.name.as_str()).collect();
        if let Some((n, path)) = refs.iter().find(|(n, _)| !declared.contains(n.as_str())) {
            return Err(at(format!(
                "`{path}` uses ${{{n}}}, which is not declared; add a [stack.vars.{n}] table \
                 (declared: {})",
                vars::list(&declared)
            )));
        }
        if let Some(v) = vars
            .iter()
            .find(|v| !refs.iter().any(|(n, _)| *n == v.name))
        {
            return Err(at(format!(
                "variable `{}` is declared but never used; remove its [stack.vars.{}] table",
                v.name, v.name
            )));
        }
        let stack = Stack {
            name: name.clone(),
            version: header.version,
            role: header.role,
            description: header.description,
            vars,
            shared_env: header.shared_env,
            body: table,
        };
        // Authoring check: the resources must parse with any valid values.
        let examples: BTreeMap<String, String> = stack
            .vars
            .iter()
            .map(|v| (v.name.clone(), v.kind.example().to_string()))
            .collect();
        stack.render(&examples).with_context(|| {
            format!(
                "stack {name} does not render with example values ({})",
                examples
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        })?;
        Ok(stack)
    }

    /// The declared variables, sorted by name.
    pub fn variables(&self) -> &[Var] {
        &self.vars
    }

    /// The value of every variable: given, else the default. Refuses unknown names, missing
    /// required ones (all of them at once) and values that do not fit their kind.
    pub fn resolve(&self, given: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
        let declared: BTreeSet<&str> = self.vars.iter().map(|v| v.name.as_str()).collect();
        let unknown: Vec<&str> = given
            .keys()
            .map(String::as_str)
            .filter(|k| !declared.contains(k))
            .collect();
        if !unknown.is_empty() {
            bail!(
                "stack {}: {} not a variable of this stack; its variables are {} (see `kctl \
                 stacks show {}`)",
                self.name,
                unknown
                    .iter()
                    .map(|u| format!("`{u}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
                    + if unknown.len() == 1 { " is" } else { " are" },
                vars::list(&declared),
                self.name
            );
        }
        // A wrong value first: it is often the variable the operator meant to give.
        for v in &self.vars {
            if let Some(value) = given.get(&v.name) {
                self.check_value(v, value)?;
            }
        }
        let missing: Vec<&Var> = self
            .vars
            .iter()
            .filter(|v| v.required() && !given.contains_key(&v.name))
            .collect();
        if !missing.is_empty() {
            bail!(
                "stack {}: missing {}: {}",
                self.name,
                if missing.len() == 1 {
                    "variable"
                } else {
                    "variables"
                },
                missing
                    .iter()
                    .map(|v| format!(
                        "`{}` ({}; --var {}=<{}>)",
                        v.name,
                        v.description,
                        v.name,
                        v.kind.name()
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let mut out = BTreeMap::new();
        for v in &self.vars {
            let value = given
                .get(&v.name)
                .or(v.default.as_ref())
                .cloned()
                .unwrap_or_default();
            self.check_value(v, &value)?;
            out.insert(v.name.clone(), value);
        }
        Ok(out)
    }

    /// `value` fits `v`'s kind (or is the empty value of an optional variable).
    fn check_value(&self, v: &Var, value: &str) -> Result<()> {
        if value.is_empty() && v.default.as_deref() == Some("") {
            return Ok(());
        }
        v.kind.check(value).map_err(|e| {
            anyhow!(
                "stack {}: variable `{}` (kind {}): {e}",
                self.name,
                v.name,
                v.kind.name()
            )
        })
    }

    /// The spec as a TOML table (`[[resource]]` tables): variables substituted, `shared_env`
    /// merged into every container, not yet checked by the spec parser.
    fn substituted(&self, values: &BTreeMap<String, String>) -> Result<toml::Table> {
        let lookup = |n: &str| values.get(n).cloned();
        let mut body = toml::Value::Table(self.body.clone());
        vars::substitute(&mut body, &lookup);
        let mut shared = toml::Value::Table(self.shared_env.clone());
        vars::substitute(&mut shared, &lookup);
        let toml::Value::Table(mut body) = body else {
            bail!("stack {}: the spec is not a table", self.name);
        };
        if let (toml::Value::Table(shared), Some(toml::Value::Array(resources))) =
            (shared, body.get_mut("resource"))
            && !shared.is_empty()
        {
            for r in resources.iter_mut() {
                let toml::Value::Table(t) = r else { continue };
                if t.get("kind").and_then(|k| k.as_str()) != Some("container") {
                    continue;
                }
                let env = t
                    .entry("env")
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let toml::Value::Table(env) = env {
                    for (k, v) in &shared {
                        env.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
            }
        }
        Ok(body)
    }

    /// Renders the stack with `given` variables into the API's host spec.
    pub fn render(&self, given: &BTreeMap<String, String>) -> Result<v1::HostSpec> {
        let values = self.resolve(given)?;
        let body = self.substituted(&values)?;
        let resources =
            spec::parse_table(body).map_err(|e| anyhow!("stack {}: {e:#}", self.name))?;
        if let Some((i, r)) = resources
            .iter()
            .enumerate()
            .find(|(_, r)| matches!(r, ResourceSpec::File(f) if f.content_file.is_some()))
        {
            bail!(
                "stack {}: resource #{} ({:?}): field `content_file`: a stack carries its files \
                 inline; write the text in `content`",
                self.name,
                i + 1,
                r.name()
            );
        }
        // No content_file (refused above): the base directory is never read.
        spec::to_proto(&resources, Path::new("/"))
            .map_err(|e| anyhow!("stack {}: {e:#}", self.name))
    }

    /// The rendered spec as TOML text that `kctl apply -f` reads, for review. With `redact`,
    /// values of sensitive variables (kind `secret`) read `<redacted>`.
    pub fn render_toml(&self, given: &BTreeMap<String, String>, redact: bool) -> Result<String> {
        let table = self.rendered_table(given, redact)?;
        toml::to_string(&table)
            .map_err(|e| anyhow!("stack {}: cannot print the spec: {e}", self.name))
    }

    /// The rendered spec as a TOML table (checked by rendering it into a `HostSpec` first).
    pub fn rendered_table(
        &self,
        given: &BTreeMap<String, String>,
        redact: bool,
    ) -> Result<toml::Table> {
        self.render(given)?;
        let mut values = self.resolve(given)?;
        if redact {
            for v in self.vars.iter().filter(|v| v.kind.is_sensitive()) {
                values.insert(v.name.clone(), "<redacted>".into());
            }
        }
        self.substituted(&values)
    }
}

/// Parses `NAME=VALUE` (the `--var` argument).
pub fn parse_assignment(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: write NAME=VALUE, e.g. kheops_domain=kheops.example.org"))?;
    vars::check_name(k)?;
    Ok((k.to_string(), v.to_string()))
}

#[cfg(test)]
mod tests;
