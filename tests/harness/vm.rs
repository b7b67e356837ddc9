//! Simulated VMs: a network namespace with its own address on a shared bridge, its own Docker
//! engine and its own `kagent`, so tests can run several "hosts" on one machine.
//!
//! - **Network**: namespace `kt-<pid>-<n>[-hint]`, a veth pair `ktv<X>` ↔ `eth0` on the bridge
//!   [`BRIDGE`] (10.231.0.1/24, made once and left in place), address 10.231.0.X, `lo` up,
//!   default route via the bridge. Docker's `br_netfilter` sends bridged frames through the root
//!   namespace's `FORWARD` chain (policy DROP), so one `ACCEPT` rule for bridge-to-bridge
//!   traffic is added next to the bridge. VMs reach each other and the root namespace reaches
//!   them (and back).
//! - **Engine**: `nsenter --net=/var/run/netns/NAME dockerd` (not `ip netns exec`, which
//!   remounts /sys and breaks dockerd) with its own socket, exec root and pid file under
//!   `/run/kagent-tests/NAME/`, data root under `/var/lib/kagent-tests/NAME/` (the file system
//!   of `/var/lib/docker`, where overlay2 is known to work), an empty `--config-file` (a host
//!   `daemon.json` must not leak in) and `--bip 10.232.X.1/24`: outside Docker's default pools
//!   (172.17-31/16, 192.168/16) of every engine, so it cannot collide with the main engine's
//!   networks or a private test engine's bridge. Containers publish on the VM's own address,
//!   so two VMs can both publish the same port. `local/busybox:test` is loaded into it.
//! - **Agent**: the real `kagent` inside the namespace, listening on 10.231.0.X:[`AGENT_PORT`],
//!   with a server certificate of the test PKI for `NAME.vm.test` and 10.231.0.X, and
//!   `docker_host` (and `DOCKER_HOST`, which Facts reads) pointed at the VM's engine. The
//!   harness clients (`admin(&pki, &vm.agent)`, ...) dial that address and check that name.
//!
//! Index X (hence address, veth, bip) is allocated under an exclusive `flock` on
//! `/run/kagent-tests/lock` by creating `/run/kagent-tests/alloc/X` (owner pid, its start time,
//! VM name), so parallel tests of one process and concurrent test processes never collide.
//! Each allocation first sweeps what dead owners left (a test process killed mid-test):
//! their agents, engines, containers, mounts, dirs, veths and namespaces.
//!
//! Dropping a [`Vm`] removes everything it made: the agent, the containers (`docker rm -f`),
//! dockerd (SIGTERM, then SIGKILL of whatever still runs in the namespace or in a container's
//! cgroup), mounts under its dirs, the dirs, the veth, the namespace and the allocation file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use kctl::ca::Validity;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::agent::{Agent, AgentBuilder};
use crate::pki::Pki;

/// The bridge every VM's veth is attached to.
pub const BRIDGE: &str = "ktbr0";
/// The bridge's address: the VMs' default gateway, and the root namespace's address on the
/// VM network.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 1);
/// Where each VM's agent listens (on the VM's own address).
pub const AGENT_PORT: u16 = 7443;
/// The VMs' DNS names are `NAME.vm.test` (in their certificates; no resolver knows them).
pub const DNS_SUFFIX: &str = "vm.test";
/// How long a VM's dockerd may take to answer.
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(60);

const RUN_BASE: &str = "/run/kagent-tests";
const DATA_BASE: &str = "/var/lib/kagent-tests";
const NETNS_DIR: &str = "/var/run/netns";
const FIRST_INDEX: u8 = 2;
const LAST_INDEX: u8 = 254;

/// A simulated VM: network namespace, Docker engine, kagent. Removed on drop.
pub struct Vm {
    /// The VM's agent (already started). Its endpoint is the VM's address; its TLS name the
    /// VM's DNS name.
    pub agent: Agent,
    // Last: torn down after the agent is gone.
    slot: Slot,
}

impl Vm {
    /// Creates the namespace, starts its dockerd (with `local/busybox:test` loaded) and its
    /// agent. `name_hint` (lowercased, letters, digits and `-`, at most 12) ends the VM's name,
    /// for logs; names stay unique without it. Panics with the engine's or agent's log when
    /// something does not come up; whatever was made by then is removed.
    pub fn start(pki: &Pki, name_hint: &str) -> Vm {
        crate::docker::require_docker();
        let image = crate::docker::busybox_image();
        let mut slot = Slot::allocate(name_hint);
        slot.create_network();
        hosts_add(&slot.name, slot.ip(), &slot.dns_name);
        slot.start_engine();
        slot.load_image(image);

        let ip = slot.ip();
        let bundle = pki
            .ca
            .issue_agent(&slot.dns_name, &[], &[IpAddr::V4(ip)], Validity::days(2))
            .expect("issue the VM's agent certificate");
        let server = bundle
            .write(&pki.path().join(format!("vm-{}", slot.name)), "agent")
            .expect("write the VM's agent certificate");
        let host = slot.docker_host();
        let agent = AgentBuilder::new(pki)
            .server_cert(&server)
            .netns(&slot.name)
            .listen(SocketAddr::new(IpAddr::V4(ip), AGENT_PORT))
            .docker_host(&host)
            .tls_name(&slot.dns_name)
            .env("DOCKER_HOST", &host)
            .start();
        Vm { agent, slot }
    }

    /// Starts one VM per hint, in parallel (each takes about 2 s, mostly dockerd's start).
    pub fn start_many(pki: &Pki, hints: &[&str]) -> Vec<Vm> {
        std::thread::scope(|s| {
            let handles: Vec<_> = hints
                .iter()
                .map(|hint| s.spawn(move || Vm::start(pki, hint)))
                .collect();
            // Join all before propagating a panic, so every started VM is dropped (cleaned up).
            let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
            let mut vms = Vec::new();
            let mut panic = None;
            for r in results {
                match r {
                    Ok(vm) => vms.push(vm),
                    Err(p) => panic = panic.or(Some(p)),
                }
            }
            if let Some(p) = panic {
                drop(vms);
                std::panic::resume_unwind(p);
            }
            vms
        })
    }

    /// The namespace's name, `kt-<pid>-<n>[-hint]`.
    pub fn name(&self) -> &str {
        &self.slot.name
    }

    /// `NAME.vm.test`: the name in the agent's certificate.
    pub fn dns_name(&self) -> &str {
        &self.slot.dns_name
    }

    /// 10.231.0.X
    pub fn ip(&self) -> Ipv4Addr {
        self.slot.ip()
    }

    /// X: the last byte of the address; also names the veth (`ktv<X>`) and the engine's bip.
    pub fn index(&self) -> u8 {
        self.slot.index
    }

    /// `/var/run/netns/NAME`
    pub fn netns_path(&self) -> PathBuf {
        netns_path(&self.slot.name)
    }

    /// `unix:///run/kagent-tests/NAME/docker.sock`: the VM's engine.
    pub fn docker_host(&self) -> String {
        self.slot.docker_host()
    }

    /// `docker -H <the VM's engine> ARGS`; the output whatever the exit code.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.slot.docker(args)
    }

    /// `docker -H <the VM's engine> ARGS`, panicking unless it succeeds; trimmed stdout.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} on {} failed: {}",
            self.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `docker save IMAGE` from the main engine into the VM's engine.
    pub fn load_image(&self, image: &str) {
        self.slot.load_image(image);
    }

    /// Runs `cmd` (argv) inside the VM's network namespace (`nsenter --net=`), e.g. curl.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        assert!(!cmd.is_empty(), "exec needs a command");
        Command::new("nsenter")
            .arg(format!("--net={}", self.netns_path().display()))
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run nsenter {cmd:?}: {e} (package util-linux)"))
    }

    /// The tail of the VM's dockerd log.
    pub fn engine_log(&self) -> String {
        self.slot.engine_log()
    }

    /// What this VM has on the machine now; [`Footprint::remaining`] after the drop shows
    /// what was left behind.
    pub fn footprint(&self) -> Footprint {
        let mut f = Footprint::of(&self.slot.name, self.slot.index);
        f.pids.extend(self.agent.pid().and_then(ProcId::of));
        f.pids.extend(
            self.slot
                .dockerd
                .as_ref()
                .and_then(|c| ProcId::of(c.id() as i32)),
        );
        f
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // The agent first (its Drop would too, but only after the engine is gone).
        self.agent.kill9();
    }
}

/// An allocated index and everything made for it; `Drop` tears it all down, also when
/// `Vm::start` panics halfway.
struct Slot {
    name: String,
    dns_name: String,
    index: u8,
    dockerd: Option<Child>,
}

impl Slot {
    /// Sweeps dead owners' leftovers and takes the lowest free index, under the lock.
    fn allocate(hint: &str) -> Slot {
        static N: AtomicU32 = AtomicU32::new(0);
        let hint: String = hint
            .to_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(12)
            .collect();
        let n = N.fetch_add(1, Ordering::SeqCst);
        let mut name = format!("kt-{}-{n}", std::process::id());
        if !hint.is_empty() {
            name = format!("{name}-{hint}");
        }
        let me = ProcId::of(std::process::id() as i32).expect("our own /proc/self/stat");

        let lock = lock();
        let swept = sweep_stale(&lock);
        if !swept.is_empty() {
            eprintln!("vm: swept leftovers of dead test processes: {swept:?}");
        }
        ensure_bridge();
        std::fs::create_dir_all(alloc_dir()).expect("create /run/kagent-tests/alloc");
        for index in FIRST_INDEX..=LAST_INDEX {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(alloc_dir().join(index.to_string()));
            let mut file = match file {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create an allocation file: {e}"),
            };
            writeln!(file, "{} {} {name}", me.pid, me.start).expect("write allocation file");
            drop(lock);
            return Slot {
                dns_name: format!("{name}.{DNS_SUFFIX}"),
                name,
                index,
                dockerd: None,
            };
        }
        panic!("no free VM index in {FIRST_INDEX}..={LAST_INDEX} (see {RUN_BASE}/alloc)");
    }

    fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, 0, self.index)
    }

    fn run_dir(&self) -> PathBuf {
        run_dir(&self.name)
    }

    fn docker_host(&self) -> String {
        format!("unix://{}/docker.sock", self.run_dir().display())
    }

    fn create_network(&self) {
        let ns = self.name.as_str();
        let veth = veth_name(self.index);
        let addr = format!("{}/24", self.ip());
        let gw = GATEWAY.to_string();
        // The VM's MAC follows from its index: a VM reusing an address of a VM dropped a moment
        // ago has the same MAC, so neighbour entries left in the root namespace and in other
        // VMs (STALE for tens of seconds) still reach it. Stale entries are flushed as well.
        let mac = format!("02:6b:74:00:00:{:02x}", self.index);
        ip(&["netns", "add", ns]);
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "address", &mac, "netns",
            ns,
        ]);
        let _ = Command::new("ip")
            .args(["neigh", "flush", "to", &self.ip().to_string()])
            .output();
        ip(&["link", "set", &veth, "master", BRIDGE, "up"]);
        ip(&["-n", ns, "addr", "add", &addr, "dev", "eth0"]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "route", "add", "default", "via", &gw]);
    }

    fn start_engine(&mut self) {
        let run = self.run_dir();
        let data = data_dir(&self.name);
        std::fs::create_dir_all(&run).expect("create the VM's run dir");
        std::fs::create_dir_all(&data).expect("create the VM's data dir");
        std::fs::write(run.join("daemon.json"), "{}\n").expect("write daemon.json");
        let log = File::create(run.join("dockerd.log")).expect("create dockerd.log");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns_path(&self.name).display()))
            .arg("dockerd")
            .arg("--config-file")
            .arg(run.join("daemon.json"))
            .arg("--host")
            .arg(self.docker_host())
            .arg("--data-root")
            .arg(data.join("docker"))
            .arg("--exec-root")
            .arg(run.join("exec"))
            .arg("--pidfile")
            .arg(run.join("docker.pid"))
            .arg("--bip")
            .arg(format!("10.232.{}.1/24", self.index))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup dockerd.log"))
            .stderr(log)
            .spawn()
            .expect("start dockerd (package docker.io)");
        self.dockerd = Some(child);
        let t0 = Instant::now();
        loop {
            let out = self.docker(&["version", "--format", "{{.Server.Version}}"]);
            if out.status.success() {
                break;
            }
            let exited = self
                .dockerd
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "dockerd of {} exited with {status}; its log:\n{}",
                    self.name,
                    self.engine_log()
                );
            }
            assert!(
                t0.elapsed() < ENGINE_TIMEOUT,
                "dockerd of {} does not answer within {ENGINE_TIMEOUT:?}: {}; its log:\n{}",
                self.name,
                String::from_utf8_lossy(&out.stderr),
                self.engine_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(self.docker_host())
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run docker {args:?}: {e} (package docker.io)"))
    }

    fn load_image(&self, image: &str) {
        let mut save = Command::new("docker")
            .args(["save", image])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run docker save");
        let load = Command::new("docker")
            .arg("-H")
            .arg(self.docker_host())
            .arg("load")
            .stdin(save.stdout.take().expect("docker save's stdout"))
            .output()
            .expect("run docker load");
        let save = save.wait_with_output().expect("wait for docker save");
        assert!(
            save.status.success() && load.status.success(),
            "docker save {image} | docker -H {} load: {}{}",
            self.docker_host(),
            String::from_utf8_lossy(&save.stderr),
            String::from_utf8_lossy(&load.stderr)
        );
    }

    fn engine_log(&self) -> String {
        let text = std::fs::read_to_string(self.run_dir().join("dockerd.log")).unwrap_or_default();
        crate::agent::tail(&text, 4000).to_string()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        teardown(&self.name, Some(self.index), self.dockerd.take());
        let _lock = lock();
        let _ = std::fs::remove_file(alloc_dir().join(self.index.to_string()));
    }
}

// ---------------------------------------------------------------------------------------------
// Allocation lock, stale sweep

/// The exclusive allocation lock (`flock` on `/run/kagent-tests/lock`), held while alive.
/// Threads of one process exclude each other too: each holder opens the file anew.
pub struct AllocLock(#[allow(dead_code)] Flock<File>);

/// Takes the allocation lock, waiting for other holders.
pub fn lock() -> AllocLock {
    std::fs::create_dir_all(RUN_BASE).expect("create /run/kagent-tests");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(Path::new(RUN_BASE).join("lock"))
        .expect("open /run/kagent-tests/lock");
    let locked = Flock::lock(file, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("flock /run/kagent-tests/lock: {e}"));
    AllocLock(locked)
}

/// Removes every VM whose owner (the test process that made it) is gone: allocation files of
/// dead owners, and namespaces, dirs and veths that no allocation file names. Returns the names
/// removed. Needs the lock, so that nothing is allocated meanwhile.
pub fn sweep_stale(_lock: &AllocLock) -> Vec<String> {
    let mut swept = Vec::new();
    let mut live_names = Vec::new();
    let mut live_indexes = Vec::new();
    for (index, path) in read_names(&alloc_dir())
        .into_iter()
        .filter_map(|f| Some((f.parse::<u8>().ok()?, alloc_dir().join(f))))
    {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut fields = text.split_whitespace();
        let owner = (|| {
            let pid = fields.next()?.parse().ok()?;
            let start = fields.next()?.parse().ok()?;
            Some((ProcId { pid, start }, fields.next()?.to_string()))
        })();
        match owner {
            Some((owner, name)) if owner.alive() => {
                live_names.push(name);
                live_indexes.push(index);
            }
            Some((_, name)) => {
                teardown(&name, Some(index), None);
                let _ = std::fs::remove_file(&path);
                swept.push(name);
            }
            None => {
                // Torn by a crash while being written: nothing was made for it yet.
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    let mut orphans: Vec<String> = [
        Path::new(NETNS_DIR),
        Path::new(RUN_BASE),
        Path::new(DATA_BASE),
    ]
    .iter()
    .flat_map(|d| read_names(d))
    .filter(|n| is_vm_name(n) && !live_names.contains(n))
    .collect();
    orphans.sort();
    orphans.dedup();
    for name in orphans {
        teardown(&name, None, None);
        swept.push(name);
    }
    for link in read_names(Path::new("/sys/class/net")) {
        let stale = link
            .strip_prefix("ktv")
            .and_then(|x| x.parse::<u8>().ok())
            .is_some_and(|x| !live_indexes.contains(&x));
        if stale {
            let _ = Command::new("ip").args(["link", "del", &link]).output();
            swept.push(link);
        }
    }
    swept
}

/// `kt-<pid>-<n>` or `kt-<pid>-<n>-<hint>`.
fn is_vm_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("kt-") else {
        return false;
    };
    let mut parts = rest.splitn(3, '-');
    let digits =
        |s: Option<&str>| s.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    digits(parts.next()) && digits(parts.next())
}

/// Creates the bridge with its address (once per machine) and the FORWARD rule that lets
/// bridged frames between VMs through Docker's `br_netfilter` + policy DROP. Under the lock.
fn ensure_bridge() {
    if !Path::new("/sys/class/net").join(BRIDGE).exists() {
        ip(&["link", "add", BRIDGE, "type", "bridge"]);
    }
    let addrs = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", BRIDGE])
        .output()
        .expect("run ip (package iproute2)");
    let cidr = format!("{GATEWAY}/24");
    if !String::from_utf8_lossy(&addrs.stdout).contains(&format!(" {cidr} ")) {
        ip(&["addr", "add", &cidr, "dev", BRIDGE]);
    }
    ip(&["link", "set", BRIDGE, "up"]);
    let rule = ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"];
    let present = Command::new("iptables")
        .arg("-C")
        .args(rule)
        .output()
        .expect("run iptables (package iptables)");
    if !present.status.success() {
        let out = Command::new("iptables")
            .args(["-I", "FORWARD", "1"])
            .args(&rule[1..])
            .output()
            .expect("run iptables (package iptables)");
        assert!(
            out.status.success(),
            "iptables -I FORWARD 1 -i {BRIDGE} -o {BRIDGE} -j ACCEPT: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Teardown

/// Removes everything of VM `name`, whoever made it: containers while its engine answers,
/// dockerd (SIGTERM, 15 s), then SIGKILL of every process left in its namespace (agent,
/// containerd, shims, docker-proxy) or in one of its containers' cgroups, mounts under its
/// dirs, the dirs, the veth (when the index is known) and the namespace. Never panics (it runs
/// while unwinding).
fn teardown(name: &str, index: Option<u8>, mut dockerd: Option<Child>) {
    hosts_remove(name);
    let run = run_dir(name);
    let data = data_dir(name);
    let host = format!("unix://{}/docker.sock", run.display());
    let ns_ino = netns_inode(name);

    // 1. Containers, through the engine, while it answers.
    if run.join("docker.sock").exists() {
        let ids = timeout_cmd(5, &["docker", "-H", &host, "ps", "-aq"]);
        let ids: Vec<String> = ids
            .filter(|o| o.status.success())
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if !ids.is_empty() {
            let mut argv = vec!["docker", "-H", &host, "rm", "-f"];
            argv.extend(ids.iter().map(String::as_str));
            let _ = timeout_cmd(30, &argv);
        }
    }

    // 2. dockerd: ours (the child), or the one the pid file names if it lives in the namespace.
    let engine = match &dockerd {
        Some(c) => ProcId::of(c.id() as i32),
        None => std::fs::read_to_string(run.join("docker.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .filter(|pid| ns_ino.is_some_and(|ino| in_netns(*pid, ino)))
            .and_then(ProcId::of),
    };
    if let Some(engine) = engine {
        let _ = kill(Pid::from_raw(engine.pid), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let gone = match dockerd.as_mut() {
                Some(c) => c.try_wait().ok().flatten().is_some(),
                None => !engine.alive(),
            };
            if gone {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // 3. Whatever still runs.
    let ids = container_ids(name);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_of(ns_ino, &ids);
        if left.is_empty() || Instant::now() > deadline {
            break;
        }
        for p in left {
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
        }
        if let Some(c) = dockerd.as_mut() {
            let _ = c.try_wait();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(mut c) = dockerd.take() {
        let _ = c.kill();
        let _ = c.wait();
    }

    // 4. Mounts (overlay2 layers, the data root's bind mount, container netns files), dirs.
    for _ in 0..5 {
        let mounts = mounts_under(&[&run, &data]);
        if mounts.is_empty() {
            break;
        }
        for m in mounts {
            let _ = Command::new("umount").arg("-l").arg(&m).output();
        }
    }
    let _ = std::fs::remove_dir_all(&run);
    let _ = std::fs::remove_dir_all(&data);

    // 5. The veth (deleting one end deletes the pair, at once, unlike a namespace's devices),
    //    then the namespace.
    if let Some(index) = index {
        let _ = Command::new("ip")
            .args(["link", "del", &veth_name(index)])
            .output();
    }
    if netns_path(name).exists() {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
    }
}

/// Runs argv under `timeout -k 5 SECS`; `None` if it could not be started.
fn timeout_cmd(secs: u32, argv: &[&str]) -> Option<Output> {
    Command::new("timeout")
        .args(["-k", "5", &secs.to_string()])
        .args(argv)
        .stdin(Stdio::null())
        .output()
        .ok()
}

// ---------------------------------------------------------------------------------------------
// What a VM leaves on the machine

/// A process, identified across pid reuse by its start time (`/proc/PID/stat` field 22).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcId {
    pub pid: i32,
    pub start: u64,
}

impl ProcId {
    /// The running (not zombie) process `pid`, if any.
    pub fn of(pid: i32) -> Option<ProcId> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            return None;
        }
        Some(ProcId {
            pid,
            start: fields.get(19)?.parse().ok()?,
        })
    }

    /// Still the same process, and not a zombie.
    pub fn alive(&self) -> bool {
        ProcId::of(self.pid) == Some(*self)
    }
}

/// What VM `name` (index X) has on the machine: namespace, veth, dirs, allocation file,
/// mounts, processes in its namespace or its containers' cgroups, plus the given processes.
/// Taken while the VM exists (the namespace's inode and the container ids are read then).
#[derive(Debug)]
pub struct Footprint {
    pub name: String,
    pub index: u8,
    /// Processes that must be gone afterwards (the agent and dockerd, when known).
    pub pids: Vec<ProcId>,
    netns_ino: Option<u64>,
    container_ids: Vec<String>,
}

impl Footprint {
    pub fn of(name: &str, index: u8) -> Footprint {
        Footprint {
            name: name.to_string(),
            index,
            pids: Vec::new(),
            netns_ino: netns_inode(name),
            container_ids: container_ids(name),
        }
    }

    /// The containers of its engine at the time.
    pub fn container_ids(&self) -> &[String] {
        &self.container_ids
    }

    /// What is still there, one line each; empty when the VM left nothing behind.
    pub fn remaining(&self) -> Vec<String> {
        let mut left = Vec::new();
        let netns = netns_path(&self.name);
        if netns.exists() {
            left.push(format!("namespace {}", netns.display()));
        }
        let listed = Command::new("ip").args(["netns", "list"]).output();
        if listed.is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.split_whitespace().next() == Some(self.name.as_str()))
        }) {
            left.push(format!("`ip netns list` shows {}", self.name));
        }
        let veth = veth_name(self.index);
        if Path::new("/sys/class/net").join(&veth).exists() {
            left.push(format!("veth {veth}"));
        }
        for dir in [run_dir(&self.name), data_dir(&self.name)] {
            if dir.exists() {
                left.push(format!("dir {}", dir.display()));
            }
        }
        let alloc = alloc_dir().join(self.index.to_string());
        if std::fs::read_to_string(&alloc)
            .is_ok_and(|t| t.split_whitespace().nth(2) == Some(self.name.as_str()))
        {
            left.push(format!("allocation {}", alloc.display()));
        }
        for m in mounts_under(&[&run_dir(&self.name), &data_dir(&self.name)]) {
            left.push(format!("mount {}", m.display()));
        }
        let marker = hosts_marker(&self.name);
        if let Some(line) = std::fs::read_to_string("/etc/hosts")
            .unwrap_or_default()
            .lines()
            .find(|l| l.ends_with(&marker))
        {
            left.push(format!("/etc/hosts line {line:?}"));
        }
        for p in processes_of(self.netns_ino, &self.container_ids) {
            left.push(format!("process {} ({})", p.pid, cmdline(p.pid)));
        }
        for p in self.pids.iter().filter(|p| p.alive()) {
            let line = format!("process {} ({})", p.pid, cmdline(p.pid));
            if !left.contains(&line) {
                left.push(line);
            }
        }
        left
    }
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// Processes in the network namespace with inode `ns_ino`, or in the cgroup of one of
/// `container_ids` (a container has its own namespace; a SIGKILLed shim leaves it running).
fn processes_of(ns_ino: Option<u64>, container_ids: &[String]) -> Vec<ProcId> {
    let me = std::process::id() as i32;
    read_names(Path::new("/proc"))
        .into_iter()
        .filter_map(|n| n.parse::<i32>().ok())
        .filter(|pid| *pid != me && *pid != 1)
        .filter(|pid| {
            ns_ino.is_some_and(|ino| in_netns(*pid, ino))
                || (!container_ids.is_empty()
                    && std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|cg| {
                        cg.lines()
                            .any(|l| container_ids.iter().any(|id| l.contains(id.as_str())))
                    }))
        })
        .filter_map(ProcId::of)
        .collect()
}

fn in_netns(pid: i32, ino: u64) -> bool {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .is_ok_and(|l| l.to_string_lossy() == format!("net:[{ino}]"))
}

/// The inode of the namespace mounted at `/var/run/netns/NAME` (what `/proc/PID/ns/net` shows).
fn netns_inode(name: &str) -> Option<u64> {
    let meta = std::fs::metadata(netns_path(name)).ok()?;
    // An unmounted leftover file is a plain empty file, not a namespace.
    (meta.dev() != std::fs::metadata(NETNS_DIR).ok()?.dev()).then(|| meta.ino())
}

/// Ids of the containers the VM's engine knows (its data root's `containers/` dir).
fn container_ids(name: &str) -> Vec<String> {
    read_names(&data_dir(name).join("docker/containers"))
        .into_iter()
        .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect()
}

/// Mount points at or under any of `dirs`, deepest first.
fn mounts_under(dirs: &[&Path]) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .map(PathBuf::from)
        .filter(|m| dirs.iter().any(|d| m.starts_with(d)))
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    out.dedup();
    out
}

fn read_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn alloc_dir() -> PathBuf {
    Path::new(RUN_BASE).join("alloc")
}

fn run_dir(name: &str) -> PathBuf {
    Path::new(RUN_BASE).join(name)
}

fn data_dir(name: &str) -> PathBuf {
    Path::new(DATA_BASE).join(name)
}

fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

fn veth_name(index: u8) -> String {
    format!("ktv{index}")
}

/// Runs `ip ARGS`, panicking with its stderr unless it succeeds.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (package iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Name resolution

/// The marker that ends a VM's line in /etc/hosts.
fn hosts_marker(name: &str) -> String {
    format!("# kagent-tests {name}")
}

/// Runs `edit` on /etc/hosts under its own lock, writing in place (the file may be a bind
/// mount, which a rename would not replace).
fn edit_hosts(edit: impl FnOnce(&str) -> String) {
    std::fs::create_dir_all(RUN_BASE).expect("create /run/kagent-tests");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(Path::new(RUN_BASE).join("hosts.lock"))
        .expect("open the /etc/hosts lock");
    let _guard = Flock::lock(lock, FlockArg::LockExclusive).expect("lock /etc/hosts edits");
    let before = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let after = edit(&before);
    if after != before {
        std::fs::write("/etc/hosts", after).expect("write /etc/hosts");
    }
}

/// Makes the VM's DNS name resolve to its address, for every VM and the root namespace (they
/// share the file system): the simulation of the install's DNS. Removed by `teardown`.
fn hosts_add(name: &str, ip: Ipv4Addr, dns_name: &str) {
    let marker = hosts_marker(name);
    edit_hosts(|text| {
        let mut out: String = text
            .lines()
            .filter(|l| !l.ends_with(&marker))
            .map(|l| format!("{l}\n"))
            .collect();
        out.push_str(&format!("{ip} {dns_name} {marker}\n"));
        out
    });
}

fn hosts_remove(name: &str) {
    let marker = hosts_marker(name);
    edit_hosts(|text| {
        if !text.lines().any(|l| l.ends_with(&marker)) {
            return text.to_string();
        }
        text.lines()
            .filter(|l| !l.ends_with(&marker))
            .map(|l| format!("{l}\n"))
            .collect()
    });
}
