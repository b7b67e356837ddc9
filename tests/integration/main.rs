//! Integration suite: the real `kagent` binary over real mTLS on loopback.
//!
//! One module per topic. Every test makes its own PKI, agent, temp dirs and port, so the
//! suite runs in parallel. Binaries: see the harness (`KAGENT_BIN`, `KCTL_BIN`, `KAGENT_PYTHON`).

// Tests fail by panicking; `expect`/`unwrap` with a message is how they say why.
#![allow(clippy::unwrap_used)]

mod apply;
mod atomic;
mod audit;
mod certificates;
mod config;
mod containers;
mod containers_dockerd;
mod corruption;
mod fleet;
mod journal;
mod kctl_e2e;
mod keycloak;
mod mtls;
mod packages;
mod provision;
mod python;
mod roots;
mod secret;
mod sigterm;
mod stacks;
mod systemd;
mod trust;
mod vms;
