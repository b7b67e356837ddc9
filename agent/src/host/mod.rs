//! The narrow interface to the operating system. Resources reach files through `fs`; later
//! kinds add commands and the Docker API here, so tests can point them at throwaway roots and
//! engines.

pub mod fs;
