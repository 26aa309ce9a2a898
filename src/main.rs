//! The `drctl` binary: everything is in the library.

fn main() -> std::process::ExitCode {
    drctl::cli::main()
}
