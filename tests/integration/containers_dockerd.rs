//! dockerd restarted during an apply: the test's own private dockerd (its own socket, data and
//! exec roots, a bridge of its own, no iptables), an agent pointed at it with `docker_host`,
//! an apply slowed down with `KAGENT_DEBUG_STEP_DELAY_MS`, dockerd killed (SIGKILL) mid-apply
//! and started again. The operation ends cleanly (failed naming Docker, or succeeded), the
//! agent stays up, and the next apply converges. The guard removes dockerd, its containers,
//! processes, mounts, dirs and bridge, also when the test fails.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use kagent_proto::v1::OperationState;
use kagent_tests::docker::*;
use kagent_tests::*;

/// A dockerd of the test's own, in the host network namespace.
struct PrivateDockerd {
    name: String,
    run: PathBuf,
    lib: PathBuf,
    child: Option<Child>,
}

impl PrivateDockerd {
    fn start() -> PrivateDockerd {
        let name = Names::new("x").prefix[5..13].to_string();
        let name = format!("ktdr-{name}");
        let d = PrivateDockerd {
            run: PathBuf::from(format!("/run/{name}")),
            lib: PathBuf::from(format!("/var/lib/{name}")),
            name,
            child: None,
        };
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // The guard exists before anything is made, so a failure below still cleans up.
        let mut d = d;
        ip(&["link", "add", &d.name, "type", "bridge"]);
        ip(&["addr", "add", "172.31.228.1/24", "dev", &d.name]);
        ip(&["link", "set", &d.name, "up"]);
        std::fs::create_dir_all(&d.run).expect("mkdir run dir");
        std::fs::create_dir_all(&d.lib).expect("mkdir data dir");
        d.spawn();
        d
    }

    fn host(&self) -> String {
        format!("unix://{}/docker.sock", self.run.display())
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.run.join("dockerd.log"))
            .expect("open dockerd log");
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(self.host())
            .arg("--data-root")
            .arg(self.lib.join("docker"))
            .arg("--exec-root")
            .arg(self.run.join("exec"))
            .arg("--pidfile")
            .arg(self.run.join("docker.pid"))
            .args(["--bridge", &self.name])
            .args(["--iptables=false", "--ip-forward=false"])
            // vfs: no overlay mounts to leave behind.
            .args(["--storage-driver", "vfs"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start dockerd (package docker.io)");
        self.child = Some(child);
        assert!(
            wait_until(Duration::from_secs(30), || self
                .docker(&["info"])
                .status
                .success()),
            "private dockerd does not answer: {}",
            self.log()
        );
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(self.host())
            .args(args)
            .output()
            .expect("run docker")
    }

    fn inspect(&self, name: &str, format: &str) -> Option<String> {
        let out = self.docker(&["inspect", "-f", format, name]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.run.join("dockerd.log")).unwrap_or_default();
        let skip = text.chars().count().saturating_sub(3000);
        text.chars().skip(skip).collect()
    }

    /// SIGKILL, as a crash would: containerd and the shims stay.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait, SIGKILL after 20 s.
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let exited = wait_until(Duration::from_secs(20), || {
            c.try_wait().ok().flatten().is_some()
        });
        if !exited {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// PIDs of processes whose command line names this engine's run dir (containerd, shims).
    fn leftovers(&self) -> Vec<i32> {
        let needle = format!("{}/", self.run.display());
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                    .is_ok_and(|c| c.contains(&needle))
            })
            .collect()
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.docker(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.docker(&["rm", "-f", id]);
            }
        }
        self.stop();
        for pid in self.leftovers() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = wait_until(Duration::from_secs(5), || self.leftovers().is_empty());
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        for m in mounts.lines().filter_map(|l| l.split(' ').nth(1)).rev() {
            if m.starts_with(&format!("{}/", self.run.display()))
                || m.starts_with(&format!("{}/", self.lib.display()))
            {
                let _ = Command::new("umount").args(["-l", m]).output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.run);
        let _ = std::fs::remove_dir_all(&self.lib);
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dockerd_restarted_during_an_apply_fails_cleanly_and_the_next_apply_converges() {
    require_docker();
    let image = busybox_image();
    let mut engine = PrivateDockerd::start();
    let save = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker save {image} | docker -H {} load",
            engine.host()
        ))
        .output()
        .expect("docker save | load");
    assert!(
        save.status.success(),
        "loading {image} into the private dockerd: {}",
        String::from_utf8_lossy(&save.stderr)
    );

    let pki = Pki::new();
    let mut agent = Agent::builder(&pki)
        .env("KAGENT_DEBUG_STEP_DELAY_MS", "700")
        .build();
    let mut config = agent.config_table();
    config.insert("docker_host".into(), toml::Value::String(engine.host()));
    agent.write_config(&config);
    agent.start();
    let mut client = admin(&pki, &agent).await;

    let n = Names::new("dockerd");
    let names: Vec<String> = (0..4).map(|i| n.name(&format!("c{i}"))).collect();
    let spec = || {
        host_spec(
            names
                .iter()
                .map(|name| container_res(name, sh_container("default", "exec sleep 600")))
                .collect(),
        )
    };

    let mut c2 = client.clone();
    let first = tokio::spawn({
        let spec = spec();
        async move { apply(&mut c2, spec, false).await }
    });
    // Mid-apply: the first container is there, the others are not yet.
    let first_made = names[0].clone();
    let host = engine.host();
    let made = tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(20), || {
            Command::new("docker")
                .args(["-H", &host, "inspect", &first_made])
                .output()
                .is_ok_and(|o| o.status.success())
        })
    })
    .await
    .expect("join");
    assert!(made, "the apply never created {}", names[0]);
    engine.kill9();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    engine.spawn();

    let events = tokio::time::timeout(Duration::from_secs(120), first)
        .await
        .expect("the interrupted apply ends")
        .expect("join")
        .expect("apply call");
    let f = finished(&events);
    match state(&f) {
        OperationState::Failed => {
            let errors: Vec<String> = failed(&events)
                .into_iter()
                .map(|r| format!("{} (hint: {})", r.error, r.hint))
                .collect();
            let all = format!("{} | {}", f.error, errors.join(" | "));
            eprintln!("interrupted apply failed: {all}");
            assert!(all.contains("Docker"), "the error names Docker: {all}");
            assert!(
                !errors.is_empty(),
                "a resource failed, with its error: {events:#?}"
            );
        }
        OperationState::Succeeded => eprintln!("interrupted apply resumed and succeeded"),
        other => panic!("interrupted apply ended {other:?}: {events:#?}"),
    }
    assert!(agent.is_running(), "the agent stays up: {}", agent.stderr());

    // The next apply converges: every container created or repaired, all running.
    let events = apply(&mut client, spec(), false).await.expect("apply call");
    assert_eq!(
        state(&finished(&events)),
        OperationState::Succeeded,
        "re-apply after the restart: {events:#?}\ndockerd: {}",
        engine.log()
    );
    for name in &names {
        assert_eq!(
            engine.inspect(name, "{{.State.Running}}").as_deref(),
            Some("true"),
            "{name}"
        );
    }
    // And then stays converged.
    let events = apply(&mut client, spec(), false).await.expect("apply call");
    let counts = finished(&events).counts.unwrap_or_default();
    assert_eq!(
        (
            counts.unchanged,
            counts.create,
            counts.update,
            counts.failed
        ),
        (4, 0, 0, 0),
        "{events:#?}"
    );
    drop(client);
    drop(agent);
    drop(engine);
}
