//! The real `kagent` binary as a child process.
//!
//! Each [`Agent`] has its own temporary directory holding its config file, state dir, managed
//! root (`root/`), stdout/stderr logs and a notify socket: the harness binds a `UnixDatagram`
//! there and passes it as `NOTIFY_SOCKET`, as systemd does for `Type=notify`, so `start()`
//! returns once the agent sent `READY=1`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kctl::ca::BundlePaths;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::pki::Pki;

/// How long `start()` waits for `READY=1`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Options for an agent before it is first started.
pub struct AgentBuilder {
    server: BundlePaths,
    client_ca: PathBuf,
    env: Vec<(String, String)>,
    bin: Option<PathBuf>,
    netns: Option<String>,
    listen: Option<SocketAddr>,
    docker_host: Option<String>,
    tls_name: String,
}

impl AgentBuilder {
    pub fn new(pki: &Pki) -> AgentBuilder {
        AgentBuilder {
            server: pki.agent.clone(),
            client_ca: pki.ca_cert.clone(),
            env: Vec::new(),
            bin: None,
            netns: None,
            listen: None,
            docker_host: None,
            tls_name: "localhost".into(),
        }
    }

    /// Serve this certificate instead of the PKI's `localhost` one.
    pub fn server_cert(mut self, bundle: &BundlePaths) -> Self {
        self.server = bundle.clone();
        self
    }

    /// Trust this CA for client certificates instead of the PKI's.
    pub fn client_ca(mut self, ca_cert: &Path) -> Self {
        self.client_ca = ca_cert.to_path_buf();
        self
    }

    /// Extra environment for the agent process (e.g. `KAGENT_DEBUG_STEP_DELAY_MS`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Run this binary instead of [`crate::kagent_bin`] (the benchmark uses a release build).
    pub fn bin(mut self, bin: &Path) -> Self {
        self.bin = Some(bin.to_path_buf());
        self
    }

    /// Run the agent inside the network namespace `/var/run/netns/NAME` (through
    /// `nsenter --net=`, which execs the agent: the child's pid stays the agent's).
    pub fn netns(mut self, name: &str) -> Self {
        self.netns = Some(name.to_string());
        self
    }

    /// Listen on this address instead of a free port on 127.0.0.1.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// Write `docker_host` into the config (e.g. a simulated VM's own engine).
    pub fn docker_host(mut self, host: &str) -> Self {
        self.docker_host = Some(host.to_string());
        self
    }

    /// The name clients check the server certificate against (default `localhost`).
    pub fn tls_name(mut self, name: &str) -> Self {
        self.tls_name = name.to_string();
        self
    }

    /// Writes the config and binds the notify socket, without starting the process.
    pub fn build(self) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("kagent-it-")
            .tempdir()
            .expect("tempdir");
        // The managed root must not sit behind a symlink (e.g. a symlinked /tmp): canonicalize.
        let base = dir.path().canonicalize().expect("canonicalize tempdir");
        let state_dir = base.join("state");
        let root = base.join("root");
        std::fs::create_dir_all(&root).expect("create managed root");
        let notify_path = base.join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
        notify
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set read timeout");
        let bin = self.bin.unwrap_or_else(crate::kagent_bin);
        let agent = Agent {
            config: base.join("kagent.toml"),
            stderr_path: base.join("stderr.log"),
            stdout_path: base.join("stdout.log"),
            state_dir,
            root,
            addr: self
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], crate::free_port()))),
            server: self.server,
            client_ca: self.client_ca,
            env: self.env,
            bin,
            netns: self.netns,
            docker_host: self.docker_host,
            tls_name: self.tls_name,
            child: None,
            notify,
            notify_path,
            notifications: Vec::new(),
            stderr_offset: 0,
            dir,
        };
        agent.write_config(&agent.config_table());
        agent
    }

    /// Builds and starts the agent; panics (with its stderr) if it does not become ready.
    pub fn start(self) -> Agent {
        let mut a = self.build();
        a.start();
        a
    }
}

/// A kagent process and its files. Killed (SIGKILL) on drop.
pub struct Agent {
    pub config: PathBuf,
    pub state_dir: PathBuf,
    /// The managed root (the only one in the config).
    pub root: PathBuf,
    pub addr: SocketAddr,
    pub stderr_path: PathBuf,
    pub stdout_path: PathBuf,
    pub notify_path: PathBuf,
    server: BundlePaths,
    client_ca: PathBuf,
    env: Vec<(String, String)>,
    bin: PathBuf,
    /// Run inside this network namespace (`nsenter --net=/var/run/netns/NAME`).
    netns: Option<String>,
    docker_host: Option<String>,
    tls_name: String,
    child: Option<Child>,
    notify: UnixDatagram,
    /// Every notify message received so far (e.g. "READY=1", "STOPPING=1").
    notifications: Vec<String>,
    /// Where the current run's stderr starts in `stderr_path`.
    stderr_offset: u64,
    // Last: removed after everything above is dropped.
    dir: TempDir,
}

impl Agent {
    /// An agent with the PKI's `localhost` server certificate, started.
    pub fn start_new(pki: &Pki) -> Agent {
        AgentBuilder::new(pki).start()
    }

    pub fn builder(pki: &Pki) -> AgentBuilder {
        AgentBuilder::new(pki)
    }

    /// The temporary directory holding everything of this agent.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The name its server certificate is checked against by [`crate::grpc::client`].
    pub fn tls_name(&self) -> &str {
        &self.tls_name
    }

    /// The config the harness writes: listen, state_dir, managed_roots, tls (and
    /// `docker_host` when the builder set one).
    pub fn config_table(&self) -> toml::Table {
        let mut tls = toml::Table::new();
        tls.insert("cert".into(), path_value(&self.server.cert));
        tls.insert("key".into(), path_value(&self.server.key));
        tls.insert("client_ca".into(), path_value(&self.client_ca));
        let mut t = toml::Table::new();
        t.insert("listen".into(), toml::Value::String(self.addr.to_string()));
        t.insert("state_dir".into(), path_value(&self.state_dir));
        t.insert(
            "managed_roots".into(),
            toml::Value::Array(vec![path_value(&self.root)]),
        );
        t.insert("tls".into(), toml::Value::Table(tls));
        if let Some(host) = &self.docker_host {
            t.insert("docker_host".into(), toml::Value::String(host.clone()));
        }
        t
    }

    /// Writes `table` as the agent's config file (used on the next start).
    pub fn write_config(&self, table: &toml::Table) {
        let text = toml::to_string(table).expect("serialize config");
        self.write_config_text(&text);
    }

    pub fn write_config_text(&self, text: &str) {
        std::fs::write(&self.config, text).expect("write config");
    }

    /// Sets (or replaces) an environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.remove_env(key);
        self.env.push((key.to_string(), value.to_string()));
    }

    pub fn remove_env(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "agent already running");
        self.stderr_offset = std::fs::metadata(&self.stderr_path)
            .map(|m| m.len())
            .unwrap_or(0);
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .expect("open stderr log");
        let stdout = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stdout_path)
            .expect("open stdout log");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/var/run/netns/{ns}")).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.arg("--config").arg(&self.config);
        // The agent reads `KAGENT_*` as config overrides: never leak the harness' own
        // (KAGENT_BIN, KAGENT_PYTHON, ...) into it, only what the test asked for.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("KAGENT_") {
                cmd.env_remove(&k);
            }
        }
        cmd.env("NOTIFY_SOCKET", &self.notify_path);
        cmd.env("RUST_BACKTRACE", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", self.bin.display()));
        self.child = Some(child);
    }

    /// Starts the agent and waits for `READY=1`. Returns the time from spawn to READY.
    pub fn try_start(&mut self) -> Result<Duration, String> {
        // A free port can be taken by someone else between probing and binding: retry.
        for attempt in 0..3 {
            self.drain_notifications();
            let before = self.notifications.len();
            let t0 = Instant::now();
            self.spawn();
            let deadline = t0 + READY_TIMEOUT;
            loop {
                let got = self.recv_notifications_for(Duration::from_millis(20));
                if self.notifications[before..].iter().any(|m| m == "READY=1") {
                    return Ok(got.unwrap_or_else(Instant::now) - t0);
                }
                let exited = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                if let Some(status) = exited {
                    self.child = None;
                    let err = self.stderr();
                    if attempt < 2 && err.to_lowercase().contains("address already in use") {
                        self.addr.set_port(crate::free_port());
                        self.write_config(&self.config_table());
                        break;
                    }
                    return Err(format!(
                        "kagent exited with {status} before READY=1; stderr:\n{}",
                        tail(&err, 6000)
                    ));
                }
                if Instant::now() > deadline {
                    self.kill9();
                    return Err(format!(
                        "kagent sent no READY=1 within {READY_TIMEOUT:?} (notifications: {:?}); \
                         stderr:\n{}",
                        self.notifications,
                        tail(&self.stderr(), 6000)
                    ));
                }
            }
        }
        Err("could not find a free port".into())
    }

    /// Starts the agent and waits for `READY=1`; panics with its stderr otherwise.
    pub fn start(&mut self) -> Duration {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs the agent expecting it to exit by itself within `timeout` (e.g. a bad config).
    /// Returns its exit status and the stderr of that run. Panics if it sends READY=1 or keeps
    /// running.
    pub fn run_to_exit(&mut self, timeout: Duration) -> (ExitStatus, String) {
        self.drain_notifications();
        let before = self.notifications.len();
        self.spawn();
        let status = self.wait_exit(timeout);
        self.recv_notifications();
        let stderr = self.stderr();
        let Some(status) = status else {
            self.kill9();
            panic!(
                "kagent did not exit within {timeout:?}; stderr:\n{}",
                tail(&stderr, 4000)
            );
        };
        assert!(
            !self.notifications[before..].iter().any(|m| m == "READY=1"),
            "kagent reported READY=1 although it was expected to refuse to start; stderr:\n{}",
            tail(&stderr, 4000)
        );
        (status, stderr)
    }

    /// Waits up to `timeout` for the process to exit; `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit. `None` if it still runs (the
    /// process is left running for the caller to inspect; drop kills it).
    pub fn sigterm(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let pid = self.pid().expect("agent is not running");
        kill(Pid::from_raw(pid), Signal::SIGTERM).expect("send SIGTERM");
        let status = self.wait_exit(timeout);
        self.recv_notifications();
        status
    }

    /// Stops the agent (SIGTERM, then SIGKILL after 10 s) if it runs, and starts it again with
    /// the same config and state dir.
    pub fn restart(&mut self) -> Duration {
        self.stop();
        self.start()
    }

    /// SIGTERM and wait (SIGKILL after 10 s); no-op when not running.
    pub fn stop(&mut self) {
        if self.is_running() {
            if self.sigterm(Duration::from_secs(10)).is_none() {
                self.kill9();
            }
        } else {
            self.child = None;
        }
    }

    /// Waits up to `wait` for a first message, then takes whatever else is queued without
    /// waiting. Returns the instant the first message arrived.
    fn recv_notifications_for(&mut self, wait: Duration) -> Option<Instant> {
        let mut buf = vec![0u8; 4096];
        let mut first = None;
        let _ = self.notify.set_nonblocking(false);
        let _ = self
            .notify
            .set_read_timeout(Some(wait.max(Duration::from_micros(1))));
        while let Ok(n) = self.notify.recv(&mut buf) {
            first.get_or_insert_with(Instant::now);
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.notifications.extend(text.lines().map(str::to_string));
            let _ = self.notify.set_nonblocking(true);
        }
        let _ = self.notify.set_nonblocking(false);
        first
    }

    /// Takes the queued messages without waiting.
    fn recv_notifications(&mut self) {
        let _ = self.notify.set_nonblocking(true);
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = self.notify.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.notifications.extend(text.lines().map(str::to_string));
        }
        let _ = self.notify.set_nonblocking(false);
    }

    fn drain_notifications(&mut self) {
        self.recv_notifications();
    }

    /// Every notify message line received so far.
    pub fn notifications(&mut self) -> Vec<String> {
        self.recv_notifications();
        self.notifications.clone()
    }

    /// The stderr of the current (or last) run.
    pub fn stderr(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.stderr_path) {
            let _ = f.seek(SeekFrom::Start(self.stderr_offset));
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            s = String::from_utf8_lossy(&bytes).into_owned();
        }
        s
    }

    /// The stderr of every run so far.
    pub fn stderr_all(&self) -> String {
        std::fs::read(&self.stderr_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// `https://ADDR:PORT` (`127.0.0.1` unless the builder set `listen`)
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The journal files of the state dir.
    pub fn journal_files(&self) -> Vec<PathBuf> {
        crate::files_under(&self.state_dir.join("journal"))
    }

    pub fn audit_log(&self) -> PathBuf {
        self.state_dir.join("audit.log")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        if std::env::var_os("KAGENT_KEEP_TMP").is_some() {
            eprintln!("keeping {}", self.dir.path().display());
            let dir = std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().expect("tempdir for replacement"),
            );
            let _ = dir.keep();
        }
    }
}

fn path_value(p: &Path) -> toml::Value {
    toml::Value::String(p.to_string_lossy().into_owned())
}

/// The last `max` bytes of `s` (on a char boundary).
pub fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
