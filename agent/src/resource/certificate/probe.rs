//! After a deploy: connect to the consumer's endpoint over TLS and read the serial of the
//! certificate it serves. A consumer that still serves the old certificate is an error of the
//! operation, not a silent success (the classic "renewed but nginx still serves the old one").
//!
//! The probe checks *which* certificate is served, not whether a browser would trust it (a
//! self-signed lab certificate or a test CA is fine): the handshake's signature is verified
//! against the served certificate, the chain is not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use crate::host::tls::AnyServerCertificate;

/// How long a consumer may take to come back with the new certificate.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// The serial (lower-case hex) of the certificate served at `addr` for `sni`.
pub async fn served_serial(addr: &str, sni: &str) -> Result<String, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(AnyServerCertificate::new(provider, false))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(sni.to_string()).map_err(|e| format!("{sni:?}: {e}"))?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {addr} failed: {e}"))?;
    let (_, conn) = tls.get_ref();
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| format!("{addr} sent no certificate"))?;
    super::issue::serial_of_der(leaf.as_ref())
}

/// Waits until `addr` serves `serial`, retrying (a restarted consumer takes a moment).
pub async fn expect_serial(
    addr: &str,
    sni: &str,
    serial: &str,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        last = match tokio::time::timeout(ATTEMPT_TIMEOUT, served_serial(addr, sni)).await {
            Ok(Ok(got)) if got == serial => return Ok(()),
            Ok(Ok(got)) => format!("{addr} serves serial {got}, expected {serial}"),
            Ok(Err(e)) => e,
            Err(_) => format!("{addr}: no TLS answer within {ATTEMPT_TIMEOUT:?}"),
        };
        if Instant::now() >= deadline {
            return Err(format!("after {} s: {last}", timeout.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
