//! A small HTTP/1.1 client for JSON and form APIs (Keycloak's Admin REST API and OIDC
//! endpoints): hyper over rustls with the ring provider, plain HTTP allowed for loopback tests.
//! Trust is the given PEM bundle only, or the system roots when none is given.

use std::future::Future;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

const TIMEOUT: Duration = Duration::from_secs(30);
/// Bodies above this are refused (a realm export is a few hundred KiB).
const MAX_BODY: usize = 32 << 20;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    #[error("{0}")]
    Setup(String),
    #[error("{method} {url}: {error}")]
    Transport {
        method: String,
        url: String,
        error: String,
    },
}

/// One answer: status, `Location` header, body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("the answer is not JSON: {e}"))
    }

    /// The body as text, cut to a length that fits an error message.
    pub fn snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        match text.char_indices().nth(300) {
            Some((i, _)) => format!("{}…", &text[..i]),
            None => text.to_string(),
        }
    }
}

/// The connector's name resolution: the system's (getaddrinfo, on a blocking thread), or one
/// fixed address for every name (`connect_to`: the server is reached at a known address while
/// the URL, SNI, `Host` and the certificate check keep its name, like curl's `--connect-to`).
#[derive(Clone, Debug)]
struct Resolver {
    fixed: Option<IpAddr>,
}

type Resolved = std::vec::IntoIter<SocketAddr>;

impl tower_service::Service<Name> for Resolver {
    type Response = Resolved;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Resolved, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let fixed = self.fixed;
        Box::pin(async move {
            // Port 0: the connector puts the URL's port in.
            if let Some(ip) = fixed {
                return Ok(vec![SocketAddr::new(ip, 0)].into_iter());
            }
            let host = name.as_str().to_string();
            tokio::task::spawn_blocking(move || {
                (host.as_str(), 0)
                    .to_socket_addrs()
                    .map(|a| a.collect::<Vec<_>>().into_iter())
            })
            .await
            .map_err(std::io::Error::other)?
        })
    }
}

#[derive(Clone)]
pub struct Client {
    inner: HyperClient<hyper_rustls::HttpsConnector<HttpConnector<Resolver>>, Full<Bytes>>,
}

impl Client {
    /// A client trusting `ca_file` (PEM, one or more certificates) or the system roots.
    pub fn new(ca_file: Option<&Path>) -> Result<Client, HttpError> {
        Client::connecting_to(ca_file, None)
    }

    /// As [`Client::new`], connecting to `address` (when given) whatever the URL's host.
    pub fn connecting_to(
        ca_file: Option<&Path>,
        address: Option<IpAddr>,
    ) -> Result<Client, HttpError> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| {
                        HttpError::Setup(format!("cannot read CA bundle {}: {e}", path.display()))
                    })?;
                if certs.is_empty() {
                    return Err(HttpError::Setup(format!(
                        "{} holds no PEM certificate",
                        path.display()
                    )));
                }
                for c in certs {
                    roots.add(c).map_err(|e| {
                        HttpError::Setup(format!("{}: bad certificate: {e}", path.display()))
                    })?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Setup(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new_with_resolver(Resolver { fixed: address });
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Client {
            inner: HyperClient::builder(TokioExecutor::new()).build(connector),
        })
    }

    pub async fn get(&self, url: &str, bearer: Option<&str>) -> Result<Reply, HttpError> {
        self.send(Method::GET, url, bearer, None).await
    }

    /// GET with extra headers (e.g. `Origin`).
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Result<Reply, HttpError> {
        let mut b = Request::builder().method(Method::GET).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Full::new(Bytes::new()))
            .map_err(|e| transport("GET", url, e))?;
        self.run("GET", url, req).await
    }

    pub async fn json(
        &self,
        method: Method,
        url: &str,
        bearer: Option<&str>,
        body: &serde_json::Value,
    ) -> Result<Reply, HttpError> {
        let body = serde_json::to_vec(body).map_err(|e| transport(method.as_str(), url, e))?;
        self.send(method, url, bearer, Some(("application/json", body)))
            .await
    }

    pub async fn form(&self, url: &str, fields: &[(&str, &str)]) -> Result<Reply, HttpError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.send(
            Method::POST,
            url,
            None,
            Some(("application/x-www-form-urlencoded", body.into_bytes())),
        )
        .await
    }

    pub async fn send(
        &self,
        method: Method,
        url: &str,
        bearer: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Reply, HttpError> {
        let m = method.to_string();
        let mut b = Request::builder()
            .method(method)
            .uri(url)
            .header(header::ACCEPT, "application/json");
        if let Some(t) = bearer {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some((ctype, bytes)) => {
                b = b.header(header::CONTENT_TYPE, ctype);
                Full::new(Bytes::from(bytes))
            }
            None => Full::new(Bytes::new()),
        };
        let req = b.body(body).map_err(|e| transport(&m, url, e))?;
        self.run(&m, url, req).await
    }

    async fn run(&self, m: &str, url: &str, req: Request<Full<Bytes>>) -> Result<Reply, HttpError> {
        let fut = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| transport(m, url, error_chain(&e)))?;
            let status = resp.status();
            let location = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| transport(m, url, e))?
                .to_bytes();
            Ok(Reply {
                status,
                location,
                body,
            })
        };
        tokio::time::timeout(TIMEOUT, fut)
            .await
            .map_err(|_| transport(m, url, format!("no answer within {}s", TIMEOUT.as_secs())))?
    }
}

fn transport(method: &str, url: &str, e: impl std::fmt::Display) -> HttpError {
    HttpError::Transport {
        method: method.into(),
        url: url.into(),
        error: e.to_string(),
    }
}

/// hyper's errors hide the cause (connection refused, certificate unknown) in `source()`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}

/// Percent-encodes one path segment or query value.
pub fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A name that resolves nowhere is reached at the fixed address, with its own name in the
    /// `Host` header and the URL's port.
    #[tokio::test]
    async fn connect_to_reaches_the_address_and_keeps_the_name()
    -> Result<(), Box<dyn std::error::Error>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await?;
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await?;
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf[..n]).to_lowercase())
        });
        let client = Client::connecting_to(None, Some(IpAddr::from([127, 0, 0, 1])))?;
        let url = format!("http://keycloak.invalid:{port}/auth/realms/master");
        let reply = client.get(&url, None).await?;
        assert_eq!(reply.status, StatusCode::OK);
        let request = server.await??;
        assert!(
            request.contains(&format!("host: keycloak.invalid:{port}")),
            "{request}"
        );
        // Without the override the name does not resolve.
        let plain = Client::new(None)?;
        assert!(plain.get(&url, None).await.is_err());
        Ok(())
    }
}
