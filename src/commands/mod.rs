//! One file per verb; this file only dispatches and turns errors into exit codes.
//!
//! To add a verb: a variant in `cli::Command`, a file here with `pub async fn run(ctx, args)`,
//! and one arm in [`dispatch`].

pub mod completions;
pub mod doctor;
pub mod down;
pub mod init;
pub mod kubeconfig;
pub mod output;
pub mod plan;
pub mod profiles;
pub mod sim;
pub mod status;
pub mod up;
pub mod up_phase2;
pub mod validate;

use crate::cli::{Cli, Command, OutputFormat};
use crate::exit::ExitStatus;
use crate::profile::ProfileError;
use crate::pve::PveError;
use crate::reporter::Reporter;
use crate::workspace::{Workspace, WorkspaceError};

/// What every verb gets: where output goes and which workspace it works in.
#[derive(Debug)]
pub struct Context {
    pub reporter: Reporter,
    pub workspace: Workspace,
}

/// A mistake the user can fix (bad flag combination, missing file…): printed with its hint, exit 1.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UserError {
    pub message: String,
    pub hint: Option<String>,
}

impl UserError {
    pub fn new(message: impl Into<String>, hint: Option<&str>) -> Self {
        Self {
            message: message.into(),
            hint: hint.map(str::to_owned),
        }
    }
}

/// Runs the parsed command line to completion.
pub fn run(cli: Cli) -> ExitStatus {
    let reporter = Reporter::new(&cli.global);
    reporter.init_tracing();
    let context = Context {
        reporter,
        workspace: Workspace::open(&cli.global.workspace),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            context
                .reporter
                .error(&format!("cannot start the async runtime: {error}"), None);
            return ExitStatus::Failure;
        }
    };
    match runtime.block_on(dispatch(&context, cli.command)) {
        Ok(status) => status,
        Err(error) => report_error(&context.reporter, &error),
    }
}

async fn dispatch(context: &Context, command: Command) -> anyhow::Result<ExitStatus> {
    match command {
        Command::Init(args) => init::run(context, args).await,
        Command::Validate(args) => validate::run(context, args).await,
        Command::Profiles => profiles::run(context).await,
        Command::Completions(args) => completions::run(context, args).await,
        Command::Plan(args) => plan::run(context, args).await,
        Command::Up(args) => up::run(context, args).await,
        Command::Kubeconfig(args) => kubeconfig::run(context, args).await,
        Command::Down(args) => down::run(context, args).await,
        Command::Status(args) => status::run(context, args).await,
        Command::Doctor(args) => doctor::run(context, args).await,
        Command::Sim(command) => sim::run(context, command).await,
    }
}

/// Prints an error the way its kind deserves and picks the exit code.
pub fn report_error(reporter: &Reporter, error: &anyhow::Error) -> ExitStatus {
    if let Some(profile_error) = error.downcast_ref::<ProfileError>() {
        print_diagnostics(reporter, &profile_error.diagnostics(), profile_error.text());
        return ExitStatus::UserError;
    }
    if let Some(workspace_error) = error.downcast_ref::<WorkspaceError>() {
        return match workspace_error {
            WorkspaceError::Invalid {
                text, diagnostics, ..
            } => {
                print_diagnostics(reporter, diagnostics, Some(text));
                ExitStatus::UserError
            }
            WorkspaceError::Untrusted { .. } => {
                reporter.error(
                    &chain(error),
                    Some("provision keeps tokens, keys and the k3s binary there: only you may write it"),
                );
                ExitStatus::UserError
            }
            WorkspaceError::Io { .. } | WorkspaceError::SecretName(_) => {
                reporter.error(&chain(error), None);
                ExitStatus::Failure
            }
        };
    }
    if let Some(state_error) = error.downcast_ref::<crate::state::StateError>() {
        reporter.error(&chain(error), state_error.hint().as_deref());
        return if state_error.is_user_error() {
            ExitStatus::UserError
        } else {
            ExitStatus::Failure
        };
    }
    if let Some(user_error) = error.downcast_ref::<UserError>() {
        reporter.error(&user_error.message, user_error.hint.as_deref());
        return ExitStatus::UserError;
    }
    // A Proxmox error anywhere in the chain carries the hint for its kind; wrong credentials, a
    // missing privilege or a certificate that is not the pinned one are the user's to fix.
    if let Some(pve_error) = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<PveError>())
    {
        reporter.error(&chain(error), pve_error.hint().as_deref());
        return match pve_error {
            PveError::Unauthorized { .. }
            | PveError::Forbidden { .. }
            | PveError::FingerprintMismatch { .. }
            | PveError::Config { .. } => ExitStatus::UserError,
            PveError::NeverSent { .. }
            | PveError::OutcomeUnknown { .. }
            | PveError::BadRequest { .. }
            | PveError::NotFound { .. }
            | PveError::LockTimeout { .. }
            | PveError::Server { .. }
            | PveError::TaskFailed { .. }
            | PveError::Timeout { .. }
            | PveError::Decode { .. } => ExitStatus::Failure,
        };
    }
    reporter.error(&chain(error), None);
    ExitStatus::Failure
}

/// Diagnostics on stderr (text) or as `{"valid": false, "diagnostics": […]}` on stdout (json).
pub fn print_diagnostics(
    reporter: &Reporter,
    diagnostics: &[crate::profile::Diagnostic],
    text: Option<&str>,
) {
    match reporter.format() {
        OutputFormat::Text => reporter.diagnostics(diagnostics, text),
        OutputFormat::Json => reporter.json(&output::InvalidOutput {
            valid: false,
            diagnostics,
        }),
    }
}

/// `error: cause: cause` on one line.
fn chain(error: &anyhow::Error) -> String {
    error
        .chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}
