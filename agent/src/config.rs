//! The agent's configuration: `/etc/kagent/kagent.toml` (or `--config`), overridden by
//! `KAGENT_*` environment variables, read once at start through the `config` crate.
//!
//! A bad file stops the agent with the key and the expected value named: a daemon that starts
//! on a half-understood configuration is worse than one that does not start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const DEFAULT_PATH: &str = "/etc/kagent/kagent.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the mTLS gRPC listener.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Journal, audit log, secrets of the agent itself.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Directories under which `file` and `secret` resources may live.
    #[serde(default = "default_managed_roots")]
    pub managed_roots: Vec<PathBuf>,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub enrollment: EnrollmentConfig,
    #[serde(default)]
    pub acme: AcmeConfig,
    /// The Docker engine for `container`, `network` and `volume` resources:
    /// `unix:///path` or `tcp://host:port` (env `KAGENT_DOCKER_HOST`).
    #[serde(default = "default_docker_host")]
    pub docker_host: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentConfig {
    /// Lifetime of an enrollment token, in seconds (default one hour).
    #[serde(default = "default_token_ttl")]
    pub token_ttl_secs: u64,
}

impl Default for EnrollmentConfig {
    fn default() -> Self {
        EnrollmentConfig {
            token_ttl_secs: default_token_ttl(),
        }
    }
}

fn default_token_ttl() -> u64 {
    3600
}

/// Certificates: the HTTP-01 port and the renewal scheduler (`[acme]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The port CAs connect to for HTTP-01: 80 (a test CA such as pebble uses its `httpPort`).
    #[serde(default = "default_http01_port")]
    pub http01_port: u16,
    /// Names the HTTP-01 self-check resolves to these addresses instead of asking the system
    /// resolver, e.g. `{ "keycloak.test" = "127.0.0.1" }` for names only a test CA's DNS knows.
    #[serde(default)]
    pub resolve: std::collections::HashMap<String, std::net::IpAddr>,
    /// How often the scheduler checks every certificate (±10% jitter); default one hour.
    #[serde(default = "default_check_interval")]
    pub check_interval_secs: u64,
    /// The scheduler's first check waits a random 0..this after start; default 300.
    #[serde(default = "default_start_delay")]
    pub start_delay_max_secs: u64,
    /// First backoff after a failed renewal, doubled per failure; default 300.
    #[serde(default = "default_retry_base")]
    pub retry_base_secs: u64,
    /// Longest backoff; default 6 hours (and at most a tenth of the lifetime).
    #[serde(default = "default_retry_max")]
    pub retry_max_secs: u64,
    /// First delay when polling an ACME order; default 250 ms.
    #[serde(default = "default_poll_delay")]
    pub poll_delay_ms: u64,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            http01_port: default_http01_port(),
            resolve: Default::default(),
            check_interval_secs: default_check_interval(),
            start_delay_max_secs: default_start_delay(),
            retry_base_secs: default_retry_base(),
            retry_max_secs: default_retry_max(),
            poll_delay_ms: default_poll_delay(),
        }
    }
}

fn default_http01_port() -> u16 {
    80
}
fn default_check_interval() -> u64 {
    3600
}
fn default_start_delay() -> u64 {
    300
}
fn default_retry_base() -> u64 {
    300
}
fn default_retry_max() -> u64 {
    6 * 3600
}
fn default_poll_delay() -> u64 {
    250
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The agent's certificate (PEM), signed by the fleet CA.
    #[serde(default = "default_cert")]
    pub cert: PathBuf,
    /// Its private key (PEM).
    #[serde(default = "default_key")]
    pub key: PathBuf,
    /// The fleet CA certificate that client certificates must chain to.
    #[serde(default = "default_client_ca")]
    pub client_ca: PathBuf,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: default_cert(),
            key: default_key(),
            client_ca: default_client_ca(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], kagent_proto::DEFAULT_PORT))
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/kagent")
}
fn default_managed_roots() -> Vec<PathBuf> {
    vec![
        PathBuf::from("/etc/kagent/managed"),
        PathBuf::from("/srv/kctl"),
    ]
}
fn default_cert() -> PathBuf {
    PathBuf::from("/etc/kagent/tls/agent.crt")
}
fn default_key() -> PathBuf {
    PathBuf::from("/etc/kagent/tls/agent.key")
}
fn default_client_ca() -> PathBuf {
    PathBuf::from("/etc/kagent/tls/ca.crt")
}
fn default_docker_host() -> String {
    crate::host::docker::DEFAULT_HOST.to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration {origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// Where the configuration comes from.
pub enum Source<'a> {
    /// The default path: a missing file means "all defaults".
    Default,
    /// A path given with `--config`: it must exist.
    Explicit(&'a Path),
}

impl Config {
    /// Loads the file, then applies `KAGENT_*` overrides (`KAGENT_LISTEN`, `KAGENT_STATE_DIR`,
    /// `KAGENT_MANAGED_ROOTS=/a,/b`, `KAGENT_TLS__CERT`, ...), then checks the result.
    pub fn load(source: Source<'_>) -> Result<Config, ConfigError> {
        Self::load_with_env(source, std::env::vars())
    }

    /// As `load`, with the environment given (tests).
    pub fn load_with_env(
        source: Source<'_>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (path, required) = match source {
            Source::Default => (PathBuf::from(DEFAULT_PATH), false),
            Source::Explicit(p) => (p.to_path_buf(), true),
        };
        let mut builder = config::Config::builder();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                builder =
                    builder.add_source(config::File::from_str(&text, config::FileFormat::Toml))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {}
            Err(source) => return Err(ConfigError::Read { path, source }),
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("KAGENT_") && !is_debug_var(k))
            .collect();
        let env_seen = env.clone();
        builder = builder.add_source(
            config::Environment::with_prefix("KAGENT")
                .prefix_separator("_")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("managed_roots")
                .try_parsing(true)
                .source(Some(env)),
        );
        let origin = path.display().to_string();
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.clone(),
            message,
        };
        let raw = builder
            .build()
            .map_err(|e| invalid(explain(e, &env_seen)))?;
        let cfg: Config = raw
            .try_deserialize()
            .map_err(|e| invalid(explain(e, &env_seen)))?;
        cfg.check().map_err(invalid)?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        let docker = &self.docker_host;
        if !(docker.starts_with("unix:///") || docker.starts_with("tcp://")) {
            return Err(format!(
                "key `docker_host`: expected unix:///PATH or tcp://HOST:PORT, got {docker:?}"
            ));
        }
        if !self.state_dir.is_absolute() {
            return Err(format!(
                "key `state_dir`: expected an absolute path, got {:?}",
                self.state_dir
            ));
        }
        for (key, path) in [
            ("tls.cert", &self.tls.cert),
            ("tls.key", &self.tls.key),
            ("tls.client_ca", &self.tls.client_ca),
        ] {
            if !path.is_absolute() {
                return Err(format!(
                    "key `{key}`: expected an absolute path, got {path:?}"
                ));
            }
        }
        if self.managed_roots.is_empty() {
            return Err("key `managed_roots`: expected at least one absolute directory".into());
        }
        for root in &self.managed_roots {
            if !root.is_absolute() || root.components().any(|c| c.as_os_str() == "..") {
                return Err(format!(
                    "key `managed_roots`: expected absolute paths without `..`, got {root:?}"
                ));
            }
            if root == Path::new("/") {
                return Err("key `managed_roots`: `/` would let a spec write anywhere; \
                            name the directories the agent may manage"
                    .into());
            }
        }
        Ok(())
    }
}

/// Environment variables that tune the agent for tests, not configuration keys.
fn is_debug_var(key: &str) -> bool {
    key.starts_with("KAGENT_DEBUG_") || key == "KAGENT_LOG"
}

/// The `config` crate's messages already name the key; add what a value should look like.
fn explain(e: config::ConfigError, env: &config::Map<String, String>) -> String {
    let msg = e.to_string();
    // An unknown key may come from the environment rather than the file: say which.
    if let Some(field) = msg
        .split("unknown field `")
        .nth(1)
        .and_then(|r| r.split('`').next())
    {
        let var = format!("KAGENT_{}", field.to_uppercase());
        if env.contains_key(&var) {
            return format!(
                "environment variable {var} is not a kagent setting (KAGENT_* variables \
                 override configuration keys); unset it or fix its name"
            );
        }
    }
    let hint = if msg.contains("unknown field") {
        " (known keys: listen, state_dir, managed_roots, [tls] cert, key, client_ca, \
         [enrollment] token_ttl_secs, [acme] http01_port, resolve, check_interval_secs, \
         start_delay_max_secs, retry_base_secs, retry_max_secs, poll_delay_ms, docker_host)"
    } else if msg.contains("listen") {
        " (expected an address with port, e.g. \"0.0.0.0:7443\")"
    } else {
        ""
    };
    format!("{msg}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().map_err(|e| ConfigError::Read {
            path: "tmp".into(),
            source: e,
        })?;
        let path = dir.path().join("kagent.toml");
        std::fs::write(&path, text).map_err(|e| ConfigError::Read {
            path: path.clone(),
            source: e,
        })?;
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load_with_env(Source::Explicit(&path), env)
    }

    #[test]
    fn defaults_apply_to_an_empty_file() -> Result<(), ConfigError> {
        let cfg = load("", &[])?;
        assert_eq!(cfg.listen.to_string(), "0.0.0.0:7443");
        assert_eq!(cfg.state_dir, PathBuf::from("/var/lib/kagent"));
        assert_eq!(cfg.tls.client_ca, PathBuf::from("/etc/kagent/tls/ca.crt"));
        assert_eq!(cfg.docker_host, "unix:///var/run/docker.sock");
        let cfg = load("", &[("KAGENT_DOCKER_HOST", "unix:///run/vm1/docker.sock")])?;
        assert_eq!(cfg.docker_host, "unix:///run/vm1/docker.sock");
        assert!(load("docker_host = \"/var/run/docker.sock\"\n", &[]).is_err());
        Ok(())
    }

    #[test]
    fn environment_overrides_the_file() -> Result<(), ConfigError> {
        let cfg = load(
            "listen = \"127.0.0.1:1\"\n",
            &[
                ("KAGENT_LISTEN", "127.0.0.1:9000"),
                ("KAGENT_MANAGED_ROOTS", "/a,/b"),
                ("KAGENT_TLS__CERT", "/x.crt"),
                ("KAGENT_DEBUG_STEP_DELAY_MS", "5"),
            ],
        )?;
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(
            cfg.managed_roots,
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert_eq!(cfg.tls.cert, PathBuf::from("/x.crt"));
        Ok(())
    }

    #[test]
    fn an_unknown_environment_variable_is_named() {
        let err = load("", &[("KAGENT_LISTN", "127.0.0.1:1")])
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.contains("environment variable KAGENT_LISTN"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, key) in [
            ("listen = \"nonsense\"\n", "listen"),
            ("lisen = \"0.0.0.0:1\"\n", "lisen"),
            ("state_dir = \"relative\"\n", "state_dir"),
            ("managed_roots = [\"/\"]\n", "managed_roots"),
            ("[tls]\ncert = 5\n", "cert"),
        ] {
            let err = load(text, &[])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(key), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn an_explicit_missing_file_is_an_error() {
        let err = Config::load_with_env(Source::Explicit(Path::new("/nonexistent/k.toml")), []);
        assert!(matches!(err, Err(ConfigError::Read { .. })));
    }
}
