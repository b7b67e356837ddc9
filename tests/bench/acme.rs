//! kagent-acme-bench: certificate issuance, kagent against certbot, on the same pebble.
//!
//! Both clients get N certificates (distinct names) over HTTP-01 on the same port from one
//! pebble (default 5% nonce rejection, `PEBBLE_VA_NOSLEEP=1`), each after its account exists
//! (certbot: `certbot register`; kagent: a warm-up apply). Timed per certificate, wall clock:
//! kagent from the Apply call to the operation's last event (self-check, order, validation,
//! download, store); certbot the whole `certbot certonly --standalone` process, as an operator
//! or cron runs it. Also the agent's RSS (VmHWM, peak) over the issuance runs.
//!
//! Usage: kagent-acme-bench --certbot PATH [--kagent PATH] [-n N]
//! Exit code 1 when kagent's median is more than half of certbot's.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use kagent_proto::v1::certificate::Issuer;
use kagent_proto::v1::resource::Kind;
use kagent_proto::v1::{AcmeIssuer, Certificate, Resource};
use kagent_tests::pebble::Pebble;
use kagent_tests::*;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn status_kb(pid: i32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn cert(name: &str, domain: &str, pebble: &Pebble) -> Resource {
    Resource {
        name: name.into(),
        kind: Some(Kind::Certificate(Certificate {
            domains: vec![domain.into()],
            issuer: Some(Issuer::Acme(AcmeIssuer {
                directory_url: pebble.directory_url(),
                ca_bundle: pebble.tls_ca.to_string_lossy().into_owned(),
                ..Default::default()
            })),
            ..Default::default()
        })),
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut n = 10usize;
    let mut certbot: Option<PathBuf> = None;
    let mut kagent: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "-n" => n = args.next().and_then(|v| v.parse().ok()).expect("-n N"),
            "--certbot" => certbot = args.next().map(PathBuf::from),
            "--kagent" => kagent = args.next().map(PathBuf::from),
            other => panic!("unknown argument {other}"),
        }
    }
    let certbot = certbot.expect("--certbot PATH (tests/bench/acme-run installs it)");
    let pebble = Pebble::start();
    let pki = Pki::new();

    // --- kagent
    let mut b = Agent::builder(&pki);
    if let Some(bin) = &kagent {
        b = b.bin(bin);
    }
    let mut agent = b.build();
    let mut t = agent.config_table();
    let mut acme = toml::Table::new();
    acme.insert("http01_port".into(), i64::from(pebble.http01).into());
    let mut resolve = toml::Table::new();
    for i in 0..=n {
        resolve.insert(format!("k{i}.bench.test"), "127.0.0.1".into());
    }
    acme.insert("resolve".into(), resolve.into());
    t.insert("acme".into(), acme.into());
    agent.write_config(&t);
    agent.start();
    let pid = agent.pid().unwrap();
    let mut c = admin(&pki, &agent).await;
    let rss_idle = status_kb(pid, "VmRSS:");
    // Warm-up: creates the account.
    let warm = apply_events(
        &mut c,
        host_spec(vec![cert("k0", "k0.bench.test", &pebble)]),
    )
    .await;
    finished(&warm);
    let mut kagent_times = Vec::new();
    for i in 1..=n {
        let spec = host_spec(vec![cert(
            &format!("k{i}"),
            &format!("k{i}.bench.test"),
            &pebble,
        )]);
        let t0 = Instant::now();
        let events = apply_events(&mut c, spec).await;
        kagent_times.push(t0.elapsed());
        let f = finished(&events);
        assert_eq!(f.error, "", "kagent issuance failed");
    }
    let rss_peak = status_kb(pid, "VmHWM:");
    let rss_after = status_kb(pid, "VmRSS:");
    agent.stop();

    // --- certbot, same pebble, same port
    let work = tempfile::tempdir().unwrap();
    let dirs = |cmd: &mut Command| {
        cmd.arg("--config-dir")
            .arg(work.path().join("config"))
            .arg("--work-dir")
            .arg(work.path().join("work"))
            .arg("--logs-dir")
            .arg(work.path().join("logs"))
            .args(["--server", &pebble.directory_url(), "--non-interactive"])
            .env("REQUESTS_CA_BUNDLE", &pebble.tls_ca);
    };
    let mut reg = Command::new(&certbot);
    reg.args([
        "register",
        "--agree-tos",
        "--register-unsafely-without-email",
    ]);
    dirs(&mut reg);
    let out = reg.output().unwrap();
    assert!(
        out.status.success(),
        "certbot register: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut certbot_times = Vec::new();
    for i in 1..=n {
        let mut cmd = Command::new(&certbot);
        cmd.args(["certonly", "--standalone", "--preferred-challenges", "http"])
            .args(["--http-01-port", &pebble.http01.to_string()])
            .args(["-d", &format!("c{i}.bench.test")]);
        dirs(&mut cmd);
        let t0 = Instant::now();
        let out = cmd.output().unwrap();
        certbot_times.push(t0.elapsed());
        assert!(
            out.status.success(),
            "certbot certonly: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let k = median(kagent_times.clone());
    let cb = median(certbot_times.clone());
    let ratio = k.as_secs_f64() / cb.as_secs_f64();
    println!("certificates per client: {n} (pebble, HTTP-01, 5% badNonce)");
    println!(
        "kagent  median {:>8.1} ms  (min {:.1}, max {:.1})",
        k.as_secs_f64() * 1e3,
        kagent_times.iter().min().unwrap().as_secs_f64() * 1e3,
        kagent_times.iter().max().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "certbot median {:>8.1} ms  (min {:.1}, max {:.1})",
        cb.as_secs_f64() * 1e3,
        certbot_times.iter().min().unwrap().as_secs_f64() * 1e3,
        certbot_times.iter().max().unwrap().as_secs_f64() * 1e3
    );
    println!("ratio kagent/certbot: {ratio:.3} (target <= 0.5)");
    println!(
        "kagent RSS: idle {:.1} MiB, peak during issuance {:.1} MiB, after {:.1} MiB",
        rss_idle as f64 / 1024.0,
        rss_peak as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    println!("pebble issued {} certificates", pebble.issued());
    if ratio > 0.5 {
        std::process::exit(1);
    }
}
