//! Files on the host, confined to the managed roots: path checks, reads, atomic writes.
//!
//! A spec may only name paths under a configured root, written without `..`, and reached
//! without crossing a symbolic link (a link inside a root could point anywhere, e.g. at
//! `/etc/shadow`). The check runs at validation, before any change, and again right before a
//! write. Writes go through a temporary file in the same directory, fsync, rename and an fsync of
//! the directory, so a reader sees the old content or the new one, never a mix.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Why a path is not acceptable. Every message says what to write instead.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("{0:?} is not an absolute path; write the full path, e.g. /srv/kctl/...")]
    NotAbsolute(String),
    #[error("{0:?} contains `..`; write the path without parent references")]
    ParentReference(String),
    #[error("{path:?} is outside the managed roots ({roots}); use a path under one of them")]
    OutsideRoots { path: String, roots: String },
    #[error("{path:?} is a managed root itself; name a file inside it")]
    IsRoot { path: String },
    #[error("{path:?} crosses the symbolic link {link:?}; managed paths may not go through links")]
    Symlink { path: String, link: String },
    #[error("{path:?}: {at:?} exists and is not a directory")]
    NotADirectory { path: String, at: String },
    #[error("{path:?} exists and is a directory, not a file")]
    IsADirectory { path: String },
    #[error("{path:?}: cannot inspect {at:?}: {error}")]
    Inspect {
        path: String,
        at: String,
        error: String,
    },
}

/// The directories the agent may manage, as configured.
#[derive(Debug, Clone)]
pub struct Roots {
    roots: Vec<PathBuf>,
}

/// A path checked to lie under a managed root. Only `Roots::check` makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedPath {
    root: PathBuf,
    path: PathBuf,
}

impl ManagedPath {
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl std::fmt::Display for ManagedPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.path.display().fmt(f)
    }
}

impl Roots {
    /// Roots are taken as configured; a root that is itself a symbolic link (say `/srv` ->
    /// `/data/srv`) is the administrator's choice and is resolved once here.
    pub fn new(roots: &[PathBuf]) -> Roots {
        let roots = roots
            .iter()
            .map(|r| std::fs::canonicalize(r).unwrap_or_else(|_| r.clone()));
        Roots {
            roots: roots.collect(),
        }
    }

    pub fn list(&self) -> String {
        let names: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
        names.join(", ")
    }

    /// Checks `raw` lexically, then walks the existing part of it on disk.
    pub fn check(&self, raw: &str) -> Result<ManagedPath, PathError> {
        let path = Path::new(raw);
        if !path.is_absolute() {
            return Err(PathError::NotAbsolute(raw.into()));
        }
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(PathError::ParentReference(raw.into()));
        }
        // `components()` drops `.` and repeated slashes: the normal form of the path.
        let normal: PathBuf = path.components().collect();
        let root = self
            .roots
            .iter()
            .find(|r| normal.starts_with(r))
            .ok_or_else(|| PathError::OutsideRoots {
                path: raw.into(),
                roots: self.list(),
            })?;
        if normal == *root {
            return Err(PathError::IsRoot { path: raw.into() });
        }
        let managed = ManagedPath {
            root: root.clone(),
            path: normal,
        };
        check_on_disk(&managed)?;
        Ok(managed)
    }
}

/// Every existing component below the root must be a real directory, and the target, if it
/// exists, a regular file (not a link, not a directory).
fn check_on_disk(p: &ManagedPath) -> Result<(), PathError> {
    let shown = p.path.display().to_string();
    let mut at = p.root.clone();
    let rest: Vec<Component> = match p.path.strip_prefix(&p.root) {
        Ok(rest) => rest.components().collect(),
        Err(_) => {
            return Err(PathError::OutsideRoots {
                path: shown,
                roots: String::new(),
            });
        }
    };
    for (i, c) in rest.iter().enumerate() {
        at.push(c);
        let last = i + 1 == rest.len();
        match std::fs::symlink_metadata(&at) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(PathError::Inspect {
                    path: shown,
                    at: at.display().to_string(),
                    error: e.to_string(),
                });
            }
            Ok(m) if m.file_type().is_symlink() => {
                return Err(PathError::Symlink {
                    path: shown,
                    link: at.display().to_string(),
                });
            }
            Ok(m) if last && m.is_dir() => return Err(PathError::IsADirectory { path: shown }),
            Ok(m) if !last && !m.is_dir() => {
                return Err(PathError::NotADirectory {
                    path: shown,
                    at: at.display().to_string(),
                });
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// What a regular file on disk is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    pub content: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Reads the file at a managed path; `None` when it does not exist.
pub fn read(p: &ManagedPath) -> std::io::Result<Option<FileState>> {
    // O_NOFOLLOW: a link swapped in after the check is refused rather than followed.
    let mut f = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&p.path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    let mut content = Vec::with_capacity(meta.len() as usize);
    f.read_to_end(&mut content)?;
    Ok(Some(FileState {
        content,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    }))
}

/// Ownership and permissions for a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perms {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// For parent directories that have to be created.
    pub dir_mode: u32,
}

/// Creates the missing directories between the root and the file's parent.
pub fn create_parents(p: &ManagedPath, perms: Perms) -> std::io::Result<()> {
    if !p.root.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&p.root)?;
    }
    let Some(parent) = p.path.parent() else {
        return Ok(());
    };
    let Ok(rest) = parent.strip_prefix(&p.root) else {
        return Ok(());
    };
    let mut at = p.root.clone();
    for c in rest.components() {
        at.push(c);
        match std::fs::DirBuilder::new().mode(perms.dir_mode).create(&at) {
            Ok(()) => {
                // mkdir applies the umask; set the mode asked for, then the owner.
                std::fs::set_permissions(&at, std::fs::Permissions::from_mode(perms.dir_mode))?;
                std::os::unix::fs::lchown(&at, Some(perms.uid), Some(perms.gid))?;
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// How a finished temporary file takes the target's place.
enum Publish {
    /// `rename`: replaces whatever is there, atomically.
    Replace,
    /// `link`: fails with `AlreadyExists` rather than replace anything.
    NoClobber,
}

/// Writes `content` to a new temporary file next to `target` (0600 from the first byte, then
/// the owner and mode asked for, fsynced), publishes it at `target`, and fsyncs the directory.
/// The temporary file never survives: on error it is removed, and after a link it is unlinked.
fn publish(
    target: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
    how: Publish,
) -> std::io::Result<()> {
    let dir = target.parent().unwrap_or(Path::new("/"));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.kagent-{:016x}", rand::random::<u64>()));
    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(content)?;
        f.sync_all()?;
        match how {
            Publish::Replace => std::fs::rename(&tmp, target),
            Publish::NoClobber => std::fs::hard_link(&tmp, target),
        }
    })();
    if result.is_err() || matches!(how, Publish::NoClobber) {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    File::open(dir)?.sync_all()
}

/// Replaces the file's content atomically, with the given owner and mode from the first byte
/// on (the temporary file is created 0600, chowned and chmodded before anything is written).
pub fn write_atomic(p: &ManagedPath, content: &[u8], perms: Perms) -> std::io::Result<()> {
    create_parents(p, perms)?;
    publish(
        &p.path,
        content,
        perms.mode,
        Some((perms.uid, perms.gid)),
        Publish::Replace,
    )
}

/// Creates the file with its content atomically, failing with `AlreadyExists` if the path
/// exists: the complete file appears at once (a hard link of a finished temporary file), and an
/// existing one is never replaced. Used for secrets, which must never be regenerated.
pub fn create_new_atomic(p: &ManagedPath, content: &[u8], perms: Perms) -> std::io::Result<()> {
    create_parents(p, perms)?;
    publish(
        &p.path,
        content,
        perms.mode,
        Some((perms.uid, perms.gid)),
        Publish::NoClobber,
    )
}

/// Writes one of the agent's own files (TLS material, enrollment state) atomically with
/// `mode`, creating missing parent directories 0700. These paths come from the agent's
/// configuration, never from a spec, so they are not confined to the managed roots.
pub fn write_private(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    publish(path, content, mode, None, Publish::Replace)
}

/// Changes owner and mode of an existing file in place (no content change).
pub fn set_perms(p: &ManagedPath, perms: Perms) -> std::io::Result<()> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&p.path)?;
    std::os::unix::fs::fchown(&f, Some(perms.uid), Some(perms.gid))?;
    f.set_permissions(std::fs::Permissions::from_mode(perms.mode))?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots(dir: &Path) -> Roots {
        Roots::new(&[dir.join("root")])
    }

    #[test]
    fn lexical_refusals() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let r = roots(dir.path());
        let root = dir.path().join("root").display().to_string();
        assert!(matches!(
            r.check("relative/x"),
            Err(PathError::NotAbsolute(_))
        ));
        assert!(matches!(
            r.check(&format!("{root}/../x")),
            Err(PathError::ParentReference(_))
        ));
        assert!(matches!(
            r.check("/etc/passwd"),
            Err(PathError::OutsideRoots { .. })
        ));
        assert!(matches!(
            r.check(&format!("{root}-other/x")),
            Err(PathError::OutsideRoots { .. })
        ));
        assert!(matches!(
            r.check(&format!("{root}/")),
            Err(PathError::IsRoot { .. })
        ));
        assert!(r.check(&format!("{root}/./a//b")).is_ok());
        Ok(())
    }

    #[test]
    fn symlinks_inside_a_root_are_refused() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let r = roots(dir.path());
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root)?;
        std::os::unix::fs::symlink("/etc", root.join("link"))?;
        std::os::unix::fs::symlink("/etc/hostname", root.join("file-link"))?;
        let err = r.check(&format!("{}/link/passwd", root.display()));
        assert!(matches!(err, Err(PathError::Symlink { .. })), "{err:?}");
        let err = r.check(&format!("{}/file-link", root.display()));
        assert!(matches!(err, Err(PathError::Symlink { .. })), "{err:?}");
        Ok(())
    }

    #[test]
    fn atomic_write_creates_parents_with_modes() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let r = roots(dir.path());
        let p = r.check(&format!("{}/root/a/b/f.txt", dir.path().display()))?;
        let perms = Perms {
            mode: 0o640,
            uid: 0,
            gid: 0,
            dir_mode: 0o750,
        };
        write_atomic(&p, b"one", perms)?;
        let state = read(&p)?.ok_or("missing")?;
        assert_eq!((state.content.as_slice(), state.mode), (&b"one"[..], 0o640));
        let dmode = std::fs::metadata(dir.path().join("root/a/b"))?.mode() & 0o777;
        assert_eq!(dmode, 0o750);
        write_atomic(&p, b"two", perms)?;
        assert_eq!(read(&p)?.ok_or("missing")?.content, b"two");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path().join("root/a/b"))?.count(), 1);
        Ok(())
    }
}
