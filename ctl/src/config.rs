//! Where kctl keeps its files, and the operator identity it presents to agents.
//!
//! ```text
//! <config dir>/            --config-dir, $KCTL_CONFIG_DIR, $XDG_CONFIG_HOME/kctl, ~/.config/kctl
//!   ca/ca.crt, ca.key      the fleet CA (`kctl ca init`)
//!   identity/              the operator's own client certificate (--identity overrides)
//!     client.crt client.key ca.crt
//!   agents/HOST/           `kctl ca issue agent HOST` output
//!   clients/NAME/          `kctl ca issue client NAME` output
//! ```

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use time::OffsetDateTime;

use crate::error::{Error, Result};

/// Client certificate stem inside an identity directory.
pub const CLIENT_STEM: &str = "client";
/// Agent certificate stem inside an agent bundle directory.
pub const AGENT_STEM: &str = "agent";
/// Warn when the operator's certificate expires within this many days.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// Resolves the config directory. `flag` is `--config-dir` or `$KCTL_CONFIG_DIR` (clap merges
/// them); `env` reads the environment (injected so tests need not mutate the process's).
pub fn config_dir(flag: Option<&Path>, env: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir.to_path_buf());
    }
    // The XDG spec says a relative or empty XDG_CONFIG_HOME is invalid and must be ignored.
    if let Some(xdg) = env("XDG_CONFIG_HOME").map(PathBuf::from)
        && xdg.is_absolute()
    {
        return Ok(xdg.join("kctl"));
    }
    match env("HOME").map(PathBuf::from) {
        Some(home) if home.is_absolute() => Ok(home.join(".config").join("kctl")),
        _ => Err(Error::usage(anyhow!(
            "cannot find a config directory: neither XDG_CONFIG_HOME nor HOME is set"
        ))
        .hint("pass --config-dir DIR or set KCTL_CONFIG_DIR")),
    }
}

/// The directories kctl works with, resolved once from the global flags.
#[derive(Clone, Debug)]
pub struct Paths {
    pub config_dir: PathBuf,
    /// The operator identity: `client.crt`, `client.key`, `ca.crt`.
    pub identity_dir: PathBuf,
    /// Overrides the identity's `ca.crt` as the CA that agent certificates must chain to.
    pub ca_file: Option<PathBuf>,
}

impl Paths {
    pub fn new(config_dir: PathBuf, identity: Option<PathBuf>, ca_file: Option<PathBuf>) -> Paths {
        let identity_dir = identity.unwrap_or_else(|| config_dir.join("identity"));
        Paths {
            config_dir,
            identity_dir,
            ca_file,
        }
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.config_dir.join("ca")
    }

    pub fn agent_dir(&self, host: &str) -> PathBuf {
        self.config_dir.join("agents").join(host)
    }

    pub fn client_dir(&self, name: &str) -> PathBuf {
        self.config_dir.join("clients").join(name)
    }
}

/// The PEM material kctl presents and trusts when it dials an agent.
#[derive(Clone)]
pub struct Credentials {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
    /// Where the client certificate came from, for messages.
    pub cert_path: PathBuf,
}

impl Credentials {
    /// Loads the identity from `paths`, with `--ca-file` overriding its `ca.crt`.
    pub fn load(paths: &Paths) -> Result<Credentials> {
        let dir = &paths.identity_dir;
        let bundle = crate::ca::BundlePaths::new(dir, CLIENT_STEM);
        let missing_hint = "consider `kctl ca init` (creates the fleet CA and your identity), or \
                            point --identity at a directory holding client.crt, client.key and \
                            ca.crt";
        let read = |path: &Path, what: &str| -> Result<String> {
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read your {what} {}", path.display()))
                .map_err(|e| Error::usage(e).hint(missing_hint))
        };
        let cert_pem = read(&bundle.cert, "client certificate")?;
        let key_pem = read(&bundle.key, "client key")?;
        let ca_pem = match &paths.ca_file {
            Some(file) => std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the CA file {}", file.display()))
                .map_err(Error::usage)?,
            None => read(&bundle.ca, "fleet CA certificate")?,
        };
        Ok(Credentials {
            cert_pem,
            key_pem,
            ca_pem,
            cert_path: bundle.cert,
        })
    }

    /// A warning line when the client certificate expires within 30 days (or already has).
    pub fn expiry_warning(&self, now: OffsetDateTime) -> Option<String> {
        let not_after = match crate::ca::not_after_pem(&self.cert_pem) {
            Ok(t) => t,
            Err(e) => {
                return Some(format!(
                    "cannot read the expiry date of {}: {e:#}",
                    self.cert_path.display()
                ));
            }
        };
        expiry_warning(&self.cert_path, not_after, now)
    }
}

fn expiry_warning(cert: &Path, not_after: OffsetDateTime, now: OffsetDateTime) -> Option<String> {
    let left = not_after - now;
    let date = crate::output::timestamp(not_after);
    let renew = "issue a new one with `kctl ca issue client NAME --out DIR`";
    if left.is_negative() {
        Some(format!(
            "your client certificate {} expired on {date}; {renew}",
            cert.display()
        ))
    } else if left.whole_days() < EXPIRY_WARNING_DAYS {
        Some(format!(
            "your client certificate {} expires on {date} (in {} days); {renew}",
            cert.display(),
            left.whole_days()
        ))
    } else {
        None
    }
}

/// The default name of the operator's client certificate: `$USER@hostname`.
pub fn default_client_name(env: impl Fn(&str) -> Option<OsString>) -> String {
    let user = env("USER")
        .or_else(|| env("LOGNAME"))
        .map(|u| u.to_string_lossy().into_owned())
        .filter(|u| !u.is_empty())
        .or_else(|| {
            let uid = nix::unistd::Uid::current();
            nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| "operator".to_string());
    let host = nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().into_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    format!("{user}@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_flag_wins() -> Result<()> {
        let dir = config_dir(
            Some(Path::new("rel/dir")),
            env(&[("XDG_CONFIG_HOME", "/x")]),
        )?;
        assert_eq!(dir, PathBuf::from("rel/dir"));
        Ok(())
    }

    #[test]
    fn xdg_then_home() -> Result<()> {
        let both = env(&[("XDG_CONFIG_HOME", "/xdg"), ("HOME", "/home/a")]);
        assert_eq!(config_dir(None, both)?, PathBuf::from("/xdg/kctl"));
        let home = env(&[("HOME", "/home/a")]);
        assert_eq!(
            config_dir(None, home)?,
            PathBuf::from("/home/a/.config/kctl")
        );
        // A relative or empty XDG_CONFIG_HOME is ignored, as the XDG spec says.
        let relative = env(&[("XDG_CONFIG_HOME", "cfg"), ("HOME", "/home/a")]);
        assert_eq!(
            config_dir(None, relative)?,
            PathBuf::from("/home/a/.config/kctl")
        );
        let empty = env(&[("XDG_CONFIG_HOME", ""), ("HOME", "/home/a")]);
        assert_eq!(
            config_dir(None, empty)?,
            PathBuf::from("/home/a/.config/kctl")
        );
        Ok(())
    }

    #[test]
    fn no_home_is_a_usage_error_with_a_hint() {
        let err = config_dir(None, env(&[])).err();
        let err = err.map(|e| (e.code, e.hint)).unwrap_or_default();
        assert_eq!(err.0, crate::error::EXIT_USAGE);
        assert!(err.1.unwrap_or_default().contains("--config-dir"));
    }

    #[test]
    fn paths_layout() {
        let p = Paths::new(PathBuf::from("/c"), None, None);
        assert_eq!(p.identity_dir, PathBuf::from("/c/identity"));
        assert_eq!(p.ca_dir(), PathBuf::from("/c/ca"));
        assert_eq!(p.agent_dir("vm1"), PathBuf::from("/c/agents/vm1"));
        assert_eq!(p.client_dir("ci"), PathBuf::from("/c/clients/ci"));
        let p = Paths::new(PathBuf::from("/c"), Some(PathBuf::from("/id")), None);
        assert_eq!(p.identity_dir, PathBuf::from("/id"));
    }

    #[test]
    fn missing_identity_suggests_ca_init() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let paths = Paths::new(dir.path().to_path_buf(), None, None);
        let err = Credentials::load(&paths)
            .err()
            .map(|e| (e.code, e.hint.unwrap_or_default()));
        let (code, hint) = err.unwrap_or_default();
        assert_eq!(code, crate::error::EXIT_USAGE);
        assert!(hint.contains("kctl ca init"), "{hint}");
        Ok(())
    }

    #[test]
    fn expiry_warnings() {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(1000);
        let cert = Path::new("/id/client.crt");
        assert_eq!(
            expiry_warning(cert, now + time::Duration::days(31), now),
            None
        );
        let soon = expiry_warning(cert, now + time::Duration::days(3), now).unwrap_or_default();
        assert!(
            soon.contains("expires on") && soon.contains("in 3 days"),
            "{soon}"
        );
        let past = expiry_warning(cert, now - time::Duration::days(1), now).unwrap_or_default();
        assert!(past.contains("expired on"), "{past}");
    }

    #[test]
    fn client_name_is_user_at_host() {
        let name = default_client_name(env(&[("USER", "alice")]));
        assert!(
            name.starts_with("alice@") && name.len() > "alice@".len(),
            "{name}"
        );
        // Without $USER, the account name of the current uid.
        let name = default_client_name(env(&[]));
        assert!(name.contains('@') && !name.starts_with('@'), "{name}");
    }
}
