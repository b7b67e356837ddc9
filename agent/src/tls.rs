//! The TLS side of the listener: our own rustls acceptor in front of tonic, so that the server
//! configuration can be swapped while the agent runs.
//!
//! Two configurations exist. **Enrollment**: the agent's self-signed certificate, no client
//! certificate asked (the caller proves an enrollment token instead, and pins our
//! fingerprint). **Fleet**: the CA-signed certificate, and a client certificate chaining to the
//! fleet CA is required. Enrollment switches the first to the second, and a certificate
//! rotation replaces the second, both without closing the listener: a new configuration
//! applies to new connections, existing ones finish undisturbed.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// A handshake that takes longer than this is dropped (slowloris).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: no PEM certificate found")]
    NoCertificate { what: &'static str },
    #[error("{what}: {message}")]
    Bad { what: &'static str, message: String },
}

/// Which configuration is being served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Enrollment,
    Fleet,
}

/// The swappable server configuration shared by the accept loop and the services.
pub struct Acceptor {
    current: RwLock<(Mode, Arc<ServerConfig>)>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(what: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    let certs = certs.map_err(|e| TlsError::Bad {
        what,
        message: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what });
    }
    Ok(certs)
}

fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Bad {
        what: "tls.key",
        message: format!("no usable private key: {e}"),
    })
}

/// The fleet configuration: our CA-signed certificate, client certificates required.
pub fn fleet_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    ca_pem: &[u8],
) -> Result<ServerConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs("tls.client_ca", ca_pem)? {
        roots.add(ca).map_err(|e| TlsError::Bad {
            what: "tls.client_ca",
            message: e.to_string(),
        })?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Bad {
            what: "tls.client_ca",
            message: e.to_string(),
        })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Bad {
            what: "tls",
            message: e.to_string(),
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs("tls.cert", cert_pem)?, key(key_pem)?)
        .map_err(|e| TlsError::Bad {
            what: "tls.cert/tls.key",
            message: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The enrollment configuration: our self-signed certificate, no client certificate.
pub fn enrollment_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Bad {
            what: "tls",
            message: e.to_string(),
        })?
        .with_no_client_auth()
        .with_single_cert(certs("enrollment cert", cert_pem)?, key(key_pem)?)
        .map_err(|e| TlsError::Bad {
            what: "enrollment cert",
            message: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

impl Acceptor {
    pub fn new(mode: Mode, config: ServerConfig) -> Arc<Acceptor> {
        Arc::new(Acceptor {
            current: RwLock::new((mode, Arc::new(config))),
        })
    }

    pub fn mode(&self) -> Mode {
        self.current.read().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Serves `config` to every connection accepted from now on.
    pub fn replace(&self, mode: Mode, config: ServerConfig) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (mode, Arc::new(config));
    }

    fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// Accepts TCP connections and completes their TLS handshakes concurrently; the stream
    /// yields only connections whose handshake succeeded (a refused client certificate is
    /// logged and dropped here).
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
    ) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
        let (tx, rx) = tokio::sync::mpsc::channel(32);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = tokio_rustls::TlsAcceptor::from(self.config());
                let conn_tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = conn_tx.send(Ok(tls)).await;
                        }
                        Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake refused"),
                        Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        ReceiverStream::new(rx)
    }
}
