//! kagent-bench-containers: a 10-container stack through the agent against the real dockerd.
//!
//! Figures: cold apply (network + 10 containers created and started), no-op re-apply (median /
//! p90 of N, target <= 150 ms), one-container change (one env var: that container recreated),
//! and the agent's overhead beyond Docker's own calls: the no-op re-apply minus the same read
//! calls (inspect image + inspect container per container) made directly with bollard.
//!
//! Usage: kagent-bench-containers [--kagent PATH] [--runs N]   (default: target/release/kagent)
//! Needs dockerd on the default socket (tests/run starts it). Exit code 1 on a missed target.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kagent_proto::v1::{self, Action, OperationState};
use kagent_tests::docker::*;
use kagent_tests::*;

const CONTAINERS: usize = 10;

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn spec(n: &Names, changed: Option<usize>) -> v1::HostSpec {
    let stack = n.name("s");
    let net = n.name("net");
    let mut r = vec![network_res(&net, &stack)];
    for i in 0..CONTAINERS {
        let mut c = sh_container(&stack, "exec httpd -f -p 80 -h /www");
        c.env = vec![env("N", &i.to_string())];
        if changed == Some(i) {
            c.env.push(env("CHANGED", "yes"));
        }
        c.networks = vec![v1::NetworkAttachment {
            name: net.clone(),
            aliases: vec![format!("app{i}")],
        }];
        r.push(container_res(&n.name(&format!("app{i}")), c));
    }
    host_spec(r)
}

/// The reads a no-op plan makes, straight to dockerd: per container an image and a container
/// inspect (concurrently, as the agent does), containers one after the other.
async fn docker_reads(docker: &bollard::Docker, n: &Names) -> Duration {
    let t0 = Instant::now();
    let _ = docker
        .inspect_network(
            &n.name("net"),
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .unwrap();
    for i in 0..CONTAINERS {
        let name = n.name(&format!("app{i}"));
        let (a, b) = tokio::join!(
            docker.inspect_image(BUSYBOX_IMAGE),
            docker.inspect_container(
                &name,
                None::<bollard::query_parameters::InspectContainerOptions>
            )
        );
        a.unwrap();
        b.unwrap();
    }
    t0.elapsed()
}

#[tokio::main]
async fn main() {
    let mut kagent = workspace_root().join("target/release/kagent");
    let mut runs = 20usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--kagent" => kagent = PathBuf::from(args.next().expect("--kagent PATH")),
            "--runs" => runs = args.next().and_then(|n| n.parse().ok()).expect("--runs N"),
            "-h" | "--help" => {
                println!("usage: kagent-bench-containers [--kagent PATH] [--runs N]");
                return;
            }
            other => panic!("unknown argument {other:?}"),
        }
    }
    assert!(kagent.is_file(), "{} not found", kagent.display());
    require_docker();
    busybox_image();
    eprintln!("kagent-bench-containers: {}", kagent.display());
    let n = Names::new("bench");
    let _cleanup = n.cleanup();
    let pki = Pki::new();
    let agent = Agent::builder(&pki).bin(&kagent).start();
    let mut c = admin(&pki, &agent).await;

    let t0 = Instant::now();
    let ev = apply_events(&mut c, spec(&n, None)).await;
    let cold = t0.elapsed();
    assert_eq!(state(&finished(&ev)), OperationState::Succeeded, "{ev:#?}");

    let mut noop = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        let ev = apply_events(&mut c, spec(&n, None)).await;
        noop.push(t0.elapsed());
        let counts = finished(&ev).counts.unwrap_or_default();
        assert_eq!(counts.unchanged as usize, CONTAINERS + 1, "{counts:?}");
    }
    noop.sort();

    let docker = bollard::Docker::connect_with_unix_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    let mut reads = Vec::new();
    for _ in 0..runs {
        reads.push(docker_reads(&docker, &n).await);
    }
    reads.sort();

    let t0 = Instant::now();
    let ev = apply_events(&mut c, spec(&n, Some(3))).await;
    let change = t0.elapsed();
    assert_eq!(state(&finished(&ev)), OperationState::Succeeded);
    let changed: Vec<_> = planned_actions(&ev)
        .into_iter()
        .filter(|(_, a)| *a != Action::Unchanged)
        .collect();
    assert_eq!(changed, vec![(n.name("app3"), Action::Update)]);

    let (p50, p90) = (pct(&noop, 50.0), pct(&noop, 90.0));
    let reads50 = pct(&reads, 50.0);
    let rows = [
        (
            format!("cold apply: network + {CONTAINERS} containers"),
            ms(cold),
            "-".to_string(),
            None,
        ),
        (
            format!("no-op re-apply, {CONTAINERS} containers (median / p90 of {runs})"),
            format!("{} / {}", ms(p50), ms(p90)),
            "median <= 150 ms".to_string(),
            Some(p50 <= Duration::from_millis(150)),
        ),
        (
            "  of which Docker's own read calls (median, direct)".to_string(),
            ms(reads50),
            "-".to_string(),
            None,
        ),
        (
            "  agent overhead beyond them (gRPC, journal, plan)".to_string(),
            ms(p50.saturating_sub(reads50)),
            "-".to_string(),
            None,
        ),
        (
            "one-container change (env): recreate 1 of 10".to_string(),
            ms(change),
            "-".to_string(),
            None,
        ),
    ];
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(6);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(5);
    println!(
        "{:<w0$}  {:<w1$}  {:<18}  result",
        "figure", "value", "target"
    );
    println!("{}", "-".repeat(w0 + w1 + 30));
    let mut failed = 0;
    for (figure, value, target, pass) in &rows {
        let res = match pass {
            Some(true) => "pass",
            Some(false) => {
                failed += 1;
                "FAIL"
            }
            None => "",
        };
        println!("{figure:<w0$}  {value:<w1$}  {target:<18}  {res}");
    }
    drop(agent);
    if failed > 0 {
        std::process::exit(1);
    }
}
