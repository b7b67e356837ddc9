//! `kctl provision --install NAME` and `--save-install NAME`: the settings `provision` runs with,
//! from the command line over an inventory entry ([`settings`], pure), and the entry written
//! back after a successful run ([`save_after`]). Kept apart from `provision.rs`, which only
//! calls [`resolve`] and [`save_after`].

use anyhow::anyhow;

use super::Context;
use crate::cli::ProvisionArgs;
use crate::error::{Error, Result};
use crate::host::Target;
use crate::inventory::{self, Install, Inventory};

/// Everything `provision` needs, resolved: the command line, then the inventory entry, then
/// the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisionSettings {
    pub keycloak_host: Target,
    pub kheops_host: Target,
    pub keycloak_domain: String,
    pub kheops_domain: String,
    pub realm: String,
    pub acme_contact: Option<String>,
    pub acme_directory: Option<String>,
    pub keycloak_stack: String,
    pub kheops_stack: String,
    /// The entry's variables first, then the command line's (later ones win).
    pub keycloak_var: Vec<(String, String)>,
    pub kheops_var: Vec<(String, String)>,
    pub keycloak_ca_file: Option<String>,
    pub wait: u64,
    pub dry_run: bool,
}

/// The settings from `a` over `entry` (install name and entry). Without an entry the
/// positional hosts and the domains must be given (clap enforces it; this says so again).
pub fn settings(
    a: &ProvisionArgs,
    entry: Option<(&str, &Install)>,
) -> anyhow::Result<ProvisionSettings> {
    let need = |v: Option<String>, flag: &str| {
        v.ok_or_else(|| {
            anyhow!("{flag} is missing: give it, or take it from the inventory with --install NAME")
        })
    };
    let e = entry.map(|(_, e)| e);
    let pick = |cli: &Option<String>, inv: Option<&String>| cli.clone().or_else(|| inv.cloned());
    let host = |cli: &Option<Target>, inv: Option<&Target>, what: &str| {
        cli.clone().or_else(|| inv.cloned()).ok_or_else(|| {
            anyhow!("{what} is missing: give it, or take it from the inventory with --install NAME")
        })
    };
    let vars = |inv: Option<&std::collections::BTreeMap<String, String>>,
                cli: &[(String, String)]| {
        inv.into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(cli.iter().cloned())
            .collect::<Vec<_>>()
    };
    Ok(ProvisionSettings {
        keycloak_host: host(
            &a.keycloak_host,
            e.map(|e| &e.keycloak_host),
            "KEYCLOAK_HOST",
        )?,
        kheops_host: host(&a.kheops_host, e.map(|e| &e.kheops_host), "KHEOPS_HOST")?,
        keycloak_domain: need(
            pick(&a.keycloak_domain, e.map(|e| &e.keycloak_domain)),
            "--keycloak-domain",
        )?,
        kheops_domain: need(
            pick(&a.kheops_domain, e.map(|e| &e.kheops_domain)),
            "--kheops-domain",
        )?,
        realm: pick(&a.realm, e.map(|e| &e.realm))
            .unwrap_or_else(|| inventory::DEFAULT_REALM.to_string()),
        acme_contact: pick(&a.acme_contact, e.and_then(|e| e.acme_contact.as_ref())),
        acme_directory: pick(&a.acme_directory, e.and_then(|e| e.acme_directory.as_ref())),
        keycloak_stack: pick(&a.keycloak_stack, e.map(|e| &e.keycloak_stack))
            .unwrap_or_else(|| inventory::DEFAULT_KEYCLOAK_STACK.to_string()),
        kheops_stack: pick(&a.kheops_stack, e.map(|e| &e.kheops_stack))
            .unwrap_or_else(|| inventory::DEFAULT_KHEOPS_STACK.to_string()),
        keycloak_var: vars(e.map(|e| &e.keycloak_vars), &a.keycloak_var),
        kheops_var: vars(e.map(|e| &e.kheops_vars), &a.kheops_var),
        keycloak_ca_file: pick(
            &a.keycloak_ca_file,
            e.and_then(|e| e.keycloak_ca_file.as_ref()),
        ),
        wait: a.wait,
        dry_run: a.dry_run,
    })
}

/// The inventory entry that provisions exactly like `s` (stack files made absolute, so the
/// entry works from any directory).
pub fn entry_of(s: &ProvisionSettings) -> Install {
    let stack = |v: &str| {
        if inventory::is_stack_file(v) {
            std::path::absolute(v)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| v.to_string())
        } else {
            v.to_string()
        }
    };
    Install {
        keycloak_host: s.keycloak_host.clone(),
        kheops_host: s.kheops_host.clone(),
        keycloak_domain: s.keycloak_domain.clone(),
        kheops_domain: s.kheops_domain.clone(),
        realm: s.realm.clone(),
        acme_contact: s.acme_contact.clone(),
        acme_directory: s.acme_directory.clone(),
        keycloak_stack: stack(&s.keycloak_stack),
        kheops_stack: stack(&s.kheops_stack),
        keycloak_ca_file: s.keycloak_ca_file.clone(),
        keycloak_vars: s.keycloak_var.iter().cloned().collect(),
        kheops_vars: s.kheops_var.iter().cloned().collect(),
    }
}

/// The settings to run with, and the install to save afterwards. Reads the inventory for
/// `--install`, and checks before anything runs that `--save-install` will be able to write.
pub fn resolve(ctx: &Context, a: ProvisionArgs) -> Result<(ProvisionSettings, Option<String>)> {
    let inventory = match (&a.install, &a.save_install) {
        (Some(_), _) => Some(Inventory::load(&ctx.inventory, true)?),
        (None, Some(_)) => Some(Inventory::load(&ctx.inventory, false)?),
        (None, None) => None,
    };
    if let Some(name) = &a.save_install {
        inventory::check_name(name).map_err(|m| {
            Error::usage(anyhow!("--save-install: {m}")).hint("nothing was sent to the agents")
        })?;
    }
    let entry = match (&a.install, &inventory) {
        (Some(name), Some(inv)) => Some((name.as_str(), inv.get(name)?)),
        _ => None,
    };
    let s = settings(&a, entry).map_err(Error::usage)?;
    Ok((s, a.save_install))
}

/// After the run: writes install `save` when the run succeeded (exit code 0, not a dry run);
/// returns the exit code.
pub fn save_after(
    ctx: &Context,
    save: Option<String>,
    s: &ProvisionSettings,
    code: u8,
) -> Result<u8> {
    let Some(name) = save else {
        return Ok(code);
    };
    if code != 0 || s.dry_run {
        eprintln!(
            "note: install `{name}` was not saved to {} ({})",
            ctx.inventory.display(),
            if s.dry_run {
                "a dry run"
            } else {
                "the run did not succeed"
            }
        );
        return Ok(code);
    }
    inventory::save(&ctx.inventory, &name, &entry_of(s))
        .map_err(|e| e.context("the install is provisioned, but saving it failed"))?;
    eprintln!("saved install `{name}` to {}", ctx.inventory.display());
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::BTreeMap;

    fn args(argv: &[&str]) -> anyhow::Result<ProvisionArgs> {
        let all: Vec<&str> = ["kctl", "provision"].iter().chain(argv).copied().collect();
        match crate::cli::Cli::try_parse_from(all)?.command {
            crate::cli::Command::Provision(a) => Ok(a),
            other => anyhow::bail!("not provision: {other:?}"),
        }
    }

    fn entry() -> Install {
        Install {
            keycloak_host: "kc.inv.test".parse().unwrap_or(Target {
                host: String::new(),
                port: 0,
            }),
            kheops_host: "kh.inv.test:7444".parse().unwrap_or(Target {
                host: String::new(),
                port: 0,
            }),
            keycloak_domain: "kc.inv.test".into(),
            kheops_domain: "kh.inv.test".into(),
            realm: "inv".into(),
            acme_contact: Some("inv@test".into()),
            acme_directory: Some("letsencrypt-staging".into()),
            keycloak_stack: "keycloak-16".into(),
            kheops_stack: "kheops-0.9".into(),
            keycloak_ca_file: None,
            keycloak_vars: BTreeMap::from([
                ("root".into(), "/srv/inv".into()),
                ("keycloak_version".into(), "16.1.1".into()),
            ]),
            kheops_vars: BTreeMap::new(),
        }
    }

    #[test]
    fn the_entry_fills_what_the_command_line_leaves_out() -> anyhow::Result<()> {
        let a = args(&[
            "--install",
            "prod",
            "--realm",
            "cli",
            "--keycloak-var",
            "root=/srv/cli",
        ])?;
        let e = entry();
        let s = settings(&a, Some(("prod", &e)))?;
        assert_eq!(s.keycloak_host.to_string(), "kc.inv.test:7443");
        assert_eq!(s.kheops_host.to_string(), "kh.inv.test:7444");
        assert_eq!(s.realm, "cli", "the command line wins");
        assert_eq!(s.acme_directory.as_deref(), Some("letsencrypt-staging"));
        assert_eq!(s.keycloak_stack, "keycloak-16");
        // Both variables, the command line's last (so it wins when rendered).
        assert_eq!(
            s.keycloak_var.last(),
            Some(&("root".into(), "/srv/cli".into()))
        );
        assert_eq!(entry_of(&s).keycloak_vars["root"], "/srv/cli");
        assert_eq!(entry_of(&s).keycloak_vars["keycloak_version"], "16.1.1");
        // A positional host wins too.
        let a = args(&["other.test", "--install", "prod"])?;
        assert_eq!(
            settings(&a, Some(("prod", &e)))?.keycloak_host.host,
            "other.test"
        );
        Ok(())
    }

    #[test]
    fn without_an_install_the_hosts_and_domains_are_required_and_defaults_apply()
    -> anyhow::Result<()> {
        let err = args(&["kc.test"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("required"), "{err}");
        let a = args(&[
            "kc.test",
            "kh.test",
            "--keycloak-domain",
            "kc.test",
            "--kheops-domain",
            "kh.test",
        ])?;
        let s = settings(&a, None)?;
        assert_eq!(
            (
                s.realm.as_str(),
                s.keycloak_stack.as_str(),
                s.kheops_stack.as_str()
            ),
            ("demo", "keycloak-26", "kheops-0.9")
        );
        // Saved and read back, the entry gives the same settings.
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("inventory.toml");
        inventory::save(&path, "adhoc", &entry_of(&s)).map_err(|e| anyhow!(e.render()))?;
        let inv =
            Inventory::load_with_env(&path, true, Vec::new()).map_err(|e| anyhow!(e.render()))?;
        let again = settings(
            &args(&["--install", "adhoc"])?,
            Some(("adhoc", inv.get("adhoc").map_err(|e| anyhow!(e.render()))?)),
        )?;
        assert_eq!(again, s);
        Ok(())
    }
}
