//! Process exit codes: one enum; `plan --detailed-exitcode` adds terraform's two meanings.

use std::process::ExitCode;

/// What the process reports to its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything asked for was done.
    Success,
    /// The user's input (profile, flags, workspace) is wrong; nothing remote was changed.
    UserError,
    /// A remote system or provision itself failed.
    Failure,
    /// The command ran and reached what it looks at, which is unhealthy (`provision status`:
    /// a node NotReady, cordoned, without its etcd member, version skew…).
    Unhealthy,
    /// `plan --detailed-exitcode`: the plan has changes (terraform's 2).
    Changes,
    /// `plan --detailed-exitcode`: an error of any kind, user or remote (terraform's 1).
    DetailedError,
    /// Stopped by SIGINT or SIGTERM (128 + 2, as a shell reports Ctrl-C): what was done is in
    /// the state, and re-running the command continues.
    Interrupted,
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        match status {
            ExitStatus::Success => ExitCode::from(0),
            ExitStatus::UserError => ExitCode::from(1),
            ExitStatus::Failure => ExitCode::from(2),
            ExitStatus::Unhealthy => ExitCode::from(3),
            ExitStatus::Changes => ExitCode::from(2),
            ExitStatus::DetailedError => ExitCode::from(1),
            ExitStatus::Interrupted => ExitCode::from(130),
        }
    }
}
