//! How an error of any layer ends the process: the [`UserFacing`] trait every layer's error enum
//! implements, and [`UserError`], the plain "you can fix this" error of the upper layers.
//!
//! Each layer keeps its own `thiserror` enum (STYLE habit 4); this file only gives them one way
//! to say which [`ExitStatus`] they mean and what the user should do. The top level
//! (`commands::report_error`) walks an `anyhow` chain once, outermost first, and the first error
//! that implements the trait decides: an outer layer knows more about the situation than the
//! error it wraps. So a wrapper that only adds context (`InventoryError::Read`, `.context(…)`)
//! does not implement it, and the walk reaches the error it wraps.

use crate::exit::ExitStatus;

/// An error that knows how it should reach the user: the exit status it means and the `hint:`
/// line printed under it.
pub trait UserFacing: std::error::Error {
    /// [`ExitStatus::UserError`] when the user can fix it (input, credentials, workspace),
    /// [`ExitStatus::Failure`] when a remote system or provision itself failed.
    fn exit_status(&self) -> ExitStatus;

    /// What to do about it, for the `hint:` line; `None` when the message says it all.
    fn hint(&self) -> Option<String>;
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

impl UserFacing for UserError {
    fn exit_status(&self) -> ExitStatus {
        ExitStatus::UserError
    }

    fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
}
