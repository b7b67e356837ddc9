//! Paths must be absolute, free of `..`, and under a managed root without crossing a symlink.
//! A bad path refuses the whole spec: the valid resource before it is not applied either.

use kagent_tests::*;
use tonic::Code;

/// Applies [valid file, bad file] and checks the refusal and that nothing was applied.
async fn refused(pki: &Pki, agent: &Agent, bad_path: &str) {
    let mut c = admin(pki, agent).await;
    let ok_path = agent.root.join("ok/first.txt");
    let spec = host_spec(vec![
        file("first", &ok_path, "fine\n"),
        file_at("bad", bad_path, "evil\n"),
    ]);
    for dry_run in [true, false] {
        let r = apply(&mut c, spec.clone(), dry_run).await;
        let status = match r {
            Err(s) => s,
            Ok(events) => panic!("path {bad_path:?} (dry_run {dry_run}) was accepted: {events:#?}"),
        };
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "path {bad_path:?}: {:?}: {}",
            status.code(),
            status.message()
        );
        let msg = status.message();
        assert!(
            msg.contains("`path`"),
            "the message must name field `path`: {msg:?}"
        );
        assert!(
            msg.contains("\"bad\""),
            "the message must name the resource \"bad\": {msg:?}"
        );
        assert!(
            !ok_path.exists(),
            "the valid resource before the bad one was applied"
        );
        assert!(
            !agent.root.join("ok").exists(),
            "its parent directory was created"
        );
    }
}

#[tokio::test]
async fn path_outside_the_roots_is_refused() {
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    let before = std::fs::read("/etc/passwd").unwrap();
    refused(&pki, &agent, "/etc/passwd").await;
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), before);
}

#[tokio::test]
async fn dot_dot_is_refused() {
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    let p = format!("{}/../escape", agent.root.display());
    refused(&pki, &agent, &p).await;
    assert!(!agent.root.parent().unwrap().join("escape").exists());
}

#[tokio::test]
async fn symlink_out_of_the_root_is_refused() {
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), agent.root.join("link")).unwrap();
    let p = format!("{}/link/x", agent.root.display());
    refused(&pki, &agent, &p).await;
    assert!(
        !outside.path().join("x").exists(),
        "the file was written through the symlink"
    );
}

#[tokio::test]
async fn relative_path_is_refused() {
    let pki = Pki::new();
    let agent = Agent::start_new(&pki);
    refused(&pki, &agent, "relative/x.txt").await;
}
