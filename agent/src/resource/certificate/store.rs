//! The agent's own copy of each certificate, in the state dir:
//!
//! ```text
//! STATE/certs/<name>/current -> <serial>/          (symlink, swapped atomically)
//! STATE/certs/<name>/<serial>/{cert.pem, chain.pem, fullchain.pem, key.pem (0600), meta.json}
//! STATE/certs/<name>/spec.pb                        (the last applied resource, for renewals)
//! STATE/certs/<name>/pending.json (0600)            (an ACME order in flight, with its key)
//! STATE/certs/<name>/renewal.json                   (failures, last error, ARI window)
//! STATE/acme/accounts/<sha256(directory URL)>.json  (0600, account credentials)
//! ```
//!
//! A new certificate is written complete into its own directory (fsynced) before `current`
//! moves to it, so a reader sees the old set or the new one, never a mix; the previous set is
//! kept until the next one replaces it.

use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::scheduler::renewal::Window;

/// A certificate with its key and chain, PEM.
#[derive(Clone)]
pub struct Material {
    pub cert_pem: String,
    /// Intermediates, leaf excluded; may be empty (self-signed).
    pub chain_pem: String,
    pub key_pem: String,
}

impl Material {
    pub fn fullchain_pem(&self) -> String {
        let mut s = self.cert_pem.clone();
        if !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str(&self.chain_pem);
        s
    }
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Material { <redacted> }")
    }
}

/// What the agent records next to a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Lower-case hex of the serial number.
    pub serial: String,
    pub domains: Vec<String>,
    /// Which issuer made it, as `Issuer::id` says (e.g. `acme https://.../dir`).
    pub issuer: String,
    pub key_type: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub issued_at: i64,
}

/// Renewal bookkeeping, kept across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewal {
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub last_failure: i64,
    #[serde(default)]
    pub last_error: String,
    /// The CA's suggested window (RFC 9773) for the current serial, when it offers one.
    #[serde(default)]
    pub ari: Option<Window>,
    #[serde(default)]
    pub ari_serial: String,
    /// When the ARI window may be fetched again (the CA's Retry-After).
    #[serde(default)]
    pub ari_next_check: i64,
}

/// An ACME order in flight: enough to resume it after a crash instead of ordering again.
#[derive(Clone, Serialize, Deserialize)]
pub struct Pending {
    pub directory_url: String,
    pub order_url: String,
    pub domains: Vec<String>,
    /// The key the CSR is (or will be) made from.
    pub key_pem: String,
    pub created: i64,
}

/// Paths of one certificate's state.
#[derive(Debug, Clone)]
pub struct CertDir {
    pub dir: PathBuf,
}

impl CertDir {
    pub fn new(state_dir: &Path, name: &str) -> CertDir {
        CertDir {
            dir: state_dir.join("certs").join(name),
        }
    }
    pub fn current(&self) -> PathBuf {
        self.dir.join("current")
    }
    pub fn spec(&self) -> PathBuf {
        self.dir.join("spec.pb")
    }
    pub fn pending(&self) -> PathBuf {
        self.dir.join("pending.json")
    }
    pub fn renewal(&self) -> PathBuf {
        self.dir.join("renewal.json")
    }

    /// The current set, if any: material and metadata.
    pub fn load(&self) -> std::io::Result<Option<(Material, Meta)>> {
        let cur = self.current();
        let meta = match std::fs::read(cur.join("meta.json")) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta: Meta = serde_json::from_slice(&meta).map_err(std::io::Error::other)?;
        let read = |f: &str| std::fs::read_to_string(cur.join(f));
        let material = Material {
            cert_pem: read("cert.pem")?,
            chain_pem: read("chain.pem")?,
            key_pem: read("key.pem")?,
        };
        Ok(Some((material, meta)))
    }

    /// Writes a new set in its own directory, then points `current` at it.
    pub fn commit(&self, material: &Material, meta: &Meta) -> std::io::Result<()> {
        mkdir_private(&self.dir)?;
        let version = format!("{}-{:08x}", meta.serial, rand::random::<u32>());
        let vdir = self.dir.join(&version);
        mkdir_private(&vdir)?;
        write_file(&vdir.join("cert.pem"), material.cert_pem.as_bytes(), 0o644)?;
        write_file(
            &vdir.join("chain.pem"),
            material.chain_pem.as_bytes(),
            0o644,
        )?;
        write_file(
            &vdir.join("fullchain.pem"),
            material.fullchain_pem().as_bytes(),
            0o644,
        )?;
        write_file(&vdir.join("key.pem"), material.key_pem.as_bytes(), 0o600)?;
        let meta_json = serde_json::to_vec_pretty(meta).map_err(std::io::Error::other)?;
        write_file(&vdir.join("meta.json"), &meta_json, 0o644)?;
        std::fs::File::open(&vdir)?.sync_all()?;
        let previous = std::fs::read_link(self.current()).ok();
        let tmp = self
            .dir
            .join(format!(".current-{:08x}", rand::random::<u32>()));
        std::os::unix::fs::symlink(&version, &tmp)?;
        std::fs::rename(&tmp, self.current())?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        // Keep the previous set (the one just replaced), drop older ones.
        let keep: Vec<PathBuf> = [Some(PathBuf::from(&version)), previous]
            .into_iter()
            .flatten()
            .collect();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = PathBuf::from(e.file_name());
                let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
                if is_dir && !keep.contains(&name) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(())
    }

    pub fn load_renewal(&self) -> Renewal {
        std::fs::read(self.renewal())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save_renewal(&self, r: &Renewal) -> std::io::Result<()> {
        mkdir_private(&self.dir)?;
        let json = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
        replace_file(&self.renewal(), &json, 0o644)
    }

    pub fn load_pending(&self) -> Option<Pending> {
        std::fs::read(self.pending())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    pub fn save_pending(&self, p: &Pending) -> std::io::Result<()> {
        mkdir_private(&self.dir)?;
        let json = serde_json::to_vec(p).map_err(std::io::Error::other)?;
        replace_file(&self.pending(), &json, 0o600)
    }

    pub fn clear_pending(&self) -> std::io::Result<()> {
        match std::fs::remove_file(self.pending()) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub fn load_spec(&self) -> Option<Vec<u8>> {
        std::fs::read(self.spec()).ok()
    }

    /// Where a retired certificate's definition is kept.
    pub fn retired_spec(&self) -> PathBuf {
        self.dir.join("retired.pb")
    }

    /// Managed again (an apply names it): the definition is current, a retired one is gone.
    pub fn save_spec(&self, bytes: &[u8]) -> std::io::Result<()> {
        mkdir_private(&self.dir)?;
        replace_file(&self.spec(), bytes, 0o600)?;
        match std::fs::remove_file(self.retired_spec()) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Stops managing it: the definition moves aside in one rename (so [`managed_names`] no
    /// longer lists it) and the certificate set stays. `None` when it was not managed; else
    /// the definition.
    pub fn retire(&self) -> std::io::Result<Option<Vec<u8>>> {
        let Some(bytes) = self.load_spec() else {
            return Ok(None);
        };
        std::fs::rename(self.spec(), self.retired_spec())?;
        Ok(Some(bytes))
    }
}

/// The names of every certificate with a stored spec, sorted.
pub fn managed_names(state_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(state_dir.join("certs")) {
        for e in entries.flatten() {
            if e.path().join("spec.pb").is_file() {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// Where the account for `directory_url` is kept.
pub fn account_path(state_dir: &Path, directory_url: &str) -> PathBuf {
    let digest = hex::encode(Sha256::digest(directory_url.as_bytes()));
    state_dir
        .join("acme")
        .join("accounts")
        .join(format!("{digest}.json"))
}

pub fn load_account(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn save_account(path: &Path, json: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        mkdir_private(parent)?;
    }
    replace_file(path, json, 0o600)
}

fn mkdir_private(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates `path` with `mode` from the first byte on, fsynced.
fn write_file(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(content)?;
    f.sync_all()
}

/// Replaces `path` atomically (temporary file, fsync, rename, fsync of the directory).
fn replace_file(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(".tmp-{:016x}", rand::random::<u64>()));
    let result = write_file(&tmp, content, mode).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn material(tag: &str) -> Material {
        Material {
            cert_pem: format!("cert {tag}\n"),
            chain_pem: format!("chain {tag}\n"),
            key_pem: format!("key {tag}\n"),
        }
    }

    fn meta(serial: &str) -> Meta {
        Meta {
            serial: serial.into(),
            domains: vec!["a.test".into()],
            issuer: "self_signed".into(),
            key_type: "ecdsa-p256".into(),
            not_before: 0,
            not_after: 10,
            issued_at: 0,
        }
    }

    #[test]
    fn commits_swap_whole_sets_and_keep_one_previous() -> std::io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let d = CertDir::new(tmp.path(), "web");
        assert!(d.load()?.is_none());
        for serial in ["01", "02", "03"] {
            d.commit(&material(serial), &meta(serial))?;
            let (m, meta) = d.load()?.ok_or_else(|| std::io::Error::other("missing"))?;
            assert_eq!(meta.serial, serial);
            assert_eq!(
                m.fullchain_pem(),
                format!("cert {serial}\nchain {serial}\n")
            );
        }
        let key_mode = std::fs::metadata(d.current().join("key.pem"))?.mode() & 0o777;
        assert_eq!(key_mode, 0o600);
        // current + the previous set: two version directories.
        let dirs = std::fs::read_dir(&d.dir)?
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .count();
        assert_eq!(dirs, 2);
        Ok(())
    }

    #[test]
    fn accounts_are_private_and_per_directory() -> std::io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let a = account_path(tmp.path(), "https://a/dir");
        assert_ne!(a, account_path(tmp.path(), "https://b/dir"));
        save_account(&a, b"{}")?;
        assert_eq!(std::fs::metadata(&a)?.mode() & 0o777, 0o600);
        assert_eq!(load_account(&a)?, Some(b"{}".to_vec()));
        Ok(())
    }
}
