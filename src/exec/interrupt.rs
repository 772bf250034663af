//! Stopping a run cleanly (Ctrl-C, SIGTERM): once an [`Interrupt`] fires, the runner starts no
//! new step, lets the Proxmox tasks in flight finish (for at most [`IN_FLIGHT_GRACE`]) and ends
//! with [`Interrupted`]. Everything done so far is in the state, intents included, so re-running
//! the command continues where this one stopped.
//!
//! The signal handling itself lives in `commands` (it owns the process); this is only the flag
//! the runner checks and the error it ends with.

use std::time::Duration;

/// How long a task already running on Proxmox may take to finish once the run is interrupted.
/// A task still running then is left to Proxmox: its VM's intent is in the state, and the next
/// run waits for the task (a VM locked by `create`) or re-reads what it did.
pub const IN_FLIGHT_GRACE: Duration = Duration::from_secs(60);

/// A request to stop, shared by the signal handler and every task of a run.
#[derive(Debug, Clone)]
pub struct Interrupt {
    fired: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    /// The command that continues the run (`provision up --profile a100-8x`).
    rerun: std::sync::Arc<str>,
}

impl Interrupt {
    /// A flag not fired yet; `rerun` is the command a user re-runs to continue.
    pub fn new(rerun: &str) -> Self {
        Self {
            fired: std::sync::Arc::new(tokio::sync::watch::Sender::new(false)),
            rerun: rerun.into(),
        }
    }

    /// Ask every task to stop at its next step boundary.
    pub fn fire(&self) {
        self.fired.send_replace(true);
    }

    pub fn is_fired(&self) -> bool {
        *self.fired.borrow()
    }

    /// Resolves once [`Interrupt::fire`] was called (at once when it already was).
    pub async fn fired(&self) {
        let mut receiver = self.fired.subscribe();
        if receiver.wait_for(|fired| *fired).await.is_err() {
            // The sender lives in `self`: it cannot be dropped while this borrows it.
            std::future::pending::<()>().await;
        }
    }

    /// `Err(Interrupted)` once fired: the check before every new step.
    pub fn check(&self) -> Result<(), Interrupted> {
        if self.is_fired() {
            Err(self.interrupted())
        } else {
            Ok(())
        }
    }

    /// The error a run ends with after this interrupt.
    pub fn interrupted(&self) -> Interrupted {
        Interrupted {
            rerun: self.rerun.to_string(),
        }
    }
}

/// A run stopped by [`Interrupt`]: not a failure, exit status 130.
#[derive(Debug, Clone, thiserror::Error)]
#[error("interrupted: re-run `{rerun}` to continue")]
pub struct Interrupted {
    pub rerun: String,
}

/// True when `error` (or an error it wraps) is an [`Interrupted`].
pub fn is_interrupted(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.is::<Interrupted>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fired_interrupt_fails_the_check_and_wakes_waiters() {
        let interrupt = Interrupt::new("provision up --profile p");
        assert!(interrupt.check().is_ok());
        let waiter = tokio::spawn({
            let interrupt = interrupt.clone();
            async move { interrupt.fired().await }
        });
        interrupt.fire();
        assert!(waiter.await.is_ok());
        let Err(stopped) = interrupt.check() else {
            panic!("a fired interrupt passes the check");
        };
        let error = anyhow::Error::new(stopped).context("create of vm-1");
        assert!(is_interrupted(&error));
        assert_eq!(
            interrupt.interrupted().to_string(),
            "interrupted: re-run `provision up --profile p` to continue"
        );
    }
}
