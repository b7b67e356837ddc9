//! The agent's own TLS identity over its life: enrollment (self-signed → CA-signed), then
//! rotations. Holds the swappable acceptor, so a new certificate takes effect for new
//! connections without a restart. The files it writes are the ones the configuration names
//! (`tls.cert`, `tls.key`, `tls.client_ca`); the old files stay until the new set is checked.

use std::sync::Arc;

use crate::config::TlsConfig;
use crate::enroll::{self, EnrollError, Enrollment};
use crate::host::fs::write_private;
use crate::tls::{self, Acceptor, Mode};

pub struct Trust {
    pub acceptor: Arc<Acceptor>,
    pub enrollment: Enrollment,
    paths: TlsConfig,
    /// Serializes enrollment and rotation steps.
    lock: tokio::sync::Mutex<()>,
}

/// What an enrollment or rotation installed.
pub struct Installed {
    pub fingerprint: String,
    pub not_after: Option<prost_types::Timestamp>,
}

impl Trust {
    pub fn new(acceptor: Arc<Acceptor>, enrollment: Enrollment, paths: TlsConfig) -> Trust {
        Trust {
            acceptor,
            enrollment,
            paths,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn enrolled(&self) -> bool {
        self.acceptor.mode() == Mode::Fleet
    }

    /// Step one of enrollment: the token is right, here is a CSR for our key.
    pub async fn begin_enrollment(&self, token: &str) -> Result<String, EnrollError> {
        let _g = self.lock.lock().await;
        if self.enrolled() {
            return Err(EnrollError::AlreadyEnrolled);
        }
        self.enrollment.check(token)?;
        self.enrollment.enrollment_csr()
    }

    /// Step two: check and install the certificate and CA, burn the token, switch to mTLS.
    pub async fn complete_enrollment(
        &self,
        token: &str,
        cert_pem: &str,
        ca_pem: &str,
    ) -> Result<Installed, EnrollError> {
        let _g = self.lock.lock().await;
        if self.enrolled() {
            return Err(EnrollError::AlreadyEnrolled);
        }
        self.enrollment.check(token)?;
        let key_pem = self.enrollment.enrollment_key_pem()?;
        let fingerprint = enroll::check_issued(cert_pem, &key_pem, ca_pem)?;
        let config = tls::fleet_config(cert_pem.as_bytes(), key_pem.as_bytes(), ca_pem.as_bytes())
            .map_err(|e| EnrollError::BadCertificate(e.to_string()))?;
        // Burn first: a crash after this leaves an unusable token, never a reusable one.
        self.enrollment.burn()?;
        self.install(cert_pem, &key_pem, Some(ca_pem))?;
        self.acceptor.replace(Mode::Fleet, config);
        tracing::info!(%fingerprint, "enrolled: serving mutual TLS with the fleet certificate");
        Ok(Installed {
            fingerprint,
            not_after: enroll::not_after_pem(cert_pem),
        })
    }

    /// Rotation step one: a new key (kept in the state dir) and its CSR.
    pub async fn prepare_rotation(&self) -> Result<(String, Vec<String>), EnrollError> {
        let _g = self.lock.lock().await;
        let csr = self.enrollment.prepare_rotation()?;
        let current = std::fs::read_to_string(&self.paths.cert).unwrap_or_default();
        Ok((csr, enroll::names_pem(&current)))
    }

    /// Rotation step two: install the certificate for the pending key, serve it from now on.
    pub async fn complete_rotation(&self, cert_pem: &str) -> Result<Installed, EnrollError> {
        let _g = self.lock.lock().await;
        let key_pem = self.enrollment.rotation_key_pem()?;
        let ca_pem = std::fs::read_to_string(&self.paths.client_ca).map_err(|e| {
            EnrollError::Io(format!(
                "cannot read {}: {e}",
                self.paths.client_ca.display()
            ))
        })?;
        let fingerprint = enroll::check_issued(cert_pem, &key_pem, &ca_pem)?;
        let config = tls::fleet_config(cert_pem.as_bytes(), key_pem.as_bytes(), ca_pem.as_bytes())
            .map_err(|e| EnrollError::BadCertificate(e.to_string()))?;
        self.install(cert_pem, &key_pem, None)?;
        self.enrollment.finish_rotation();
        self.acceptor.replace(Mode::Fleet, config);
        tracing::info!(%fingerprint, "rotated the agent certificate");
        Ok(Installed {
            fingerprint,
            not_after: enroll::not_after_pem(cert_pem),
        })
    }

    /// Writes key, then certificate (then CA), each atomically. Between the two renames the
    /// files disagree for an instant; the running agent serves from memory meanwhile, and a
    /// crash in that instant is reported clearly at the next start (key and certificate differ).
    fn install(
        &self,
        cert_pem: &str,
        key_pem: &str,
        ca_pem: Option<&str>,
    ) -> Result<(), EnrollError> {
        let w = |path: &std::path::Path, bytes: &str, mode| {
            write_private(path, bytes.as_bytes(), mode)
                .map_err(|e| EnrollError::Io(format!("cannot write {}: {e}", path.display())))
        };
        if let Some(ca) = ca_pem {
            w(&self.paths.client_ca, ca, 0o644)?;
        }
        w(&self.paths.key, key_pem, 0o600)?;
        w(&self.paths.cert, cert_pem, 0o644)
    }
}
