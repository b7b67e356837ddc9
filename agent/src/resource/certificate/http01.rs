//! HTTP-01: the agent's own responder for `/.well-known/acme-challenge/<token>`, the webroot
//! alternative, and the self-check that asks the way the CA will, through the name.
//!
//! The responder is a minimal HTTP/1.1 server (GET only, one request per connection, 8 KiB
//! request limit, 5 s read timeout): it only ever answers with key authorizations, which are
//! public by design. It binds `[::]` (dual-stack), so a CA that resolves the name to `::1` or an
//! IPv6 address reaches it as well as one that uses IPv4.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const PREFIX: &str = "/.well-known/acme-challenge/";
const MAX_REQUEST: usize = 8 << 10;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Tokens the responder answers: token -> key authorization.
pub type Tokens = Arc<Mutex<HashMap<String, String>>>;

/// A running responder; it stops when dropped.
pub struct Responder {
    pub tokens: Tokens,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Responder {
    /// Binds `port` on all addresses (`[::]`, falling back to `0.0.0.0` on IPv4-only hosts).
    pub async fn bind(port: u16) -> std::io::Result<Responder> {
        let listener = match TcpListener::bind(SocketAddr::from(([0u16; 8], port))).await {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Err(e),
            Err(_) => TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await?,
        };
        let addr = listener.local_addr()?;
        let tokens: Tokens = Arc::default();
        let served = tokens.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let tokens = served.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, tokens).await;
                });
            }
        });
        Ok(Responder { tokens, addr, task })
    }

    /// Stops listening and returns once the port is released (dropping only aborts the task,
    /// which frees the socket some time later: too late for an owner that starts right away).
    pub async fn close(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    pub fn insert(&self, token: &str, key_authorization: &str) {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_string(), key_authorization.to_string());
    }
}

async fn serve(mut stream: TcpStream, tokens: Tokens) -> std::io::Result<()> {
    let head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| std::io::Error::other("request timed out"))??;
    let first = head.lines().next().unwrap_or_default();
    let mut parts = first.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let answer = if method == "GET" {
        path.strip_prefix(PREFIX).and_then(|token| {
            tokens
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(token)
                .cloned()
        })
    } else {
        None
    };
    let response = match answer {
        Some(body) => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        ),
        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
    };
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads up to the end of the request head.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if buf.len() > MAX_REQUEST {
            return Err(std::io::Error::other("request too large"));
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// A random token for the self-check: the same alphabet as ACME tokens.
pub fn random_token() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..43)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// Asks `http://domain:port/.well-known/acme-challenge/<token>` as the CA would and checks
/// that the body is `expected`. The name is resolved through `resolve` when it has an entry
/// (the agent's `acme.resolve` setting), else through the system resolver.
pub async fn self_check(
    domain: &str,
    port: u16,
    token: &str,
    expected: &str,
    resolve: &HashMap<String, IpAddr>,
) -> Result<(), String> {
    let url = format!("http://{domain}:{port}{PREFIX}{token}");
    let addrs: Vec<SocketAddr> = match resolve.get(domain) {
        Some(ip) => vec![SocketAddr::new(*ip, port)],
        None => match tokio::time::timeout(CHECK_TIMEOUT, tokio::net::lookup_host((domain, port)))
            .await
        {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => return Err(format!("{url}: cannot resolve {domain}: {e}")),
            Err(_) => return Err(format!("{url}: resolving {domain} timed out")),
        },
    };
    if addrs.is_empty() {
        return Err(format!("{url}: {domain} has no address"));
    }
    let mut last = String::new();
    for addr in addrs {
        match tokio::time::timeout(CHECK_TIMEOUT, get(addr, domain, port, token)).await {
            Ok(Ok((200, body))) if body == expected => return Ok(()),
            Ok(Ok((200, _))) => {
                last = format!(
                    "{url} (via {addr}) answered 200 with other content: another server owns \
                     the port, not this agent's responder"
                )
            }
            Ok(Ok((status, _))) => last = format!("{url} (via {addr}) answered HTTP {status}"),
            Ok(Err(e)) => last = format!("{url} (via {addr}): {e}"),
            Err(_) => last = format!("{url} (via {addr}): no answer within {CHECK_TIMEOUT:?}"),
        }
    }
    Err(last)
}

async fn get(
    addr: SocketAddr,
    host: &str,
    port: u16,
    token: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!(
        "GET {PREFIX}{token} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kagent-self-check\r\n\
         Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut limited = s.take(64 << 10);
    limited.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn close_releases_the_port_at_once() -> Result<(), String> {
        // A paused owner is started right after the validation: the port must be free then.
        let r = Responder::bind(0).await.map_err(|e| e.to_string())?;
        let port = r.addr.port();
        r.close().await;
        let again = Responder::bind(port).await.map_err(|e| e.to_string())?;
        assert_eq!(again.addr.port(), port);
        Ok(())
    }

    #[tokio::test]
    async fn responder_answers_tokens_and_the_self_check_sees_it() -> Result<(), String> {
        let r = Responder::bind(0).await.map_err(|e| e.to_string())?;
        let port = r.addr.port();
        r.insert("tok", "tok.thumb");
        let resolve = HashMap::from([("a.test".to_string(), IpAddr::from([127, 0, 0, 1]))]);
        self_check("a.test", port, "tok", "tok.thumb", &resolve).await?;
        let err = self_check("a.test", port, "other", "x", &resolve)
            .await
            .err();
        assert!(err.unwrap_or_default().contains("answered HTTP 404"));
        let err = self_check("a.test", port, "tok", "different", &resolve)
            .await
            .err();
        assert!(err.unwrap_or_default().contains("other content"));
        drop(r);
        let err = self_check("a.test", port, "tok", "tok.thumb", &resolve)
            .await
            .err();
        assert!(err.is_some());
        Ok(())
    }
}
