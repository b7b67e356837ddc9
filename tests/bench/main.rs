//! kagent-bench: the agent's footprint and latency figures against their targets.
//!
//! Run by hand through `tests/bench/run` (release build). Figures:
//! (a) stripped binary size, (b) spawn -> READY=1 (median of 10), (c) idle RSS after 2 s and
//! after 20 mTLS calls, (d) end-to-end no-op apply of 50 files over mTLS (median / p90 of 20,
//! without and with the connection set-up).
//!
//! Usage: kagent-bench [--kagent PATH] [--runs N]
//! Exit code 1 when a figure misses its target.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kagent_proto::v1::{FactsRequest, OperationState};
use kagent_tests::*;

struct Row {
    figure: String,
    value: String,
    target: String,
    pass: Option<bool>,
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    assert!(!sorted.is_empty());
    // Nearest-rank percentile.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    percentile(&v, 50.0)
}

fn vm_rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS kB");
    kb * 1024
}

/// Size of a stripped copy (the release profile strips already; this makes sure).
fn stripped_size(bin: &Path) -> (u64, bool) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("kagent");
    std::fs::copy(bin, &copy).unwrap();
    let stripped = Command::new("strip")
        .arg(&copy)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    (std::fs::metadata(&copy).unwrap().len(), stripped)
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
                println!("usage: kagent-bench [--kagent PATH] [--runs N]");
                return;
            }
            other => panic!("unknown argument {other:?}"),
        }
    }
    assert!(
        kagent.is_file(),
        "{} not found: build with `cargo build --release -p kagent`",
        kagent.display()
    );
    eprintln!("kagent-bench: {}", kagent.display());
    let mut rows = Vec::new();

    // (a) size
    let raw = std::fs::metadata(&kagent).unwrap().len();
    let (size, stripped) = stripped_size(&kagent);
    rows.push(Row {
        figure: format!(
            "binary size ({})",
            if stripped {
                "stripped"
            } else {
                "as built; no strip(1)"
            }
        ),
        value: format!("{} (file {})", mib(size), mib(raw)),
        target: "<= 15 MiB".into(),
        pass: Some(size <= 15 * 1024 * 1024),
    });

    let pki = Pki::new();

    // (b) spawn -> READY=1
    let mut agent = Agent::builder(&pki).bin(&kagent).build();
    let mut ready = Vec::new();
    for _ in 0..10 {
        ready.push(agent.start());
        agent.stop();
    }
    let mut sorted = ready.clone();
    sorted.sort();
    let med = median(ready);
    rows.push(Row {
        figure: "spawn -> READY=1 (median of 10)".into(),
        value: format!("{} (min {}, max {})", ms(med), ms(sorted[0]), ms(sorted[9])),
        target: "<= 200 ms".into(),
        pass: Some(med <= Duration::from_millis(200)),
    });

    // (c) idle RSS
    agent.start();
    std::thread::sleep(Duration::from_secs(2));
    let pid = agent.pid().unwrap();
    let idle = vm_rss(pid);
    rows.push(Row {
        figure: "RSS idle (2 s after READY)".into(),
        value: mib(idle),
        target: "<= 12 MiB".into(),
        pass: Some(idle <= 12 * 1024 * 1024),
    });
    for _ in 0..20 {
        // A new connection per call: 20 mTLS handshakes.
        let mut c = admin(&pki, &agent).await;
        c.facts(FactsRequest {}).await.expect("Facts");
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = vm_rss(pid);
    rows.push(Row {
        figure: "RSS after 20 mTLS calls".into(),
        value: mib(after),
        target: "<= 12 MiB".into(),
        pass: Some(after <= 12 * 1024 * 1024),
    });

    // (d) no-op apply of 50 files
    let spec = host_spec(
        (0..50)
            .map(|i| {
                file(
                    &format!("f{i:02}"),
                    &agent.root.join(format!("bench/f{i:02}.conf")),
                    format!("key{i} = value {i}\n").repeat(20),
                )
            })
            .collect(),
    );
    let mut c = admin(&pki, &agent).await;
    // A unary round trip on a warm connection: the floor under every figure below.
    let mut rtt = Vec::new();
    for _ in 0..20 {
        let t0 = Instant::now();
        c.facts(FactsRequest {}).await.expect("Facts");
        rtt.push(t0.elapsed());
    }
    rows.push(Row {
        figure: "Facts round trip, connected (median of 20, info)".into(),
        value: ms(median(rtt)),
        target: "-".into(),
        pass: None,
    });
    let first = apply_events(&mut c, spec.clone()).await;
    assert_eq!(state(&finished(&first)), OperationState::Succeeded);
    let mut warm = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        let ev = apply_events(&mut c, spec.clone()).await;
        warm.push(t0.elapsed());
        let counts = finished(&ev).counts.unwrap_or_default();
        assert_eq!(
            counts.unchanged, 50,
            "a re-apply must be a no-op: {counts:?}"
        );
    }
    let mut cold = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        let mut c = admin(&pki, &agent).await;
        let ev = apply_events(&mut c, spec.clone()).await;
        cold.push(t0.elapsed());
        assert_eq!(finished(&ev).counts.unwrap_or_default().unchanged, 50);
    }
    for (label, mut v) in [("connected", warm), ("incl. connect", cold)] {
        v.sort();
        let (p50, p90) = (percentile(&v, 50.0), percentile(&v, 90.0));
        rows.push(Row {
            figure: format!("no-op apply, 50 files, {label} (median / p90 of {runs})"),
            value: format!("{} / {}", ms(p50), ms(p90)),
            target: "median <= 100 ms".into(),
            pass: Some(p50 <= Duration::from_millis(100)),
        });
    }
    let rss_end = vm_rss(pid);
    rows.push(Row {
        figure: "RSS after the applies (info)".into(),
        value: mib(rss_end),
        target: "-".into(),
        pass: None,
    });
    agent.stop();

    // Table.
    let w0 = rows
        .iter()
        .map(|r| r.figure.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let w1 = rows.iter().map(|r| r.value.len()).max().unwrap_or(5).max(5);
    let w2 = rows
        .iter()
        .map(|r| r.target.len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!(
        "{:<w0$}  {:<w1$}  {:<w2$}  result",
        "figure", "value", "target"
    );
    println!("{}", "-".repeat(w0 + w1 + w2 + 12));
    let mut failed = 0;
    for r in &rows {
        let res = match r.pass {
            Some(true) => "pass",
            Some(false) => {
                failed += 1;
                "FAIL"
            }
            None => "",
        };
        println!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {res}",
            r.figure, r.value, r.target
        );
    }
    if failed > 0 {
        println!("{failed} figure(s) miss their target");
        std::process::exit(1);
    }
}
