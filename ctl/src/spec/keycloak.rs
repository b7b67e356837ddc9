//! The `keycloak_realm` kind of the spec file: the KHEOPS realm, reconciled by the agent on the
//! Keycloak host over the Admin REST API.
//!
//! ```toml
//! [[resource]]
//! kind = "secret"
//! name = "kheops-auth-secret"
//! path = "/srv/kctl/keycloak/kheops-auth-secret"
//!
//! [[resource]]
//! kind = "keycloak_realm"
//! name = "demo"
//! url = "https://127.0.0.1:8443/auth"                     # as the agent reaches Keycloak
//! admin_credential_file = "/srv/kctl/keycloak/admin-password"
//! # admin_user = "admin"; admin_realm = "master"; admin_client_id = "kagent" (client credentials)
//! # ca_file = "/srv/kctl/keycloak/tls/ca.pem"
//! # connect_address = "127.0.0.1"   # reach `url`'s name at this IP (hairpin NAT)
//! kheops_origin = "https://kheops.example.org"
//! client_secret_file = "/srv/kctl/keycloak/kheops-auth-secret"
//! # realm = "demo"; registration_allowed = true; ssl_required = "external"
//! # frontend_url = "https://kheops.example.org/auth"; flavor = "keycloak-26" | "legacy-16"
//! ```

use kagent_proto::v1;
use serde::Deserialize;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeycloakRealmSpec {
    pub name: String,
    pub url: String,
    pub admin_credential_file: String,
    pub admin_user: Option<String>,
    pub admin_realm: Option<String>,
    pub admin_client_id: Option<String>,
    pub ca_file: Option<String>,
    /// Connect to this IP instead of resolving `url`'s host (the name is still verified).
    pub connect_address: Option<String>,
    pub realm: Option<String>,
    pub kheops_origin: String,
    #[serde(default)]
    pub registration_allowed: bool,
    pub ssl_required: Option<String>,
    pub frontend_url: Option<String>,
    pub client_secret_file: String,
    pub flavor: Option<String>,
}

fn flavor(s: Option<&str>) -> Result<v1::KeycloakFlavor, String> {
    match s {
        None | Some("keycloak-26") | Some("26") => Ok(v1::KeycloakFlavor::Keycloak26),
        Some("legacy-16") | Some("16") => Ok(v1::KeycloakFlavor::Legacy16),
        Some(o) => Err(format!(
            "field `flavor`: {o:?} is not a flavor; use \"keycloak-26\" or \"legacy-16\""
        )),
    }
}

pub fn check_keycloak_realm(k: &KeycloakRealmSpec) -> Result<(), String> {
    flavor(k.flavor.as_deref())?;
    if !(k.url.starts_with("https://") || k.url.starts_with("http://")) {
        return Err(format!(
            "field `url`: {:?}: use http(s)://HOST:PORT[/auth]",
            k.url
        ));
    }
    for (f, p) in [
        ("admin_credential_file", &k.admin_credential_file),
        ("client_secret_file", &k.client_secret_file),
    ] {
        if !p.starts_with('/') {
            return Err(format!("field `{f}`: {p:?} is not an absolute path"));
        }
    }
    if let Some(a) = &k.connect_address
        && !a.is_empty()
        && a.parse::<std::net::IpAddr>().is_err()
    {
        return Err(format!(
            "field `connect_address`: {a:?} is not an IP address (e.g. 127.0.0.1)"
        ));
    }
    if !k.kheops_origin.starts_with("https://") && !k.kheops_origin.starts_with("http://") {
        return Err(format!(
            "field `kheops_origin`: {:?}: write scheme and host, e.g. https://kheops.example.org",
            k.kheops_origin
        ));
    }
    Ok(())
}

/// The admin connection as the API carries it (also used by `kctl keycloak export`).
pub fn admin_proto(
    url: &str,
    credential_file: &str,
    user: Option<&str>,
    realm: Option<&str>,
    client_id: Option<&str>,
    ca_file: Option<&str>,
) -> v1::KeycloakAdmin {
    v1::KeycloakAdmin {
        url: url.to_string(),
        realm: realm.unwrap_or_default().to_string(),
        username: user.unwrap_or_default().to_string(),
        client_id: client_id.unwrap_or_default().to_string(),
        credential_file: credential_file.to_string(),
        ca_file: ca_file.unwrap_or_default().to_string(),
        connect_address: String::new(),
    }
}

pub fn keycloak_realm_to_proto(k: &KeycloakRealmSpec) -> Result<v1::KeycloakRealm, String> {
    Ok(v1::KeycloakRealm {
        admin: Some(v1::KeycloakAdmin {
            connect_address: k.connect_address.clone().unwrap_or_default(),
            ..admin_proto(
                &k.url,
                &k.admin_credential_file,
                k.admin_user.as_deref(),
                k.admin_realm.as_deref(),
                k.admin_client_id.as_deref(),
                k.ca_file.as_deref(),
            )
        }),
        realm: k.realm.clone().unwrap_or_default(),
        kheops_origin: k.kheops_origin.clone(),
        registration_allowed: k.registration_allowed,
        ssl_required: k.ssl_required.clone().unwrap_or_default(),
        frontend_url: k.frontend_url.clone().unwrap_or_default(),
        client_secret_file: k.client_secret_file.clone(),
        flavor: flavor(k.flavor.as_deref())? as i32,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use kagent_proto::v1;

    const SPEC: &str = r#"
[[resource]]
kind = "secret"
name = "kheops-auth-secret"
path = "/srv/kctl/keycloak/kheops-auth-secret"

[[resource]]
kind = "keycloak_realm"
name = "demo"
url = "https://127.0.0.1:8443/auth"
admin_credential_file = "/srv/kctl/keycloak/admin-password"
kheops_origin = "https://kheops.example.org"
client_secret_file = "/srv/kctl/keycloak/kheops-auth-secret"
registration_allowed = true
flavor = "legacy-16"
"#;

    #[test]
    fn the_toml_kind_becomes_the_proto_resource() -> anyhow::Result<()> {
        let resources = crate::spec::parse(SPEC)?;
        let spec = crate::spec::to_proto(&resources, Path::new("/"))?;
        let Some(v1::resource::Kind::KeycloakRealm(k)) = &spec.resources[1].kind else {
            anyhow::bail!("not a keycloak_realm: {:?}", spec.resources[1]);
        };
        assert_eq!(k.flavor, v1::KeycloakFlavor::Legacy16 as i32);
        assert!(k.registration_allowed);
        assert_eq!(
            k.admin.as_ref().map(|a| a.credential_file.as_str()),
            Some("/srv/kctl/keycloak/admin-password")
        );
        Ok(())
    }

    #[test]
    fn mistakes_name_the_field() {
        for (bad, field) in [
            (SPEC.replace("legacy-16", "17"), "flavor"),
            (
                SPEC.replace("https://127.0.0.1:8443/auth", "127.0.0.1"),
                "url",
            ),
            (
                SPEC.replace(
                    "\"/srv/kctl/keycloak/admin-password\"",
                    "\"admin-password\"",
                ),
                "admin_credential_file",
            ),
            (
                SPEC.replace("registration_allowed", "registration"),
                "registration",
            ),
        ] {
            let err = crate::spec::parse(&bad)
                .map(|_| ())
                .err()
                .map(|e| format!("{e:#}"));
            assert!(
                err.as_deref().is_some_and(|e| e.contains(field)),
                "{field}: {err:?}"
            );
        }
    }
}
