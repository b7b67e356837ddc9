//! The `certificate` kind of the spec file.
//!
//! ```toml
//! [[resource]]
//! kind = "certificate"
//! name = "keycloak"
//! domains = ["kc.example.org"]
//! issuer = "acme"                      # or "self_signed" (lab) or "provided" (files on the host)
//! directory_url = "letsencrypt"        # or "letsencrypt-staging", or an https:// URL
//! contact = ["ops@example.org"]
//! # profile = "tlsserver"; ca_bundle = "/etc/kagent/test-ca.pem"; eab_kid + eab_hmac_key_file
//! # key_type = "ecdsa-p256"            # or "ecdsa-p384", "rsa2048", "rsa3072"
//! # webroot = "/srv/kctl/www"          # port 80 owned by a proxy serving this directory
//! # pause_container = "proxy"          # or: stop this container while the CA validates
//! target = [
//!   { path = "/srv/kctl/keycloak/tls/fullchain.pem" },                       # PEM fullchain
//!   { path = "/srv/kctl/keycloak/tls/key.pem", content = "key", uid = 1000 }, # 0600
//! ]
//! consumer = [{ container = "keycloak", probe = "127.0.0.1:8443" }]          # restart, check
//! ```

use kagent_proto::v1;
use serde::Deserialize;

use super::Mode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssuerKind {
    Acme,
    SelfSigned,
    Provided,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSpec {
    pub name: String,
    #[serde(default)]
    pub domains: Vec<String>,
    pub issuer: IssuerKind,
    // acme
    pub directory_url: Option<String>,
    #[serde(default)]
    pub contact: Vec<String>,
    pub profile: Option<String>,
    pub ca_bundle: Option<String>,
    pub eab_kid: Option<String>,
    pub eab_hmac_key_file: Option<String>,
    pub webroot: Option<String>,
    pub pause_container: Option<String>,
    // self_signed
    pub days: Option<u32>,
    // provided
    pub cert: Option<String>,
    pub key: Option<String>,
    pub chain: Option<String>,
    pub key_type: Option<String>,
    #[serde(default)]
    pub target: Vec<TargetSpec>,
    #[serde(default)]
    pub consumer: Vec<ConsumerSpec>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub path: String,
    pub content: Option<String>,
    pub format: Option<String>,
    pub mode: Option<Mode>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub dir_mode: Option<Mode>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSpec {
    pub container: Option<String>,
    pub pid_file: Option<String>,
    pub signal: Option<String>,
    pub probe: Option<String>,
}

/// The checks serde cannot express; the agent checks again, authoritatively.
pub fn check_certificate(c: &CertificateSpec) -> Result<(), String> {
    if c.domains.is_empty() && c.issuer != IssuerKind::Provided {
        return Err("field `domains`: missing; list the names the certificate is for".into());
    }
    let acme_only = [
        ("directory_url", c.directory_url.is_some()),
        ("profile", c.profile.is_some()),
        ("ca_bundle", c.ca_bundle.is_some()),
        ("eab_kid", c.eab_kid.is_some()),
        ("webroot", c.webroot.is_some()),
        ("pause_container", c.pause_container.is_some()),
        ("contact", !c.contact.is_empty()),
    ];
    if c.issuer != IssuerKind::Acme
        && let Some((f, _)) = acme_only.iter().find(|(_, set)| *set)
    {
        return Err(format!("field `{f}`: only for issuer = \"acme\""));
    }
    if c.issuer == IssuerKind::Provided && (c.cert.is_none() || c.key.is_none()) {
        return Err("fields `cert` and `key`: issuer = \"provided\" needs both paths".into());
    }
    key_type(c.key_type.as_deref())?;
    for t in &c.target {
        content(t.content.as_deref())?;
        format(t.format.as_deref())?;
    }
    Ok(())
}

fn key_type(s: Option<&str>) -> Result<v1::CertificateKeyType, String> {
    Ok(match s {
        None | Some("ecdsa-p256") => v1::CertificateKeyType::EcdsaP256,
        Some("ecdsa-p384") => v1::CertificateKeyType::EcdsaP384,
        Some("rsa2048") => v1::CertificateKeyType::Rsa2048,
        Some("rsa3072") => v1::CertificateKeyType::Rsa3072,
        Some(other) => {
            return Err(format!(
                "field `key_type`: {other:?}; use ecdsa-p256, ecdsa-p384, rsa2048 or rsa3072"
            ));
        }
    })
}

fn content(s: Option<&str>) -> Result<v1::CertificateContent, String> {
    Ok(match s {
        None | Some("fullchain") => v1::CertificateContent::Fullchain,
        Some("cert") => v1::CertificateContent::Cert,
        Some("chain") => v1::CertificateContent::Chain,
        Some("key") => v1::CertificateContent::Key,
        Some(other) => {
            return Err(format!(
                "field `target.content`: {other:?}; use fullchain, cert, chain or key"
            ));
        }
    })
}

fn format(s: Option<&str>) -> Result<v1::CertificateFormat, String> {
    Ok(match s {
        None | Some("pem") => v1::CertificateFormat::Pem,
        Some("der") => v1::CertificateFormat::Der,
        Some(other) => return Err(format!("field `target.format`: {other:?}; use pem or der")),
    })
}

pub fn certificate_to_proto(c: &CertificateSpec) -> Result<v1::Certificate, String> {
    let s = |o: &Option<String>| o.clone().unwrap_or_default();
    let issuer = match c.issuer {
        IssuerKind::Acme => v1::certificate::Issuer::Acme(v1::AcmeIssuer {
            directory_url: s(&c.directory_url),
            contact: c.contact.clone(),
            eab_kid: s(&c.eab_kid),
            eab_hmac_key_file: s(&c.eab_hmac_key_file),
            profile: s(&c.profile),
            ca_bundle: s(&c.ca_bundle),
        }),
        IssuerKind::SelfSigned => v1::certificate::Issuer::SelfSigned(v1::SelfSignedIssuer {
            days: c.days.unwrap_or(0),
        }),
        IssuerKind::Provided => v1::certificate::Issuer::Provided(v1::ProvidedIssuer {
            cert: s(&c.cert),
            key: s(&c.key),
            chain: s(&c.chain),
        }),
    };
    let mut targets = Vec::new();
    for t in &c.target {
        targets.push(v1::CertificateTarget {
            path: t.path.clone(),
            content: content(t.content.as_deref())? as i32,
            format: format(t.format.as_deref())? as i32,
            mode: t.mode.map(|m| m.0),
            uid: t.uid,
            gid: t.gid,
            dir_mode: t.dir_mode.map(|m| m.0),
        });
    }
    Ok(v1::Certificate {
        domains: c.domains.clone(),
        issuer: Some(issuer),
        key_type: key_type(c.key_type.as_deref())? as i32,
        http01: match (&c.webroot, &c.pause_container) {
            (None, None) => None,
            _ => Some(v1::Http01 {
                webroot: s(&c.webroot),
                pause_container: s(&c.pause_container),
            }),
        },
        targets,
        consumers: c
            .consumer
            .iter()
            .map(|k| v1::CertificateConsumer {
                container: s(&k.container),
                pid_file: s(&k.pid_file),
                signal: s(&k.signal),
                probe: s(&k.probe),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() -> anyhow::Result<()> {
        let text = r#"
[[resource]]
kind = "certificate"
name = "keycloak"
domains = ["kc.example.org"]
issuer = "acme"
contact = ["ops@example.org"]
target = [
  { path = "/srv/kctl/keycloak/tls/fullchain.pem" },
  { path = "/srv/kctl/keycloak/tls/key.pem", content = "key", uid = 1000, mode = "0600" },
]
consumer = [{ container = "keycloak", probe = "127.0.0.1:8443" }]
"#;
        let spec = crate::spec::to_proto(&crate::spec::parse(text)?, std::path::Path::new("."))?;
        let Some(v1::resource::Kind::Certificate(c)) = &spec.resources[0].kind else {
            anyhow::bail!("not a certificate");
        };
        assert_eq!(c.targets[1].content, v1::CertificateContent::Key as i32);
        assert_eq!(c.targets[1].mode, Some(0o600));
        assert_eq!(c.consumers[0].probe, "127.0.0.1:8443");
        let bad = text.replace("issuer = \"acme\"", "issuer = \"self_signed\"");
        let err = crate::spec::parse(&bad)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("field `contact`: only for issuer = \"acme\""),
            "{err}"
        );
        Ok(())
    }
}
