//! `provision completions SHELL`: a completion script on stdout.

use clap::CommandFactory as _;

use crate::cli::{Cli, CompletionsArgs};
use crate::exit::ExitStatus;

use super::Context;

pub async fn run(context: &Context, args: CompletionsArgs) -> anyhow::Result<ExitStatus> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "provision", &mut script);
    context.reporter.data(&String::from_utf8_lossy(&script));
    Ok(ExitStatus::Success)
}
