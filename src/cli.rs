//! Command-line types (clap derive) and nothing else: parsing happens in `main`, work in `commands`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  provision init                          create a workspace in the current directory
  provision profiles                      list the built-in profiles
  provision validate --profile a100-8x    check a built-in profile
  provision validate --profile ./my.toml  check a file (a value with / or .toml is a path)
  provision validate --profile a100-8x --output json
  provision completions bash > ~/.local/share/bash-completion/completions/provision

Exit codes: 0 success, 1 user or profile error, 2 remote or internal failure.";

/// Build GPU Kubernetes (HA K3s) clusters on Proxmox VE from one profile.
#[derive(Debug, Parser)]
#[command(name = "provision", version, about, after_help = EXAMPLES, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every verb accepts.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Workspace directory (holds provision.toml, profiles/ and .provision/).
    #[arg(long, global = true, value_name = "DIR", default_value = ".")]
    pub workspace: PathBuf,
    /// More detail on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Format of the data on stdout.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// No colours (also when NO_COLOR is set).
    #[arg(long, global = true)]
    pub no_color: bool,
}

/// What stdout carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// For programs (one JSON document).
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a workspace: a commented provision.toml, .provision/ (0700) and .gitignore.
    Init(InitArgs),
    /// Parse and check a profile; errors point at file:line:column.
    Validate(ValidateArgs),
    /// List the built-in profiles (and the workspace's own profiles/*.toml).
    Profiles,
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to initialise (default: --workspace).
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// A built-in profile name, a workspace profile (profiles/NAME.toml) or a path to a TOML file.
    #[arg(short, long, value_name = "NAME|PATH")]
    pub profile: String,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// Shell to generate completions for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}
