//! The fleet CA: one ECDSA P-256 key that signs every agent's server certificate and every
//! operator's client certificate. Only this module holds CA key material; it never talks to
//! the network.
//!
//! Client certificates carry the caller's role in the subject's Organization (`admin`,
//! `operator`, `viewer`), as Talos does, so the agent can authorize without a user database.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::files;

/// File names inside a CA directory.
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";

/// Default lifetimes. The CA outlives every certificate it signs by a wide margin.
pub const CA_DAYS: i64 = 3650;
pub const AGENT_DAYS: i64 = 365;
pub const CLIENT_DAYS: i64 = 90;

/// Roles a client certificate can carry, most powerful first.
pub const ROLES: &[&str] = &["admin", "operator", "viewer"];

/// The fleet CA, loaded with its private key.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A signed certificate with its private key and the CA certificate that verifies it.
pub struct Bundle {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

/// The validity window of a certificate to issue.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From a minute ago (tolerates small clock skew) for `days` days.
    pub fn days(days: i64) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::minutes(1),
            not_after: now + Duration::days(days),
        }
    }
}

impl Ca {
    /// Creates a new CA named `name` (the subject's CN).
    pub fn generate(name: &str, validity: Validity) -> Result<Ca> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "kctl fleet");
        // pathlen 0: this CA signs leaves only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Ca {
            cert_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads `ca.crt` and `ca.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Ca> {
        let cert_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        let cert_pem = std::fs::read_to_string(&cert_path).with_context(|| {
            format!(
                "cannot read the fleet CA certificate {}; consider `kctl ca init`",
                cert_path.display()
            )
        })?;
        let key_pem = std::fs::read_to_string(&key_path)
            .with_context(|| format!("cannot read the fleet CA key {}", key_path.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .with_context(|| format!("{} is not a PEM private key", key_path.display()))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .with_context(|| format!("{} is not a CA certificate", cert_path.display()))?;
        Ok(Ca { cert_pem, issuer })
    }

    /// Writes `ca.crt` (0644) and `ca.key` (0600) into `dir`, refusing to overwrite an existing
    /// CA: replacing it would orphan every agent and operator of the fleet.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let key_path = dir.join(CA_KEY);
        if key_path.exists() || dir.join(CA_CERT).exists() {
            bail!(
                "a fleet CA already exists in {}; refusing to replace it (every agent trusts it). \
                 Move it away first if you really mean to start a new fleet",
                dir.display()
            );
        }
        files::create_private_dir(dir)?;
        files::write_atomic(
            &key_path,
            self.issuer.key().serialize_pem().as_bytes(),
            0o600,
        )?;
        files::write_atomic(&dir.join(CA_CERT), self.cert_pem.as_bytes(), 0o644)?;
        Ok(())
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for the agent on `host`. The SANs are `host` plus `dns` and `ips`;
    /// kctl checks the name it dials against them.
    pub fn issue_agent(
        &self,
        host: &str,
        dns: &[String],
        ips: &[IpAddr],
        validity: Validity,
    ) -> Result<Bundle> {
        self.sign_leaf(agent_params(host, dns, ips)?, validity)
    }

    /// Signs an agent's CSR (enrollment, rotation): the agent keeps its key. Only the CSR's
    /// public key is used; names, usages and validity are ours, not the CSR's.
    pub fn sign_agent_csr(
        &self,
        csr_pem: &str,
        host: &str,
        dns: &[String],
        ips: &[IpAddr],
        validity: Validity,
    ) -> Result<String> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .context("the agent sent an unreadable CSR")?;
        let mut params = agent_params(host, dns, ips)?;
        finish_leaf(&mut params, validity);
        csr.params = params;
        Ok(csr.signed_by(&self.issuer)?.pem())
    }

    /// A client certificate for the operator or tool `name`, carrying `role`.
    pub fn issue_client(&self, name: &str, role: &str, validity: Validity) -> Result<Bundle> {
        if !ROLES.contains(&role) {
            bail!(
                "unknown role {role:?}; expected one of {}",
                ROLES.join(", ")
            );
        }
        if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
            bail!("client name {name:?} must be 1 to 64 printable characters");
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, role);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign_leaf(params, validity)
    }

    fn sign_leaf(&self, mut params: CertificateParams, validity: Validity) -> Result<Bundle> {
        finish_leaf(&mut params, validity);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Bundle {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.cert_pem.clone(),
        })
    }
}

impl Bundle {
    /// Writes `STEM.crt`, `STEM.key` (0600) and `ca.crt` into `dir` (created 0700).
    pub fn write(&self, dir: &Path, stem: &str) -> Result<BundlePaths> {
        files::create_private_dir(dir)?;
        let paths = BundlePaths::new(dir, stem);
        files::write_atomic(&paths.key, self.key_pem.as_bytes(), 0o600)?;
        files::write_atomic(&paths.cert, self.cert_pem.as_bytes(), 0o644)?;
        files::write_atomic(&paths.ca, self.ca_pem.as_bytes(), 0o644)?;
        Ok(paths)
    }

    /// SHA-256 of the certificate's DER, as lower-case hex.
    pub fn fingerprint(&self) -> Result<String> {
        fingerprint_pem(&self.cert_pem)
    }
}

/// Usages, validity and a random serial for a leaf certificate.
fn finish_leaf(params: &mut CertificateParams, validity: Validity) {
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    // Random serials: two certificates for the same name must stay distinguishable.
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&rand_serial()));
}

/// Subject and SANs of an agent's server certificate: `host`, then `dns` and `ips`, no
/// duplicates.
fn agent_params(host: &str, dns: &[String], ips: &[IpAddr]) -> Result<CertificateParams> {
    let mut sans: Vec<SanType> = Vec::new();
    let mut push_name = |name: &str| -> Result<()> {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                name.try_into()
                    .with_context(|| format!("{name:?} is not a valid DNS name"))?,
            ),
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
        Ok(())
    };
    push_name(host)?;
    for d in dns {
        push_name(d)?;
    }
    for ip in ips {
        push_name(&ip.to_string())?;
    }
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, host);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "kagent");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    Ok(params)
}

/// Where a bundle's three files live.
#[derive(Clone, Debug)]
pub struct BundlePaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl BundlePaths {
    pub fn new(dir: &Path, stem: &str) -> BundlePaths {
        BundlePaths {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
            ca: dir.join(CA_CERT),
        }
    }
}

/// SHA-256 of the first certificate in `pem`, as lower-case hex.
pub fn fingerprint_pem(pem: &str) -> Result<String> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("not a PEM certificate: {e}"))?;
    Ok(hex::encode(Sha256::digest(&parsed.contents)))
}

/// When the first certificate in `pem` stops being valid.
pub fn not_after_pem(pem: &str) -> Result<OffsetDateTime> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("not a PEM certificate: {e}"))?;
    let cert = parsed
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("bad certificate: {e}"))?;
    Ok(cert.validity().not_after.to_datetime())
}

fn rand_serial() -> [u8; 16] {
    // 127 random bits; the top bit is cleared so the DER integer stays positive.
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_and_client_certificates_chain_to_the_ca() -> Result<()> {
        let ca = Ca::generate("test fleet", Validity::days(1))?;
        let agent = ca.issue_agent("vm1.test", &[], &["10.0.0.2".parse()?], Validity::days(1))?;
        let client = ca.issue_client("alice", "viewer", Validity::days(1))?;
        for pem in [&agent.cert_pem, &client.cert_pem] {
            let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())?;
            let cert = p.parse_x509()?;
            assert_eq!(cert.issuer().to_string(), "CN=test fleet, O=kctl fleet");
        }
        assert_ne!(agent.fingerprint()?, client.fingerprint()?);
        Ok(())
    }

    #[test]
    fn unknown_role_is_refused() -> Result<()> {
        let ca = Ca::generate("test fleet", Validity::days(1))?;
        let err = ca
            .issue_client("bob", "root", Validity::days(1))
            .err()
            .map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("unknown role \"root\""));
        Ok(())
    }

    #[test]
    fn saving_over_an_existing_ca_is_refused() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let ca = Ca::generate("one", Validity::days(1))?;
        ca.save(dir.path())?;
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(CA_KEY))?.permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let again = Ca::generate("two", Validity::days(1))?;
        assert!(again.save(dir.path()).is_err());
        let loaded = Ca::load(dir.path())?;
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        Ok(())
    }
}
