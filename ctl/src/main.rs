//! The `kctl` binary: everything lives in the library (see `lib.rs`).

fn main() -> std::process::ExitCode {
    kctl::main()
}
