//! The Docker engine for container tests: the dockerd that `tests/run` starts (the agent's
//! default `unix:///var/run/docker.sock`), a locally built image, spec builders, and a guard
//! that removes everything a test made.
//!
//! No registry is reachable on these machines: [`busybox_image`] builds `local/busybox:test`
//! from Debian's busybox-static (a rootfs of `/bin/busybox` plus one symlink per applet,
//! `docker import`ed), once per machine: a `flock` makes concurrent builders wait for the first.
//!
//! Every test names its objects with its own [`Names`] prefix and holds a [`Cleanup`], so tests
//! run in parallel and leave nothing behind, also when they fail.

use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kagent_proto::v1::{self, resource::Kind};

pub const BUSYBOX_IMAGE: &str = "local/busybox:test";
const BUSYBOX_BIN: &str = "/bin/busybox";
const LOCK: &str = "/tmp/kagent-tests-busybox-image.lock";

/// Runs `docker ARGS`; the output whatever the exit code.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run docker {args:?}: {e} (package docker.io)"))
}

/// Runs `docker ARGS`, panicking with its stderr unless it succeeds; returns trimmed stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Panics with a clear message when dockerd does not answer (tests/run starts it).
pub fn require_docker() {
    let out = docker(&["info", "--format", "{{.ServerVersion}}"]);
    assert!(
        out.status.success(),
        "dockerd does not answer on the default socket (tests/run starts it: `setsid dockerd &`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `local/busybox:test`, built on first use (idempotent, safe across processes).
pub fn busybox_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        require_docker();
        if docker(&["image", "inspect", BUSYBOX_IMAGE])
            .status
            .success()
        {
            return;
        }
        assert!(
            std::path::Path::new(BUSYBOX_BIN).is_file(),
            "{BUSYBOX_BIN} is missing (Debian package busybox-static; tests/run installs it)"
        );
        // The rootfs: bin/busybox and a symlink per applet, tarred straight into `docker import`.
        let script = format!(
            r#"set -e
docker image inspect {img} >/dev/null 2>&1 && exit 0
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/www" "$root/data" "$root/etc"
cp {bb} "$root/bin/busybox"
for a in $("$root/bin/busybox" --list); do
  [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"
done
echo 'root:x:0:0:root:/:/bin/sh' > "$root/etc/passwd"
echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >> "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
echo 'hello from busybox' > "$root/www/index.html"
tar -C "$root" -c . | docker import --change 'ENV PATH=/bin' - {img} >/dev/null
"#,
            img = BUSYBOX_IMAGE,
            bb = BUSYBOX_BIN
        );
        let out = Command::new("flock")
            .args([LOCK, "sh", "-c", &script])
            .output()
            .expect("run flock (util-linux)");
        assert!(
            out.status.success(),
            "building {BUSYBOX_IMAGE} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    BUSYBOX_IMAGE
}

/// Unique, valid names for one test's containers, networks and volumes.
#[derive(Clone)]
pub struct Names {
    pub prefix: String,
}

impl Names {
    /// `kt-<topic>-<8 hex>-`: topic short and lowercase.
    pub fn new(topic: &str) -> Names {
        Names {
            prefix: format!("kt-{topic}-{:08x}-", rand_u32()),
        }
    }

    pub fn name(&self, what: &str) -> String {
        format!("{}{what}", self.prefix)
    }

    /// A guard that removes everything with this prefix when dropped.
    pub fn cleanup(&self) -> Cleanup {
        Cleanup {
            prefix: self.prefix.clone(),
        }
    }
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    nanos ^ (std::process::id() << 16) ^ n.wrapping_mul(0x9e37_79b9)
}

/// Removes the containers, networks and volumes whose names start with `prefix`.
pub struct Cleanup {
    prefix: String,
}

impl Cleanup {
    pub fn run(&self) {
        let filter = format!("name=^/?{}", self.prefix);
        let ids = docker(&["ps", "-aq", "--filter", &filter]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = docker(&["rm", "-f", id]);
        }
        let nets = docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name={}", self.prefix),
        ]);
        for id in String::from_utf8_lossy(&nets.stdout).split_whitespace() {
            let _ = docker(&["network", "rm", id]);
        }
        let vols = docker(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("name={}", self.prefix),
        ]);
        for name in String::from_utf8_lossy(&vols.stdout).split_whitespace() {
            if name.starts_with(&self.prefix) {
                let _ = docker(&["volume", "rm", "-f", name]);
            }
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.run();
    }
}

/// `docker inspect -f FORMAT NAME`, trimmed; `None` when there is no such object.
pub fn inspect(name: &str, format: &str) -> Option<String> {
    let out = docker(&["inspect", "-f", format, name]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn container_id(name: &str) -> Option<String> {
    inspect(name, "{{.Id}}")
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `GET /` over HTTP/1.0 to 127.0.0.1:`port`; the response, or `None`.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    (!out.is_empty()).then_some(out)
}

// ---------------------------------------------------------------------------------------------
// Spec builders

pub fn container_res(name: &str, c: v1::Container) -> v1::Resource {
    v1::Resource {
        name: name.to_string(),
        kind: Some(Kind::Container(c)),
    }
}

pub fn network_res(name: &str, stack: &str) -> v1::Resource {
    v1::Resource {
        name: name.to_string(),
        kind: Some(Kind::Network(v1::Network {
            stack: stack.to_string(),
            ..Default::default()
        })),
    }
}

pub fn volume_res(name: &str, stack: &str) -> v1::Resource {
    v1::Resource {
        name: name.to_string(),
        kind: Some(Kind::Volume(v1::Volume {
            stack: stack.to_string(),
            ..Default::default()
        })),
    }
}

pub fn stack_res(name: &str, prune: bool, purge_volumes: &[&str]) -> v1::Resource {
    v1::Resource {
        name: name.to_string(),
        kind: Some(Kind::Stack(v1::Stack {
            prune,
            purge_volumes: purge_volumes.iter().map(|s| s.to_string()).collect(),
        })),
    }
}

/// A busybox container running `sh -c SCRIPT` in `stack`.
pub fn sh_container(stack: &str, script: &str) -> v1::Container {
    v1::Container {
        image: busybox_image().to_string(),
        command: vec!["sh".into(), "-c".into(), script.to_string()],
        stack: stack.to_string(),
        stop_timeout_s: 2,
        ..Default::default()
    }
}

pub fn env(name: &str, value: &str) -> v1::EnvVar {
    v1::EnvVar {
        name: name.into(),
        value: value.into(),
    }
}

pub fn port(host_port: u16, container_port: u16) -> v1::PortBinding {
    v1::PortBinding {
        host_ip: "127.0.0.1".into(),
        host_port: u32::from(host_port),
        container_port: u32::from(container_port),
        protocol: String::new(),
    }
}

pub fn mount(source: v1::mount::Source, target: &str) -> v1::Mount {
    v1::Mount {
        source: Some(source),
        target: target.into(),
        read_only: false,
    }
}

pub const OPENSSL_IMAGE: &str = "local/openssl:test";
const OPENSSL_LOCK: &str = "/tmp/kagent-tests-openssl-image.lock";

/// `local/openssl:test` (entrypoint `openssl`, for `openssl s_server`): the host's
/// `/usr/bin/openssl` and the libraries `ldd` lists, built on first use like [`busybox_image`].
pub fn openssl_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        require_docker();
        if docker(&["image", "inspect", OPENSSL_IMAGE])
            .status
            .success()
        {
            return;
        }
        let script = format!(
            r#"set -e
docker image inspect {img} >/dev/null 2>&1 && exit 0
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
for f in /usr/bin/openssl $(ldd /usr/bin/openssl | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$f")"
  cp -L "$f" "$root$f"
done
mkdir -p "$root/tmp" "$root/usr/lib/ssl"
[ -f /usr/lib/ssl/openssl.cnf ] && cp -L /usr/lib/ssl/openssl.cnf "$root/usr/lib/ssl/"
tar -C "$root" -c . | docker import --change 'ENTRYPOINT ["/usr/bin/openssl"]' - {img} >/dev/null
"#,
            img = OPENSSL_IMAGE
        );
        let out = Command::new("flock")
            .args([OPENSSL_LOCK, "sh", "-c", &script])
            .output()
            .expect("run flock (util-linux)");
        assert!(
            out.status.success(),
            "building {OPENSSL_IMAGE} failed (needs /usr/bin/openssl, package openssl): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    OPENSSL_IMAGE
}
