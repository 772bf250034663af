//! Entry point: parse, run, exit code. Nothing else lives here.

use std::process::ExitCode;

use provision::reporter::Reporter;

fn main() -> ExitCode {
    let cli = match provision::cli::parse() {
        Ok(cli) => cli,
        Err(error) => return Reporter::clap_error(&error).into(),
    };
    provision::commands::run(cli).into()
}
