//! One file per verb; this file only dispatches and turns errors into exit codes.
//!
//! To add a verb: a variant in `cli::Command`, a file here with `pub async fn run(ctx, args)`,
//! and one arm in [`dispatch`].

pub mod completions;
pub mod confirm;
pub mod doctor;
pub mod down;
pub mod drain;
pub mod init;
pub mod kubeconfig;
pub mod output;
pub mod plan;
pub mod profiles;
pub mod replace_node;
pub mod sim;
pub mod status;
pub mod uncordon;
pub mod up;
pub mod up_phase2;
pub mod validate;

use std::error::Error;

use crate::cli::{Cli, Command, OutputFormat, SimArgs, SimAuth};
pub use crate::error::UserError;
use crate::error::UserFacing;
use crate::exec::simulate::{self, SimOptions};
use crate::exit::ExitStatus;
use crate::profile::ProfileError;
use crate::reporter::Reporter;
use crate::workspace::{Workspace, WorkspaceError};

/// What every verb gets: where output goes and which workspace it works in.
#[derive(Debug)]
pub struct Context {
    pub reporter: Reporter,
    pub workspace: Workspace,
}

/// The simulator options of `--simulate` and `--sim-*`, or `None` without `--simulate`: the
/// command line's types stop here, `exec` has its own.
pub fn simulator(args: &SimArgs) -> Option<SimOptions> {
    args.simulate.then(|| SimOptions {
        inventory: args.sim_inventory.clone(),
        request_log: args.sim_request_log.clone(),
        time_scale: args.sim_time_scale,
        fail_rate: args.sim_fail_rate,
        task_fail_rate: args.sim_task_fail_rate,
        seed: args.sim_seed,
        auth: match args.sim_auth {
            SimAuth::Token => simulate::SimAuth::Token,
            SimAuth::Root => simulate::SimAuth::Root,
            SimAuth::TokenRoot => simulate::SimAuth::TokenRoot,
        },
    })
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
        Command::Profiles(args) => profiles::run(context, args).await,
        Command::Completions(args) => completions::run(context, args).await,
        Command::Plan(args) => plan::run(context, args).await,
        Command::Up(args) => up::run(context, args).await,
        Command::Kubeconfig(args) => kubeconfig::run(context, args).await,
        Command::Drain(args) => drain::run(context, args).await,
        Command::Uncordon(args) => uncordon::run(context, args).await,
        Command::ReplaceNode(args) => replace_node::run(context, args).await,
        Command::Down(args) => down::run(context, args).await,
        Command::Status(args) => status::run(context, args).await,
        Command::Doctor(args) => doctor::run(context, args).await,
        Command::Sim(command) => sim::run(context, command).await,
    }
}

/// Prints an error the way its kind deserves and picks the exit code.
///
/// The chain is walked once, outermost first (see `crate::error`): the first error that is
/// [`UserFacing`] decides the exit status and the `hint:` line. Profile and workspace files with
/// located diagnostics print those instead of an `error:` line; without any [`UserFacing`]
/// error in the chain it is a failure without a hint.
pub fn report_error(reporter: &Reporter, error: &anyhow::Error) -> ExitStatus {
    let Some((cause, user_facing)) = error
        .chain()
        .find_map(|cause| user_facing(cause).map(|found| (cause, found)))
    else {
        reporter.error(&chain(error), None);
        return ExitStatus::Failure;
    };
    if let Some(profile_error) = cause.downcast_ref::<ProfileError>() {
        print_diagnostics(reporter, &profile_error.diagnostics(), profile_error.text());
    } else if let Some(WorkspaceError::Invalid {
        text, diagnostics, ..
    }) = cause.downcast_ref::<WorkspaceError>()
    {
        print_diagnostics(reporter, diagnostics, Some(text));
    } else {
        reporter.error(&chain(error), user_facing.hint().as_deref());
    }
    user_facing.exit_status()
}

/// `cause` as a [`UserFacing`] error when it is one of the layers' error types.
///
/// A wrapper that only adds context (anyhow's `.context`, `InventoryError::Read`) is not listed:
/// the walk goes on to the error it wraps.
fn user_facing<'a>(cause: &'a (dyn Error + 'static)) -> Option<&'a dyn UserFacing> {
    fn find<'a, E: UserFacing + 'static>(
        cause: &'a (dyn Error + 'static),
    ) -> Option<&'a dyn UserFacing> {
        cause
            .downcast_ref::<E>()
            .map(|error| error as &dyn UserFacing)
    }
    find::<UserError>(cause)
        .or_else(|| find::<ProfileError>(cause))
        .or_else(|| find::<crate::profile::credentials::CredentialError>(cause))
        .or_else(|| find::<WorkspaceError>(cause))
        .or_else(|| find::<crate::state::StateError>(cause))
        .or_else(|| find::<crate::plan::PlanError>(cause))
        .or_else(|| find::<crate::pve::PveError>(cause))
        .or_else(|| find::<crate::ssh::SshError>(cause))
        .or_else(|| find::<crate::nodeprep::NodePrepError>(cause))
        .or_else(|| find::<crate::k3s::K3sError>(cause))
        .or_else(|| find::<crate::k3s::drain::DrainError>(cause))
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::cli::GlobalArgs;
    use crate::plan::PlanError;
    use crate::pve::PveError;

    fn reporter() -> Reporter {
        Reporter::new(&GlobalArgs {
            workspace: PathBuf::from("."),
            verbose: 0,
            quiet: true,
            output: OutputFormat::Text,
            no_color: true,
        })
    }

    fn unauthorized() -> PveError {
        PveError::Unauthorized {
            endpoint: "https://pve1:8006/".to_owned(),
            message: "authentication failure".to_owned(),
        }
    }

    #[test]
    fn a_refused_plan_stays_a_user_error() {
        let error = anyhow::Error::new(PlanError::TemplateMissing { vmid: 9000 });
        assert_eq!(report_error(&reporter(), &error), ExitStatus::UserError);
    }

    #[test]
    fn the_walk_looks_through_context_and_wrapping_errors() {
        let wrapped = crate::inventory::InventoryError::Read {
            what: "/nodes".to_owned(),
            source: unauthorized(),
        };
        let error = anyhow::Error::new(wrapped).context("observing Proxmox");
        assert_eq!(report_error(&reporter(), &error), ExitStatus::UserError);
        let found = error.chain().find_map(user_facing);
        assert!(
            found
                .and_then(UserFacing::hint)
                .is_some_and(|hint| hint.contains("credentials are wrong or expired"))
        );
    }

    #[test]
    fn a_transparent_wrapper_answers_for_the_error_it_wraps() {
        let ssh = crate::ssh::SshError::Auth {
            host: "node-1".to_owned(),
            user: "provision".to_owned(),
            message: "no key accepted".to_owned(),
        };
        let error = anyhow::Error::new(crate::nodeprep::NodePrepError::Ssh(ssh));
        let found = error.chain().find_map(user_facing);
        assert!(
            found
                .and_then(UserFacing::hint)
                .is_some_and(|hint| hint.contains("ssh.private_key"))
        );
        assert_eq!(report_error(&reporter(), &error), ExitStatus::Failure);
        let timeout = PveError::Timeout {
            what: "task".to_owned(),
            seconds: 5,
        };
        let error = anyhow::Error::new(timeout).context("waiting");
        assert_eq!(report_error(&reporter(), &error), ExitStatus::Failure);
    }

    #[test]
    fn the_command_line_default_time_scale_is_the_simulators() {
        use clap::Parser as _;
        let cli = Cli::try_parse_from(["provision", "status", "--profile", "p", "--simulate"])
            .unwrap_or_else(|error| panic!("{error}"));
        let Command::Status(args) = cli.command else {
            panic!("not status");
        };
        let Some(options) = simulator(&args.cluster.sim) else {
            panic!("--simulate gives simulator options");
        };
        assert_eq!(options.time_scale, simulate::DEFAULT_TIME_SCALE);
        assert_eq!(options.auth, simulate::SimAuth::TokenRoot);
    }

    #[test]
    fn status_takes_testbed_guests_only_with_simulate() {
        use clap::Parser as _;
        let cli = Cli::try_parse_from([
            "provision",
            "status",
            "--profile",
            "p",
            "--simulate",
            "--guests",
            "testbed",
        ])
        .unwrap_or_else(|error| panic!("{error}"));
        let Command::Status(args) = cli.command else {
            panic!("not status");
        };
        assert_eq!(args.guests, crate::cli::Guests::Testbed);
        assert!(
            Cli::try_parse_from([
                "provision",
                "status",
                "--profile",
                "p",
                "--guests",
                "testbed"
            ])
            .is_err()
        );
    }

    #[test]
    fn errors_no_layer_knows_are_failures() {
        let error = anyhow::anyhow!("something broke");
        assert_eq!(report_error(&reporter(), &error), ExitStatus::Failure);
    }
}
