//! The real `kctl` binary, run as the operator would, with the test PKI's admin identity (or
//! another client bundle) in a config directory of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kctl::ca::BundlePaths;
use tempfile::TempDir;

use crate::pki::Pki;

pub struct Kctl {
    bin: PathBuf,
    dir: TempDir,
    /// `--config-dir`.
    config_dir: PathBuf,
    /// `--identity`, when not the config dir's own.
    identity: Option<PathBuf>,
}

fn bin() -> PathBuf {
    crate::kctl_bin().unwrap_or_else(|| {
        panic!("kctl binary not found (set KCTL_BIN or run `cargo build -p kctl`; tests/run does)")
    })
}

fn tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("kctl-it-")
        .tempdir()
        .expect("tempdir")
}

impl Kctl {
    /// kctl with the PKI's admin identity. Panics when the binary is missing (the README's test
    /// command builds it first): a kctl test must not pass by not running.
    pub fn admin(pki: &Pki) -> Kctl {
        Kctl::with_identity(pki, &pki.admin)
    }

    /// kctl presenting `identity` (e.g. a viewer from [`Pki::client`]).
    pub fn with_identity(pki: &Pki, identity: &BundlePaths) -> Kctl {
        let dir = tempdir();
        let id_dir = dir.path().join("identity");
        std::fs::create_dir_all(&id_dir).expect("identity dir");
        std::fs::copy(&identity.cert, id_dir.join("client.crt")).expect("copy cert");
        std::fs::copy(&identity.key, id_dir.join("client.key")).expect("copy key");
        std::fs::copy(&pki.ca_cert, id_dir.join("ca.crt")).expect("copy ca");
        Kctl {
            bin: bin(),
            config_dir: dir.path().to_path_buf(),
            dir,
            identity: Some(id_dir),
        }
    }

    /// kctl as on a new laptop: an empty config directory that does not exist yet (`kctl ca
    /// init` makes it) and an empty `HOME`.
    pub fn fresh() -> Kctl {
        let dir = tempdir();
        std::fs::create_dir_all(dir.path().join("home")).expect("home dir");
        Kctl {
            bin: bin(),
            config_dir: dir.path().join("kctl"),
            dir,
            identity: None,
        }
    }

    /// The config directory (`--config-dir`).
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// Runs `kctl ARGS`; the output whatever the exit code.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config-dir").arg(&self.config_dir);
        if let Some(identity) = &self.identity {
            cmd.arg("--identity").arg(identity);
        }
        cmd.args(args)
            .env("HOME", self.dir.path().join("home"))
            .env("NO_COLOR", "1");
        for var in ["KCTL_CONFIG_DIR", "KCTL_IDENTITY", "XDG_CONFIG_HOME"] {
            cmd.env_remove(var);
        }
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()))
    }

    /// Runs and asserts exit code 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kctl {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and asserts a non-zero exit; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kctl {args:?} succeeded but should fail:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}
