//! `/etc/os-release` (os-release(5)): which distribution and release a system runs.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OsRelease {
    pub id: String,
    /// Lower-case words, nearest relative first.
    pub id_like: Vec<String>,
    pub version_id: String,
    pub version_codename: String,
    pub ubuntu_codename: String,
    pub name: String,
    pub pretty_name: String,
}

impl OsRelease {
    /// Parses os-release text: `KEY=value` lines, values optionally quoted with `"` or `'`
    /// and backslash escapes inside double quotes; comments and blank lines ignored.
    pub fn parse(text: &str) -> OsRelease {
        let mut vars = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            vars.insert(key.trim().to_string(), unquote(value.trim()));
        }
        let get = |k: &str| vars.get(k).cloned().unwrap_or_default();
        OsRelease {
            id: get("ID").to_ascii_lowercase(),
            id_like: get("ID_LIKE")
                .split_whitespace()
                .map(|w| w.to_ascii_lowercase())
                .collect(),
            version_id: get("VERSION_ID"),
            version_codename: get("VERSION_CODENAME"),
            ubuntu_codename: get("UBUNTU_CODENAME"),
            name: get("NAME"),
            pretty_name: get("PRETTY_NAME"),
        }
    }

    /// `ID` or one of `ID_LIKE`.
    pub fn is_like(&self, id: &str) -> bool {
        self.id == id || self.id_like.iter().any(|l| l == id)
    }

    /// The major version: `9` of `9.4`, `24` of `24.04`.
    pub fn major(&self) -> Option<u32> {
        self.version_id.split('.').next()?.parse().ok()
    }

    /// `VERSION_ID` as (major, minor), minor 0 when absent.
    pub fn version(&self) -> Option<(u32, u32)> {
        let mut parts = self.version_id.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next().map(|m| m.parse().ok()).unwrap_or(Some(0))?;
        Some((major, minor))
    }
}

fn unquote(v: &str) -> String {
    let bytes = v.as_bytes();
    if bytes.len() >= 2 && bytes[0] == b'\'' && bytes[bytes.len() - 1] == b'\'' {
        return v[1..v.len() - 1].to_string();
    }
    if bytes.len() >= 2 && bytes[0] == b'"' && bytes[bytes.len() - 1] == b'"' {
        let mut out = String::new();
        let mut chars = v[1..v.len() - 1].chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else {
                out.push(c);
            }
        }
        return out;
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quotes_like_and_versions() {
        let os = OsRelease::parse(
            "# comment\nNAME=\"Rocky Linux\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n\
             VERSION_ID=\"9.4\"\nPRETTY_NAME='Rocky Linux 9.4 (Blue Onyx)'\nX=\"a \\\"b\\\"\"\n",
        );
        assert_eq!(os.id, "rocky");
        assert_eq!(os.id_like, ["rhel", "centos", "fedora"]);
        assert!(os.is_like("rhel") && !os.is_like("debian"));
        assert_eq!(os.major(), Some(9));
        assert_eq!(os.version(), Some((9, 4)));
        assert_eq!(os.name, "Rocky Linux");
        assert_eq!(os.pretty_name, "Rocky Linux 9.4 (Blue Onyx)");
        let os = OsRelease::parse("ID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n");
        assert_eq!(os.version(), Some((12, 0)));
        assert_eq!(os.version_codename, "bookworm");
        assert_eq!(OsRelease::parse("ID=arch\n").major(), None);
    }
}
