//! `kctl stacks list | show STACK | render STACK --var NAME=VALUE...`: the stack definitions
//! (`crate::stack`), printed for people or as JSON. Nothing here talks to an agent.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Context, print, print_json};
use crate::cli::StacksCommand;
use crate::error::{Error, Result};
use crate::output::Format;
use crate::stack::{self, Stack};

pub fn run(ctx: &Context, command: StacksCommand) -> Result<u8> {
    let usage = |e: anyhow::Error| Error::usage(e);
    match command {
        StacksCommand::List => {
            let all = stack::builtin().map_err(usage)?;
            match ctx.format {
                Format::Human => print(&list_human(&all))?,
                Format::Json => {
                    print_json(&json!(all.iter().map(header_json).collect::<Vec<_>>()))?
                }
            }
        }
        StacksCommand::Show { stack: what } => {
            let s = stack::load(&what).map_err(usage)?;
            match ctx.format {
                Format::Human => print(&show_human(&s))?,
                Format::Json => print_json(&show_json(&s))?,
            }
        }
        StacksCommand::Render {
            stack: what,
            vars,
            show_secrets,
        } => {
            let s = stack::load(&what).map_err(usage)?;
            let given: BTreeMap<String, String> = vars.into_iter().collect();
            let hint = format!("see the variables with `kctl stacks show {what}`");
            match ctx.format {
                Format::Human => {
                    let text = s
                        .render_toml(&given, !show_secrets)
                        .map_err(|e| usage(e).hint(hint))?;
                    print(&format!(
                        "# stack {} version {} ({}), rendered by kctl\n{text}",
                        s.name,
                        s.version,
                        s.role.name()
                    ))?;
                }
                Format::Json => {
                    let table = s
                        .rendered_table(&given, !show_secrets)
                        .map_err(|e| usage(e).hint(hint))?;
                    let spec = serde_json::to_value(&table)
                        .map_err(|e| Error::failed(anyhow::anyhow!("cannot print JSON: {e}")))?;
                    print_json(&spec)?;
                }
            }
        }
    }
    Ok(0)
}

fn header_json(s: &Stack) -> serde_json::Value {
    json!({
        "name": s.name,
        "version": s.version,
        "role": s.role.name(),
        "description": s.description,
    })
}

fn show_json(s: &Stack) -> serde_json::Value {
    let mut v = header_json(s);
    v["variables"] = json!(
        s.variables()
            .iter()
            .map(|v| json!({
                "name": v.name,
                "kind": v.kind.name(),
                "required": v.required(),
                "default": v.default,
                "description": v.description,
            }))
            .collect::<Vec<_>>()
    );
    v
}

fn list_human(all: &[Stack]) -> String {
    let w = all.iter().map(|s| s.name.len()).max().unwrap_or(4).max(4);
    let mut out = format!("{:<w$}  VERSION  ROLE      DESCRIPTION\n", "NAME");
    for s in all {
        out.push_str(&format!(
            "{:<w$}  {:<7}  {:<8}  {}\n",
            s.name,
            s.version,
            s.role.name(),
            s.description
        ));
    }
    out
}

fn show_human(s: &Stack) -> String {
    let mut out = format!(
        "{} version {} ({} host)\n{}\n\nVariables (--var NAME=VALUE):\n",
        s.name,
        s.version,
        s.role.name(),
        s.description
    );
    let w = s
        .variables()
        .iter()
        .map(|v| v.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let k = s
        .variables()
        .iter()
        .map(|v| v.kind.name().len())
        .max()
        .unwrap_or(4)
        .max(4);
    out.push_str(&format!("  {:<w$}  {:<k$}  DEFAULT\n", "NAME", "KIND"));
    for v in s.variables() {
        let default = match v.default.as_deref() {
            None => "(required)".to_string(),
            Some("") => "(empty)".to_string(),
            Some(d) => d.to_string(),
        };
        out.push_str(&format!(
            "  {:<w$}  {:<k$}  {default}\n  {:<w$}  {}\n",
            v.name,
            v.kind.name(),
            "",
            v.description
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_and_show_name_every_stack_and_variable() -> anyhow::Result<()> {
        let all = stack::builtin()?;
        let text = list_human(&all);
        for s in &all {
            assert!(text.contains(&s.name), "{text}");
        }
        let s = stack::find("kheops-0.9")?;
        let text = show_human(&s);
        assert!(text.contains("keycloak_client_secret  secret"), "{text}");
        assert!(
            text.contains("(required)") && text.contains("/srv/kctl"),
            "{text}"
        );
        let j = show_json(&s);
        assert_eq!(j["role"], "kheops");
        let vars = j["variables"].as_array().cloned().unwrap_or_default();
        assert_eq!(vars.len(), s.variables().len());
        assert!(
            vars.iter()
                .any(|v| v["name"] == "realm" && v["default"] == "demo")
        );
        Ok(())
    }
}
