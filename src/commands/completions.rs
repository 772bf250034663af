//! `provision completions SHELL`: a completion script on stdout. `--profile` and `profiles show`
//! complete to the built-in profile names (a path is still accepted when typed).

use clap::builder::PossibleValuesParser;

use crate::cli::CompletionsArgs;
use crate::exit::ExitStatus;
use crate::profile::BUILTIN_PROFILES;

use super::Context;

pub async fn run(context: &Context, args: CompletionsArgs) -> anyhow::Result<ExitStatus> {
    let mut command = with_profile_names(crate::cli::command());
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "provision", &mut script);
    context.reporter.data(&String::from_utf8_lossy(&script));
    Ok(ExitStatus::Success)
}

/// `command` with the built-in profile names as the values of every argument that names a
/// profile (`--profile`, `profiles show NAME`), in every subcommand: what the shells offer.
/// Only the completion script sees this; parsing still takes any name or path.
fn with_profile_names(command: clap::Command) -> clap::Command {
    let names: Vec<&'static str> = BUILTIN_PROFILES
        .iter()
        .map(|builtin| builtin.name)
        .collect();
    let profile_args: Vec<String> = command
        .get_arguments()
        .filter(|arg| {
            arg.get_id() == "profile" || (command.get_name() == "show" && arg.get_id() == "name")
        })
        .map(|arg| arg.get_id().to_string())
        .collect();
    let command = profile_args.into_iter().fold(command, |command, id| {
        let names = names.clone();
        command.mut_arg(id, move |arg| {
            arg.value_parser(PossibleValuesParser::new(names))
        })
    });
    let subcommands: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    subcommands.into_iter().fold(command, |command, name| {
        command.mut_subcommand(name, with_profile_names)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_completion_offers_the_built_in_profile_names() {
        let mut command = with_profile_names(crate::cli::command());
        let mut script = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut command,
            "provision",
            &mut script,
        );
        let script = String::from_utf8_lossy(&script);
        for builtin in BUILTIN_PROFILES {
            assert!(script.contains(builtin.name), "{} missing", builtin.name);
        }
        let show = command
            .find_subcommand("profiles")
            .and_then(|profiles| profiles.find_subcommand("show"))
            .and_then(|show| show.get_arguments().find(|arg| arg.get_id() == "name"))
            .map(|name| name.get_possible_values().len());
        assert_eq!(show, Some(BUILTIN_PROFILES.len()));
    }
}
