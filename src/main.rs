//! The `tarvault` command line: a thin client of the library API.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
