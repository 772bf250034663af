//! Ctrl-C and SIGTERM while a command changes Proxmox. Before the first change (observing,
//! planning, asking) a signal ends the command at once, exit 130. Once [`Signals::arm`] was
//! called, the first signal fires the run's [`Interrupt`] (no new step starts, the Proxmox tasks
//! in flight finish, the state is saved, exit 130) and a second one exits at once. Commands that
//! only read keep the default: a signal ends them at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::signal::unix::{SignalKind, signal};

use crate::cli::ClusterArgs;
use crate::exec::Interrupt;
use crate::exec::interrupt::IN_FLIGHT_GRACE;
use crate::reporter::Reporter;

/// The signal handling of one command; see the module documentation.
#[derive(Debug)]
pub struct Signals {
    interrupt: Interrupt,
    armed: Arc<AtomicBool>,
}

impl Signals {
    /// From now on the first signal stops the run cleanly instead of ending the process: call
    /// it just before the first change, and pass the [`Interrupt`] to the run.
    pub fn arm(&self) -> Interrupt {
        self.armed.store(true, Ordering::SeqCst);
        self.interrupt.clone()
    }
}

/// Takes over SIGINT and SIGTERM for `provision VERB` on `cluster` (the command an interrupted
/// run tells the user to re-run).
pub fn install(reporter: &Reporter, verb: &str, cluster: &ClusterArgs) -> anyhow::Result<Signals> {
    let interrupt = Interrupt::new(&rerun_command(
        verb,
        &cluster.profile,
        cluster.overrides.name.as_deref(),
        cluster.sim.simulate,
    ));
    let armed = Arc::new(AtomicBool::new(false));
    let mut interrupts = signal(SignalKind::interrupt())?;
    let mut terminates = signal(SignalKind::terminate())?;
    let fired = interrupt.clone();
    let is_armed = Arc::clone(&armed);
    let reporter = reporter.clone();
    tokio::spawn(async move {
        let first = tokio::select! {
            _ = interrupts.recv() => "interrupt",
            _ = terminates.recv() => "terminate signal",
        };
        if !is_armed.load(Ordering::SeqCst) {
            reporter.interrupted(&format!("{first}: stopped before any change"));
            std::process::exit(130);
        }
        fired.fire();
        reporter.notice(&format!(
            "{first}: starting no new step; waiting up to {}s for the Proxmox tasks in flight \
             (Ctrl-C again to exit at once)",
            IN_FLIGHT_GRACE.as_secs()
        ));
        tokio::select! {
            _ = interrupts.recv() => {}
            _ = terminates.recv() => {}
        }
        // The state file is written atomically and intents precede every create: leaving now
        // loses at most the record of the steps in flight, which the next run re-reads.
        reporter.interrupted("interrupted again: exiting now; re-running the command continues");
        std::process::exit(130);
    });
    Ok(Signals { interrupt, armed })
}

/// The command that continues an interrupted run: `provision VERB --profile P [--simulate]`.
fn rerun_command(verb: &str, profile: &str, name: Option<&str>, simulate: bool) -> String {
    let simulate = if simulate { " --simulate" } else { "" };
    let name = name
        .map(|name| format!(" --name {}", crate::nodeprep::shell::quote(name)))
        .unwrap_or_default();
    format!(
        "provision {verb} --profile {}{name}{simulate}",
        crate::nodeprep::shell::quote(profile)
    )
}
