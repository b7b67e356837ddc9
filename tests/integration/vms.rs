//! Simulated VMs (`kagent_tests::vm`): network namespaces on one bridge, each with its own
//! dockerd and its own kagent. Two VMs answer over mTLS at their own addresses and names, both
//! publish the same port with their own content and reach each other; dropping a VM leaves
//! nothing behind, and neither does a test process killed mid-test once the next one sweeps.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kagent_proto::v1::{self, FactsRequest, OperationState};
use kagent_tests::docker::*;
use kagent_tests::vm::{self, AGENT_PORT, Footprint, ProcId};
use kagent_tests::*;

/// Starts VMs from inside a tokio test (blocking, on this worker).
fn start_vms(pki: &Pki, hints: &[&str]) -> Vec<Vm> {
    let t0 = Instant::now();
    let vms = tokio::task::block_in_place(|| Vm::start_many(pki, hints));
    eprintln!("{} VMs up in {:?}", vms.len(), t0.elapsed());
    vms
}

/// A TCP connect from inside `from`'s namespace (bash's /dev/tcp; `ping` is not installed).
fn connects_from(from: &Vm, ip: IpAddr, port: u16) -> bool {
    from.exec(&[
        "timeout",
        "5",
        "bash",
        "-c",
        "exec 3<>/dev/tcp/$0/$1",
        &ip.to_string(),
        &port.to_string(),
    ])
    .status
    .success()
}

/// `GET /` over HTTP/1.0 from the root namespace.
fn http_get_at(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_vms_answer_over_mtls_at_their_own_address_and_name() {
    let pki = Pki::new();
    let vms = start_vms(&pki, &["facts-a", "facts-b"]);
    let (a, b) = (&vms[0], &vms[1]);
    assert_ne!(a.ip(), b.ip());
    assert_ne!(a.name(), b.name());

    for vm in [a, b] {
        let ip = IpAddr::V4(vm.ip());
        assert_eq!(vm.agent.addr, SocketAddr::new(ip, AGENT_PORT));
        // The agent runs inside the VM's namespace (the address exists only there).
        let ns = std::fs::metadata(vm.netns_path()).expect("netns").ino();
        let pid = vm.agent.pid().expect("agent runs");
        assert_eq!(
            std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .expect("agent's netns")
                .to_string_lossy(),
            format!("net:[{ns}]"),
            "{}'s agent is in its namespace",
            vm.name()
        );
        // Facts over mTLS from the root namespace, checking the DNS name, then the IP SAN.
        let facts = facts_with(&pki.ca_cert, Some(&pki.admin), vm.agent.addr, vm.dns_name())
            .await
            .unwrap_or_else(|e| panic!("Facts of {} by name: {e}", vm.name()));
        let docker = facts.docker.unwrap_or_default();
        assert!(
            docker.running && !docker.version.is_empty(),
            "{}'s agent sees its engine: {docker:?}",
            vm.name()
        );
        facts_with(
            &pki.ca_cert,
            Some(&pki.admin),
            vm.agent.addr,
            &ip.to_string(),
        )
        .await
        .unwrap_or_else(|e| panic!("Facts of {} by IP: {e}", vm.name()));
        // The harness' own clients dial the VM's address and name.
        let mut client = admin(&pki, &vm.agent).await;
        let reply = client.facts(FactsRequest {}).await.expect("Facts");
        assert_eq!(reply.into_inner().api_version, "kagent.v1");
        // Its engine is its own.
        let root = vm.docker_ok(&["info", "--format", "{{.DockerRootDir}}"]);
        assert!(root.contains(vm.name()), "{}: {root}", vm.name());
    }

    // Each certificate names its own VM only; no client certificate, no answer.
    let wrong = facts_with(&pki.ca_cert, Some(&pki.admin), a.agent.addr, b.dns_name()).await;
    assert!(wrong.is_err(), "A's certificate must not pass for B's name");
    let anon = facts_with(&pki.ca_cert, None, a.agent.addr, a.dns_name()).await;
    assert!(anon.is_err(), "no client certificate must be refused");

    // VM to VM over the bridge, both ways; a port nobody listens on is refused.
    let (ip_a, ip_b) = (IpAddr::V4(a.ip()), IpAddr::V4(b.ip()));
    assert!(connects_from(b, ip_a, AGENT_PORT), "B reaches A's agent");
    assert!(connects_from(a, ip_b, AGENT_PORT), "A reaches B's agent");
    assert!(
        !connects_from(b, ip_a, AGENT_PORT + 1),
        "nothing listens on A:{}",
        AGENT_PORT + 1
    );
    // The VM reaches the root namespace through the bridge too.
    let probe = std::net::TcpListener::bind((vm::GATEWAY, 0)).expect("bind on the bridge");
    let port = probe.local_addr().expect("addr").port();
    assert!(
        connects_from(a, IpAddr::V4(vm::GATEWAY), port),
        "A reaches the root namespace"
    );
}

/// busybox httpd on 8080 of `vm`'s own address, serving `served by NAME`, healthy when served.
fn web_spec(vm: &Vm) -> v1::HostSpec {
    let ip = vm.ip().to_string();
    let mut c = sh_container(
        "web",
        &format!(
            "mkdir -p /tmp/www && echo 'served by {}' > /tmp/www/index.html && \
             exec httpd -f -p 80 -h /tmp/www",
            vm.name()
        ),
    );
    c.ports = vec![v1::PortBinding {
        host_ip: ip.clone(),
        host_port: 8080,
        container_port: 80,
        protocol: String::new(),
    }];
    c.health = Some(v1::HealthCheck {
        http: format!("http://{ip}:8080/"),
        interval_ms: 200,
        timeout_s: 30,
        ..Default::default()
    });
    host_spec(vec![container_res("kt-vm-web", c)])
}

#[tokio::test(flavor = "multi_thread")]
async fn two_vms_publish_the_same_port_and_each_serves_its_own_content() {
    let pki = Pki::new();
    let vms = start_vms(&pki, &["web-a", "web-b"]);
    let (a, b) = (&vms[0], &vms[1]);
    let (mut ca, mut cb) = (admin(&pki, &a.agent).await, admin(&pki, &b.agent).await);

    // The same container name and host port on both, applied through each agent's Apply.
    let t0 = Instant::now();
    let (ea, eb) = tokio::join!(
        apply_events(&mut ca, web_spec(a)),
        apply_events(&mut cb, web_spec(b))
    );
    eprintln!("both applies in {:?}", t0.elapsed());
    for (vm, events) in [(a, &ea), (b, &eb)] {
        let f = finished(events);
        assert_eq!(
            state(&f),
            OperationState::Succeeded,
            "apply on {}: {} {:?}\nengine log: {}",
            vm.name(),
            f.error,
            failed(events),
            vm.engine_log()
        );
        assert_eq!(
            vm.docker_ok(&[
                "inspect",
                "-f",
                "{{(index (index .HostConfig.PortBindings \"80/tcp\") 0).HostIp}}",
                "kt-vm-web"
            ]),
            vm.ip().to_string(),
            "published on {}'s own address",
            vm.name()
        );
    }
    assert_ne!(
        a.docker_ok(&["inspect", "-f", "{{.Id}}", "kt-vm-web"]),
        b.docker_ok(&["inspect", "-f", "{{.Id}}", "kt-vm-web"]),
        "two engines, two containers"
    );
    assert!(
        !docker(&["inspect", "kt-vm-web"]).status.success(),
        "the main engine has no such container"
    );

    // From each VM, the other's port serves the other's content (and its own its own).
    let curl = |from: &Vm, to: &Vm| {
        let url = format!("http://{}:8080/", to.ip());
        let out = from.exec(&["curl", "-sS", "-m", "5", &url]);
        assert!(
            out.status.success(),
            "curl {url} from {}: {}",
            from.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(curl(b, a), format!("served by {}", a.name()));
    assert_eq!(curl(a, b), format!("served by {}", b.name()));
    assert_eq!(curl(b, b), format!("served by {}", b.name()));
    // And from the root namespace.
    for vm in [a, b] {
        let page = http_get_at(SocketAddr::new(IpAddr::V4(vm.ip()), 8080)).unwrap_or_default();
        assert!(
            page.contains(&format!("served by {}", vm.name())),
            "{}: {page:?}",
            vm.name()
        );
    }

    // A re-apply on A changes nothing.
    let again = apply_events(&mut ca, web_spec(a)).await;
    assert!(
        planned_actions(&again)
            .iter()
            .all(|(_, act)| *act == v1::Action::Unchanged),
        "{:?}",
        planned_actions(&again)
    );
    drop((ca, cb));
    tokio::task::block_in_place(|| drop(vms));
}

#[test]
fn dropping_a_vm_removes_everything_it_made() {
    let pki = Pki::new();
    let t0 = Instant::now();
    let vm = Vm::start(&pki, "drop");
    eprintln!("VM up in {:?}", t0.elapsed());
    vm.docker_ok(&[
        "run",
        "-d",
        "--name",
        "kt-vm-sleeper",
        busybox_image(),
        "sleep",
        "600",
    ]);
    let fp = vm.footprint();
    let before = fp.remaining();
    for what in [
        "namespace ",
        "veth ktv",
        "dir ",
        "allocation ",
        "mount ",
        "/etc/hosts line",
    ] {
        assert!(
            before.iter().any(|l| l.starts_with(what)),
            "the footprint sees {what:?}: {before:#?}"
        );
    }
    assert_eq!(fp.container_ids().len(), 1, "{before:#?}");
    for what in ["dockerd", "kagent", "sleep 600"] {
        assert!(
            before.iter().any(|l| l.contains(what)),
            "the footprint sees {what:?}: {before:#?}"
        );
    }
    let (name, ip) = (vm.name().to_string(), vm.ip());
    // Its DNS name resolves to its address, as the install's DNS would.
    let resolved: Vec<std::net::SocketAddr> =
        std::net::ToSocketAddrs::to_socket_addrs(&(vm.dns_name(), 443))
            .expect("the VM's name resolves")
            .collect();
    assert!(
        resolved.iter().any(|a| a.ip() == std::net::IpAddr::V4(ip)),
        "{resolved:?}"
    );
    let dns_name = vm.dns_name().to_string();

    let t0 = Instant::now();
    drop(vm);
    eprintln!("VM dropped in {:?}", t0.elapsed());
    let after = fp.remaining();
    assert!(after.is_empty(), "{name} left behind: {after:#?}");
    assert!(
        std::net::ToSocketAddrs::to_socket_addrs(&(dns_name.as_str(), 443)).is_err(),
        "{dns_name} still resolves"
    );
    let net = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    assert!(!String::from_utf8_lossy(&net.stdout).contains(&name));
    // Its address is free again: nothing answers there.
    assert!(
        TcpStream::connect_timeout(
            &SocketAddr::new(IpAddr::V4(ip), AGENT_PORT),
            Duration::from_millis(500)
        )
        .is_err()
    );
}

/// Not a test: the child process of
/// [`a_killed_test_process_leaves_nothing_once_the_next_one_sweeps`]. Starts a VM with a
/// running container, reports it on stdout and waits to be killed.
#[test]
#[ignore = "helper process of the sweep test"]
fn crash_helper() {
    if std::env::var_os("KAGENT_VM_CRASH_HELPER").is_none() {
        return;
    }
    let pki = Pki::new();
    let vm = Vm::start(&pki, "crashed");
    vm.docker_ok(&[
        "run",
        "-d",
        "--name",
        "kt-vm-orphan",
        busybox_image(),
        "sleep",
        "600",
    ]);
    println!(
        "KT-VM-READY {} {} {} {} {}",
        vm.name(),
        vm.index(),
        vm.agent.pid().expect("agent runs"),
        vm.agent.dir().display(),
        pki.path().display()
    );
    std::io::stdout().flush().expect("flush");
    std::thread::sleep(Duration::from_secs(300));
    panic!("the parent test should have killed this process");
}

/// A test process SIGKILLed mid-test (and its VM's dockerd with it: containerd, the shims,
/// the container, docker-proxy and the agent live on, mounts stay) leaves its VM behind; the
/// next allocation's sweep removes all of it, because the owner's pid is gone.
#[test]
fn a_killed_test_process_leaves_nothing_once_the_next_one_sweeps() {
    // This very binary, also when a concurrent build replaced the file meanwhile.
    let mut helper = Command::new("/proc/self/exe")
        .args([
            "vms::crash_helper",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("KAGENT_VM_CRASH_HELPER", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the helper");
    let stdout = helper.stdout.take().expect("helper stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest's "test vms::crash_helper ... " may start the line.
            if let Some((_, rest)) = line.split_once("KT-VM-READY ") {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(90));
    let Ok(ready) = ready else {
        let _ = helper.kill();
        let _ = helper.wait();
        panic!("the helper did not report its VM within 90 s");
    };
    let f: Vec<&str> = ready.split_whitespace().collect();
    // Whatever happens below: the helper is dead and its temp dirs (agent, PKI; outside the
    // VM's) are removed. A VM left by a failure here is swept by the next allocation.
    let _helper = HelperGuard {
        child: helper,
        dirs: f[3..].iter().map(|d| d.to_string()).collect(),
    };
    let (name, index) = (f[0], f[1].parse::<u8>().expect("index"));
    let agent_pid: i32 = f[2].parse().expect("agent pid");
    let dockerd_pid: i32 = std::fs::read_to_string(format!("/run/kagent-tests/{name}/docker.pid"))
        .expect("the helper's dockerd pid file")
        .trim()
        .parse()
        .expect("pid");

    // Hold the allocation lock from before the crash, so no other test's sweep runs first.
    let lock = vm::lock();
    let mut fp = Footprint::of(name, index);
    fp.pids.extend(ProcId::of(agent_pid));
    fp.pids.extend(ProcId::of(dockerd_pid));
    assert_eq!(fp.pids.len(), 2, "agent and dockerd run: {fp:?}");
    let mut helper = _helper;
    helper.kill();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dockerd_pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let dockerd = fp.pids[1];
    assert!(
        wait_until(Duration::from_secs(5), || !dockerd.alive()),
        "dockerd dies"
    );
    let left = fp.remaining();
    for what in ["namespace ", "veth ", "allocation ", "mount ", "dir "] {
        assert!(
            left.iter().any(|l| l.starts_with(what)),
            "the crash left {what:?} behind: {left:#?}"
        );
    }
    for what in ["kagent", "sleep 600"] {
        assert!(
            left.iter().any(|l| l.contains(what)),
            "the crash left {what:?} running: {left:#?}"
        );
    }

    let t0 = Instant::now();
    let swept = vm::sweep_stale(&lock);
    drop(lock);
    eprintln!("sweep took {:?}: {swept:?}", t0.elapsed());
    assert!(swept.iter().any(|s| s == name), "{swept:?}");
    let after = fp.remaining();
    assert!(after.is_empty(), "the sweep left: {after:#?}");
}

/// Kills the helper process and removes its temp dirs when dropped.
struct HelperGuard {
    child: std::process::Child,
    dirs: Vec<String>,
}

impl HelperGuard {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HelperGuard {
    fn drop(&mut self) {
        self.kill();
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
