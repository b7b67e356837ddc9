//! `keycloak_realm`: the KHEOPS realm on the Keycloak of this host, reconciled over the Admin
//! REST API. Same verbs as every kind: `from_proto` (validate and render the desired model),
//! `read` (Keycloak -> observed: only the objects the model names), `plan` (pure: the steps
//! that differ, one line per Keycloak object), `apply` (run those steps, GET/POST/PUT only).
//!
//! Nothing the model does not name is ever deleted. The admin credential and the
//! `kheopsAuthorization` secret are files on this host (`secret` resources): both are read when
//! needed and never leave the agent; the secret is set in Keycloak to the file's value, so it
//! stays the same across re-runs and re-provisioning.

pub mod admin_api;
pub mod diff;
pub mod model;
pub mod render;

use std::collections::BTreeMap;
use std::path::PathBuf;

use kagent_proto::v1::{self, Action, KeycloakFlavor};
use serde_json::Value;

use super::{Change, FieldError, Progress, ResourceError};
use crate::host::fs::{self, ManagedPath, Roots};
use crate::host::http;
use admin_api::{Admin, Login};
use render::{Flavor, Settings};

/// How to reach Keycloak as an administrator.
#[derive(Debug, Clone)]
pub struct AdminSpec {
    pub url: String,
    pub realm: String,
    pub username: String,
    pub client_id: Option<String>,
    pub credential_file: ManagedPath,
    pub ca_file: Option<PathBuf>,
    /// Connect here instead of resolving the URL's host (see `KeycloakAdmin.connect_address`).
    pub connect_address: Option<std::net::IpAddr>,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub admin: AdminSpec,
    pub settings: Settings,
    pub client_secret_file: ManagedPath,
    pub desired: model::Desired,
}

/// What Keycloak has of the objects the model names. `realm: None`: no such realm.
#[derive(Debug, Clone)]
pub struct Observed {
    pub realm: Option<ObservedRealm>,
    /// Why Keycloak could not be read, when that is expected on a fresh host (the admin
    /// credential or Keycloak itself comes from an earlier resource of the spec): the plan
    /// says so and apply reads again.
    pub unreachable: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ObservedRealm {
    pub rep: Value,
    /// Desired scopes that exist, by name (representation with `protocolMappers`).
    pub scopes: BTreeMap<String, Value>,
    /// Every client scope of the realm.
    pub scope_names: std::collections::BTreeSet<String>,
    pub clients: BTreeMap<String, ObservedClient>,
}

#[derive(Debug, Clone)]
pub struct ObservedClient {
    pub rep: Value,
    /// Confidential clients managed from a file: does Keycloak hold the file's value?
    pub secret_matches: Option<bool>,
    /// Per role client: (roles of the service account, scope-mapped roles).
    pub grants: BTreeMap<String, (Vec<String>, Vec<String>)>,
}

fn field(f: &'static str, p: impl Into<String>) -> FieldError {
    FieldError::new(f, p)
}

pub fn admin_from_proto(
    a: Option<&v1::KeycloakAdmin>,
    roots: &Roots,
) -> Result<AdminSpec, FieldError> {
    let Some(a) = a else {
        return Err(field(
            "admin",
            "missing: give the admin url and credential_file",
        ));
    };
    let url = a.url.trim_end_matches('/').to_string();
    if !(url.starts_with("http://") || url.starts_with("https://"))
        || url.contains(char::is_whitespace)
    {
        return Err(field(
            "admin.url",
            format!(
                "{:?}: use http(s)://HOST:PORT[/auth], e.g. https://127.0.0.1:8443/auth",
                a.url
            ),
        ));
    }
    let credential_file = roots
        .check(&a.credential_file)
        .map_err(|e| field("admin.credential_file", e.to_string()))?;
    let ca_file = match a.ca_file.as_str() {
        "" => None,
        p if p.starts_with('/') => Some(PathBuf::from(p)),
        p => {
            return Err(field(
                "admin.ca_file",
                format!("{p:?} is not an absolute path"),
            ));
        }
    };
    let connect_address = match a.connect_address.as_str() {
        "" => None,
        v => Some(v.parse::<std::net::IpAddr>().map_err(|_| {
            field(
                "admin.connect_address",
                format!("{v:?} is not an IP address (e.g. 127.0.0.1)"),
            )
        })?),
    };
    Ok(AdminSpec {
        url,
        realm: if a.realm.is_empty() {
            "master".into()
        } else {
            a.realm.clone()
        },
        username: if a.username.is_empty() {
            "admin".into()
        } else {
            a.username.clone()
        },
        client_id: (!a.client_id.is_empty()).then(|| a.client_id.clone()),
        credential_file,
        ca_file,
        connect_address,
    })
}

fn check_realm_name(r: &str) -> Result<(), FieldError> {
    if r.is_empty()
        || r.len() > 100
        || !r
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(field(
            "realm",
            format!("{r:?}: use letters, digits, '-', '_' or '.' (e.g. demo)"),
        ));
    }
    Ok(())
}

/// `https://host[:port]`: what a browser sends as `Origin`.
pub fn check_origin(o: &str) -> Result<String, String> {
    let o = o.trim_end_matches('/');
    let rest = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
        .ok_or_else(|| format!("{o:?}: write scheme and host, e.g. https://kheops.example.org"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '*', ' ']) {
        return Err(format!(
            "{o:?}: an origin has no path, wildcard or query (e.g. https://kheops.example.org)"
        ));
    }
    Ok(o.to_string())
}

pub fn from_proto(p: &v1::KeycloakRealm, roots: &Roots) -> Result<Spec, FieldError> {
    let admin = admin_from_proto(p.admin.as_ref(), roots)?;
    let realm = if p.realm.is_empty() {
        "demo".to_string()
    } else {
        p.realm.clone()
    };
    check_realm_name(&realm)?;
    if realm == "master" {
        return Err(field(
            "realm",
            "the KHEOPS realm must not be the master realm; use e.g. demo",
        ));
    }
    let kheops_origin = check_origin(&p.kheops_origin).map_err(|e| field("kheops_origin", e))?;
    let ssl_required = match p.ssl_required.as_str() {
        "" => "external".to_string(),
        s @ ("external" | "none" | "all") => s.to_string(),
        s => {
            return Err(field(
                "ssl_required",
                format!("{s:?}: use external, none or all"),
            ));
        }
    };
    let frontend_url = match p.frontend_url.trim_end_matches('/') {
        "" => None,
        u if u.starts_with("https://") || u.starts_with("http://") => Some(u.to_string()),
        u => {
            return Err(field(
                "frontend_url",
                format!("{u:?}: give the public base URL, e.g. https://kheops.example.org/auth"),
            ));
        }
    };
    let flavor = match KeycloakFlavor::try_from(p.flavor) {
        Ok(KeycloakFlavor::Unspecified | KeycloakFlavor::Keycloak26) => Flavor::Keycloak26,
        Ok(KeycloakFlavor::Legacy16) => Flavor::Legacy16,
        Err(_) => {
            return Err(field(
                "flavor",
                format!("{} is not a flavor; use keycloak-26 or legacy-16", p.flavor),
            ));
        }
    };
    let client_secret_file = roots
        .check(&p.client_secret_file)
        .map_err(|e| field("client_secret_file", e.to_string()))?;
    let settings = Settings {
        flavor,
        realm,
        kheops_origin,
        registration_allowed: p.registration_allowed,
        ssl_required,
        frontend_url,
    };
    Ok(Spec {
        admin,
        desired: render::render(&settings),
        settings,
        client_secret_file,
    })
}

/// The first line of a managed secret file.
pub fn read_secret_file(path: &ManagedPath, what: &str) -> Result<String, ResourceError> {
    let state = fs::read(path)
        .map_err(|e| ResourceError::io("read", path.path(), &e))?
        .ok_or_else(|| ResourceError {
            message: format!("{what} {path} does not exist"),
            hint: "list a `secret` resource with this path before this one (a dry run of a \
                   fresh host cannot read Keycloak yet)"
                .into(),
        })?;
    let text = String::from_utf8_lossy(&state.content);
    let value = text.lines().next().unwrap_or("").trim().to_string();
    if value.is_empty() {
        return Err(ResourceError {
            message: format!("{what} {path} is empty"),
            hint: "write the value on the first line".into(),
        });
    }
    Ok(value)
}

/// The HTTP client for Keycloak's admin URL (trust and address as the spec says).
fn admin_client(a: &AdminSpec) -> Result<http::Client, ResourceError> {
    http::Client::connecting_to(a.ca_file.as_deref(), a.connect_address).map_err(|e| {
        ResourceError {
            message: e.to_string(),
            hint: "check admin.ca_file".into(),
        }
    })
}

pub async fn login(a: &AdminSpec) -> Result<Admin, ResourceError> {
    let client = admin_client(a)?;
    let secret = read_secret_file(&a.credential_file, "the admin credential")?;
    Admin::login(
        client,
        &Login {
            base: a.url.clone(),
            realm: a.realm.clone(),
            username: a.username.clone(),
            client_id: a.client_id.clone(),
            secret,
        },
    )
    .await
}

pub async fn read(spec: &Spec) -> Result<Observed, ResourceError> {
    // The secret file may be generated by an earlier resource of the same spec, after this
    // read: then Keycloak's secret is taken as different, and apply reads the file.
    let secret = match fs::read(&spec.client_secret_file) {
        Ok(Some(_)) => Some(read_secret_file(
            &spec.client_secret_file,
            "the client secret file",
        )?),
        Ok(None) => None,
        Err(e) => {
            return Err(ResourceError::io(
                "read",
                spec.client_secret_file.path(),
                &e,
            ));
        }
    };
    if let Some(why) = not_yet(&spec.admin).await? {
        return Ok(Observed {
            realm: None,
            unreachable: Some(why),
        });
    }
    let admin = login(&spec.admin).await?;
    admin.read(&spec.desired, secret.as_deref()).await
}

/// Why Keycloak cannot be read *yet*: the admin credential does not exist (an earlier
/// `secret` makes it) or nothing answers at the URL (an earlier container starts Keycloak).
/// A refused login or an untrusted certificate is not "yet": those are errors.
async fn not_yet(a: &AdminSpec) -> Result<Option<String>, ResourceError> {
    let exists = fs::read(&a.credential_file)
        .map_err(|e| ResourceError::io("read", a.credential_file.path(), &e))?
        .is_some();
    if !exists {
        return Ok(Some(format!(
            "the admin credential {} does not exist yet",
            a.credential_file
        )));
    }
    let client = admin_client(a)?;
    let url = format!("{}/realms/master", a.url);
    match client.get(&url, None).await {
        Err(http::HttpError::Transport { error, .. })
            if [
                "onnection refused",
                "dns error",
                "timed out",
                "failed to lookup",
            ]
            .iter()
            .any(|s| error.contains(s)) =>
        {
            Ok(Some(format!("nothing answers at {}: {error}", a.url)))
        }
        _ => Ok(None),
    }
}

pub fn plan(spec: &Spec, observed: &Observed) -> Change {
    if let Some(why) = &observed.unreachable {
        return Change {
            action: Action::Create,
            diff: format!(
                "+ realm {} (Keycloak cannot be read yet: {why}; it is read and reconciled when \
                 applied)",
                spec.settings.realm
            ),
            warnings: Vec::new(),
        };
    }
    let steps = diff::steps(&spec.desired, observed);
    let mut warnings: Vec<String> = diff::missing_scopes(&spec.desired, observed)
        .into_iter()
        .map(|s| {
            format!(
                "client scope {s:?} does not exist in realm {:?}; attaching it will fail",
                spec.settings.realm
            )
        })
        .collect();
    if spec.settings.kheops_origin.starts_with("http://") {
        warnings.push("kheops_origin is plain http: browsers will not keep the session".into());
    }
    if steps.is_empty() {
        return Change {
            warnings,
            ..Change::unchanged()
        };
    }
    let action = if steps.first().is_some_and(diff::Step::is_create) {
        Action::Create
    } else {
        Action::Update
    };
    let diff = steps
        .iter()
        .map(|s| s.describe(&spec.settings.realm))
        .collect::<Vec<_>>()
        .join("\n");
    Change {
        action,
        diff,
        warnings,
    }
}

pub async fn apply(
    spec: &Spec,
    observed: &Observed,
    progress: &(dyn Progress + '_),
) -> Result<String, ResourceError> {
    // Planned before Keycloak could be read: read now (the resources before this one, the
    // container among them, have been applied).
    let fresh;
    let observed = if observed.unreachable.is_some() {
        progress.report("reading Keycloak", None);
        fresh = read(spec).await?;
        if let Some(why) = &fresh.unreachable {
            return Err(ResourceError {
                message: format!("cannot reach Keycloak: {why}"),
                hint: "list the Keycloak container (with a health check) and the admin \
                       credential's `secret` before this resource, or check `url`"
                    .into(),
            });
        }
        &fresh
    } else {
        observed
    };
    let steps = diff::steps(&spec.desired, observed);
    let secret = read_secret_file(&spec.client_secret_file, "the client secret file")?;
    let mut admin = login(&spec.admin).await?;
    let total = steps.len();
    for (i, step) in steps.iter().enumerate() {
        let line = step.describe(&spec.settings.realm);
        let head = line.lines().next().unwrap_or("");
        progress.report(head, Some(((i * 100) / total.max(1)) as u32));
        admin
            .run(&spec.settings.realm, step, &secret)
            .await
            .map_err(|e| ResourceError {
                message: format!("{head}: {}", e.message),
                hint: e.hint,
            })?;
        if step.is_create() {
            // Keycloak judges admin rights by the roles in the token, and a token issued before
            // the realm existed lacks its management roles (a service client in master gets 403
            // on the next call): log in again.
            admin = login(&spec.admin).await?;
        }
    }
    Ok(format!(
        "{total} change(s) to realm {} at {}",
        spec.settings.realm, spec.admin.url
    ))
}

/// `ExportKeycloakRealm`: the realm as JSON, secrets only when asked.
pub async fn export(
    admin: &AdminSpec,
    realm: &str,
    include_secrets: bool,
) -> Result<Value, ResourceError> {
    check_realm_name(realm).map_err(|e| ResourceError {
        message: e.problem,
        hint: String::new(),
    })?;
    login(admin).await?.export(realm, include_secrets).await
}

/// `RevealSecret`: the value of a one-word secret file under the managed roots (for example
/// the `kheopsAuthorization` client secret, which the KHEOPS host needs). Larger or multi-word
/// files are refused: this is not a general file reader.
pub fn reveal(roots: &Roots, path: &str) -> Result<String, FieldError> {
    let p = roots
        .check(path)
        .map_err(|e| field("path", e.to_string()))?;
    let state = fs::read(&p)
        .map_err(|e| field("path", format!("cannot read {p}: {e}")))?
        .ok_or_else(|| field("path", format!("{p} does not exist")))?;
    let text = std::str::from_utf8(&state.content)
        .map_err(|_| field("path", format!("{p} is not text")))?;
    let value = text.strip_suffix('\n').unwrap_or(text);
    if value.is_empty() || value.len() > 1024 || value.contains(char::is_whitespace) {
        return Err(field(
            "path",
            format!("{p} is not a secret file (one word on one line, at most 1024 characters)"),
        ));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> v1::KeycloakRealm {
        v1::KeycloakRealm {
            admin: Some(v1::KeycloakAdmin {
                url: "https://127.0.0.1:8443/auth".into(),
                credential_file: "/r/kc/admin".into(),
                ..Default::default()
            }),
            kheops_origin: "https://kheops.example.org".into(),
            client_secret_file: "/r/kc/secret".into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_the_seed() -> Result<(), FieldError> {
        let s = from_proto(&good(), &Roots::new(&["/r".into()]))?;
        assert_eq!(s.settings.realm, "demo");
        assert_eq!(s.settings.ssl_required, "external");
        assert_eq!(s.settings.flavor, Flavor::Keycloak26);
        assert_eq!(s.admin.realm, "master");
        assert_eq!(s.admin.username, "admin");
        Ok(())
    }

    #[test]
    fn every_refusal_names_its_field() {
        let roots = Roots::new(&["/r".into()]);
        type Change = Box<dyn Fn(&mut v1::KeycloakRealm)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|p| p.admin = None), "admin"),
            (
                Box::new(|p| {
                    if let Some(a) = p.admin.as_mut() {
                        a.url = "127.0.0.1:8443".into()
                    }
                }),
                "admin.url",
            ),
            (
                Box::new(|p| {
                    if let Some(a) = p.admin.as_mut() {
                        a.credential_file = "/etc/shadow".into()
                    }
                }),
                "admin.credential_file",
            ),
            (Box::new(|p| p.realm = "master".into()), "realm"),
            (Box::new(|p| p.realm = "a b".into()), "realm"),
            (
                Box::new(|p| p.kheops_origin = "https://kh/x".into()),
                "kheops_origin",
            ),
            (
                Box::new(|p| p.kheops_origin = "kh.example".into()),
                "kheops_origin",
            ),
            (
                Box::new(|p| p.ssl_required = "always".into()),
                "ssl_required",
            ),
            (
                Box::new(|p| p.frontend_url = "kh/auth".into()),
                "frontend_url",
            ),
            (Box::new(|p| p.flavor = 9), "flavor"),
            (
                Box::new(|p| p.client_secret_file = "../x".into()),
                "client_secret_file",
            ),
        ];
        for (change, field) in cases {
            let mut p = good();
            change(&mut p);
            assert_eq!(from_proto(&p, &roots).err().map(|e| e.field), Some(field));
        }
    }

    #[test]
    fn reveal_reads_only_one_word_files_under_the_roots() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().canonicalize()?;
        let roots = Roots::new(std::slice::from_ref(&root));
        std::fs::write(root.join("s"), "abc123\n")?;
        std::fs::write(root.join("env"), "A=1\nB=2\n")?;
        assert_eq!(
            reveal(&roots, &root.join("s").to_string_lossy())
                .ok()
                .as_deref(),
            Some("abc123")
        );
        assert!(reveal(&roots, &root.join("env").to_string_lossy()).is_err());
        assert!(reveal(&roots, "/etc/passwd").is_err());
        assert!(reveal(&roots, &root.join("missing").to_string_lossy()).is_err());
        Ok(())
    }
}
