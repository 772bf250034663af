//! Events an execution emits; the reporter turns them into progress bars or log lines.

use std::time::Duration;

/// Something worth showing while a plan runs.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecEvent {
    /// The run starts with this many VMs to work on.
    Started { vms: Vec<String> },
    /// How many steps each VM's action is expected to take (after [`ExecEvent::Started`]):
    /// the overall progress counts steps, so it moves while VMs are still being built.
    Planned { steps: Vec<(String, u64)> },
    /// A VM entered a step (`image`, `iso`, `create`, `resize`, `start`, `guest`, …).
    Step { vm: String, step: &'static str },
    /// A step failed and will be retried after `delay`.
    Retry {
        vm: String,
        step: &'static str,
        attempt: u32,
        delay: Duration,
        error: String,
    },
    /// A VM reached its planned state.
    VmDone { vm: String, elapsed: Duration },
    /// A global step (pool, mapping, image download).
    Global { what: String },
    /// Bytes moved so far by a transfer (an image download, from its task log).
    Transfer { what: String, done: u64, total: u64 },
    /// Something the user should read.
    Note { message: String },
}

/// Receives [`ExecEvent`]s (the reporter implements it; tests collect them).
pub trait ProgressSink: Send + Sync {
    fn event(&self, event: ExecEvent);
}

/// A shared [`ProgressSink`] that options structs can hold (they derive `Debug` and `Clone`).
#[derive(Clone)]
pub struct Events(pub std::sync::Arc<dyn ProgressSink>);

impl Events {
    /// A VM (node) entered `step`.
    pub fn step(&self, vm: &str, step: &'static str) {
        self.0.event(ExecEvent::Step {
            vm: vm.to_owned(),
            step,
        });
    }

    pub fn event(&self, event: ExecEvent) {
        self.0.event(event);
    }
}

impl Default for Events {
    fn default() -> Self {
        Self(std::sync::Arc::new(NoProgress))
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Events")
    }
}

/// Drops every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn event(&self, _event: ExecEvent) {}
}

/// Collects events (tests).
#[derive(Debug, Default)]
pub struct CollectProgress(pub std::sync::Mutex<Vec<ExecEvent>>);

impl ProgressSink for CollectProgress {
    fn event(&self, event: ExecEvent) {
        if let Ok(mut events) = self.0.lock() {
            events.push(event);
        }
    }
}
