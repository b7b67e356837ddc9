//! The `HOST` argument: `name[:port]`, `1.2.3.4[:port]`, `[::1][:port]` or a bare IPv6
//! literal. The name part is also the name the agent's certificate must carry: kctl checks the
//! server certificate against exactly what the operator typed.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use anyhow::{Result, bail};

/// An agent to dial: its host (DNS name or IP literal, without brackets) and TCP port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl Target {
    /// The URI tonic dials, e.g. `https://vm1.example:7443` or `https://[::1]:7443`.
    pub fn uri(&self) -> String {
        format!("https://{self}")
    }

    /// The name the agent's certificate must carry (a DNS name or an IP address).
    pub fn tls_name(&self) -> &str {
        &self.host
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for Target {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Target> {
        parse_target(s, kagent_proto::DEFAULT_PORT)
    }
}

/// Parses `HOST` with `default_port` when none is given.
pub fn parse_target(s: &str, default_port: u16) -> Result<Target> {
    let s = s.trim();
    if s.is_empty() {
        bail!("empty host; expected NAME[:PORT], e.g. vm1.example or vm1.example:7443");
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        // [v6] or [v6]:port
        let Some((inside, after)) = rest.split_once(']') else {
            bail!("host {s:?}: missing `]` after the IPv6 address");
        };
        if inside.parse::<Ipv6Addr>().is_err() {
            bail!("host {s:?}: {inside:?} is not an IPv6 address");
        }
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => bail!("host {s:?}: expected `:PORT` after `]`"),
            },
        };
        (inside.to_string(), port)
    } else if s.matches(':').count() > 1 {
        // More than one colon and no brackets: only a bare IPv6 literal makes sense.
        if s.parse::<Ipv6Addr>().is_err() {
            bail!(
                "host {s:?} is not NAME[:PORT] nor an IPv6 address; write an IPv6 address with \
                 a port as [ADDRESS]:PORT, e.g. [::1]:7443"
            );
        }
        (s.to_string(), None)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (s.to_string(), None),
        }
    };
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => bail!("host {s:?}: port {p:?} is not a TCP port (1 to 65535)"),
            Ok(n) => n,
        },
    };
    check_name(&host).map_err(|e| anyhow::anyhow!("host {s:?}: {e}"))?;
    Ok(Target { host, port })
}

/// Parses a machine name for a certificate (`kctl ca issue agent HOST`): a DNS name or an IP
/// literal (brackets allowed around IPv6), without a port.
pub fn parse_name(s: &str) -> Result<String> {
    let s = s.trim();
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    if bare.parse::<IpAddr>().is_ok() {
        return Ok(bare.to_string());
    }
    if s.contains(':') {
        bail!("{s:?}: give the host name without a port; the certificate names a machine");
    }
    check_name(s).map_err(|e| anyhow::anyhow!("{s:?}: {e}"))?;
    Ok(s.to_string())
}

/// A DNS name (letters, digits, `-`, `_`, dots; labels 1..=63, total <= 253) or an IP literal.
fn check_name(host: &str) -> Result<()> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if host.is_empty() {
        bail!("empty host name");
    }
    if host.len() > 253 {
        bail!("host name longer than 253 characters");
    }
    for label in host.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            bail!("host name labels must be 1 to 63 characters");
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("host names are made of letters, digits, `-` and dots");
        }
        if label.starts_with('-') || label.ends_with('-') {
            bail!("a host name label cannot start or end with `-`");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Result<Target> {
        s.parse()
    }

    fn target(host: &str, port: u16) -> Target {
        Target {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn names_and_ports() -> Result<()> {
        assert_eq!(t("vm1")?, target("vm1", 7443));
        assert_eq!(t("vm1.example.org")?, target("vm1.example.org", 7443));
        assert_eq!(t("vm1.example.org:9000")?, target("vm1.example.org", 9000));
        assert_eq!(t(" localhost:1 ")?, target("localhost", 1));
        assert_eq!(t("10.0.0.2")?, target("10.0.0.2", 7443));
        assert_eq!(t("10.0.0.2:7444")?, target("10.0.0.2", 7444));
        Ok(())
    }

    #[test]
    fn ipv6_literals() -> Result<()> {
        assert_eq!(t("[::1]:7443")?, target("::1", 7443));
        assert_eq!(t("[::1]")?, target("::1", 7443));
        assert_eq!(t("::1")?, target("::1", 7443));
        assert_eq!(t("[fd00::2]:8000")?, target("fd00::2", 8000));
        assert_eq!(t("fd00::2")?, target("fd00::2", 7443));
        Ok(())
    }

    #[test]
    fn display_and_uri_bracket_ipv6() -> Result<()> {
        assert_eq!(t("::1")?.to_string(), "[::1]:7443");
        assert_eq!(t("::1")?.uri(), "https://[::1]:7443");
        assert_eq!(t("::1")?.tls_name(), "::1");
        assert_eq!(t("vm1:9")?.uri(), "https://vm1:9");
        assert_eq!(t("vm1:9")?.tls_name(), "vm1");
        Ok(())
    }

    #[test]
    fn refusals() {
        for (bad, why) in [
            ("", "empty host"),
            ("vm1:", "is not a TCP port"),
            ("vm1:0", "is not a TCP port"),
            ("vm1:65536", "is not a TCP port"),
            ("vm1:http", "is not a TCP port"),
            ("[::1", "missing `]`"),
            ("[::1]7443", "expected `:PORT`"),
            ("[vm1]:7443", "is not an IPv6 address"),
            ("fd00::2:7443:x", "nor an IPv6 address"),
            ("vm 1", "letters, digits"),
            ("vm1/x", "letters, digits"),
            ("-vm1", "start or end"),
            ("a..b", "1 to 63"),
            (":7443", "empty host name"),
        ] {
            let err = t(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                err.contains(why),
                "{bad:?}: {err:?} does not mention {why:?}"
            );
        }
    }

    #[test]
    fn certificate_names() -> Result<()> {
        assert_eq!(parse_name("vm1.example")?, "vm1.example");
        assert_eq!(parse_name("[::1]")?, "::1");
        assert_eq!(parse_name("::1")?, "::1");
        assert_eq!(parse_name("10.0.0.2")?, "10.0.0.2");
        assert!(parse_name("vm1:7443").is_err());
        assert!(parse_name("vm 1").is_err());
        Ok(())
    }
}
