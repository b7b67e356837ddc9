//! Test harness for kagent: a throwaway fleet PKI, the real `kagent` binary run as a child
//! process (with a systemd-style notify socket), mTLS gRPC clients, and helpers to build host
//! specs and collect event streams.
//!
//! Everything a test makes lives in its own temporary directories and on its own loopback
//! port, so tests run in parallel.
//!
//! Binaries: `KAGENT_BIN` / `KCTL_BIN` / `KAGENT_PYTHON` name them; otherwise the workspace's
//! `target/debug/kagent`, `target/debug/kctl` and `target/pyvenv/bin/python` are used.

// Tests report failures by panicking with a message; `expect` carries that message.
#![allow(clippy::unwrap_used)]

pub mod agent;
pub mod docker;
pub mod grpc;
pub mod images;
pub mod kctl_cli;
pub mod keycloak;
pub mod pebble;
pub mod pki;
pub mod rootfs;
pub mod spec;
pub mod vm;

use std::path::{Path, PathBuf};

pub use agent::{Agent, AgentBuilder};
pub use grpc::{
    Refused, admin, apply, apply_events, client, client_for, collect, facts_with, list_operations,
    watch, watch_events,
};
pub use pki::Pki;
pub use spec::*;
pub use vm::Vm;

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

fn bin_from_env(var: &str, default: PathBuf) -> PathBuf {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => default,
    }
}

/// The `kagent` binary under test. Panics with a clear message when it is missing.
pub fn kagent_bin() -> PathBuf {
    let path = bin_from_env("KAGENT_BIN", workspace_root().join("target/debug/kagent"));
    assert!(
        path.is_file(),
        "kagent binary not found at {} (set KAGENT_BIN or run `cargo build -p kagent`)",
        path.display()
    );
    path
}

/// The `kctl` binary, if it was built.
pub fn kctl_bin() -> Option<PathBuf> {
    let path = bin_from_env("KCTL_BIN", workspace_root().join("target/debug/kctl"));
    path.is_file().then_some(path)
}

/// The Python interpreter of the venv that holds grpcio (made by `tests/run`). Panics when it
/// is missing: the independent-client test must not pass vacuously.
pub fn python_bin() -> PathBuf {
    let path = bin_from_env(
        "KAGENT_PYTHON",
        workspace_root().join("target/pyvenv/bin/python"),
    );
    assert!(
        path.is_file(),
        "Python with grpcio not found at {} (set KAGENT_PYTHON or run tests/run, which makes \
         target/pyvenv)",
        path.display()
    );
    path
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// All regular files under `dir`, recursively (symlinks are not followed).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Whether `needle` occurs in `hay`.
pub fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
