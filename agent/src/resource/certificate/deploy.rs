//! Deploy targets: copies of the certificate, chain or key where consumers read them, with
//! the owner and mode they need (e.g. Keycloak's image runs as uid 1000: key 0600 owned by 1000).
//!
//! PEM by default; DER only on explicit request and only for one object (`cert` or `key`), since
//! a DER file holds a single certificate. A set of targets is written in two phases: every new
//! file is staged complete (temporary file in the target's directory, owner, mode, fsync), and
//! only then are they renamed into place, so a failure while staging leaves every old file as it
//! was.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use kagent_proto::v1::{CertificateContent, CertificateFormat};

use super::store::Material;
use crate::host::fs::{self, FileState, ManagedPath, Perms};

#[derive(Debug, Clone)]
pub struct Target {
    pub path: ManagedPath,
    pub content: CertificateContent,
    pub format: CertificateFormat,
    pub perms: Perms,
}

pub fn content_name(c: CertificateContent) -> &'static str {
    match c {
        CertificateContent::Fullchain | CertificateContent::Unspecified => "fullchain",
        CertificateContent::Cert => "cert",
        CertificateContent::Chain => "chain",
        CertificateContent::Key => "key",
    }
}

impl Target {
    pub fn is_key(&self) -> bool {
        self.content == CertificateContent::Key
    }

    /// The bytes this target should hold for `m`.
    pub fn render(&self, m: &Material) -> Result<Vec<u8>, String> {
        let pem = match self.content {
            CertificateContent::Fullchain | CertificateContent::Unspecified => m.fullchain_pem(),
            CertificateContent::Cert => m.cert_pem.clone(),
            CertificateContent::Chain => m.chain_pem.clone(),
            CertificateContent::Key => m.key_pem.clone(),
        };
        match self.format {
            CertificateFormat::Der => {
                let first = x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
                    .next()
                    .ok_or_else(|| format!("no PEM block to convert for {}", self.path))?
                    .map_err(|e| format!("bad PEM for {}: {e}", self.path))?;
                Ok(first.contents)
            }
            CertificateFormat::Pem | CertificateFormat::Unspecified => Ok(pem.into_bytes()),
        }
    }

    /// What differs between the file on disk and what it should be (no content shown: keys).
    pub fn diff(&self, want: &[u8], now: &Option<FileState>) -> Option<String> {
        let what = content_name(self.content);
        let Some(now) = now else {
            return Some(format!(
                "+ deploy {what} to {} (mode {:04o}, owner {}:{})",
                self.path, self.perms.mode, self.perms.uid, self.perms.gid
            ));
        };
        let mut changes = Vec::new();
        if now.content != want {
            changes.push(format!("{what} content"));
        }
        if now.mode != self.perms.mode {
            changes.push(format!("mode {:04o} -> {:04o}", now.mode, self.perms.mode));
        }
        if (now.uid, now.gid) != (self.perms.uid, self.perms.gid) {
            changes.push(format!(
                "owner {}:{} -> {}:{}",
                now.uid, now.gid, self.perms.uid, self.perms.gid
            ));
        }
        (!changes.is_empty()).then(|| format!("~ deploy {}: {}", self.path, changes.join(", ")))
    }
}

/// Writes every `(target, bytes)` as one set: stage all, then rename all.
pub fn write_set(files: &[(&Target, Vec<u8>)]) -> Result<(), String> {
    let mut staged: Vec<(PathBuf, &Target)> = Vec::new();
    let cleanup = |staged: &[(PathBuf, &Target)]| {
        for (tmp, _) in staged {
            let _ = std::fs::remove_file(tmp);
        }
    };
    for (t, bytes) in files {
        match stage(t, bytes) {
            Ok(tmp) => staged.push((tmp, t)),
            Err(e) => {
                cleanup(&staged);
                return Err(format!("cannot write {}: {e}", t.path));
            }
        }
    }
    for (i, (tmp, t)) in staged.iter().enumerate() {
        if let Err(e) = std::fs::rename(tmp, t.path.path()) {
            cleanup(&staged[i..]);
            return Err(format!("cannot replace {}: {e}", t.path));
        }
        if let Some(dir) = t.path.path().parent() {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
    }
    Ok(())
}

fn stage(t: &Target, bytes: &[u8]) -> std::io::Result<PathBuf> {
    // Re-checks the path (no symbolic link swapped in since validation) and makes parents.
    fs::create_parents(&t.path, t.perms)?;
    let dir = t.path.path().parent().unwrap_or(t.path.root());
    let name = t
        .path
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.kagent-{:016x}", rand::random::<u64>()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        std::os::unix::fs::fchown(&f, Some(t.perms.uid), Some(t.perms.gid))?;
        f.set_permissions(std::fs::Permissions::from_mode(t.perms.mode))?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}
