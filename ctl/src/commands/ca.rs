//! `kctl ca init` and `kctl ca issue agent|client`: local file work over [`crate::ca`]; no
//! network. Each prints what it wrote and what to do next.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::anyhow;
use serde_json::json;

use super::{Context, print, print_json};
use crate::ca::{self, Bundle, BundlePaths, Ca, Validity};
use crate::cli::Role;
use crate::config::{AGENT_STEM, CLIENT_STEM};
use crate::error::{Error, Result, ResultExt};
use crate::output::{Format, timestamp};

/// Where the agent's default configuration looks for its TLS files.
const AGENT_TLS_DIR: &str = "/etc/kagent/tls";

pub fn init(ctx: &Context, name: &str, client_name: Option<String>, days: i64) -> Result<u8> {
    check_days(days)?;
    let ca_dir = ctx.paths.ca_dir();
    let identity_dir = &ctx.paths.identity_dir;
    let identity = BundlePaths::new(identity_dir, CLIENT_STEM);
    // Check both places before writing anything, so a refusal leaves nothing half-done.
    if ca_dir.join(ca::CA_KEY).exists() || ca_dir.join(ca::CA_CERT).exists() {
        return Err(Error::usage(anyhow!(
            "a fleet CA already exists in {}; refusing to replace it (every agent trusts it)",
            ca_dir.display()
        ))
        .hint(
            "`kctl ca issue agent|client` use it as it is; to start a new fleet, move it away \
             first or pass --config-dir",
        ));
    }
    if identity.cert.exists() || identity.key.exists() {
        return Err(Error::usage(anyhow!(
            "an identity already exists in {}; refusing to replace it",
            identity_dir.display()
        ))
        .hint(
            "pass --identity DIR to create the new identity elsewhere, or move the old one away",
        ));
    }
    let ca = Ca::generate(name, Validity::days(ca::CA_DAYS)).usage()?;
    ca.save(&ca_dir).usage()?;
    let client_name =
        client_name.unwrap_or_else(|| crate::config::default_client_name(|k| std::env::var_os(k)));
    let bundle = ca
        .issue_client(&client_name, Role::Admin.as_str(), Validity::days(days))
        .usage()?;
    let written = bundle.write(identity_dir, CLIENT_STEM)?;
    let ca_fingerprint = ca::fingerprint_pem(ca.cert_pem())?;
    let not_after = timestamp(ca::not_after_pem(&bundle.cert_pem)?);
    match ctx.format {
        Format::Json => print_json(&json!({
            "ca": {
                "name": name,
                "cert": ca_dir.join(ca::CA_CERT),
                "key": ca_dir.join(ca::CA_KEY),
                "fingerprint": ca_fingerprint,
            },
            "identity": identity_json(&written, &client_name, "admin", &bundle, &not_after)?,
        }))?,
        Format::Human => print(&format!(
            "created the fleet CA {name:?} in {}\n\
             \x20 ca.crt  SHA-256 {ca_fingerprint}\n\
             \x20 ca.key  keep it safe: whoever holds it can mint admin certificates\n\
             issued your identity {client_name:?} (role admin, valid until {not_after}) in {}\n\
             next: issue each agent its certificate, e.g. `kctl ca issue agent vm1.example`\n",
            ca_dir.display(),
            identity_dir.display(),
        ))?,
    }
    Ok(0)
}

pub fn issue_agent(
    ctx: &Context,
    host: &str,
    dns: &[String],
    ips: &[IpAddr],
    days: i64,
    out: Option<PathBuf>,
) -> Result<u8> {
    check_days(days)?;
    let name = crate::host::parse_name(host).usage()?;
    let ca = load_ca(ctx)?;
    let bundle = ca
        .issue_agent(&name, dns, ips, Validity::days(days))
        .usage()?;
    let dir = out.unwrap_or_else(|| ctx.paths.agent_dir(&name));
    let written = bundle.write(&dir, AGENT_STEM)?;
    let fingerprint = bundle.fingerprint()?;
    let not_after = timestamp(ca::not_after_pem(&bundle.cert_pem)?);
    let mut names: Vec<String> = vec![name.clone()];
    for n in dns.iter().cloned().chain(ips.iter().map(IpAddr::to_string)) {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    match ctx.format {
        Format::Json => print_json(&json!({
            "host": name,
            "names": names,
            "cert": written.cert,
            "key": written.key,
            "ca": written.ca,
            "fingerprint": fingerprint,
            "not_after": not_after,
            "install": {
                "cert": format!("{AGENT_TLS_DIR}/agent.crt"),
                "key": format!("{AGENT_TLS_DIR}/agent.key"),
                "ca": format!("{AGENT_TLS_DIR}/ca.crt"),
            },
        }))?,
        Format::Human => print(&format!(
            "issued the agent certificate for {name} (names: {}; valid until {not_after})\n\
             \x20 {}\n\
             \x20 {}\n\
             \x20 {}\n\
             fingerprint (SHA-256): {fingerprint}\n\
             install them on the host where kagent's default configuration expects them:\n\
             \x20 {AGENT_TLS_DIR}/agent.crt  (0644)\n\
             \x20 {AGENT_TLS_DIR}/agent.key  (0600, readable by kagent only)\n\
             \x20 {AGENT_TLS_DIR}/ca.crt     (0644; client certificates must chain to it)\n\
             for example:\n\
             \x20 ssh root@{name} install -d -m 0755 {AGENT_TLS_DIR}\n\
             \x20 scp -p {} {} {} root@{}:{AGENT_TLS_DIR}/\n",
            names.join(", "),
            written.cert.display(),
            written.key.display(),
            written.ca.display(),
            written.cert.display(),
            written.key.display(),
            written.ca.display(),
            scp_host(&name),
        ))?,
    }
    Ok(0)
}

pub fn issue_client(
    ctx: &Context,
    name: &str,
    role: Role,
    days: i64,
    out: Option<PathBuf>,
) -> Result<u8> {
    check_days(days)?;
    let dir = match out {
        Some(dir) => dir,
        None => {
            check_dir_name(name)?;
            ctx.paths.client_dir(name)
        }
    };
    let ca = load_ca(ctx)?;
    let bundle = ca
        .issue_client(name, role.as_str(), Validity::days(days))
        .usage()?;
    let written = bundle.write(&dir, CLIENT_STEM)?;
    let not_after = timestamp(ca::not_after_pem(&bundle.cert_pem)?);
    match ctx.format {
        Format::Json => print_json(&identity_json(
            &written,
            name,
            role.as_str(),
            &bundle,
            &not_after,
        )?)?,
        Format::Human => print(&format!(
            "issued the client certificate {name:?} (role {}, valid until {not_after})\n\
             \x20 {}\n\
             \x20 {}\n\
             \x20 {}\n\
             fingerprint (SHA-256): {}\n\
             use it with: kctl --identity {} facts HOST\n",
            role.as_str(),
            written.cert.display(),
            written.key.display(),
            written.ca.display(),
            bundle.fingerprint()?,
            dir.display(),
        ))?,
    }
    Ok(0)
}

fn load_ca(ctx: &Context) -> Result<Ca> {
    Ca::load(&ctx.paths.ca_dir()).usage_hint(
        "run `kctl ca init` first, or point --config-dir at the directory that holds ca/",
    )
}

fn check_days(days: i64) -> Result<()> {
    if !(1..=ca::CA_DAYS).contains(&days) {
        return Err(Error::usage(anyhow!(
            "--days {days}: a certificate lives 1 to {} days",
            ca::CA_DAYS
        )));
    }
    Ok(())
}

/// NAME becomes a directory under clients/ unless --out is given.
fn check_dir_name(name: &str) -> Result<()> {
    if name.is_empty() || name.starts_with('.') || name.contains('/') || name.contains('\0') {
        return Err(Error::usage(anyhow!(
            "{name:?} cannot be used as a directory name under clients/"
        ))
        .hint("pass --out DIR"));
    }
    Ok(())
}

/// `[::1]` for scp, which needs brackets around IPv6 addresses.
fn scp_host(name: &str) -> String {
    if name.contains(':') {
        format!("[{name}]")
    } else {
        name.to_string()
    }
}

fn identity_json(
    written: &BundlePaths,
    name: &str,
    role: &str,
    bundle: &Bundle,
    not_after: &str,
) -> Result<serde_json::Value> {
    Ok(json!({
        "name": name,
        "role": role,
        "cert": written.cert,
        "key": written.key,
        "ca": written.ca,
        "fingerprint": bundle.fingerprint()?,
        "not_after": not_after,
    }))
}
