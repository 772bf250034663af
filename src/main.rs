//! Entry point: parse, run, exit code. Nothing else lives here.

use std::process::ExitCode;

fn main() -> ExitCode {
    provision::exit::ExitStatus::Success.into()
}
