//! A pristine Debian bookworm root (debootstrap `--variant=minbase` from Debian's mirror), built
//! once per machine (about 30 s) under `target/testroots/bookworm` and shared: the package suite
//! copies it for real apt installs, [`crate::images`] builds glibc images on it. A file lock
//! makes concurrent builders wait for the first.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};

/// `target/testroots`, created if missing.
pub fn testroots() -> PathBuf {
    let dir = crate::workspace_root().join("target/testroots");
    std::fs::create_dir_all(&dir).expect("create target/testroots");
    dir.canonicalize().expect("canonicalize target/testroots")
}

/// Runs `cmd`, panicking with its output unless it succeeds; returns stdout.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pristine bookworm root. Never modify it: copy it ([`copy_root`]).
pub fn bookworm() -> PathBuf {
    let root = testroots().join("bookworm");
    let ready =
        |r: &Path| r.join("etc/os-release").exists() && r.join("var/lib/dpkg/status").exists();
    if ready(&root) {
        return root;
    }
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(testroots().join(".bookworm.lock"))
        .expect("open the bookworm lock");
    let _guard = Flock::lock(lock, FlockArg::LockExclusive).expect("lock the bookworm root");
    if ready(&root) {
        return root;
    }
    assert!(
        Path::new("/usr/sbin/debootstrap").exists(),
        "debootstrap is missing: apt-get install debootstrap (tests/run installs it)"
    );
    let sources =
        std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let mirror = sources
        .lines()
        .find_map(|l| l.strip_prefix("URIs:"))
        .map(|m| m.trim().to_string())
        .unwrap_or_else(|| "http://deb.debian.org/debian".into());
    let partial = testroots().join("bookworm.partial");
    let _ = std::fs::remove_dir_all(&partial);
    let started = std::time::Instant::now();
    sh(Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&partial)
        .arg(&mirror));
    eprintln!("debootstrap bookworm: {:?}", started.elapsed());
    std::fs::rename(&partial, &root).expect("publish the bookworm root");
    root
}

/// A throwaway copy of a pristine root, next to it (same file system, fast copy).
pub fn copy_root(pristine: &Path) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(testroots())
        .expect("tempdir in target/testroots");
    sh(Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(format!("{}/.", pristine.display()))
        .arg(dir.path()));
    dir
}
