//! The examples under each subcommand's `--help` (and in its man page). A new subcommand gets
//! its examples by adding one entry to [`EXAMPLES`]; a test fails for a visible subcommand
//! without one.

use clap::CommandFactory as _;

use super::Cli;

/// Per subcommand path (`"profiles show"`): its examples, one command and what it does per line.
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "init",
        "provision init                              a workspace in the current directory
provision init my-cluster --profile a100-8x  a workspace with profiles/a100-8x.toml to adapt",
    ),
    (
        "validate",
        "provision validate --profile a100-8x        check a built-in profile
provision validate --profile ./my.toml       check a file (a value with / or .toml is a path)
provision validate --profile a100-8x --output json",
    ),
    (
        "profiles",
        "provision profiles                          the built-in and workspace profiles
provision profiles show homelab-ha           one built-in profile as shipped
provision profiles docs | less               every field and validation rule",
    ),
    ("profiles list", "provision profiles list --output json"),
    (
        "profiles show",
        "provision profiles show a100-8x > my.toml   start your own profile from a built-in one",
    ),
    ("profiles docs", "provision profiles docs | less"),
    (
        "completions",
        "provision completions bash > ~/.local/share/bash-completion/completions/provision
provision completions zsh > ~/.zfunc/_provision
provision completions fish > ~/.config/fish/completions/provision.fish",
    ),
    (
        "man",
        "provision man | man -l -                    read this manual page
provision man --dir /usr/local/share/man/man1  one page per subcommand",
    ),
    (
        "plan",
        "provision plan --profile a100-8x --simulate    against the built-in simulator
provision plan --profile a100-8x --detailed-exitcode  exit 2 when there are changes
provision plan --profile a100-8x --destroy     what `down` would destroy
provision plan --profile a100-8x --output json  the exact Proxmox parameters",
    ),
    (
        "up",
        "provision up --profile a100-8x --simulate      phase 1 against the built-in simulator
provision up --profile homelab-ha              a real Proxmox (PROXMOX_VE_ENDPOINT …)
provision up --profile homelab-ha --vms-only   VMs only: no SSH, no k3s
provision up --profile homelab-ha --max-unavailable 2 --yes
Ctrl-C stops after the Proxmox tasks in flight (exit 130); run `up` again to continue.",
    ),
    (
        "down",
        "provision plan --profile homelab-ha --destroy  what `down` will destroy
provision down --profile homelab-ha --yes",
    ),
    (
        "status",
        "provision status --profile homelab-ha
provision status --profile homelab-ha --output json",
    ),
    (
        "doctor",
        "provision doctor --profile a100-8x            what would stop `up`, with fixes
provision doctor --profile a100-8x --simulate --sim-inventory pve-homelab",
    ),
    (
        "kubeconfig",
        "export KUBECONFIG=$(provision kubeconfig)
provision kubeconfig --merge                   add the context to ~/.kube/config",
    ),
    (
        "drain",
        "provision drain --profile homelab-ha homelab-agent-1 --dry-run   every pod's fate
provision drain --profile homelab-ha homelab-agent-1 --timeout 5m --delete-emptydir-data",
    ),
    (
        "uncordon",
        "provision uncordon --profile homelab-ha homelab-agent-1",
    ),
    (
        "replace-node",
        "provision plan --profile homelab-ha --replace-node homelab-server-1   the steps, nothing changed
provision replace-node --profile homelab-ha homelab-server-1 --yes
provision replace-node --profile homelab-ha homelab-agent-1     asks for confirmation on a terminal",
    ),
    (
        "list",
        "provision list                                every provision cluster on the Proxmox, from tags
provision list --simulate --output json",
    ),
    (
        "gc",
        "provision gc --expired --dry-run              what would go: clusters past their TTL
provision gc --expired --older-than 1d         reap what dead CI jobs left behind",
    ),
    ("sim", "provision sim serve --inventory pve-a100"),
    (
        "sim serve",
        "provision sim serve --inventory pve-a100      prints export lines; paste them, then:
provision plan --profile a100-8x",
    ),
];

/// The command line with every subcommand's examples: what `main` parses with, and what the
/// man page and completions are generated from.
pub fn command() -> clap::Command {
    EXAMPLES
        .iter()
        .fold(Cli::command(), |command, (path, examples)| {
            let path: Vec<&str> = path.split(' ').collect();
            with_examples(command, &path, examples)
        })
}

fn with_examples(command: clap::Command, path: &[&str], examples: &str) -> clap::Command {
    match path {
        [] => command.after_help(format!("Examples:\n{}", indent(examples))),
        [first, rest @ ..] => {
            command.mut_subcommand(*first, |sub| with_examples(sub, rest, examples))
        }
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("  {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses the process's arguments against [`command`].
pub fn parse() -> Result<Cli, clap::Error> {
    let matches = command().try_get_matches()?;
    <Cli as clap::FromArgMatches>::from_arg_matches(&matches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(command: &clap::Command, prefix: &str, found: &mut Vec<String>) {
        for sub in command.get_subcommands() {
            if sub.is_hide_set() || sub.get_name() == "help" {
                continue;
            }
            let path = format!("{prefix}{}", sub.get_name());
            found.push(path.clone());
            paths(sub, &format!("{path} "), found);
        }
    }

    /// A misspelt subcommand (two letters swapped, or only the first word of `replace-node`)
    /// is answered with the right one.
    #[test]
    fn a_typo_of_every_subcommand_suggests_it() {
        let top = Cli::command();
        for sub in top.get_subcommands().filter(|sub| !sub.is_hide_set()) {
            let name = sub.get_name();
            let mut letters: Vec<char> = name.chars().collect();
            if letters.len() < 4 {
                continue;
            }
            letters.swap(1, 2);
            let swapped: String = letters.into_iter().collect();
            let typos = [
                Some(swapped),
                name.split_once('-').map(|(first, _)| first.to_owned()),
            ];
            for typo in typos.into_iter().flatten() {
                let error = match command().try_get_matches_from(["provision", typo.as_str()]) {
                    Ok(_) => panic!("`{typo}` parsed"),
                    Err(error) => error.to_string(),
                };
                assert!(
                    error.contains(&format!("'{name}'")),
                    "`{typo}` does not suggest {name}: {error}"
                );
            }
        }
    }

    #[test]
    fn every_visible_subcommand_has_examples_and_every_entry_a_subcommand() {
        let mut found = Vec::new();
        paths(&Cli::command(), "", &mut found);
        let listed: Vec<&str> = EXAMPLES.iter().map(|(path, _)| *path).collect();
        let missing: Vec<&String> = found
            .iter()
            .filter(|path| !listed.contains(&path.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "add examples for {missing:?} to EXAMPLES"
        );
        let stale: Vec<&&str> = listed
            .iter()
            .filter(|path| !found.iter().any(|found| found == *path))
            .collect();
        assert!(
            stale.is_empty(),
            "EXAMPLES lists unknown subcommands {stale:?}"
        );
        let rendered = command()
            .find_subcommand_mut("up")
            .map(|up| up.render_help().to_string())
            .unwrap_or_default();
        assert!(
            rendered.contains("Examples:\n  provision up --profile"),
            "{rendered}"
        );
    }
}
