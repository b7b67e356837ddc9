//! `kctl keycloak export HOST --realm demo` (the seed's backup step, through the agent on the
//! Keycloak host: the admin credential stays there) and `kctl reveal HOST PATH` (a managed
//! secret's value, e.g. the kheopsAuthorization client secret for the KHEOPS host), and
//! `kctl keycloak check HOST` (the realm's verification checks, run from HOST).

use kagent_proto::v1;

use super::{Context, connect, print, print_json};
use crate::error::{EXIT_FAILED, Result};
use crate::host::Target;
use crate::output::{self, Format};

pub struct ExportArgs<'a> {
    pub realm: &'a str,
    pub url: &'a str,
    pub admin_credential_file: &'a str,
    pub admin_user: Option<&'a str>,
    pub admin_realm: Option<&'a str>,
    pub admin_client_id: Option<&'a str>,
    pub ca_file: Option<&'a str>,
    pub include_secrets: bool,
}

pub async fn export(ctx: &Context, host: &Target, a: ExportArgs<'_>) -> Result<u8> {
    let mut client = connect(ctx, host).await?;
    let request = v1::ExportKeycloakRealmRequest {
        admin: Some(crate::spec::keycloak_admin_proto(
            a.url,
            a.admin_credential_file,
            a.admin_user,
            a.admin_realm,
            a.admin_client_id,
            a.ca_file,
        )),
        realm: a.realm.to_string(),
        include_secrets: a.include_secrets,
    };
    let json = client
        .export_keycloak_realm(request)
        .await
        .map_err(|s| client.explain("ExportKeycloakRealm", &s))?;
    print(&format!("{json}\n"))?;
    if !a.include_secrets {
        eprintln!("note: client secrets are left out; pass --include-secrets for a full backup");
    }
    Ok(0)
}

pub async fn reveal(ctx: &Context, host: &Target, path: &str) -> Result<u8> {
    let mut client = connect(ctx, host).await?;
    let value = client
        .reveal_secret(path)
        .await
        .map_err(|s| client.explain("RevealSecret", &s))?;
    print(&format!("{value}\n"))?;
    Ok(0)
}

pub async fn check(ctx: &Context, host: &Target, request: v1::CheckKeycloakRequest) -> Result<u8> {
    let mut client = connect(ctx, host).await?;
    let checks = client
        .check_keycloak(request)
        .await
        .map_err(|s| client.explain("CheckKeycloak", &s))?;
    match ctx.format {
        Format::Human => print(&output::keycloak_checks_human(&checks))?,
        Format::Json => print_json(&output::keycloak_checks_json(&checks))?,
    }
    Ok(if checks.iter().all(|c| c.pass) {
        0
    } else {
        EXIT_FAILED
    })
}
