use std::process::ExitCode;

fn main() -> ExitCode {
    infrahub::cli::main()
}
