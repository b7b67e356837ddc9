//! TLS for the agent's health probes: `tls = "host:port"` (the handshake must succeed) and
//! `http = "https://..."` (a status over TLS). rustls with the ring provider only.
//!
//! There are no system roots to trust on an air-gapped host, so a TLS probe verifies the
//! server's certificate against a CA bundle named in the spec (`ca_file`), or, for lab use
//! only, accepts any certificate (`insecure_skip_verify`) — then the handshake's signature is
//! still checked against the served certificate, and an explicit `server_name` still has to be
//! one the certificate names.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::host::tls::AnyServerCertificate;

/// How a TLS probe verifies the server.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsOpts {
    /// Sent as SNI and verified against the certificate.
    pub server_name: String,
    /// Whether `server_name` was given (checked even with `insecure_skip_verify`).
    pub name_given: bool,
    /// A PEM CA bundle on the agent host; `None` only with `insecure`.
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
}

/// Connects to `addr` and completes a TLS handshake as `o` says.
pub async fn connect(addr: &str, o: &TlsOpts) -> Result<TlsStream<TcpStream>, String> {
    let config = client_config(o)?;
    let name = ServerName::try_from(o.server_name.clone())
        .map_err(|e| format!("server name {:?}: {e}", o.server_name))?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("tcp {addr}: {e}"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {addr} (as {:?}): {e}", o.server_name))
}

fn client_config(o: &TlsOpts) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = match (&o.ca_file, o.insecure) {
        (Some(path), _) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read CA bundle {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("{} holds no PEM certificate", path.display()));
            }
            let mut roots = rustls::RootCertStore::empty();
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("{}: bad CA certificate: {e}", path.display()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        (None, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(AnyServerCertificate::new(provider, o.name_given))
            .with_no_client_auth(),
        (None, false) => {
            return Err("no CA bundle: give `ca_file` or `insecure_skip_verify = true`".into());
        }
    };
    Ok(config)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::{Probe, probe};
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Server {
        addr: String,
        ca_pem: String,
    }

    /// A TLS listener on loopback whose certificate (for `localhost` and 127.0.0.1) is signed
    /// by a fresh CA; it answers one HTTP/1.0 status line per connection.
    async fn server(status: &str) -> Server {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let reply = format!("HTTP/1.0 {status}\r\nContent-Length: 0\r\n\r\n");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let reply = reply.clone();
                tokio::spawn(async move {
                    if let Ok(mut s) = acceptor.accept(tcp).await {
                        let mut buf = [0u8; 1024];
                        let _ = s.read(&mut buf).await;
                        let _ = s.write_all(reply.as_bytes()).await;
                        let _ = s.shutdown().await;
                    }
                });
            }
        });
        Server {
            addr,
            ca_pem: ca.pem(),
        }
    }

    fn opts(name: &str, ca: Option<&std::path::Path>) -> TlsOpts {
        TlsOpts {
            server_name: name.into(),
            name_given: true,
            ca_file: ca.map(|p| p.to_path_buf()),
            insecure: ca.is_none(),
        }
    }

    fn https(s: &Server, tls: TlsOpts) -> Probe {
        Probe::Http {
            addr: s.addr.clone(),
            host: "localhost".into(),
            path: "/health".into(),
            expect: None,
            tls: Some(tls),
        }
    }

    #[tokio::test]
    async fn tls_and_https_probes_verify_against_the_ca_bundle() {
        let s = server("200 OK").await;
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &s.ca_pem).unwrap();
        let other = server("200 OK").await;
        let wrong_ca = dir.path().join("other.pem");
        std::fs::write(&wrong_ca, &other.ca_pem).unwrap();

        let tls = |o| Probe::Tls {
            addr: s.addr.clone(),
            tls: o,
        };
        probe(&tls(opts("localhost", Some(&ca)))).await.unwrap();
        probe(&tls(opts("127.0.0.1", Some(&ca)))).await.unwrap();
        probe(&https(&s, opts("localhost", Some(&ca))))
            .await
            .unwrap();

        let e = probe(&tls(opts("localhost", Some(&wrong_ca))))
            .await
            .unwrap_err();
        assert!(
            e.contains("TLS handshake") && e.contains("invalid peer certificate"),
            "{e}"
        );
        let e = probe(&tls(opts("db.example", Some(&ca))))
            .await
            .unwrap_err();
        assert!(e.contains("not valid for name"), "{e}");
        let e = probe(&tls(opts("localhost", Some(&dir.path().join("none.pem")))))
            .await
            .unwrap_err();
        assert!(e.contains("cannot read CA bundle"), "{e}");
    }

    #[tokio::test]
    async fn insecure_skips_the_chain_but_not_an_explicit_name() {
        let s = server("200 OK").await;
        let tls = |o| Probe::Tls {
            addr: s.addr.clone(),
            tls: o,
        };
        probe(&tls(opts("localhost", None))).await.unwrap();
        probe(&https(&s, opts("localhost", None))).await.unwrap();
        let e = probe(&tls(opts("db.example", None))).await.unwrap_err();
        assert!(e.contains("not valid for name"), "{e}");
        let mut anon = opts("db.example", None);
        anon.name_given = false;
        probe(&tls(anon)).await.unwrap();
    }

    #[tokio::test]
    async fn https_probe_reads_the_status() {
        let s = server("503 Service Unavailable").await;
        let e = probe(&https(&s, opts("localhost", None)))
            .await
            .unwrap_err();
        assert!(e.contains("https://") && e.contains("status 503"), "{e}");
        let Probe::Http {
            addr,
            host,
            path,
            tls,
            ..
        } = https(&s, opts("localhost", None))
        else {
            unreachable!()
        };
        let want = Probe::Http {
            addr,
            host,
            path,
            expect: Some(503),
            tls,
        };
        probe(&want).await.unwrap();
        // Plain TCP to a TLS port: no status line.
        let plain = Probe::Http {
            addr: s.addr.clone(),
            host: "localhost".into(),
            path: "/".into(),
            expect: None,
            tls: None,
        };
        assert!(probe(&plain).await.is_err());
    }
}
