//! kagent: the host agent of a kctl fleet. `main.rs` parses arguments; everything else is here.
//!
//! Module map (details in ARCHITECTURE.md):
//! - `daemon`: wiring: TLS listener, gRPC services, readiness, signals, shutdown.
//! - `service`: the gRPC layer; translates, decides nothing.
//! - `caller`, `authz`: identity from the client certificate; the role each RPC needs.
//! - `tls`, `trust`, `enroll`: the swappable TLS acceptor, enrollment and rotation.
//! - `engine`: validate, plan and apply host specs; operations and their events.
//! - `resource`: one module per resource kind (read / plan / apply).
//! - `scheduler`: the agent's own background work (certificate renewal).
//! - `host`: the narrow interface to the OS (files under managed roots).
//! - `journal`, `audit`: what happened, on disk, before it is seen or done.
//! - `facts`, `config`, `logging`, `time`: what they say.

pub mod audit;
pub mod authz;
pub mod caller;
pub mod config;
pub mod containers;
pub mod daemon;
pub mod engine;
pub mod enroll;
pub mod facts;
pub mod host;
pub mod journal;
pub mod keycloak_checks;
pub mod logging;
pub mod resource;
pub mod scheduler;
pub mod service;
pub mod time;
pub mod tls;
pub mod trust;
