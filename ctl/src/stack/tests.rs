//! The built-in stacks rendered with sample variables, checked against the facts of the
//! research notes; and every refusal of the format, naming what is wrong.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, anyhow, bail};
use kagent_proto::v1::{self, resource::Kind as K};

use super::*;

const KC: &str = "kc.example.org";
const KH: &str = "kheops.example.org";
const CLIENT_SECRET: &str = "Zx81kQ0pLmN3vB7tYc2Wd9Hs";

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Sample variables for a built-in stack: the required ones, nothing else.
fn sample(name: &str) -> BTreeMap<String, String> {
    match name {
        "keycloak-26" | "keycloak-16" => vars(&[
            ("keycloak_domain", KC),
            ("kheops_domain", KH),
            ("acme_contact", "ops@example.org"),
        ]),
        "kheops-0.9" => vars(&[
            ("keycloak_domain", KC),
            ("kheops_domain", KH),
            ("acme_contact", "ops@example.org"),
            ("keycloak_client_secret", CLIENT_SECRET),
        ]),
        "kheops-1.x" => vars(&[
            ("keycloak_domain", KC),
            ("kheops_domain", KH),
            ("acme_contact", "ops@example.org"),
            ("kheops_version", "v1.1.2"),
        ]),
        other => panic!("no sample for {other}"),
    }
}

fn render(name: &str) -> Result<v1::HostSpec> {
    find(name)?.render(&sample(name))
}

fn err_of(r: Result<impl std::fmt::Debug>) -> String {
    match r {
        Ok(v) => format!("unexpectedly rendered: {v:?}"),
        Err(e) => format!("{e:#}"),
    }
}

fn position(spec: &v1::HostSpec, name: &str) -> Result<usize> {
    spec.resources
        .iter()
        .position(|r| r.name == name)
        .ok_or_else(|| anyhow!("no resource {name:?}"))
}

fn containers(spec: &v1::HostSpec) -> Vec<(&str, &v1::Container)> {
    spec.resources
        .iter()
        .filter_map(|r| match &r.kind {
            Some(K::Container(c)) => Some((r.name.as_str(), c)),
            _ => None,
        })
        .collect()
}

fn container<'a>(spec: &'a v1::HostSpec, name: &str) -> Result<&'a v1::Container> {
    containers(spec)
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| c)
        .ok_or_else(|| anyhow!("no container {name:?}"))
}

fn secret<'a>(spec: &'a v1::HostSpec, name: &str) -> Result<&'a v1::Secret> {
    spec.resources
        .iter()
        .find_map(|r| match &r.kind {
            Some(K::Secret(s)) if r.name == name => Some(s),
            _ => None,
        })
        .ok_or_else(|| anyhow!("no secret {name:?}"))
}

fn file<'a>(spec: &'a v1::HostSpec, name: &str) -> Result<&'a v1::File> {
    spec.resources
        .iter()
        .find_map(|r| match &r.kind {
            Some(K::File(f)) if r.name == name => Some(f),
            _ => None,
        })
        .ok_or_else(|| anyhow!("no file {name:?}"))
}

fn certificate(spec: &v1::HostSpec) -> Result<&v1::Certificate> {
    spec.resources
        .iter()
        .find_map(|r| match &r.kind {
            Some(K::Certificate(c)) => Some(c),
            _ => None,
        })
        .ok_or_else(|| anyhow!("no certificate"))
}

fn realm(spec: &v1::HostSpec) -> Result<&v1::KeycloakRealm> {
    spec.resources
        .iter()
        .find_map(|r| match &r.kind {
            Some(K::KeycloakRealm(k)) => Some(k),
            _ => None,
        })
        .ok_or_else(|| anyhow!("no keycloak_realm"))
}

fn env<'a>(c: &'a v1::Container, name: &str) -> Option<&'a str> {
    c.env
        .iter()
        .find(|e| e.name == name)
        .map(|e| e.value.as_str())
}

/// The host-side source of the mount at `target`: (kind, name or path).
fn mount_source(c: &v1::Container, target: &str) -> Option<(&'static str, String)> {
    use v1::mount::Source;
    c.mounts
        .iter()
        .find(|m| m.target == target)
        .and_then(|m| m.source.as_ref())
        .map(|s| match s {
            Source::Bind(p) => ("bind", p.clone()),
            Source::Volume(v) => ("volume", v.clone()),
            Source::Secret(s) => ("secret", s.clone()),
            Source::File(f) => ("file", f.clone()),
        })
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

#[test]
fn the_builtin_stacks_parse_and_are_named_after_their_files() -> Result<()> {
    let all = builtin()?;
    let names: Vec<(&str, Role)> = all.iter().map(|s| (s.name.as_str(), s.role)).collect();
    assert_eq!(
        names,
        [
            ("keycloak-26", Role::Keycloak),
            ("keycloak-16", Role::Keycloak),
            ("kheops-0.9", Role::Kheops),
            ("kheops-1.x", Role::Kheops),
        ]
    );
    for ((file, _), s) in BUILTIN.iter().zip(&all) {
        assert_eq!(*file, format!("{}.toml", s.name));
        assert!(!s.description.is_empty() && !s.version.is_empty());
        // `root` is how tests and hosts point a stack at the agent's managed root.
        let root = s.variables().iter().find(|v| v.name == "root");
        assert_eq!(
            root.map(|v| (v.kind, v.default.as_deref())),
            Some((Kind::Path, Some("/srv/kctl"))),
            "{}",
            s.name
        );
        // Every path of the rendered spec lies under it.
        let spec = s.render(&sample(&s.name))?;
        for r in &spec.resources {
            let paths: Vec<&str> = match &r.kind {
                Some(K::File(f)) => vec![&f.path],
                Some(K::Secret(x)) => vec![&x.path],
                Some(K::Certificate(c)) => c.targets.iter().map(|t| t.path.as_str()).collect(),
                _ => vec![],
            };
            for p in paths {
                assert!(p.starts_with("/srv/kctl/"), "{} {}: {p}", s.name, r.name);
            }
        }
    }
    assert!(err_of(find("keycloak-17")).contains(
        "there is no stack named \"keycloak-17\"; the built-in stacks are keycloak-26, \
             keycloak-16, kheops-0.9, kheops-1.x"
    ));
    Ok(())
}

#[test]
fn keycloak_26_runs_under_auth_with_its_hostname_and_uid_1000_tls() -> Result<()> {
    let spec = render("keycloak-26")?;
    let kc = container(&spec, "keycloak")?;
    assert_eq!(kc.image, "quay.io/keycloak/keycloak:26.5.6");
    let other = find("keycloak-26")?.render(&{
        let mut v = sample("keycloak-26");
        v.insert("keycloak_version".into(), "26.0.7".into());
        v
    })?;
    assert_eq!(
        container(&other, "keycloak")?.image,
        "quay.io/keycloak/keycloak:26.0.7"
    );
    // `start` (production), /auth, the public URL as hostname so the issuer matches.
    assert_eq!(kc.command.first().map(String::as_str), Some("start"));
    for arg in [
        "--http-relative-path=/auth",
        "--hostname=https://kc.example.org/auth",
        "--health-enabled=true",
        "--db=dev-file",
    ] {
        assert!(
            kc.command.iter().any(|a| a == arg),
            "{arg}: {:?}",
            kc.command
        );
    }
    // 443 -> 8443 on every address; the management port only on loopback.
    let ports: Vec<(&str, u32, u32)> = kc
        .ports
        .iter()
        .map(|p| (p.host_ip.as_str(), p.host_port, p.container_port))
        .collect();
    assert_eq!(ports, [("0.0.0.0", 443, 8443), ("127.0.0.1", 9000, 9000)]);
    // TLS: the files the command names are the certificate's targets, through a directory
    // mount, and readable by uid 1000 (the key 0600, owned by 1000).
    let cert = certificate(&spec)?;
    assert_eq!(cert.domains, [KC]);
    let Some(v1::certificate::Issuer::Acme(acme)) = &cert.issuer else {
        bail!("not ACME: {cert:?}")
    };
    assert_eq!(
        (acme.directory_url.as_str(), acme.contact.as_slice()),
        ("letsencrypt", ["ops@example.org".to_string()].as_slice())
    );
    assert!(
        cert.http01.is_none(),
        "port 80 is free on the Keycloak host"
    );
    let (kind, dir) = mount_source(kc, "/opt/keycloak/conf/tls").ok_or_else(|| anyhow!("tls"))?;
    assert_eq!(kind, "bind");
    for (arg, content, mode) in [
        (
            "--https-certificate-file=/opt/keycloak/conf/tls/",
            v1::CertificateContent::Fullchain,
            0o644,
        ),
        (
            "--https-certificate-key-file=/opt/keycloak/conf/tls/",
            v1::CertificateContent::Key,
            0o600,
        ),
    ] {
        let file = kc
            .command
            .iter()
            .find_map(|a| a.strip_prefix(arg))
            .ok_or_else(|| anyhow!("{arg}"))?;
        let t = cert
            .targets
            .iter()
            .find(|t| t.path == format!("{dir}/{file}"))
            .ok_or_else(|| anyhow!("no target {dir}/{file}"))?;
        assert_eq!(
            (t.content, t.uid, t.mode),
            (content as i32, Some(1000), Some(mode))
        );
    }
    // The bootstrap password: a generated secret readable by uid 1000, mounted, read by the
    // entrypoint; never in the env.
    let admin = secret(&spec, "keycloak-admin-password")?;
    assert_eq!(admin.uid, Some(1000));
    assert_eq!(
        mount_source(kc, "/run/secrets/keycloak_admin_password"),
        Some(("secret", "keycloak-admin-password".into()))
    );
    assert!(
        kc.entrypoint.iter().any(|a| a.contains(
            "read -r KC_BOOTSTRAP_ADMIN_PASSWORD < /run/secrets/keycloak_admin_password"
        ) && a.contains("exec /opt/keycloak/bin/kc.sh \"$@\"")),
        "{:?}",
        kc.entrypoint
    );
    assert_eq!(env(kc, "KC_BOOTSTRAP_ADMIN_USERNAME"), Some("admin"));
    assert_eq!(env(kc, "KC_BOOTSTRAP_ADMIN_PASSWORD"), None);
    assert_eq!(
        mount_source(kc, "/opt/keycloak/data"),
        Some(("volume", "keycloak-data".into()))
    );
    let health = kc.health.clone().unwrap_or_default();
    assert_eq!(health.http, "https://127.0.0.1:9000/auth/health/ready");
    assert_eq!(health.server_name, KC);
    // The realm: the seed's, flavor 26, through the published https port by name, the
    // bootstrap password as credential and a generated secret for kheopsAuthorization.
    let r = realm(&spec)?;
    assert_eq!(r.flavor, v1::KeycloakFlavor::Keycloak26 as i32);
    assert_eq!(
        (r.realm.as_str(), r.kheops_origin.as_str()),
        ("demo", "https://kheops.example.org")
    );
    assert!(r.registration_allowed);
    let a = r.admin.clone().unwrap_or_default();
    assert_eq!(a.url, "https://kc.example.org/auth");
    assert_eq!(
        a.connect_address, "127.0.0.1",
        "no hairpin through the public name"
    );
    assert_eq!(a.credential_file, admin.path);
    assert_eq!(a.ca_file, "", "empty: the system roots");
    assert_eq!(
        r.client_secret_file,
        secret(&spec, "kheops-auth-secret")?.path
    );
    // Dependency order: secrets and certificate, volume, container, realm, stack.
    let at = |n: &str| position(&spec, n);
    assert!(at("keycloak-admin-password")? < at("keycloak")?);
    assert!(at("keycloak-tls")? < at("keycloak")?);
    assert!(at("keycloak-data")? < at("keycloak")?);
    assert!(at("keycloak")? < at("kheops-realm")?);
    assert!(at("kheops-auth-secret")? < at("kheops-realm")?);
    assert_eq!(
        spec.resources.last().map(|r| r.name.as_str()),
        Some("keycloak")
    );
    assert!(matches!(
        spec.resources.last().and_then(|r| r.kind.as_ref()),
        Some(K::Stack(_))
    ));
    Ok(())
}

#[test]
fn keycloak_16_is_the_seeds_legacy_image_with_x509_files_for_uid_1000() -> Result<()> {
    let spec = render("keycloak-16")?;
    let kc = container(&spec, "keycloak")?;
    assert_eq!(kc.image, "jboss/keycloak:16.1.1");
    assert_eq!(
        kc.ports
            .iter()
            .map(|p| (p.host_ip.as_str(), p.host_port, p.container_port))
            .collect::<Vec<_>>(),
        [("0.0.0.0", 443, 8443)]
    );
    let (kind, dir) = mount_source(kc, "/etc/x509/https").ok_or_else(|| anyhow!("x509"))?;
    assert_eq!(kind, "bind");
    let cert = certificate(&spec)?;
    let target = |f: &str| {
        cert.targets
            .iter()
            .find(|t| t.path == format!("{dir}/{f}"))
            .map(|t| (t.content, t.uid, t.mode))
    };
    assert_eq!(
        target("tls.crt"),
        Some((
            v1::CertificateContent::Fullchain as i32,
            Some(1000),
            Some(0o644)
        ))
    );
    assert_eq!(
        target("tls.key"),
        Some((v1::CertificateContent::Key as i32, Some(1000), Some(0o600))),
        "a root-owned 0600 key gives the legacy image an empty keystore"
    );
    assert_eq!(env(kc, "KEYCLOAK_USER"), Some("admin"));
    assert_eq!(env(kc, "KEYCLOAK_PASSWORD"), None, "the file form only");
    let pw_file = env(kc, "KEYCLOAK_PASSWORD_FILE").ok_or_else(|| anyhow!("password file"))?;
    assert_eq!(
        mount_source(kc, pw_file),
        Some(("secret", "keycloak-admin-password".into()))
    );
    assert_eq!(secret(&spec, "keycloak-admin-password")?.uid, Some(1000));
    assert_eq!(env(kc, "DB_VENDOR"), Some("h2"));
    assert_eq!(
        env(kc, "KEYCLOAK_FRONTEND_URL"),
        Some("https://kc.example.org/auth")
    );
    assert_eq!(
        mount_source(kc, "/opt/jboss/keycloak/standalone/data"),
        Some(("volume", "keycloak-data".into()))
    );
    assert_eq!(
        kc.health.as_ref().map(|h| h.http.as_str()),
        Some("https://127.0.0.1:443/auth/realms/master")
    );
    let r = realm(&spec)?;
    assert_eq!(r.flavor, v1::KeycloakFlavor::Legacy16 as i32);
    assert_eq!(
        r.admin.as_ref().map(|a| a.connect_address.as_str()),
        Some("127.0.0.1")
    );
    assert_eq!(
        r.admin
            .as_ref()
            .map(|a| (a.url.as_str(), a.credential_file.as_str())),
        Some((
            "https://kc.example.org/auth",
            secret(&spec, "keycloak-admin-password")?.path.as_str()
        ))
    );
    assert!(position(&spec, "keycloak")? < position(&spec, "kheops-realm")?);
    Ok(())
}

const KHEOPS_CONTAINERS: [&str; 10] = [
    "ldap",
    "pacspostgres",
    "pacsarc",
    "kheopspostgres",
    "kheopsauthorization",
    "kheopszipper",
    "kheopsui",
    "kheopsdicomwebproxy",
    "pacsauthorizationproxy",
    "kheopsreverseproxy",
];

/// What both KHEOPS stacks share: the 10 containers in dependency order, 3 networks, 6
/// volumes, ports only on the proxy, the start-order and restart fixes, extra_hosts, secrets
/// as one-word files, the TLS pair mounted where the proxy reads it.
fn check_kheops_layout(spec: &v1::HostSpec, tls: [&str; 2]) -> Result<()> {
    let names: Vec<&str> = containers(spec).iter().map(|(n, _)| *n).collect();
    assert_eq!(names, KHEOPS_CONTAINERS);
    let count = |f: fn(&K) -> bool| {
        spec.resources
            .iter()
            .filter(|r| r.kind.as_ref().is_some_and(f))
            .count()
    };
    assert_eq!(count(|k| matches!(k, K::Network(_))), 3);
    assert_eq!(count(|k| matches!(k, K::Volume(_))), 6);
    for (name, c) in containers(spec) {
        assert_eq!(c.stack, "kheops", "{name}");
        if name == "kheopsreverseproxy" {
            let ports: Vec<(&str, u32, u32)> = c
                .ports
                .iter()
                .map(|p| (p.host_ip.as_str(), p.host_port, p.container_port))
                .collect();
            assert_eq!(ports, [("0.0.0.0", 80, 80), ("0.0.0.0", 443, 443)]);
        } else {
            assert!(c.ports.is_empty(), "{name} publishes {:?}", c.ports);
        }
        // Every `after` names a container listed earlier; every restart policy is explicit.
        for a in &c.after {
            assert!(
                position(spec, a)? < position(spec, name)?,
                "{name} after {a}"
            );
        }
        assert_ne!(c.restart, v1::RestartPolicy::Unspecified as i32, "{name}");
        assert!(
            c.env.iter().all(|e| !e.value.contains("jdwp")),
            "no debug agent: {name}"
        );
    }
    let proxy = container(spec, "kheopsreverseproxy")?;
    for dep in [
        "kheopsui",
        "kheopszipper",
        "kheopsauthorization",
        "pacsauthorizationproxy",
    ] {
        assert!(proxy.after.iter().any(|a| a == dep), "proxy after {dep}");
    }
    assert_eq!(proxy.restart, v1::RestartPolicy::OnFailure as i32);
    assert_eq!(
        container(spec, "pacsauthorizationproxy")?.restart,
        v1::RestartPolicy::OnFailure as i32
    );
    assert_eq!(proxy.extra_hosts, [format!("{KH}:127.0.0.1")]);
    // The TLS pair: the certificate's targets, in the directory bound on /run/secrets.
    let cert = certificate(spec)?;
    assert_eq!(cert.domains, [KH]);
    assert_eq!(
        cert.http01.as_ref().map(|h| h.pause_container.as_str()),
        Some("kheopsreverseproxy"),
        "the v0.9 proxy owns port 80 without an ACME webroot"
    );
    assert_eq!(
        cert.consumers
            .iter()
            .map(|c| (c.container.as_str(), c.probe.as_str()))
            .collect::<Vec<_>>(),
        [("kheopsreverseproxy", "127.0.0.1:443")]
    );
    let (kind, dir) = mount_source(proxy, "/run/secrets").ok_or_else(|| anyhow!("tls mount"))?;
    assert_eq!(kind, "bind");
    let targets: Vec<(String, i32)> = cert
        .targets
        .iter()
        .map(|t| (t.path.clone(), t.content))
        .collect();
    assert_eq!(
        targets,
        [
            (
                format!("{dir}/{}", tls[0]),
                v1::CertificateContent::Fullchain as i32
            ),
            (
                format!("{dir}/{}", tls[1]),
                v1::CertificateContent::Key as i32
            ),
        ]
    );
    // Every file a container sees in /run/secrets is a generated secret (one word and a
    // newline by the API's contract) or a managed file of exactly one word and a newline.
    for (name, c) in containers(spec) {
        for m in &c.mounts {
            let Some(rest) = m.target.strip_prefix("/run/secrets/") else {
                continue;
            };
            match mount_source(c, &m.target) {
                Some(("secret", s)) => {
                    assert_eq!(s, rest, "{name}: the file name is the secret's name");
                    let x = secret(spec, &s)?;
                    assert_eq!(
                        (x.mode, x.dir_mode),
                        (Some(0o644), Some(0o700)),
                        "{s}: readable by the image's user, the directory closed"
                    );
                    assert_eq!(parent(&x.path), format!("/srv/kctl/kheops/secrets"));
                }
                Some(("file", f)) => {
                    let x = file(spec, &f)?;
                    let text = String::from_utf8(x.content.clone())?;
                    assert_eq!(text.lines().count(), 1, "{f}: one line");
                    assert!(text.ends_with('\n'), "{f}: a trailing newline");
                    assert_eq!(text.split_whitespace().count(), 1, "{f}: one word");
                    assert!(x.sensitive, "{f}");
                }
                other => bail!("{name}: {} from {other:?}", m.target),
            }
        }
    }
    Ok(())
}

fn secrets_of(c: &v1::Container) -> BTreeSet<String> {
    c.mounts
        .iter()
        .filter_map(|m| m.target.strip_prefix("/run/secrets/"))
        .map(str::to_string)
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn kheops_0_9_is_install_secure_with_its_fixes() -> Result<()> {
    let spec = render("kheops-0.9")?;
    check_kheops_layout(&spec, ["fullchain1.pem", "privkey1.pem"])?;
    let proxy = container(&spec, "kheopsreverseproxy")?;
    assert_eq!(
        proxy.image,
        "osirixfoundation/kheops-reverse-proxy:v0.9.0-contentsecurity-fix"
    );
    for (name, c) in containers(&spec) {
        // The compose env file reaches every service; the Keycloak URI has no /auth.
        assert_eq!(
            env(c, "KHEOPS_KEYCLOAK_URI"),
            Some("https://kc.example.org"),
            "{name}"
        );
        assert_eq!(env(c, "KHEOPS_KEYCLOAK_REALMS"), Some("demo"), "{name}");
        assert_eq!(env(c, "KHEOPS_ROOT_HOST"), Some(KH), "{name}");
        assert_eq!(env(c, "KHEOPS_UI_KEYCLOAK_CLIENTID"), Some("loginConnect"));
        assert_eq!(env(c, "KHEOPS_ROOT_URL"), None, "a 1.x name");
        if name.starts_with("kheops") || name.starts_with("pacsauth") {
            let tag = c.image.rsplit_once(':').map(|(_, t)| t);
            let want = match name {
                "kheopspostgres" => "demo",
                "kheopsreverseproxy" => "v0.9.0-contentsecurity-fix",
                _ => "v0.9.0",
            };
            assert_eq!(tag, Some(want), "{name}");
        }
    }
    // The secrets of each service, as install-secure mounts them.
    let auth = container(&spec, "kheopsauthorization")?;
    assert_eq!(
        secrets_of(auth),
        set(&[
            "kheops_superuser_hmasecret",
            "kheops_auth_hmasecret",
            "kheops_authdb_pass",
            "kheops_keycloak_clientsecret",
            "kheops_client_dicomwebproxysecret",
            "kheops_client_zippersecret",
            "kheops_metric_ressource_password",
        ])
    );
    assert_eq!(
        secrets_of(container(&spec, "kheopspostgres")?),
        set(&["kheops_authdb_pass", "kheops_pacsdb_pass"])
    );
    assert_eq!(
        secrets_of(container(&spec, "pacsauthorizationproxy")?),
        set(&["kheops_auth_hmasecret", "kheops_auth_hmasecret_post"])
    );
    assert_eq!(
        secrets_of(container(&spec, "kheopsdicomwebproxy")?),
        set(&[
            "kheops_auth_hmasecret_post",
            "kheops_client_dicomwebproxysecret"
        ])
    );
    // The client secret comes from the variable, as a managed file: never generated here.
    let cs = file(&spec, "kheops_keycloak_clientsecret")?;
    assert_eq!(cs.content, format!("{CLIENT_SECRET}\n").as_bytes());
    assert!(
        spec.resources
            .iter()
            .all(|r| !(r.name == "kheops_keycloak_clientsecret"
                && matches!(r.kind, Some(K::Secret(_))))),
        "not a generated secret"
    );
    let pg = container(&spec, "pacspostgres")?;
    assert_eq!(
        env(pg, "POSTGRES_PASSWORD_FILE"),
        Some("/run/secrets/kheops_pacsdb_pass")
    );
    assert_eq!(pg.restart, v1::RestartPolicy::Always as i32);
    assert_eq!(
        env(container(&spec, "pacsarc")?, "WILDFLY_WAIT_FOR"),
        Some("ldap:389 pacspostgres:5432")
    );
    Ok(())
}

#[test]
fn kheops_1x_is_the_current_secure_layout() -> Result<()> {
    let spec = render("kheops-1.x")?;
    check_kheops_layout(&spec, ["fullchain.pem", "privkey.pem"])?;
    for (name, c) in containers(&spec) {
        assert_eq!(
            env(c, "KHEOPS_OIDC_PROVIDER"),
            Some("https://kc.example.org/auth/realms/demo"),
            "{name}: the full issuer URL"
        );
        assert_eq!(
            env(c, "KHEOPS_ROOT_URL"),
            Some("https://kheops.example.org")
        );
        assert_eq!(env(c, "KHEOPS_UI_CLIENTID"), Some("loginConnect"));
        for gone in [
            "KHEOPS_KEYCLOAK_URI",
            "KHEOPS_KEYCLOAK_REALMS",
            "KHEOPS_ROOT_HOST",
            "KHEOPS_UI_KEYCLOAK_CLIENTID",
            // The inverted scope check of 1.x: unset means no check.
            "KHEOPS_OAUTH_SCOPE",
        ] {
            assert_eq!(env(c, gone), None, "{name}: {gone}");
        }
    }
    for name in [
        "kheopsauthorization",
        "kheopszipper",
        "kheopsui",
        "kheopsdicomwebproxy",
        "pacsauthorizationproxy",
    ] {
        assert!(
            container(&spec, name)?.image.ends_with(":v1.1.2"),
            "{name}: images at ${{kheops_version}}"
        );
    }
    assert_eq!(
        container(&spec, "kheopsreverseproxy")?.image,
        "osirixfoundation/kheops-reverse-proxy:v1.1.2-secure"
    );
    let auth = container(&spec, "kheopsauthorization")?;
    assert_eq!(
        secrets_of(auth),
        set(&[
            "kheops_auth_hmasecret",
            "kheops_authdb_pass",
            "kheops_client_dicomwebproxysecret",
            "kheops_client_zippersecret",
            "kheops_auth_admin_password",
        ])
    );
    assert!(
        spec.resources.iter().all(|r| !r.name.contains("keycloak")),
        "no Keycloak client secret or service account on 1.x"
    );
    Ok(())
}

#[test]
fn variables_are_listed_with_kind_default_and_description() -> Result<()> {
    let s = find("kheops-0.9")?;
    let v = s
        .variables()
        .iter()
        .find(|v| v.name == "keycloak_client_secret")
        .ok_or_else(|| anyhow!("keycloak_client_secret"))?;
    assert!(v.required() && v.kind == Kind::Secret && v.kind.is_sensitive());
    let realm = s
        .variables()
        .iter()
        .find(|v| v.name == "realm")
        .ok_or_else(|| anyhow!("realm"))?;
    assert_eq!(
        (realm.kind, realm.default.as_deref(), realm.required()),
        (Kind::Realm, Some("demo"), false)
    );
    let names: Vec<&str> = s.variables().iter().map(|v| v.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    Ok(())
}

#[test]
fn missing_unknown_and_bad_variables_are_named() -> Result<()> {
    let kc = find("keycloak-26")?;
    let got = err_of(kc.render(&vars(&[("kheops_domain", KH)])));
    assert!(
        got.starts_with("stack keycloak-26: missing variables: `acme_contact` (")
            && got.contains("`keycloak_domain` (the public DNS name of the Keycloak host")
            && got.contains("--var keycloak_domain=<hostname>"),
        "{got}"
    );
    // A wrong value is named before what is missing.
    let got = err_of(kc.render(&vars(&[("kheops_domain", "kh\"x")])));
    assert!(
        got.starts_with("stack keycloak-26: variable `kheops_domain` (kind hostname)"),
        "{got}"
    );
    let mut v = sample("keycloak-26");
    v.insert("kheops_host".into(), KH.into());
    let got = err_of(kc.render(&v));
    assert!(
        got.starts_with(
            "stack keycloak-26: `kheops_host` is not a variable of this stack; its \
             variables are acme_ca_bundle, acme_contact,"
        ) && got.contains("kctl stacks show keycloak-26"),
        "{got}"
    );
    for (var, value, want) in [
        ("keycloak_domain", "kc.example.org\"", "contains '\"'"),
        (
            "keycloak_domain",
            "kc.example.org\n[[resource]]",
            "contains '\\n'",
        ),
        ("keycloak_domain", "KC.example.org", "lower case"),
        (
            "kheops_domain",
            "https://kheops.example.org",
            "is not a DNS name",
        ),
        ("realm", "master", "Keycloak's own realm"),
        ("acme_contact", "ops", "not an e-mail address"),
        ("keycloak_version", "26 ; rm", "contains ' '"),
        ("root", "/srv/../etc", "not an absolute path"),
        ("acme_directory", "http://ca.example.org/dir", "letsencrypt"),
    ] {
        let mut v = sample("keycloak-26");
        v.insert(var.into(), value.into());
        let got = err_of(kc.render(&v));
        assert!(
            got.starts_with(&format!("stack keycloak-26: variable `{var}` (kind "))
                && got.contains(want),
            "{var}={value:?}: {got}"
        );
    }
    let kh = find("kheops-0.9")?;
    let mut v = sample("kheops-0.9");
    v.insert("keycloak_client_secret".into(), "a b".into());
    let got = err_of(kh.render(&v));
    assert!(
        got.starts_with("stack kheops-0.9: variable `keycloak_client_secret` (kind secret)"),
        "{got}"
    );
    v.insert("keycloak_client_secret".into(), "short".into());
    assert!(err_of(kh.render(&v)).contains("16 to 256"));
    let mut v = sample("kheops-1.x");
    v.remove("kheops_version");
    let got = err_of(find("kheops-1.x")?.render(&v));
    assert!(
        got.starts_with("stack kheops-1.x: missing variable: `kheops_version`"),
        "{got}"
    );
    // An optional path may be empty (the system roots), but not wrong.
    let mut v = sample("keycloak-16");
    v.insert("keycloak_ca_file".into(), String::new());
    find("keycloak-16")?.render(&v)?;
    v.insert("keycloak_ca_file".into(), "ca.pem".into());
    assert!(err_of(find("keycloak-16")?.render(&v)).contains("`keycloak_ca_file` (kind path)"));
    // A required variable given empty is refused by its kind.
    let mut v = sample("keycloak-16");
    v.insert("acme_contact".into(), String::new());
    assert!(err_of(find("keycloak-16")?.render(&v)).contains("`acme_contact` (kind email)"));
    Ok(())
}

#[test]
fn render_toml_is_the_same_spec_for_kctl_apply_and_redacts_secrets() -> Result<()> {
    for s in builtin()? {
        let v = sample(&s.name);
        let text = s.render_toml(&v, false)?;
        let resources = crate::spec::parse(&text)?;
        let again = crate::spec::to_proto(&resources, Path::new("/"))?;
        assert_eq!(again, s.render(&v)?, "{}", s.name);
        assert!(
            !text.contains("[stack"),
            "{}: the header is not a spec",
            s.name
        );
    }
    let kh = find("kheops-0.9")?;
    let shown = kh.render_toml(&sample("kheops-0.9"), true)?;
    assert!(!shown.contains(CLIENT_SECRET), "{shown}");
    assert!(shown.contains("<redacted>"));
    assert!(
        kh.render_toml(&sample("kheops-0.9"), false)?
            .contains(CLIENT_SECRET)
    );
    Ok(())
}

const MINI: &str = r#"
[stack]
name = "mini"
version = "1"
role = "kheops"
description = "a test stack"

[stack.vars.root]
description = "root"
kind = "path"
default = "/srv/kctl"

[stack.vars.host]
description = "the host"
kind = "hostname"

[stack.shared_env]
HOST = "${host}"
MODE = "shared"

[[resource]]
kind = "file"
name = "motd"
path = "${root}/motd"
content = "hello ${host}\n"

[[resource]]
kind = "container"
name = "web"
image = "local/web:1"
env = { MODE = "own" }

[[resource]]
kind = "container"
name = "db"
image = "local/db:1"
"#;

#[test]
fn shared_env_reaches_every_container_and_a_containers_own_env_wins() -> Result<()> {
    let s = Stack::parse("mini.toml", MINI)?;
    let spec = s.render(&vars(&[("host", "a.example.org")]))?;
    let web = container(&spec, "web")?;
    let db = container(&spec, "db")?;
    assert_eq!(
        (env(web, "HOST"), env(web, "MODE")),
        (Some("a.example.org"), Some("own"))
    );
    assert_eq!(
        (env(db, "HOST"), env(db, "MODE")),
        (Some("a.example.org"), Some("shared"))
    );
    assert_eq!(file(&spec, "motd")?.content, b"hello a.example.org\n");
    assert_eq!(file(&spec, "motd")?.path, "/srv/kctl/motd");
    Ok(())
}

#[test]
fn authoring_mistakes_are_refused_when_the_stack_is_parsed() {
    let with = |from: &str, to: &str| MINI.replacen(from, to, 1);
    let cases: Vec<(String, &str)> = vec![
        (
            with(
                "content = \"hello ${host}\\n\"",
                "content = \"hello ${hots}\\n\"",
            ),
            "stack mini: `resource[1].content` uses ${hots}, which is not declared; add a \
             [stack.vars.hots] table (declared: host, root)",
        ),
        (
            with("HOST = \"${host}\"", "HOST = \"${host\""),
            "stack mini: stack.shared_env.HOST: \"${host\": `${` without a closing `}`",
        ),
        (
            with(
                "[stack.shared_env]",
                "[stack.vars.unused]\ndescription = \"x\"\n\n[stack.shared_env]",
            ),
            "stack mini: variable `unused` is declared but never used",
        ),
        (
            with("kind = \"hostname\"", "kind = \"fqdn\""),
            "stack mini.toml: table `[stack]`: field `vars.host.kind`: unknown variant `fqdn`",
        ),
        (
            with(
                "description = \"the host\"",
                "description = \"the host\"\nrequired = true",
            ),
            "stack mini.toml: table `[stack]`: field `vars.host`: unknown field `required`",
        ),
        (
            with("role = \"kheops\"", "role = \"pacs\""),
            "field `role`: unknown variant `pacs`, expected `keycloak` or `kheops`",
        ),
        (
            with("version = \"1\"", "version = \" \""),
            "stack mini: field `stack.version`: empty",
        ),
        (
            with("name = \"mini\"", "name = \"Mini\""),
            "stack mini.toml: field `stack.name`: \"Mini\" is not a stack name",
        ),
        (
            with("default = \"/srv/kctl\"", "default = \"srv\""),
            "stack mini: variable `root`: the default: \"srv\" is not an absolute path",
        ),
        (
            with("[stack.vars.host]", "[stack.vars.Host]"),
            "stack mini: table `[stack.vars.Host]`: \"Host\" is not a variable name",
        ),
        (
            with("MODE = \"shared\"", "MODE = 1"),
            "stack mini: table `[stack.shared_env]`: MODE is a TOML integer; env values are strings",
        ),
        (
            "[[resource]]\nkind = \"volume\"\nname = \"v\"\n".to_string(),
            "stack mini.toml: no `[stack]` table",
        ),
        (
            with(
                "image = \"local/db:1\"",
                "image = \"local/db:1\"\nimgae = \"x\"",
            ),
            "stack mini does not render with example values (host=host.example.org \
             root=/srv/kctl): stack mini: resource #3 (\"db\"): unknown field `imgae`",
        ),
        (
            with(
                "content = \"hello ${host}\\n\"",
                "content_file = \"motd.txt\"",
            ),
            "stack mini: resource #1 (\"motd\"): field `content_file`: a stack carries its \
             files inline",
        ),
        (
            with(
                "[[resource]]\nkind = \"file\"",
                "[[resources]]\nkind = \"file\"",
            ),
            "unknown field `resources`",
        ),
        ("[stack\n".to_string(), "stack mini.toml: TOML parse error"),
    ];
    for (text, want) in cases {
        let got = err_of(Stack::parse("mini.toml", &text));
        assert!(got.contains(want), "want: {want}\ngot:  {got}");
    }
}

#[test]
fn var_assignments_are_name_equals_value() {
    assert_eq!(
        parse_assignment("realm=demo=x"),
        Ok(("realm".into(), "demo=x".into()))
    );
    assert_eq!(
        parse_assignment("root="),
        Ok(("root".into(), String::new()))
    );
    assert!(parse_assignment("realm").is_err_and(|e| e.contains("write NAME=VALUE")));
    assert!(parse_assignment("Realm=x").is_err_and(|e| e.contains("not a variable name")));
}

#[test]
fn load_takes_a_builtin_name_or_a_stack_file() -> Result<()> {
    assert_eq!(load("kheops-1.x")?.name, "kheops-1.x");
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("mini.toml");
    std::fs::write(&path, MINI)?;
    let s = load(path.to_str().ok_or_else(|| anyhow!("utf-8"))?)?;
    assert_eq!((s.name.as_str(), s.role), ("mini", Role::Kheops));
    let missing = dir.path().join("none.toml");
    let got = err_of(load(missing.to_str().ok_or_else(|| anyhow!("utf-8"))?));
    assert!(got.starts_with("cannot read the stack file"), "{got}");
    Ok(())
}
