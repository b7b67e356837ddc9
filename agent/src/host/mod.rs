//! The narrow interface to the operating system. Resources reach files through `fs`, commands
//! through `cmd`, and the system they manage through `target` (the host, or a throwaway root
//! in tests), so tests can point them at throwaway roots and engines.

pub mod cmd;
pub mod docker;
pub mod fs;
pub mod http;
pub mod os_release;
pub mod target;
pub mod tls;
