//! The system a resource manages: the host itself (`/`) or a root directory holding another
//! system (a debootstrapped Debian, a dnf `--installroot`), so the same resource code runs on
//! a VM and in a throwaway root in tests.
//!
//! Files are read relative to the root. Tools are pointed at the root the way each one
//! supports: `chroot ROOT apt-get`, `dpkg-query --admindir`, `dnf --installroot`,
//! `rpm --root`, `usermod -R`, `useradd -R`, `gpasswd -Q`. On the host (`/`) the commands are
//! exactly what an administrator would type.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::cmd::{Cmd, Runner};
use super::fs::{self, Perms, Roots};

#[derive(Debug, Clone)]
pub struct Target {
    root: PathBuf,
    runner: Runner,
}

impl Target {
    /// The machine the agent runs on.
    pub fn host() -> Target {
        Target::at("/")
    }

    /// A system installed under `root`.
    pub fn at(root: impl Into<PathBuf>) -> Target {
        Target {
            root: root.into(),
            runner: Runner::new(),
        }
    }

    pub fn is_host(&self) -> bool {
        self.root == Path::new("/")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// `path` (absolute, as seen inside the target) as seen from the agent.
    pub fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// The text of a file of the target; `None` when it does not exist.
    pub fn read(&self, path: &str) -> std::io::Result<Option<String>> {
        match std::fs::read(self.path(path)) {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn exists(&self, path: &str) -> bool {
        self.path(path).exists()
    }

    /// Writes a file of the target atomically (see `host::fs::write_atomic`), refusing to go
    /// through a symbolic link below `dir`. For fixed, well-known paths a resource owns
    /// (`/etc/docker/daemon.json`), never for paths taken from a spec.
    pub fn write(&self, dir: &str, name: &str, content: &[u8], mode: u32) -> std::io::Result<()> {
        let roots = Roots::new(&[self.path(dir)]);
        let full = self.path(dir).join(name);
        let managed = roots
            .check(&full.to_string_lossy())
            .map_err(|e| std::io::Error::new(ErrorKind::InvalidInput, e.to_string()))?;
        let perms = Perms {
            mode,
            uid: 0,
            gid: 0,
            dir_mode: 0o755,
        };
        fs::write_atomic(&managed, content, perms)
    }

    /// `apt-get`, inside the target through `chroot` when it is not the host.
    pub fn apt_get(&self) -> Cmd {
        self.inside("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("HOME", "/root")
    }

    /// `dpkg-query` on the target's dpkg database (the host's `dpkg-query` reads it).
    pub fn dpkg_query(&self) -> Cmd {
        let c = Cmd::new("dpkg-query");
        if self.is_host() {
            c
        } else {
            c.arg(format!(
                "--admindir={}",
                self.path("/var/lib/dpkg").display()
            ))
        }
    }

    /// `dnf` acting on the target: `--installroot` with the target's release and repositories.
    pub fn dnf(&self, releasever: &str) -> Cmd {
        let c = Cmd::new("dnf");
        if self.is_host() {
            c
        } else {
            c.args([
                format!("--installroot={}", self.root.display()),
                format!("--releasever={releasever}"),
                format!(
                    "--setopt=reposdir={}",
                    self.path("/etc/yum.repos.d").display()
                ),
            ])
        }
    }

    /// `rpm` on the target's database.
    pub fn rpm(&self) -> Cmd {
        self.with_root_flag("rpm", "--root")
    }

    pub fn usermod(&self) -> Cmd {
        self.with_root_flag("usermod", "--root")
    }

    pub fn useradd(&self) -> Cmd {
        self.with_root_flag("useradd", "--root")
    }

    pub fn gpasswd(&self) -> Cmd {
        self.with_root_flag("gpasswd", "-Q")
    }

    /// A program of the target itself, run with `chroot` when the target is not the host.
    pub fn inside(&self, program: &str) -> Cmd {
        if self.is_host() {
            Cmd::new(program)
        } else {
            Cmd::new("chroot").args([self.root.display().to_string(), program.to_string()])
        }
    }

    fn with_root_flag(&self, program: &str, flag: &str) -> Cmd {
        let c = Cmd::new(program);
        if self.is_host() {
            c
        } else {
            c.args([flag.to_string(), self.root.display().to_string()])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_commands_are_plain_and_root_commands_are_pointed_at_the_root() {
        let h = Target::host();
        assert_eq!(h.apt_get().arg("update").to_string(), "apt-get update");
        assert_eq!(h.dnf("9").arg("install").to_string(), "dnf install");
        assert_eq!(h.path("/etc/os-release"), Path::new("/etc/os-release"));
        let t = Target::at("/tmp/r");
        assert_eq!(
            t.apt_get().arg("update").to_string(),
            "chroot /tmp/r apt-get update"
        );
        assert_eq!(
            t.dnf("9").arg("install").to_string(),
            "dnf --installroot=/tmp/r --releasever=9 --setopt=reposdir=/tmp/r/etc/yum.repos.d install"
        );
        assert_eq!(t.rpm().to_string(), "rpm --root /tmp/r");
        assert_eq!(t.usermod().to_string(), "usermod --root /tmp/r");
        assert_eq!(t.gpasswd().to_string(), "gpasswd -Q /tmp/r");
        assert_eq!(
            t.dpkg_query().to_string(),
            "dpkg-query --admindir=/tmp/r/var/lib/dpkg"
        );
        assert_eq!(t.path("/etc/group"), Path::new("/tmp/r/etc/group"));
    }

    #[test]
    fn writes_relative_to_the_root_and_refuses_links() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let t = Target::at(dir.path());
        t.write("/etc/docker", "daemon.json", b"{}\n", 0o644)?;
        assert_eq!(t.read("/etc/docker/daemon.json")?.as_deref(), Some("{}\n"));
        assert_eq!(t.read("/etc/nothing")?, None);
        std::os::unix::fs::symlink("/etc/passwd", t.path("/etc/docker/link.json"))?;
        assert!(t.write("/etc/docker", "link.json", b"x", 0o644).is_err());
        Ok(())
    }
}
