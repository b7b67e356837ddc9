//! Zero-touch enrollment and certificate rotation: the agent's own key, its self-signed
//! certificate, the one-time token, CSRs, and the checks on the certificate it is handed.
//!
//! State lives in `STATE/enroll/` (0700): `key.pem` (0600, never leaves the host),
//! `self-signed.pem`, `token.json` (0600: token, fingerprint, expiry, used), and during a
//! rotation `rotation-key.pem`. The token is `ket1.<secret>.<fingerprint>`: the caller pins the
//! fingerprint it carries, so a man in the middle cannot present another certificate, and
//! proves the secret, compared in constant time. After `MAX_FAILURES` wrong tokens the agent
//! refuses every attempt for `LOCKOUT`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData, SanType};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;

use crate::host::fs::write_private;

pub const MAX_FAILURES: u32 = 5;
pub const LOCKOUT: Duration = Duration::from_secs(600);
const TOKEN_PREFIX: &str = "ket1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnrollError {
    #[error("wrong enrollment token ({left} tries left before a {lockout_min}-minute lockout)")]
    WrongToken { left: u32, lockout_min: u64 },
    #[error(
        "too many wrong enrollment tokens; enrollment is locked for {secs} more seconds \
         (a new token from `kagent enroll-token` does not lift the lock)"
    )]
    LockedOut { secs: u64 },
    #[error(
        "the enrollment token expired {ago} seconds ago; run `kagent enroll-token` on the VM for a new one"
    )]
    Expired { ago: u64 },
    #[error(
        "this enrollment token was already used; run `kagent enroll-token` on the VM for a new one"
    )]
    Used,
    #[error("this agent is already enrolled; use `kctl ca rotate-agent` to renew its certificate")]
    AlreadyEnrolled,
    #[error("no enrollment token is pending; run `kagent enroll-token` on the VM")]
    NoToken,
    #[error("the certificate is not acceptable: {0}")]
    BadCertificate(String),
    #[error("no rotation is pending; call PrepareRotation first")]
    NoRotation,
    #[error("{0}")]
    Io(String),
}

fn io(what: &str, path: &Path, e: std::io::Error) -> EnrollError {
    EnrollError::Io(format!("cannot {what} {}: {e}", path.display()))
}

/// The persisted token.
#[derive(Serialize, Deserialize, Clone)]
struct TokenFile {
    token: String,
    fingerprint: String,
    expires_at: u64,
    used: bool,
}

/// A freshly made token, to print.
pub struct Token {
    pub token: String,
    pub fingerprint: String,
    pub expires_at: u64,
}

#[derive(Default)]
struct Attempts {
    failures: u32,
    locked_until: Option<Instant>,
}

pub struct Enrollment {
    dir: PathBuf,
    ttl: Duration,
    attempts: Mutex<Attempts>,
}

/// The agent's key and the self-signed certificate served while enrolling.
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
    pub fingerprint: String,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn fingerprint_der(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// SHA-256 of the first certificate of a PEM text.
pub fn fingerprint_pem(pem: &str) -> Result<String, EnrollError> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| EnrollError::BadCertificate(format!("not PEM: {e}")))?;
    Ok(fingerprint_der(&p.contents))
}

impl Enrollment {
    pub fn new(state_dir: &Path, ttl: Duration) -> Enrollment {
        Enrollment {
            dir: state_dir.join("enroll"),
            ttl,
            attempts: Mutex::new(Attempts::default()),
        }
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// The agent's key and self-signed certificate, made on first use and kept, so the
    /// fingerprint stays the same across restarts until enrollment completes.
    pub fn self_signed(&self) -> Result<SelfSigned, EnrollError> {
        let key_path = self.key_path();
        let cert_path = self.dir.join("self-signed.pem");
        let key_pem = match std::fs::read_to_string(&key_path) {
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| EnrollError::Io(format!("cannot generate a key: {e}")))?;
                let pem = key.serialize_pem();
                write_private(&key_path, pem.as_bytes(), 0o600)
                    .map_err(|e| io("write", &key_path, e))?;
                let _ = std::fs::remove_file(&cert_path);
                pem
            }
            Err(e) => return Err(io("read", &key_path, e)),
        };
        let cert_pem = match std::fs::read_to_string(&cert_path) {
            Ok(c) => c,
            Err(_) => {
                let key = KeyPair::from_pem(&key_pem).map_err(|e| {
                    EnrollError::Io(format!("{} is not a key: {e}", key_path.display()))
                })?;
                let host = hostname();
                let mut params = CertificateParams::new(vec![host.clone()])
                    .map_err(|e| EnrollError::Io(e.to_string()))?;
                params.distinguished_name = DistinguishedName::new();
                params
                    .distinguished_name
                    .push(DnType::CommonName, format!("kagent enrollment {host}"));
                let now = ::time::OffsetDateTime::now_utc();
                params.not_before = now - ::time::Duration::minutes(5);
                params.not_after = now + ::time::Duration::days(30);
                let pem = params
                    .self_signed(&key)
                    .map_err(|e| EnrollError::Io(e.to_string()))?
                    .pem();
                write_private(&cert_path, pem.as_bytes(), 0o644)
                    .map_err(|e| io("write", &cert_path, e))?;
                pem
            }
        };
        let fingerprint = fingerprint_pem(&cert_pem)?;
        Ok(SelfSigned {
            cert_pem,
            key_pem,
            fingerprint,
        })
    }

    /// The pending token if it is still usable, else a new one.
    pub fn current_or_new_token(&self) -> Result<Token, EnrollError> {
        if let Ok(t) = self.read_token()
            && !t.used
            && t.expires_at > now_secs()
            && t.fingerprint == self.self_signed()?.fingerprint
        {
            return Ok(Token {
                token: t.token,
                fingerprint: t.fingerprint,
                expires_at: t.expires_at,
            });
        }
        self.new_token()
    }

    /// A new token; the previous one stops working at once.
    pub fn new_token(&self) -> Result<Token, EnrollError> {
        let fingerprint = self.self_signed()?.fingerprint;
        let secret: [u8; 24] = rand::random();
        let token = format!("{TOKEN_PREFIX}.{}.{fingerprint}", base64url(&secret));
        let file = TokenFile {
            token: token.clone(),
            fingerprint: fingerprint.clone(),
            expires_at: now_secs() + self.ttl.as_secs(),
            used: false,
        };
        self.write_token(&file)?;
        Ok(Token {
            token,
            fingerprint,
            expires_at: file.expires_at,
        })
    }

    fn token_path(&self) -> PathBuf {
        self.dir.join("token.json")
    }

    fn read_token(&self) -> Result<TokenFile, EnrollError> {
        let path = self.token_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(EnrollError::NoToken),
            Err(e) => return Err(io("read", &path, e)),
        };
        serde_json::from_str(&text)
            .map_err(|e| EnrollError::Io(format!("{} is damaged: {e}", path.display())))
    }

    fn write_token(&self, t: &TokenFile) -> Result<(), EnrollError> {
        let path = self.token_path();
        let text = serde_json::to_vec_pretty(t).map_err(|e| EnrollError::Io(e.to_string()))?;
        write_private(&path, &text, 0o600).map_err(|e| io("write", &path, e))
    }

    /// Checks a presented token: lockout first, then the secret, then use and expiry. The
    /// token file is re-read each time, so `kagent enroll-token` takes effect at once.
    pub fn check(&self, presented: &str) -> Result<(), EnrollError> {
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(until) = attempts.locked_until {
            let now = Instant::now();
            if now < until {
                return Err(EnrollError::LockedOut {
                    secs: (until - now).as_secs() + 1,
                });
            }
            *attempts = Attempts::default();
        }
        let stored = self.read_token()?;
        // Compare digests: constant time in the secret, whatever its length.
        let same =
            Sha256::digest(presented.trim().as_bytes()) == Sha256::digest(stored.token.as_bytes());
        if !same {
            attempts.failures += 1;
            if attempts.failures >= MAX_FAILURES {
                attempts.locked_until = Some(Instant::now() + LOCKOUT);
                tracing::warn!(
                    failures = attempts.failures,
                    "enrollment locked after wrong tokens"
                );
                return Err(EnrollError::LockedOut {
                    secs: LOCKOUT.as_secs(),
                });
            }
            tracing::warn!(failures = attempts.failures, "wrong enrollment token");
            return Err(EnrollError::WrongToken {
                left: MAX_FAILURES - attempts.failures,
                lockout_min: LOCKOUT.as_secs() / 60,
            });
        }
        if stored.used {
            return Err(EnrollError::Used);
        }
        let now = now_secs();
        if stored.expires_at <= now {
            return Err(EnrollError::Expired {
                ago: now - stored.expires_at,
            });
        }
        Ok(())
    }

    /// Marks the token used: it can never be presented again.
    pub fn burn(&self) -> Result<(), EnrollError> {
        let mut t = self.read_token()?;
        t.used = true;
        self.write_token(&t)
    }

    /// A CSR for the agent's enrollment key.
    pub fn enrollment_csr(&self) -> Result<String, EnrollError> {
        let key = self.load_key(&self.key_path())?;
        csr(&key)
    }

    /// Makes the key for a rotation (kept until `finish_rotation`) and its CSR.
    pub fn prepare_rotation(&self) -> Result<String, EnrollError> {
        let path = self.dir.join("rotation-key.pem");
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| EnrollError::Io(format!("cannot generate a key: {e}")))?;
        write_private(&path, key.serialize_pem().as_bytes(), 0o600)
            .map_err(|e| io("write", &path, e))?;
        csr(&key)
    }

    /// The pending rotation key, PEM.
    pub fn rotation_key_pem(&self) -> Result<String, EnrollError> {
        let path = self.dir.join("rotation-key.pem");
        match std::fs::read_to_string(&path) {
            Ok(k) => Ok(k),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(EnrollError::NoRotation),
            Err(e) => Err(io("read", &path, e)),
        }
    }

    pub fn enrollment_key_pem(&self) -> Result<String, EnrollError> {
        std::fs::read_to_string(self.key_path()).map_err(|e| io("read", &self.key_path(), e))
    }

    pub fn finish_rotation(&self) {
        let _ = std::fs::remove_file(self.dir.join("rotation-key.pem"));
    }

    fn load_key(&self, path: &Path) -> Result<KeyPair, EnrollError> {
        let pem = std::fs::read_to_string(path).map_err(|e| io("read", path, e))?;
        KeyPair::from_pem(&pem)
            .map_err(|e| EnrollError::Io(format!("{} is not a key: {e}", path.display())))
    }
}

fn csr(key: &KeyPair) -> Result<String, EnrollError> {
    let mut params =
        CertificateParams::new(vec![hostname()]).map_err(|e| EnrollError::Io(e.to_string()))?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, hostname());
    params
        .serialize_request(key)
        .and_then(|r| r.pem())
        .map_err(|e| EnrollError::Io(format!("cannot make the CSR: {e}")))
}

/// Checks that `cert_pem` is for `key_pem`, signed by `ca_pem`, valid now, and usable as a
/// server certificate. Returns its fingerprint.
pub fn check_issued(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<String, EnrollError> {
    let bad = |m: String| EnrollError::BadCertificate(m);
    let (_, cert_p) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| bad(format!("cert_pem: {e}")))?;
    let cert = cert_p
        .parse_x509()
        .map_err(|e| bad(format!("cert_pem: {e}")))?;
    let (_, ca_p) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes())
        .map_err(|e| bad(format!("ca_pem: {e}")))?;
    let ca = ca_p.parse_x509().map_err(|e| bad(format!("ca_pem: {e}")))?;
    if !ca.is_ca() {
        return Err(bad("ca_pem is not a CA certificate".into()));
    }
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|_| bad("the certificate is not signed by the given CA".into()))?;
    let key = KeyPair::from_pem(key_pem).map_err(|e| bad(format!("agent key: {e}")))?;
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(bad(
            "the certificate is for another key than the agent's CSR".into(),
        ));
    }
    if !cert.validity().is_valid() {
        return Err(bad(
            "the certificate is not valid now (check the clocks)".into()
        ));
    }
    Ok(fingerprint_der(&cert_p.contents))
}

/// The DNS and IP names in a certificate.
pub fn names_pem(cert_pem: &str) -> Vec<String> {
    let Ok((_, p)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else {
        return Vec::new();
    };
    let Ok(cert) = p.parse_x509() else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            GeneralName::IPAddress(b) => ip_from_bytes(b).map(|ip| ip.to_string()),
            _ => None,
        })
        .collect()
}

fn ip_from_bytes(b: &[u8]) -> Option<std::net::IpAddr> {
    match b.len() {
        4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
        _ => None,
    }
}

/// `not_after` of a PEM certificate, as a protobuf timestamp.
pub fn not_after_pem(cert_pem: &str) -> Option<prost_types::Timestamp> {
    let (_, p) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = p.parse_x509().ok()?;
    Some(prost_types::Timestamp {
        seconds: cert.validity().not_after.timestamp(),
        nanos: 0,
    })
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// The host's IP addresses that others could use to reach it (no loopback, no link-local).
pub fn addresses() -> Vec<String> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for a in addrs {
        let Some(sa) = a.address else { continue };
        let ip: std::net::IpAddr = if let Some(v4) = sa.as_sockaddr_in() {
            v4.ip().into()
        } else if let Some(v6) = sa.as_sockaddr_in6() {
            v6.ip().into()
        } else {
            continue;
        };
        let link_local =
            matches!(ip, std::net::IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
        if ip.is_loopback() || link_local || out.contains(&ip.to_string()) {
            continue;
        }
        out.push(ip.to_string());
    }
    out
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether a CSR-derived SAN list is sane (used by tests and kctl).
pub fn san_of(name: &str) -> Option<SanType> {
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => Some(SanType::IpAddress(ip)),
        Err(_) => name.try_into().ok().map(SanType::DnsName),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_lock_out_after_wrong_tries_and_burn() -> Result<(), EnrollError> {
        let dir = tempfile::tempdir().map_err(|e| EnrollError::Io(e.to_string()))?;
        let e = Enrollment::new(dir.path(), Duration::from_secs(3600));
        let t = e.new_token()?;
        assert!(t.token.starts_with("ket1.") && t.token.ends_with(&t.fingerprint));
        assert!(matches!(
            e.check("ket1.wrong"),
            Err(EnrollError::WrongToken { left: 4, .. })
        ));
        e.check(&t.token)?;
        e.burn()?;
        assert_eq!(e.check(&t.token), Err(EnrollError::Used));
        for _ in 0..3 {
            let _ = e.check("nope");
        }
        assert!(matches!(
            e.check("nope"),
            Err(EnrollError::LockedOut { .. })
        ));
        // Locked: even the right token is refused now.
        let fresh = e.new_token()?;
        assert!(matches!(
            e.check(&fresh.token),
            Err(EnrollError::LockedOut { .. })
        ));
        Ok(())
    }

    #[test]
    fn expired_tokens_are_refused_and_new_ones_replace_old() -> Result<(), EnrollError> {
        let dir = tempfile::tempdir().map_err(|e| EnrollError::Io(e.to_string()))?;
        let e = Enrollment::new(dir.path(), Duration::from_secs(0));
        let t = e.new_token()?;
        assert!(matches!(
            e.check(&t.token),
            Err(EnrollError::Expired { .. })
        ));
        let e = Enrollment::new(dir.path(), Duration::from_secs(60));
        let first = e.new_token()?;
        let second = e.new_token()?;
        assert!(matches!(
            e.check(&first.token),
            Err(EnrollError::WrongToken { .. })
        ));
        e.check(&second.token)?;
        assert_eq!(first.fingerprint, second.fingerprint);
        Ok(())
    }

    #[test]
    fn base64url_matches_known_vectors() {
        assert_eq!(base64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
