//! A stack's variables: their kinds (what a value may look like), and `${NAME}` references in
//! string values.
//!
//! Substitution happens on parsed TOML values, never on the text, so a value cannot change the
//! structure of the spec. The kinds still refuse quotes, backslashes, whitespace, control
//! characters and `$` everywhere: values end up in command lines, URLs, env files and realm
//! settings, where each of those is a hazard of its own.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::Deserialize;

/// What a variable's value may be. Every variable has one (default: `word`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A DNS name in lower case with at least two labels: `kheops.example.org`.
    Hostname,
    /// `http(s)://HOST[:PORT][/PATH]`, no trailing slash, query or fragment.
    Url,
    /// `user@example.org`.
    Email,
    /// A Keycloak realm name other than `master`: letters, digits, `-`, `_`, `.`.
    Realm,
    /// A Docker image tag: `26.4.2`, `v1.1.2`.
    ImageTag,
    /// An absolute path without `..`, `//` or a trailing slash, of `[A-Za-z0-9._/+@-]`.
    Path,
    /// An IPv4 address (the address to publish ports on).
    Ipv4,
    /// One word of 16 to 256 characters of `[A-Za-z0-9._~+/=-]`: a client secret.
    Secret,
    /// `letsencrypt`, `letsencrypt-staging`, or the https:// URL of an ACME directory.
    AcmeDirectory,
    /// One word of `[A-Za-z0-9._:/@+-]`, 1 to 256 characters.
    Word,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Hostname,
        Kind::Url,
        Kind::Email,
        Kind::Realm,
        Kind::ImageTag,
        Kind::Path,
        Kind::Ipv4,
        Kind::Secret,
        Kind::AcmeDirectory,
        Kind::Word,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Hostname => "hostname",
            Kind::Url => "url",
            Kind::Email => "email",
            Kind::Realm => "realm",
            Kind::ImageTag => "image_tag",
            Kind::Path => "path",
            Kind::Ipv4 => "ipv4",
            Kind::Secret => "secret",
            Kind::AcmeDirectory => "acme_directory",
            Kind::Word => "word",
        }
    }

    /// A valid value, used to check a stack's resources when it is parsed.
    pub fn example(self) -> &'static str {
        match self {
            Kind::Hostname => "host.example.org",
            Kind::Url => "https://host.example.org/path",
            Kind::Email => "ops@example.org",
            Kind::Realm => "demo",
            Kind::ImageTag => "1.0",
            Kind::Path => "/srv/kctl",
            Kind::Ipv4 => "0.0.0.0",
            Kind::Secret => "0123456789abcdefABCDEF",
            Kind::AcmeDirectory => "letsencrypt",
            Kind::Word => "word",
        }
    }

    /// Whether values of this kind are shown as `<redacted>` when a stack is printed.
    pub fn is_sensitive(self) -> bool {
        self == Kind::Secret
    }

    /// Checks `value`; the error says what is wrong and gives an example.
    pub fn check(self, value: &str) -> Result<(), String> {
        if let Some(c) = value
            .chars()
            .find(|c| c.is_control() || c.is_whitespace() || "\"'\\$`".contains(*c))
        {
            return Err(format!(
                "{value:?} contains {c:?}; values may not hold quotes, backslashes, `$`, \
                 whitespace or control characters"
            ));
        }
        let bad = |what: &str| Err(format!("{value:?} is not {what}"));
        match self {
            Kind::Hostname => check_hostname(value),
            Kind::Url => check_url(value),
            Kind::Email => match value.split_once('@') {
                Some((local, domain))
                    if !local.is_empty()
                        && local.len() <= 64
                        && local
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "._%+-".contains(c)) =>
                {
                    check_hostname(domain).map_err(|e| format!("{value:?}: the domain: {e}"))
                }
                _ => bad("an e-mail address, e.g. ops@example.org"),
            },
            Kind::Realm => {
                if value == "master" {
                    return Err(
                        "\"master\" is Keycloak's own realm; KHEOPS needs its own, e.g. \
                                demo"
                            .into(),
                    );
                }
                if value.is_empty()
                    || value.len() > 100
                    || !value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    return bad("a realm name (letters, digits, '-', '_', '.'), e.g. demo");
                }
                Ok(())
            }
            Kind::ImageTag => {
                let ok = !value.is_empty()
                    && value.len() <= 128
                    && !value.starts_with(['.', '-'])
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
                if ok {
                    Ok(())
                } else {
                    bad("an image tag (letters, digits, '_', '.', '-'), e.g. 26.4.2 or v1.1.2")
                }
            }
            Kind::Path => {
                let ok = value.starts_with('/')
                    && value.len() > 1
                    && value.len() <= 1024
                    && !value.ends_with('/')
                    && !value.contains("//")
                    && value.split('/').all(|c| c != ".." && c != ".")
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._/+@-".contains(c));
                if ok {
                    Ok(())
                } else {
                    bad("an absolute path without `..`, `//` or a trailing slash, e.g. /srv/kctl")
                }
            }
            Kind::Ipv4 => value
                .parse::<Ipv4Addr>()
                .map(|_| ())
                .map_err(|_| format!("{value:?} is not an IPv4 address, e.g. 0.0.0.0")),
            Kind::Secret => {
                let ok = (16..=256).contains(&value.len())
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._~+/=-".contains(c));
                if ok {
                    Ok(())
                } else {
                    bad("a secret: one word of 16 to 256 characters of A-Z a-z 0-9 . _ ~ + / = -")
                }
            }
            Kind::AcmeDirectory => match value {
                "letsencrypt" | "letsencrypt-staging" => Ok(()),
                v if v.starts_with("https://") => check_url(v),
                _ => bad("an ACME directory: letsencrypt, letsencrypt-staging or an https:// URL"),
            },
            Kind::Word => {
                let ok = !value.is_empty()
                    && value.len() <= 256
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._:/@+-".contains(c));
                if ok {
                    Ok(())
                } else {
                    bad("a word of A-Z a-z 0-9 . _ : / @ + -")
                }
            }
        }
    }
}

fn check_hostname(value: &str) -> Result<(), String> {
    if value.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "{value:?}: write the name in lower case ({:?})",
            value.to_ascii_lowercase()
        ));
    }
    let labels: Vec<&str> = value.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if value.len() > 253 || labels.len() < 2 || !labels.iter().all(label_ok) {
        return Err(format!(
            "{value:?} is not a DNS name such as kheops.example.org (lower-case labels of \
             a-z, 0-9 and '-', separated by dots, no trailing dot)"
        ));
    }
    Ok(())
}

fn check_url(value: &str) -> Result<(), String> {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .ok_or_else(|| format!("{value:?} is not an http(s):// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let host = match authority.rsplit_once(':') {
        Some((h, port)) => {
            port.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{value:?}: {port:?} is not a port"))?;
            h
        }
        None => authority,
    };
    if host.parse::<Ipv4Addr>().is_err() {
        check_hostname(host).map_err(|e| format!("{value:?}: the host: {e}"))?;
    }
    if value.ends_with('/') {
        return Err(format!(
            "{value:?} ends with '/'; write it without (URLs are compared as strings)"
        ));
    }
    if !path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._~/%-".contains(c))
    {
        return Err(format!(
            "{value:?}: the path may only hold A-Z a-z 0-9 . _ ~ / % - (no query or fragment)"
        ));
    }
    Ok(())
}

/// A variable name: `[a-z][a-z0-9_]*`, at most 64 characters.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a variable name: a-z, 0-9 and '_', starting with a letter"
        ))
    }
}

/// One piece of a string value: literal text or a `${NAME}` reference.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

/// Splits `s` at its `${NAME}` references. `${` always starts a reference; an unclosed one or
/// a bad name is an error (there is no escape: no stack needs a literal `${`).
pub fn pieces(s: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            out.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("{s:?}: `${{` without a closing `}}`"))?;
        let name = &after[..end];
        check_name(name).map_err(|e| format!("{s:?}: in `${{{name}}}`: {e}"))?;
        out.push(Piece::Var(name));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// Every variable referenced in the string values of `value` (recursively), with the path of
/// the first string that uses it, e.g. `resource[3].env.KHEOPS_ROOT_HOST`.
pub fn references(
    value: &toml::Value,
    path: &str,
    out: &mut Vec<(String, String)>,
) -> Result<(), String> {
    match value {
        toml::Value::String(s) => {
            for p in pieces(s).map_err(|e| format!("{path}: {e}"))? {
                if let Piece::Var(name) = p
                    && !out.iter().any(|(n, _)| n == name)
                {
                    out.push((name.to_string(), path.to_string()));
                }
            }
            Ok(())
        }
        toml::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                references(v, &format!("{path}[{}]", i + 1), out)?;
            }
            Ok(())
        }
        toml::Value::Table(t) => {
            for (k, v) in t {
                references(v, &format!("{path}.{k}"), out)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Replaces every `${NAME}` in the string values of `value` with `lookup(NAME)`.
pub fn substitute(value: &mut toml::Value, lookup: &dyn Fn(&str) -> Option<String>) {
    match value {
        toml::Value::String(s) => {
            // References were checked when the stack was parsed.
            if let Ok(parts) = pieces(s) {
                let mut text = String::with_capacity(s.len());
                for p in parts {
                    match p {
                        Piece::Text(t) => text.push_str(t),
                        Piece::Var(name) => text.push_str(&lookup(name).unwrap_or_default()),
                    }
                }
                *s = text;
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(|v| substitute(v, lookup)),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| substitute(v, lookup)),
        _ => {}
    }
}

/// The names in `set`, comma-separated, for error messages.
pub fn list(set: &BTreeSet<&str>) -> String {
    set.iter().copied().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_accepts_its_example() {
        for k in Kind::ALL {
            assert_eq!(k.check(k.example()), Ok(()), "{}", k.name());
        }
    }

    #[test]
    fn kinds_refuse_what_could_break_out() {
        for k in Kind::ALL {
            for bad in [
                "a\"b.example.org",
                "a'b",
                "a\nb",
                "a\\b",
                "a b",
                "${x}",
                "a\tb",
                "a\u{0}b",
                "",
            ] {
                assert!(k.check(bad).is_err(), "{} accepted {bad:?}", k.name());
            }
        }
    }

    #[test]
    fn kinds_say_what_is_wrong() {
        let cases = [
            (Kind::Hostname, "KC.example.org", "lower case"),
            (Kind::Hostname, "kc", "not a DNS name"),
            (Kind::Hostname, "kc.example.org.", "not a DNS name"),
            (Kind::Hostname, "-kc.example.org", "not a DNS name"),
            (Kind::Url, "https://kc.example.org/", "ends with '/'"),
            (Kind::Url, "ftp://kc.example.org", "not an http(s):// URL"),
            (Kind::Url, "https://kc.example.org:0", "not a port"),
            (Kind::Url, "https://kc.example.org/a?b", "no query"),
            (Kind::Email, "ops", "not an e-mail address"),
            (Kind::Email, "ops@localhost", "the domain"),
            (Kind::Realm, "master", "Keycloak's own realm"),
            (Kind::Realm, "a/b", "not a realm name"),
            (Kind::ImageTag, "-1", "not an image tag"),
            (Kind::ImageTag, "a:b", "not an image tag"),
            (Kind::Path, "srv/kctl", "not an absolute path"),
            (Kind::Path, "/srv/../etc", "not an absolute path"),
            (Kind::Path, "/srv/kctl/", "not an absolute path"),
            (Kind::Path, "/", "not an absolute path"),
            (Kind::Ipv4, "::1", "not an IPv4 address"),
            (Kind::Secret, "short", "16 to 256"),
            (Kind::Secret, "0123456789abcdef#", "16 to 256"),
            (
                Kind::AcmeDirectory,
                "http://acme.example.org/dir",
                "letsencrypt-staging",
            ),
        ];
        for (k, v, want) in cases {
            let got = k.check(v).err().unwrap_or_default();
            assert!(got.contains(want), "{} {v:?}: {got}", k.name());
        }
        assert_eq!(Kind::Url.check("https://10.0.0.2:8443/auth"), Ok(()));
        assert_eq!(
            Kind::AcmeDirectory.check("https://127.0.0.1:14000/dir"),
            Ok(())
        );
        assert_eq!(Kind::Path.check("/tmp/.tmpAb12/root"), Ok(()));
    }

    #[test]
    fn references_are_split_and_substituted() -> Result<(), String> {
        assert_eq!(
            pieces("https://${host}:${port}/x")?,
            [
                Piece::Text("https://"),
                Piece::Var("host"),
                Piece::Text(":"),
                Piece::Var("port"),
                Piece::Text("/x")
            ]
        );
        assert_eq!(pieces("$@ and $HOME")?, [Piece::Text("$@ and $HOME")]);
        assert!(pieces("${host").is_err_and(|e| e.contains("without a closing")));
        assert!(pieces("${Host}").is_err_and(|e| e.contains("not a variable name")));
        assert!(pieces("${}").is_err());
        let mut v = toml::Value::Table(
            toml::from_str("a = \"${x}-${x}\"\nb = [\"${y}\", 3]\nc = { d = \"${x}\" }")
                .map_err(|e| e.to_string())?,
        );
        let mut refs = Vec::new();
        references(&v, "top", &mut refs)?;
        assert_eq!(
            refs,
            [
                ("x".to_string(), "top.a".to_string()),
                ("y".to_string(), "top.b[1]".to_string())
            ]
        );
        substitute(&mut v, &|n| Some(n.to_uppercase()));
        assert_eq!(v["a"].as_str(), Some("X-X"));
        assert_eq!(v["b"][0].as_str(), Some("Y"));
        assert_eq!(v["b"][1].as_integer(), Some(3));
        assert_eq!(v["c"]["d"].as_str(), Some("X"));
        Ok(())
    }
}
