//! The audit log: a `begin` record before any change, an `end` after; no record, no change.

use std::os::unix::fs::MetadataExt;

use kagent_tests::pki::ADMIN_CN;
use kagent_tests::*;
use serde_json::Value;
use tonic::Code;

const APPLY_RPC: &str = "/kagent.v1.Agent/Apply";

fn records(agent: &Agent) -> Vec<Value> {
    let text = std::fs::read_to_string(agent.audit_log()).expect("read audit.log");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad audit line {l:?}: {e}")))
        .collect()
}

/// The records once the `end` record of each of `ops` is there. The agent writes `end` right
/// after the operation's last event, so it may land a moment after the stream closed.
fn records_after_end(agent: &Agent, ops: &[String]) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let recs = records(agent);
        let ended = |op: &String| {
            recs.iter()
                .any(|r| r["operation_id"] == op.as_str() && r["phase"] == "end")
        };
        if ops.iter().all(ended) || std::time::Instant::now() > deadline {
            return recs;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string {key:?} in {v}"))
}

/// Checks the begin/end pair of `op` and returns their positions.
fn pair(recs: &[Value], op: &str, fingerprint: &str) -> (usize, usize) {
    let of_op: Vec<(usize, &Value)> = recs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.get("operation_id").and_then(Value::as_str) == Some(op))
        .collect();
    let (bi, begin) = *of_op
        .iter()
        .find(|(_, r)| s(r, "phase") == "begin")
        .unwrap_or_else(|| panic!("no begin record for {op}: {recs:#?}"));
    let (ei, end) = *of_op
        .iter()
        .find(|(_, r)| s(r, "phase") == "end")
        .unwrap_or_else(|| panic!("no end record for {op}: {recs:#?}"));
    assert!(bi < ei, "begin must precede end");
    assert_eq!(s(begin, "rpc"), APPLY_RPC);
    assert!(
        s(begin, "caller").contains(&format!("CN={ADMIN_CN}")),
        "caller names the client CN: {begin}"
    );
    assert_eq!(
        s(begin, "fingerprint"),
        fingerprint,
        "client certificate fingerprint"
    );
    let sha = s(begin, "request_sha256");
    assert!(
        sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()),
        "request_sha256 {sha}"
    );
    assert!(
        time::OffsetDateTime::parse(
            s(begin, "time"),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok(),
        "time is RFC 3339: {begin}"
    );
    let (bs, es) = (begin["seq"].as_u64(), end["seq"].as_u64());
    assert!(
        bs.is_some() && es.is_some() && bs <= es,
        "seq does not go back: {begin} {end}"
    );
    assert_eq!(s(end, "result"), "ok", "{end}");
    (bi, ei)
}

#[tokio::test]
async fn apply_and_dry_run_are_audited() {
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    let mut c = admin(&pki, &agent).await;
    let p = agent.root.join("audited.txt");
    let spec = host_spec(vec![file("audited", &p, "a\n")]);
    let plan = apply(&mut c, spec.clone(), true).await.unwrap();
    let events = apply_events(&mut c, spec).await;

    let log = agent.audit_log();
    let mode = std::fs::metadata(&log).expect("audit.log exists").mode() & 0o777;
    assert_eq!(mode, 0o600, "audit.log mode");
    let recs = records_after_end(&agent, &[op_id(&plan), op_id(&events)]);
    let fp = pki.admin_bundle.fingerprint().unwrap();
    let (dry_begin, _) = pair(&recs, &op_id(&plan), &fp);
    let (real_begin, _) = pair(&recs, &op_id(&events), &fp);
    assert!(dry_begin < real_begin, "records are in call order");
    // Same spec, different request (dry_run differs): different request hashes.
    let hash_of = |op: &str| {
        recs.iter()
            .find(|r| r["operation_id"] == op && r["phase"] == "begin")
            .map(|r| r["request_sha256"].clone())
    };
    assert_ne!(hash_of(&op_id(&plan)), hash_of(&op_id(&events)));
    // Each call's begin record gets a new, larger sequence number.
    let seqs: Vec<u64> = recs
        .iter()
        .filter(|r| r["phase"] == "begin")
        .filter_map(|r| r["seq"].as_u64())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "begin seq strictly increases: {seqs:?}"
    );
}

fn make_unwritable(agent: &Agent) {
    let log = agent.audit_log();
    if log.exists() {
        std::fs::remove_file(&log).unwrap();
    }
    std::fs::create_dir(&log).unwrap();
}

async fn apply_is_refused(pki: &Pki, agent: &Agent) {
    let mut c = admin(pki, agent).await;
    let p = agent.root.join("unaudited/x.txt");
    let r = apply(&mut c, host_spec(vec![file("unaudited", &p, "x\n")]), false).await;
    match r {
        Err(s) => assert_eq!(
            s.code(),
            Code::Unavailable,
            "{:?}: {}",
            s.code(),
            s.message()
        ),
        Ok(ev) => panic!("Apply ran without an audit record: {ev:#?}"),
    }
    assert!(
        !p.exists(),
        "the file was written although the audit record could not be"
    );
    assert!(
        !agent.root.join("unaudited").exists(),
        "its parent directory was created"
    );
}

#[tokio::test]
async fn no_audit_record_no_change_while_running() {
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    let mut c = admin(&pki, &agent).await;
    // A first audited call, so the log exists and is in use.
    let first = apply_events(
        &mut c,
        host_spec(vec![file("first", &agent.root.join("first"), "1\n")]),
    )
    .await;
    // Its `end` record lands just after the stream closes: wait for it, or it would recreate
    // the file we are about to replace.
    records_after_end(&agent, &[op_id(&first)]);
    make_unwritable(&agent);
    apply_is_refused(&pki, &agent).await;
}

#[tokio::test]
async fn no_audit_record_no_change_after_restart() {
    let pki = Pki::new();
    let mut agent = Agent::start_new(&pki);
    agent.stop();
    make_unwritable(&agent);
    // Refusing to start (naming the audit log) is as good as refusing every mutation.
    match agent.try_start() {
        Ok(_) => apply_is_refused(&pki, &agent).await,
        Err(e) => assert!(
            e.contains("audit"),
            "kagent failed to start without naming audit: {e}"
        ),
    }
}
